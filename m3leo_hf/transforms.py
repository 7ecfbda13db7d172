"""Per-chip transforms shared by every M3LEO reader: view_as, band selection, normalisation,
label maps and fixed spatial size. Inputs and outputs are numpy arrays keyed by field name.

``ModalityTransform(modality, ...)(arrays, fields)`` takes a chip's decoded fields and the
``fields`` block of its sample JSON (dtype, dims, band_names, nodata, view_as) and returns:

* gridded fields: ``view_as`` reinterpretation (s1grd uint16 -> int16 dB), then the selected bands,
  then (``normalize``) ``(x - mean) / std`` as float32 with nodata and NaN set to 0, then a centre
  crop/pad of the last two axes to ``spatial_size``;
* segmentation labels (esaworldcover, ``labels=True``): ``label`` (int64 class index 0..C-1 from
  the class codes, 255 = nodata/unknown, the ignore index) and ``presence`` (float32 multi-hot over
  the classes present);
* 1-D y/x coordinates: cropped/padded like their grid; other fields (per-datepair vectors): unchanged.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from builders.chip import nodata_mask
from builders.registry import get_modality
from shard_tools.stats import is_grid

IGNORE_INDEX = 255
Y_DIMS, X_DIMS = {"y", "lat", "latitude"}, {"x", "lon", "longitude"}
Size = int | tuple[int, int]


def view_as(array: np.ndarray, field: Mapping) -> np.ndarray:
    """The field's lossless reinterpretation (``view_as`` in its metadata), or the array itself."""
    target = field.get("view_as")
    return array.view(target) if target else array


def band_indices(available: Sequence[str], wanted: Sequence[str], what: str) -> list[int]:
    """Positions of ``wanted`` band names among ``available``; unknown names are a clear error."""
    position = {name: i for i, name in enumerate(available)}
    unknown = [name for name in wanted if name not in position]
    if unknown:
        raise KeyError(f"{what}: unknown band(s) {unknown}; available: {list(available)}")
    return [position[name] for name in wanted]


def pool_stats(per_region: Sequence[Mapping[str, Mapping]]) -> dict[str, dict]:
    """Combine per-field band statistics (count, mean, population std) of several regions."""
    pooled: dict[str, dict] = {}
    for field in sorted({f for stats in per_region for f in stats}):
        parts = [stats[field] for stats in per_region if field in stats]
        names = parts[0]["band_names"]
        if any(p["band_names"] != names for p in parts):
            raise ValueError(f"field {field!r}: band names differ between regions")
        count = np.array([[c or 0 for c in p["count"]] for p in parts], dtype=np.float64)
        mean = np.array([[m or 0.0 for m in p["mean"]] for p in parts])
        var = np.array([[(s or 0.0) ** 2 for s in p["std"]] for p in parts])
        total = count.sum(axis=0)
        weight = np.divide(count, total, out=np.zeros_like(count), where=total > 0)
        pooled_mean = (weight * mean).sum(axis=0)
        pooled_var = (weight * (var + (mean - pooled_mean) ** 2)).sum(axis=0)
        pooled[field] = {"band_names": list(names), "count": total.astype(int).tolist(),
                         "mean": pooled_mean.tolist(), "std": np.sqrt(pooled_var).tolist()}
    return pooled


