"""Chip files the tests write themselves: a GeoTIFF with band names, and a copy of a sample region with an
empty folder for one more dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from shard_tools.inventory import RegionInventory, scan_region


def write_tif(path: Path, array: np.ndarray, names, bounds=(0.0, 0.0, 1.0, 1.0)) -> None:
    """``array`` (bands, H, W) as an EPSG:4326 GeoTIFF over ``bounds`` (west, south, east, north), bands named."""
    west, south, east, north = bounds
    transform = Affine((east - west) / array.shape[2], 0, west, 0, -(north - south) / array.shape[1], north)
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                       dtype=array.dtype, crs="EPSG:4326", transform=transform) as dataset:
        dataset.write(array)
        for index, name in enumerate(names, start=1):
            dataset.set_band_description(index, name)


def region_with_folder(sample_chips: Path, tmp_path: Path, folder: str, region: str = "pakin"
                       ) -> tuple[Path, RegionInventory, Path]:
    """(chip tree root, inventory, new empty dataset folder) of a copy of ``region`` of the sample."""
    chips = tmp_path / "chips"
    shutil.copytree(sample_chips / region, chips / region)
    inventory = scan_region(chips / region)
    target = chips / region / inventory.stem / folder
    target.mkdir()
    return chips, inventory, target
