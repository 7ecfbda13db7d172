"""DataLoader workers: batches assembled in shared memory, persistent workers following the stream's
position, the even split of an epoch's last batches and the read-ahead thread."""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import m3leo_hf
from m3leo_hf.collate import collate
from m3leo_hf.readahead import read_ahead
from tests.test_stream_data import MODALITIES, roots, stream_shards  # noqa: F401 (fixture)

FORK = {"multiprocessing_context": "fork"}


class _Collated(IterableDataset):
    """Two batches collated where the DataLoader runs this: is each array field in shared memory?"""

    def __iter__(self):
        for _ in range(2):
            batch = collate([{"chip_id": "a", "x": np.ones((2, 3), np.float32)},
                             {"chip_id": "b", "x": np.zeros((2, 3), np.float32)}])
            yield {"shared_where_built": batch["x"].is_shared(), "x": batch["x"]}


def test_batches_are_stacked_into_shared_memory_in_workers_only():
    in_main = next(iter(_Collated()))
    assert not in_main["shared_where_built"]
    for batch in DataLoader(_Collated(), batch_size=None, num_workers=1, **FORK):
        assert batch["shared_where_built"] and batch["x"].is_shared()
        assert batch["x"].tolist() == [[[1.0] * 3] * 2, [[0.0] * 3] * 2]


def chip_batches(loader) -> list[list[str]]:
    return [list(batch["chip_id"]) for batch in loader]


def test_plain_dataloader_persistent_workers_follow_set_epoch(stream_shards):
    def make(**options):
        return m3leo_hf.stream(roots(stream_shards), modalities=MODALITIES, batch_size=2, spatial_size=16, seed=3,
                               **options)

    reference = make()
    expected = []
    for epoch in range(3):
        reference.set_epoch(epoch)
        expected.append(chip_batches(DataLoader(reference, batch_size=None, num_workers=2, **FORK)))
    data = make()
    loader = DataLoader(data, batch_size=None, num_workers=2, persistent_workers=True, **FORK)
    seen = []
    for epoch in range(3):
        data.set_epoch(epoch)
        seen.append(chip_batches(loader))
    assert seen == expected and expected[0] != expected[1]


def test_stateful_loader_even_split_joins_the_tail_and_resumes(stream_shards):
    """17 train chips with missing='skip' in batches of 3 (drop_last) over 2 workers: 4 whole batches
    (2 per worker) and a last one read in two parts of 2 and 1 chips; resumes repeat nothing."""
    def loader(workers=2, **options):
        data = m3leo_hf.stream(roots(stream_shards), modalities=MODALITIES, batch_size=3, spatial_size=16,
                               missing="skip", seed=5)
        return m3leo_hf.StatefulLoader(data, num_workers=workers, **(FORK if workers else {}), **options)

    whole = loader()
    plan = whole.dataset.plan(0, 2)
    assert plan.tail_batches and plan.tail_parts == 2
    full = chip_batches(whole)
    assert len(full) == len(whole) == plan.num_batches
    assert sorted(c for b in full for c in b) == sorted(c for b in chip_batches(loader(workers=0)) for c in b)
    assert all(len(b) == 3 for b in full[:-1])
    for stop in (1, len(full) - plan.tail_batches, len(full)):
        partial = loader(persistent_workers=True)
        seen = []
        for batch in partial:
            seen.append(list(batch["chip_id"]))
            if len(seen) == stop:
                break
        resumed = loader()
        resumed.load_state_dict(partial.state_dict())
        assert seen + chip_batches(resumed) == full
        assert seen + chip_batches(partial) == full  # the same (persistent) workers carry on


def test_read_ahead_raises_errors_in_order_and_stops_its_thread():
    def items():
        yield from range(3)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(items(), depth=2):
            got.append(item)
    assert got == [0, 1, 2]
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield time.sleep(0.001)
        finally:
            closed.set()

    stream = read_ahead(endless(), depth=2)
    next(stream)
    stream.close()
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "m3leo-read-ahead"]


