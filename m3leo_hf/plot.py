"""Pictures of chips: each modality rendered as an RGB image a person can read, and ``plot(sample)``.

* ``s2rgbm``: true colour of the month with the most valid pixels (then the most contrast);
* ``s1grd``: VV / VH / VV−VH false colour of the first season and orbit (dB, read as int16);
* ``esaworldcover``: the ESA WorldCover class palette (codes, or class indices once labelled);
* ``srtmdem``: hillshade of the elevation band, tinted by height;
* ``gunw``: interferometric phase of the first date pair, wrapped to [−π, π) on a cyclic colour map;
* ``modis``: percent tree cover of the first year, 0–100 % from white to green, water (200) blue;
* anything else: the first band on a perceptual colour map.

No-data and NaN pixels are black. Every stretch is per image (2nd–98th percentile of valid pixels).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pillow is imported when a picture is drawn: streaming does not pay for it
    from PIL import Image

from builders.declarations import Modality
from builders.registry import GUNW_FAMILIES, get_modality

# ESA WorldCover v100 class colours (Product User Manual), in class-code order.
WORLDCOVER_COLOURS = {10: "#006400", 20: "#ffbb22", 30: "#ffff4c", 40: "#f096ff", 50: "#fa0000", 60: "#b4b4b4",
                      70: "#f0f0f0", 80: "#0064c8", 90: "#0096a0", 95: "#00cf75", 100: "#fae6a0"}
VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
TERRAIN = ("#2c7bb6", "#a6d96a", "#ffffbf", "#d7a05b", "#ffffff")
GREENS = ("#f7fcf5", "#a1d99b", "#41ab5d", "#006d2c", "#00441b")
WATER = "#0064c8"
CYCLIC = ("#ff0000", "#ffff00", "#00ff00", "#00ffff", "#0000ff", "#ff00ff", "#ff0000")
TILE = 128
def render(modality: str | Modality, fields: Mapping[str, np.ndarray], band_names: Sequence[str] | None = None,
           nodata: float | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 picture of one chip of ``modality`` (a declaration, or a name the package knows)
    from its ``{field: array}``; the rendering follows the modality's family (every s1grd year alike)."""
    declared = _declared(modality)
    family = declared.family if declared else str(modality)
    nodata = declared.nodata if nodata is None and declared else nodata
    names = list(band_names or (declared.band_names if declared else ()))
    if "label" in fields:  # a labelled esaworldcover sample: class indices, 255 = ignore
        return _classes(np.asarray(fields["label"]), indices=True)
    if family in GUNW_FAMILIES and "unwrappedphase" in fields:
        return _phase(_first_plane(fields["unwrappedphase"]))
    array = _main_field(declared.field if declared else family, fields)
    if family == "esaworldcover":
        return _classes(array[0], indices=False)
    if family == "s2rgbm":
        return _true_colour(array, nodata)
    if family in ("s1grd", "s1grdm"):
        return _sar(array, names, nodata)
    if family == "srtmdem":
        return _hillshade(_signed(array[0]), nodata)
    if family == "modis" and array.dtype == np.uint8:
        return _tree_cover(array[0])
    plane = array[0].astype(np.float64)
    return _colour_map(plane, _valid(array[0], nodata), VIRIDIS)


def plot(sample: Mapping, path: str | os.PathLike | None = None, tile: int = 256) -> Image.Image:
    """Draw a joined sample from ``m3leo_hf.stream`` (one sample, or the first of a batch): one panel
    per modality, captioned, side by side. Saves the image to ``path`` (format from its suffix) if given."""
    chip = sample.get("chip_id")
    batched = isinstance(chip, (list, tuple))
    panels = []
    for name, value in sample.items():
        if f"{name}_available" not in sample:  # not a modality of the sample
            continue
        declared = _declared(name)
        fields = value if isinstance(value, Mapping) else {declared.field if declared else name: value}
        fields = {k: _numpy(v)[0] if batched else _numpy(v) for k, v in fields.items() if k != "presence"}
        available = sample.get(f"{name}_available")
        if available is not None and not bool(_numpy(available).reshape(-1)[0]):
            panels.append((name + " (no data)", np.zeros((tile, tile, 3), np.uint8)))
            continue
        panels.append((name, render(declared or name, fields, nodata=np.nan)))
    if not panels:
        raise ValueError(f"no modality in sample (keys {sorted(sample)}); pass a sample from m3leo_hf.stream")
    title = f"chip {chip[0] if batched else chip}" if chip is not None else ""
    image = grid([(resize(p, tile), caption) for caption, p in panels], columns=len(panels), title=title)
    if path is not None:
        image.save(path)
    return image


