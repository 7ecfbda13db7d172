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
* 1-D y/x coordinates: cropped/padded like their grid; other fields (per-datepair vectors): unchanged;
* GUNW date-pair selection (``datepairs``, see ``DatePairs``): each chosen field becomes a fixed-size
  ``(n_windows, H, W)`` float32 array, one pair (or the mean of the pairs) per temporal-baseline
  window, plus ``pairs_available`` ``(n_windows,)`` bool; a window without a matching pair is zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dataclass_field
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np

from builders.chip import nodata_mask
from builders.declarations import Modality
from builders.registry import get_modality
from shard_tools.stats import is_grid

IGNORE_INDEX = 255
GUNW_BASELINES = {"short": (0, 60), "medium": (72, 132), "long": (140, 216)}  # days; the M3LEO GUNW inputs
PAIR_RULES = ("far", "close", "mean")
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
    """Class index map (int64, ``IGNORE_INDEX`` for every other code, negative or huge ones included) and
    multi-hot presence (float32); the lookup table spans the class codes only."""
    top = max(class_codes)
    lookup = np.full(top + 1, IGNORE_INDEX, dtype=np.int64)
    lookup[list(class_codes)] = np.arange(len(class_codes))
    if codes.dtype.kind == "f":
        codes = np.where(np.isfinite(codes) & (codes == np.round(codes)), codes, -1)
    known = (codes >= 0) & (codes <= top)
    label = np.where(known, lookup[np.where(known, codes, 0).astype(np.int64)], IGNORE_INDEX)
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


@dataclass(frozen=True)
class DatePairs:
    """Fixed-size selection along a ``datepair`` axis (GUNW), as the M3LEO reference loaders do.

    ``fields``: the (datepair, H, W) fields to keep (``unwrappedphase``, ``coherence``, ``amplitude``,
    ``connectedcomponents``). ``windows``: ``{name: (min_days, max_days)}``, inclusive temporal-baseline
    ranges, in output order (default: short 0-60, medium 72-132, long 140-216). ``rule`` for a window
    matching several pairs: ``"far"`` the longest baseline, ``"close"`` the shortest (the reference
    loader's first / last matching pair, pairs being stored later_earlier in date order), ``"mean"``
    the NaN-aware mean of all of them. The baseline of a pair is later - earlier date of its
    ``YYYYMMDD_YYYYMMDD`` label, checked against the ``deltadays`` field when the chip has one.
    """

    fields: tuple[str, ...] = ("unwrappedphase",)
    windows: Mapping[str, tuple[float, float]] = dataclass_field(default_factory=lambda: dict(GUNW_BASELINES))
    rule: str = "far"

    @classmethod
    def parse(cls, spec: "DatePairs | Mapping[str, Any] | bool | None") -> "DatePairs | None":
        """``None``/``False``: no selection; ``True``: the defaults; a mapping with keys among
        ``fields`` (name or list), ``windows``, ``rule``; or a ``DatePairs``."""
        if spec is None or spec is False:
            return None
        if spec is True:
            return cls()
        if isinstance(spec, DatePairs):
            spec = {"fields": spec.fields, "windows": spec.windows, "rule": spec.rule}
        unknown = set(spec) - {"fields", "windows", "rule"}
        if unknown:
            raise ValueError(f"datepairs: unknown key(s) {sorted(unknown)}; use fields, windows, rule")
        fields = spec.get("fields", cls.fields)
        fields = (fields,) if isinstance(fields, str) else tuple(fields)
        windows = {str(name): (float(low), float(high))
                   for name, (low, high) in dict(spec.get("windows", GUNW_BASELINES)).items()}
        rule = spec.get("rule", cls.rule)
        if not fields or not windows:
            raise ValueError("datepairs: give at least one field and one window")
        if rule not in PAIR_RULES:
            raise ValueError(f"datepairs: rule must be one of {PAIR_RULES}, not {rule!r}")
        bad = {name: w for name, w in windows.items() if not w[0] <= w[1]}
        if bad:
            raise ValueError(f"datepairs: windows need min_days <= max_days: {bad}")
        return cls(fields, windows, rule)

    def choose(self, baselines: np.ndarray) -> list[np.ndarray]:
        """Per window, the indices of the pairs it uses (empty: no pair in the window)."""
        chosen = []
        for low, high in self.windows.values():
            match = np.flatnonzero((baselines >= low) & (baselines <= high))
            if len(match) and self.rule != "mean":
                days = baselines[match]
                ties = np.flatnonzero(days == (days.max() if self.rule == "far" else days.min()))
                match = match[[ties[0] if self.rule == "far" else ties[-1]]]
            chosen.append(match)
        return chosen


def pair_baselines(labels: Sequence[str]) -> np.ndarray:
    """Temporal baselines in days (float64) of ``YYYYMMDD_YYYYMMDD`` datepair labels, later date first."""
    days = []
    for label in labels:
        try:
            later, earlier = (datetime.strptime(part, "%Y%m%d") for part in str(label).split("_"))
        except ValueError:
            raise ValueError(f"datepair label {label!r} is not YYYYMMDD_YYYYMMDD") from None
        days.append((later - earlier).days)
    return np.array(days, dtype=np.float64)


def nanmean_pairs(stack: np.ndarray) -> np.ndarray:
    """Mean over the first axis of the finite values (NaN where none)."""
    valid = np.isfinite(stack)
    count = valid.sum(axis=0)
    total = np.where(valid, stack, 0).sum(axis=0, dtype=np.float64)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0).astype(np.float32)


