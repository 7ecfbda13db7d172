"""lcci-YYYY: ESA CCI Land Cover LCCS classes on a ~300 m grid (layout inferred, spec §2.15)."""

from __future__ import annotations

from pathlib import Path

import h5netcdf
import numpy as np

from builders.sample.files import lat_lon_coords, nc_var
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


LCCS_CLASSES = {10: 10, 20: 11, 30: 130, 40: 10, 50: 190, 60: 200, 70: 220, 80: 210, 90: 180, 95: 170, 100: 140}


def lcci(path: Path, chip: SampleChip, scene: Scene) -> None:
    """ESA CCI Land Cover (LCCS codes, ~300 m) cut from the global NetCDF by bounding box."""
    shape = (max(2, chip.coarse_shape[0] // 3), max(2, chip.coarse_shape[1] // 3))
    cover = scene.cover(shape)
    lccs = np.vectorize(LCCS_CLASSES.get, otypes=["uint8"])(cover)
    with h5netcdf.File(path, "w") as nc:
        lat_lon_coords(nc, chip, shape, ("lat", "lon"))
        nc_var(nc, "lccs_class", ("lat", "lon"), lccs, np.uint8(0), long_name="Land cover class defined in LCCS",
             flag_meanings="no_data cropland_rainfed ... water snow_and_ice")
