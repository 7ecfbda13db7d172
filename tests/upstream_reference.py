"""An independent implementation of the upstream M3LEO input recipes, reading the chip files themselves
(GeoTIFF with rasterio, NetCDF with h5netcdf), written from upstream's documented behaviour (file and line
in each docstring, spaceml-org/M3LEO ``src/fdlsar``; see /work/shared/reference/upstream-framework.md).
Used by test_presets.py to check ``m3leo_hf.preset``; it shares no code with ``m3leo_hf``."""

from __future__ import annotations

import csv
import functools
from datetime import date
from pathlib import Path

import h5netcdf
import numpy as np
import rasterio
import torch
import torch.nn.functional as F

SEASONS = ["winter", "spring", "summer", "fall"]
S1_BANDS = [f"{s}_{p}{d}" for s in SEASONS for p in ("vv", "vh") for d in ("asc", "des")]  # M3LEO:io/io.py:25-42
WC_CODES = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
FOLDERS = {"s1grd": "s1grd-2020", "s2rgbm": "s2rgbm-2020", "gssic": "gssic", "gunw": "gunw_2020-01-01_2020-03-31",
           "esaworldcover": "esaworldcover-2020", "biomass": "biomass-2020", "ghsbuilts": "ghsbuilts-2020",
           "modis": "modis44b006veg"}


class Region:
    """A region of the sample chip tree: its split CSV and chip files (ids kept only if the file exists,
    M3LEO:datamodules/components/base.py:45-67)."""

    def __init__(self, root: Path):
        self.csv = next(root.glob("*_splits_*.csv"))
        self.folder = root / self.csv.name.split("_splits")[0]
        with open(self.csv) as f:
            self.split = {row["identifier"]: row["split"] for row in csv.DictReader(f)}

    def path(self, modality: str, chip: str) -> Path | None:
        ext = ".nc" if modality in ("gssic", "gunw", "biomass") else ".tif"
        path = self.folder / FOLDERS[modality] / f"{chip}{ext}"
        return path if path.exists() else None

    def train(self, modality: str) -> list[Path]:
        return [p for c, s in sorted(self.split.items()) if s == "train" and (p := self.path(modality, c))]


def _tif(path: Path) -> tuple[np.ndarray, list[str], float | None]:
    with rasterio.open(path) as src:
        return src.read(), list(src.descriptions), src.nodata


