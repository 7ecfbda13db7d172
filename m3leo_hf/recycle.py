"""Recycled batches: a DataLoader worker stacks each full batch into one of a few shared-memory buffer sets it
keeps, instead of creating a shared-memory file per tensor per batch (file creation and first touch of its
pages cost more than the copy itself); with 0 workers the main process keeps a few ordinary ones (fresh pages
are touched once, not every batch). A set is reused only after the main process has let go of all the memory
of the batch built in it.

Protocol: ``flags[worker, slot]`` (shared int8) is 1 from the moment a worker takes the slot until the main
process, holding the batch (``StatefulLoader``), finds every storage of the batch gone (``Holds``: storage weak
references, checked as each next batch arrives; a tensor, view, ``.numpy()`` array, ``untyped_storage()`` or
DLPack capsule of it keeps the slot; only a raw pointer does not), or, with pinned memory, at once (the
DataLoader copied the batch to pinned memory and dropped it). A worker takes only
slots at 0, so it never writes into a batch the main process may still read. A batch the main process never
received (an epoch abandoned midway) keeps its slot; when no slot is free the worker allocates a fresh,
unrecycled batch, as without recycling.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef

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
        """A new tensor over slot ``slot``'s memory for field ``path`` (made, or remade when the shape or dtype
        changed); the main process's own pool hands out a tensor with a storage object of its own, so that its
        ``Holds`` sees when everything made of it is gone."""
        buffers = self.sets.setdefault(slot, {})
        tensor = buffers.get(path)
        if tensor is None or tuple(tensor.shape) != tuple(shape) or tensor.numpy().dtype != np.dtype(dtype):
            tensor = buffers[path] = (shared_empty if self.shared else private_empty)(tuple(shape), dtype)
        if not self.shared:  # its own storage object over the pool's memory: its weak reference tells when it is gone
            return torch.from_numpy(tensor.numpy())
        return torch.empty(0, dtype=tensor.dtype).set_(tensor.untyped_storage(), 0, tensor.shape)


def hold(batch: dict, flags: torch.Tensor, pinned: bool, holds: "Holds") -> dict:
    """``batch`` without its slot key; its slot is released once all its memory is gone here (``pinned``: now,
    the DataLoader copied it to pinned memory)."""
    worker, slot = batch.pop(SLOT_KEY)

    def release() -> None:
        flags[worker, slot] = 0

    if pinned:
        release()
    else:
        holds.add(list(tensors(batch)), release)
    return batch


class Holds:
    """Releases waiting until the storages of what was handed out are gone in this process: every tensor, view,
    ``.numpy()`` array and DLPack capsule of them (a storage weak reference expires only then; a tensor's own
    death says nothing of a ``.numpy()`` array of it). ``poll`` runs the releases that are due."""

    def __init__(self):
        self._pending: list[tuple[list[StorageWeakRef], Callable[[], None]]] = []

    def add(self, held: list[torch.Tensor], release: Callable[[], None]) -> None:
        refs = {}
        for tensor in held:
            ref = StorageWeakRef(tensor.untyped_storage())
            refs.setdefault(ref.cdata, ref)
        self._pending.append((list(refs.values()), release))
        self.poll()

    def poll(self) -> None:
        waiting = []
        for refs, release in self._pending:
            if all(ref.expired() for ref in refs):
                release()
            else:
                waiting.append((refs, release))
        self._pending = waiting


def tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors of a batch (nested fields included, ``meta`` left out)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key != "meta":
                yield from tensors(item)
