"""The ``datasets`` object ``load(..., chips=/where=/bbox=)`` returns: the selected samples of one modality,
read by byte range from the region's shards, with the card's declared features and this rank's equal share.

The samples are those stock ``load_dataset`` would give (``__key__``, ``__url__``, ``json``, ``<field>.npy``),
so ``load``'s transform applies unchanged. Under DDP the selection is planned like ``stream()``
(``m3leo_hf.planning``, one epoch, no shuffle): every rank gets the same number of samples (``equalize``:
``"drop"`` for train, ``"pad"`` otherwise), so do not call ``split_dataset_by_node`` on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import datasets
import numpy as np
import torch.distributed as dist

from m3leo_hf.index import load_region
from m3leo_hf.planning import Equalize, plan_rank
from m3leo_hf.ranged import read_runs
from m3leo_hf.reader import npy_array
from m3leo_hf.selection import SPLIT_NAMES, Selection, selected

BUILDER_OPTIONS = ("cache_dir", "download_config", "token", "storage_options")
Location = tuple[str, str, int, int]  # url, chip id, byte offset, byte size


def selected_dataset(source: str, modality: str, split: str, selection: Selection, *, streaming: bool,
                     revision: str | None, available_only: bool, rank: int | None, world_size: int | None,
                     equalize: Equalize | None, load_kwargs: Mapping[str, Any]
                     ) -> datasets.Dataset | datasets.IterableDataset:
    root = region_root(source, revision)
    storage_options = load_kwargs.get("storage_options")
    ours = SPLIT_NAMES[split]
    region = load_region(root, [modality], ours, storage_options=storage_options)
    keep = selected([root], ours, selection, storage_options=storage_options)
    eligible = []
    for shard in region.shards:
        available = shard.available[modality]
        eligible.append(np.array([i for i, key in enumerate(shard.keys)
                                  if key in keep and (available[i] or not available_only)], dtype=np.int64))
    if not sum(len(e) for e in eligible):
        raise ValueError(f"{source}: the selection keeps no {ours} chip{' with ' + modality if available_only else ''}")
    rank, world_size = (rank, world_size) if rank is not None else _distribution()
    plan = plan_rank(eligible, epoch=0, seed=0, shuffle=False, rank=rank, world_size=world_size,
                     equalize=equalize or ("drop" if ours == "train" else "pad"), batch_size=1, drop_last=False,
                     num_workers=1)
    parts: dict[int, list[Location]] = {}
    for shard_id, index in zip(plan.shard_ids.tolist(), plan.sample_ids.tolist()):
        shard = region.shards[shard_id]
        file = shard.files[modality]
        parts.setdefault(shard_id, []).append((file.url, shard.keys[index], int(file.offsets[index]),
                                               int(shard.sizes[modality][index])))
    builder_options = {k: v for k, v in load_kwargs.items() if k in BUILDER_OPTIONS}
    features = datasets.load_dataset_builder(source, modality, revision=revision, **builder_options).info.features
    kwargs = {"parts": list(parts.values()), "names": tuple(n for n in features if n.endswith(".npy")),
              "storage_options": storage_options}
    if streaming:
        return datasets.IterableDataset.from_generator(_samples, features=features, gen_kwargs=kwargs)
    return datasets.Dataset.from_generator(_samples, features=features, gen_kwargs=kwargs,
                                           cache_dir=load_kwargs.get("cache_dir"))


def region_root(source: str, revision: str | None) -> str:
    """What our readers open for ``load``'s ``region_or_repo``: a folder, a URL, or ``hf://datasets/<repo>``."""
    if Path(source).is_dir() or "://" in source:
        return source
    return f"hf://datasets/{source}" + (f"@{revision}" if revision else "")


def _distribution() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _samples(parts: list[list[Location]], names: tuple[str, ...], storage_options: Mapping | None) -> Iterator[dict]:
    """Stock-``datasets``-shaped examples of the samples at ``parts`` (each a list of byte ranges)."""
    for part in parts:
        for url, key, offset, size in part:
            ((_, raw),) = read_runs(url, [key], [0], np.array([offset]), np.array([size]),
                                    storage_options=storage_options)
            example: dict[str, Any] = {"__key__": key, "__url__": url, "json": json.loads(bytes(raw["json"]))}
            for name in names:
                example[name] = npy_array(raw[name]) if name in raw else None
            yield example