def test_batch_tensor_dtypes_match_the_samples():
    batch = collate([{"chip_id": "a", "x": np.ones(3, np.int16)}, {"chip_id": "b", "x": np.ones(3, np.int16)}])
    assert batch["x"].dtype == torch.int16 and batch["x"].shape == (2, 3)


def tensors_of(batch: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, dict) and key != "meta":
            out.update({f"{key}.{k}": v for k, v in tensors_of(value).items()})
        elif isinstance(value, torch.Tensor):
            out[key] = value
    return out


def segment(tensor: torch.Tensor) -> int:
    """The inode of the shared-memory file behind ``tensor``: the same for a recycled buffer set."""
    fd, _ = tensor.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


def assert_unchanged(kept: list, arrays: list, expected: list, field: str) -> None:
    """Kept ``(epoch, number, batch)`` and ``(epoch, number, numpy array of field)`` equal a run without recycling."""
    for epoch, number, batch in kept:
        assert equal(batch, expected[epoch][number]), (epoch, number)
    for epoch, number, array in arrays:
        assert np.array_equal(array, expected[epoch][number][field].numpy()), (epoch, number)


@pytest.mark.parametrize("persistent", [True, False])
def test_recycled_batches_are_never_overwritten_while_held(stream_shards, persistent):
    """Two epochs, every other batch kept and the others dropped at once (their slots are reused): the kept
    ones still hold the bytes of a run without recycling; a view outlives its batch; slots come back once
    the batches are gone."""
    options = dict(modalities=MODALITIES, batch_size=2, spatial_size=32, normalize=True, seed=1)
    fresh = m3leo_hf.StatefulLoader(m3leo_hf.stream(roots(stream_shards), **options), num_workers=2, recycle=False,
                                    persistent_workers=persistent)
    expected = [[{k: v.clone() for k, v in tensors_of(b).items()} for b in fresh] for _ in range(2)]
    data = m3leo_hf.stream(roots(stream_shards), **options)
    loader = m3leo_hf.StatefulLoader(data, num_workers=2, persistent_workers=persistent)
    kept, segments, arrays = [], [], []
    for epoch in range(2):
        for number, batch in enumerate(loader):
            segments.append(segment(batch["s1grd"]))
            if number % 2 == 0:
                kept.append((epoch, number, batch))
            elif (epoch, number) == (0, 1):  # only a numpy array of it: the batch's memory stays this array's
                arrays.append((epoch, number, batch["s1grd"].numpy()))
            del batch
    assert len(set(segments)) < len(segments)  # buffer sets were reused
    view = kept[0][2]["s1grd"][0, :2]
    copy = view.clone()
    del kept[0]
    assert_unchanged(kept, arrays, expected, "s1grd")
    assert torch.equal(view, copy)
    del kept, arrays
    gc.collect()
    loader._holds.poll()
    assert int(data._recycle_flags.sum()) <= 1  # the view's batch only
    del view
    gc.collect()
    loader._holds.poll()
    assert int(data._recycle_flags.sum()) == 0


def tail_options() -> dict:
    """17 train chips (missing='skip') in batches of 3 over 2 workers: the last batch is two tail parts."""
    return dict(modalities=MODALITIES, batch_size=3, spatial_size=16, normalize=True, missing="skip", seed=5)


def epochs_without_arena(stream_shards, epochs: int, **options) -> list[list[dict]]:
    plain = m3leo_hf.StatefulLoader(m3leo_hf.stream(roots(stream_shards), **tail_options()), num_workers=2,
                                    recycle=False, **options)
    return [[{k: v.clone() for k, v in tensors_of(b).items()} for b in plain] for _ in range(epochs)]


def equal(batch: dict, expected: dict) -> bool:
    got = tensors_of(batch)
    return got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())


