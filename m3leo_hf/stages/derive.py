"""Derived-channel stages: band differences (s1grd vv-vh), season summaries, month-group means (s2rgbm)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from m3leo_hf.stages.bands import band_indices
from m3leo_hf.stages.chip import Chip, flat_bands


def _only_field(chip: Chip, field: str | None) -> str:
    grids = chip.grids()
    if field is None and len(grids) == 1:
        return grids[0]
    if field not in grids:
        raise KeyError(f"{chip.modality}: give field= one of {grids}")
    return field


@dataclass(frozen=True)
class Difference:
    """Add bands ``name = minuend - subtrahend`` (float32; NaN where either is NaN), given as
    ``(name, minuend, subtrahend)`` triples, before the existing bands (``first``) or after them."""

    pairs: Sequence[tuple[str, str, str]]
    first: bool = True
    field: str | None = None

    def __call__(self, chip: Chip) -> Chip:
        name = _only_field(chip, self.field)
        names = chip.band_names(name)
        bands = flat_bands(chip.arrays[name]).astype(np.float32)
        a = band_indices(names, [p[1] for p in self.pairs], f"{chip.modality}.{name}")
        b = band_indices(names, [p[2] for p in self.pairs], f"{chip.modality}.{name}")
        derived, new = bands[a] - bands[b], [p[0] for p in self.pairs]
        parts, labels = ((derived, bands), new + names) if self.first else ((bands, derived), names + new)
        return chip.with_arrays({name: np.concatenate(parts)},
                                {name: {"band_names": labels, "dims": ["band", *chip.fields[name]["dims"][-2:]]}})


def _group_means(bands: np.ndarray, groups: list[list[int]], skipna: bool) -> np.ndarray:
    """Mean of each group of bands (an all-NaN pixel stays NaN, without numpy's warning)."""
    mean = np.nanmean if skipna else np.mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([mean(bands[g], axis=0) for g in groups]).astype(np.float32)


@dataclass(frozen=True)
class SummarizeSeasons:
    """Replace ``<season>_<band>`` bands by the mean over seasons of each ``<band>``, bands in alphabetical
    order (the upstream ``summarize_seasons``). ``skipna``: NaN-aware mean (ours); upstream takes a plain mean."""

    skipna: bool = True
    field: str | None = None

    def __call__(self, chip: Chip) -> Chip:
        name = _only_field(chip, self.field)
        names = chip.band_names(name)
        suffixes = sorted({n.split("_", 1)[1] for n in names if "_" in n})
        if not suffixes:
            raise ValueError(f"{chip.modality}.{name}: bands {names} are not <season>_<band>")
        groups = [[i for i, n in enumerate(names) if n.endswith("_" + s)] for s in suffixes]
        out = _group_means(flat_bands(chip.arrays[name]).astype(np.float32), groups, self.skipna)
        return chip.with_arrays({name: out}, {name: {"band_names": suffixes,
                                                     "dims": ["band", *chip.fields[name]["dims"][-2:]]}})


@dataclass(frozen=True)
class MonthGroups:
    """s2rgbm month groups: for each group of months (``[["03"], ["06", "07"]]``), the mean over its months of
    each colour, as ``<m1>-<m2>..._<colour>`` bands, group-major (the upstream blosc loader's list of lists)."""

    groups: Sequence[Sequence[str]]
    colours: Sequence[str] = ("red", "green", "blue")
    skipna: bool = True
    field: str | None = None

    def __call__(self, chip: Chip) -> Chip:
        name = _only_field(chip, self.field)
        names = chip.band_names(name)
        what = f"{chip.modality}.{name}"
        index = [band_indices(names, [f"{m}_{c}" for m in group], what) for group in self.groups for c in self.colours]
        labels = [f"{'-'.join(group)}_{c}" for group in self.groups for c in self.colours]
        out = _group_means(flat_bands(chip.arrays[name]).astype(np.float32), index, self.skipna)
        return chip.with_arrays({name: out}, {name: {"band_names": labels,
                                                     "dims": ["band", *chip.fields[name]["dims"][-2:]]}})


@dataclass(frozen=True)
class Scale:
    """Multiply float grid fields by ``factor`` (upstream s2rgbm: 1/255)."""

    factor: float

    def __call__(self, chip: Chip) -> Chip:
        return chip.with_arrays({n: (chip.arrays[n].astype(np.float32) * np.float32(self.factor)) for n in chip.grids()})
