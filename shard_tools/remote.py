"""Build into an fsspec URL (s3://, gs://, hf://, file://, memory://) through a local staging folder.

The normal build writes into the staging folder; each worker uploads its shard and then the shard's record
as soon as both are final, and leaves a sparse placeholder of the same size behind, so staging holds only the
shards in flight and the small records. Before the build the staging folder is reset to what the URL holds
(records whose shard is there with the recorded size), which makes runs resumable from any machine.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from shard_tools.build import BuildOptions, BuildReport, ShardTask, build_inventories, scan_regions
from shard_tools.executors import Executor, as_executor
from shard_tools.objectstore import ObjectLock, exclusive_create_problem, protocols, put_atomic
from shard_tools.progress import Progress
from shard_tools.tarwriter import atomic_write_bytes

LOCK = ".build/lock"


def build_to_url(
    chips_dir: str | Path,
    out_url: str,
    *,
    staging: str | Path | None = None,
    lock: bool = True,
    regions: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    workers: int = 1,
    executor: str | Executor = "local",
    progress: Progress | None = None,
    follow_symlinks: bool = False,
    **options,
) -> BuildReport:
    """``build`` with the output at ``out_url``; the bytes there equal those of a local build.

    ``staging`` must be a folder that the driver and every worker see at the same path (a temporary folder
    by default, which only suits workers on this host). ``lock=False`` skips the per-region lock object.
    """
    fs, root = url_to_fs(out_url)
    root = root.rstrip("/")
    runner = as_executor(executor, workers)
    if "memory" in protocols(fs) and not runner.in_process:
        raise ValueError("memory:// is private to each process: use the local executor with 1 worker")
    problem = exclusive_create_problem(fs) if lock else None
    if problem:
        raise ValueError(f"{out_url}: cannot lock the output ({problem}); make sure no other build writes "
                         "there and rerun with --no-lock")
    if staging is None and runner.scheduler:
        raise ValueError("with a dask scheduler, pass a staging folder shared by this machine and every worker")
    inventories = scan_regions(chips_dir, regions, runner, follow_symlinks=follow_symlinks)
    names = [inventory.region for inventory in inventories]
    uploader = replace(runner, after=functools.partial(upload_shard, fs, root))
    with ExitStack() as stack:
        stage = stack.enter_context(_staging_dir(staging))
        for name in names:
            if lock:
                stack.enter_context(ObjectLock(fs, f"{root}/{name}/{LOCK}"))
            pull_state(fs, f"{root}/{name}", stage / name)
        report = build_inventories(inventories, stage, modalities=modalities, options=BuildOptions(**options),
                                   executor=uploader, progress=progress)
        for name in names:
            push_region(fs, f"{root}/{name}", stage / name)
    return report


def upload_shard(fs: AbstractFileSystem, root: str, task: ShardTask) -> None:
    """Runs in the worker after ``write_shard``: upload the shard, then its record; keep a placeholder."""
    region_dir = Path(task.region_dir)
    for path in (task.tar_path, task.record_path):
        put_atomic(fs, path, f"{root}/{task.region}/{path.relative_to(region_dir).as_posix()}")
    _placeholder(task.tar_path, task.tar_path.stat().st_size)


def pull_state(fs: AbstractFileSystem, remote: str, local: Path) -> None:
    """Reset ``local`` to the finished shards under ``remote`` (their records and sparse placeholders), its pinned
    shard plan and its modality declarations."""
    shutil.rmtree(local, ignore_errors=True)
    sizes = _remote_sizes(fs, remote)
    pinned = [rel for rel in sizes if rel == "metadata/plan.parquet" or rel.endswith(".modality.json")]
    pinned_contents = fs.cat([f"{remote}/{rel}" for rel in pinned]) if pinned else {}
    for rel in pinned:
        atomic_write_bytes(local / rel, pinned_contents[f"{remote}/{rel}"])
    records = [rel for rel in sizes if rel.startswith(".build/") and rel.endswith(".json")]
    contents = fs.cat([f"{remote}/{rel}" for rel in records]) if records else {}
    for rel in records:
        data = contents[f"{remote}/{rel}"]
        try:
            record = json.loads(data)
            shard, size = record["shard"], record["size"]
        except (ValueError, KeyError, TypeError):
            continue
        if sizes.get(shard) == size:
            atomic_write_bytes(local / rel, data)
            _placeholder(local / shard, size)


def push_region(fs: AbstractFileSystem, remote: str, local: Path) -> None:
    """Upload the region's metadata, then delete remote shards, records and temp files the build dropped."""
    for path in sorted((local / "metadata").glob("*")):
        put_atomic(fs, path, f"{remote}/metadata/{path.name}")
    kept = {path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()}
    owned = {path.name for path in local.iterdir() if path.is_dir() and path.name != "metadata"} | {".build"}
    stale = [f"{remote}/{rel}" for rel in _remote_sizes(fs, remote)
             if rel.split("/")[0] in owned and rel not in kept and rel != LOCK]
    if stale:
        fs.rm(stale)


def _remote_sizes(fs: AbstractFileSystem, remote: str) -> dict[str, int]:
    """Relative path -> size of every file under ``remote`` (one recursive listing)."""
    try:
        listing = fs.find(remote, detail=True)
    except FileNotFoundError:
        return {}
    return {path[len(remote) + 1:]: info["size"] for path, info in listing.items() if info["type"] == "file"}


def _placeholder(path: Path, size: int) -> None:
    """A sparse file of ``size`` bytes: the shard counts as built without its bytes taking disk space."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


@contextmanager
def _staging_dir(staging: str | Path | None) -> Iterator[Path]:
    if staging is not None:
        Path(staging).mkdir(parents=True, exist_ok=True)
        yield Path(staging)
        return
    with tempfile.TemporaryDirectory(prefix="m3leo-staging-") as folder:
        yield Path(folder)