@pytest.mark.parametrize("persistent", [True, False])
def test_tail_batches_are_mapped_from_the_arena_without_a_copy(stream_shards, persistent):
    """Each epoch's last batch is the workers' tail parts written at their rows of the loader's arena for the
    epoch's parity, mapped by the main process (its tensors lie in a mapping of the arena's file); it equals a
    run without arenas. While epoch 0's tail is held, epoch 1's goes to the other arena, and with persistent
    workers (one pair of arenas) epoch 2's is joined by copying; the held batches keep their bytes; once all
    are gone the arenas are free again, and the next tail is written into the pages they kept."""
    expected = epochs_without_arena(stream_shards, 4, persistent_workers=persistent, **FORK)
    data = m3leo_hf.stream(roots(stream_shards), **tail_options())
    loader = m3leo_hf.StatefulLoader(data, num_workers=2, persistent_workers=persistent, **FORK)
    assert data.plan(0, 2).tail_parts == 2
    held = [list(loader)]
    arenas = loader._arenas
    tail_labels = held[0][-1]["esaworldcover"]["label"].numpy()  # outlives its batch: the arena waits for it
    assert int(arenas[0].flag[0]) == 1 and os.fstat(arenas[0].fd).st_size > 0
    assert all(in_arena_mapping(t) for t in tensors_of(held[0][-1]).values() if t.numel() and t.dtype != torch.bool)
    assert not any(in_arena_mapping(t) for t in tensors_of(held[0][0]).values())
    held += [list(loader), list(loader)]
    assert (loader._arenas == arenas) == persistent
    assert [any(in_arena_mapping(t) for t in tensors_of(epoch[-1]).values()) for epoch in held] == [
        True, True, not persistent]
    for epoch, batches in enumerate(held):
        assert all(equal(b, e) for b, e in zip(batches, expected[epoch], strict=True)), epoch
    del held
    gc.collect()
    loader._holds.poll()
    assert int(arenas[0].flag[0]) == 1  # its label map lives on as a numpy array
    assert np.array_equal(tail_labels, expected[0][-1]["esaworldcover.label"].numpy())
    del tail_labels
    gc.collect()
    loader._holds.poll()
    assert all(int(a.flag[0]) == 0 for a in arenas)
    kept = [(os.fstat(a.fd).st_size, os.fstat(a.fd).st_blocks) for a in arenas]
    assert all(size > 0 and blocks * 512 >= size for size, blocks in kept[:1 + persistent])  # the used ones' pages
    assert all(equal(b, e) for b, e in zip(list(loader), expected[3], strict=True))
    if persistent:  # epoch 3's tail went into the pages arena 1 kept: nothing allocated
        assert [(os.fstat(a.fd).st_size, os.fstat(a.fd).st_blocks) for a in arenas] == kept
        assert in_arena_mapping(next(t for t in tensors_of(list(loader)[-1]).values() if t.numel()))


def in_arena_mapping(tensor: torch.Tensor) -> bool:
    """Does ``tensor``'s memory lie in a mapping of a tail arena's file (``/proc/self/maps``)?"""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, *rest = line.split()
            if "memfd:m3leo-tail" in line:
                low, high = (int(x, 16) for x in span.split("-"))
                if low <= address < high:
                    return True
    return False


def mapping_of(tensor: torch.Tensor) -> dict[str, int]:
    """``Size`` and ``Rss`` in kB of the mapping that holds ``tensor``'s memory (``/proc/self/smaps``)."""
    address, found = tensor.data_ptr(), {}
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head in ("Size:", "Rss:"):
                found[head[:-1]] = int(line.split()[1])
    return found


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="arenas need memfds")
def test_a_worker_maps_only_its_own_rows_of_the_tail_with_their_pages():
    """A worker's tail part is a mapping of just the pages that hold its rows, prefaulted (it writes all of
    them), and its values land at those rows of the region the main process maps."""
    from m3leo_hf.tail_arena import TailArena, _view

    arena = TailArena()
    rows = arena.writer(start=3, total=8)("x", (2, 1000, 7), np.float32)
    found = mapping_of(rows)  # before any write
    assert found["Size"] <= 2 * 1000 * 7 * 4 / 1024 + 8 and found["Rss"] == found["Size"]
    rows.copy_(torch.arange(2 * 1000 * 7, dtype=torch.float32).reshape(2, 1000, 7))
    region = _view(arena.fd, 0, os.fstat(arena.fd).st_size, np.dtype(np.float32), (8, 1000, 7))
    assert torch.equal(region[3:5], rows) and not region[:3].any() and not region[5:].any()
    with pytest.raises(ValueError, match="rows 7..9 of 8"):  # past its region: refused, nothing mapped
        arena.writer(start=7, total=8)("x", (2, 1000, 7), np.float32)