def grid(tiles: Sequence[tuple[np.ndarray, str]], columns: int, title: str = "") -> Image.Image:
    """Tiles (equal-size RGB arrays) in rows of ``columns``, each captioned below, on white."""
    from PIL import Image, ImageDraw

    height, width = tiles[0][0].shape[:2]
    caption, gap, top = 14, 4, 18 if title else 0
    rows = -(-len(tiles) // columns)
    image = Image.new("RGB", (columns * (width + gap) + gap, top + rows * (height + caption + gap) + gap), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((gap, 3), title, fill="black")
    for i, (array, text) in enumerate(tiles):
        x = gap + (i % columns) * (width + gap)
        y = top + gap + (i // columns) * (height + caption + gap)
        image.paste(Image.fromarray(array), (x, y))
        draw.text((x, y + height + 1), text[: width // 6], fill="black")
    return image


def resize(array: np.ndarray, size: int = TILE) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.NEAREST))


# -- renderers ----------------------------------------------------------------------------------------
def _true_colour(array: np.ndarray, nodata) -> np.ndarray:
    months = array[: array.shape[0] // 3 * 3].reshape(-1, 3, *array.shape[1:])
    valid = [np.all(_valid(m, nodata), axis=0) for m in months]
    scores = [(v.mean(), float(m[:, v].std()) if v.any() else 0.0) for m, v in zip(months, valid)]
    best = max(range(len(months)), key=scores.__getitem__)  # most valid pixels, then most contrast
    return _stack(months[best].astype(np.float64), valid[best])


def _sar(array: np.ndarray, names: Sequence[str], nodata) -> np.ndarray:
    valid = _valid(array, nodata).all(axis=0)
    db = _signed(array).astype(np.float64)
    vv = next((i for i, n in enumerate(names) if "vv" in n.lower()), 0)
    vh = next((i for i, n in enumerate(names) if n.lower() == names[vv].lower().replace("vv", "vh")),
              min(1, len(db) - 1))
    return _stack(np.stack([db[vv], db[vh], db[vv] - db[vh]]), valid)


def _hillshade(elevation: np.ndarray, nodata) -> np.ndarray:
    valid = _valid(elevation, nodata)
    z = np.where(valid, elevation, np.nanmedian(elevation[valid]) if valid.any() else 0).astype(np.float64)
    dy, dx = np.gradient(z)
    slope, aspect = np.arctan(np.hypot(dx, dy)), np.arctan2(-dx, dy)
    azimuth, altitude = np.radians(315.0), np.radians(45.0)
    shade = np.sin(altitude) * np.cos(slope) + np.cos(altitude) * np.sin(slope) * np.cos(azimuth - aspect)
    tint = _colour_map(z, valid, TERRAIN).astype(np.float64)
    return np.where(valid[..., None], tint * (0.35 + 0.65 * np.clip(shade, 0, 1))[..., None], 0).astype(np.uint8)


def _phase(phase: np.ndarray) -> np.ndarray:
    valid = np.isfinite(phase)
    wrapped = np.angle(np.exp(1j * np.where(valid, phase, 0)))  # [-pi, pi]
    return _lut((wrapped + np.pi) / (2 * np.pi), valid, CYCLIC)


def _tree_cover(percent: np.ndarray) -> np.ndarray:
    """MOD44B percent tree cover on a fixed 0-100 % scale; 200 (water) blue, other codes (fill) black."""
    cover = percent <= 100
    rgb = _lut(percent / 100.0, cover, GREENS)
    rgb[percent == 200] = _rgb(WATER)
    return rgb


def _classes(codes: np.ndarray, indices: bool) -> np.ndarray:
    table = np.zeros((256, 3), np.uint8)
    for position, (code, colour) in enumerate(WORLDCOVER_COLOURS.items()):
        table[position if indices else code] = _rgb(colour)
    return table[np.clip(codes.astype(np.int64), 0, 255)]


# -- helpers ------------------------------------------------------------------------------------------
def _main_field(modality: str, fields: Mapping[str, np.ndarray]) -> np.ndarray:
    """The field named like the modality, else the one with the largest raster, as ``(bands, H, W)``."""
    arrays = {name: np.asarray(value) for name, value in fields.items()}
    rasters = {name: a for name, a in arrays.items() if a.ndim >= 2}
    if not rasters:
        raise ValueError(f"{modality}: no 2-D field to draw among {sorted(arrays)}")
    array = rasters.get(modality)
    if array is None:
        array = max(rasters.values(), key=lambda a: a.shape[-1] * a.shape[-2])
    return array.reshape(-1, *array.shape[-2:])


def _declared(modality: str | Modality) -> Modality | None:
    if isinstance(modality, Modality):
        return modality
    try:
        return get_modality(modality)
    except KeyError:  # a product this package does not declare: drawn generically
        return None


def _numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _first_plane(array) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(-1, *array.shape[-2:])[0]


def _signed(array: np.ndarray) -> np.ndarray:
    """uint16 holding wrapped int16 (s1grd dB, srtmdem metres) read as int16; other dtypes unchanged."""
    return array.view(np.int16) if array.dtype == np.uint16 else array


def _valid(array: np.ndarray, nodata) -> np.ndarray:
    valid = np.isfinite(array) if array.dtype.kind == "f" else np.ones(array.shape, bool)
    if nodata is not None and nodata == nodata:
        valid &= array != nodata
    return valid


def _stretch(plane: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """0..1 by the 2nd-98th percentile of the valid pixels (a constant image becomes mid-grey)."""
    if not valid.any():
        return np.zeros(plane.shape)
    low, high = np.percentile(plane[valid], [2, 98])
    if high <= low:
        return np.where(valid, 0.5, 0.0)
    return np.where(valid, np.clip((np.nan_to_num(plane) - low) / (high - low), 0, 1), 0.0)


def _stack(channels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.stack([_stretch(c, valid) for c in channels], axis=-1)
    return (np.where(valid[..., None], out, 0) * 255).round().astype(np.uint8)


def _colour_map(plane: np.ndarray, valid: np.ndarray, stops: Sequence[str]) -> np.ndarray:
    return _lut(_stretch(plane.astype(np.float64), valid), valid, stops)


def _lut(fraction: np.ndarray, valid: np.ndarray, stops: Sequence[str]) -> np.ndarray:
    colours = np.array([_rgb(s) for s in stops], np.float64)
    position = np.clip(np.nan_to_num(fraction), 0, 1) * (len(colours) - 1)
    low = np.minimum(position.astype(np.int64), len(colours) - 2)
    weight = (position - low)[..., None]
    rgb = colours[low] * (1 - weight) + colours[low + 1] * weight
    return np.where(valid[..., None], rgb, 0).round().astype(np.uint8)


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
