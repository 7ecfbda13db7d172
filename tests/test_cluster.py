"""Scale-out build: a real dask cluster and fsspec URL outputs give the local executor's bytes."""

from __future__ import annotations

import logging
from pathlib import Path

import fsspec
import pytest
from dask.distributed import LocalCluster
from fsspec.implementations.dirfs import DirFileSystem

from shard_tools.build import build
from shard_tools.cli import main as cli
from shard_tools.executors import Executor
from shard_tools.lock import BuildLocked
from shard_tools.objectstore import ObjectLock, exclusive_create_problem
from shard_tools.remote import build_to_url
from tests.conftest import CHIPS_PER_SHARD, canonical
from tests.test_build import all_files


@pytest.fixture(scope="module")
def scheduler():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def memory_files(root: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("memory")
    return {path[len(root) + 1:]: fs.cat_file(path) for path in fs.find(root) if not path.endswith("/lock")}


def test_dask_cluster_build_is_byte_identical(sample_chips, built, scheduler, tmp_path):
    report = build(sample_chips, tmp_path / "dask", chips_per_shard=CHIPS_PER_SHARD,
                   executor=Executor("dask", scheduler=scheduler))
    assert report.written > 0
    assert all_files(tmp_path / "dask") == all_files(built)


def test_cli_builds_into_a_file_url_on_the_cluster(sample_chips, built, scheduler, tmp_path):
    out = tmp_path / "remote"
    assert cli(["build", "--chips", str(sample_chips), "--out", f"file://{out}", "--executor", "dask",
                "--scheduler", scheduler, "--staging", str(tmp_path / "stage"), "--region", "pakin",
                "--chips-per-shard", str(CHIPS_PER_SHARD), "--quiet"]) == 0
    assert all_files(out) == {f"pakin/{k}": v for k, v in all_files(built / "pakin").items()}
    assert not list(out.glob("*/.build/lock")), "lock objects are released"
    assert not [p for p in out.rglob("*.tmp")], "no temp objects are left"


def test_memory_url_build_resumes_and_prunes(sample_chips, built, tmp_path):
    url, root = "memory://m3leo-cluster-test", "/m3leo-cluster-test"
    fs = fsspec.filesystem("memory")
    first = build_to_url(sample_chips, url, regions=["conus"], chips_per_shard=CHIPS_PER_SHARD)
    expected = all_files(built / "conus")
    assert memory_files(f"{root}/conus") == expected and first.written > 0

    s1grd, gunw = canonical("s1grd"), canonical("gunw")
    fs.rm_file(f"{root}/conus/{s1grd}/train-000000.tar")
    fs.pipe_file(f"{root}/conus/{s1grd}/train-999999.tar", b"stale shard")
    fs.pipe_file(f"{root}/conus/{gunw}/.train-000000.tar.tmp", b"interrupted upload")
    again = build_to_url(sample_chips, url, regions=["conus"], chips_per_shard=CHIPS_PER_SHARD,
                         staging=tmp_path / "stage")
    assert (again.written, again.reused) == (1, first.written - 1)
    assert memory_files(f"{root}/conus") == expected
    assert not any(p.stat().st_blocks for p in (tmp_path / "stage" / "conus").rglob("*.tar")), \
        "staging keeps sparse placeholders, not shard bytes"

    with ObjectLock(fs, f"{root}/conus/.build/lock"):
        with pytest.raises(BuildLocked, match="another build is running"):
            build_to_url(sample_chips, url, regions=["conus"], chips_per_shard=CHIPS_PER_SHARD)
    fs.rm(root, recursive=True)


def test_url_output_refusals(sample_chips, tmp_path):
    with pytest.raises(ValueError, match="private to each process"):
        build_to_url(sample_chips, "memory://m3leo-refused", executor=Executor("dask", 2))
    with pytest.raises(ValueError, match="shared by this machine and every worker"):
        build_to_url(sample_chips, f"file://{tmp_path}", executor=Executor("dask", scheduler="tcp://127.0.0.1:1"))
    assert "create-if-absent" in exclusive_create_problem(DirFileSystem(str(tmp_path), fsspec.filesystem("file")))
    assert exclusive_create_problem(fsspec.filesystem("file")) is None
    assert cli(["build", "--chips", str(sample_chips), "--out", str(Path(tmp_path) / "x"),
                "--scheduler", "tcp://127.0.0.1:1", "--quiet"]) == 2, "a scheduler needs --executor dask"
