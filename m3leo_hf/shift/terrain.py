"""Terrain descriptors of chips from our label layers, and matching chips of two regions on them.

Descriptors (one row per chip, NaN where a layer is missing): the fraction of each ESA WorldCover
class among the chip's classified pixels (``wc_<class>``), SRTM mean elevation (m) and mean slope
(degrees), optionally MODIS 2020 mean percent tree cover (water and fill left out) and mean GHS
built-up surface (m² per ~100 m cell).

``match_strata`` keeps, in every stratum (a quantile bin of the propensity score, the probability of
a chip's region given its descriptors), as many chips of each region as the smaller side has;
``match_nearest`` pairs chips 1:1, greedily and without replacement, on the propensity score within
a caliper. ``standardised_mean_differences`` measures the covariate balance before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from builders.registry import ESAWC_NAMES
from m3leo_hf.shift.stats import fit_linear_probe, probe_scores
from m3leo_hf.transforms import IGNORE_INDEX

LANDCOVER = tuple("wc_" + name.replace(" and ", "_").replace("/", "_").replace(" ", "_").replace("-", "_")
                  for name in ESAWC_NAMES)
BASE = LANDCOVER + ("elevation_m", "slope_deg")
EXTRA = ("tree_cover_pct", "built_up_m2")  # optional covariates: MODIS 2020 tree cover, GHS built-up surface
COLUMNS = BASE + EXTRA
MODALITIES = ("esaworldcover", "srtmdem", "modis", "ghsbuilts")
BANDS = {"modis": ["Percent_Tree_Cover_2020"]}
SIZES = {"ghsbuilts": 72}  # ~100 m grid (about 45 x 56 px): padded with its nodata, which is left out
MODIS_WATER, MODIS_FILL, GHS_NODATA = 200, 253, 65535


def descriptors(batch: dict) -> np.ndarray:
    """(B, len(COLUMNS)) float64 descriptors of a streamed batch holding ``esaworldcover`` (labels),
    raw ``srtmdem`` (elevation uint16 with negatives wrapped, slope), raw ``modis`` (``BANDS``) and raw
    ``ghsbuilts``; a chip or batch without a layer gets NaN for its columns."""
    size = len(batch["chip_id"])
    out = np.full((size, len(COLUMNS)), np.nan)
    if "esaworldcover" in batch:
        label = batch["esaworldcover"]["label"].reshape(size, -1)
        valid = label != IGNORE_INDEX
        counts = torch.stack([(label == c).sum(dim=1) for c in range(len(LANDCOVER))], dim=1).double()
        have = (batch["esaworldcover_available"] & (valid.sum(dim=1) > 0)).numpy()
        fractions = counts / valid.sum(dim=1, keepdim=True).clamp(min=1)
        out[have, : len(LANDCOVER)] = fractions.numpy()[have]
    if "srtmdem" in batch:
        have = batch["srtmdem_available"].numpy()
        dem = batch["srtmdem"].numpy()[have].reshape(int(have.sum()), 2, -1)
        out[have, len(LANDCOVER)] = dem[:, 0].astype(np.uint16).view(np.int16).mean(axis=1)
        out[have, len(LANDCOVER) + 1] = dem[:, 1].astype(np.float64).mean(axis=1)
    for modality, column, invalid in (("modis", len(BASE), (MODIS_WATER, MODIS_FILL)),
                                      ("ghsbuilts", len(BASE) + 1, (GHS_NODATA,))):
        if modality in batch:
            have = batch[f"{modality}_available"].numpy()
            values = batch[modality].numpy().reshape(size, -1).astype(np.float64)
            valid = ~np.isin(values, invalid)
            count = valid.sum(axis=1)
            mean = np.divide(np.where(valid, values, 0).sum(axis=1), count, out=np.full(size, np.nan), where=count > 0)
            out[have, column] = mean[have]
    return out


@dataclass(frozen=True)
class Matching:
    """Indices into the two regions' chips kept by a matching, and the covariate balance."""

    method: str
    x: np.ndarray
    y: np.ndarray
    smd_before: dict[str, float]
    smd_after: dict[str, float]

    def summary(self, n_x: int, n_y: int) -> dict:
        return {"method": self.method, "matched_x": int(len(self.x)), "matched_y": int(len(self.y)),
                "of_x": n_x, "of_y": n_y, "smd_before": self.smd_before, "smd_after": self.smd_after,
                "max_abs_smd_before": _max_abs(self.smd_before), "max_abs_smd_after": _max_abs(self.smd_after)}


