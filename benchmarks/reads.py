"""Read cases: every case yields, per chip of the split, the same tensors.

A case is ``open_case(params) -> one_pass`` (setup: indexes, file lists) where ``one_pass()`` iterates
``(chip_id, {"<modality>.<field>": tensor})``: GeoTIFF fields with the modality's ``view_as`` applied
(s1grd int16), NetCDF fields in their file dtype. Chips are those of ``split`` available in every
requested modality. ``params``: ``roots`` (built region folders), ``modalities``, ``split``, plus what
the case needs (``chips``, ``release``, ``datasets_mode``, ``workers``, ``shuffle_buffer``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from builders.registry import get_modality

Tensors = dict[str, torch.Tensor]
Pass = Callable[[], Iterator[tuple[str, Tensors]]]


def ours(params: dict) -> Pass:
    """``m3leo_hf.stream`` joined by chip id, directly or through ``StatefulLoader`` workers."""
    import m3leo_hf

    modalities = params["modalities"]
    buffer = params.get("shuffle_buffer", 0)
    data = m3leo_hf.stream(params["roots"], modalities=modalities, split=params["split"], labels=False,
                           missing="skip", shuffle=buffer > 1, shuffle_buffer=buffer)
    source = m3leo_hf.StatefulLoader(data, num_workers=params["workers"]) if params.get("workers") else data

    def one_pass() -> Iterator[tuple[str, Tensors]]:
        for sample in source:
            yield sample["chip_id"], _flatten(modalities, sample)

    return one_pass


def per_file(params: dict) -> Pass:
    """The original way: one rasterio / h5netcdf read per chip file."""
    import rasterio

    def one_pass() -> Iterator[tuple[str, Tensors]]:
        for chip in params["chips"]:
            tensors = {}
            for name, path in chip["files"].items():
                if get_modality(name).container == "geotiff":
                    with rasterio.open(path) as dataset:
                        tensors[f"{name}.{name}"] = _as_tensor(name, dataset.read())
                else:
                    tensors.update(_netcdf_tensors(name, Path(path).read_bytes(), chip["chip_id"]))
            yield chip["chip_id"], tensors

    return one_pass


def release_parquet(params: dict) -> Pass:
    """The current Hub release: zstd Parquet rows of raw .tif/.nc bytes, a group file at a time,
    joined by chip id across the modality folders (groups name the same chips in every folder)."""
    from rasterio.io import MemoryFile

    wanted = {chip["chip_id"] for chip in params["chips"]}

    def decode(name: str, content: bytes, chip_id: str) -> Tensors:
        if get_modality(name).container != "geotiff":
            return _netcdf_tensors(name, content, chip_id)
        with MemoryFile(content) as memfile, memfile.open() as dataset:
            return {f"{name}.{name}": _as_tensor(name, dataset.read())}

    def one_pass() -> Iterator[tuple[str, Tensors]]:
        for group in params["release"]:  # [{modality: parquet file}] per group, same chips in each
            rows = {name: _release_rows(file) for name, file in group.items()}
            for chip_id in sorted(wanted.intersection(*rows.values())):
                tensors: Tensors = {}
                for name, by_chip in rows.items():
                    tensors.update(decode(name, by_chip[chip_id], chip_id))
                yield chip_id, tensors

    return one_pass


def stock_datasets(params: dict) -> Pass:
    """Stock ``datasets`` streaming of our repo (``load_dataset(region_dir, modality)`` through its
    README card, or the ``webdataset`` builder over the tars), modalities zipped by position."""
    from datasets import load_dataset

    modalities, split = params["modalities"], params["split"]

    def load(root: str, modality: str):
        if params["datasets_mode"] == "card":
            data = load_dataset(root, modality, split=split, streaming=True)
        else:
            files = sorted(str(p) for p in Path(root, modality).glob(f"{split}-*.tar"))
            data = load_dataset("webdataset", data_files={split: files}, split=split, streaming=True)
        if params.get("shuffle_buffer", 0) > 1:
            data = data.shuffle(seed=0, buffer_size=params["shuffle_buffer"])
        return data.with_format("torch")

    per_region = [[load(root, m) for m in modalities] for root in params["roots"]]

    def one_pass() -> Iterator[tuple[str, Tensors]]:
        for datasets in per_region:
            for samples in zip(*datasets):
                keys = {sample["__key__"] for sample in samples}
                if len(keys) != 1:
                    raise RuntimeError(f"stock datasets: modalities out of step: {sorted(keys)}")
                infos = [sample["json"] for sample in samples]
                if not all(info["available"] for info in infos):
                    continue
                tensors = {}
                for name, sample, info in zip(modalities, samples, infos):
                    for field, meta in info["fields"].items():
                        if f"{field}.npy" in sample:
                            dtype = getattr(torch, meta.get("view_as") or meta["dtype"])
                            tensors[f"{name}.{field}"] = sample[f"{field}.npy"].to(dtype)
                yield keys.pop(), tensors

    return one_pass


def raw_limit(params: dict) -> Pass:
    """The physical limit: read each sample's tar bytes (header of its first member to the end of its
    last) into one uninitialised buffer and view the ``.npy`` payloads with ``np.frombuffer``; no tar
    parsing or decoding (offsets from the published metadata). With ``workers``, the samples are dealt
    round-robin to that many DataLoader workers (the floor of any DataLoader pipeline)."""
    modalities = params["modalities"]
    shards = _limit_plan(params["roots"], modalities, params["split"])

    def one_pass(worker: int = 0, workers: int = 1) -> Iterator[tuple[str, Tensors]]:
        position = -1
        for paths, samples in shards:
            handles = {m: open(paths[m], "rb", buffering=0) for m in modalities}
            try:
                for chip_id, rows in samples:
                    position += 1
                    if position % workers == worker:
                        yield chip_id, _limit_sample(handles, modalities, rows)
            finally:
                for handle in handles.values():
                    handle.close()

    if not params.get("workers"):
        return one_pass
    loader = DataLoader(_Dealt(one_pass), batch_size=None, num_workers=params["workers"])
    return lambda: iter(loader)


class _Dealt(IterableDataset):
    """``one_pass(worker, workers)`` in each DataLoader worker."""

    def __init__(self, one_pass: Callable[[int, int], Iterator]):
        self.one_pass = one_pass

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        return self.one_pass(info.id, info.num_workers) if info else self.one_pass()


def _limit_sample(handles: dict, modalities: list[str], rows: list[dict]) -> Tensors:
    tensors = {}
    for name, row in zip(modalities, rows):
        handle = handles[name]
        handle.seek(row["offset"])
        buffer = np.empty(row["size"], dtype=np.uint8)  # not zero-filled, unlike bytearray
        handle.readinto(buffer)
        for member in row["members"]:
            if member["name"].endswith(".npy"):
                array = npy_view(buffer, member["offset"] - row["offset"])
                tensors[f"{name}.{member['name'][:-4]}"] = _as_tensor(name, array)
    return tensors


READ_CASES: dict[str, Callable[[dict], Pass]] = {
    "ours": ours, "per_file": per_file, "release_parquet": release_parquet, "datasets": stock_datasets,
    "raw_limit": raw_limit,
}


def npy_view(buffer: np.ndarray, start: int) -> np.ndarray:
    """The array of the version 1/2 ``.npy`` file starting at ``buffer[start]``, viewed in place."""
    width = 2 if buffer[start + 6] == 1 else 4
    end = start + 8 + width + int.from_bytes(buffer[start + 8:start + 8 + width].tobytes(), "little")
    head = io.BytesIO(buffer[start:end].tobytes())
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shape, fortran, dtype = read_header[np.lib.format.read_magic(head)](head)
    array = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape)), offset=end)
    return array.reshape(shape, order="F" if fortran else "C")


def _flatten(modalities: list[str], sample: dict) -> Tensors:
    tensors = {}
    for name in modalities:
        value = sample[name]
        items = value.items() if isinstance(value, dict) else [(name, value)]
        tensors.update({f"{name}.{field}": tensor for field, tensor in items})
    return tensors


def _as_tensor(name: str, array: np.ndarray) -> torch.Tensor:
    view = get_modality(name).view_as if get_modality(name).container == "geotiff" else None
    return torch.from_numpy(array.view(view) if view else array)


def _netcdf_tensors(name: str, content: bytes, chip_id: str) -> Tensors:
    """NetCDF fields as our reader names them (h5netcdf underneath)."""
    from builders.read import read_chip

    arrays = read_chip(get_modality(name), content, chip_id).arrays
    return {f"{name}.{field}": torch.from_numpy(array) for field, array in arrays.items()}


def _release_rows(file: str) -> dict[str, bytes]:
    table = pq.read_table(file, columns=["path", "content"])
    return {path.rsplit("/", 1)[-1].split(".", 1)[0]: content
            for path, content in zip(table.column("path").to_pylist(), table.column("content").to_pylist())}


def _limit_plan(roots: list[str], modalities: list[str], split: str) -> list[tuple[dict, list]]:
    """Per aligned shard: its tar per modality and its samples ``(chip_id, [row per modality])``."""
    plan = []
    for root in roots:
        tables = {}
        for name in modalities:
            table = pq.read_table(Path(root, "metadata", f"{name}.parquet"),
                                  columns=["chip_id", "split", "shard", "sample_index", "offset", "size",
                                           "members", "available"]).to_pylist()
            rows = [r for r in table if r["split"] == split]
            tables[name] = sorted(rows, key=lambda r: (r["shard"], r["sample_index"]))
        shards: dict[str, list] = {}
        for rows in zip(*(tables[m] for m in modalities)):
            if len({r["chip_id"] for r in rows}) != 1:
                raise RuntimeError(f"{root}: modalities not aligned at {[r['chip_id'] for r in rows]}")
            if all(r["available"] for r in rows):
                shards.setdefault(rows[0]["shard"].split("/", 1)[1], []).append((rows[0]["chip_id"], rows))
        for shard, samples in sorted(shards.items()):
            paths = {m: str(Path(root, m, shard)) for m in modalities}
            plan.append((paths, samples))
    return plan
