"""GUNW windows and months: grouped NetCDF with a variable number of date pairs (spec §2.8)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import h5netcdf
import numpy as np

from builders.sample.aoi import Aoi, looks
from builders.sample.files import WKT_4326, geotransform, holes, lat_lon_coords, nc_var, strings
from builders.sample.grid import SampleChip, rng_for
from builders.sample.gssic import decay_coherence, dn
from builders.sample.landscape import Scene, at_grid, latent


GUNW_LAYOUTS = ("per-pair", "sartiles")
GUNW_WINDOW = (dt.date(2020, 1, 1), dt.date(2020, 3, 31))


WAVELENGTH_M = 0.05546576


def datepairs(aoi: Aoi, rng: np.random.Generator, seed: int, window: tuple[dt.date, dt.date]
               ) -> tuple[list[str], list[int]]:
    """Pairs sharing one reference (later) date inside the window, labelled later_earlier, sorted."""
    first = window[0] + dt.timedelta(days=int(rng_for(seed, aoi.key, "track").integers(12)))
    reference = first + dt.timedelta(days=12 * int(rng.integers(7)))
    count = int(rng.integers(2, 7))
    baselines = sorted(int(d) for d in rng.choice([6, 12, 18, 24, 36, 48, 60, 72, 96, 120, 144, 168], count,
                                                  replace=False))
    pairs = sorted((f"{reference:%Y%m%d}_{reference - dt.timedelta(days=d):%Y%m%d}", d) for d in baselines)
    return [p for p, _ in pairs], [d for _, d in pairs]


def gunw(path: Path, aoi: Aoi, chip: SampleChip, scene: Scene, rng: np.random.Generator, seed: int,
         window: tuple[dt.date, dt.date] = GUNW_WINDOW, layout: str = "per-pair") -> None:
    """``per-pair``: pairs in descending-baseline order, ``extraMetaData/deltadays`` along ``datepair``.
    ``sartiles`` (as rramosp/sartiles gunw.py writes them): pairs in granule-query order (unsorted), and
    ``deltadays`` its own dimension holding the distinct baselines, sorted, uint8."""
    shape = chip.sar_shape
    labels, deltadays = datepairs(aoi, rng, seed, window)
    if layout == "sartiles":
        order = rng_for(seed, chip.chip_id, "gunw-query-order").permutation(len(labels))
        labels, deltadays = [labels[i] for i in order], [deltadays[i] for i in order]
    n = len(labels)
    cover = scene.cover(shape)
    rho, tau = looks(cover, "rho", "tau")
    deformation = at_grid(latent(rng, 1)[0], shape)
    phase = np.empty((n, *shape), "float32")
    coherence = np.empty((n, *shape), "float32")
    for k, days in enumerate(deltadays):
        atmosphere = at_grid(latent(rng, 1)[0], shape)
        phase[k] = deformation * days / 12 + 3 * atmosphere + rng.uniform(-5, 5)
        coherence[k] = np.clip(decay_coherence(rho, tau, days) + rng.normal(0, 0.05, shape), 0, 1)
    amplitude = (dn(looks(cover, "vv_db")[0] + rng.normal(0, 1.5, (n, *shape))) / 10).astype("float32")
    invalid = (cover == 80) | holes(rng, shape, 1)
    for layers in (phase, coherence, amplitude):
        layers[:, invalid] = np.nan
    components = np.where(deformation > 0, 1, 2).astype("int16") * (coherence >= 0.2)
    components[:, invalid] = -1
    direction = "A" if rng.random() < 0.7 else "D"
    incidence = rng.uniform(30, 44)

    with h5netcdf.File(path, "w") as nc:
        data = nc.create_group("science/grids/data")
        data.dimensions = {"datepair": n}
        nc_var(data, "datepair", ("datepair",), strings(labels))
        lat_lon_coords(data, chip, shape, ("latitude", "longitude"))
        dims = ("datepair", "latitude", "longitude")
        nan = np.float32(np.nan)
        nc_var(data, "unwrappedPhase", dims, phase, nan, units="radians", grid_mapping="crs")
        nc_var(data, "coherence", dims, coherence, nan, units="1", grid_mapping="crs")
        nc_var(data, "connectedComponents", dims, components, np.int16(-1), grid_mapping="crs")
        nc_var(data, "amplitude", dims, amplitude, nan, units="1", grid_mapping="crs")
        nc_var(data, "crs", (), np.array(0, "int32"), grid_mapping_name="latitude_longitude", crs_wkt=WKT_4326,
             spatial_ref=WKT_4326, semi_major_axis=6378137.0, inverse_flattening=298.257223563,
             GeoTransform=geotransform(chip, shape))
        geometry = _datepair_group(nc, "science/grids/imagingGeometry", labels)
        perpendicular = rng.uniform(-150, 150, n)
        angles = {
            "perpendicularBaseline": (perpendicular, "m"), "parallelBaseline": (perpendicular * 0.4, "m"),
            "incidenceAngle": (incidence + rng.normal(0, 0.01, n), "degrees"),
            "lookAngle": (incidence - 3.6 + rng.normal(0, 0.01, n), "degrees"),
            "azimuthAngle": (np.full(n, -79.0 if direction == "A" else -101.0), "degrees"),
        }
        for name, (values, units) in angles.items():
            nc_var(geometry, name, ("datepair",), values.astype("float32"), units=units)
        radar = _datepair_group(nc, "science/radarMetaData", labels)
        nc_var(radar, "wavelength", ("datepair",), np.full(n, WAVELENGTH_M), units="m")
        extra = _datepair_group(nc, "science/extraMetaData", labels)
        if layout == "sartiles":
            distinct = sorted(set(deltadays))
            extra.dimensions["deltadays"] = len(distinct)
            nc_var(extra, "deltadays", ("deltadays",), np.array(distinct, "uint8"), units="days")
        else:
            nc_var(extra, "deltadays", ("datepair",), np.array(deltadays, "uint8"), units="days")
        nc_var(extra, "direction", ("datepair",), strings([direction] * n))


def _datepair_group(nc: h5netcdf.File, name: str, labels: list[str]):
    group = nc.create_group(name)
    group.dimensions = {"datepair": len(labels)}
    nc_var(group, "datepair", ("datepair",), strings(labels))
    return group
