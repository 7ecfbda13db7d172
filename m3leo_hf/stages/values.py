"""Value stages: lossless reinterpretation (``view_as``), float conversion with nodata -> NaN, NaN fill."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from builders.chip import nodata_mask
from m3leo_hf.stages.chip import Chip


@dataclass(frozen=True)
class ViewAs:
    """Reinterpret grid fields declaring ``view_as`` (s1grd uint16 -> int16 dB); their nodata follows."""

    def __call__(self, chip: Chip) -> Chip:
        changes, meta = {}, {}
        for name in chip.grids():
            field = chip.fields.get(name, {})
            target = field.get("view_as")
            if not target:
                continue
            array = chip.arrays[name]
            changes[name] = array.view(target)
            nodata = field.get("nodata")
            if nodata is not None and not isinstance(nodata, str):
                nodata = np.asarray(nodata).astype(array.dtype).view(target).item()
            meta[name] = {"view_as": None, "nodata": nodata}
        return chip.with_arrays(changes, meta) if changes else chip


@dataclass(frozen=True)
class ToFloat:
    """Grid fields as float32; ``mask_nodata``: their declared nodata becomes NaN (else it stays a value,
    as the upstream framework reads s1grd, whose 0 it counts as data)."""

    mask_nodata: bool = True

    def __call__(self, chip: Chip) -> Chip:
        changes, meta = {}, {}
        for name in chip.grids():
            array, field = chip.arrays[name], chip.fields.get(name, {})
            out = array.astype(np.float32)
            if self.mask_nodata:
                np.copyto(out, np.float32(np.nan), where=nodata_mask(array, field.get("nodata")))
            changes[name] = out
            meta[name] = {"nodata": "nan"}
        return chip.with_arrays(changes, meta)


@dataclass(frozen=True)
class FillNaN:
    """NaN (and +-inf) in float grid fields -> ``value``, which also becomes their padding value (``CropPad``)."""

    value: float = 0.0

    def __call__(self, chip: Chip) -> Chip:
        changes, meta = {}, {}
        for name in chip.grids():
            array = chip.arrays[name]
            if array.dtype.kind == "f":
                changes[name] = np.where(np.isfinite(array), array, array.dtype.type(self.value))
                meta[name] = {"nodata": self.value}
        return chip.with_arrays(changes, meta)


@dataclass(frozen=True)
class ReplaceValues:
    """Replace values in grid fields: ``{old: new}`` (upstream modis: water 200 -> 0)."""

    mapping: dict

    def __call__(self, chip: Chip) -> Chip:
        changes = {}
        for name in chip.grids():
            array = chip.arrays[name].copy()
            for old, new in self.mapping.items():
                array[chip.arrays[name] == old] = new
            changes[name] = array
        return chip.with_arrays(changes)
