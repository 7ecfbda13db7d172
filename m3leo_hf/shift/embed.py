"""Embed every chip of some regions and splits into a Parquet table.

One row per chip having s1grd: ``chip_id``, ``region``, ``split``, ``embedding`` (fixed-size list of
float32) and the terrain descriptors of ``terrain.COLUMNS`` (NaN where the chip lacks a layer). The
encoder is an m3leo-shift encoder file (``checkpoint.save_encoder``) or a ``module:attr`` factory
returning a torch module that maps (B, 12, S, S) normalised recipe inputs to (B, D) embeddings.

Streaming and DDP-ready: each rank embeds its share of every (region, split) (no shuffle, the last
batch padded; padded samples are dropped) into ``<out>.parts/<region>-<split>-rank<r>.parquet``; a
rerun with the same encoder skips the parts already written, then rank 0 joins them into ``<out>``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from tqdm import tqdm

from m3leo_hf import stream
from m3leo_hf.shift import terrain
from m3leo_hf.shift.checkpoint import load_encoder
from m3leo_hf.shift.recipe import BANDS, MODALITY, Normalizer



def resolve_encoder(spec: str) -> tuple[torch.nn.Module, Normalizer | None, str]:
    """``(module, normaliser or None, description)`` for an encoder file or a ``module:attr`` factory
    (called without arguments; a factory's module has no normaliser: fit one on the train chips)."""
    if os.path.exists(spec):
        model, normalizer = load_encoder(spec)
        return _MAEEmbedder(model), normalizer, f"m3leo-shift MAE {model.config.to_json()} from {spec}"
    if ":" not in spec:
        raise FileNotFoundError(f"encoder {spec!r}: no such file, and not a 'module:attr' factory path")
    module_name, attr = spec.split(":", 1)
    factory = getattr(importlib.import_module(module_name), attr, None)
    if factory is None or not callable(factory):
        raise AttributeError(f"encoder {spec!r}: {module_name} has no callable {attr!r}")
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"encoder {spec!r}: the factory returned {type(module).__name__}, not a torch.nn.Module")
    return module, None, f"factory {spec}"


class _MAEEmbedder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


