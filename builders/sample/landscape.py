"""A chip's latent landscape (land cover, relief), sampled consistently by every product at its own resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from builders.sample.aoi import Aoi
from builders.sample.grid import SampleChip, rng_for


LATENT = 17  # control points per side of the latent landscape fields


def _interp(n: int, points: int = LATENT) -> np.ndarray:
    """(n, points) linear-interpolation weights of ``points`` control values at n pixel centres."""
    pos = (np.arange(n) + 0.5) / n * (points - 1)
    lo = np.minimum(pos.astype(int), points - 2)
    frac = pos - lo
    weights = np.zeros((n, points))
    weights[np.arange(n), lo] = 1 - frac
    weights[np.arange(n), lo + 1] = frac
    return weights


def latent(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` smooth random control grids: a coarse octave plus a finer one (std about 1.3)."""
    coarse = rng.standard_normal((count, 5, 5))
    up = _interp(LATENT, 5)
    return (up @ coarse @ up.T) * 1.2 + 0.45 * rng.standard_normal((count, LATENT, LATENT))


def at_grid(grids: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Evaluate control grids (..., LATENT, LATENT) on a (H, W) pixel grid."""
    return (_interp(shape[0]) @ grids @ _interp(shape[1]).T).astype("float32")


@dataclass(frozen=True)
class Scene:
    """A chip's landscape, sampled consistently by every product at its own resolution."""

    codes: np.ndarray  # class codes
    scores: np.ndarray  # (classes, LATENT, LATENT)
    relief: np.ndarray  # (LATENT, LATENT)

    def cover(self, shape: tuple[int, int]) -> np.ndarray:
        return self.codes[np.argmax(at_grid(self.scores, shape), axis=0)]

    def relief_at(self, shape: tuple[int, int]) -> np.ndarray:
        return at_grid(self.relief, shape)


def scene_of(aoi: Aoi, chip: SampleChip, seed: int) -> Scene:
    rng = rng_for(seed, aoi.key, chip.chip_id, "scene")
    codes = np.array(sorted(aoi.cover), dtype="uint8")
    relief, *_ = latent(rng, 1)
    scores = latent(rng, len(codes))
    water = codes == 80
    scores[water] = 0.4 * scores[water] - 0.8 * relief  # water lies in the low ground
    bias = np.log([aoi.cover[int(c)] for c in codes]) + rng.normal(0, 0.6, len(codes))
    return Scene(codes, scores + bias[:, None, None], relief)
