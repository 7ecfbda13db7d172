"""A built region's published metadata, read once: aligned shards, chip keys, offsets, availability, stats.

Reads ``metadata/<modality>.shards.json`` (nsamples, sha256, filesize per shard),
``metadata/<modality>.parquet`` (chip id, byte offset and availability per sample) and
``metadata/<modality>.stats.json`` (train statistics) for the requested modalities and split.
"""

from __future__ import annotations

import io
import json
import urllib.error
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pyarrow.parquet as pq

from m3leo_hf.reader import AlignmentError, ShardFile, join, read_bytes

COLUMNS = ["chip_id", "split", "shard", "sample_index", "offset", "available", "members"]


@dataclass(frozen=True)
class AlignedShard:
    """Shard ``name`` (e.g. ``train-000003``) of one region: the same chips, in the same order, in
    every modality's tar."""

    region: str
    name: str
    keys: tuple[str, ...]
    files: Mapping[str, ShardFile]
    available: Mapping[str, np.ndarray]

    @property
    def nsamples(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class RegionIndex:
    """What the stream needs to know about one region root before reading any shard.

    ``templates[m]`` locates the JSON member (url, offset, size) of the first chip having modality
    ``m``: its ``fields`` give the shapes used for chips that lack ``m``.
    """

    root: str
    region: str
    shards: tuple[AlignedShard, ...]
    stats: Mapping[str, Mapping]
    templates: Mapping[str, tuple[str, int, int] | None]


def load_region(root: str, modalities: Sequence[str], split: str, *, retries: int = 3,
                storage_options: Mapping | None = None) -> RegionIndex:
    """Index of ``split`` in region ``root`` (local dir or URL) for ``modalities``."""
    def fetch(name: str) -> bytes:
        try:
            return read_bytes(join(root, f"metadata/{name}"), retries=retries, storage_options=storage_options)
        except OSError as exc:
            raise FileNotFoundError(f"{root}: cannot read metadata/{name}: {exc}") from exc

    region, per_modality, stats, templates = None, {}, {}, {}
    for modality in modalities:
        stats[modality], templates[modality] = {}, None
        try:
            index = json.loads(fetch(f"{modality}.shards.json"))
        except FileNotFoundError as exc:
            if not _absent(exc):
                raise
            continue  # the region has no such modality (e.g. no GUNW over Europe): all chips lack it
        region = region or index.get("name", root.rstrip("/").rsplit("/", 1)[-1]).split("/")[0]
        # ParquetFile.read, unlike pq.read_table, does not import pyarrow.dataset (a third of a second)
        table = pq.ParquetFile(io.BytesIO(fetch(f"{modality}.parquet"))).read(columns=COLUMNS)
        every = table.to_pylist()  # filtered in Python: pyarrow.compute would import pandas (a fifth of a second)
        rows = [row for row in every if row["split"] == split]
        per_modality[modality] = _shard_files(root, modality, index, rows, split)
        stats[modality] = json.loads(fetch(f"{modality}.stats.json")).get("splits", {}).get("train", {})
        templates[modality] = _template(root, [row for row in every if row["available"]][:1])
    if not per_modality:
        raise FileNotFoundError(f"{root}: no metadata/<modality>.shards.json for any of {list(modalities)}; "
                                f"is it a built region?")
    shards = _align(region, per_modality, modalities)
    return RegionIndex(root, region, shards, stats, templates)


def _shard_files(root: str, modality: str, index: Mapping, rows: list[dict], split: str) -> dict[str, tuple]:
    """``{shard name: (ShardFile, keys, available)}`` for the split's shards of one modality."""
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    out = {}
    for entry in sorted(index["shardlist"], key=lambda e: e["url"]):
        if entry["split"] != split:
            continue
        shard_rows = sorted(by_shard.get(entry["url"], []), key=lambda r: r["sample_index"])
        if [r["sample_index"] for r in shard_rows] != list(range(entry["nsamples"])):
            raise AlignmentError(f"{root}: {entry['url']}: {modality}.parquet lists {len(shard_rows)} samples, "
                                 f"{modality}.shards.json says {entry['nsamples']}")
        name = entry["url"].rsplit("/", 1)[-1].removesuffix(".tar")
        offsets = np.array([r["offset"] for r in shard_rows], dtype=np.int64)
        file = ShardFile(join(root, entry["url"]), entry["filesize"], entry["sha256"], offsets)
        out[name] = (file, tuple(r["chip_id"] for r in shard_rows),
                     np.array([r["available"] for r in shard_rows], dtype=bool))
    return out


def _align(region: str, per_modality: Mapping[str, dict], modalities: Sequence[str]) -> tuple[AlignedShard, ...]:
    """Join the modalities' shards by name, checking they hold the same chips in the same order;
    modalities the region lacks have no files and no available chip."""
    first, *others = list(per_modality)
    names = list(per_modality[first])
    for modality in others:
        if list(per_modality[modality]) != names:
            raise AlignmentError(f"{region}: {modality} has shards {list(per_modality[modality])}, "
                                 f"{first} has {names}")
    shards = []
    for name in names:
        keys = per_modality[first][name][1]
        for modality in others:
            other = per_modality[modality][name][1]
            if other != keys:
                at = next((i for i, (a, b) in enumerate(zip(keys, other)) if a != b), min(len(keys), len(other)))
                raise AlignmentError(f"{region}/{name}: sample {at} is {_at(keys, at)!r} in {first} "
                                     f"but {_at(other, at)!r} in {modality}")
        shards.append(AlignedShard(region, name, keys, {m: per_modality[m][name][0] for m in per_modality},
                                   {m: per_modality[m][name][2] if m in per_modality else np.zeros(len(keys), bool)
                                    for m in modalities}))
    return tuple(shards)


def _template(root: str, rows: list[dict]) -> tuple[str, int, int] | None:
    if not rows:
        return None
    member = next(m for m in rows[0]["members"] if m["name"] == "json")
    return join(root, rows[0]["shard"]), member["offset"], member["size"]


def _absent(exc: BaseException) -> bool:
    """Whether a metadata read failed because the file does not exist (locally, 404, fsspec)."""
    while exc is not None:
        if isinstance(exc, FileNotFoundError) and exc.__cause__ is None:
            return True
        if isinstance(exc, urllib.error.HTTPError):
            return exc.code == 404
        exc = exc.__cause__
    return False


def _at(keys: Sequence[str], position: int) -> str | None:
    return keys[position] if position < len(keys) else None