def fingerprint(module: torch.nn.Module) -> str:
    """sha256 of the module's state (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def embed(roots: Sequence[str | os.PathLike], encoder: torch.nn.Module, normalizer: Normalizer, out: str | os.PathLike,
          *, splits: Sequence[str] = ("train", "val", "test"), image_size: int = 448, batch_size: int = 8,
          num_workers: int = 0, device: str = "cpu", bf16: bool = False, metadata: dict | None = None) -> Path:
    """Write the embedding table of ``roots`` x ``splits`` to ``out`` (Parquet); returns ``out``."""
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    rank, world = _rank()
    identity = json.dumps({"metadata": metadata or {}, "weights": fingerprint(encoder), "bf16": bf16,
                           "normalizer": normalizer.state(), "image_size": image_size, "world_size": world},
                          sort_keys=True)
    if rank == 0:
        if (parts / "identity.json").exists() and (parts / "identity.json").read_text() != identity:
            shutil.rmtree(parts)  # parts of another encoder, normaliser or world size: embed again
        parts.mkdir(parents=True, exist_ok=True)
        (parts / "identity.json").write_text(identity)
    if world > 1:
        dist.barrier()
    encoder = encoder.to(device).eval()
    for root in roots:
        for split in splits:
            data = _stream(os.fspath(root), split, batch_size, image_size)
            region = data.regions[0].region
            part = parts / f"{region}-{split}-rank{rank}.parquet"
            if not part.exists():
                _write_part(data, encoder, normalizer, part, region, split, device, num_workers, bf16)
    if world > 1:
        dist.barrier()
    if rank == 0:
        tables = [t for t in (pq.read_table(p) for p in sorted(parts.glob("*.parquet"))) if t.num_rows]
        if not tables:
            raise ValueError(f"no chip with s1grd in splits {list(splits)} of {[os.fspath(r) for r in roots]}")
        table = pa.concat_tables(tables).sort_by([("region", "ascending"), ("split", "ascending"),
                                                  ("chip_id", "ascending")])
        info = {"encoder": "", **(metadata or {}), "normalizer": normalizer.state(), "image_size": image_size,
                "terrain_columns": list(terrain.COLUMNS)}
        table = table.replace_schema_metadata({"m3leo_shift": json.dumps(info)})
        temporary = out.with_name(out.name + ".tmp")
        pq.write_table(table, temporary)
        temporary.replace(out)
    if world > 1:
        dist.barrier()
    return out


def _stream(root: str, split: str, batch_size: int, image_size: int):
    """Every chip of ``root``/``split`` in order (no shuffle, no drop; padded to equal ranks) with s1grd
    and the terrain layers the region has (a region without any chip of a layer streams without it)."""
    def make(modalities):
        sizes = {m: terrain.SIZES.get(m, image_size) for m in [MODALITY, *modalities]}
        return stream(root, modalities=[MODALITY, *modalities], split=split, batch_size=batch_size, shuffle=False,
                      equalize="pad", drop_last=False, missing="mask", normalize=False, spatial_size=sizes,
                      bands={MODALITY: BANDS, **{m: b for m, b in terrain.BANDS.items() if m in modalities}})

    data = make(terrain.MODALITIES)
    present = [m for m in terrain.MODALITIES if data.regions[0].templates[m] is not None]
    return data if len(present) == len(terrain.MODALITIES) else make(present)


def _write_part(data, encoder: torch.nn.Module, normalizer: Normalizer, part: Path, region: str, split: str,
                device: str, num_workers: int, bf16: bool) -> None:
    rows: dict[str, list] = {"chip_id": [], "embedding": [], "terrain": []}
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=num_workers)
    with torch.no_grad():
        for batch in tqdm(loader, total=len(data), desc=f"embed {region}/{split}", unit="batch",
                          disable=_rank()[0] != 0):
            keep = np.array([not m["padding"] for m in batch["meta"]]) & batch[f"{MODALITY}_available"].numpy()
            if not keep.any():
                continue
            images = normalizer(batch[MODALITY][torch.from_numpy(keep)].to(device))
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                vectors = encoder(images).float().cpu().numpy()
            if vectors.ndim != 2 or len(vectors) != keep.sum():
                raise ValueError(f"encoder returned {vectors.shape} for {int(keep.sum())} chips; expected (B, D)")
            rows["chip_id"] += [c for c, k in zip(batch["chip_id"], keep) if k]
            rows["embedding"].append(vectors)
            rows["terrain"].append(terrain.descriptors(batch)[keep])
    dim = rows["embedding"][0].shape[1] if rows["embedding"] else 0
    vectors = np.concatenate(rows["embedding"]) if rows["embedding"] else np.zeros((0, dim), np.float32)
    covariates = (np.concatenate(rows["terrain"]) if rows["terrain"]
                  else np.zeros((0, len(terrain.COLUMNS))))
    columns = {"chip_id": pa.array(rows["chip_id"], pa.string()),
               "region": pa.array([region] * len(vectors), pa.string()),
               "split": pa.array([split] * len(vectors), pa.string()),
               "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)}
    columns.update({name: pa.array(covariates[:, i], pa.float64()) for i, name in enumerate(terrain.COLUMNS)})
    temporary = part.with_name(part.name + ".tmp")
    pq.write_table(pa.table(columns), temporary)
    temporary.replace(part)


def read_table(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """``({"chip_id", "region", "split", "embedding" (N, D) float32, "terrain" (N, T)}, metadata)``."""
    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {}).get(b"m3leo_shift", b"{}"))
    embedding = table["embedding"].combine_chunks()
    dim = embedding.type.list_size
    vectors = embedding.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) if len(table) else np.zeros((0, dim))
    return {"chip_id": np.array(table["chip_id"].to_pylist(), dtype=object),
            "region": np.array(table["region"].to_pylist(), dtype=object),
            "split": np.array(table["split"].to_pylist(), dtype=object),
            "embedding": vectors.astype(np.float32),
            "terrain": np.stack([table[c].to_numpy() for c in terrain.COLUMNS], axis=1) if len(table)
            else np.zeros((0, len(terrain.COLUMNS)))}, info
