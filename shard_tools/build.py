"""``m3leo-shard build``: processed chips to aligned, reproducible, resumable WebDataset shards."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from builders.declarations import Modality
from builders.registry import get_modality
from shard_tools.encode import clean_float, encode_chip
from shard_tools.executors import Executor, as_executor, task_runner
from shard_tools.inventory import (Chip, RegionInventory, Source, find_regions, load_source, prefetch_rows,
                                   require_in_process, scan_region)
from shard_tools.lock import BuildLock
from shard_tools.metadata import write_region_metadata
from shard_tools.plan import PlannedShard, RegionPlan, chips_per_shard_for, plan_region, read_plan
from shard_tools.progress import SILENT, Progress
from shard_tools.stats import empty_stats, merge
from shard_tools.tarwriter import DeterministicTarWriter, atomic_write_bytes, json_bytes

DEFAULT_SHARD_SIZE_MB = 1024.0
SHARD_NAME = re.compile(r"^(train|val|test)-\d{6}\.tar$")
DECLARE_HINT = ("declare it in a YAML file (`m3leo-shard declare <folder>` drafts one) and pass `--modalities FILE`, "
                "or pass --skip-unknown to build without it")


class UnknownFolderError(ValueError):
    """Dataset folders no declaration covers: building without them would lose their data silently."""

    def __init__(self, unmatched: dict[str, str]):
        self.unmatched = dict(unmatched)
        lines = "\n".join(f"  {where}: {why}" for where, why in sorted(unmatched.items()))
        super().__init__(f"{len(unmatched)} dataset folder(s) cannot be built:\n{lines}\nFor each, {DECLARE_HINT}.")


@dataclass(frozen=True)
class BuildOptions:
    """How shards are cut and reused. ``chips_per_shard`` (default: from ``shard_size_mb`` and the largest
    declared product) applies to a region's first build only: later builds keep the pinned plan unless
    ``replan``. ``rehash`` checks the content of every source before reusing a shard; ``skip_unknown``
    builds a region whose input holds undeclared folders, recording them."""

    shard_size_mb: float = DEFAULT_SHARD_SIZE_MB
    chips_per_shard: int | None = None
    replan: bool = False
    rehash: bool = False
    skip_unknown: bool = False

    def first_chips_per_shard(self) -> int:
        return self.chips_per_shard or chips_per_shard_for(self.shard_size_mb)


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
        """Fingerprint of the shard's inputs (names, sizes, modification times, declaration): a record with another
        key is stale."""
        items = [(c.chip_id, c.split, s.name, s.size, s.status, s.mtime) for c, s in zip(self.shard.chips, self.sources)]
        declared = json.dumps(self.spec.to_json(), sort_keys=True)
        return hashlib.sha256(json.dumps([self.region, self.modality, declared, items]).encode()).hexdigest()

    @property
    def needs_content_check(self) -> bool:
        """A source without a modification time can change unseen: reuse then compares content hashes."""
        return any(s.status == "file" and s.mtime is None for s in self.sources)


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
    workers: int = 1,
    executor: str | Executor = "local",
    progress: Progress | None = None,
    follow_symlinks: bool = False,
    **options,
) -> BuildReport:
    """Build every requested region and modality found under ``chips_dir`` into ``out_dir``.

    ``options`` are ``BuildOptions`` fields: ``shard_size_mb``, ``chips_per_shard``, ``replan``, ``rehash``,
    ``skip_unknown``.

    ``chips_dir`` is a local folder or an fsspec URL (``s3://``, ``gs://``, ``hf://``, ``file://``, ``memory://``);
    the shards are the same bytes either way. Workers read chips by URL with fsspec's configured storage options;
    a ``memory://`` tree is visible only in this process, so it needs the local executor with one worker.
    Chip links leading out of their region folder are refused unless ``follow_symlinks``.
    """
    inventories = scan_regions(chips_dir, regions, as_executor(executor, workers), follow_symlinks=follow_symlinks)
    return build_inventories(inventories, out_dir, modalities=modalities, options=BuildOptions(**options),
                             workers=workers, executor=executor, progress=progress)


def scan_regions(chips_dir: str | Path, regions: Sequence[str] | None, runner: Executor, *,
                 follow_symlinks: bool = False) -> list[RegionInventory]:
    """Inventories of the requested regions (default: all) of the chip tree at ``chips_dir``."""
    require_in_process(chips_dir, runner.in_process)
    found = find_regions(chips_dir)
    unknown = sorted(set(regions or ()) - set(found))
    if unknown:
        raise ValueError(f"region(s) {unknown} not found under {chips_dir}; found {sorted(found)}")
    return [scan_region(found[name], follow_symlinks=follow_symlinks) for name in (regions or sorted(found))]


def build_inventories(
    inventories: Iterable[RegionInventory],
    out_dir: str | Path,
    *,
    modalities: Sequence[str] | None = None,
    options: BuildOptions = BuildOptions(),
    workers: int = 1,
    executor: str | Executor = "local",
    progress: Progress | None = None,
) -> BuildReport:
    """Shard already-scanned regions (from a chip tree or a release): the shared back end of build/convert.

    ``modalities`` are config names or aliases (``s1grd-2019``, ``s1grd``). A region whose input holds a
    dataset folder no declaration covers raises ``UnknownFolderError`` unless ``options.skip_unknown``.
    """
    wanted = {get_modality(name).name for name in modalities or ()}
    if options.replan and wanted:
        raise ValueError("--replan moves chips between shards: it rebuilds every modality, so give no --modality")
    runner = as_executor(executor, workers)
    report = BuildReport()
    progress = progress or SILENT
    with task_runner(runner) as run:
        for inventory in inventories:
            if inventory.unmatched and not options.skip_unknown:
                raise UnknownFolderError(inventory.unmatched)
            region_dir = Path(out_dir) / inventory.region
            with BuildLock(region_dir / ".build" / "lock"):
                _build_region(inventory, region_dir, wanted, options, run, report, progress)
    return report


def _build_region(inventory: RegionInventory, region_dir: Path, wanted: set[str], options: BuildOptions,
                  run: Callable, report: BuildReport, progress: Progress) -> None:
    selected = [m for m in inventory.modalities if not wanted or m in wanted]
    plan = _plan(inventory, region_dir, options)
    tasks = {m: [ShardTask(str(region_dir), inventory.region, m, shard,
                           tuple(inventory.source(m, c.chip_id) for c in shard.chips), inventory.specs[m])
                 for shard in plan]
             for m in inventory.modalities}
    for modality in selected:
        _remove_leftovers(region_dir / modality, {s.filename for s in plan})
    pending = [task for m in selected for task in tasks[m] if not _is_done(task, options.rehash)]
    report.reused += sum(len(tasks[m]) for m in selected) - len(pending)
    progress.note(f"{inventory.region}: {len(inventory.chips)} chips, {len(selected)} modalities, {len(plan)} shards "
                  f"per modality, {len(pending)} to write")
    progress.start(f"build {inventory.region}", len(pending), sum(_source_bytes(t) for t in pending), "shards")
    for task in run(write_shard, pending):
        report.written += 1
        progress.advance(1, _source_bytes(task))
    progress.close()
    records = {m: [_record(task) for task in tasks[m]] for m in inventory.modalities
               if all(_record_matches(task) for task in tasks[m])}
    write_region_metadata(inventory, plan, region_dir, records, selected)
    report.regions.append(inventory.region)
    report.chips += sum(len(shard.chips) for shard in plan)
    report.problems += inventory.problems + plan.problems
    report.problems += [f"{where}: {why}; skipped (--skip-unknown)" for where, why in sorted(inventory.unmatched.items())]
    for modality in selected:
        for task, record in zip(tasks[modality], records[modality]):
            report.bytes_in += sum(s.size for s in task.sources)
            report.bytes_out += record["size"]
            report.problems += record["problems"]


def _plan(inventory: RegionInventory, region_dir: Path, options: BuildOptions) -> RegionPlan:
    """The region's pinned plan extended with new chips, or a fresh one (first build, ``replan``)."""
    previous = None if options.replan else read_plan(region_dir / "metadata" / "plan.parquet")
    plan = plan_region(inventory, options.first_chips_per_shard(), previous)
    if previous is not None and options.chips_per_shard not in (None, previous.chips_per_shard):
        plan.problems.append(f"{inventory.region}: kept the pinned {previous.chips_per_shard} chips per shard "
                             f"(not {options.chips_per_shard}); rebuild with --replan to change it")
    return plan


def _source_bytes(task: ShardTask) -> int:
    return sum(s.size or 0 for s in task.sources)


def _record(task: ShardTask) -> dict:
    return json.loads(task.record_path.read_text())


def _record_matches(task: ShardTask) -> dict | None:
    """The shard's record when it matches its inputs (names, sizes, modification times) and the tar on disk has
    the recorded size, else None."""
    try:
        record = json.loads(task.record_path.read_text())
        if (record["plan_key"] == task.plan_key and task.tar_path.stat().st_size == record["size"]
                and all("summary" in row for row in record["rows"])):  # records from before chip summaries: redo
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _is_done(task: ShardTask, rehash: bool = False) -> bool:
    """A shard is reused when its record matches; with ``rehash``, or a source without a modification time,
    the sources' content hashes must match the record's too."""
    record = _record_matches(task)
    if record is None:
        return False
    if rehash or task.needs_content_check:
        return record.get("source_sha256") == source_hashes(task.sources)
    return True


def source_hashes(sources: Sequence[Source]) -> list[str | None]:
    """sha256 of every file source (None for markers and absent chips), release rows read by row group."""
    fetched = prefetch_rows(sources)
    hashes = []
    for position, source in enumerate(sources):
        if source.status != "file":
            hashes.append(None)
            continue
        try:
            data = fetched.pop(position) if position in fetched else load_source(source)
        except OSError:
            hashes.append(None)
            continue
        hashes.append(hashlib.sha256(data).hexdigest())
    return hashes


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
    rows, problems, stats, hashes = [], [], {}, []
    fetched = prefetch_rows(task.sources)
    try:
        for position, (chip, source) in enumerate(zip(task.shard.chips, task.sources)):
            encoded = encode_chip(modality, task.region, chip, source, fetched.pop(position, None))
            extent = writer.write(chip.chip_id, encoded.members)
            rows.append(_row(task, chip, source, position, extent, encoded))
            hashes.append(encoded.source_sha256)
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
        "source_sha256": hashes,
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
        "nodata_fraction": encoded.nodata_fraction, "summary": encoded.summary,
        "source_file": source.name or None, "source_size": source.size,
    }

