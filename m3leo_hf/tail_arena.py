"""Tail batches joined without a copy: the DataLoader workers write their tail parts (``planning.split_tail``)
straight into one shared-memory file, each at its rows, so the main process maps the joined batch instead of
concatenating the parts into new memory.

An arena is a ``memfd`` the main process creates before its workers fork (they inherit it; a spawned or
forkserver worker does not, finds another file or none at that descriptor and sends its part as tensors,
the old way); a loader keeps two, for even and odd epochs, since workers build an epoch's tail while the last
epoch's may still be held. The layout is the tail batch's fields in collate order, each ``total`` rows in a
page-aligned region, so every worker computes the same offsets from its own part. ``flag`` (shared) is 1 from
the moment the main process hands the joined batch out until all its memory is gone (``recycle.Holds``: every
tensor, view and ``.numpy()`` array of it); only then is the
flag cleared. A worker writes only while the flag is 0, so it never writes into a batch still held: a tail
arriving while its arena is held is joined by copying, as without arenas. The file keeps its pages for the next
tail of its parity, as recycled batches keep theirs (``m3leo_hf.recycle``): emptying it at each release and
allocating it again cost the kernel a sixth of a 2-worker epoch's CPU in ``make bench`` (every page freed, then
allocated and cleared). A loader's two arenas so hold at most two tail batches of shared memory, until the loader
is gone. Non-persistent workers get fresh files every iteration, so the workers of an abandoned iteration never
write into the next one's.
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

PAGE = mmap.PAGESIZE


class ArenaRows(NamedTuple):
    """What a worker sends for one tensor of its tail part written into the arena ``inode``: rows
    ``[start, start + rows)`` of a field region at ``offset`` holding ``total`` rows of ``row_shape``."""

    inode: tuple[int, int]
    offset: int
    total: int
    start: int
    rows: int
    row_shape: tuple[int, ...]
    dtype: str


_ARENAS: "weakref.WeakValueDictionary[tuple[int, int], TailArena]" = weakref.WeakValueDictionary()


class TailArena:
    """One shared-memory file for an iteration's tail batch (see the module docstring). Pickled (a spawned
    worker's copy), it is its numbers only: ``usable`` then finds another file, or none, at ``fd``."""

    def __init__(self):
        self.fd = os.memfd_create("m3leo-tail")
        stat = os.fstat(self.fd)
        self.inode = (stat.st_dev, stat.st_ino)
        self.flag = torch.zeros(1, dtype=torch.int8).share_memory_()
        _ARENAS[self.inode] = self
        weakref.finalize(self, _close, self.fd)

    @classmethod
    def pair(cls) -> "tuple[TailArena, ...]":
        """Arenas for even and odd epochs (an epoch's tail is built while the last one's may still be held), or
        none where there are no memfds (not Linux)."""
        return (cls(), cls()) if hasattr(os, "memfd_create") else ()

    def usable(self) -> bool:
        """In a worker: the inherited file is this arena's and no joined batch of it is held."""
        try:
            stat = os.fstat(self.fd)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self.inode and int(self.flag[0]) == 0

    def writer(self, start: int, total: int) -> "ArenaWriter":
        """A collate ``allocate`` for a part at rows ``start..`` of a tail of ``total`` rows."""
        return ArenaWriter(self, start, total)

    def release(self) -> None:
        """The joined batch is gone: let workers write again (into the pages it had)."""
        self.flag[0] = 0


class ArenaWriter:
    """Places one worker's tail part at its rows of each field region, in collate order (``__call__`` is a
    collate ``allocate``); ``sendable`` then swaps those tensors for their ``ArenaRows``."""

    def __init__(self, arena: TailArena, start: int, total: int):
        self.arena, self.start, self.total = arena, start, total
        self.cursor = 0
        self.written: dict[int, tuple[torch.Tensor, ArenaRows]] = {}

    def __call__(self, path: str, shape: tuple, dtype: np.dtype) -> torch.Tensor:
        row_shape, dtype = tuple(int(n) for n in shape[1:]), np.dtype(dtype)
        if not 0 <= self.start <= self.start + int(shape[0]) <= self.total:  # its rows map nothing else
            raise ValueError(f"tail part {path!r}: rows {self.start}..{self.start + int(shape[0])} of {self.total}")
        size = _region_bytes(self.total, row_shape, dtype)
        offset, self.cursor = self.cursor, self.cursor + size
        if size == 0:
            return torch.from_numpy(np.empty(shape, dtype))
        _allocate(self.arena.fd, offset, size)
        tensor = _rows_view(self.arena.fd, offset, row_shape, dtype, self.start, int(shape[0]))
        rows = ArenaRows(self.arena.inode, offset, self.total, self.start, int(shape[0]), row_shape, dtype.str)
        self.written[id(tensor)] = (tensor, rows)
        return tensor

    def sendable(self, part: Any) -> Any:
        """``part`` with the tensors written here replaced by their ``ArenaRows`` (the bytes are in place)."""
        if isinstance(part, torch.Tensor):
            tensor, rows = self.written.get(id(part), (None, None))
            return rows if tensor is part else part
        if isinstance(part, dict):
            return {key: value if key == "meta" else self.sendable(value) for key, value in part.items()}
        return part


