"""Spatial stages: resampling to a grid (bilinear with antialias, or nearest) and centre crop/pad."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from m3leo_hf.stages.chip import Chip, fill_value, fitting, spatial_axis

Size = int | tuple[int, int]


def as_size(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def center_crop_pad(array: np.ndarray, size: Sequence[int], fill: float | int, pad: bool = True,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Centre-crop and/or pad the last ``len(size)`` axes to ``size`` with ``fill``; without ``pad``, only crop
    the axes longer than ``size`` (a view). An array already of ``size`` is returned as is, unless ``out`` (of
    the result's shape and dtype) is given: the result is then written there."""
    lead = array.shape[:array.ndim - len(size)]
    have = array.shape[len(lead):]
    if not pad or (tuple(have) == tuple(size) and out is None):
        return array[(..., *(slice((n - want) // 2, (n - want) // 2 + want) if n > want else slice(None)
                              for n, want in zip(have, size)))]
    if out is None:
        out = np.empty(lead + tuple(size), dtype=array.dtype)
    elif out.shape != lead + tuple(size) or out.dtype != array.dtype:
        raise ValueError(f"cannot crop/pad {array.shape} {array.dtype} into {out.shape} {out.dtype}")
    src, dst = [], []
    for have, want in zip(array.shape[len(lead):], size):
        start = abs(have - want) // 2
        if have >= want:
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[(..., *dst)] = array[(..., *src)]
    for axis, (kept, want) in enumerate(zip(dst, size)):  # only the margins get ``fill``: each value written once
        before = (slice(None),) * axis
        out[(..., *before, slice(0, kept.start), *dst[axis + 1:])] = fill
        out[(..., *before, slice(kept.stop, want), *dst[axis + 1:])] = fill
    return out


def _row(target, array: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """``target`` when it can hold ``array`` cropped/padded to ``size`` (``fitting``), else None."""
    return fitting(target, array.shape[:array.ndim - len(size)] + tuple(size), array.dtype)


def resample(array: np.ndarray, size: tuple[int, int], mode: Literal["bilinear", "nearest"]) -> np.ndarray:
    """The last two axes resampled to ``size``: ``bilinear`` with antialias (float32, as torchvision's
    ``Resize(antialias=True)``), or ``nearest`` (dtype kept, class maps)."""
    if mode == "nearest":  # source pixel floor(i * in / out), as torch's "nearest"
        rows, cols = (np.arange(n) * have // n for n, have in zip(size, array.shape[-2:]))
        return array[..., rows[:, None], cols[None, :]]
    flat = torch.from_numpy(np.ascontiguousarray(array.reshape((1, -1) + array.shape[-2:]), dtype=np.float32))
    out = F.interpolate(flat, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.numpy().reshape(array.shape[:-2] + size)


def _coordinate(values: np.ndarray, size: int) -> np.ndarray:
    """Pixel-centre coordinates of a grid of ``size`` covering the same extent as ``values``."""
    n = len(values)
    if n < 2:
        return np.full(size, values[0] if n else np.nan)
    centres = (np.arange(size) + 0.5) * n / size - 0.5
    step = values[1] - values[0]
    return values[0] + centres * step


@dataclass(frozen=True)
class Resize:
    """Resample grid fields to ``size``; ``mode``: ``bilinear`` (antialias; continuous values, float32) or
    ``nearest`` (class maps). NaN: ``fill_nan`` replaces it first (upstream: 0); without it the
    resampling is NaN-aware (weights of valid pixels only; NaN where none). ``preserve_mean``
    (upstream ``ScaleMean``): each band is multiplied by the NaN-skipping mean of its input over the
    mean of its output (skipped when either is 0). 1-D y/x coordinates follow the new grid."""

    size: Size
    mode: Literal["bilinear", "nearest"] = "bilinear"
    fill_nan: float | None = None
    preserve_mean: bool = False

    def __call__(self, chip: Chip) -> Chip:
        size = as_size(self.size)
        changes = {name: self._grid(chip.arrays[name]) for name in chip.grids()}
        for name, array in chip.arrays.items():
            axis = spatial_axis(chip.fields.get(name, {}))
            if axis is not None and array.ndim == 1 and array.dtype.kind == "f":
                changes[name] = _coordinate(array, size[axis]).astype(array.dtype)
        return chip.with_arrays(changes)

    def _grid(self, array: np.ndarray) -> np.ndarray:
        size = as_size(self.size)
        if self.mode == "nearest":
            return resample(array, size, "nearest")
        values = array.astype(np.float32)
        before = _band_means(values)
        if self.fill_nan is not None:
            values = np.where(np.isnan(values), np.float32(self.fill_nan), values)
            out = resample(values, size, "bilinear")
        else:
            valid = np.isfinite(values)
            total = resample(np.where(valid, values, 0).astype(np.float32), size, "bilinear")
            weight = resample(valid.astype(np.float32), size, "bilinear")
            out = np.divide(total, weight, out=np.full_like(total, np.nan), where=weight > 1e-6)
        if self.preserve_mean:
            after = _band_means(out)
            ratio = np.divide(before, after, out=np.ones_like(before), where=(before != 0) & (after != 0)
                              & np.isfinite(before) & np.isfinite(after))
            out = out * ratio.reshape(ratio.shape + (1, 1)).astype(np.float32)
        return out


def _band_means(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(array.shape[:-2] + (-1,))
    finite = np.isfinite(flat)
    count = finite.sum(axis=-1)
    total = np.where(finite, flat, 0).sum(axis=-1, dtype=np.float64)
    return np.divide(total, count, out=np.zeros(count.shape), where=count > 0)


@dataclass(frozen=True)
class CropPad:
    """Centre crop/pad grid fields to ``size`` (padding: the field's nodata, NaN for floats without one,
    else 0); 1-D y/x coordinates follow (NaN or 0 where padded). ``pad=False``: crop only (views), so that
    the later stages convert only the pixels kept."""

    size: Size
    pad: bool = True

    def __call__(self, chip: Chip, into: Mapping[str, np.ndarray] | None = None) -> Chip:
        """``into``: arrays to write grid fields' results in, by name, where their shape and dtype are the
        result's (a batch's row: no copy of the result later); the others are new arrays, as without it."""
        size = as_size(self.size)
        into = into or {}
        changes = {name: center_crop_pad(chip.arrays[name], size, fill_value(chip.fields.get(name, {})), self.pad,
                                         _row(into.get(name), chip.arrays[name], size) if self.pad else None)
                   for name in chip.grids()}
        for name, array in chip.arrays.items():
            axis = spatial_axis(chip.fields.get(name, {}))
            if axis is not None and array.ndim == 1:
                changes[name] = center_crop_pad(array, size[axis:axis + 1], np.nan if array.dtype.kind == "f" else 0,
                                                self.pad)
        return chip.with_arrays(changes)
