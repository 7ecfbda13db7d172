"""Remote reads ahead: the wanted samples cut into chunks of consecutive samples, each chunk of each modality
fetched by one bounded Range request in a thread pool, chunks ahead up to a byte budget, so that the
latency of one request overlaps the transfer and decoding of others. A chunk is received into a recycled
buffer (``m3leo_hf.receive_buffers``). Each sample is then checked exactly as a streamed read checks it
(``reader._read_sample``: member names and sizes against the index, the json member's sha256)."""

from __future__ import annotations

import tarfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
from torch.utils.data import get_worker_info

from m3leo_hf import reader
from m3leo_hf.ranged import read_range
from m3leo_hf.receive_buffers import receive_buffer
from m3leo_hf.reader import ShardError, ShardFile

T = TypeVar("T")
CHUNK_BYTES = 16 << 20   # bytes of one request (one sample at least)
AHEAD_BYTES = 128 << 20  # bytes requested and not yet consumed, per process at most
LOADER_AHEAD_BYTES = 256 << 20  # ... and by all the worker processes of a DataLoader together (2 chunks each at least)
THREADS = 8              # requests in flight


class MemoryReader:
    """What ``reader._read_sample`` reads through (``position``, ``skip``, ``view``) over bytes fetched from
    byte ``start`` of a shard: members are views of those bytes, not copies."""

    def __init__(self, data: bytearray | np.ndarray, start: int):
        self._data = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        self._start = self.position = start

    def skip(self, count: int) -> None:
        self.position += count

    def view(self, size: int):
        """The next ``size`` bytes (fewer at the end) as a writable uint8 array over the fetched buffer, no copy."""
        at = self.position - self._start
        count = max(0, min(size, len(self._data) - at))
        self.position += count
        return self._data[at:at + count]


def fetch_samples(shard: ShardFile, keys: Sequence[str], indices: Sequence[int], *, retries: int = 3,
                  storage_options: Mapping | None = None) -> list[tuple[int, dict]]:
    """The raw samples at ``indices`` (consecutive) of ``shard``, read with one request and checked."""
    start = int(shard.offsets[indices[0]])
    end = int(shard.offsets[indices[-1]] + sample_bytes(shard, indices[-1]))
    index = indices[0]
    try:
        source = MemoryReader(fetch_range(shard.url, start, end - start, retries=retries,
                                          storage_options=storage_options), start)
        out = []
        for index in indices:
            out.append((index, reader._read_sample(source, shard, keys, index, False)))
        return out
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"{shard.url}: cannot read sample {index} ({keys[index]}): {exc}") from exc


def fetch_range(url: str, start: int, size: int, *, retries: int = 3,
                storage_options: Mapping | None = None) -> bytearray | np.ndarray:
    """``size`` bytes of ``url`` from ``start`` (one request), received into a recycled buffer when they fit one."""
    return read_range(url, start, size, retries=retries, storage_options=storage_options,
                      buffer=receive_buffer(size, CHUNK_BYTES, 2 * read_ahead_budget() // CHUNK_BYTES))


def read_ahead_budget() -> int:
    """This process's read-ahead budget: ``AHEAD_BYTES``, or in one of a DataLoader's ``n`` workers its part
    ``LOADER_AHEAD_BYTES / n`` when smaller (two chunks at least), so memory does not grow with the worker
    count. Twice as many receive buffers are kept free: the chunks ahead, and a primed epoch's."""
    info = get_worker_info()
    workers = info.num_workers if info is not None else 1
    return min(AHEAD_BYTES, max(LOADER_AHEAD_BYTES // workers, 2 * CHUNK_BYTES))


def sample_bytes(shard: ShardFile, index: int) -> int:
    """Bytes from sample ``index``'s first header to the end of its last member."""
    last = int(shard.member_start[index + 1]) - 1
    return int(shard.member_offsets[last] + shard.member_sizes[last] - shard.offsets[index])


def in_order(tasks: Iterable[tuple[int, Callable[[], T]]], ahead_bytes: int | None = None,
             threads: int | None = None) -> Iterator[T]:
    """The results of ``tasks`` (``(bytes, function)``), in order, computed by a thread pool of ``threads``
    with at most ``ahead_bytes`` of them requested and not yet yielded (always one at least); errors raised in
    order. Unset bounds are ``read_ahead_budget()`` and ``THREADS``, read when called."""
    ahead = read_ahead_budget() if ahead_bytes is None else ahead_bytes
    pool = ThreadPoolExecutor(THREADS if threads is None else threads, thread_name_prefix="m3leo-prefetch")
    pending: deque = deque()
    tasks = iter(tasks)
    upcoming, in_flight = next(tasks, None), 0
    try:
        while upcoming is not None or pending:
            while upcoming is not None and (not pending or in_flight + upcoming[0] <= ahead):
                size, function = upcoming
                pending.append((size, pool.submit(function)))
                in_flight += size
                upcoming = next(tasks, None)
            size, future = pending.popleft()
            in_flight -= size
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
