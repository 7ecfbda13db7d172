"""srtmdem: elevation (negative values wrapped in uint16) and slope (spec §2.13)."""

from __future__ import annotations

import math

import numpy as np

from builders.sample.aoi import M_PER_DEG_LAT, M_PER_DEG_LON, Aoi
from builders.sample.files import to_wrapped_uint16
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


def srtmdem(aoi: Aoi, chip: SampleChip, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.gee_shape
    low, high = aoi.elevation
    ground = np.maximum(scene.relief_at(shape) + 1, 0) / 3  # flat at the lowest level (water, plains)
    elevation = low + (high - low) * ground + rng.normal(0, 0.1, shape)
    minx, miny, maxx, maxy = chip.bounds
    dy = (maxy - miny) * M_PER_DEG_LAT / shape[0]
    dx = (maxx - minx) * M_PER_DEG_LON * math.cos(math.radians((miny + maxy) / 2)) / shape[1]
    gy, gx = np.gradient(elevation, dy, dx)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    return np.stack([to_wrapped_uint16(elevation), slope.astype("uint16")])
