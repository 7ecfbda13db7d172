"""Label stages: class codes -> class indices (segmentation), with multi-hot presence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from m3leo_hf.stages.chip import Chip

IGNORE_INDEX = 255


def class_labels(codes: np.ndarray, class_codes: Sequence[int], other: int = IGNORE_INDEX
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Class index map (int64; ``other`` for every code not in ``class_codes``, negative, huge or NaN ones
    included) and multi-hot presence (float32); the lookup table spans the class codes only."""
    top = max(class_codes)
    lookup = np.full(top + 1, other, dtype=np.int64)
    lookup[list(class_codes)] = np.arange(len(class_codes))
    if codes.dtype.kind == "f":
        codes = np.where(np.isfinite(codes) & (codes == np.round(codes)), codes, -1)
    known = (codes >= 0) & (codes <= top)
    label = np.where(known, lookup[np.where(known, codes, 0).astype(np.int64)], other)
    presence = np.zeros(len(class_codes), dtype=np.float32)
    present = np.unique(label)
    presence[present[(present >= 0) & (present < len(class_codes))]] = 1.0
    return label, presence


@dataclass(frozen=True)
class ClassLabels:
    """The modality's one grid field (class codes) becomes ``label`` ``(H, W)`` int64 and ``presence``
    ``(classes,)`` float32. ``other``: index of codes outside ``class_codes`` (nodata included):
    ``IGNORE_INDEX`` (ours) or 0 (upstream esawc, where it is tree cover)."""

    class_codes: Sequence[int]
    other: int = IGNORE_INDEX

    def __call__(self, chip: Chip) -> Chip:
        grids = chip.grids()
        if len(grids) != 1:
            raise ValueError(f"{chip.modality}: class labels need one grid field, not {grids}")
        array = chip.arrays[grids[0]]
        if array.dtype.kind not in "iu":
            raise ValueError(f"{chip.modality}.{grids[0]}: class codes must be integers, not {array.dtype}")
        label, presence = class_labels(array.reshape(array.shape[-2:]), self.class_codes, self.other)
        meta = {"label": {"dims": list(chip.fields[grids[0]]["dims"][-2:])}, "presence": {"dims": ["class"]}}
        return chip.with_arrays({"label": label, "presence": presence}, meta, drop=grids)
