"""Exact-epoch planning: which samples a rank and each of its DataLoader workers read, in which order.

Pure functions of the shard index, the seed and the epoch (no I/O), identical on every rank.

Rule, per epoch:

1. Shards (all regions, one split) are permuted with ``seed + epoch`` (or kept in index order).
2. Their eligible samples, concatenated, form the global sequence of ``N`` samples.
3. It is cut into ``world_size`` equal contiguous rank ranges of ``N // world_size`` samples
   (``equalize="drop"``: the last ``N % world_size`` samples are not seen this epoch) or of
   ``ceil(N / world_size)`` samples (``equalize="pad"``: the sequence is extended by repeating it
   from its start; repeated samples are flagged as padding).
4. A rank range holds ``ceil(n / batch_size)`` batches, or ``n // batch_size`` with ``drop_last``.
   So every rank yields the same number of batches. The batches are split into contiguous
   per-worker runs (the first ``nb % num_workers`` workers get one more batch). With
   ``split_tail`` (``StatefulLoader``) every worker instead gets ``nb // num_workers`` batches and
   the samples of the last ``nb % num_workers`` batches are cut into ``num_workers`` equal
   contiguous tail parts, one per worker, so no worker reads more than its share; the main
   process joins the parts (in worker order) and cuts them into those last batches.
5. Each worker passes its samples (its batches' run, then its tail part) through a seeded shuffle
   buffer (on sample positions, so the order is known before any byte is read) and cuts the
   result into batches, the samples after its whole batches forming its tail part.

DataLoader hands out items round-robin over workers, skipping exhausted ones; ``resume``
inverts that to restart mid-epoch with exactly the batches not yet consumed, in the same order
(tail parts are all read again once any tail batch was consumed; the main process skips those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import numpy as np

Equalize = Literal["drop", "pad"]


@dataclass(frozen=True)
class RankPlan:
    """One rank's share of an epoch.

    ``shard_ids[i]``/``sample_ids[i]`` name the i-th sample of the rank range (shard unit index,
    sample index within the shard); ``padding[i]`` marks repeated samples (``equalize="pad"``).
    ``worker_batches[w]`` is the whole-batch count of worker ``w``, whose samples are the contiguous
    run ``worker_ranges[w]`` of the rank range; with a split tail, ``tail_ranges[w]`` is the run of
    its tail part (empty tuple otherwise) and ``tail_batches`` the batches the parts make.
    """

    shard_ids: np.ndarray
    sample_ids: np.ndarray
    padding: np.ndarray
    batch_size: int
    worker_ranges: tuple[tuple[int, int], ...]
    worker_batches: tuple[int, ...]
    tail_ranges: tuple[tuple[int, int], ...] = ()
    tail_batches: int = 0

    @property
    def num_batches(self) -> int:
        return sum(self.worker_batches) + self.tail_batches

    @property
    def tail_parts(self) -> int:
        """How many workers yield a (non-empty) tail part."""
        return sum(stop > start for start, stop in self.tail_ranges)


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Shard visiting order for ``epoch``: a permutation seeded with ``seed + epoch`` or the identity."""
    if not shuffle:
        return np.arange(num_shards)
    return np.random.default_rng(seed + epoch).permutation(num_shards)


