"""Plausibility limits for what the read side takes from a region (metadata, tar headers, ``.npy``
headers, sample JSON), checked before anything is allocated from it.

Global limits are constants here; per-field limits come from the modality's declaration (dtype, band
count) and the region's stored field metadata (the template sample's ``fields``), so they can later come
from the modality declaration file alone. A violation is reported as a string naming what is wrong; the
caller turns it into a ``ShardError`` naming the shard and sample.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from builders.declarations import NAME

CHIP_ID = re.compile(r"^[0-9a-f]{13}$")
MODALITY_NAME = NAME  # a shard folder / config name: lower case, digits, - and _ (no dots)
SHARD_URL = re.compile(r"^[a-z0-9][a-z0-9_.-]*/(train|val|test)-\d{6}\.tar$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
NPY_MEMBER = re.compile(r"^[a-z0-9_]+\.npy$")

MAX_INDEX_BYTES = 64 << 20        # metadata/<modality>.shards.json
MAX_STATS_BYTES = 16 << 20        # metadata/<modality>.stats.json
MAX_PARQUET_BYTES = 1 << 30       # metadata/<modality>.parquet (file and decoded size)
MAX_SHARD_BYTES = 64 << 30       # one tar (default target 1 GiB)
MAX_CHIPS_PER_REGION = 1_000_000  # all of M3LEO (6 regions) holds ~1M chips
MAX_MEMBERS_PER_SAMPLE = 64       # .npy fields + json (GUNW: 15)
MIN_SAMPLE_BYTES = 2 * 512        # a tar header and one data block
MAX_JSON_MEMBER_BYTES = 16 << 20  # <id>.json (a few KB; GUNW with per-pair attributes ~100 KB)
MAX_MEMBER_BYTES = 1 << 30        # one .npy member (shards are 1 GiB by default)
MAX_NDIM = 8
MAX_AXIS_GENERIC = 8192           # any axis of a field the template does not know
MAX_ELEMENTS_GENERIC = 1 << 26     # 64M values (s2rgbm: 7.3M)
MAX_VARIABLE_AXIS = 512           # GUNW date pairs per chip (real: up to ~30 per quarter)
SPATIAL_SLACK = 2                 # a chip may be at most twice (+ margin) the template's spatial size
SPATIAL_MARGIN = 16
MIN_STD = 1e-6                    # a positive std below this turns values into ~1e6+: refused
SPATIAL_DIMS = {"y", "lat", "latitude", "x", "lon", "longitude"}


def shape_problem(shape: Any) -> str | None:
    """Why ``shape`` (from a header or JSON) is not a plausible array shape, or ``None``."""
    if not isinstance(shape, (list, tuple)) or not all(type(d) is int for d in shape):
        return f"shape {shape!r} is not a list of integers"
    if len(shape) > MAX_NDIM:
        return f"shape {list(shape)} has more than {MAX_NDIM} axes"
    if any(d < 0 for d in shape):
        return f"shape {list(shape)} has a negative axis"
    if math.prod(shape) > MAX_ELEMENTS_GENERIC:
        return f"shape {list(shape)} holds {math.prod(shape)} elements (limit {MAX_ELEMENTS_GENERIC})"
    return None


@dataclass(frozen=True)
class FieldLimit:
    """What one field of a modality may look like: its dtype, dims and the largest size of each axis."""

    dtype: str | None
    dims: tuple[str, ...] | None
    max_shape: tuple[int, ...] | None

    def problem(self, dtype: str, shape: Sequence[int]) -> str | None:
        if self.dtype is not None and dtype != self.dtype:
            return f"dtype {dtype}, the modality stores {self.dtype}"
        if self.max_shape is None:
            generic = shape_problem(list(shape))
            if generic or any(d > MAX_AXIS_GENERIC for d in shape):
                return generic or f"shape {list(shape)} has an axis over {MAX_AXIS_GENERIC}"
            return None
        if len(shape) != len(self.max_shape) or any(d > m for d, m in zip(shape, self.max_shape)):
            return f"shape {list(shape)} exceeds the plausible {list(self.max_shape)} for this modality"
        return None


def field_limits(declared_dtype: str | None, declared_bands: int, variable_axis: str | None,
                 template: Mapping[str, Mapping] | None) -> dict[str, FieldLimit]:
    """Per-field limits from the declaration (GeoTIFF dtype and band count) and the template's fields:
    same dtype and dims, equal non-spatial axes, spatial axes up to ``SPATIAL_SLACK`` × the template's
    (+ ``SPATIAL_MARGIN``), the variable axis (GUNW date pairs) up to ``MAX_VARIABLE_AXIS``."""
    limits: dict[str, FieldLimit] = {}
    for name, field in (template or {}).items():
        dims, shape = field.get("dims"), field.get("shape")
        if not isinstance(dims, list) or shape_problem(shape) or len(dims) != len(shape):
            continue
        maximum = []
        for dim, size in zip(dims, shape):
            if dim == variable_axis:
                maximum.append(MAX_VARIABLE_AXIS)
            elif dim in SPATIAL_DIMS:
                maximum.append(size * SPATIAL_SLACK + SPATIAL_MARGIN)
            else:
                maximum.append(size)
        limits[name] = FieldLimit(str(field.get("dtype")), tuple(dims), tuple(maximum))
    if declared_dtype and declared_bands and len(limits) <= 1:  # a GeoTIFF modality: one (band, y, x) field
        for name, limit in limits.items():
            spatial = limit.max_shape[1:] if limit.max_shape and len(limit.max_shape) == 3 else (MAX_AXIS_GENERIC,) * 2
            limits[name] = FieldLimit(declared_dtype, limit.dims, (declared_bands, *spatial))
    return limits


def stats_problems(stats: Mapping[str, Any]) -> list[str]:
    """Why per-field band statistics (``stats.json`` ``splits.train``) cannot normalise: each problem names
    the field and band. A band without valid pixels (count 0, mean/std null) and a constant band (std 0)
    are fine; NaN, infinite, negative or tiny (< ``MIN_STD``) std and non-finite means are not."""
    problems = []
    if not isinstance(stats, Mapping):
        return [f"statistics are {type(stats).__name__}, not an object"]
    for field, values in stats.items():
        if not isinstance(values, Mapping):
            problems.append(f"field {field}: statistics are not an object")
            continue
        names, means, stds = values.get("band_names"), values.get("mean"), values.get("std")
        counts = values.get("count")
        if not all(isinstance(v, list) for v in (names, means, stds, counts)) or not (
                len(names) == len(means) == len(stds) == len(counts)):
            problems.append(f"field {field}: band_names, count, mean and std are not lists of one length")
            continue
        for band, count, mean, std in zip(names, counts, means, stds):
            where = f"field {field} band {band}"
            if type(count) is not int or count < 0:
                problems.append(f"{where}: count {count!r} is not a non-negative integer")
            elif count == 0:
                continue
            elif not _finite(mean):
                problems.append(f"{where}: mean {mean!r} is not a finite number")
            elif not _finite(std):
                problems.append(f"{where}: std {std!r} is not a finite number")
            elif std < 0:
                problems.append(f"{where}: std {std!r} is negative (would flip the band's sign)")
            elif 0 < std < MIN_STD:
                problems.append(f"{where}: std {std!r} is below {MIN_STD} (values would blow up)")
    return problems


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
