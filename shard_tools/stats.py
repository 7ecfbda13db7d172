"""Per-band statistics (count, mean, std, min, max; nodata ignored), mergeable in a fixed order.

``upstream_chip_stats`` is the variant the upstream M3LEO normaliser computes (every pixel counted, nodata
included and NaN as 0, plus the s1grd vv-vh bands): published as ``<modality>.stats-upstream.json``."""

from __future__ import annotations

import itertools
import math

import numpy as np

from builders.chip import nodata_mask

SPATIAL_DIMS = {"x", "y", "lat", "lon", "latitude", "longitude"}


def is_grid(field_meta: dict) -> bool:
    """A field whose last two dimensions are spatial (the rasters users normalise)."""
    dims = field_meta.get("dims", [])
    return len(dims) >= 2 and dims[-1] in SPATIAL_DIMS and dims[-2] in SPATIAL_DIMS


def band_names(field_meta: dict, labels: dict[str, list], variable_axis: str | None) -> list[str]:
    """Names of the bands statistics are kept for: one per leading index, or one for variable-length axes."""
    lead = field_meta["dims"][:-2]
    if not lead or (variable_axis and variable_axis in lead):
        return ["all"]
    if field_meta.get("band_names"):
        return list(field_meta["band_names"])
    group = field_meta.get("variable", "/").rsplit("/", 1)[0]
    axes = []
    for dim, size in zip(lead, field_meta["shape"][:-2]):
        values = labels.get(f"{group}/{dim}") or labels.get(f"/{dim}")
        axes.append([str(v) for v in values] if values and len(values) == size else [str(i) for i in range(size)])
    return ["_".join(combo) for combo in itertools.product(*axes)]


def band_values(array: np.ndarray, field_meta: dict, names: list[str]) -> np.ndarray:
    """``array`` as (bands, pixels), reinterpreted with ``view_as`` when the field declares one."""
    view = field_meta.get("view_as")
    data = array.view(view) if view else array
    return data.reshape(len(names), -1) if len(names) > 1 or data.ndim > 2 else data.reshape(1, -1)


def empty_stats(names: list[str]) -> dict:
    n = len(names)
    return {"band_names": names, "count": [0] * n, "mean": [0.0] * n, "m2": [0.0] * n,
            "min": [None] * n, "max": [None] * n}


def chip_stats(array: np.ndarray, field_meta: dict, names: list[str]) -> dict:
    """Statistics of one chip's field, ignoring NaN and the field's nodata value."""
    values = band_values(array, field_meta, names)
    mask = nodata_mask(values, field_meta.get("nodata"))
    stats = empty_stats(names)
    for band, (row, bad) in enumerate(zip(values, mask)):
        good = row[~bad].astype(np.float64)
        if good.size:
            mean = float(good.mean())
            stats["count"][band] = int(good.size)
            stats["mean"][band] = mean
            stats["m2"][band] = float(((good - mean) ** 2).sum())
            stats["min"][band] = float(good.min())
            stats["max"][band] = float(good.max())
    return stats


UPSTREAM = "@upstream"  # suffix of the upstream-variant entries in a shard record's stats


def upstream_chip_stats(array: np.ndarray, field_meta: dict, names: list[str]) -> dict:
    """Statistics as the upstream ``MeanStdNormalizer`` counts (M3LEO ``utils.py``): no nodata mask, NaN adds
    0 to the sums but counts as a pixel; bands ``<season>_vv<dir>`` and ``<season>_vh<dir>`` also give
    ``<season>_vvvh<dir>`` (their difference, upstream's derived channel). One band in memory at a time."""
    values = band_values(array, field_meta, names)
    derived = [(n.replace("_vv", "_vvvh", 1), names.index(n), names.index(n.replace("_vv", "_vh", 1)))
               for n in names if "_vv" in n and n.replace("_vv", "_vh", 1) in names]
    stats = empty_stats(names + [d[0] for d in derived])

    def band(i: int) -> np.ndarray:
        row = values[i].astype(np.float64)
        return np.where(np.isnan(row), 0.0, row)

    rows = [(i, lambda i=i: band(i)) for i in range(len(names))]
    rows += [(len(names) + k, lambda a=a, b=b: band(a) - band(b)) for k, (_, a, b) in enumerate(derived)]
    for index, compute in rows:
        row = compute()
        if row.size:
            mean = float(row.mean())
            stats["count"][index], stats["mean"][index] = int(row.size), mean
            stats["m2"][index] = float(((row - mean) ** 2).sum())
            stats["min"][index], stats["max"][index] = float(row.min()), float(row.max())
    return stats


def merge(a: dict, b: dict) -> dict:
    """Chan et al. pairwise merge; deterministic for a fixed merge order."""
    if a["band_names"] != b["band_names"]:
        raise ValueError(f"band names differ: {a['band_names'][:3]} vs {b['band_names'][:3]}")
    out = empty_stats(a["band_names"])
    for i in range(len(a["band_names"])):
        na, nb = a["count"][i], b["count"][i]
        n = na + nb
        out["count"][i] = n
        if n == 0:
            continue
        delta = b["mean"][i] - a["mean"][i]
        out["mean"][i] = a["mean"][i] + delta * nb / n
        out["m2"][i] = a["m2"][i] + b["m2"][i] + delta * delta * na * nb / n
        out["min"][i] = _pick(min, a["min"][i], b["min"][i])
        out["max"][i] = _pick(max, a["max"][i], b["max"][i])
    return out


def _pick(func, x, y):
    present = [v for v in (x, y) if v is not None]
    return func(present) if present else None


def finalize(stats: dict) -> dict:
    """Public form: count, mean, std (population), min, max per band."""
    std = [math.sqrt(m2 / n) if n else None for m2, n in zip(stats["m2"], stats["count"])]
    mean = [m if n else None for m, n in zip(stats["mean"], stats["count"])]
    return {"band_names": stats["band_names"], "count": stats["count"], "mean": mean, "std": std,
            "min": stats["min"], "max": stats["max"]}
