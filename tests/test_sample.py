"""Tests of the embedded sample generator and the release-Parquet writer (builders.sample)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import re
from pathlib import Path

import h5netcdf
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from builders.registry import ESAWC_CODES, get_modality
from builders.sample import (
    RELEASE_SCHEMA, SampleManifest, chip_id, release_placeholder, write_release_parquet, write_sample,
)

PIXELS = 32
EXPECTED = {  # spec §1.3
    "conus": ("conus_partitions_aschips_293d95e3ee589", "_splits_60bands_angle09_60-20-20.csv"),
    "europe": ("europe_partitions_aschips_2f8bd3f01ddd5", "_splits_60bands_angle09_60-20-20.csv"),
    "pakin": ("pakin_partitions_aschips_0f26dc7030c75", "_splits_60bands_angle15_60-20-20.csv"),
}
GEE = ("s1grd", "s2rgbm", "esaworldcover", "modis", "srtmdem")
GEOTIFF = (*GEE, "ghsbuilts")
ALL = ("s1grd", "s2rgbm", "gssic", "gunw", "esaworldcover", "ghsbuilts", "biomass", "modis", "srtmdem")
GROWTH = {  # more folders of the release (spec §2.16): manifest key (config name) -> folder as the release spells it
    "s1grd-2019": "s1grd-2019", "s2rgbm-2019": "s2rgbm-2019", "biomass-2019": "biomass-2019",
    "gunw-2020-04-01-2020-06-30": "gunw-2020-04-01_2020-06-30", "gunw-2020-01": "gunw-2020-01",
    "lcci-2020": "lcci-2020", "firecci51": "firecci51",
}
GUNW_GROWTH = ("gunw-2020-04-01-2020-06-30", "gunw-2020-01")  # no GUNW in Europe


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> SampleManifest:
    return write_sample(tmp_path_factory.mktemp("chips"), pixels=PIXELS, seed=7)


@pytest.fixture(scope="module")
def release(sample, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("release")
    return out, write_release_parquet(sample.root, out, chips_per_file=3, row_group_size=2)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _present(sample: SampleManifest, modality: str):
    for region in sample.regions.values():
        for chip in region.chips.values():
            if modality in chip.present:
                yield region, chip, region.path(chip.chip_id, modality)


# ------------------------------------------------------------------------------------------ layout

def test_same_seed_gives_identical_bytes(tmp_path):
    first = write_sample(tmp_path / "a", regions=("conus", "europe"), chips_per_region=5, pixels=PIXELS, seed=1)
    write_sample(tmp_path / "b", regions=("conus", "europe"), chips_per_region=5, pixels=PIXELS, seed=1)
    other = write_sample(tmp_path / "c", regions=("conus", "europe"), chips_per_region=5, pixels=PIXELS, seed=2)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert first.regions["conus"].chip_ids == other.regions["conus"].chip_ids  # ids come from the grid
    shared = a.keys() & c.keys()
    assert all(a[k] == c[k] for k in shared if k.endswith((".csv", ".geojson")))
    assert any(a[k] != c[k] for k in shared if k.endswith((".tif", ".nc")))
    assert {Path(k).suffix for k in a} == {".geojson", ".csv", ".tif", ".nc", ".skipped", ".nodata"}  # FireCCI markers


def test_refuses_non_empty_target(sample):
    with pytest.raises(FileExistsError):
        write_sample(sample.root, regions=("conus",), chips_per_region=1, pixels=PIXELS)
    with pytest.raises(KeyError):
        write_sample(sample.root / "x", regions=("atlantis",))


def test_tree_layout_and_split_csv(sample):
    assert set(sample.regions) == set(EXPECTED)
    for aoi, (stem, suffix) in EXPECTED.items():
        region = sample.regions[aoi]
        assert region.stem == stem
        assert region.geojson == sample.root / aoi / f"{stem}.geojson"
        assert region.splits_csv == sample.root / aoi / f"{stem}{suffix}"
        assert region.data_dir == sample.root / aoi / stem
        folders = {p.name for p in region.data_dir.iterdir()}
        keys = {m for m in (*ALL, *GROWTH) if aoi != "europe" or (m != "gunw" and m not in GUNW_GROWTH)}
        expected = {GROWTH[m] if m in GROWTH else get_modality(m).folder for m in keys}
        assert folders == expected
        assert set(region.modalities) == keys
        assert {region.folder(m).name for m in region.modalities} == expected
        assert region.splits_csv.read_text().splitlines()[0] == "identifier,split"
        rows = _csv(region.splits_csv)
        assert [r["identifier"] for r in rows] == region.chip_ids
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
        assert sum(counts.values()) == len(rows) == 10
        assert counts == {"train": 6, "val": 2, "test": 2}


def test_geojson_ids_match_geometry_hash(sample):
    for region in sample.regions.values():
        collection = json.loads(region.geojson.read_text())
        assert collection["type"] == "FeatureCollection"
        features = collection["features"]
        assert [f["properties"]["identifier"] for f in features] == region.chip_ids
        for feature in features:
            ident, ring = feature["properties"]["identifier"], feature["geometry"]["coordinates"][0]
            assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1]
            assert isinstance(ident, str) and re.fullmatch(r"[0-3][0-9a-f]{12}", ident)
            xs, ys = [p[0] for p in ring], [p[1] for p in ring]
            envelope = tuple(round(v, 5) for v in (min(xs), min(ys), max(xs), max(ys)))
            digest = int(hashlib.sha256(repr(envelope).encode()).hexdigest(), 16) % 10**15
            assert ident == chip_id(ring) == format(digest, "x").zfill(13)
            area = feature["properties"]["area_km2"]
            assert isinstance(area, float)
            assert 19.5 < area < 20.6 if len(ring) == 5 else 10 < area < 19.5
            assert region.chips[ident].bounds == (min(xs), min(ys), max(xs), max(ys))
            height_m = (max(ys) - min(ys)) * 110_574
            width_m = (max(xs) - min(xs)) * 111_320 * math.cos(math.radians(sum(ys) / len(ys)))
            assert height_m == pytest.approx(4480, rel=1e-6) and width_m == pytest.approx(4480, rel=2e-3)


# ------------------------------------------------------------------------------------------ GeoTIFFs

def test_geotiffs_read_back_with_registry_dtype_and_bands(sample):
    for modality in GEOTIFF:
        spec = get_modality(modality)
        for region, chip, path in _present(sample, modality):
            with rasterio.open(path) as src:
                assert src.driver == "GTiff" and src.crs.to_epsg() == 4326
                assert src.dtypes == (spec.dtype,) * len(spec.band_names)
                assert src.descriptions == spec.band_names
                assert src.bounds == pytest.approx(chip.bounds, abs=1e-9)
                if modality == "ghsbuilts":
                    assert src.nodata == 65535 and src.profile["compress"] == "deflate"
                    assert src.shape[0] in range(PIXELS // 10 - 1, PIXELS // 10 + 2)
                    assert (src.read() == 65535).any()
                else:
                    assert src.shape == chip.shape and src.profile.get("compress") is None
                    assert all(n in (PIXELS - 1, PIXELS, PIXELS + 1) for n in chip.shape)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_geotiff_values_are_realistic(sample):
    s1 = [_read(p).view("int16") for *_, p in _present(sample, "s1grd")]
    valid = np.concatenate([a[a != 0] for a in s1])
    assert valid.min() >= -30 and valid.max() <= 8 and (valid < -15).any()
    assert any((~a.any(axis=(1, 2))).sum() == 2 for a in s1)  # one season/orbit without coverage
    s2 = [_read(p) for *_, p in _present(sample, "s2rgbm")]
    assert all(np.array([not a[3 * m:3 * m + 3].any() for m in range(12)]).any() for a in s2)
    esawc = np.concatenate([_read(p).ravel() for *_, p in _present(sample, "esaworldcover")])
    assert set(np.unique(esawc)) <= {0, *ESAWC_CODES} and (esawc == 0).any() and len(np.unique(esawc)) >= 5
    modis = np.concatenate([_read(p).ravel() for *_, p in _present(sample, "modis")])
    assert set(np.unique(modis)) <= set(range(101)) | {200, 253} and {200, 253} <= set(np.unique(modis))
    for region, _, path in _present(sample, "srtmdem"):
        elevation, slope = _read(path)
        assert slope.max() < 90
        if region.aoi == "europe":
            assert (elevation.view("int16") < 0).any() and (elevation > 60000).any()  # wrapped negatives


def test_partial_edge_chip_is_zero_outside_polygon(sample):
    for region in sample.regions.values():
        partial = [c for c in region.chips.values() if c.partial]
        assert len(partial) == 1
        chip = partial[0]
        for modality in GEE:
            data = _read(region.path(chip.chip_id, modality))
            assert not data[:, 0, -1].any()  # north-east corner is outside the AOI
            assert data[:, -PIXELS // 2:, :PIXELS // 2].any()  # south-west quarter is inside
            if modality == "esaworldcover":
                assert 0.05 < (data[0] == 0).mean() < 0.3


# ------------------------------------------------------------------------------------------- NetCDF

def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def test_gssic_layout(sample):
    found = 0
    for region, chip, path in _present(sample, "gssic"):
        with h5netcdf.File(path, "r") as nc:
            assert _strings(nc.variables["season"][:]) == ["summer", "fall", "winter", "spring"]
            assert _strings(nc.variables["polarimetry"][:]) == ["vv", "vh"]
            assert list(nc.variables["deltadays"][:]) == [12, 24, 36, 48]
            assert _strings(nc.variables["param"][:]) == ["rho", "tau", "rmse"]
            assert _strings(nc.variables["feature"][:]) == ["inc", "lsmap"]
            y, x = nc.variables["y"][:], nc.variables["x"][:]
            assert (np.diff(y) < 0).all() and (np.diff(x) > 0).all()
            assert chip.bounds[1] < y.min() < y.max() < chip.bounds[3]
            dims = {"amplitude": ("season", "polarimetry", "y", "x"), "coherence": ("season", "deltadays", "y", "x"),
                    "decaymodel": ("season", "param", "y", "x"), "geometry": ("feature", "y", "x")}
            for name, expected in dims.items():
                var = nc.variables[name]
                assert var.dimensions == expected and var.dtype == np.float32
                assert np.isnan(var.attrs["_FillValue"]) and var.attrs["grid_mapping"] == "spatial_ref"
            coherence = nc.variables["coherence"][:]
            assert np.isnan(coherence).any() and 0 <= np.nanmin(coherence) and np.nanmax(coherence) <= 100
            assert "crs_wkt" in nc.variables["spatial_ref"].attrs and nc.variables["spatial_ref"].shape == ()
        with h5py.File(path, "r") as h5:
            assert h5["amplitude"].shape == (4, 2, len(y), len(x))
        found += 1
    assert found == 27


def test_gunw_layout(sample):
    window = (dt.date(2020, 1, 1), dt.date(2020, 3, 31))
    for region, chip, path in _present(sample, "gunw"):
        with h5netcdf.File(path, "r") as nc:
            data = nc["science/grids/data"]
            labels = _strings(data.variables["datepair"][:])
            assert 2 <= len(labels) <= 6
            dates = [tuple(dt.datetime.strptime(d, "%Y%m%d").date() for d in label.split("_")) for label in labels]
            assert len({later for later, _ in dates}) == 1 and window[0] <= dates[0][0] <= window[1]
            assert all(later > earlier for later, earlier in dates)
            for name in ("unwrappedPhase", "coherence", "amplitude"):
                var = data.variables[name]
                assert var.dimensions == ("datepair", "latitude", "longitude") and var.dtype == np.float32
            cc = data.variables["connectedComponents"]
            assert cc.dtype == np.int16 and cc.attrs["_FillValue"] == -1
            assert ((cc[:] == -1) == np.isnan(data.variables["unwrappedPhase"][:])).all()
            assert data.variables["crs"].dtype == np.int32 and data.variables["crs"].shape == ()
            geometry = nc["science/grids/imagingGeometry"]
            for name in ("perpendicularBaseline", "parallelBaseline", "incidenceAngle", "lookAngle", "azimuthAngle"):
                assert geometry.variables[name].dimensions == ("datepair",)
                assert geometry.variables[name].dtype == np.float32
            assert nc["science/radarMetaData"].variables["wavelength"].dtype == np.float64
            extra = nc["science/extraMetaData"]
            deltadays = extra.variables["deltadays"][:]
            assert deltadays.dtype == np.uint8
            assert list(deltadays) == [(later - earlier).days for later, earlier in dates]
            assert set(_strings(extra.variables["direction"][:])) <= {"A", "D"}
        with h5py.File(path, "r") as h5:
            assert h5["science/grids/data/unwrappedPhase"].shape[0] == len(labels)


def test_biomass_layout(sample):
    for region, chip, path in _present(sample, "biomass"):
        with h5netcdf.File(path, "r") as nc:
            lat, lon = nc.variables["lat"][:], nc.variables["lon"][:]
            assert (np.diff(lat) < 0).all() and (np.diff(lon) > 0).all()
            for name in ("agb", "agb_se"):
                var = nc.variables[name]
                assert var.dimensions == ("lat", "lon") and var.dtype == np.float32
                assert var.attrs["units"] == "Mg/ha" and np.isnan(var.attrs["_FillValue"])
                assert np.nanmin(var[:]) >= 0


# ------------------------------------------------------------------------------------------ absence

def test_missing_skipped_and_stray_files(sample):
    for aoi, region in sample.regions.items():
        chips = region.chips.values()
        no_s2 = [c for c in chips if "s2rgbm" in c.missing]
        assert len(no_s2) == 1
        assert not list((region.data_dir / "s2rgbm-2020").glob(f"{no_s2[0].chip_id}.*"))
        for modality, code in (("gunw", "TILE_NOT_FULLY_CONTAINED_IN_ANY_GRANULE"), ("gssic", "NO_GRANULES_FOUND")):
            skipped = [c for c in chips if modality in c.skipped]
            if aoi == "europe" and modality == "gunw":
                assert not skipped and all("gunw" in c.missing for c in chips)
                assert not (region.data_dir / get_modality("gunw").folder).exists()
                assert not any((region.data_dir / GROWTH[m]).exists() for m in GUNW_GROWTH)
                continue
            assert len(skipped) == 1 and region.path(skipped[0].chip_id, modality).read_text() == code
        stray = region.stray["s1grd"]
        assert stray not in region.chips and region.path(stray, "s1grd").is_file()
        for modality in region.modalities:
            folder = region.folder(modality)
            on_disk = {p.name for p in folder.iterdir()}
            expected = {region.path(c, modality).name for c in region.chip_ids if region.path(c, modality)}
            if modality == "s1grd":
                expected.add(f"{stray}.tif")
            assert on_disk == expected


# ------------------------------------------------------------------------------------------ release

def test_release_layout_and_mapping(sample, release):
    out, _ = release
    for aoi, region in sample.regions.items():
        target = out / aoi
        assert (target / region.splits_csv.name).read_bytes() == region.splits_csv.read_bytes()
        assert (target / region.geojson.name).read_bytes() == region.geojson.read_bytes()
        mapping = _csv(target / region.splits_csv.name.replace(".csv", "_parquet.csv"))
        assert [r["identifier"] for r in mapping] == region.chip_ids
        for row in mapping:
            assert row["split"] == region.chips[row["identifier"]].split
            assert re.fullmatch(rf"{row['split']}-\d{{5}}", row["parquet_identifier"])
        groups = {}
        for row in mapping:
            groups.setdefault(row["parquet_identifier"], set()).add(row["identifier"])
        assert max(len(ids) for ids in groups.values()) == 3
        for folder in (region.data_dir).iterdir():
            files = sorted((target / region.stem / folder.name).glob("*.zstd.parquet"))
            assert files
            for file in files:
                paths = pq.read_table(file, columns=["path"]).column("path").to_pylist()
                ids = {Path(p).name.split(".")[0] for p in paths}
                assert ids <= groups[file.name.removesuffix(".zstd.parquet")]


def test_release_parquet_content_matches_files(sample, release):
    out, written = release
    placeholder = release_placeholder(sample.root)
    conus = sample.regions["conus"]
    no_s2 = next(c.chip_id for c in conus.chips.values() if "s2rgbm" in c.missing)
    assert placeholder == f"conus/{conus.stem}/s2rgbm-2020/{no_s2}.tif"
    rows = []
    for path in written:
        meta = pq.ParquetFile(path).metadata
        assert pq.read_schema(path).remove_metadata() == RELEASE_SCHEMA
        assert all(meta.row_group(i).num_rows <= 2 for i in range(meta.num_row_groups))
        assert meta.row_group(0).column(3).compression == "ZSTD"
        rows += pq.read_table(path).to_pylist()
    assert any(pq.ParquetFile(p).metadata.num_row_groups > 1 for p in written)
    stray = {f"{aoi}/{r.stem}/s1grd-2020/{r.stray['s1grd']}.tif" for aoi, r in sample.regions.items()}
    seen = set()
    for row in rows:
        aoi, stem, ds, name = row["path"].split("/")
        assert (row["aoi"], row["ds"]) == (aoi, ds) and row["length"] == len(row["content"])
        assert row["modificationTime"] == rows[0]["modificationTime"]
        if row["path"] == placeholder:
            assert row["length"] == 48 and not (sample.root / row["path"]).exists()
            assert not row["content"].startswith((b"II*\x00", b"MM\x00*", b"\x89HDF"))
        else:
            assert row["content"] == (sample.root / row["path"]).read_bytes()
        seen.add(row["path"])
    assert placeholder in seen and not stray & seen
    assert sum(p.endswith(".skipped") for p in seen) == 5  # gssic x 3 regions, gunw x 2 (no Europe)
    on_disk = {p.relative_to(sample.root).as_posix() for p in sample.root.glob("*/*/*/*")}
    assert seen == (on_disk - stray) | {placeholder}
    assert pa.types.is_timestamp(RELEASE_SCHEMA.field("modificationTime").type)
