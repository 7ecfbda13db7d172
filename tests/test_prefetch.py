"""``m3leo_hf.prefetch.in_order``: results in order, never more bytes requested ahead than its bound."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from m3leo_hf import prefetch


class Running:
    """Tasks that record how many bytes are requested and not yet consumed when each one starts."""

    def __init__(self):
        self.lock, self.started, self.consumed, self.peaks = threading.Lock(), 0, 0, []

    def task(self, size: int, value: int):
        def run() -> int:
            with self.lock:
                self.started += size
                self.peaks.append(self.started - self.consumed)
            time.sleep(0.002)
            return value
        return size, run

    def consume(self, size: int) -> None:
        with self.lock:
            self.consumed += size


@pytest.mark.parametrize("bound", ["argument", "module"])
def test_in_order_keeps_results_in_order_within_its_byte_bound(bound, monkeypatch):
    running, sizes = Running(), [3, 1, 2, 3, 1, 1, 2, 3]
    if bound == "module":  # the module's bound is read when called, as tests and tuning set it
        monkeypatch.setattr(prefetch, "AHEAD_BYTES", 4)
        results = prefetch.in_order(running.task(s, i) for i, s in enumerate(sizes))
    else:
        results = prefetch.in_order((running.task(s, i) for i, s in enumerate(sizes)), ahead_bytes=4, threads=8)
    got = []
    for value in results:
        got.append(value)
        running.consume(sizes[value])
    assert got == list(range(len(sizes)))
    assert max(running.peaks) <= 4


def test_in_order_requests_one_task_ahead_even_when_it_exceeds_the_bound():
    running = Running()
    results = prefetch.in_order([running.task(10, 0), running.task(10, 1)], ahead_bytes=4)
    assert next(results) == 0
    running.consume(10)
    assert next(results) == 1
    assert running.peaks == [10, 10]  # the second started only once the first was consumed


class Budgets(torch.utils.data.IterableDataset):
    """Yields, in each worker process (or the main one), its read-ahead budget and the most bytes ``in_order``
    had requested ahead there, over chunk-sized tasks."""

    def __iter__(self):
        running, chunk = Running(), prefetch.CHUNK_BYTES
        for _ in prefetch.in_order(running.task(chunk, i) for i in range(24)):
            running.consume(chunk)
        yield prefetch.read_ahead_budget(), max(running.peaks)


@pytest.mark.parametrize("workers", [0, 2, 4, 16])
def test_read_ahead_is_split_over_a_loaders_workers(workers):
    """All workers together request at most ``LOADER_AHEAD_BYTES`` ahead (two chunks each at least), and a
    process alone or one of two keeps ``AHEAD_BYTES``: memory does not grow with the worker count."""
    loader = torch.utils.data.DataLoader(Budgets(), batch_size=None, num_workers=workers)
    budgets, peaks = zip(*[(int(b), int(p)) for b, p in loader])
    assert len(budgets) == max(workers, 1)
    expected = {0: prefetch.AHEAD_BYTES, 2: prefetch.AHEAD_BYTES, 4: prefetch.LOADER_AHEAD_BYTES // 4,
                16: 2 * prefetch.CHUNK_BYTES}[workers]
    assert list(budgets) == [expected] * len(budgets)
    assert all(peak <= budget for peak, budget in zip(peaks, budgets))
    assert sum(peaks) <= max(prefetch.LOADER_AHEAD_BYTES, 2 * prefetch.CHUNK_BYTES * workers)
