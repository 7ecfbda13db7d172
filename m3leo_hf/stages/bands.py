"""Band stages: pick bands by name, or coordinates along named dimensions (gssic season/deltadays)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from m3leo_hf.stages.chip import Chip, flat_bands


def band_indices(available: Sequence[str], wanted: Sequence[str], what: str) -> list[int]:
    """Positions of ``wanted`` band names among ``available``; unknown names are a clear error."""
    position = {name: i for i, name in enumerate(available)}
    unknown = [name for name in wanted if name not in position]
    if unknown:
        raise KeyError(f"{what}: unknown band(s) {unknown}; available: {list(available)}")
    return [position[name] for name in wanted]


def _selection(chip: Chip, spec: Sequence | Mapping) -> dict:
    """``{field: wanted}``: a mapping as given, or the only grid field for a list."""
    if isinstance(spec, Mapping):
        return dict(spec)
    grids = chip.grids()
    if len(grids) != 1:
        raise ValueError(f"{chip.modality} has fields {grids}: give the selection as {{field: ...}}")
    return {grids[0]: spec}


@dataclass(frozen=True)
class SelectBands:
    """Keep the named bands, in the given order, of one field (a list) or of several (``{field: [names]}``).
    Each selected field becomes ``(bands, H, W)`` with ``band_names``; other fields are unchanged."""

    bands: Sequence[str] | Mapping[str, Sequence[str]]

    def __call__(self, chip: Chip) -> Chip:
        changes, meta = {}, {}
        for name, wanted in _selection(chip, self.bands).items():
            if name not in chip.arrays:
                raise KeyError(f"{chip.modality}: no field {name!r}; fields: {chip.grids()}")
            available = chip.band_names(name)
            index = band_indices(available, list(wanted), f"{chip.modality}.{name}")
            changes[name] = flat_bands(chip.arrays[name])[index]
            meta[name] = {"band_names": [available[i] for i in index], "dims": ["band", *chip.fields[name]["dims"][-2:]]}
        return chip.with_arrays(changes, meta)


@dataclass(frozen=True)
class SelectCoords:
    """Select along named leading dimensions by coordinate value, keeping the requested order, as the
    upstream gssic loader does with ``ds.sel(season=[...], deltadays=[...])``: ``{field: {dim: [values]}}``.
    A dimension not named is kept whole. Values compare as strings (``36`` matches ``"36"``)."""

    select: Mapping[str, Mapping[str, Sequence]]

    def __call__(self, chip: Chip) -> Chip:
        changes, meta = {}, {}
        for name, dims in self.select.items():
            if name not in chip.arrays:
                raise KeyError(f"{chip.modality}: no field {name!r}; fields: {chip.grids()}")
            array, field = chip.arrays[name], chip.fields[name]
            lead = list(field.get("dims", []))[:-2]
            unknown = sorted(set(dims) - set(lead))
            if unknown:
                raise KeyError(f"{chip.modality}.{name}: no dimension(s) {unknown}; it has {lead}")
            for axis, dim in enumerate(lead):
                if dim not in dims:
                    continue
                labels = [str(v) for v in (chip.coordinate(name, dim) or range(array.shape[axis]))]
                index = band_indices(labels, [str(v) for v in dims[dim]], f"{chip.modality}.{name}.{dim}")
                array = np.take(array, index, axis=axis)
            changes[name] = array
            meta[name] = {"band_names": _names(chip, name, dims)}
        return chip.with_arrays(changes, meta)


def _names(chip: Chip, name: str, dims: Mapping[str, Sequence]) -> list[str]:
    """Band names after the selection: the product of the kept labels of each leading dim, joined by '_'."""
    field = chip.fields[name]
    names = [""]
    for axis, dim in enumerate(list(field.get("dims", []))[:-2]):
        kept = dims[dim] if dim in dims else chip.coordinate(name, dim) or range(chip.arrays[name].shape[axis])
        names = [f"{a}_{b}" if a else str(b) for a in names for b in kept]
    return names
