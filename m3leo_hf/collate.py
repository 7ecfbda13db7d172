"""Turn joined samples (numpy) into torch: one sample, or a batch stacked field by field.

Inside a DataLoader worker a batch is stacked straight into shared memory, so handing it to the main
process moves a file descriptor instead of copying the batch (what ``default_collate`` does too).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from m3leo_hf.recycle import private_empty, shared_empty
from m3leo_hf.tail_arena import ArenaRows, TailArena, join_rows


TAIL_PART = "__tail_part__"  # key marking a worker's tail part of an epoch's last batches (planning.split_tail)


def to_torch(value: Any) -> Any:
    """Arrays become tensors, recursively; strings, flags and metadata pass through."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: v if k == "meta" else to_torch(v) for k, v in value.items()}
    return value


Allocate = Callable[[str, tuple, np.dtype], torch.Tensor]  # (field path, shape, dtype) -> uninitialised tensor


def collate(samples: Sequence[dict], allocate: Allocate | None = None) -> dict:
    """Stack equal-shaped arrays (tensor ``(B, ...)``, into ``allocate``'s tensors when given), flags into bool
    tensors, keep strings and ``meta`` as lists. Different shapes raise ``ValueError`` naming the field and
    the chips."""
    rows = BatchRows(len(samples), allocate)
    for sample in samples:
        rows.add(sample)
    return rows.finish()


class BatchRows:
    """A batch of ``size`` built sample by sample: each sample's arrays are copied into the batch tensors
    (``allocate``'s, else ``empty``'s) when it is added, so no sample is kept until the batch is full.
    ``finish`` returns what ``collate`` would of the samples added (fewer than ``size``: the rows filled)."""

    def __init__(self, size: int, allocate: Allocate | None = None):
        self.size, self.allocate, self.count = size, allocate, 0
        self.first_chip = "?"
        self.layout: dict | None = None  # key -> tensor | nested layout | list of values

    def add(self, sample: dict) -> None:
        chip = sample.get("chip_id", "?")
        if self.layout is None:
            self.layout, self.first_chip = self._allocate(sample, ""), chip
        self._fill(self.layout, sample, "", chip)
        self.count += 1

    def finish(self) -> dict:
        return self._finish(self.layout or {})

    def destinations(self) -> dict:
        """The next row of every batch array, nested like the samples (numpy views), for a sample's arrays to
        be made in place (``add`` then copies nothing for them); empty until the first sample set the layout."""
        return _rows(self.layout, self.count) if self.layout is not None and self.count < self.size else {}

    def _allocate(self, sample: Mapping, path: str) -> dict:
        layout: dict = {}
        for key, value in sample.items():
            if isinstance(value, np.ndarray):
                layout[key] = self._buffer(f"{path}{key}", value.shape, value.dtype)
            elif isinstance(value, dict) and key != "meta":
                layout[key] = self._allocate(value, f"{path}{key}.")
            else:
                layout[key] = []
        return layout

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        shape = (self.size, *shape)
        return self.allocate(name, shape, dtype) if self.allocate is not None else empty(shape, dtype)

    def _fill(self, layout: dict, sample: Mapping, path: str, chip: str) -> None:
        if sample.keys() != layout.keys():
            raise ValueError(f"cannot batch {path or 'the samples'!r}: chip {chip} has fields {sorted(sample)}, "
                             f"chip {self.first_chip} {sorted(layout)}")
        for key, value in sample.items():
            target, name = layout[key], f"{path}{key}"
            if isinstance(target, list):
                target.append(value)
            elif isinstance(target, dict):
                if not isinstance(value, Mapping):
                    raise ValueError(f"cannot batch {name!r}: chip {chip} has no fields there")
                self._fill(target, value, f"{name}.", chip)
            else:
                layout[key] = self._copy(target, value, name, chip)

    def _copy(self, batch: torch.Tensor, value: Any, name: str, chip: str) -> torch.Tensor:
        """Row ``count`` of ``batch`` set to ``value`` (a wider dtype first copies the rows so far)."""
        if not isinstance(value, np.ndarray) or value.shape != tuple(batch.shape[1:]):
            shape = tuple(value.shape) if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"cannot batch {name!r}: shapes differ ({self.first_chip}: {tuple(batch.shape[1:])}, "
                             f"{chip}: {shape}); pass spatial_size= to centre crop/pad every chip to a fixed size")
        rows = batch.numpy()
        dtype = np.result_type(rows.dtype, value.dtype)
        if dtype != rows.dtype:
            wider = self._buffer(name, value.shape, dtype)
            np.copyto(wider.numpy()[:self.count], rows[:self.count])
            batch, rows = wider, wider.numpy()
        if _is_row(value, rows, self.count):  # made in place (``destinations``)
            return batch
        if value.dtype == dtype and value.flags.writeable:  # torch copies with its intra-op threads
            batch[self.count].copy_(torch.from_numpy(value))
        else:
            np.copyto(rows[self.count], value)
        return batch

    def _finish(self, layout: dict) -> dict:
        out = {}
        for key, value in layout.items():
            if isinstance(value, dict):
                out[key] = self._finish(value)
            elif isinstance(value, torch.Tensor):
                out[key] = value if self.count == self.size else value[:self.count]
            elif value and isinstance(value[0], (bool, np.bool_)):
                out[key] = torch.tensor(value, dtype=torch.bool)
            else:
                out[key] = value
        return out


