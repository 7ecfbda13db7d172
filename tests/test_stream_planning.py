"""Unit tests of the exact-epoch planner (pure functions, no I/O)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from m3leo_hf.planning import buffer_order, plan_rank, plan_worker, rank_range, resume, shard_order, split_batches


def dataloader_order(worker_batches: list[list]) -> list:
    """What DataLoader(in_order=True) yields from per-worker batch lists: round-robin from worker 0,
    skipping exhausted workers."""
    out, queues = [], [list(b) for b in worker_batches]
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def rank_batches(eligible, *, rank, world_size, workers, batch_size, consumed=0, epoch=0, **kw) -> list[list[int]]:
    """Batches (lists of (shard, sample) ids) a rank's DataLoader yields, resuming after ``consumed``."""
    options = dict(seed=7, shuffle=True, equalize="drop", drop_last=True) | kw
    plan = plan_rank(eligible, epoch=epoch, rank=rank, world_size=world_size, batch_size=batch_size,
                     num_workers=workers, **{k: options[k] for k in ("seed", "shuffle", "equalize", "drop_last")})
    per_worker = []
    for worker in range(workers):
        positions = plan_worker(plan, worker=worker, consumed=consumed, shuffle_buffer=4, seed=options["seed"],
                                epoch=epoch, rank=rank).positions
        ids = [(int(plan.shard_ids[p]), int(plan.sample_ids[p])) for p in positions]
        per_worker.append([ids[i:i + batch_size] for i in range(0, len(ids), batch_size)])
    return dataloader_order(per_worker)


ELIGIBLE = [np.arange(n) for n in (3, 2, 3, 1, 3, 2, 3)]  # 17 samples in 7 shards
ALL = {(s, i) for s, e in enumerate(ELIGIBLE) for i in e}


def test_shard_order_seeded_per_epoch():
    assert shard_order(7, seed=1, epoch=0, shuffle=True).tolist() == shard_order(7, seed=1, epoch=0, shuffle=True).tolist()
    assert shard_order(7, seed=1, epoch=0, shuffle=True).tolist() != shard_order(7, seed=1, epoch=1, shuffle=True).tolist()
    assert shard_order(7, seed=1, epoch=3, shuffle=False).tolist() == list(range(7))


