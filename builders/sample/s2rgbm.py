"""s2rgbm-YYYY: Sentinel-2 monthly RGB composites with cloudy and empty months (spec §2.5)."""

from __future__ import annotations

import numpy as np

from builders.sample.aoi import Aoi, looks, phenology
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene, at_grid, latent


def s2rgbm(aoi: Aoi, chip: SampleChip, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.gee_shape
    cover = scene.cover(shape)
    dormant, peak = looks(cover, "dormant", "peak")
    empty = {m for m in aoi.cloudy_months if rng.random() < 0.5} or {int(rng.choice(aoi.cloudy_months))}
    clouds = at_grid(latent(rng, 12), shape)
    months = []
    for month in range(1, 13):
        p = phenology(aoi, month)
        rgb = (1 - p) * dormant + p * peak + rng.standard_normal((*shape, 3), dtype="float32") * 4
        rgb = np.clip(rgb, 1, 255).astype("uint8")
        if month in empty:
            rgb[:] = 0
        elif month in aoi.cloudy_months:
            rgb[clouds[month - 1] > 1.0] = 0
        months.append(np.moveaxis(rgb, -1, 0))
    return np.concatenate(months)
