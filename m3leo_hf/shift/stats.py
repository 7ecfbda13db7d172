"""Two-sample statistics between the embeddings of two regions, each with a bootstrap interval.

* ``mmd``: unbiased MMD² with an RBF kernel whose bandwidth is the median pairwise distance of the
  pooled sample, a permutation p-value and a percentile bootstrap interval (both vectorised as
  weighted sums of one kernel matrix).
* ``classifier_test``: a linear probe (L2 logistic regression) separating the two regions, trained on
  a random half and scored by its AUC on the held-out half; p-value of the AUC under "no difference"
  (Mann-Whitney normal approximation) and a bootstrap interval over the held-out set.
* ``frechet``: Fréchet distance of the two Gaussian fits, with a percentile bootstrap interval of the
  resamples shifted by their mean bias (resampling with replacement inflates the distance further).

Every function takes ``x`` (n, d) and ``y`` (m, d) float arrays and a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Result:
    """One statistic: its value, a bootstrap interval (``low``, ``high``), a p-value where defined."""

    value: float
    low: float
    high: float
    p_value: float | None
    n_x: int
    n_y: int

    def as_dict(self) -> dict:
        return asdict(self)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return math.nan, math.nan
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _check(x: np.ndarray, y: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two (n, d) arrays with the same d, got {x.shape} and {y.shape}")
    if len(x) < minimum or len(y) < minimum:
        raise ValueError(f"need at least {minimum} samples on each side, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    return x, y


# -- MMD ------------------------------------------------------------------------------------------
def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance between distinct points of ``z``."""
    distances = np.sqrt(_squared_distances(z))
    upper = distances[np.triu_indices(len(z), k=1)]
    positive = upper[upper > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def _squared_distances(z: np.ndarray) -> np.ndarray:
    sq = (z * z).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)


