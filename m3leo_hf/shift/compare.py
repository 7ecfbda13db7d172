"""The shift between every pair of regions: raw, and after matching chips on terrain.

For each pair (a, b) and each condition (``raw``; ``strata`` and ``nearest`` from ``terrain``) the
statistics of ``stats.STATISTICS`` on the two sets of embeddings. Each region is first subsampled to
at most ``max_chips`` random chips (the kernel matrix is quadratic); terrain conditions use only the
chips having every descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping

import numpy as np

from m3leo_hf.shift import stats, terrain

CONDITIONS = ("raw", "strata", "nearest")
MINIMUM = 4  # chips per side below which no statistic is computed


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    max_chips: int = 2000
    permutations: int = 500
    bootstraps: int = 200
    caliper: float = 0.2
    strata_bins: int = 10
    terrain_columns: tuple[str, ...] = terrain.BASE  # add terrain.EXTRA for tree cover and built-up


def compare(table: Mapping[str, np.ndarray], settings: Settings = Settings()) -> dict:
    """``{"regions", "counts", "pairs": [{"a", "b", "<condition>": {"n_a", "n_b", "matching"?, "<stat>":
    Result dict | None, "skipped"?}}]}`` for the embedding table of ``embed.read_table``."""
    rng = np.random.default_rng(settings.seed)
    unknown = sorted(set(settings.terrain_columns) - set(terrain.COLUMNS))
    if unknown:
        raise ValueError(f"unknown terrain columns {unknown}; known: {list(terrain.COLUMNS)}")
    columns = [terrain.COLUMNS.index(c) for c in settings.terrain_columns]
    names = tuple(settings.terrain_columns)
    covariates = table["terrain"][:, columns]
    regions = sorted(set(table["region"].tolist()))
    chosen = {}
    for region in regions:
        rows = np.flatnonzero(table["region"] == region)
        chosen[region] = np.sort(rng.permutation(rows)[: settings.max_chips])
    counts = {r: {"chips": int((table["region"] == r).sum()), "used": int(len(chosen[r])),
                  "with_terrain": int(terrain.complete(covariates[chosen[r]]).sum())} for r in regions}
    pairs = []
    for a, b in combinations(regions, 2):
        xa, xb = table["embedding"][chosen[a]], table["embedding"][chosen[b]]
        ta, tb = covariates[chosen[a]], covariates[chosen[b]]
        ca, cb = terrain.complete(ta), terrain.complete(tb)
        entry = {"a": a, "b": b, "raw": _statistics(xa, xb, rng, settings)}
        entry["raw"]["smd"] = terrain.standardised_mean_differences(ta[ca], tb[cb], names)
        for condition in CONDITIONS[1:]:
            if ca.sum() < MINIMUM or cb.sum() < MINIMUM:
                entry[condition] = _skipped(int(ca.sum()), int(cb.sum()), "too few chips with terrain descriptors")
                continue
            if condition == "strata":
                matching = terrain.match_strata(ta[ca], tb[cb], rng, settings.strata_bins, names)
            else:
                matching = terrain.match_nearest(ta[ca], tb[cb], rng, settings.caliper, names)
            ma, mb = xa[ca][matching.x], xb[cb][matching.y]
            result = _statistics(ma, mb, rng, settings, f"only {len(ma)}/{len(mb)} chips matched")
            result["matching"] = matching.summary(int(ca.sum()), int(cb.sum()))
            entry[condition] = result
        pairs.append(entry)
    return {"regions": regions, "counts": counts, "pairs": pairs, "settings": dict(settings.__dict__),
            "embedding_dim": int(table["embedding"].shape[1])}


def _statistics(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, settings: Settings,
                what: str = "too few chips") -> dict:
    if len(x) < MINIMUM or len(y) < MINIMUM:
        return _skipped(len(x), len(y), f"{what}, fewer than {MINIMUM} on a side")
    out: dict = {"n_a": int(len(x)), "n_b": int(len(y))}
    out["mmd2"] = stats.mmd(x, y, rng, permutations=settings.permutations, bootstraps=settings.bootstraps).as_dict()
    out["auc"] = stats.classifier_test(x, y, rng, bootstraps=settings.bootstraps).as_dict()
    out["frechet"] = stats.frechet(x, y, rng, bootstraps=settings.bootstraps).as_dict()
    return out


def _skipped(n_a: int, n_b: int, reason: str) -> dict:
    return {"n_a": n_a, "n_b": n_b, "skipped": reason, **{name: None for name in stats.STATISTICS}}
