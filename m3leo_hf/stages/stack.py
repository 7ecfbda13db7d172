"""``Stack``: the end of a recipe whose output is one array: chosen fields concatenated on the channel axis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from m3leo_hf.stages.chip import Chip, flat_bands


@dataclass(frozen=True)
class Stack:
    """Replace every field by one, named ``name`` (default: the modality), holding ``fields`` in order:
    grids flattened to ``(bands, H, W)`` and concatenated; ``squeeze``: a single band becomes ``(H, W)``;
    ``keep``: other fields kept as they are (``constant_channels``)."""

    fields: Sequence[str]
    name: str | None = None
    squeeze: bool = False
    keep: Sequence[str] = ()

    def __call__(self, chip: Chip) -> Chip:
        missing = [f for f in self.fields if f not in chip.arrays]
        if missing:
            raise KeyError(f"{chip.modality}: cannot stack missing field(s) {missing}; fields: {sorted(chip.arrays)}")
        name = self.name or chip.modality
        arrays = [chip.arrays[f] for f in self.fields]
        out = np.concatenate([flat_bands(a) for a in arrays])
        names = [f"{f}:{b}" if len(self.fields) > 1 else b for f in self.fields for b in chip.band_names(f)]
        if self.squeeze and len(out) == 1:
            out, names = out[0], None
        dims = list(chip.fields[self.fields[0]].get("dims", ["y", "x"]))[-2:]
        meta = {name: {"dims": dims if out.ndim == 2 else ["band", *dims], "band_names": names, "nodata": None}}
        return chip.with_arrays({name: out}, meta, drop=[n for n in chip.arrays if n != name and n not in self.keep])
