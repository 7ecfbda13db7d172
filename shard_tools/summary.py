"""Per-chip summary values for ``metadata/chips.parquet``, computed from the arrays a build already decoded.

``summarize(modality, arrays, meta)`` returns ``{column: value}`` for one available chip of one modality
(column names carry the modality's name as prefix, ``esaworldcover-2020_frac_10``; values are finite floats,
ints, lists or None). Summaries are declared per family (``SUMMARY_SCHEMA``: every column's Arrow type), so every
year of a product gets them and a chip lacking the modality has the same columns (null).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pyarrow as pa

from builders.chip import nodata_mask
from builders.declarations import Modality
from builders.registry import ESAWC_CODES

MODIS_WATER, MODIS_FILL = 200, 253


def _esaworldcover(arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Fraction of the chip's valid (non-0) pixels in each ESA WorldCover class."""
    codes = arrays[_field(meta)]
    valid = codes[codes != 0]
    counts = np.bincount(valid.ravel(), minlength=256) if valid.size else np.zeros(256, dtype=np.int64)
    return {f"frac_{code}": (float(counts[code] / valid.size) if valid.size else None)
            for code in ESAWC_CODES}


def _srtmdem(arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Elevation mean/std and slope mean; the 2-byte values are read as int16 (negative elevations wrap)."""
    dem = arrays[_field(meta)].view(np.int16).astype(np.float64)
    elevation, slope = dem[0], dem[1] if len(dem) > 1 else None
    return {"elevation_mean": _mean(elevation), "elevation_std": _std(elevation),
            "slope_mean": _mean(slope) if slope is not None else None}


def _modis(arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Mean percent tree cover of the last year (2020), water (200) and fill (253) left out."""
    cover = arrays[_field(meta)][-1]
    valid = cover[(cover != MODIS_WATER) & (cover != MODIS_FILL)]
    return {"tree_cover_mean": _mean(valid.astype(np.float64))}


def _ghsbuilts(arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Mean built-up surface per cell (m²), nodata left out."""
    field = _field(meta)
    return {"mean": _valid_mean(arrays[field], meta["fields"][field].get("nodata"))}


def _biomass(arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Mean above-ground biomass (Mg/ha), NaN left out."""
    return {"agb_mean": _valid_mean(arrays["agb"], None) if "agb" in arrays else None}


def _s2rgbm(arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Months (of the 12 monthly RGB composites) with at least one non-zero pixel."""
    rgb = arrays[_field(meta)]
    months = rgb.reshape(-1, 3, *rgb.shape[-2:])
    return {"months_with_data": int(np.count_nonzero(months.reshape(len(months), -1).any(axis=1)))}


def _gunw(arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Date-pair count, temporal baselines (days) and the perpendicular baseline range (m)."""
    days = arrays.get("deltadays")
    perpendicular = arrays.get("perpendicularbaseline")
    pairs = len(meta.get("dates", {}).get("datepairs") or []) or (len(days) if days is not None else 0)
    day_list = [int(d) for d in days.ravel()] if days is not None else []
    finite = perpendicular[np.isfinite(perpendicular)] if perpendicular is not None else np.zeros(0)
    return {"pairs": pairs, "deltadays": day_list,
            "deltadays_min": min(day_list) if day_list else None,
            "deltadays_max": max(day_list) if day_list else None,
            "perpendicular_baseline_min": float(finite.min()) if finite.size else None,
            "perpendicular_baseline_max": float(finite.max()) if finite.size else None}


def _field(meta: Mapping) -> str:
    """The one array field of a single-array (GeoTIFF) chip."""
    (field,) = meta["fields"]
    return field


SUMMARIZERS: dict[str, Callable[[Mapping[str, np.ndarray], Mapping], dict]] = {
    "esaworldcover": _esaworldcover, "srtmdem": _srtmdem, "modis": _modis, "ghsbuilts": _ghsbuilts,
    "biomass": _biomass, "s2rgbm": _s2rgbm, "gunw": _gunw, "gunw_monthly": _gunw, "gunw48": _gunw,
}

SUMMARY_SCHEMA: dict[str, list[tuple[str, pa.DataType]]] = {
    "esaworldcover": [(f"frac_{code}", pa.float64()) for code in ESAWC_CODES],
    "srtmdem": [("elevation_mean", pa.float64()), ("elevation_std", pa.float64()),
                ("slope_mean", pa.float64())],
    "modis": [("tree_cover_mean", pa.float64())],
    "ghsbuilts": [("mean", pa.float64())],
    "biomass": [("agb_mean", pa.float64())],
    "s2rgbm": [("months_with_data", pa.int8())],
    "gunw": [("pairs", pa.int16()), ("deltadays", pa.list_(pa.int16())),
             ("deltadays_min", pa.int16()), ("deltadays_max", pa.int16()),
             ("perpendicular_baseline_min", pa.float64()), ("perpendicular_baseline_max", pa.float64())],
}


SUMMARY_SCHEMA["gunw_monthly"] = SUMMARY_SCHEMA["gunw48"] = SUMMARY_SCHEMA["gunw"]


def summary_columns(modality: Modality) -> list[tuple[str, pa.DataType]]:
    """The chips.parquet columns (name, Arrow type) of ``modality``'s summaries."""
    return [(f"{modality.name}_{name}", kind) for name, kind in SUMMARY_SCHEMA.get(modality.family, [])]


def summarize(modality: Modality, arrays: Mapping[str, np.ndarray], meta: Mapping) -> dict:
    """Summary columns of one available chip (``{}`` for families without summaries)."""
    summarizer = SUMMARIZERS.get(modality.family)
    return {f"{modality.name}_{k}": v for k, v in summarizer(arrays, meta).items()} if summarizer else {}


def _valid_mean(array: np.ndarray, nodata) -> float | None:
    return _mean(array[~nodata_mask(array, nodata)].astype(np.float64))


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _std(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.std()) if values.size else None