def rank_range(total: int, *, rank: int, world_size: int, equalize: Equalize) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the global sequence of length ``total`` that ``rank`` reads, and padding flags."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if equalize == "drop":
        per_rank = total // world_size
    elif equalize == "pad":
        per_rank = -(-total // world_size)
    else:
        raise ValueError(f"equalize must be 'drop' or 'pad', not {equalize!r}")
    if per_rank == 0:
        raise ValueError(f"{total} samples cannot be shared by {world_size} ranks with equalize={equalize!r}")
    index = np.arange(rank * per_rank, (rank + 1) * per_rank)
    return index % total, index >= total


def split_batches(num_samples: int, *, batch_size: int, drop_last: bool,
                  num_workers: int) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Cut ``num_samples`` into batches and the batches into contiguous runs, one per worker."""
    num_batches = num_samples // batch_size if drop_last else -(-num_samples // batch_size)
    base, extra = divmod(num_batches, num_workers)
    counts = tuple(base + (w < extra) for w in range(num_workers))
    ranges, start = [], 0
    for count in counts:
        stop = min(start + count * batch_size, num_samples)
        ranges.append((start, stop))
        start = stop
    return tuple(ranges), counts


def split_tail(num_samples: int, *, batch_size: int, drop_last: bool, num_workers: int
               ) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...], tuple[tuple[int, int], ...], int]:
    """Whole batches split evenly over the workers, the rest cut into equal tail parts: worker
    ranges, batch counts, tail part ranges and the number of tail batches."""
    num_batches = num_samples // batch_size if drop_last else -(-num_samples // batch_size)
    per_worker, tail_batches = divmod(num_batches, num_workers)
    span, used = per_worker * batch_size, min(num_batches * batch_size, num_samples)
    ranges = tuple((min(w * span, used), min((w + 1) * span, used)) for w in range(num_workers))
    bounds = np.linspace(num_workers * span, used, num_workers + 1).round().astype(int).tolist()
    tails = tuple((bounds[w], bounds[w + 1]) for w in range(num_workers)) if tail_batches else ()
    return ranges, (per_worker,) * num_workers, tails, tail_batches


def plan_rank(eligible: Sequence[np.ndarray], *, epoch: int, seed: int, shuffle: bool, rank: int,
              world_size: int, equalize: Equalize, batch_size: int, drop_last: bool,
              num_workers: int, split_tail_batches: bool = False) -> RankPlan:
    """Plan one epoch for ``rank``; ``eligible[s]`` lists the sample indices to read from shard ``s``."""
    order = shard_order(len(eligible), seed=seed, epoch=epoch, shuffle=shuffle)
    lengths = np.array([len(eligible[s]) for s in order], dtype=np.int64)
    shard_ids = np.repeat(order, lengths)
    sample_ids = (np.concatenate([np.asarray(eligible[s], dtype=np.int64) for s in order])
                  if len(order) else np.zeros(0, dtype=np.int64))
    index, padding = rank_range(len(shard_ids), rank=rank, world_size=world_size, equalize=equalize)
    if split_tail_batches and num_workers > 1:
        ranges, counts, tails, tail_batches = split_tail(len(index), batch_size=batch_size, drop_last=drop_last,
                                                         num_workers=num_workers)
    else:
        ranges, counts = split_batches(len(index), batch_size=batch_size, drop_last=drop_last,
                                       num_workers=max(num_workers, 1))
        tails, tail_batches = (), 0
    return RankPlan(shard_ids[index], sample_ids[index], padding, batch_size, ranges, counts, tails, tail_batches)


def buffer_order(n: int, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """Output order of a shuffle buffer of ``size`` fed positions ``0..n-1`` (identity if size <= 1).

    Each output is drawn uniformly from the buffer once it holds ``size`` positions, so an output
    never comes from more than ``size - 1`` positions ahead of the reader.
    """
    if size <= 1 or n <= 1:
        return np.arange(n)
    draws = rng.random(n)
    buffer: list[int] = []
    out: list[int] = []
    for position in range(n):
        buffer.append(position)
        if len(buffer) >= size:
            j = int(draws[position] * len(buffer))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            out.append(buffer.pop())
    out.extend(buffer[i] for i in rng.permutation(len(buffer)))
    return np.asarray(out, dtype=np.int64)


def resume(worker_batches: Sequence[int], consumed: int) -> tuple[list[int], list[int]]:
    """Map a consumed batch count to (batches done per worker, worker order for the next iterator).

    DataLoader (``in_order=True``) takes batches round-robin over its workers starting at worker
    0 and skipping exhausted ones. After ``consumed`` batches, the next iterator's worker ``i``
    must run original worker ``order[i]`` (the cycle restarted where it stopped) skipping
    ``done[order[i]]`` of its batches to continue with exactly the same sequence.
    """
    total = sum(worker_batches)
    if not 0 <= consumed <= total:
        raise ValueError(f"cannot resume after {consumed} batches: the epoch has {total}")
    k = len(worker_batches)
    done = [0] * k
    last = k - 1
    remaining = consumed
    while remaining:
        for w in range(k):
            if remaining and done[w] < worker_batches[w]:
                done[w] += 1
                remaining -= 1
                last = w
    order = [(last + 1 + i) % k for i in range(k)]
    return done, order


class WorkerShare(NamedTuple):
    """What one DataLoader worker reads: ``positions`` (into the rank range) in order, the last
    ``tail`` of them forming its tail part; ``part`` is the plan's worker it stands for."""

    positions: np.ndarray
    tail: int
    part: int


def plan_worker(plan: RankPlan, *, worker: int, consumed: int, shuffle_buffer: int,
                seed: int, epoch: int, rank: int) -> WorkerShare:
    """The share of DataLoader worker ``worker``, the rank's ``consumed`` first batches
    (``resume``) left out."""
    items = list(plan.worker_batches)
    if plan.tail_ranges:  # a tail part is one more item; consumed tail batches are skipped in the main process
        items = [count + (stop > start) for count, (start, stop) in zip(items, plan.tail_ranges)]
        consumed = min(consumed, sum(plan.worker_batches))
    done, order = resume(items, consumed)
    original = order[worker]
    runs = [plan.worker_ranges[original]] + ([plan.tail_ranges[original]] if plan.tail_ranges else [])
    index = np.concatenate([np.arange(start, stop, dtype=np.int64) for start, stop in runs])
    rng = np.random.default_rng([seed, epoch, rank, original])
    positions = index[buffer_order(len(index), size=shuffle_buffer, rng=rng)]
    tail = plan.tail_ranges[original][1] - plan.tail_ranges[original][0] if plan.tail_ranges else 0
    return WorkerShare(positions[done[original] * plan.batch_size:], tail, original)
