"""One chip of one modality to WebDataset members, its metadata row and its statistics."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from builders.chip import ChipError, ChipSample, nodata_mask
from builders.isolated import IsolatedReader
from builders.read import read_chip
from builders.registry import Modality
from shard_tools.inventory import Chip, Source, load_source
from shard_tools.stats import UPSTREAM, band_names, chip_stats, is_grid, upstream_chip_stats
from shard_tools.tarwriter import json_bytes, npy_bytes


@dataclass
class EncodedChip:
    members: list[tuple[str, bytes]]
    available: bool
    missing_reason: str | None
    nodata_fraction: float | None
    stats: dict[str, dict]
    problem: str | None = None


def encode_chip(modality: Modality, region: str, chip: Chip, source: Source, data: bytes | None = None) -> EncodedChip:
    """Members ``<field>.npy`` (sorted) then ``json``; unavailable chips get the json member only.

    ``data`` is the chip file's content when already fetched (release rows); otherwise it is read here.
    """
    header = {
        "chip_id": chip.chip_id, "region": region, "split": chip.split, "modality": modality.name,
        "source": {"file": source.name or None, "size": source.size, "status": source.status},
    }
    if source.status != "file":
        reason = f"{source.status}: {source.detail}" if source.detail else source.status
        return _unavailable(header, reason)
    try:
        data = load_source(source) if data is None else data
        header["source"]["sha256"] = hashlib.sha256(data).hexdigest()
        sample = _read(modality, data, chip.chip_id, source.name)
    except ChipError as exc:
        return _unavailable(header, f"unreadable: {exc.reason}", problem=str(exc))
    except OSError as exc:
        message = f"chip {chip.chip_id}: {source.name}: cannot read: {exc}"
        return _unavailable(header, f"unreadable: {exc}", problem=message)
    meta = {**header, **sample.meta, "available": True}
    members = [(f"{name}.npy", npy_bytes(sample.arrays[name])) for name in sorted(sample.arrays)]
    members.append(("json", json_bytes(meta)))
    stats, fraction = _measure(modality, sample.arrays, meta)
    return EncodedChip(members, True, None, fraction, stats)


_ISOLATED = IsolatedReader()


def _read(modality: Modality, data: bytes, chip_id: str, name: str) -> ChipSample:
    """NetCDF goes through libhdf5, which can hang on damaged files: read it in a killable child process."""
    if modality.container == "netcdf":
        return _ISOLATED.read(modality, data, chip_id, name)
    return read_chip(modality, data, chip_id, name)


def _unavailable(header: dict, reason: str, problem: str | None = None) -> EncodedChip:
    meta = {**header, "available": False, "missing_reason": reason}
    return EncodedChip([("json", json_bytes(meta))], False, reason, None, {}, problem)


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
