"""Turn joined samples (numpy) into torch: one sample, or a batch stacked field by field.

Inside a DataLoader worker a batch is stacked straight into shared memory, so handing it to the main
process moves a file descriptor instead of copying the batch (what ``default_collate`` does too).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from m3leo_hf.recycle import shared_empty


TAIL_PART = "__tail_part__"  # key marking a worker's tail part of an epoch's last batches (planning.split_tail)


def to_torch(value: Any) -> Any:
    """Arrays become tensors, recursively; strings, flags and metadata pass through."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: v if k == "meta" else to_torch(v) for k, v in value.items()}
    return value


Allocate = Callable[[str, tuple, np.dtype], torch.Tensor]  # (field path, shape, dtype) -> uninitialised tensor


def collate(samples: Sequence[dict], path: str = "", chips: Sequence[str] | None = None,
            allocate: Allocate | None = None) -> dict:
    """Stack equal-shaped arrays (tensor ``(B, ...)``, into ``allocate``'s tensors when given), flags into bool
    tensors, keep strings and ``meta`` as lists. Different shapes raise ``ValueError`` naming the field and
    the chips."""
    chips = chips or [sample.get("chip_id", "?") for sample in samples]
    out = {}
    for key, first in samples[0].items():
        values = [sample[key] for sample in samples]
        if isinstance(first, np.ndarray):
            out[key] = _stack(values, f"{path}{key}", chips, allocate)
        elif isinstance(first, dict) and key != "meta":
            out[key] = collate(values, f"{path}{key}.", chips, allocate)
        elif isinstance(first, (bool, np.bool_)):
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = values
    return out


def _stack(values: list[np.ndarray], name: str, chips: Sequence[str], allocate: Allocate | None) -> torch.Tensor:
    if len({v.shape for v in values}) > 1:
        detail = ", ".join(f"{c}: {tuple(v.shape)}" for c, v in zip(chips, values))
        raise ValueError(f"cannot batch {name!r}: shapes differ ({detail}); pass spatial_size= to centre "
                         f"crop/pad every chip to a fixed size")
    dtype = np.result_type(*values)
    shape = (len(values), *values[0].shape)
    batch = allocate(name, shape, dtype) if allocate is not None else empty(shape, dtype)
    if all(v.dtype == dtype and v.flags.writeable for v in values):  # torch copies with its intra-op threads
        torch.stack([torch.from_numpy(v) for v in values], out=batch)
    else:
        np.stack(values, out=batch.numpy())
    return batch


def empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor; in shared memory when called in a DataLoader worker."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype=dtype)).dtype)
    return shared_empty(shape, dtype)


def tail_batches(parts: Sequence[dict], batch_size: int, pin_memory: bool = False) -> Iterator[dict]:
    """Join the workers' tail parts (in plan order) and cut them into batches of ``batch_size``
    (the last may be smaller); ``pin_memory`` puts the joined tensors in pinned memory."""
    joined = _join([{k: v for k, v in p.items() if k != TAIL_PART} for p in sorted(parts, key=lambda p: p[TAIL_PART])],
                   pin_memory)
    total = len(joined["chip_id"])
    for start in range(0, total, batch_size):
        yield _slice(joined, slice(start, start + batch_size))


def _join(batches: Sequence[dict], pin_memory: bool) -> dict:
    out = {}
    for key, first in batches[0].items():
        values = [batch[key] for batch in batches]
        if isinstance(first, torch.Tensor):
            shape = (sum(len(v) for v in values), *first.shape[1:])
            out[key] = torch.cat(values, out=torch.empty(shape, dtype=first.dtype, pin_memory=pin_memory))
        elif isinstance(first, dict) and key != "meta":
            out[key] = _join(values, pin_memory)
        else:
            out[key] = [item for value in values for item in value]
    return out


def _slice(batch: dict, rows: slice) -> dict:
    return {key: _slice(value, rows) if isinstance(value, dict) and key != "meta" else value[rows]
            for key, value in batch.items()}