def test_spawned_workers_send_their_tail_parts_as_tensors(stream_shards):
    """Spawned workers do not inherit the arena's file: they send their parts, joined by copying, equal."""
    expected = epochs_without_arena(stream_shards, 1, multiprocessing_context="spawn")
    data = m3leo_hf.stream(roots(stream_shards), **tail_options())
    loader = m3leo_hf.StatefulLoader(data, num_workers=2, multiprocessing_context="spawn")
    got = list(loader)
    assert all(equal(b, e) for b, e in zip(got, expected[0], strict=True))
    assert all(int(a.flag[0]) == 0 and os.fstat(a.fd).st_size == 0 for a in loader._arenas)


def test_zero_workers_recycle_batches_held_ones_keep_their_bytes(stream_shards):
    """With 0 workers the main process keeps a few ordinary buffer sets: a dropped batch's memory is reused; a
    kept batch, a view or a ``.numpy()`` array of a dropped one is never overwritten; slots come back once all
    are gone."""
    options = dict(modalities=MODALITIES, batch_size=2, spatial_size=32, normalize=True, seed=1)
    fresh = m3leo_hf.StatefulLoader(m3leo_hf.stream(roots(stream_shards), **options), recycle=False)
    expected = [[{k: v.clone() for k, v in tensors_of(b).items()} for b in fresh] for _ in range(2)]
    data = m3leo_hf.stream(roots(stream_shards), **options)
    loader = m3leo_hf.StatefulLoader(data)
    kept, pointers, view, arrays = [], [], None, []
    for epoch in range(2):
        for number, batch in enumerate(loader):
            pointers.append(batch["s1grd"].data_ptr())
            if number % 2 == 0:
                kept.append((epoch, number, batch))
            elif view is None:
                view, copy = batch["s1grd"][0, :2], batch["s1grd"][0, :2].clone()
            elif number % 4 == 3:
                arrays.append((epoch, number, batch["esaworldcover"]["label"].numpy()))
            del batch
    assert len(set(pointers)) < len(pointers)  # buffer sets were reused
    assert_unchanged(kept, arrays, expected, "esaworldcover.label")
    assert torch.equal(view, copy)
    del kept, view, arrays
    gc.collect()
    loader._holds.poll()
    assert int(data._recycle_flags.sum()) == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_numpy_arrays_of_recycled_batches_keep_their_values(stream_shards, workers):
    """``batch[...].numpy()`` kept after its batch is dropped (a metrics list, say) holds the batch's memory: its
    values stay those of a run without recycling, over two epochs of reuse."""
    options = dict(modalities=MODALITIES, batch_size=2, spatial_size=16, normalize=True, seed=2)
    loader_options = {"persistent_workers": True, **FORK} if workers else {}
    plain = m3leo_hf.StatefulLoader(m3leo_hf.stream(roots(stream_shards), **options), num_workers=workers,
                                    recycle=False, **loader_options)
    expected = [b["s1grd"].clone() for _ in range(2) for b in plain]
    loader = m3leo_hf.StatefulLoader(m3leo_hf.stream(roots(stream_shards), **options), num_workers=workers,
                                     **loader_options)
    arrays = []
    for _ in range(2):
        for batch in loader:
            arrays.append(batch["s1grd"].numpy())
            del batch
    assert len(arrays) == len(expected)
    assert all(np.array_equal(a, e.numpy()) for a, e in zip(arrays, expected))