def _resize(x: np.ndarray, size) -> np.ndarray:
    """torchvision ``Resize(size, antialias=True)`` on a tensor: bilinear, antialias (M3LEO:datamodules/transforms.py:86-106)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(torch.from_numpy(x[None].astype(np.float32)), size=size, mode="bilinear",
                         antialias=True, align_corners=False)[0].numpy()


def _zscore_stats(items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """MeanStdNormalizer (M3LEO:utils.py:409-441): per channel nansum over all pixels / every pixel counted."""
    x_sum = sum(np.nansum(x.reshape(len(x), -1).astype(np.float64), axis=1) for x in items)
    sq_sum = sum(np.nansum((x.astype(np.float64) ** 2).reshape(len(x), -1), axis=1) for x in items)
    n = sum(x[0].size for x in items)
    mean = x_sum / n
    return mean, np.sqrt(sq_sum / n - mean ** 2)


def _zscore(x: np.ndarray, stats) -> np.ndarray:
    mean, std = stats
    return ((x - mean.reshape(-1, 1, 1)) / (std.reshape(-1, 1, 1) + 1e-5)).astype(np.float32)


def s1grd_item(path: Path, pols, directions, seasons) -> np.ndarray:
    """load_s1grd (M3LEO:io/io.py:118-186): bands pol, direction, season; int16; vv-vh prepended, season-major."""
    data, names, _ = _tif(path)
    wanted = [f"{s}_{p}{d}" for p in pols if p != "vv-vh" for d in directions for s in seasons]
    arr = data[[names.index(b) for b in wanted]].astype(np.int16)
    if "vv-vh" in pols:
        diff = [arr[wanted.index(f"{s}_vv{d}")] - arr[wanted.index(f"{s}_vh{d}")] for s in seasons for d in directions]
        arr = np.concatenate([np.stack(diff), arr])
    return arr.astype(np.float32)


def s2rgbm_item(path: Path, months) -> np.ndarray:
    """s2rgbm_blosc (M3LEO:io/io_blosc.py:906-943): R, G, B per month in the requested order, / 255, NaN -> 0."""
    data, names, _ = _tif(path)
    arr = data[[names.index(f"{m}_{c}") for m in months for c in ("red", "green", "blue")]].astype(np.float32) / 255
    return np.nan_to_num(arr, nan=0.0)


def gssic_item(path: Path, season, deltadays) -> np.ndarray:
    """load_gssic coherence (M3LEO:io/io.py:330-364): ``sel(season=..., deltadays=...)`` in the requested order."""
    with h5netcdf.File(path, "r") as nc:
        seasons = [s.decode() if isinstance(s, bytes) else str(s) for s in nc["season"][:]]
        days = list(nc["deltadays"][:])
        coherence = nc["coherence"][:]
    picked = coherence[[seasons.index(s) for s in season]][:, [days.index(d) for d in deltadays]]
    return picked.reshape((-1,) + picked.shape[-2:]).astype(np.float32)


def gunw_pairs(path: Path) -> tuple[np.ndarray, list[str]]:
    with h5netcdf.File(path, "r") as nc:
        group = nc["/science/grids/data"]
        labels = [p.decode() if isinstance(p, bytes) else str(p) for p in group["datepair"][:]]
        return group["unwrappedPhase"][:].astype(np.float32), labels


def gunw_item(path: Path, windows, stats) -> np.ndarray:
    """load_gunw_extended (M3LEO:io/io_blosc.py:426-499): normalise first, then per window the first pair in
    file order whose days (end - start of label ``end_start``) are within it."""
    phase, labels = gunw_pairs(path)
    phase = (phase - stats[0]) / (stats[1] + 1e-5)
    days = [(_day(label.split("_")[0]) - _day(label.split("_")[1])).days for label in labels]
    out = []
    for low, high in windows:
        match = [i for i, d in enumerate(days) if low <= d <= high]
        out.append(phase[match[0]] if match else np.zeros(phase.shape[1:], np.float32))
    return np.stack(out)


def _day(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:]))


def gunw_stats(paths: list[Path]) -> tuple[float, float]:
    """GunwMeanStdNormalizer (M3LEO:utils.py:509-538): one scalar, fill/NaN dropped."""
    values = np.concatenate([gunw_pairs(p)[0].ravel() for p in paths]).astype(np.float64)
    values = values[np.isfinite(values)]
    return values.mean(), np.sqrt((values ** 2).mean() - values.mean() ** 2)


def esawc_label(path: Path) -> np.ndarray:
    """esawc (M3LEO:datamodules/components/esawc.py:10-41): codes -> 0..10, anything else -> 0; (H, W)."""
    codes = _tif(path)[0][0]
    out = np.zeros(codes.shape, np.int64)
    for i, code in enumerate(WC_CODES):
        out[codes == code] = i
    return out


def regression_label(array: np.ndarray, size=(45, 55)) -> np.ndarray:
    """BiomassTransform / GhsBuiltSTransform with ScaleMean (M3LEO:datamodules/transforms.py:178-187,428-475)."""
    x = array.astype(np.float32)[None]
    original = np.nanmean(x)
    resized = _resize(np.nan_to_num(x, nan=0.0), size)
    if original != 0 and resized.mean() != 0:
        resized = resized * (original / np.nanmean(resized))
    return resized


def biomass_label(path: Path) -> np.ndarray:
    with h5netcdf.File(path, "r") as nc:
        return regression_label(nc["agb"][:])


def ghsbuilts_label(path: Path) -> np.ndarray:
    data, _, nodata = _tif(path)
    array = data[0].astype(np.float32)
    array[data[0] == nodata] = np.nan  # the xarray rasterio engine reads declared nodata as NaN
    return regression_label(array)


def modis_label(path: Path, year: int = 2020) -> np.ndarray:
    """modisveg (M3LEO:io/io.py:689-710): the year's band, 200 -> 0, NaN -> 0."""
    data, names, _ = _tif(path)
    band = data[names.index(f"Percent_Tree_Cover_{year}")].astype(np.float32)
    band[band == 200] = 0
    return np.nan_to_num(band, nan=0.0)[None]