def _mmd2_weighted(kernel: np.ndarray, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each row of the multiplicity matrices ``wx``/``wy`` (k, N) over the pooled
    sample: pairs of the same pooled point (a point with itself, or a bootstrap duplicate) are left out."""
    diagonal = np.diag(kernel)

    def within(w: np.ndarray) -> np.ndarray:
        total = ((w @ kernel) * w).sum(axis=1) - (w * w * diagonal).sum(axis=1)
        pairs = w.sum(axis=1) ** 2 - (w * w).sum(axis=1)
        return total / pairs

    between = ((wx @ kernel) * wy).sum(axis=1) / (wx.sum(axis=1) * wy.sum(axis=1))
    return within(wx) + within(wy) - 2.0 * between


def mmd(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, permutations: int = 200,
        bootstraps: int = 200) -> Result:
    """Unbiased MMD² (RBF kernel, median-heuristic bandwidth), permutation p-value, bootstrap interval."""
    x, y = _check(x, y, 2)
    z = np.concatenate([x, y])
    n, total = len(x), len(z)
    bandwidth = median_bandwidth(z)
    kernel = np.exp(-_squared_distances(z) / (2.0 * bandwidth ** 2))
    is_x = np.zeros((1, total))
    is_x[0, :n] = 1.0
    value = float(_mmd2_weighted(kernel, is_x, 1.0 - is_x)[0])
    # permutations: random relabelling of the pooled sample (n of them labelled x)
    order = np.argsort(rng.random((permutations, total)), axis=1)
    wx = np.zeros((permutations, total))
    np.put_along_axis(wx, order[:, :n], 1.0, axis=1)
    null = _mmd2_weighted(kernel, wx, 1.0 - wx)
    p_value = float((1 + np.sum(null >= value)) / (1 + permutations))
    # bootstrap: resample each side with replacement (multiplicities)
    bx = np.zeros((bootstraps, total))
    by = np.zeros((bootstraps, total))
    rows = np.arange(bootstraps)[:, None]
    np.add.at(bx, (rows, rng.integers(0, n, (bootstraps, n))), 1.0)
    np.add.at(by, (rows, n + rng.integers(0, total - n, (bootstraps, total - n))), 1.0)
    low, high = _interval(_mmd2_weighted(kernel, bx, by))
    return Result(value, low, high, p_value, n, total - n)


# -- classifier two-sample test ---------------------------------------------------------------------
def fit_linear_probe(features: np.ndarray, labels: np.ndarray, *, l2: float = 1e-2, steps: int = 100) -> tuple:
    """L2-regularised logistic regression on standardised features (torch L-BFGS, float64);
    returns ``(mean, scale, weights, bias)``."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale[scale == 0] = 1.0
    inputs = torch.from_numpy((features - mean) / scale)
    target = torch.from_numpy(labels.astype(np.float64))
    weights = torch.zeros(inputs.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(inputs @ weights + bias, target)
        loss = loss + l2 * (weights * weights).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return mean, scale, weights.detach().numpy(), float(bias.detach())


def probe_scores(probe: tuple, features: np.ndarray) -> np.ndarray:
    mean, scale, weights, bias = probe
    return (features - mean) / scale @ weights + bias


def auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count half) of ``scores`` (..., N) against boolean ``labels`` (..., N)."""
    scores, labels = np.atleast_2d(scores), np.atleast_2d(labels).astype(bool)
    ranks = _average_ranks(scores)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    rank_sum = (ranks * labels).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """Row-wise ranks 1..N, ties given their average rank."""
    order = np.argsort(scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    ranks = np.empty_like(scores, dtype=np.float64)
    for row in range(scores.shape[0]):
        values = sorted_scores[row]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        ends = np.r_[starts[1:], len(values)]
        average = (starts + ends + 1) / 2.0
        ranks[row, order[row]] = np.repeat(average, ends - starts)
    return ranks


def classifier_test(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, bootstraps: int = 200,
                    l2: float = 1e-2) -> Result:
    """Held-out AUC of a linear probe telling ``x`` from ``y`` (0.5: indistinguishable)."""
    x, y = _check(x, y, 4)
    features = np.concatenate([x, y])
    labels = np.r_[np.zeros(len(x), bool), np.ones(len(y), bool)]
    # stratified random halves: train on one, score on the other
    held = np.zeros(len(labels), bool)
    for side in (np.flatnonzero(~labels), np.flatnonzero(labels)):
        held[rng.permutation(side)[: len(side) // 2]] = True
    probe = fit_linear_probe(features[~held], labels[~held], l2=l2)
    scores, truth = probe_scores(probe, features[held]), labels[held]
    value = float(auc(scores, truth)[0])
    positives, negatives = int(truth.sum()), int((~truth).sum())
    # under H0 the held-out scores are exchangeable: AUC ~ Mann-Whitney U / (n1 n0) (one-sided, AUC > 0.5)
    sd = math.sqrt((positives + negatives + 1) / (12.0 * positives * negatives))
    p_value = float(0.5 * math.erfc((value - 0.5) / sd / math.sqrt(2)))
    draws = _stratified_draws(truth, bootstraps, rng)
    low, high = _interval(auc(scores[draws], truth[draws]))
    return Result(value, low, high, p_value, len(x), len(y))


def _stratified_draws(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` bootstrap index rows resampling each class of ``labels`` within itself."""
    parts = [side[rng.integers(0, len(side), (count, len(side)))]
             for side in (np.flatnonzero(~labels), np.flatnonzero(labels))]
    return np.concatenate(parts, axis=1)


# -- Fréchet distance -------------------------------------------------------------------------------
def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """``|mu_x - mu_y|² + tr(S_x + S_y - 2 (S_x^½ S_y S_x^½)^½)`` of the two Gaussian fits.

    The eigenvalues of ``S_x^½ S_y S_x^½`` are those of ``L^T S_y L`` for ``S_x = L L^T`` (both are
    similar to ``S_x S_y``): a Cholesky factor and one symmetric eigenvalue solve. ``S_x`` gets a
    jitter of 1e-10 of its mean variance so that a rank-deficient one (fewer chips than dimensions)
    still factorises."""
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    jitter = 1e-10 * max(float(np.trace(cov_x)) / len(cov_x), 1e-300)
    factor = np.linalg.cholesky(cov_x + jitter * np.eye(len(cov_x)))
    cross = np.linalg.eigvalsh(factor.T @ cov_y @ factor)
    trace = np.trace(cov_x) + np.trace(cov_y) - 2.0 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mean_x - mean_y) ** 2).sum() + max(trace, 0.0))


def frechet(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, bootstraps: int = 200) -> Result:
    """Fréchet distance with a bootstrap interval (each side resampled with replacement)."""
    x, y = _check(x, y, 2)
    value = frechet_distance(x, y)
    draws = np.array([frechet_distance(x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))])
                      for _ in range(bootstraps)])
    # resamples hold duplicates, which bias the plug-in estimate further upwards: shift them back by
    # their mean bias so that the interval describes the spread around ``value``
    low, high = _interval(draws - (draws.mean() - value))
    return Result(value, max(low, 0.0), high, None, len(x), len(y))


STATISTICS = {"mmd2": mmd, "auc": classifier_test, "frechet": frechet}
