"""Check stages: flag chips the upstream framework would have replaced (``skip_constant_channels``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from m3leo_hf.stages.chip import Chip, flat_bands


@dataclass(frozen=True)
class FlagConstant:
    """Add ``constant_channels`` (bool scalar): some band of ``fields`` (default: every grid field) has std below
    ``min_std`` (NaN std
    does not count). Upstream (M3LEO:datamodules/components/multidataset.py:193-207) raises there and draws
    another chip; an exact epoch cannot, so the chip is kept and flagged (mask it out of the loss)."""

    fields: Sequence[str] | None = None
    min_std: float = 1e-7

    def __call__(self, chip: Chip) -> Chip:
        flagged = False
        for name in chip.grids() if self.fields is None else self.fields:
            bands = flat_bands(chip.arrays[name]).astype(np.float64)
            flagged |= bool((bands.reshape(len(bands), -1).std(axis=1) < self.min_std).any())
        return chip.with_arrays({"constant_channels": np.array(flagged)}, {"constant_channels": {"dims": []}})


class StoredMismatch(ValueError):
    """A chip's stored values are not what a ``defer=True`` stream finishes alike for every chip on the device."""


@dataclass(frozen=True)
class ExpectedField:
    """What a deferred field must be: ``dtype`` (numpy ``str``), ``band_names`` in order, ``nodata``
    (each ``None``: not checked; a NaN ``nodata`` matches NaN or ``"nan"``)."""

    dtype: str | None = None
    band_names: tuple[str, ...] | None = None
    nodata: float | int | None = None


@dataclass(frozen=True)
class ExpectStored:
    """Raise ``StoredMismatch`` naming the field and what differs when a chip's ``fields`` are not as expected."""

    modality: str
    fields: Mapping[str, ExpectedField]

    def __call__(self, chip: Chip) -> Chip:
        for name, want in self.fields.items():
            if name not in chip.arrays:
                continue
            array, field = chip.arrays[name], chip.fields.get(name, {})
            problems = []
            if want.dtype is not None and array.dtype.str != want.dtype:
                problems.append(f"dtype {array.dtype}, expected {np.dtype(want.dtype)}")
            if want.band_names is not None and tuple(chip.band_names(name)) != want.band_names:
                problems.append(f"bands {chip.band_names(name)}, expected {list(want.band_names)}")
            if want.nodata is not None and not _same_value(field.get("nodata"), want.nodata):
                problems.append(f"nodata {field.get('nodata')!r}, expected {want.nodata!r}")
            if problems:
                raise StoredMismatch(f"{self.modality}.{name}: {'; '.join(problems)}: defer=True finishes every chip "
                                     f"alike on the device; read this data with defer=False")
        return chip


def _same_value(found: Any, expected: float | int) -> bool:
    try:
        found = float(found)
    except (TypeError, ValueError):
        return False
    return found == float(expected) or (math.isnan(found) and math.isnan(float(expected)))