def _region_bytes(total: int, row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of a field region: ``total`` rows, rounded up to whole pages (so every region is mappable)."""
    return -(-total * int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize // PAGE) * PAGE


def _allocate(fd: int, offset: int, size: int) -> None:
    """Pages for ``[offset, offset + size)`` of the file (a full shared memory is an ``OSError`` here, not a
    SIGBUS at the first write). Regions are allocated in order from byte 0 and never freed, so every byte below
    the file's size already has its page."""
    if os.fstat(fd).st_size < offset + size:
        os.posix_fallocate(fd, offset, size)  # grows the file, never shrinks it


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _view(fd: int, offset: int, size: int, dtype: np.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """``shape`` of ``dtype`` mapped from the file at ``offset`` (shared: what one process writes, all see)."""
    region = mmap.mmap(fd, size, offset=offset)
    count = int(np.prod(shape, dtype=np.int64))
    return torch.from_numpy(np.frombuffer(region, dtype=dtype, count=count).reshape(shape))


def _rows_view(fd: int, offset: int, row_shape: tuple[int, ...], dtype: np.dtype, start: int, rows: int
               ) -> torch.Tensor:
    """Rows ``[start, start + rows)`` of the field region at ``offset``, mapped alone (the pages that hold them)
    and prefaulted: a worker writes every byte of them, and one populating call costs less than a page fault
    per page (the file keeps its pages between epochs, but each epoch's mapping is new)."""
    if rows == 0:
        return torch.from_numpy(np.empty((0, *row_shape), dtype))
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    first, end = offset + start * row_bytes, offset + (start + rows) * row_bytes
    base = first - first % PAGE
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    region = mmap.mmap(fd, -(-(end - base) // PAGE) * PAGE, flags=flags, offset=base)
    array = np.frombuffer(region, dtype=dtype, count=rows * (row_bytes // dtype.itemsize), offset=first - base)
    return torch.from_numpy(array.reshape(rows, *row_shape))


def join_rows(values: Sequence[Any], name: str) -> tuple[torch.Tensor, "TailArena"] | None:
    """The joined tensor of one field from the parts' values (in plan order), mapped from the arena when any
    worker wrote there (parts sent as tensors are copied in); None when none did."""
    written = [v for v in values if isinstance(v, ArenaRows)]
    if not written:
        return None
    first = written[0]
    arena = _ARENAS.get(first.inode)
    if arena is None or any((v.inode, v.offset, v.total, v.row_shape, v.dtype) !=
                            (first.inode, first.offset, first.total, first.row_shape, first.dtype) for v in written):
        raise ValueError(f"cannot join the tail parts of {name!r}: the workers wrote different layouts "
                         f"({sorted(set(written))})")
    dtype = np.dtype(first.dtype)
    size = _region_bytes(first.total, first.row_shape, dtype)
    _allocate(arena.fd, first.offset, size)
    joined = _view(arena.fd, first.offset, size, dtype, (first.total, *first.row_shape))
    row = 0
    for value in values:
        rows = value.rows if isinstance(value, ArenaRows) else len(value)
        if isinstance(value, ArenaRows):
            if value.start != row:
                raise ValueError(f"cannot join the tail parts of {name!r}: rows {value.start}.. follow row {row}")
        elif tuple(value.shape[1:]) != first.row_shape or value.numpy().dtype != dtype:
            raise ValueError(f"cannot join the tail parts of {name!r}: shapes differ "
                             f"({tuple(value.shape[1:])} {value.dtype} vs {first.row_shape} {first.dtype})")
        else:
            joined[row:row + rows].copy_(value)
        row += rows
    if row != first.total:
        raise ValueError(f"cannot join the tail parts of {name!r}: {row} rows of {first.total}")
    return joined, arena
