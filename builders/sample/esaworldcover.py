"""esaworldcover-YYYY: class codes with a few no-data pixels (spec §2.9)."""

from __future__ import annotations

import numpy as np

from builders.sample.aoi import Aoi
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


def esaworldcover(aoi: Aoi, chip: SampleChip, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    cover = scene.cover(chip.gee_shape)
    flat = cover.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 2000), replace=False)] = 0
    return cover[None]
