"""What a built region holds, read from its metadata and shards: the facts a dataset card states.

Field dtypes and shapes come from the ``.npy`` headers of every available sample (located through
``metadata/<modality>.parquet`` offsets, a few hundred bytes read per member), so the declared
features cover every chip, not a handful; field descriptions (dims, band names, units) come from the
first available sample's JSON.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from builders.declarations import Modality
from shard_tools.inventory import SPLITS

HEADER_BYTES = 4096
DESCRIBED = ("dims", "band_names", "units", "long_name", "nodata", "view_as", "variable")


@dataclass
class FieldSummary:
    """One ``<field>.npy`` member: its dtype, the range of its shape over all chips and its description."""

    name: str
    dtype: str
    min_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    description: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(self.min_shape)

    @property
    def fixed(self) -> bool:
        return self.min_shape == self.max_shape


@dataclass
class ShardSummary:
    url: str
    split: str
    nsamples: int
    filesize: int
    sha256: str


@dataclass
class ModalitySummary:
    modality: Modality
    fields: list[FieldSummary]
    chips: dict[str, int]  # split -> samples (every chip of the split)
    available: dict[str, int]  # split -> samples with data
    missing_reasons: dict[str, int]  # reason kind (absent, skipped, unreadable, ...) -> chips
    shards: list[ShardSummary]
    stats: dict  # stats.json "splits"
    example: dict  # JSON member of the first available sample (None-free description source)

    @property
    def name(self) -> str:
        return self.modality.name

    def split_shards(self, split: str) -> list[ShardSummary]:
        return [s for s in self.shards if s.split == split]


@dataclass
class RegionSummary:
    region: str
    root: Path
    modalities: list[ModalitySummary]
    chips: dict[str, int]  # split -> chips
    complete: dict[str, int]  # split -> chips with data in every modality of the region
    bounds: tuple[float, float, float, float] | None  # west, south, east, north of all chips
    skipped_folders: dict[str, str] = field(default_factory=dict)  # input folders a --skip-unknown build left out

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if self.chips.get(s)]

    @property
    def total_chips(self) -> int:
        return sum(self.chips.values())


def summarize(region_dir: str | Path) -> RegionSummary:
    """Summary of a built region (the output of ``m3leo-shard build`` for one region)."""
    root = Path(region_dir)
    meta = root / "metadata"
    chips_path = meta / "chips.parquet"
    if not chips_path.is_file():
        raise FileNotFoundError(f"{chips_path}: missing; is {root} a built region?")
    chips = pq.read_table(chips_path).to_pylist()
    index_path = meta / "modalities.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    names = sorted(n for n in index.get("modalities", {}) if (meta / f"{n}.shards.json").is_file())
    if not names:
        raise FileNotFoundError(f"{meta}: no modality with a declaration and a shard index; is {root} a built region?")
    region = chips[0]["region"] if chips else root.name
    counts = Counter(c["split"] for c in chips)
    complete = Counter(c["split"] for c in chips if all(c.get(f"has_{n}") for n in names))
    modalities = [_modality(root, Modality.from_json(json.loads((meta / f"{n}.modality.json").read_text())))
                  for n in names]
    return RegionSummary(region, root, modalities, {s: counts[s] for s in SPLITS if counts[s]},
                         {s: complete[s] for s in SPLITS if counts[s]}, _bounds(chips),
                         dict(index.get("skipped_folders", {})))


def _bounds(chips: list[dict]) -> tuple[float, float, float, float] | None:
    boxes = [(c["west"], c["south"], c["east"], c["north"]) for c in chips if c["west"] is not None]
    if not boxes:
        return None
    west, south, east, north = zip(*boxes)
    return min(west), min(south), max(east), max(north)


def _modality(root: Path, modality: Modality) -> ModalitySummary:
    meta = root / "metadata"
    rows = pq.read_table(meta / f"{modality.name}.parquet",
                         columns=["split", "shard", "offset", "members", "available", "missing_reason"]).to_pylist()
    index = json.loads((meta / f"{modality.name}.shards.json").read_text())
    stats_path = meta / f"{modality.name}.stats.json"
    stats = json.loads(stats_path.read_text())["splits"] if stats_path.is_file() else {}
    shards = [ShardSummary(s["url"], s["split"], s["nsamples"], s["filesize"], s["sha256"]) for s in index["shardlist"]]
    fields, example = _fields(root, rows)
    return ModalitySummary(
        modality=modality, fields=fields,
        chips={s: sum(r["split"] == s for r in rows) for s in SPLITS if any(r["split"] == s for r in rows)},
        available={s: sum(r["split"] == s and r["available"] for r in rows) for s in SPLITS
                   if any(r["split"] == s for r in rows)},
        missing_reasons=dict(sorted(Counter(r["missing_reason"].split(":")[0] for r in rows
                                            if not r["available"]).items())),
        shards=shards, stats=stats, example=example,
    )


def _fields(root: Path, rows: list[dict]) -> tuple[list[FieldSummary], dict]:
    """Dtype and shape range of every npy field over all available samples, plus one sample's JSON."""
    found: dict[str, FieldSummary] = {}
    example: dict = {}
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        if row["available"]:
            by_shard.setdefault(row["shard"], []).append(row)
    for shard in sorted(by_shard, key=_shard_order):
        with open(root / shard, "rb") as handle:
            for row in sorted(by_shard[shard], key=lambda r: r["offset"]):
                for member in row["members"]:
                    if member["name"] == "json":
                        if not example:
                            handle.seek(member["offset"])
                            example = json.loads(handle.read(member["size"]))
                        continue
                    name = member["name"][: -len(".npy")]
                    handle.seek(member["offset"])
                    dtype, shape = _npy_header(handle.read(min(member["size"], HEADER_BYTES)), f"{shard}:{name}")
                    _merge(found, name, dtype, shape, shard)
    for name, summary in found.items():
        described = example.get("fields", {}).get(name, {})
        described = {**described.get("attrs", {}), **described}  # NetCDF units / long_name live in attrs
        summary.description = {k: described[k] for k in DESCRIBED if described.get(k) not in (None, [], "")}
    return [found[n] for n in sorted(found)], example


def _shard_order(url: str) -> tuple[int, str]:
    split = url.rsplit("/", 1)[-1].split("-")[0]
    return SPLITS.index(split), url


def _npy_header(data: bytes, where: str) -> tuple[str, tuple[int, ...]]:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
    except ValueError as exc:
        raise ValueError(f"{where}: not a .npy member: {exc}") from None
    return dtype.name, tuple(shape)


def _merge(found: dict[str, FieldSummary], name: str, dtype: str, shape: tuple[int, ...], where: str) -> None:
    summary = found.get(name)
    if summary is None:
        found[name] = FieldSummary(name, dtype, shape, shape)
        return
    if summary.dtype != dtype or summary.ndim != len(shape):
        raise ValueError(f"field {name!r}: {dtype}{list(shape)} in {where} but {summary.dtype} with "
                         f"{summary.ndim} dims elsewhere; one feature type cannot describe both")
    summary.min_shape = tuple(map(min, summary.min_shape, shape))
    summary.max_shape = tuple(map(max, summary.max_shape, shape))
