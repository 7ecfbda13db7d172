"""firecci51: FireCCI 5.1 burned area, only chips that burned (others get a .tif.nodata marker, spec §2.15)."""

from __future__ import annotations

import numpy as np

from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


def firecci(chip: SampleChip, scene: Scene, rng: np.random.Generator) -> np.ndarray | None:
    """FireCCI 5.1 (2016-2020 x BurnDate, ConfidenceLevel, LandCover, int16) or None: a chip with no burned pixel."""
    shape = chip.gee_shape
    if rng.random() < 0.5:
        return None
    cover = scene.cover(shape)
    bands = []
    for _ in range(2016, 2021):
        burned = (rng.random(shape) < 0.02) & np.isin(cover, (20, 30, 40))
        day = np.where(burned, rng.integers(1, 366, shape), 0).astype("int16")
        confidence = np.where(burned, rng.integers(50, 101, shape), 0).astype("int16")
        landcover = np.where(burned, cover.astype("int16"), 0).astype("int16")
        bands += [day, confidence, landcover]
    return np.stack(bands)
