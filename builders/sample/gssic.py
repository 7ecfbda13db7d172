"""gssic: seasonal coherence, amplitude and decay model as sartiles writes them, file season order (spec §2.7)."""

from __future__ import annotations

from pathlib import Path

import h5netcdf
import numpy as np

from builders.sample.aoi import looks, season_swing
from builders.sample.files import WKT_4326, geotransform, holes, lat_lon_coords, nc_var, strings
from builders.sample.grid import SampleChip
from builders.sample.landscape import Scene


GSSIC_SEASONS = ("summer", "fall", "winter", "spring")  # file order


def decay_coherence(rho: np.ndarray, tau: np.ndarray, days: float) -> np.ndarray:
    """GSSIC exponential decay model: (1 - rho) * exp(-t / tau) + rho."""
    return (1 - rho) * np.exp(-days / tau) + rho


def dn(db: np.ndarray) -> np.ndarray:
    """Amplitude digital numbers, assuming dB = 20 log10(DN) - 83 (unverified; DN 8000 ~ -5 dB VV)."""
    return 10 ** ((db + 83) / 20)


def gssic(path: Path, chip: SampleChip, scene: Scene, rng: np.random.Generator) -> None:
    shape = chip.sar_shape
    cover = scene.cover(shape)
    vv, gap, swing = looks(cover, "vv_db", "vh_gap", "s1_seasonal")
    rho, tau = looks(cover, "rho", "tau")
    seasons = len(GSSIC_SEASONS)
    amplitude = np.empty((seasons, 2, *shape), "float32")
    coherence = np.empty((seasons, 4, *shape), "float32")
    decay = np.empty((seasons, 3, *shape), "float32")
    for s, season in enumerate(GSSIC_SEASONS):
        db = vv + swing * season_swing(season) + rng.normal(0, 0.5, shape)
        amplitude[s] = dn(np.stack([db, db - gap]))
        r = np.clip(rho + rng.normal(0, 0.02, shape), 0.01, 0.95)
        t = np.clip(tau * rng.uniform(0.8, 1.2, shape), 1, None)
        for k, days in enumerate((12, 24, 36, 48)):
            coherence[s, k] = np.clip(100 * decay_coherence(r, t, days) + rng.normal(0, 3, shape), 0, 100)
        decay[s] = np.stack([r, t, rng.uniform(0.01, 0.08, shape)])
    gaps = holes(rng, shape, 2)
    season = int(rng.integers(seasons))
    for layers in (amplitude, coherence, decay):
        layers[season][:, gaps] = np.nan
    inc = np.broadcast_to(np.linspace(33, 43, shape[1]) + rng.normal(0, 0.05), shape)
    lsmap = np.where(rng.random(shape) < 0.01, 2, 1)
    geometry = np.stack([inc, lsmap]).astype("float32")

    with h5netcdf.File(path, "w") as nc:
        nc.dimensions = {"season": seasons, "polarimetry": 2, "deltadays": 4, "param": 3, "feature": 2}
        lat_lon_coords(nc, chip, shape, ("y", "x"))
        nc_var(nc, "season", ("season",), strings(GSSIC_SEASONS))
        nc_var(nc, "polarimetry", ("polarimetry",), strings(("vv", "vh")))
        nc_var(nc, "deltadays", ("deltadays",), np.array([12, 24, 36, 48], "int64"), units="days")
        nc_var(nc, "param", ("param",), strings(("rho", "tau", "rmse")))
        nc_var(nc, "feature", ("feature",), strings(("inc", "lsmap")))
        nc_var(nc, "spatial_ref", (), np.array(0, "int64"), crs_wkt=WKT_4326, spatial_ref=WKT_4326,
             grid_mapping_name="latitude_longitude", GeoTransform=geotransform(chip, shape))
        nan = np.float32(np.nan)
        grid = {"grid_mapping": "spatial_ref"}
        nc_var(nc, "amplitude", ("season", "polarimetry", "y", "x"), amplitude, nan, units="DN", **grid)
        nc_var(nc, "coherence", ("season", "deltadays", "y", "x"), coherence, nan, units="percent", **grid)
        nc_var(nc, "decaymodel", ("season", "param", "y", "x"), decay, nan, **grid)
        nc_var(nc, "geometry", ("feature", "y", "x"), geometry, nan, **grid)