def _max_abs(smd: dict[str, float]) -> float:
    values = [abs(v) for v in smd.values() if np.isfinite(v)]
    return max(values) if values else float("nan")


def complete(covariates: np.ndarray) -> np.ndarray:
    """Rows with every descriptor present."""
    return np.isfinite(covariates).all(axis=1)


def standardised_mean_differences(x: np.ndarray, y: np.ndarray, names=BASE) -> dict[str, float]:
    """``(mean_x - mean_y) / sqrt((var_x + var_y) / 2)`` per column (0 where both are constant and equal)."""
    if not len(x) or not len(y):
        return {name: float("nan") for name in names}
    difference = x.mean(axis=0) - y.mean(axis=0)
    spread = np.sqrt((x.var(axis=0, ddof=0) + y.var(axis=0, ddof=0)) / 2)
    smd = np.divide(difference, spread, out=np.where(difference == 0, 0.0, np.inf), where=spread > 0)
    return {name: float(v) for name, v in zip(names, smd)}


def match_strata(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, bins: int = 10,
                 names: tuple[str, ...] = BASE) -> Matching:
    """Subclassification on the propensity score: strata are ``bins`` quantile bins of the pooled
    propensity logit; in each stratum both regions keep ``min(count_x, count_y)`` random chips."""
    logit = propensity_logit(x, y)
    edges = np.unique(np.quantile(logit, np.linspace(0, 1, bins + 1)[1:-1]))
    strata = np.searchsorted(edges, logit, side="right")
    sx, sy = strata[: len(x)], strata[len(x):]
    keep_x, keep_y = [], []
    for stratum in np.intersect1d(sx, sy):
        in_x, in_y = np.flatnonzero(sx == stratum), np.flatnonzero(sy == stratum)
        size = min(len(in_x), len(in_y))
        keep_x.append(rng.permutation(in_x)[:size])
        keep_y.append(rng.permutation(in_y)[:size])
    ix = np.sort(np.concatenate(keep_x)) if keep_x else np.zeros(0, int)
    iy = np.sort(np.concatenate(keep_y)) if keep_y else np.zeros(0, int)
    return Matching(f"strata ({bins} propensity-score quantile bins)", ix, iy,
                    standardised_mean_differences(x, y, names), standardised_mean_differences(x[ix], y[iy], names))


def propensity_logit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Logit of the probability of being a chip of ``y`` given the descriptors (L2 logistic regression
    on standardised descriptors), for the rows of ``x`` then ``y``."""
    pooled = np.concatenate([x, y])
    labels = np.r_[np.zeros(len(x), bool), np.ones(len(y), bool)]
    return probe_scores(fit_linear_probe(pooled, labels), pooled)


def match_nearest(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, caliper: float = 0.2,
                  names: tuple[str, ...] = BASE) -> Matching:
    """1:1 nearest-neighbour matching without replacement on the propensity score (its logit), with a
    caliper of ``caliper`` standard deviations of the logit (Austin 2011: 0.2). Chips of ``x`` are
    taken in random order, each paired with its nearest unused chip of ``y`` if within the caliper."""
    logit = propensity_logit(x, y)
    lx, ly = logit[: len(x)], logit[len(x):]
    width = caliper * float(logit.std()) if len(logit) > 1 else 0.0
    used = np.zeros(len(y), bool)
    pairs = []
    for i in rng.permutation(len(x)):
        gap = np.where(used, np.inf, np.abs(ly - lx[i]))
        j = int(gap.argmin()) if len(gap) else -1
        if j >= 0 and gap[j] <= width:
            used[j] = True
            pairs.append((i, j))
    ix = np.array([p[0] for p in pairs], dtype=int)
    iy = np.array([p[1] for p in pairs], dtype=int)
    return Matching(f"nearest propensity (caliper {caliper} SD of the logit)", ix, iy,
                    standardised_mean_differences(x, y, names), standardised_mean_differences(x[ix], y[iy], names))


MATCHINGS = {"strata": match_strata, "nearest": match_nearest}