def declaration(modality: str | Modality) -> Modality:
    """The declaration of ``modality``: given (taken from a region's metadata), else the package's catalogue."""
    return modality if isinstance(modality, Modality) else get_modality(modality)


class ModalityTransform:
    """Turn one chip's raw fields of ``modality`` into model-ready arrays (see module docstring).

    ``stats``: per-field band statistics (``stats.json`` ``splits.train``, or ``pool_stats`` of
    several regions), required for ``normalize``. ``bands``: band names to keep, a list for a
    single-field modality or ``{field: [names]}``. ``spatial_size``: ``(H, W)`` or ``S``.
    ``datepairs`` (modalities with a ``datepair`` axis, GUNW): see ``DatePairs``; the output is then
    only the chosen fields, each ``(n_windows, H, W)`` float32 (normalised with the field's scalar
    train mean/std when ``normalize``, NaN and nodata -> 0; raw values otherwise, nodata -> NaN), and
    ``pairs_available`` ``(n_windows,)`` bool. Pass the sample JSON's ``dates`` to ``__call__``.
    """

    def __init__(self, modality: str | Modality, *, stats: Mapping[str, Mapping] | None = None,
                 bands: Sequence[str] | Mapping[str, Sequence[str]] | None = None, normalize: bool = False,
                 labels: bool = True, spatial_size: Size | None = None,
                 datepairs: DatePairs | Mapping[str, Any] | bool | None = None):
        self.modality = declaration(modality)
        modality = self.modality.name
        self.datepairs = DatePairs.parse(datepairs)
        if self.datepairs is not None and self.modality.variable_axis != "datepair":
            raise ValueError(f"{modality}: datepairs= applies to modalities with date pairs (gunw), not {modality}")
        if self.datepairs is not None and bands is not None:
            raise ValueError(f"{modality}: give datepairs= or bands=, not both")
        self.stats = dict(stats or {})
        self.bands = bands
        self.normalize = normalize
        self.labels = labels and self.modality.label_kind == "segmentation" and bool(self.modality.class_codes)
        self.spatial_size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else spatial_size
        if normalize and not self.stats:
            raise ValueError(f"{modality}: normalize=True needs the published train statistics")

    def __call__(self, arrays: Mapping[str, np.ndarray], fields: Mapping[str, Mapping],
                 dates: Mapping | None = None) -> dict[str, np.ndarray]:
        if self.datepairs is not None:
            return self._select_pairs(arrays, fields, self._baselines(arrays, fields, dates))
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
        if self.datepairs is not None:  # no pair matches a NaN baseline: every window is missing
            pairs = template.get(self.datepairs.fields[0], {}).get("shape", [0])[0]
            result = self._select_pairs(arrays, template, np.full(pairs, np.nan))
        else:
            result = self(arrays, template)
        return {name: value if name == "label" else np.zeros_like(value) for name, value in result.items()}

    def _baselines(self, arrays: Mapping[str, np.ndarray], fields: Mapping[str, Mapping],
                   dates: Mapping | None) -> np.ndarray:
        """Baseline days per pair from the ``dates.datepairs`` labels, checked against ``deltadays``."""
        labels = (dates or {}).get("datepairs")
        deltadays = arrays.get("deltadays")
        if labels is None:
            if deltadays is None:
                raise KeyError(f"{self.modality.name}: datepairs= needs the sample's dates.datepairs "
                               f"or a deltadays field")
            return deltadays.astype(np.float64)
        baselines = pair_baselines(labels)
        # deltadays is stored as uint8: compare in its dtype (baselines over 255 days wrap the same way)
        if deltadays is not None and (deltadays.shape != baselines.shape
                                      or (baselines.astype(np.int64).astype(deltadays.dtype) != deltadays).any()):
            raise ValueError(f"{self.modality.name}: datepairs {list(labels)} give baselines "
                             f"{baselines.astype(int).tolist()} days but deltadays is {deltadays.tolist()}")
        return baselines

    def _select_pairs(self, arrays: Mapping[str, np.ndarray], fields: Mapping[str, Mapping],
                      baselines: np.ndarray) -> dict[str, np.ndarray]:
        """The chosen fields as ``(n_windows, H, W)`` float32 and ``pairs_available`` (see ``DatePairs``)."""
        chosen = self.datepairs.choose(baselines)
        out: dict[str, np.ndarray] = {}
        for name in self.datepairs.fields:
            if name not in arrays:
                grids = sorted(n for n, f in fields.items() if is_grid(f))
                raise KeyError(f"{self.modality.name}: no field {name!r} to select date pairs from; fields: {grids}")
            field = fields.get(name, {})
            array = view_as(arrays[name], field)
            if array.ndim != 3 or array.shape[0] != len(baselines):
                raise ValueError(f"{self.modality.name}.{name}: shape {array.shape} does not match "
                                 f"{len(baselines)} date pairs")
            stack = array.astype(np.float32)
            stack[nodata_mask(arrays[name], field.get("nodata"))] = np.nan
            if self.normalize:
                mean, std = self._moments(name, (), None)
                stack = (stack - mean[0]) / std[0]
            windows = np.zeros((len(chosen),) + stack.shape[1:], dtype=np.float32)
            for i, pairs in enumerate(chosen):
                if len(pairs):
                    windows[i] = stack[pairs[0]] if len(pairs) == 1 else nanmean_pairs(stack[pairs])
            if self.normalize:
                windows[~np.isfinite(windows)] = 0.0
            out[name] = self._resize(windows, 0.0 if self.normalize else np.nan)
        out["pairs_available"] = np.array([len(pairs) > 0 for pairs in chosen], dtype=bool)
        return out

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
