"""Exact epochs under real torch.distributed (gloo on 127.0.0.1) with DataLoader workers 0 and 2,
persistent or not.

One spawn per world size (1, 2, 3); each rank runs every case and writes what it saw. The train
split has 9 shards of 2 samples (17 with ``missing="skip"``), so neither shards nor samples divide
evenly among ranks x workers.
"""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import m3leo_hf
from tests.test_stream_data import MODALITIES, chips, roots, stream_shards  # noqa: F401 (fixture)

CASES = {  # name: (stream options, DataLoader workers)
    "train_w0": (dict(missing="skip", batch_size=2, shuffle_buffer=3), 0),
    "train_w2": (dict(missing="skip", batch_size=2, shuffle_buffer=3), 2),
    "train_persistent_w2": (dict(missing="skip", batch_size=2, shuffle_buffer=3), 2),
    "train_pad_w2": (dict(batch_size=3, equalize="pad", drop_last=False), 2),
    "val_w2": (dict(split="val", batch_size=4), 2),
    "test_skip_w0": (dict(split="test", missing="skip"), 0),
}
LOADER_OPTIONS = {"train_persistent_w2": dict(persistent_workers=True, pin_memory=True)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batches(loader) -> list[dict]:
    """Chip ids and padding flags per batch; an all_reduce per batch, like DDP's gradient sync,
    hangs (and times out) if one rank has fewer batches."""
    out = []
    for batch in loader:
        dist.all_reduce(torch.ones(1))
        if isinstance(batch["chip_id"], str):
            batch = {"chip_id": [batch["chip_id"]], "meta": [batch["meta"]]}
        out.append({"chips": batch["chip_id"], "padding": [m["padding"] for m in batch["meta"]]})
    return out


def rank_main(rank: int, world_size: int, port: int, data: list[str], out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    seen = {}
    for name, (options, workers) in CASES.items():
        def loader():
            stream = m3leo_hf.stream(data, modalities=MODALITIES, seed=11, spatial_size=32, **options)
            # workers of a spawned rank would be spawned too (slow): fork them
            return m3leo_hf.StatefulLoader(stream, num_workers=workers, **LOADER_OPTIONS.get(name, {}),
                                           **({"multiprocessing_context": "fork"} if workers else {}))

        first = loader()
        runs = {"epoch0": batches(first), "epoch1": batches(first), "length": len(first)}
        again = loader()
        runs["epoch0_again"] = batches(again)
        # stop a third of the way through epoch 1, checkpoint, resume in a fresh loader
        partial = loader()
        partial.set_epoch(1)
        stop = max(1, len(partial) // 3)
        for step, _ in enumerate(partial):
            dist.all_reduce(torch.ones(1))
            if step + 1 == stop:
                break
        state = partial.state_dict()
        continued = batches(partial)  # the same loader (and workers, when persistent) carries on
        resumed = loader()
        resumed.load_state_dict(json.loads(json.dumps(state)))
        runs["resume"] = {"state": state, "rest": batches(resumed), "after": resumed.state_dict(),
                          "continued": continued, "epoch2": batches(partial)}
        seen[name] = runs
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(stream_shards, tmp_path_factory) -> dict[int, list[dict]]:
    runs = {}
    for world_size in (1, 2, 3):
        out = tmp_path_factory.mktemp(f"ddp{world_size}")
        mp.spawn(rank_main, args=(world_size, free_port(), roots(stream_shards), str(out)), nprocs=world_size)
        runs[world_size] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)]
    return runs


def expected(shards, name: str) -> set[str]:
    options = CASES[name][0]
    return chips(shards, options.get("split", "train"), require=MODALITIES if options.get("missing") else ())


def flat(batch_list: list[dict], padding: bool | None = None) -> list[str]:
    return [c for b in batch_list for c, p in zip(b["chips"], b["padding"]) if padding is None or p == padding]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_equal_batches_and_exact_coverage(ddp_runs, stream_shards, world_size, name):
    ranks = ddp_runs[world_size]
    options = CASES[name][0]
    split_chips = expected(stream_shards, name)
    n, batch = len(split_chips), options.get("batch_size", 1)
    train = options.get("split", "train") == "train"
    for epoch in ("epoch0", "epoch1"):
        counts = {len(r[name][epoch]) for r in ranks}
        assert counts == {ranks[0][name]["length"]}, f"unequal batch counts {counts}"
        real = [c for r in ranks for c in flat(r[name][epoch], padding=False)]
        assert len(real) == len(set(real)) and set(real) <= split_chips
        if options.get("equalize", "drop" if train else "pad") == "pad":
            assert set(real) == split_chips
            assert sum(len(flat(r[name][epoch])) for r in ranks) == world_size * -(-n // world_size)
        else:
            per_rank = n // world_size
            kept = per_rank // batch * batch if options.get("drop_last", train) else per_rank
            assert len(real) == world_size * kept
    for r in ranks:
        assert r[name]["epoch0"] == r[name]["epoch0_again"]
        if train:
            assert r[name]["epoch0"] != r[name]["epoch1"]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_resume_yields_exactly_the_remaining_batches(ddp_runs, world_size, name):
    for r in ddp_runs[world_size]:
        runs = r[name]
        resume = runs["resume"]
        consumed = resume["state"]["batches"]
        assert resume["state"]["epoch"] == 1 and consumed == max(1, len(runs["epoch1"]) // 3)
        assert runs["epoch1"][:consumed] + resume["rest"] == runs["epoch1"]
        assert runs["epoch1"][:consumed] + resume["continued"] == runs["epoch1"]
        assert resume["after"]["epoch"] == 2 and resume["after"]["batches"] == 0
        assert len(resume["epoch2"]) == runs["length"]
        if CASES[name][0].get("split", "train") == "train":  # shuffled: another epoch, another order
            assert resume["epoch2"] != runs["epoch1"]


def test_workers_do_not_change_what_a_rank_sees(ddp_runs):
    for world_size, ranks in ddp_runs.items():
        for r in ranks:
            assert sorted(flat(r["train_w0"]["epoch1"])) == sorted(flat(r["train_w2"]["epoch1"]))
            assert r["train_persistent_w2"]["epoch1"] == r["train_w2"]["epoch1"]
