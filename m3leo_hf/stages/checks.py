"""Check stages: flag chips the upstream framework would have replaced (``skip_constant_channels``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
