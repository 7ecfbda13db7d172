"""Finish batches on the device: ``stream(..., defer=True)`` yields the stored integers (cropped/padded,
``view_as`` applied), and ``normalize_on(stream, device)`` moves a batch and does the rest there.

The result is bit for bit what ``defer=False`` yields on the CPU: the same float32 subtraction and
division, nodata and non-finite values set to the fill, class codes looked up in the same table. What
crosses shared memory and the host-to-device copy is the stored dtype: 2 bytes a pixel for s1grd instead
of 4, 1 for class codes instead of the 8 of an int64 label map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from m3leo_hf.stages.labels import IGNORE_INDEX, code_table


@dataclass(frozen=True)
class DeferredField:
    """One normalised field: per-band ``mean`` and ``denominator`` (float32, as ``Normalize`` computes them),
    the stored ``nodata`` (None: NaN only) and the ``fill`` for nodata and non-finite results."""

    mean: np.ndarray
    denominator: np.ndarray
    nodata: float | int | None
    fill: float = 0.0

    def always_finite(self, dtype: torch.dtype) -> bool:
        """Whether every value of the integer ``dtype`` normalises to a finite float32 (no overflow to inf)."""
        if dtype.is_floating_point or not (np.isfinite(self.mean).all() and np.isfinite(self.denominator).all()
                                           and self.denominator.all()):
            return False
        info = torch.iinfo(dtype)
        with np.errstate(over="ignore"):
            largest = (max(abs(info.min), info.max) + np.abs(self.mean).max()) / np.abs(self.denominator).min()
        return bool(largest < 1e38)  # float32 overflows at 3.4e38


@dataclass(frozen=True)
class DeferredNormalize:
    """A modality's normalised grid fields, by name (a batch of one tensor holds its only field)."""

    fields: Mapping[str, DeferredField]
    _constants: dict = field(default_factory=dict, compare=False, repr=False)

    def finish(self, value: torch.Tensor | Mapping[str, torch.Tensor], device: torch.device) -> Any:
        if isinstance(value, torch.Tensor):
            (name,) = self.fields
            return self._field(name, value, device)
        return {name: self._field(name, tensor, device) if name in self.fields else tensor
                for name, tensor in value.items()}

    def _field(self, name: str, raw: torch.Tensor, device: torch.device) -> torch.Tensor:
        spec = self.fields[name]
        key = (name, str(device))
        if key not in self._constants:
            self._constants[key] = tuple(torch.from_numpy(a).to(device) for a in (spec.mean, spec.denominator))
        mean, denominator = self._constants[key]
        shape = (1, -1, 1, 1)  # (batch, bands, H, W) with the leading dims of a field flattened into bands
        bands = raw.reshape(raw.shape[0], -1, *raw.shape[-2:])
        out = bands.to(torch.float32, copy=True).sub_(mean.view(shape)).div_(denominator.view(shape))
        if not spec.always_finite(bands.dtype):
            out.nan_to_num_(nan=spec.fill, posinf=spec.fill, neginf=spec.fill)
        if spec.nodata is not None and not (isinstance(spec.nodata, float) and np.isnan(spec.nodata)):
            out.masked_fill_(bands == spec.nodata, spec.fill)
        return out.reshape(raw.shape)


@dataclass(frozen=True)
class DeferredLabels:
    """Class codes (integers of at most 16 bits, of ``dtype``) -> ``{"label": int64, "presence": float32}``."""

    class_codes: tuple[int, ...]
    dtype: str
    other: int = IGNORE_INDEX
    _constants: dict = field(default_factory=dict, compare=False, repr=False)

    def finish(self, codes: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._constants:
            self._constants[key] = torch.from_numpy(code_table(self.dtype, self.class_codes, self.other).copy()).to(device)
        table = self._constants[key]
        bits = np.dtype(self.dtype).itemsize * 8
        patterns = codes.reshape(len(codes), *codes.shape[-2:]).to(torch.int64) & ((1 << bits) - 1)
        label = table[patterns]  # the unsigned bit pattern of a code indexes the table
        classes = len(self.class_codes)
        index = torch.where((label >= 0) & (label < classes), label, classes).reshape(len(label), -1)
        presence = torch.zeros(len(label), classes + 1, dtype=torch.float32, device=label.device)
        presence.scatter_(1, index, 1.0)
        return {"label": label, "presence": presence[:, :classes].contiguous()}


Deferred = DeferredNormalize | DeferredLabels


class DeviceFinish:
    """``batch -> batch`` on ``device``: every tensor moved (``non_blocking``; pin the loader's memory), the
    deferred modalities finished. Made by ``normalize_on``."""

    def __init__(self, deferred: Mapping[str, Deferred], device: str | torch.device):
        self.deferred, self.device = dict(deferred), torch.device(device)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in batch.items():
            moved = value if key == "meta" else _to(value, self.device)
            out[key] = self.deferred[key].finish(moved, self.device) if key in self.deferred else moved
        return out


def normalize_on(stream, device: str | torch.device) -> DeviceFinish:
    """The finishing step of ``stream`` (made with ``defer=True``) on ``device``: ``batch = finish(batch)``."""
    deferred = {m: t.deferred for m, t in stream.transforms.items() if getattr(t, "deferred", None) is not None}
    if not deferred:
        raise ValueError("normalize_on: the stream defers nothing; create it with defer=True (and normalize=True "
                         "or class labels)")
    return DeviceFinish(deferred, device)


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    return value
