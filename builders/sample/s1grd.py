"""s1grd-YYYY: Sentinel-1 GRD seasonal composites, uint16 holding wrapped int16 dB (spec §2.3)."""

from __future__ import annotations

import numpy as np

from builders.registry import SEASONS
from builders.sample.aoi import Aoi, looks, season_swing
from builders.sample.files import to_wrapped_uint16
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


def s1grd(aoi: Aoi, chip: SampleChip, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.gee_shape
    cover = scene.cover(shape)
    vv, gap, swing = looks(cover, "vv_db", "vh_gap", "s1_seasonal")
    bands = []
    for season in SEASONS:
        for pd in ("vvasc", "vvdes", "vhasc", "vhdes"):
            pol, direction = pd[:2], pd[2:]
            if chip.east and f"{season}_{direction}" == aoi.orbit_gap:
                bands.append(np.zeros(shape, "uint16"))
                continue
            db = vv + swing * season_swing(season) + (0.6 if direction == "asc" else -0.6)
            if pol == "vh":
                db = db - gap
            db = db + rng.standard_normal(shape, dtype="float32") * 1.1
            bands.append(to_wrapped_uint16(np.clip(db, -27, 6)))
    return np.stack(bands)
