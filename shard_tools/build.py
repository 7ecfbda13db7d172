"""``m3leo-shard build``: processed chips to aligned, reproducible, resumable WebDataset shards."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from builders.registry import Modality, get_modality
from shard_tools.encode import clean_float, encode_chip
from shard_tools.executors import Executor, as_executor, task_runner
from shard_tools.inventory import (Chip, RegionInventory, Source, find_regions, prefetch_rows, require_in_process,
                                   scan_region)
from shard_tools.lock import BuildLock
from shard_tools.metadata import write_region_metadata
from shard_tools.plan import PlannedShard, plan_region
from shard_tools.stats import empty_stats, merge
from shard_tools.tarwriter import DeterministicTarWriter, atomic_write_bytes, json_bytes

DEFAULT_SHARD_SIZE_MB = 1024.0
SHARD_NAME = re.compile(r"^(train|val|test)-\d{6}\.tar$")


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to write one shard of one modality (picklable). ``spec`` travels with the
    task, so a modality registered at run time is known to worker processes too."""

    region_dir: str
    region: str
    modality: str
    shard: PlannedShard
    sources: tuple[Source, ...]
    spec: Modality = field(compare=False)

    @property
    def tar_path(self) -> Path:
        return Path(self.region_dir) / self.modality / self.shard.filename

    @property
    def record_path(self) -> Path:
        return Path(self.region_dir) / ".build" / self.modality / self.shard.filename.replace(".tar", ".json")

    @property
    def plan_key(self) -> str:
        """Fingerprint of the shard's inputs: a record with another key is stale."""
        items = [(c.chip_id, c.split, s.name, s.size, s.status) for c, s in zip(self.shard.chips, self.sources)]
        return hashlib.sha256(json.dumps([self.region, self.modality, items]).encode()).hexdigest()


@dataclass
class BuildReport:
    regions: list[str] = field(default_factory=list)
    written: int = 0
    reused: int = 0
    chips: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    problems: list[str] = field(default_factory=list)


