"""``Chip``: the value every stage takes and returns (one chip's fields of one modality, with their metadata)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from shard_tools.stats import is_grid

Y_DIMS, X_DIMS = {"y", "lat", "latitude"}, {"x", "lon", "longitude"}


@dataclass(frozen=True)
class Chip:
    """``arrays``/``fields``: decoded ``.npy`` members and their ``fields`` metadata (dims, dtype, nodata,
    band_names, view_as); ``dates``/``labels``: the sample JSON's blocks; ``region``: the chip's region;
    ``placeholder``: built for a chip lacking the modality (stages must not fail on its fill values)."""

    modality: str
    arrays: Mapping[str, np.ndarray]
    fields: Mapping[str, Mapping]
    dates: Mapping | None = None
    labels: Mapping | None = None
    region: str | None = None
    placeholder: bool = False

    def grids(self) -> list[str]:
        """Names of the fields whose last two dims are spatial."""
        return sorted(name for name in self.arrays if is_grid(self.fields.get(name, {})))

    def with_arrays(self, changes: Mapping[str, np.ndarray], meta: Mapping[str, Mapping] | None = None,
                    drop: Sequence[str] = ()) -> "Chip":
        """A copy with ``changes`` arrays set (their shape/dtype recorded), ``meta`` merged into their
        field metadata, and ``drop`` removed."""
        arrays = {k: v for k, v in self.arrays.items() if k not in drop}
        fields = {k: v for k, v in self.fields.items() if k not in drop}
        for name, array in changes.items():
            arrays[name] = array
            fields[name] = {**fields.get(name, {}), **(meta or {}).get(name, {}),
                            "shape": list(array.shape), "dtype": str(array.dtype)}
        return dataclasses.replace(self, arrays=arrays, fields=fields)

    def band_names(self, name: str) -> list[str]:
        """One name per leading index of grid field ``name``: declared ``band_names``, else the product
        of its leading dims' labels (sample JSON ``labels`` or 1-D coordinate fields), joined by '_'."""
        field, array = self.fields.get(name, {}), self.arrays[name]
        if field.get("band_names"):
            return list(field["band_names"])
        dims, shape = list(field.get("dims", []))[:-2], array.shape[:-2]
        if not dims:
            return [name]
        names = [""]
        for dim, size in zip(dims, shape):
            values = self.coordinate(name, dim)
            values = [str(v) for v in values] if values is not None and len(values) == size else map(str, range(size))
            names = [f"{a}_{b}" if a else b for a in names for b in values]
        return names

    def coordinate(self, name: str, dim: str) -> list | None:
        """Labels of dimension ``dim`` of field ``name``: the sample's ``labels``, else a 1-D field ``dim``."""
        group = self.fields.get(name, {}).get("variable", "/").rsplit("/", 1)[0]
        labels = self.labels or {}
        values = labels.get(f"{group}/{dim}") or labels.get(f"/{dim}")
        if values is None and dim in self.arrays and self.arrays[dim].ndim == 1:
            values = self.arrays[dim].tolist()
        return None if values is None else list(values)


Stage = Callable[[Chip], Chip]


def fill_value(field: Mapping) -> float | int:
    """Padding value for raw values: the field's nodata (NaN for float fields without one), else 0."""
    nodata = field.get("nodata")
    if isinstance(nodata, str):
        nodata = float(nodata)
    if nodata is None:
        return float("nan") if np.dtype(field.get("dtype", "uint8")).kind == "f" else 0
    return nodata


def fitting(target, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """``target`` when it is a writable array of ``shape`` and ``dtype`` (a batch row a stage may write its result
    in), else None."""
    fits = isinstance(target, np.ndarray) and target.shape == tuple(shape) and target.dtype == dtype
    return target if fits and target.flags.writeable else None


def flat_bands(array: np.ndarray) -> np.ndarray:
    """``array`` as (bands, H, W): leading dims flattened (a 2-D grid is one band)."""
    return array.reshape((-1,) + array.shape[-2:])


def spatial_axis(field: Mapping) -> int | None:
    """0 for a 1-D y coordinate, 1 for a 1-D x coordinate, else None."""
    dims = field.get("dims", [])
    if len(dims) != 1:
        return None
    return 0 if dims[0] in Y_DIMS else 1 if dims[0] in X_DIMS else None


class Pipeline:
    """Stages applied in order; ``stages`` are callables ``Chip -> Chip`` (see ``m3leo_hf.stages``)."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)

    def __call__(self, chip: Chip, into: Mapping[str, np.ndarray] | None = None) -> Chip:
        """``chip`` through every stage; ``into`` (arrays by output name, a batch's row) goes to the last stage,
        which must take it (``CropPad``, ``ClassLabels``)."""
        last = self.stages[-1] if into and self.stages else None
        for stage in self.stages[:-1] if last else self.stages:
            chip = stage(chip)
        return last(chip, into) if last else chip

    def __repr__(self) -> str:
        return f"Pipeline({self.stages!r})"
