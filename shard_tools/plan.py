"""Shard plan: which chips go to shard i of a region/split, identical for every modality."""

from __future__ import annotations

from dataclasses import dataclass

from shard_tools.inventory import SPLITS, Chip, RegionInventory


@dataclass(frozen=True)
class PlannedShard:
    split: str
    index: int
    chips: tuple[Chip, ...]

    @property
    def filename(self) -> str:
        return f"{self.split}-{self.index:06d}.tar"


def plan_region(inventory: RegionInventory, shard_size_mb: float) -> list[PlannedShard]:
    """Greedy plan over chips sorted by id: a shard closes before any modality's bytes would exceed the limit.

    Sizes are the source file sizes of every modality present in the region, so the plan depends on
    the input alone (not on which modalities a particular run writes).
    """
    if shard_size_mb <= 0:
        raise ValueError("shard size must be positive")
    limit = shard_size_mb * 1024 * 1024
    modalities = inventory.modalities
    shards: list[PlannedShard] = []
    for split in SPLITS:
        chips = [chip for chip in inventory.chips if chip.split == split]
        current: list[Chip] = []
        totals = dict.fromkeys(modalities, 0)
        for chip in chips:
            sizes = {m: inventory.source(m, chip.chip_id).size for m in modalities}
            if current and any(totals[m] + sizes[m] > limit for m in modalities):
                shards.append(PlannedShard(split, _count(shards, split), tuple(current)))
                current, totals = [], dict.fromkeys(modalities, 0)
            current.append(chip)
            for m in modalities:
                totals[m] += sizes[m]
        if current:
            shards.append(PlannedShard(split, _count(shards, split), tuple(current)))
    return shards


def _count(shards: list[PlannedShard], split: str) -> int:
    return sum(1 for shard in shards if shard.split == split)