@functools.cache
def _region(root: str) -> Region:
    return Region(Path(root))


@functools.cache
def input_stats(root: str, key: str, options: tuple) -> tuple:
    """Normaliser statistics of a region's train items (upstream: up to 1000 random train items, per AOI)."""
    region, opts = _region(root), dict(options)
    if key == "gunw":
        return gunw_stats(region.train("gunw"))
    return _zscore_stats([_raw_input(region, key, opts, p) for p in region.train(key)])


def _raw_input(region: Region, key: str, opts: dict, path: Path) -> np.ndarray:
    if key == "s1grd":
        return s1grd_item(path, opts["pols"], opts["directions"], opts["seasons"])
    if key == "s2rgbm":
        return s2rgbm_item(path, opts["months"])
    return gssic_item(path, opts["season"], opts["deltadays"])


def input_tensor(root: str, chip: str, modality: str, options: dict, sar_size) -> np.ndarray:
    """The normalised input upstream's dataset yields for ``chip`` (before the DataLoader's batching)."""
    options = {k: v for k, v in options.items() if k != "skip_constant_channels"}
    region, key = _region(root), tuple(sorted((k, _hashable(v)) for k, v in options.items()))
    path = region.path(modality, chip)
    stats = input_stats(root, modality, key)
    if modality == "gunw":
        x = gunw_item(path, options["windows"], stats)
        return _resize(np.nan_to_num(x, nan=0.0), sar_size)
    x = _zscore(_raw_input(region, modality, options, path), stats)
    if modality == "gssic":
        return _resize(np.nan_to_num(x, nan=0.0), sar_size)
    return np.nan_to_num(x, nan=0.0) if modality == "s2rgbm" else x


def constant_channels(root: str, chip: str, modality: str, options: dict) -> bool:
    """skip_constant_channels (M3LEO:datamodules/components/multidataset.py:193-207): a channel of the normalised,
    untransformed input with std < 1e-7."""
    options = {k: v for k, v in options.items() if k != "skip_constant_channels"}
    region, key = _region(root), tuple(sorted((k, _hashable(v)) for k, v in options.items()))
    x = _zscore(_raw_input(region, modality, options, region.path(modality, chip)), input_stats(root, modality, key))
    return bool((x.reshape(len(x), -1).std(axis=1) < 1e-7).any())


def label_tensor(root: str, chip: str, modality: str) -> np.ndarray:
    path = _region(root).path(modality, chip)
    return {"esaworldcover": esawc_label, "biomass": biomass_label, "ghsbuilts": ghsbuilts_label,
            "modis": modis_label}[modality](path)


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def center_crop(x: np.ndarray, size: int) -> np.ndarray:
    """Centre crop/pad of the last two axes to ``size`` with zeros (our preset's ``crop``; upstream chips are 448)."""
    out = np.zeros(x.shape[:-2] + (size, size), x.dtype)
    (h, w), offsets = x.shape[-2:], []
    for have in (h, w):
        start = abs(have - size) // 2
        offsets.append((slice(start, start + size), slice(0, size)) if have >= size
                       else (slice(0, have), slice(start, start + have)))
    (sy, dy), (sx, dx) = offsets
    out[..., dy, dx] = x[..., sy, sx]
    return out
