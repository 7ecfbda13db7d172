"""Statistical validity of m3leo_hf.shift on synthetic embeddings (fixed seeds: deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from m3leo_hf.shift import stats, terrain

ALPHA = 0.05


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: BLAS and torch threads only contend on a shared machine (4x slower at load 10)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def test_permutation_test_has_its_nominal_level_without_shift():
    rng = np.random.default_rng(0)
    repetitions, n, d = 200, 50, 4
    rejected = sum(stats.mmd(rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng, permutations=100,
                             bootstraps=1).p_value < ALPHA for _ in range(repetitions))
    assert 0.02 <= rejected / repetitions <= 0.08, rejected


def test_permutation_test_detects_a_half_sd_mean_shift():
    """n = 200 chips per region, d = 4, the mean moved by 0.5 SD along one axis."""
    rng = np.random.default_rng(1)
    repetitions, n, d = 100, 200, 4
    detected = 0
    for _ in range(repetitions):
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        y[:, 0] += 0.5
        detected += stats.mmd(x, y, rng, permutations=100, bootstraps=1).p_value < ALPHA
    assert detected / repetitions >= 0.95, detected


def test_classifier_test_null_level_and_power():
    rng = np.random.default_rng(2)
    null = [stats.classifier_test(rng.normal(size=(100, 4)), rng.normal(size=(100, 4)), rng, bootstraps=1).p_value
            for _ in range(100)]
    assert np.mean(np.array(null) < ALPHA) <= 0.1
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + np.array([0.5, 0, 0, 0])
    result = stats.classifier_test(x, y, rng, bootstraps=200)
    assert result.p_value < 0.001 and result.low < result.value < result.high and result.value > 0.55


def test_auc_counts_pairs_with_ties_as_half():
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.3])
    labels = np.array([False, True, False, True, True])
    positive, negative = scores[labels], scores[~labels]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in positive for q in negative])
    assert stats.auc(scores, labels)[0] == brute


def test_frechet_distance_matches_the_gaussian_formula():
    rng = np.random.default_rng(3)
    d = 3
    x = rng.normal(size=(20000, d))
    y = 2 * rng.normal(size=(20000, d)) + 1.0
    # |1|^2 d + tr(I + 4I - 2 * 2I) = d + d
    assert abs(stats.frechet_distance(x, y) - 2 * d) < 0.2
    result = stats.frechet(x[:500], y[:500], rng, bootstraps=100)
    assert result.low <= 2 * d <= result.high


def test_mmd_interval_and_errors():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(80, 3)), rng.normal(size=(80, 3)) + 1.0
    result = stats.mmd(x, y, rng, permutations=50, bootstraps=100)
    assert result.low < result.value < result.high and result.p_value == 1 / 51
    for bad in (np.full((5, 3), np.nan), np.zeros((1, 3)), np.zeros((5, 2))):
        try:
            stats.mmd(bad, y, rng)
        except ValueError as error:
            assert "samples" in str(error) or "NaN" in str(error) or "same d" in str(error)
        else:
            raise AssertionError(f"no error for {bad.shape}")


def _terrain(rng: np.random.Generator, n: int, alpha: np.ndarray) -> np.ndarray:
    fractions = rng.dirichlet(alpha, n)
    return np.column_stack([fractions, rng.normal(300, 100, n), rng.gamma(2, 2, n)])


def _embedding(rng: np.random.Generator, covariates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The same conditional distribution in every region: a fixed function of the terrain plus noise."""
    z = np.column_stack([covariates[:, :11] * 4, (covariates[:, 11] - 300) / 100, (covariates[:, 12] - 4) / 3])
    return z @ weights + rng.normal(size=(len(covariates), weights.shape[1]))


def test_a_shift_made_only_by_terrain_vanishes_after_matching():
    """Two regions with different land-cover mixes (tree cover vs grassland dominated) and the same
    embedding distribution given the terrain: significant raw, not after nearest-neighbour or strata
    matching, with the covariates balanced."""
    rng = np.random.default_rng(5)
    weights = rng.normal(size=(13, 8))
    alpha_a, alpha_b = np.ones(11), np.ones(11)
    alpha_a[0], alpha_b[2] = 3.0, 3.0
    repetitions, n = 10, 500
    raw, matched = [], {"nearest": [], "strata": []}
    for _ in range(repetitions):
        ta, tb = _terrain(rng, n, alpha_a), _terrain(rng, n, alpha_b)
        xa, xb = _embedding(rng, ta, weights), _embedding(rng, tb, weights)
        raw.append(stats.mmd(xa, xb, rng, permutations=100, bootstraps=1).p_value)
        for name, match in terrain.MATCHINGS.items():
            matching = match(ta, tb, rng)
            assert len(matching.x) == len(matching.y) >= 100
            assert abs(matching.smd_before["wc_tree_cover"]) > 1.0
            # about 130 matched pairs: an SMD's sampling SD is then about sqrt(2 / 130) = 0.12
            driver = max(abs(matching.smd_after[c]) for c in ("wc_tree_cover", "wc_grassland"))
            assert driver < 0.2 and matching.summary(n, n)["max_abs_smd_after"] < 0.3, matching.smd_after
            matched[name].append(stats.mmd(xa[matching.x], xb[matching.y], rng, permutations=100,
                                           bootstraps=1).p_value)
    assert all(p < 0.01 for p in raw), raw
    for name, p_values in matched.items():
        assert np.mean(np.array(p_values) < ALPHA) <= 0.2, (name, p_values)


def test_standardised_mean_differences():
    x = np.array([[0.0, 1.0], [2.0, 1.0]])
    y = np.array([[1.0, 1.0], [3.0, 1.0]])
    smd = terrain.standardised_mean_differences(x, y, names=("a", "b"))
    assert smd == {"a": -1.0, "b": 0.0}
