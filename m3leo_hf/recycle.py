"""Recycled batches: a DataLoader worker stacks each full batch into one of a few shared-memory buffer sets it
keeps, instead of creating a shared-memory file per tensor per batch (file creation and first touch of its
pages cost more than the copy itself); with 0 workers the main process keeps a few ordinary ones (fresh pages
are touched once, not every batch). A set is reused only after the main process has let go of every tensor of
the batch built in it.

Protocol: ``flags[worker, slot]`` (shared int8) is 1 from the moment a worker takes the slot until the main
process, holding the batch (``StatefulLoader``), sees the last of its tensors garbage-collected (or, with
pinned memory, at once: the DataLoader copied the batch to pinned memory and dropped it). A worker takes only
slots at 0, so it never writes into a batch the main process may still read. A batch the main process never
received (an epoch abandoned midway) keeps its slot; when no slot is free the worker allocates a fresh,
unrecycled batch, as without recycling.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

SLOT_KEY = "__recycle_slot__"  # (worker, slot) of a recycled batch; removed by StatefulLoader
SLOTS = 3                     # per worker: the DataLoader's 2 prefetched batches and the one being built
MAX_WORKERS = 64


def new_flags() -> torch.Tensor:
    """The slot flags every worker and the main process share."""
    return torch.zeros((MAX_WORKERS, SLOTS), dtype=torch.int8).share_memory_()


def shared_empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory."""
    kind = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return torch.empty(0, dtype=kind).set_(storage, 0, shape)


def private_empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor in this process's memory (torch's allocator)."""
    return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype=dtype)).dtype)


class BatchPool:
    """A worker's buffer sets, by slot and field path; ``take`` a free slot, then ``buffer`` its tensors (in shared
    memory when ``shared``: a DataLoader worker's; the main process's own, with 0 workers, are not)."""

    def __init__(self, flags: torch.Tensor, worker: int, shared: bool = True):
        self.flags, self.worker, self.shared = flags, worker, shared
        self.pid = os.getpid()  # a forked worker inherits its parent's pool: it must make its own
        self.sets: dict[int, dict[str, torch.Tensor]] = {}

    def take(self) -> int | None:
        """A slot the main process has released (now marked taken), or None when every slot is out."""
        if self.worker >= MAX_WORKERS:
            return None
        for slot, flag in enumerate(self.flags[self.worker].tolist()):
            if flag == 0:
                self.flags[self.worker, slot] = 1
                return slot
        return None

    def buffer(self, slot: int, path: str, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        """A new tensor over slot ``slot``'s storage for field ``path`` (made, or remade when the shape or dtype
        changed). The pool keeps the storage, not the tensor, so the tensor handed out (and what is derived
        from it) is garbage-collected once the main process lets go of it, in the main process too."""
        buffers = self.sets.setdefault(slot, {})
        tensor = buffers.get(path)
        if tensor is None or tuple(tensor.shape) != tuple(shape) or tensor.numpy().dtype != np.dtype(dtype):
            tensor = buffers[path] = (shared_empty if self.shared else private_empty)(tuple(shape), dtype)
        return torch.empty(0, dtype=tensor.dtype).set_(tensor.untyped_storage(), 0, tensor.shape)


def hold(batch: dict, flags: torch.Tensor, pinned: bool) -> dict:
    """``batch`` without its slot key; its slot is released when all its tensors are gone (``pinned``: now)."""
    worker, slot = batch.pop(SLOT_KEY)

    def release() -> None:
        flags[worker, slot] = 0

    if pinned:
        release()
    else:
        when_gone(list(tensors(batch)), release)
    return batch


def when_gone(held: list[torch.Tensor], release: Callable[[], None]) -> None:
    """Call ``release`` once every tensor of ``held`` is garbage-collected (now when there is none)."""
    remaining, lock = [len(held)], threading.Lock()

    def one_gone() -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                release()

    for tensor in held:
        weakref.finalize(tensor, one_gone)
    if not held:
        release()


def tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors of a batch (nested fields included, ``meta`` left out)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key != "meta":
                yield from tensors(item)
