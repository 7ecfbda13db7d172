"""A built region's published metadata, read once: aligned shards, chip keys, offsets, availability, stats.

Reads ``metadata/modalities.json`` (config names and their aliases), and for the requested modalities and
split ``metadata/<modality>.modality.json`` (the declaration: what the values mean),
``metadata/<modality>.shards.json`` (nsamples, sha256, filesize per shard), ``metadata/<modality>.parquet``
(chip id, byte offset and availability per sample) and ``metadata/<modality>.stats.json`` (train statistics).
"""

from __future__ import annotations

import io
import json
import urllib.error
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from builders.declarations import Modality
from m3leo_hf.reader import AlignmentError, ShardError, ShardFile, join, read_bytes

COLUMNS = ["chip_id", "split", "shard", "sample_index", "offset", "size", "available", "members"]


@dataclass(frozen=True)
class AlignedShard:
    """Shard ``name`` (e.g. ``train-000003``) of one region: the same chips, in the same order, in
    every modality's tar."""

    region: str
    name: str
    keys: tuple[str, ...]
    files: Mapping[str, ShardFile]
    available: Mapping[str, np.ndarray]
    sizes: Mapping[str, np.ndarray] = field(default_factory=dict)  # bytes of each sample, per modality

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
    declarations: Mapping[str, Modality]


def load_region(root: str, modalities: Sequence[str], split: str, *, retries: int = 3,
                storage_options: Mapping | None = None) -> RegionIndex:
    """Index of ``split`` in region ``root`` (local dir or URL) for ``modalities``."""
    def fetch(name: str) -> bytes:
        try:
            return read_bytes(join(root, f"metadata/{name}"), retries=retries, storage_options=storage_options)
        except OSError as exc:
            raise FileNotFoundError(f"{root}: cannot read metadata/{name}: {exc}") from exc

    names = config_names(root, fetch)
    region, per_modality, stats, templates, declarations = None, {}, {}, {}, {}
    for modality in modalities:
        stats[modality], templates[modality] = {}, None
        name = names.get(modality, modality)
        try:
            index = json.loads(fetch(f"{name}.shards.json"))
        except FileNotFoundError as exc:
            if not _absent(exc):
                raise
            continue  # the region has no such modality (e.g. no GUNW over Europe): all chips lack it
        region = region or index.get("name", root.rstrip("/").rsplit("/", 1)[-1]).split("/")[0]
        declarations[modality] = _declaration(root, name, fetch)
        table = pq.read_table(io.BytesIO(fetch(f"{name}.parquet")), columns=COLUMNS)
        rows = table.filter(pc.equal(table["split"], split)).to_pylist()
        per_modality[modality] = _shard_files(root, modality, index, rows, split)
        stats[modality] = json.loads(fetch(f"{name}.stats.json")).get("splits", {}).get("train", {})
        templates[modality] = _template(root, table.filter(table["available"]).slice(0, 1).to_pylist())
    if not per_modality:
        raise FileNotFoundError(f"{root}: no metadata/<modality>.shards.json for any of {list(modalities)}; "
                                f"is it a built region?")
    shards = _align(region, per_modality, modalities)
    return RegionIndex(root, region, shards, stats, templates, declarations)


def config_names(root: str, fetch) -> dict[str, str]:
    """``{config name or alias: shard-folder name}`` from ``metadata/modalities.json`` (empty when absent)."""
    try:
        index = json.loads(fetch("modalities.json"))
    except FileNotFoundError as exc:
        if not _absent(exc):
            raise
        return {}
    except ValueError as exc:
        raise ShardError(f"{root}: metadata/modalities.json: not JSON: {exc}") from None
    if not isinstance(index, Mapping) or not isinstance(index.get("aliases", {}), Mapping):
        raise ShardError(f"{root}: metadata/modalities.json: not a modalities index")
    names = {str(alias): str(name) for alias, name in index.get("aliases", {}).items()}
    names.update({str(name): str(name) for name in index.get("modalities", {})})
    return names


def _declaration(root: str, name: str, fetch) -> Modality:
    """The declaration the region was built with, from ``metadata/<name>.modality.json``."""
    try:
        return Modality.from_json(json.loads(fetch(f"{name}.modality.json")))
    except FileNotFoundError as exc:
        if not _absent(exc):
            raise
        raise ShardError(f"{root}: metadata/{name}.modality.json missing: the region was built without "
                         "declarations (rebuild it with this version)") from None
    except ValueError as exc:
        raise ShardError(f"{root}: metadata/{name}.modality.json: bad declaration: {exc}") from None


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
                     np.array([r["available"] for r in shard_rows], dtype=bool),
                     np.array([r["size"] for r in shard_rows], dtype=np.int64))
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
                                    for m in modalities},
                                   {m: per_modality[m][name][3] for m in per_modality}))
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