def build(
    chips_dir: str | Path,
    out_dir: str | Path,
    *,
    regions: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    shard_size_mb: float = DEFAULT_SHARD_SIZE_MB,
    workers: int = 1,
    executor: str | Executor = "local",
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build every requested region and modality found under ``chips_dir`` into ``out_dir``.

    ``chips_dir`` is a local folder or an fsspec URL (``s3://``, ``gs://``, ``hf://``, ``file://``, ``memory://``);
    the shards are the same bytes either way. Workers read chips by URL with fsspec's configured storage options;
    a ``memory://`` tree is visible only in this process, so it needs the local executor with one worker.
    """
    inventories = scan_regions(chips_dir, regions, as_executor(executor, workers))
    return build_inventories(inventories, out_dir, modalities=modalities, shard_size_mb=shard_size_mb,
                             workers=workers, executor=executor, progress=progress)


def scan_regions(chips_dir: str | Path, regions: Sequence[str] | None, runner: Executor) -> list[RegionInventory]:
    """Inventories of the requested regions (default: all) of the chip tree at ``chips_dir``."""
    require_in_process(chips_dir, runner.in_process)
    found = find_regions(chips_dir)
    unknown = sorted(set(regions or ()) - set(found))
    if unknown:
        raise ValueError(f"region(s) {unknown} not found under {chips_dir}; found {sorted(found)}")
    return [scan_region(found[name]) for name in (regions or sorted(found))]


def build_inventories(
    inventories: Iterable[RegionInventory],
    out_dir: str | Path,
    *,
    modalities: Sequence[str] | None = None,
    shard_size_mb: float = DEFAULT_SHARD_SIZE_MB,
    workers: int = 1,
    executor: str | Executor = "local",
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Shard already-scanned regions (from a chip tree or a release): the shared back end of build/convert."""
    for name in modalities or ():
        get_modality(name)
    runner = as_executor(executor, workers)
    report = BuildReport()
    say = progress or (lambda message: None)
    with task_runner(runner) as run:
        for inventory in inventories:
            region_dir = Path(out_dir) / inventory.region
            with BuildLock(region_dir / ".build" / "lock"):
                _build_region(inventory, region_dir, modalities, shard_size_mb, run, report, say)
    return report


def _build_region(inventory: RegionInventory, region_dir: Path, modalities: Sequence[str] | None,
                  shard_size_mb: float, run: Callable, report: BuildReport, say: Callable[[str], None]) -> None:
    selected = [m for m in inventory.modalities if not modalities or m in modalities]
    plan = plan_region(inventory, shard_size_mb)
    tasks = {m: [ShardTask(str(region_dir), inventory.region, m, shard,
                           tuple(inventory.source(m, c.chip_id) for c in shard.chips), get_modality(m))
                 for shard in plan]
             for m in inventory.modalities}
    for modality in selected:
        _remove_leftovers(region_dir / modality, {s.filename for s in plan})
    pending = [task for m in selected for task in tasks[m] if not _is_done(task)]
    report.reused += sum(len(tasks[m]) for m in selected) - len(pending)
    say(f"{inventory.region}: {len(inventory.chips)} chips, {len(selected)} modalities, {len(plan)} shards "
        f"per modality, {len(pending)} to write")
    for task in run(write_shard, pending):
        report.written += 1
        say(f"  wrote {task.modality}/{task.shard.filename}")
    records = {m: [_record(task) for task in tasks[m]] for m in inventory.modalities
               if all(_is_done(task) for task in tasks[m])}
    write_region_metadata(inventory, region_dir, records, selected)
    report.regions.append(inventory.region)
    report.chips += len(inventory.chips)
    report.problems += inventory.problems
    for modality in selected:
        for task, record in zip(tasks[modality], records[modality]):
            report.bytes_in += sum(s.size for s in task.sources)
            report.bytes_out += record["size"]
            report.problems += record["problems"]


def _record(task: ShardTask) -> dict:
    return json.loads(task.record_path.read_text())


def _is_done(task: ShardTask) -> bool:
    """A shard is reused when its record matches its inputs and the tar on disk has the recorded size."""
    try:
        record = json.loads(task.record_path.read_text())
        return record["plan_key"] == task.plan_key and task.tar_path.stat().st_size == record["size"]
    except (OSError, ValueError, KeyError):
        return False


def _remove_leftovers(modality_dir: Path, planned: set[str]) -> None:
    """Delete temp files of an interrupted run and shards no longer in the plan."""
    if not modality_dir.is_dir():
        return
    for path in modality_dir.iterdir():
        stale_shard = SHARD_NAME.match(path.name) and path.name not in planned
        if path.name.endswith(".tmp") or stale_shard:
            path.unlink()


def write_shard(task: ShardTask) -> None:
    """Write one shard tar (atomically) and then its build record."""
    modality = task.spec
    writer = DeterministicTarWriter(task.tar_path)
    rows, problems, stats = [], [], {}
    fetched = prefetch_rows(task.sources)
    try:
        for position, (chip, source) in enumerate(zip(task.shard.chips, task.sources)):
            encoded = encode_chip(modality, task.region, chip, source, fetched.pop(position, None))
            extent = writer.write(chip.chip_id, encoded.members)
            rows.append(_row(task, chip, source, position, extent, encoded))
            if encoded.problem:
                problems.append(encoded.problem)
            for name, chip_stats in encoded.stats.items():
                stats[name] = merge(stats.get(name, empty_stats(chip_stats["band_names"])), chip_stats)
        size, sha256 = writer.close()
    except BaseException:
        writer.abort()
        raise
    record = {
        "plan_key": task.plan_key, "shard": f"{task.modality}/{task.shard.filename}", "split": task.shard.split,
        "size": size, "sha256": sha256, "nsamples": len(rows), "rows": rows, "stats": stats, "problems": problems,
    }
    atomic_write_bytes(task.record_path, json_bytes(record))


def _row(task: ShardTask, chip: Chip, source: Source, position: int, extent, encoded) -> dict:
    return {
        "chip_id": chip.chip_id, "region": task.region, "split": chip.split,
        "lon": clean_float(chip.lon), "lat": clean_float(chip.lat),
        "bbox_west": clean_float(chip.west), "bbox_south": clean_float(chip.south),
        "bbox_east": clean_float(chip.east), "bbox_north": clean_float(chip.north),
        "area_km2": clean_float(chip.area_km2),
        "shard": f"{task.modality}/{task.shard.filename}", "shard_index": task.shard.index,
        "sample_index": position, "offset": extent.offset, "size": extent.size,
        "members": [{"name": m.name, "offset": m.offset, "size": m.size, "sha256": m.sha256} for m in extent.members],
        "available": encoded.available, "missing_reason": encoded.missing_reason,
        "nodata_fraction": encoded.nodata_fraction,
        "source_file": source.name or None, "source_size": source.size,
    }

