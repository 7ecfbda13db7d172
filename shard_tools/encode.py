"""One chip of one modality to WebDataset members, its metadata row and its statistics."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from builders.chip import ChipError, ChipSample, nodata_mask
from builders.isolated import IsolatedReader
from builders.declarations import Modality
from builders.limits import chip_limits, too_large
from builders.read import read_chip, reader_for
from shard_tools.inventory import Chip, Source, load_source
from shard_tools.stats import UPSTREAM, band_names, chip_stats, is_grid, upstream_chip_stats
from shard_tools.summary import summarize
from shard_tools.tarwriter import json_bytes, npy_bytes


@dataclass
class EncodedChip:
    members: list[tuple[str, bytes]]
    available: bool
    missing_reason: str | None
    nodata_fraction: float | None
    stats: dict[str, dict]
    problem: str | None = None
    source_sha256: str | None = None
    summary: dict = field(default_factory=dict)  # chips.parquet summary columns (shard_tools.summary)


def encode_chip(modality: Modality, region: str, chip: Chip, source: Source, data: bytes | None = None) -> EncodedChip:
    """Members ``<field>.npy`` (sorted) then ``json``; unavailable chips get the json member only.

    ``data`` is the chip file's content when already fetched (release rows); otherwise it is read here.
    """
    header = {
        "chip_id": chip.chip_id, "region": region, "split": chip.split, "modality": modality.name,
        "source": {"file": source.name or None, "size": source.size, "status": source.status},
    }
    digest = None
    if source.status != "file":
        reason = f"{source.status}: {source.detail}" if source.detail else source.status
        problem = f"chip {chip.chip_id}: {source.name}: {source.detail}" if source.status == "refused" else None
        return _unavailable(header, reason, problem)
    limit = chip_limits(modality).max_file_bytes
    try:
        size = source.size if data is None else len(data)
        if size > limit:  # known from the listing or the release row: refused unread
            raise ChipError(chip.chip_id, source.name, too_large(size, limit))
        data = load_source(source, limit) if data is None else data
        digest = header["source"]["sha256"] = hashlib.sha256(data).hexdigest()
        sample = _read(modality, data, chip.chip_id, source.name)
    except ChipError as exc:
        return _unavailable(header, f"unreadable: {exc.reason}", problem=str(exc), digest=digest)
    except OSError as exc:
        message = f"chip {chip.chip_id}: {source.name}: cannot read: {exc}"
        return _unavailable(header, f"unreadable: {exc}", problem=message, digest=digest)
    meta = {**header, **sample.meta, "available": True}
    members = [(f"{name}.npy", npy_bytes(sample.arrays[name])) for name in sorted(sample.arrays)]
    members.append(("json", json_bytes(meta)))
    stats, fraction = _measure(modality, sample.arrays, meta)
    try:
        summary, problem = summarize(modality, sample.arrays, meta), None
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # odd but readable data: keep the chip, say so
        summary, problem = {}, f"chip {chip.chip_id}: {source.name}: no chips.parquet summary: {exc!r}"
    problems = [p for p in (_crs_problem(chip.chip_id, source.name, meta), problem) if p]
    return EncodedChip(members, True, None, fraction, stats, "; ".join(problems) or None, digest, summary)


def _crs_problem(chip_id: str, name: str, meta: dict) -> str | None:
    mismatch = meta.get("crs_mismatch")
    if not mismatch:
        return None
    return (f"chip {chip_id}: {name}: CRS is {mismatch['found']}, not the declared {mismatch['declared']}; "
            "built as it is, with crs_mismatch in its json")


_ISOLATED = IsolatedReader()


def _read(modality: Modality, data: bytes, chip_id: str, name: str) -> ChipSample:
    """Isolated containers (NetCDF: libhdf5 can hang on damaged files) are read in a killable child process."""
    reader = reader_for(modality.container)
    if reader.isolated:
        return _ISOLATED.read(modality, data, chip_id, name, reader)
    return read_chip(modality, data, chip_id, name, reader)


def _unavailable(header: dict, reason: str, problem: str | None = None, digest: str | None = None) -> EncodedChip:
    meta = {**header, "available": False, "missing_reason": reason}
    return EncodedChip([("json", json_bytes(meta))], False, reason, None, {}, problem, digest)


def _measure(modality: Modality, arrays: dict[str, np.ndarray], meta: dict) -> tuple[dict, float | None]:
    """Per-band statistics of every gridded field and the chip's overall nodata fraction."""
    coords = dict(meta.get("labels", {}))
    coords.update({f["variable"]: arrays[n].tolist() for n, f in meta["fields"].items()
                   if "variable" in f and arrays[n].ndim == 1})
    stats, missing, total = {}, 0, 0
    for name, field_meta in meta["fields"].items():
        if not is_grid(field_meta):
            continue
        names = band_names(field_meta, coords, modality.variable_axis)
        stats[name] = chip_stats(arrays[name], field_meta, names)
        # upstream normalises GUNW with NaN-free scalars (its own normaliser): the same as ours
        stats[name + UPSTREAM] = (stats[name] if modality.variable_axis == "datepair"
                                  else upstream_chip_stats(arrays[name], field_meta, names))
        mask = nodata_mask(arrays[name], field_meta.get("nodata"))
        missing, total = missing + int(mask.sum()), total + mask.size
    return stats, (missing / total if total else None)


def clean_float(value: float | None) -> float | None:
    """NaN becomes None so rows stay valid JSON and Parquet nulls."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value
