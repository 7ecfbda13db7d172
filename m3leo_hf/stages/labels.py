"""Label stages: class codes -> class indices (segmentation), with multi-hot presence."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from m3leo_hf.stages.chip import Chip, fitting

IGNORE_INDEX = 255


def class_labels(codes: np.ndarray, class_codes: Sequence[int], other: int = IGNORE_INDEX,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class index map (int64; ``other`` for every code not in ``class_codes``, negative, huge or NaN ones
    included) and multi-hot presence (float32). Codes of at most 16 bits are looked up in one pass, in a
    table over every value of their dtype; then ``out`` (an int64 array of ``codes``' shape), when given,
    receives the map instead of a new array."""
    if codes.dtype.kind in "iu" and codes.dtype.itemsize <= 2:
        table, index = code_table(codes.dtype.str, tuple(class_codes), other), codes.view(f"u{codes.dtype.itemsize}")
        out = fitting(out, codes.shape, np.dtype(np.int64))
        label = np.take(table, index) if out is None else np.take(table, index, out=out, mode="clip")  # unbuffered
    else:
        top = max(class_codes)
        lookup = np.full(top + 1, other, dtype=np.int64)
        lookup[list(class_codes)] = np.arange(len(class_codes))
        if codes.dtype.kind == "f":
            codes = np.where(np.isfinite(codes) & (codes == np.round(codes)), codes, -1)
        known = (codes >= 0) & (codes <= top)
        label = np.where(known, lookup[np.where(known, codes, 0).astype(np.int64)], other)
    classes = len(class_codes)
    flat = label.reshape(-1) if other >= 0 else label[label >= 0]
    counts = np.bincount(flat, minlength=classes)
    return label, (counts[:classes] > 0).astype(np.float32)


@functools.lru_cache(maxsize=64)
def code_table(dtype: str, class_codes: tuple[int, ...], other: int) -> np.ndarray:
    """Class index (int64) of every bit pattern of the integer ``dtype``, indexed as unsigned."""
    width = np.dtype(dtype).itemsize
    values = np.arange(256 ** width, dtype=f"u{width}").view(dtype).astype(np.int64)
    table = np.full(len(values), other, dtype=np.int64)
    for index, code in enumerate(class_codes):
        table[values == code] = index
    table.flags.writeable = False
    return table


@dataclass(frozen=True)
class ClassLabels:
    """The modality's one grid field (class codes) becomes ``label`` ``(H, W)`` int64 and ``presence``
    ``(classes,)`` float32. ``other``: index of codes outside ``class_codes`` (nodata included):
    ``IGNORE_INDEX`` (ours) or 0 (upstream esawc, where it is tree cover)."""

    class_codes: Sequence[int]
    other: int = IGNORE_INDEX

    def __call__(self, chip: Chip, into: Mapping[str, np.ndarray] | None = None) -> Chip:
        """``into``: an array for ``label`` to be written in (a batch's row), used where it fits."""
        grids = chip.grids()
        if len(grids) != 1:
            raise ValueError(f"{chip.modality}: class labels need one grid field, not {grids}")
        array = chip.arrays[grids[0]]
        if array.dtype.kind not in "iu":
            raise ValueError(f"{chip.modality}.{grids[0]}: class codes must be integers, not {array.dtype}")
        label, presence = class_labels(array.reshape(array.shape[-2:]), self.class_codes, self.other,
                                       (into or {}).get("label"))
        meta = {"label": {"dims": list(chip.fields[grids[0]]["dims"][-2:])}, "presence": {"dims": ["class"]}}
        return chip.with_arrays({"label": label, "presence": presence}, meta, drop=grids)
