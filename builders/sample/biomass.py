"""biomass-YYYY: ESA CCI above-ground biomass and its standard error, NaN over water (spec §2.10)."""

from __future__ import annotations

from pathlib import Path

import h5netcdf
import numpy as np

from builders.sample.aoi import looks
from builders.sample.files import lat_lon_coords, nc_var
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


def biomass(path: Path, chip: SampleChip, scene: Scene, rng: np.random.Generator) -> None:
    shape = chip.coarse_shape
    cover = scene.cover(shape)
    agb = np.clip(looks(cover, "agb")[0] * rng.lognormal(0, 0.3, shape), 0, None).astype("float32")
    agb_se = (agb * rng.uniform(0.2, 0.5, shape) + 5).astype("float32")
    invalid = cover == 80
    agb[invalid] = agb_se[invalid] = np.nan
    with h5netcdf.File(path, "w") as nc:
        lat_lon_coords(nc, chip, shape, ("lat", "lon"))
        nan = np.float32(np.nan)
        nc_var(nc, "agb", ("lat", "lon"), agb, nan, units="Mg/ha", long_name="above-ground biomass")
        nc_var(nc, "agb_se", ("lat", "lon"), agb_se, nan, units="Mg/ha",
             long_name="above-ground biomass standard error")