def _rows(layout: dict, row: int) -> dict:
    return {key: value.numpy()[row] if isinstance(value, torch.Tensor) else _rows(value, row)
            for key, value in layout.items() if isinstance(value, (torch.Tensor, dict))}


def _is_row(value: np.ndarray, rows: np.ndarray, row: int) -> bool:
    """Is ``value`` exactly row ``row`` of ``rows`` (same memory, layout and dtype)?"""
    target = rows[row]
    return (value.dtype == target.dtype and value.strides == target.strides
            and value.__array_interface__["data"][0] == target.__array_interface__["data"][0])


def empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor; in shared memory when called in a DataLoader worker."""
    return (private_empty if get_worker_info() is None else shared_empty)(shape, dtype)


def tail_batches(parts: Sequence[dict], batch_size: int, pin_memory: bool = False
                 ) -> tuple[list[dict], TailArena | None]:
    """Join the workers' tail parts (in plan order) and cut them into batches of ``batch_size`` (the last may be
    smaller); ``pin_memory`` puts the joined tensors in pinned memory. Parts the workers wrote into a
    ``TailArena`` are mapped from it, not copied: the arena is returned with the batches (to be released once
    they are gone), or None."""
    arenas: set[TailArena] = set()
    joined = _join([{k: v for k, v in p.items() if k != TAIL_PART} for p in sorted(parts, key=lambda p: p[TAIL_PART])],
                   pin_memory, arenas)
    if pin_memory:  # the arena's rows were copied to pinned memory
        for arena in arenas:
            arena.release()
        arenas.clear()
    total = len(joined["chip_id"])
    batches = [_slice(joined, slice(start, start + batch_size)) for start in range(0, total, batch_size)]
    return batches, next(iter(arenas), None)


def _join(batches: Sequence[dict], pin_memory: bool, arenas: set) -> dict:
    out = {}
    for key, first in batches[0].items():
        values = [batch[key] for batch in batches]
        mapped = join_rows(values, key) if isinstance(first, (torch.Tensor, ArenaRows)) else None
        if mapped is not None:
            out[key], arena = mapped
            arenas.add(arena)
            if pin_memory:
                out[key] = out[key].pin_memory()
        elif isinstance(first, torch.Tensor):
            shape = (sum(len(v) for v in values), *first.shape[1:])
            out[key] = torch.cat(values, out=torch.empty(shape, dtype=first.dtype, pin_memory=pin_memory))
        elif isinstance(first, dict) and key != "meta":
            out[key] = _join(values, pin_memory, arenas)
        else:
            out[key] = [item for value in values for item in value]
    return out


def _slice(batch: dict, rows: slice) -> dict:
    return {key: _slice(value, rows) if isinstance(value, dict) and key != "meta" else value[rows]
            for key, value in batch.items()}
