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
    kept, segments = [], []
    for epoch in range(2):
        for number, batch in enumerate(loader):
            segments.append(segment(batch["s1grd"]))
            if number % 2 == 0:
                kept.append((epoch, number, batch))
            del batch
    assert len(set(segments)) < len(segments)  # buffer sets were reused
    view = kept[0][2]["s1grd"][0, :2]
    copy = view.clone()
    del kept[0]
    for epoch, number, batch in kept:
        got = tensors_of(batch)
        assert all(torch.equal(got[k], v) for k, v in expected[epoch][number].items()), (epoch, number)
    assert torch.equal(view, copy)
    del kept, batch, got
    gc.collect()
    assert int(data._recycle_flags.sum()) <= 1  # the view's batch only
    del view
    gc.collect()
    assert int(data._recycle_flags.sum()) == 0
