"""m3leo-shift under real torch.distributed (2 gloo ranks on 127.0.0.1): the CLI pretrains with DDP
(every rank the same number of batches, else the gradient all-reduce would time out) and the
embedding table of 2 ranks equals the one of a single process."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from m3leo_hf.shift.cli import main
from m3leo_hf.shift.embed import read_table
from tests.test_shift_cli import FAST, REGIONS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=90))
    assert main(argv) == 0


def test_two_ranks_pretrain_and_embed_like_one_process(built, tmp_path):
    roots = [str(built / r) for r in REGIONS]
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    argv = [*roots, "--epochs", "2", "--out", str(ddp_out), *FAST]
    mp.start_processes(rank_main, args=(2, free_port(), argv), nprocs=2, join=True, start_method="spawn")
    assert (ddp_out / "shift.json").exists() and (ddp_out / "mae" / "encoder.safetensors").exists()
    assert sorted(p.name for p in (ddp_out / "embeddings.parquet.parts").glob("*.parquet")) == sorted(
        f"{r}-{s}-rank{k}.parquet" for r in REGIONS for s in ("train", "val", "test") for k in (0, 1))

    encoder = str(ddp_out / "mae" / "encoder.safetensors")
    assert main([*roots, "--encoder", encoder, "--out", str(single_out), *FAST]) == 0
    ddp, _ = read_table(ddp_out / "embeddings.parquet")
    single, _ = read_table(single_out / "embeddings.parquet")
    assert list(ddp["chip_id"]) == list(single["chip_id"]) and len(set(ddp["chip_id"])) == len(ddp["chip_id"])
    np.testing.assert_allclose(ddp["embedding"], single["embedding"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.isnan(ddp["terrain"]), np.isnan(single["terrain"]))
