"""Writing GeoTIFFs as geetiles does (band descriptions, EPSG:4326) and NetCDF variables as xarray/sartiles do."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import rasterio
from rasterio.transform import Affine

from builders.registry import get_modality
from builders.sample.grid import SampleChip


WKT_4326 = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],'
    'AUTHORITY["EPSG","4326"]]'
)


def to_wrapped_uint16(values: np.ndarray) -> np.ndarray:
    """Truncate to int16 and reinterpret as uint16, as numpy's float->uint16 cast does on x86."""
    return values.astype("int16").view("uint16")


def _from_bounds(bounds: tuple[float, ...], width: int, height: int) -> Affine:
    """``rasterio.transform.from_bounds`` without its affine PendingDeprecationWarning."""
    west, south, east, north = bounds
    return Affine((east - west) / width, 0.0, west, 0.0, -(north - south) / height, north)


def write_geotiff(path: Path, name: str, data: np.ndarray, bounds: tuple[float, ...], **options) -> None:
    modality = get_modality(name)
    count, h, w = data.shape
    assert data.dtype == np.dtype(modality.dtype) and count == len(modality.band_names), name
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=count, dtype=modality.dtype,
                       crs="EPSG:4326", transform=_from_bounds(bounds, w, h), **options) as dst:
        dst.write(data)
        for band, description in enumerate(modality.band_names, start=1):
            dst.set_band_description(band, description)


def lat_lon(chip: SampleChip, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre latitudes (descending) and longitudes of a native grid over the chip envelope."""
    minx, miny, maxx, maxy = chip.bounds
    h, w = shape
    lat = maxy - (np.arange(h) + 0.5) * (maxy - miny) / h
    lon = minx + (np.arange(w) + 0.5) * (maxx - minx) / w
    return lat, lon


def geotransform(chip: SampleChip, shape: tuple[int, int]) -> str:
    minx, miny, maxx, maxy = chip.bounds
    return f"{minx!r} {(maxx - minx) / shape[1]!r} 0.0 {maxy!r} 0.0 {-(maxy - miny) / shape[0]!r}"


def strings(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def nc_var(group, name: str, dims: tuple[str, ...], data: np.ndarray, fill=None, **attrs) -> None:
    """Create a variable (string arrays become variable-length strings) and set its attributes."""
    if data.dtype == object:
        var = group.create_variable(name, dims, dtype=h5py.string_dtype())
        var[...] = data
    else:
        var = group.create_variable(name, dims, data=data, fillvalue=fill)
    for key, value in attrs.items():
        var.attrs[key] = value


def lat_lon_coords(group, chip: SampleChip, shape: tuple[int, int], names: tuple[str, str]) -> None:
    lat, lon = lat_lon(chip, shape)
    group.dimensions[names[0]], group.dimensions[names[1]] = shape
    nc_var(group, names[0], (names[0],), lat, units="degrees_north", standard_name="latitude", axis="Y")
    nc_var(group, names[1], (names[1],), lon, units="degrees_east", standard_name="longitude", axis="X")


def holes(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """Boolean mask of ``count`` small rectangular gaps."""
    mask = np.zeros(shape, bool)
    for _ in range(count):
        i, j = rng.integers(shape[0]), rng.integers(shape[1])
        mask[i:i + 1 + shape[0] // 8, j:j + 1 + shape[1] // 8] = True
    return mask
