"""Normalisation stages: z-score with published train statistics, per-chip percentile stretch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from builders.chip import nodata_mask
from m3leo_hf.stages.chip import Chip, flat_bands

Stats = Mapping[str, Mapping]  # {field: {"band_names", "count", "mean", "std"}}


def pool_stats(per_region: Sequence[Stats]) -> dict[str, dict]:
    """Combine per-field band statistics (count, mean, population std) of several regions."""
    pooled: dict[str, dict] = {}
    for field in sorted({f for stats in per_region for f in stats}):
        parts = [stats[field] for stats in per_region if field in stats]
        names = parts[0]["band_names"]
        if any(p["band_names"] != names for p in parts):
            raise ValueError(f"field {field!r}: band names differ between regions")
        count = np.array([[c or 0 for c in p["count"]] for p in parts], dtype=np.float64)
        mean = np.array([[m or 0.0 for m in p["mean"]] for p in parts])
        var = np.array([[(s or 0.0) ** 2 for s in p["std"]] for p in parts])
        total = count.sum(axis=0)
        weight = np.divide(count, total, out=np.zeros_like(count), where=total > 0)
        pooled_mean = (weight * mean).sum(axis=0)
        pooled_var = (weight * (var + (mean - pooled_mean) ** 2)).sum(axis=0)
        pooled[field] = {"band_names": list(names), "count": total.astype(int).tolist(),
                         "mean": pooled_mean.tolist(), "std": np.sqrt(pooled_var).tolist()}
    return pooled


def moments(stats: Mapping, bands: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (float64) of ``bands`` from one field's statistics: by band name, or the one
    value of a field kept as a single band (``["all"]``); a missing mean is 0 and a missing/zero std 1."""
    names = list(stats["band_names"])
    mean = np.array([0.0 if m is None else m for m in stats["mean"]], dtype=np.float64)
    std = np.array([1.0 if not s else s for s in stats["std"]], dtype=np.float64)
    if len(names) == 1 and names[0] not in bands:
        return np.repeat(mean, len(bands)), np.repeat(std, len(bands))
    position = {name: i for i, name in enumerate(names)}
    unknown = [b for b in bands if b not in position]
    if unknown:
        raise KeyError(f"{what}: no train statistics for band(s) {unknown}; the statistics have {names}")
    index = [position[b] for b in bands]
    return mean[index], std[index]


def always_finite(dtype: np.dtype, mean: np.ndarray, divisor: np.ndarray) -> bool:
    """Is ``(x - mean) / divisor`` in float32 finite for every value ``x`` an integer ``dtype`` can hold (per
    band)? Then only a declared nodata can be missing, and no pass over the result needs to look for NaN or inf."""
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    mean, divisor = mean.astype(np.float64), divisor.astype(np.float64)
    with np.errstate(all="ignore"):
        reach = np.maximum(np.abs(info.min - mean), np.abs(info.max - mean)) / divisor
    return bool(np.all(divisor > 0) and np.all(reach < 1e38))  # NaN statistics fail these: float32 tops at 3.4e38


@dataclass(frozen=True)
class Normalize:
    """``(x - mean) / (std + eps)`` per band in float32 (NaN stays NaN).

    ``stats``: ``{field: stats}`` (pooled train statistics), or ``by_region`` ``{region: {field: stats}}``
    to use each chip's own region's (the upstream normaliser is per AOI). ``fields``: the fields to
    normalise (default: every grid field; a grid field without statistics is then an error).
    ``scale``: the statistics are multiplied by it first (statistics of raw values, data already scaled).
    ``fill``: the field's declared nodata and every non-finite result become ``fill`` (its new nodata), in
    the same pass: ``ToFloat(), Normalize(...), FillNaN(fill)`` without two of their copies.
    """

    stats: Mapping[str, Mapping] | None = None
    by_region: Mapping[str, Mapping[str, Mapping]] | None = None
    fields: Sequence[str] | None = None
    eps: float = 0.0
    scale: float = 1.0
    fill: float | None = None

    def __call__(self, chip: Chip) -> Chip:
        stats = self._stats(chip)
        changes, meta = {}, {}
        for name in self.fields if self.fields is not None else chip.grids():
            if name not in chip.arrays:
                continue
            if name not in stats:
                raise KeyError(f"{chip.modality}: no train statistics for field {name!r}")
            array = chip.arrays[name]
            mean, std = moments(stats[name], chip.band_names(name), f"{chip.modality}.{name}")
            shape = (-1, 1, 1)
            mean, std = (mean * self.scale).astype(np.float32), (std * self.scale).astype(np.float32)
            divisor = std + np.float32(self.eps)
            out = np.subtract(flat_bands(array), mean.reshape(shape), dtype=np.float32)  # in float32, as astype first
            np.divide(out, divisor.reshape(shape), out=out)
            out = out.reshape(array.shape)
            if self.fill is not None:
                nodata = chip.fields.get(name, {}).get("nodata")
                finite = always_finite(array.dtype, mean, divisor)
                if nodata is not None or not finite:
                    missing = nodata_mask(array, nodata)
                    if not finite:
                        missing |= ~np.isfinite(out)
                    np.copyto(out, np.float32(self.fill), where=missing)
                meta[name] = {"nodata": self.fill}
            changes[name] = out
        return chip.with_arrays(changes, meta)

    def _stats(self, chip: Chip) -> Mapping:
        if self.by_region is None:
            return self.stats or {}
        if chip.region not in self.by_region:
            raise KeyError(f"{chip.modality}: no statistics for region {chip.region!r}; "
                           f"have {sorted(self.by_region)}")
        return self.by_region[chip.region]


@dataclass(frozen=True)
class PercentileStretch:
    """Per chip and band, ``(x - p_low) / (p_high - p_low)`` with the ``low``/``high`` percentiles of the
    band's finite values (upstream ``percentiles=[a, b]``; a constant band gives 0)."""

    low: float
    high: float

    def __call__(self, chip: Chip) -> Chip:
        changes = {}
        for name in chip.grids():
            array = chip.arrays[name]
            bands = flat_bands(array).astype(np.float32)
            out = np.zeros_like(bands)
            for i, band in enumerate(bands):
                finite = band[np.isfinite(band)]
                if finite.size:
                    a, b = np.percentile(finite, [self.low, self.high])
                    out[i] = (band - a) / (b - a) if b > a else np.where(np.isfinite(band), 0.0, np.nan)
                else:
                    out[i] = band
            changes[name] = out.reshape(array.shape)
        return chip.with_arrays(changes)
