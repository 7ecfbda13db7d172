"""Benchmark inputs under ``<out>``: sample chip tree, its Hub-release Parquet, built shards, cards.

Inputs are reused while ``<out>/inputs.json`` matches the configuration (so re-runs skip generation);
any other configuration wipes them first.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from builders.registry import get_modality
from builders.sample import write_release_parquet, write_sample

SUBDIRS = ("chips", "release", "shards", "scratch")


@dataclass(frozen=True)
class Config:
    regions: tuple[str, ...]
    chips_per_region: int
    pixels: int
    shard_size_mb: float
    seed: int = 0


@dataclass(frozen=True)
class Inputs:
    out: Path

    @property
    def chips(self) -> Path:
        return self.out / "chips"

    @property
    def release(self) -> Path:
        return self.out / "release"

    @property
    def shards(self) -> Path:
        return self.out / "shards"

    def scratch(self, name: str) -> Path:
        """An empty folder path for a case's output (removed first if left over)."""
        path = self.out / "scratch" / name
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def roots(self, config: Config) -> list[str]:
        return [str(self.shards / region) for region in config.regions]


def prepare(out: Path, config: Config, say: Callable[[str], None]) -> Inputs:
    """Write (or reuse) the chip tree and its release Parquet for ``config``."""
    inputs, stamp = Inputs(Path(out)), Path(out) / "inputs.json"
    wanted = json.dumps(asdict(config), sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted and inputs.chips.is_dir() and inputs.release.is_dir():
        say(f"reusing inputs in {out}")
        return inputs
    for name in SUBDIRS:
        shutil.rmtree(inputs.out / name, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    say(f"writing {len(config.regions)} x {config.chips_per_region} chips of {config.pixels} px to {inputs.chips}")
    write_sample(inputs.chips, regions=config.regions, chips_per_region=config.chips_per_region,
                 pixels=config.pixels, seed=config.seed)
    write_release_parquet(inputs.chips, inputs.release)
    stamp.write_text(wanted)
    return inputs


def ensure_shards(inputs: Inputs, config: Config, built: Path | None, say: Callable[[str], None]) -> None:
    """Keep ``built`` (the timed build's output) as the read cases' shards, or build them untimed."""
    if inputs.shards.is_dir():
        if built is not None:
            shutil.rmtree(built)
        return
    if built is not None:
        built.rename(inputs.shards)
        return
    from shard_tools.build import build

    say("building shards for the read cases (untimed)")
    build(inputs.chips, inputs.shards, shard_size_mb=config.shard_size_mb)


def write_cards(inputs: Inputs, config: Config) -> tuple[str, str]:
    """Dataset cards for the built regions: ``("card", note)`` when every region has a README with
    configs (stock ``load_dataset(region_dir, modality)`` works), else ``("webdataset", why not)``."""
    try:
        from dataset_cards.card import write_card
    except ImportError as exc:
        return "webdataset", f"no dataset card writer yet ({exc})"
    for root in inputs.roots(config):
        readme = Path(root) / "README.md"
        if not readme.exists():
            try:
                write_card(root)
            except Exception as exc:  # noqa: BLE001 - a colleague's module: fall back and say why
                return "webdataset", f"write_card({root}) failed: {type(exc).__name__}: {exc}"
        if "configs:" not in readme.read_text():
            return "webdataset", f"{readme} has no configs"
    return "card", "README.md cards written by dataset_cards.card.write_card"


def chip_files(inputs: Inputs, config: Config, modalities: list[str], split: str) -> list[dict]:
    """``[{"chip_id", "files": {modality: path}}]`` of the split's chips available in every modality,
    in read order (region, chip id), from the built metadata."""
    chips = []
    for root in inputs.roots(config):
        per_modality = {}
        for name in modalities:
            rows = pq.read_table(Path(root, "metadata", f"{get_modality(name).name}.parquet"),
                                 columns=["chip_id", "split", "available", "source_file"]).to_pylist()
            per_modality[name] = {r["chip_id"]: str(inputs.chips / r["source_file"]) for r in rows
                                  if r["split"] == split and r["available"]}
        common = set.intersection(*(set(files) for files in per_modality.values()))
        chips += [{"chip_id": c, "files": {m: per_modality[m][c] for m in modalities}} for c in sorted(common)]
    return chips