def normalize(array: np.ndarray, mean: np.ndarray, std: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """``(array - mean) / std`` in float32, one mean/std per leading index; invalid and NaN -> 0."""
    shape = array.shape[:-2] + (1, 1)
    out = (array.astype(np.float32) - mean.reshape(shape)) / std.reshape(shape)
    out[invalid | ~np.isfinite(out)] = 0.0
    return out


def class_labels(codes: np.ndarray, class_codes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Class index map (int64, ``IGNORE_INDEX`` for other codes) and multi-hot presence (float32)."""
    lookup = np.full(max(int(codes.max(initial=0)), max(class_codes)) + 1, IGNORE_INDEX, dtype=np.int64)
    lookup[list(class_codes)] = np.arange(len(class_codes))
    label = lookup[codes.astype(np.int64)]
    presence = np.zeros(len(class_codes), dtype=np.float32)
    present = np.unique(label)
    presence[present[present != IGNORE_INDEX]] = 1.0
    return label, presence


def center_crop_pad(array: np.ndarray, size: Sequence[int], fill: float | int) -> np.ndarray:
    """Centre-crop and/or pad the last ``len(size)`` axes to ``size`` with ``fill``."""
    lead = array.shape[:array.ndim - len(size)]
    out = np.full(lead + tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for have, want in zip(array.shape[len(lead):], size):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[(..., *dst)] = array[(..., *src)]
    return out


class ModalityTransform:
    """Turn one chip's raw fields of ``modality`` into model-ready arrays (see module docstring).

    ``stats``: per-field band statistics (``stats.json`` ``splits.train``, or ``pool_stats`` of
    several regions), required for ``normalize``. ``bands``: band names to keep, a list for a
    single-field modality or ``{field: [names]}``. ``spatial_size``: ``(H, W)`` or ``S``.
    """

    def __init__(self, modality: str, *, stats: Mapping[str, Mapping] | None = None,
                 bands: Sequence[str] | Mapping[str, Sequence[str]] | None = None, normalize: bool = False,
                 labels: bool = True, spatial_size: Size | None = None):
        self.modality = get_modality(modality)
        self.stats = dict(stats or {})
        self.bands = bands
        self.normalize = normalize
        self.labels = labels and self.modality.label_kind == "segmentation" and bool(self.modality.class_codes)
        self.spatial_size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else spatial_size
        if normalize and not self.stats:
            raise ValueError(f"{modality}: normalize=True needs the published train statistics")

    def __call__(self, arrays: Mapping[str, np.ndarray], fields: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
        wanted = self._wanted_bands(fields)
        out: dict[str, np.ndarray] = {}
        for name in sorted(arrays):
            field = fields.get(name, {})
            array = arrays[name]
            if not is_grid(field):
                out[name] = self._resize_coordinate(array, field)
            elif self.labels:
                codes = self._resize(array.reshape(array.shape[-2:]), _fill(field))
                out["label"], out["presence"] = class_labels(codes, self.modality.class_codes)
            else:
                out[name] = self._grid(name, array, field, wanted.get(name))
        return out

    def placeholder(self, template: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
        """Output for a chip lacking this modality, shaped like a chip with ``template`` fields:
        zeros everywhere, except label maps, which are all ``IGNORE_INDEX``."""
        arrays = {name: np.full(f["shape"], _fill(f), dtype=f["dtype"]) for name, f in template.items()}
        return {name: value if name == "label" else np.zeros_like(value)
                for name, value in self(arrays, template).items()}

    def _grid(self, name: str, array: np.ndarray, field: Mapping, wanted: list[int] | None) -> np.ndarray:
        invalid = nodata_mask(array, field.get("nodata")) if self.normalize else None
        array = view_as(array, field)
        lead = array.shape[:-2]
        if wanted is not None:
            array = array.reshape((-1,) + array.shape[-2:])[wanted]
            invalid = None if invalid is None else invalid.reshape((-1,) + invalid.shape[-2:])[wanted]
        if self.normalize:
            mean, std = self._moments(name, lead, wanted)
            array = normalize(array, mean, std, invalid)
            return self._resize(array, 0.0)
        return self._resize(array, _fill(field))

    def _moments(self, name: str, lead: tuple[int, ...], wanted: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        stats = self.stats.get(name)
        if stats is None:
            raise KeyError(f"{self.modality.name}: no train statistics for field {name!r}")
        mean = np.array([0.0 if m is None else m for m in stats["mean"]], dtype=np.float32)
        std = np.array([1.0 if not s else s for s in stats["std"]], dtype=np.float32)
        bands = math.prod(lead)
        if len(mean) == 1:
            mean, std = np.repeat(mean, bands), np.repeat(std, bands)
        elif len(mean) != bands:
            raise ValueError(f"{self.modality.name}.{name}: {len(mean)} band statistics for {bands} bands")
        return (mean, std) if wanted is None else (mean[wanted], std[wanted])

    def _wanted_bands(self, fields: Mapping[str, Mapping]) -> dict[str, list[int]]:
        if self.bands is None:
            return {}
        grids = sorted(name for name, field in fields.items() if is_grid(field))
        if isinstance(self.bands, Mapping):
            selection = dict(self.bands)
        elif len(grids) == 1:
            selection = {grids[0]: self.bands}
        else:
            raise ValueError(f"{self.modality.name} has fields {grids}: give bands as {{field: [names]}}")
        out = {}
        for name, names in selection.items():
            available = fields.get(name, {}).get("band_names") or self.stats.get(name, {}).get("band_names")
            if not available:
                raise KeyError(f"{self.modality.name}: field {name!r} has no band names to select from")
            out[name] = band_indices(available, names, f"{self.modality.name}.{name}")
        return out

    def _resize(self, array: np.ndarray, fill: float | int) -> np.ndarray:
        return array if self.spatial_size is None else center_crop_pad(array, self.spatial_size, fill)

    def _resize_coordinate(self, array: np.ndarray, field: Mapping) -> np.ndarray:
        """A 1-D y/x coordinate follows its grid's crop/pad (NaN or 0 where padded)."""
        dims = field.get("dims", [])
        if self.spatial_size is None or len(dims) != 1 or array.ndim != 1:
            return array
        for axis, names in enumerate((Y_DIMS, X_DIMS)):
            if dims[0] in names:
                fill = np.nan if array.dtype.kind == "f" else 0
                return center_crop_pad(array, self.spatial_size[axis:axis + 1], fill)
        return array


def _fill(field: Mapping) -> float | int:
    """Padding value for raw values: the field's nodata (NaN for float fields without one), else 0."""
    nodata = field.get("nodata")
    if isinstance(nodata, str):
        nodata = float(nodata)
    if nodata is None:
        return float("nan") if np.dtype(field.get("dtype", "uint8")).kind == "f" else 0
    return nodata
