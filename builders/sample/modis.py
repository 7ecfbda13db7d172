"""modis44b006veg: 250 m percent tree cover resampled to the GEE grid, water 200, fill 253 (spec §2.12)."""

from __future__ import annotations

import numpy as np

from builders.sample.aoi import Aoi, looks
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


def modis(aoi: Aoi, chip: SampleChip, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """250 m MOD44B cells resampled (nearest) to the GEE pixel grid."""
    h, w = chip.gee_shape
    cells = (18, 18)
    cover = scene.cover(cells)
    base = looks(cover, "tree_pct")[0]
    trend = rng.normal(0, 1.0)
    fill = (rng.integers(cells[0]), rng.integers(cells[1]))
    years = []
    for k in range(5):
        pct = np.clip(base + trend * k + rng.normal(0, 2.5, cells), 0, 100).astype("uint8")
        pct[cover == 80] = 200
        pct[fill] = 253
        years.append(pct)
    stack = np.stack(years)
    return stack[:, (np.arange(h) * cells[0]) // h][:, :, (np.arange(w) * cells[1]) // w]
