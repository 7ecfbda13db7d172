"""``ModalityTransform``: our default recipe for one modality, as a pipeline of ``m3leo_hf.stages``.

``ModalityTransform(modality, ...)(arrays, fields, dates, labels, region)`` takes a chip's decoded fields and
its sample JSON blocks and returns numpy arrays keyed by field name:

* gridded fields: ``view_as`` (s1grd uint16 -> int16 dB), the selected ``bands``, then (``normalize``)
  ``(x - mean) / std`` as float32 with nodata and NaN set to 0; then ``resize`` (bilinear with antialias,
  NaN-aware, mean-preserving for regression labels; class maps nearest) and/or a centre crop/pad
  (``spatial_size``); without ``normalize`` a resized field is float32 with nodata -> NaN;
* segmentation labels (esaworldcover, ``labels=True``): ``label`` (int64 class index 0..C-1 from the
  class codes, 255 = nodata/unknown, the ignore index) and ``presence`` (float32 multi-hot);
* 1-D y/x coordinates follow their grid; other fields (per-datepair vectors) are unchanged;
* GUNW date-pair selection (``datepairs``, see ``DatePairs``): each chosen field becomes ``(n_windows, H, W)``
  float32, plus ``pairs_available`` ``(n_windows,)`` bool; a window without a matching pair is zeros.

``transform``: user stages (``Chip -> Chip``) run after these, like TorchGeo's ``transforms=``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from builders.declarations import Modality
from m3leo_hf.device import Deferred, DeferredField, DeferredLabels, DeferredNormalize
from m3leo_hf.modalities import declaration
from m3leo_hf.stages.checks import ExpectedField, ExpectStored
from m3leo_hf.stages.normalize import moments
from m3leo_hf.stages import (IGNORE_INDEX, GUNW_BASELINES, Chip, ClassLabels, CropPad, DatePairs, FillNaN, Normalize,
                             Pipeline, Resize, SelectBands, SelectPairs, Size, Stage, ToFloat, ViewAs,
                             center_crop_pad, class_labels, fill_value, pool_stats)

__all__ = ["GUNW_BASELINES", "IGNORE_INDEX", "DatePairs", "ModalityTransform", "Size", "center_crop_pad",
           "class_labels", "pool_stats", "run"]


def stored_nodata(modality: Modality) -> float | int | None:
    """The declared nodata as the shards store it (s1grd: the file's uint16 value viewed as int16)."""
    if modality.nodata is None or modality.store_as is None:
        return modality.nodata
    return np.asarray(modality.nodata).astype(modality.dtype).view(modality.store_as).item()


def run(pipeline: Pipeline, modality: str, arrays: Mapping[str, np.ndarray], fields: Mapping[str, Mapping],
        dates: Mapping | None = None, labels: Mapping | None = None, region: str | None = None,
        into: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``pipeline`` makes of one chip (``into``: see ``Pipeline``)."""
    return dict(pipeline(Chip(modality, dict(arrays), dict(fields), dates, labels, region), into).arrays)


def placeholder(pipeline: Pipeline, modality: str, template: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    """Output for a chip lacking ``modality``, shaped like a chip with ``template`` fields: zeros everywhere,
    except label maps, which are all ``IGNORE_INDEX``."""
    arrays = {name: np.full(f["shape"], fill_value(f), dtype=f["dtype"]) for name, f in template.items()}
    chip = pipeline(Chip(modality, arrays, dict(template), placeholder=True))
    return {name: np.full_like(v, IGNORE_INDEX) if name == "label" else np.zeros_like(v)
            for name, v in chip.arrays.items()}


class ModalityTransform:
    """Turn one chip's raw fields of ``modality`` into model-ready arrays (see module docstring).

    ``stats``: per-field band statistics (``stats.json`` ``splits.train``, or ``pool_stats`` of several
    regions), required for ``normalize``. ``bands``: band names to keep, a list for a single-field
    modality or ``{field: [names]}``. ``spatial_size``: ``(H, W)`` or ``S``, centre crop/pad; ``resize``:
    ``(H, W)`` or ``S``, resampling. ``datepairs`` (modalities with a ``datepair`` axis, GUNW): see
    ``DatePairs``. ``transform``: extra stages run last. ``pipeline``: the stages, for inspection.
    """

    def __init__(self, modality: str, *, stats: Mapping[str, Mapping] | None = None,
                 bands: Sequence[str] | Mapping[str, Sequence[str]] | None = None, normalize: bool = False,
                 labels: bool = True, spatial_size: Size | None = None, resize: Size | None = None,
                 datepairs: DatePairs | Mapping[str, Any] | bool | None = None,
                 transform: Stage | Sequence[Stage] | None = None, defer: bool = False):
        self.modality = declaration(modality)
        modality = self.modality.name
        self.datepairs = DatePairs.parse(datepairs)
        if self.datepairs is not None and self.modality.variable_axis != "datepair":
            raise ValueError(f"{modality}: datepairs= applies to modalities with date pairs (gunw), not {modality}")
        if self.datepairs is not None and bands is not None:
            raise ValueError(f"{modality}: give datepairs= or bands=, not both")
        if normalize and not stats:
            raise ValueError(f"{modality}: normalize=True needs the published train statistics")
        self.labels = labels and self.modality.label_kind == "segmentation" and bool(self.modality.class_codes)
        extra = [] if transform is None else [transform] if callable(transform) else list(transform)
        self.deferred: Deferred | None = None
        if defer:
            if resize is not None or self.datepairs is not None or extra:
                raise ValueError(f"{modality}: defer=True finishes normalisation and labels on the device after a "
                                 f"crop/pad (spatial_size); it takes no resize, datepairs or transform")
            stages, self.deferred = self._deferred_stages(dict(stats or {}), bands, normalize, spatial_size)
        else:
            stages = self._stages(dict(stats or {}), bands, normalize, spatial_size, resize)
        self.pipeline = Pipeline(stages + extra)
        last = self.pipeline.stages[-1] if self.pipeline.stages else None  # can its results go into a batch?
        self._writes_into = isinstance(last, ClassLabels) or (isinstance(last, CropPad) and last.pad)

    def _stages(self, stats: Mapping, bands, normalize: bool, spatial_size: Size | None,
                resize: Size | None) -> list[Stage]:
        stages: list[Stage] = [ViewAs()]
        if bands is not None:
            stages.append(SelectBands(bands))
        if spatial_size is not None and resize is None:
            stages.append(CropPad(spatial_size, pad=False))  # crop the stored values; pad at the end
        if self.datepairs is not None:
            stages.append(ToFloat())
            if normalize:
                stages.append(Normalize(stats, fields=self.datepairs.fields))
            stages.append(SelectPairs(self.datepairs))
            if normalize:
                stages.append(FillNaN(0.0))
        elif normalize and not self.labels:
            stages.append(Normalize(stats, fill=0.0))  # = ToFloat(), Normalize(stats), FillNaN(0.0), in one pass
        elif resize is not None and not self.labels:
            stages.append(ToFloat())
        if resize is not None:
            regression = self.modality.label_kind == "regression"
            stages.append(Resize(resize, mode="nearest" if self.labels else "bilinear", preserve_mean=regression))
        if spatial_size is not None:
            stages.append(CropPad(spatial_size))
        if self.labels:
            stages.append(ClassLabels(self.modality.class_codes))
        return stages

    def _deferred_stages(self, stats: Mapping, bands, normalize: bool, spatial_size: Size | None
                         ) -> tuple[list[Stage], Deferred | None]:
        """Stages that keep the stored values (view_as, bands, crop/pad) and what ``normalize_on`` finishes."""
        name = self.modality.name
        stages: list[Stage] = [ViewAs()] + ([SelectBands(bands)] if bands is not None else [])
        nodata = stored_nodata(self.modality)
        deferred: Deferred | None = None
        if self.labels:
            dtype = np.dtype(self.modality.stored_dtype)
            if dtype.kind not in "iu" or dtype.itemsize > 2:
                raise ValueError(f"{name}: defer=True maps class codes of at most 16 bits, not {dtype}")
            deferred = DeferredLabels(tuple(self.modality.class_codes), dtype.str)
            stages.append(ExpectStored(name, {self.modality.field: ExpectedField(dtype=dtype.str)}))
        elif normalize:
            if nodata is None:
                raise ValueError(f"{name}: defer=True needs a declared nodata (padding and masking value)")
            fields, expected = {}, {}
            for field, field_stats in stats.items():
                chosen = bands.get(field) if isinstance(bands, Mapping) else bands
                names = list(chosen) if chosen is not None else list(field_stats["band_names"])
                mean, std = moments(field_stats, names, f"{name}.{field}")
                fields[field] = DeferredField(mean.astype(np.float32), std.astype(np.float32) + np.float32(0.0), nodata)
                expected[field] = ExpectedField(band_names=tuple(names), nodata=nodata)
            deferred = DeferredNormalize(fields)
            stages.append(ExpectStored(name, expected))
        if spatial_size is not None:
            stages += [CropPad(spatial_size, pad=False), CropPad(spatial_size)]
        return stages, deferred

    def __call__(self, arrays: Mapping[str, np.ndarray], fields: Mapping[str, Mapping], dates: Mapping | None = None,
                 labels: Mapping | None = None, region: str | None = None,
                 into: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The output arrays; ``into`` (arrays by output name, a batch's row): where the last stage is the
        crop/pad or the class labels, the outputs that fit them are written there (and returned) instead of into
        new arrays."""
        return run(self.pipeline, self.modality.name, arrays, fields, dates, labels, region,
                   into if self._writes_into else None)

    def placeholder(self, template: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
        """Output for a chip lacking this modality (zeros; label maps ``IGNORE_INDEX``); deferred: the stored
        nodata, which ``normalize_on`` turns into those."""
        if self.deferred is not None:
            arrays = {name: np.full(f["shape"], fill_value(f), dtype=f["dtype"]) for name, f in template.items()}
            return run(self.pipeline, self.modality.name, arrays, {n: dict(f) for n, f in template.items()})
        return placeholder(self.pipeline, self.modality.name, template)
