"""Shard plan: which chips go to shard i of a region/split, identical for every modality, pinned once made.

A region's first build cuts each split's chips (sorted by id) into shards of ``chips_per_shard`` chips and
records the plan in ``metadata/plan.parquet``. Later builds keep it: a new modality or year follows it, new
chips go into new shards after the existing ones, and a chip that left the input keeps its place (as an
unavailable sample), so every tar written before stays byte-identical. ``replan`` starts over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from builders.chip import CHIP_ID
from builders.registry import largest_nominal_mb
from shard_tools.inventory import SPLITS, Chip, RegionInventory

PLAN_VERSION = "1"
PLAN_SCHEMA = pa.schema([
    ("chip_id", pa.string()), ("split", pa.string()), ("shard_index", pa.int32()), ("sample_index", pa.int32()),
    ("west", pa.float64()), ("south", pa.float64()), ("east", pa.float64()), ("north", pa.float64()),
    ("area_km2", pa.float64()),
])
MAX_PLAN_BYTES = 1 << 30


@dataclass(frozen=True)
class PlannedShard:
    split: str
    index: int
    chips: tuple[Chip, ...]

    @property
    def filename(self) -> str:
        return f"{self.split}-{self.index:06d}.tar"


@dataclass
class RegionPlan:
    """The shards of a region (every split) and the chips-per-shard rule they were cut with."""

    chips_per_shard: int
    shards: list[PlannedShard]
    problems: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.shards)

    def __len__(self) -> int:
        return len(self.shards)


def chips_per_shard_for(shard_size_mb: float) -> int:
    """Chips per shard so that a shard of the largest declared product stays within ``shard_size_mb``.

    The rule reads the declarations, never the input: which modalities a region has does not change it.
    """
    if not shard_size_mb > 0:
        raise ValueError("shard size must be positive")
    return max(1, math.floor(shard_size_mb / largest_nominal_mb()))


def plan_region(inventory: RegionInventory, chips_per_shard: int, previous: RegionPlan | None = None) -> RegionPlan:
    """The region's plan: ``previous`` extended with the chips it lacks, or a new one cut by ``chips_per_shard``."""
    if chips_per_shard < 1:
        raise ValueError("chips per shard must be at least 1")
    if previous is None:
        return RegionPlan(chips_per_shard, _cut(inventory.chips, chips_per_shard, {}))
    current = {chip.chip_id: chip for chip in inventory.chips}
    problems = []
    shards = []
    for shard in previous.shards:
        chips = []
        for chip in shard.chips:
            now = current.get(chip.chip_id)
            if now is not None and now.split != chip.split:
                problems.append(f"chip {chip.chip_id}: split {now.split} in the splits CSV but {chip.split} in the "
                                f"pinned plan; kept {chip.split} (rebuild with --replan to move it)")
            chips.append(chip if now is None else Chip(chip.chip_id, chip.split, *_box(now)))
        shards.append(PlannedShard(shard.split, shard.index, tuple(chips)))
    planned = {chip.chip_id for shard in previous.shards for chip in shard.chips}
    gone = len(planned - set(current))
    if gone:
        problems.append(f"{gone} chip(s) of the pinned plan are no longer in the input; they stay as unavailable "
                        "samples (rebuild with --replan to drop them)")
    fresh = [chip for chip in inventory.chips if chip.chip_id not in planned]
    next_index = {split: 1 + max((s.index for s in shards if s.split == split), default=-1) for split in SPLITS}
    shards += _cut(fresh, previous.chips_per_shard, next_index)
    return RegionPlan(previous.chips_per_shard, sorted(shards, key=lambda s: (SPLITS.index(s.split), s.index)),
                      problems)


def _cut(chips: list[Chip], chips_per_shard: int, first_index: dict[str, int]) -> list[PlannedShard]:
    shards = []
    for split in SPLITS:
        ids = sorted((c for c in chips if c.split == split), key=lambda c: c.chip_id)
        start = first_index.get(split, 0)
        for k in range(0, len(ids), chips_per_shard):
            shards.append(PlannedShard(split, start + k // chips_per_shard, tuple(ids[k:k + chips_per_shard])))
    return shards


def _box(chip: Chip) -> tuple[float, float, float, float, float]:
    return chip.west, chip.south, chip.east, chip.north, chip.area_km2


def plan_table(plan: RegionPlan) -> pa.Table:
    rows = [{"chip_id": c.chip_id, "split": s.split, "shard_index": s.index, "sample_index": i,
             **dict(zip(("west", "south", "east", "north", "area_km2"), _box(c)))}
            for s in plan.shards for i, c in enumerate(s.chips)]
    table = pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)
    return table.replace_schema_metadata({"m3leo_plan_version": PLAN_VERSION,
                                          "chips_per_shard": str(plan.chips_per_shard)})


def read_plan(path: Path) -> RegionPlan | None:
    """The plan recorded at ``path``, or None when there is none; a damaged plan is a ``ValueError`` naming it."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_PLAN_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than a shard plan can hold")
    try:
        table = pq.read_table(pa.BufferReader(path.read_bytes()))
        meta = table.schema.metadata or {}
        version, cps = meta.get(b"m3leo_plan_version"), int(meta.get(b"chips_per_shard", b"0"))
        table = table.select(PLAN_SCHEMA.names).cast(PLAN_SCHEMA)
    except (pa.ArrowException, ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{path}: unreadable shard plan: {exc}") from None
    if version != PLAN_VERSION.encode() or cps < 1:
        raise ValueError(f"{path}: not a version-{PLAN_VERSION} shard plan with chips_per_shard >= 1")
    return RegionPlan(cps, _shards(table.to_pylist(), path))


def _shards(rows: list[dict], path: Path) -> list[PlannedShard]:
    grouped: dict[tuple[str, int], list[dict]] = {}
    seen: set[str] = set()
    for row in rows:
        if not isinstance(row["chip_id"], str) or not CHIP_ID.match(row["chip_id"]) or row["chip_id"] in seen:
            raise ValueError(f"{path}: chip id {row['chip_id']!r} is not a 13-hex id or is planned twice")
        if row["split"] not in SPLITS or row["shard_index"] is None or row["shard_index"] < 0:
            raise ValueError(f"{path}: chip {row['chip_id']}: bad split or shard index")
        seen.add(row["chip_id"])
        grouped.setdefault((row["split"], row["shard_index"]), []).append(row)
    shards = []
    for (split, index), members in sorted(grouped.items(), key=lambda item: (SPLITS.index(item[0][0]), item[0][1])):
        members.sort(key=lambda r: r["sample_index"])
        if [r["sample_index"] for r in members] != list(range(len(members))):
            raise ValueError(f"{path}: shard {split}-{index:06d}: sample indices are not 0..{len(members) - 1}")
        chips = tuple(Chip(r["chip_id"], split, *(math.nan if r[k] is None else r[k]
                                                  for k in ("west", "south", "east", "north", "area_km2")))
                      for r in members)
        shards.append(PlannedShard(split, index, chips))
    return shards
