"""ghsbuilts-YYYY: GHS-BUILT-S built-up surface on a ~100 m grid, nodata 65535 (spec §2.11)."""

from __future__ import annotations

import numpy as np

from builders.sample.aoi import looks
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


def ghsbuilts(chip: SampleChip, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.coarse_shape
    cover = scene.cover(shape)
    built = looks(cover, "built_m2")[0] * rng.uniform(0.4, 1.6, shape)
    sprawl = rng.random(shape) < 0.1
    built[sprawl] += rng.uniform(10, 400, int(sprawl.sum()))
    values = np.clip(built, 0, 10_000).astype("uint16")
    flat = values.reshape(-1)
    flat[rng.choice(flat.size, size=min(3, flat.size), replace=False)] = 65535
    return values[None]