@pytest.mark.parametrize("total,world", [(17, 1), (17, 2), (17, 3), (18, 3), (2, 3)])
def test_rank_range_drop_and_pad(total, world):
    pads = [rank_range(total, rank=r, world_size=world, equalize="pad") for r in range(world)]
    assert len({len(i) for i, _ in pads}) == 1
    real = np.concatenate([i[~p] for i, p in pads])
    assert sorted(real.tolist()) == list(range(total))
    assert sum(int(p.sum()) for _, p in pads) == world * -(-total // world) - total
    if total >= world:
        drops = [rank_range(total, rank=r, world_size=world, equalize="drop")[0] for r in range(world)]
        assert np.concatenate(drops).tolist() == list(range(total - total % world))
    else:
        with pytest.raises(ValueError, match="cannot be shared"):
            rank_range(total, rank=0, world_size=world, equalize="drop")


@pytest.mark.parametrize("n,b,drop,k", [(10, 3, True, 2), (10, 3, False, 2), (5, 2, False, 3), (1, 4, False, 2)])
def test_split_batches_contiguous(n, b, drop, k):
    ranges, counts = split_batches(n, batch_size=b, drop_last=drop, num_workers=k)
    assert sum(counts) == (n // b if drop else -(-n // b))
    assert max(counts) - min(counts) <= 1 and list(counts) == sorted(counts, reverse=True)
    assert ranges[0][0] == 0 and all(a[1] == c[0] for a, c in zip(ranges, ranges[1:]))
    assert ranges[-1][1] == (sum(counts) * b if drop else n)


@pytest.mark.parametrize("n,size", [(0, 5), (1, 5), (10, 1), (50, 8), (7, 100)])
def test_buffer_order_is_bounded_permutation(n, size):
    order = buffer_order(n, size=size, rng=np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(n))
    if size < n:
        assert all(int(order[k]) <= k + size - 1 for k in range(n))


@pytest.mark.parametrize("world,workers,batch", [(1, 1, 2), (2, 2, 2), (3, 2, 1), (2, 3, 2)])
def test_ranks_equal_batches_and_exactly_once(world, workers, batch):
    runs = [rank_batches(ELIGIBLE, rank=r, world_size=world, workers=workers, batch_size=batch) for r in range(world)]
    assert len({len(r) for r in runs}) == 1
    seen = [i for r in runs for b in r for i in b]
    assert len(seen) == len(set(seen)) and set(seen) <= ALL
    assert len(seen) == world * ((17 // world) // batch) * batch


def test_pad_covers_everything_and_epochs_differ():
    runs = [rank_batches(ELIGIBLE, rank=r, world_size=3, workers=2, batch_size=2, equalize="pad", drop_last=False)
            for r in range(3)]
    assert len({len(r) for r in runs}) == 1
    seen = [i for r in runs for b in r for i in b]
    assert set(seen) == ALL and len(seen) == 18
    again = rank_batches(ELIGIBLE, rank=0, world_size=3, workers=2, batch_size=2, equalize="pad", drop_last=False)
    later = rank_batches(ELIGIBLE, rank=0, world_size=3, workers=2, batch_size=2, equalize="pad", drop_last=False,
                         epoch=1)
    assert again == runs[0] and later != runs[0]


@pytest.mark.parametrize("counts", [[3, 3], [3, 2], [2, 2, 1], [1, 0], [4, 3, 3]])
def test_resume_continues_dataloader_sequence(counts):
    original = dataloader_order([[(w, i) for i in range(c)] for w, c in enumerate(counts)])
    for consumed in range(sum(counts) + 1):
        done, order = resume(counts, consumed)
        restarted = dataloader_order([[(w, i) for i in range(done[w], counts[w])] for w in order])
        assert original[:consumed] + restarted == original


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_plan_worker_resume_yields_exact_remainder(workers):
    full = rank_batches(ELIGIBLE, rank=1, world_size=2, workers=workers, batch_size=2)
    for consumed, _ in itertools.islice(enumerate(full), 0, None, 2):
        rest = rank_batches(ELIGIBLE, rank=1, world_size=2, workers=workers, batch_size=2, consumed=consumed)
        assert full[:consumed] + rest == full
    with pytest.raises(ValueError, match="cannot resume"):
        resume([1, 1], 3)


def tail_split_batches(eligible, *, workers, batch_size, consumed=0, drop_last=True) -> list[list]:
    """What StatefulLoader yields with ``split_tail``: the DataLoader's round-robin over the workers'
    whole batches and tail parts, the parts joined in plan order and cut into batches."""
    plan = plan_rank(eligible, epoch=0, rank=0, world_size=1, batch_size=batch_size, num_workers=workers,
                     seed=7, shuffle=True, equalize="drop", drop_last=drop_last, split_tail_batches=True)
    per_worker = []
    for worker in range(workers):
        share = plan_worker(plan, worker=worker, consumed=consumed, shuffle_buffer=4, seed=7, epoch=0, rank=0)
        ids = [(int(plan.shard_ids[p]), int(plan.sample_ids[p])) for p in share.positions]
        whole = len(ids) - share.tail
        items = [("batch", ids[i:i + batch_size]) for i in range(0, whole, batch_size)]
        per_worker.append(items + ([("part", share.part, ids[whole:])] if share.tail else []))
    out, parts = [], []
    for item in dataloader_order(per_worker):
        if item[0] == "batch":
            out.append(item[1])
            continue
        parts.append(item)
        if len(parts) == plan.tail_parts:
            joined = [i for _, _, ids in sorted(parts) for i in ids]
            tail = [joined[i:i + batch_size] for i in range(0, len(joined), batch_size)]
            out += tail[max(0, consumed - sum(plan.worker_batches)):]
    return out


@pytest.mark.parametrize("workers,batch_size,drop_last", [(2, 2, True), (2, 3, False), (3, 2, True), (3, 4, False),
                                                          (4, 1, True)])
def test_split_tail_gives_workers_equal_shares_and_resumes_exactly(workers, batch_size, drop_last):
    n = sum(len(e) for e in ELIGIBLE)  # 17
    plan = plan_rank(ELIGIBLE, epoch=0, rank=0, world_size=1, batch_size=batch_size, num_workers=workers, seed=7,
                     shuffle=True, equalize="drop", drop_last=drop_last, split_tail_batches=True)
    shares = [len(plan_worker(plan, worker=w, consumed=0, shuffle_buffer=4, seed=7, epoch=0, rank=0).positions)
              for w in range(workers)]
    assert max(shares) - min(shares) <= 1  # without the split, 17 samples in batches of 2 over 2 workers: 10 / 8
    full = tail_split_batches(ELIGIBLE, workers=workers, batch_size=batch_size, drop_last=drop_last)
    expected_batches = n // batch_size if drop_last else -(-n // batch_size)
    assert len(full) == plan.num_batches == expected_batches
    assert all(len(b) == batch_size for b in full[:-1])
    flat = [i for b in full for i in b]
    assert len(flat) == len(set(flat)) == (expected_batches * batch_size if drop_last else n)
    for consumed in range(len(full) + 1):
        assert full[:consumed] + tail_split_batches(ELIGIBLE, workers=workers, batch_size=batch_size,
                                                    consumed=consumed, drop_last=drop_last) == full
