"""Recycled receive buffers for remote chunk reads (``m3leo_hf.prefetch``): each chunk is received into an
uninitialised private anonymous mapping reused from chunk to chunk, instead of a fresh zero-filled buffer whose
pages the kernel must fault in and clear for every request.

A buffer goes back to its pool only when the array handed out and every view made of it are gone (a
``weakref.finalize`` on that array: numpy views, ``torch.from_numpy`` tensors and memoryviews of it all hold
it), so a sample kept by the user is never overwritten. Each process has its own pool (a forked worker makes
a new one), each pool keeps at most ``keep`` free mappings; larger reads get no pooled buffer.
"""

from __future__ import annotations

import mmap
import os
import weakref
from collections import deque

import numpy as np


class ReceiveBuffers:
    """Free anonymous mappings of ``size`` bytes; ``take(count)`` hands out ``count`` of those bytes."""

    def __init__(self, size: int, keep: int):
        self.size, self.keep = size, keep
        self.pid = os.getpid()
        self._free: deque[mmap.mmap] = deque()  # append/pop are atomic: releases come from any thread

    def take(self, count: int) -> np.ndarray | None:
        """An uninitialised writable uint8 array of ``count`` bytes over a recycled mapping, or None when
        ``count`` exceeds the pool's buffer size."""
        if not 0 < count <= self.size:
            return None
        try:
            memory = self._free.pop()
        except IndexError:
            memory = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        array = np.frombuffer(memory, dtype=np.uint8, count=count)
        weakref.finalize(array, self._release, memory).atexit = False
        return array

    def free(self) -> int:
        """Mappings waiting to be reused."""
        return len(self._free)

    def _release(self, memory: mmap.mmap) -> None:
        if len(self._free) < self.keep:
            self._free.append(memory)


_POOL: ReceiveBuffers | None = None


def receive_buffer(count: int, size: int, keep: int) -> np.ndarray | None:
    """``take(count)`` from this process's pool of ``size``-byte buffers (made anew after a fork or when
    ``size`` changed)."""
    global _POOL
    if _POOL is None or _POOL.pid != os.getpid() or _POOL.size != size or _POOL.keep != keep:
        _POOL = ReceiveBuffers(size, keep)
    return _POOL.take(count)
