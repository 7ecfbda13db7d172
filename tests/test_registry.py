"""A new GEE-style GeoTIFF modality is declared, not coded: register it and build, workers included."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine

from builders import MODALITIES, Modality, get_modality, register
from shard_tools.build import build
from shard_tools.inventory import scan_region
from shard_tools.verify import verify_region
from tests.conftest import CHIPS_PER_SHARD

FIRECCI = Modality(
    name="firecci51", folder="firecci51", container="geotiff", dtype="int16", nodata=0,
    band_names=tuple(f"{y}_{b}" for y in range(2016, 2021) for b in ("BurnDate", "ConfidenceLevel", "LandCover")),
    dates={"years": list(range(2016, 2021))}, description="ESA CCI FireCCI 5.1 burned area, 2016-2020",
)


@pytest.fixture
def firecci():
    register(FIRECCI)
    yield FIRECCI
    MODALITIES.pop(FIRECCI.name)


def write_chip(path: Path, array: np.ndarray, bounds: tuple[float, float, float, float]) -> None:
    west, south, east, north = bounds
    transform = Affine((east - west) / array.shape[2], 0, west, 0, -(north - south) / array.shape[1], north)
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                       dtype=array.dtype, crs="EPSG:4326", transform=transform) as dataset:
        dataset.write(array)
        for index, name in enumerate(FIRECCI.band_names, start=1):
            dataset.set_band_description(index, name)


def test_a_declared_modality_builds_with_worker_processes(firecci, sample_chips, tmp_path):
    chips = tmp_path / "chips"
    shutil.copytree(sample_chips / "pakin", chips / "pakin")
    inventory = scan_region(chips / "pakin")
    folder = chips / "pakin" / inventory.stem / firecci.folder
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    burned, unburned = inventory.chips[:3], inventory.chips[3]
    for chip in burned:
        written[chip.chip_id] = rng.integers(-1, 366, size=(15, 20, 20), dtype=np.int16)
        write_chip(folder / f"{chip.chip_id}.tif", written[chip.chip_id], (chip.west, chip.south, chip.east, chip.north))
    (folder / f"{unburned.chip_id}.tif.nodata").write_bytes(b"")  # the real data's no-fire marker

    build(chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD, workers=2)

    region = tmp_path / "out" / "pakin"
    assert verify_region(region) == []
    rows = {r["chip_id"]: r for r in pq.read_table(region / "metadata" / "firecci51.parquet").to_pylist()}
    assert sorted(rows) == sorted(c.chip_id for c in inventory.chips)
    assert rows[unburned.chip_id]["missing_reason"].startswith("marker")
    for chip_id, array in written.items():
        data = (region / rows[chip_id]["shard"]).read_bytes()
        member = next(m for m in rows[chip_id]["members"] if m["name"] == "firecci51.npy")
        got = np.load(io.BytesIO(data[member["offset"]:member["offset"] + member["size"]]))
        assert got.dtype == np.int16 and np.array_equal(got, array)
    with tarfile.open(region / rows[burned[0].chip_id]["shard"]) as tar:
        assert f"{burned[0].chip_id}.firecci51.npy" in tar.getnames()


def test_registry_refuses_clashing_or_badly_named_modalities():
    with pytest.raises(ValueError, match="already registered"):
        register(get_modality("s1grd"))
    with pytest.raises(ValueError, match=r"folder\(s\) \['strmdem'\] already registered"):
        register(Modality(name="dem2", folder="strmdem", container="geotiff", description="clash"))
    with pytest.raises(ValueError, match="lower-case"):
        register(Modality(name="Fire.CCI", folder="fire", container="geotiff", description="dots break keys"))
    with pytest.raises(KeyError, match="unknown modality 'nope'"):
        get_modality("nope")
