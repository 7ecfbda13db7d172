"""``RecipeTransform``: a declared stage list (``m3leo_hf.upstream`` or a user's) run on each chip of a modality,
with its ``normalize`` stages bound to published statistics."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from builders.declarations import Modality
from m3leo_hf.stages import Normalize, Pipeline, build_stage, pool_stats
from m3leo_hf.transforms import placeholder, run

STATS_FILES = {"ours": "{modality}.stats.json", "upstream": "{modality}.stats-upstream.json"}
StatsLoader = Callable[[str], Mapping[str, Mapping]]  # variant -> {region: {field: train stats}}


def stats_file(modality: str, variant: str) -> str:
    if variant not in STATS_FILES:
        raise ValueError(f"normalize stats must be one of {sorted(STATS_FILES)}, not {variant!r}")
    return STATS_FILES[variant].format(modality=modality)


def train_stats(raw: bytes, where: str) -> dict:
    """The ``train`` split of a stats file's bytes; a file without one is a clear error."""
    stats = json.loads(raw).get("splits", {}).get("train")
    if not stats:
        raise ValueError(f"{where}: no train statistics (was the region built with them?)")
    return stats


class RecipeTransform:
    """Run ``specs`` (stage declarations or callables) on chips of ``modality``; ``stats(variant)`` gives the
    per-region statistics a ``{"stage": "normalize", "stats": variant}`` declaration names."""

    def __init__(self, modality: str | Modality, specs: Sequence[Mapping[str, Any] | Callable], stats: StatsLoader):
        self.modality = modality.name if isinstance(modality, Modality) else modality
        self.pipeline = Pipeline([self._stage(spec, stats) for spec in specs])

    @staticmethod
    def _stage(spec, stats: StatsLoader):
        if callable(spec) or spec.get("stage") != "normalize" or "stats" not in spec:
            return build_stage(spec)
        options = {k: v for k, v in spec.items() if k not in ("stage", "stats", "by_region")}
        per_region = stats(spec["stats"])
        if spec.get("by_region"):
            return Normalize(by_region=per_region, **options)
        return Normalize(stats=pool_stats(list(per_region.values())), **options)

    def __call__(self, arrays: Mapping[str, np.ndarray], fields: Mapping[str, Mapping], dates: Mapping | None = None,
                 labels: Mapping | None = None, region: str | None = None) -> dict[str, np.ndarray]:
        return run(self.pipeline, self.modality, arrays, fields, dates, labels, region)

    def placeholder(self, template: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
        return placeholder(self.pipeline, self.modality, template)


def stack_sample(sample: dict, stack: Mapping[str, str | Sequence[str]]) -> None:
    """Add ``sample[key]``: the output of one modality, or several concatenated on the channel axis (in order);
    and ``sample["constant_channels"]`` when a recipe flags it (any flagged modality)."""
    flags = [v["constant_channels"] for v in sample.values() if isinstance(v, dict) and "constant_channels" in v]
    if flags:
        sample["constant_channels"] = np.array(any(bool(f) for f in flags))
    for key, members in stack.items():
        names = [members] if isinstance(members, str) else list(members)
        values = [sample[m][m] if isinstance(sample[m], dict) and m in sample[m] else sample[m] for m in names]
        bad = [m for m, v in zip(names, values) if not isinstance(v, np.ndarray)]
        if bad:
            raise ValueError(f"stack {key!r}: {bad} yield several fields; give them a recipe ending in a stack stage")
        sample[key] = values[0] if len(values) == 1 else np.concatenate([v.reshape((-1,) + v.shape[-2:])
                                                                           for v in values])


def chip_lonlat(meta: Mapping[str, Mapping]) -> np.ndarray:
    """Upstream's virtual ``lonlat`` modality (M3LEO:datamodules/components/lonlat.py:30-36: the mean x and y
    of the chip's pixel centres): the centre of the chip bounds of its first available modality, float32 (2,)."""
    for info in meta.values():
        bounds = info.get("bounds") if isinstance(info, Mapping) and info.get("available", True) else None
        if bounds:
            west, south, east, north = bounds
            return np.array([(west + east) / 2, (south + north) / 2], dtype=np.float32)
    return np.full(2, np.nan, dtype=np.float32)
