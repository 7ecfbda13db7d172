"""Build from processed chips: exact round trip, metadata, alignment, determinism, resumability."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from builders import read_chip
from shard_tools.build import build
from shard_tools.cli import main as cli
from shard_tools.inventory import find_regions, scan_region
from shard_tools.verify import verify_region
from builders.sample import GUNW_FAMILIES
from tests.conftest import CHIPS_PER_SHARD, canonical

REGION_TABLES = ("chips.parquet", "plan.parquet")  # metadata/*.parquet that are not one modality's rows


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, field = member.name.partition(".")
            samples.setdefault(key, {})[field] = tar.extractfile(member).read()
    return samples


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name == "lock"}


def test_every_modality_round_trips_exactly(sample_chips, built):
    checked = set()
    for region, region_dir in find_regions(sample_chips).items():
        inventory = scan_region(region_dir)
        for modality in inventory.modalities:
            rows = pq.read_table(built / region / "metadata" / f"{modality}.parquet").to_pylist()
            for split in ("train", "val", "test"):
                ids = [r["chip_id"] for r in rows if r["split"] == split]
                assert ids == sorted(ids), "chips of a split are ordered by id"
            shards = {r["shard"] for r in rows}
            samples = {k: v for s in shards for k, v in tar_samples(built / region / s).items()}
            for chip in inventory.chips:
                source = inventory.source(modality, chip.chip_id)
                meta = json.loads(samples[chip.chip_id]["json"])
                if source.status != "file":
                    assert meta["available"] is False and meta["missing_reason"].startswith(source.status)
                    continue
                expected = read_chip(inventory.specs[modality], Path(source.path), chip.chip_id)
                assert meta["available"] is True
                for name, array in expected.arrays.items():
                    got = np.load(io.BytesIO(samples[chip.chip_id][f"{name}.npy"]), allow_pickle=False)
                    assert got.dtype == array.dtype and got.shape == array.shape
                    np.testing.assert_array_equal(got, array)
                    assert meta["fields"][name]["dtype"] == str(array.dtype)
                _assert_metadata(inventory.specs[modality], meta)
                checked.add(modality)
    assert checked == {  # every dataset folder of the sample: the nine 2020 products and the growth folders
        "s1grd-2020", "s2rgbm-2020", "gssic", "gunw-2020-01-01-2020-03-31", "esaworldcover-2020", "ghsbuilts-2020",
        "biomass-2020", "modis44b006veg", "srtmdem", "s1grd-2019", "s2rgbm-2019", "biomass-2019",
        "gunw-2020-04-01-2020-06-30", "gunw-2020-01", "lcci-2020", "firecci51"}


def _assert_metadata(modality, meta: dict) -> None:
    assert meta["crs"] and meta["transform"] and len(meta["bounds"]) == 4
    assert meta["dates"], "dates are recorded"
    if modality.container == "geotiff":
        assert meta["fields"][modality.field]["band_names"] == list(modality.band_names)
        assert meta["epsg"] == 4326
    if modality.family in GUNW_FAMILIES:
        pairs = meta["dates"]["datepairs"]
        assert pairs and all(len(p) == 17 and p[:8] > p[9:] for p in pairs)
        assert "unwrappedphase" in meta["fields"] and meta["fields"]["unwrappedphase"]["variable"].endswith(
            "/science/grids/data/unwrappedPhase")
    if modality.family in ("s1grd", "srtmdem"):  # stored as int16 dB / elevation, the files' uint16 reinterpreted
        field = meta["fields"][modality.field]
        assert field["dtype"] == "int16" and field["source_dtype"] == "uint16" and "view_as" not in field


def test_shards_are_aligned_and_verified(built):
    for region_dir in sorted(built.iterdir()):
        assert verify_region(region_dir) == []
        tables = {p.name[:-8]: pq.read_table(p).to_pylist() for p in (region_dir / "metadata").glob("*.parquet")
                  if p.name not in REGION_TABLES}
        reference = [(r["chip_id"], r["shard"].split("/")[1], r["sample_index"]) for r in tables[canonical("s1grd")]]
        for modality, rows in tables.items():
            assert [(r["chip_id"], r["shard"].split("/")[1], r["sample_index"]) for r in rows] == reference, modality


def test_metadata_rows_offsets_and_stats(built):
    region_dir = built / "conus"
    s1grd = canonical("s1grd")
    rows = pq.read_table(region_dir / "metadata" / f"{s1grd}.parquet").to_pylist()
    chips = pq.read_table(region_dir / "metadata" / "chips.parquet").to_pylist()
    assert len(rows) == len(chips) and {r["split"] for r in rows} == {"train", "val", "test"}
    for row in rows:
        data = (region_dir / row["shard"]).read_bytes()
        json_member = next(m for m in row["members"] if m["name"] == "json")
        assert json.loads(data[json_member["offset"]:json_member["offset"] + json_member["size"]])["chip_id"] == row["chip_id"]
        assert row["lon"] is not None and row["bbox_west"] < row["bbox_east"]
        if row["available"]:
            npy = next(m for m in row["members"] if m["name"] == "s1grd.npy")
            array = np.load(io.BytesIO(data[npy["offset"]:npy["offset"] + npy["size"]]))
            assert array.shape[0] == 16 and 0.0 <= row["nodata_fraction"] <= 1.0
    stats = json.loads((region_dir / "metadata" / f"{s1grd}.stats.json").read_text())["splits"]["train"]["s1grd"]
    assert len(stats["mean"]) == 16 and stats["band_names"][0] == "winter_vvasc"
    assert all(m is None or -40 < m < 20 for m in stats["mean"]), "stats are in int16 dB, not wrapped uint16"
    index = json.loads((region_dir / "metadata" / f"{s1grd}.shards.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    assert sum(s["nsamples"] for s in index["shardlist"]) == len(rows)
    has_gunw = f"has_{canonical('gunw')}"
    assert any(not c[has_gunw] for c in chips) and has_gunw not in pq.read_schema(
        built / "europe" / "metadata" / "chips.parquet").names


def test_missing_modalities_and_markers_are_recorded(built):
    reasons = [r["missing_reason"] for p in built.glob("*/metadata/*.parquet") if p.name not in REGION_TABLES
               for r in pq.read_table(p).to_pylist() if not r["available"]]
    assert any(r.startswith("skipped: ") for r in reasons)
    assert any(r.startswith("absent") for r in reasons)


def test_build_is_byte_reproducible_and_worker_independent(sample_chips, built, tmp_path):
    build(sample_chips, tmp_path / "again", chips_per_shard=CHIPS_PER_SHARD, workers=2)
    assert all_files(tmp_path / "again") == all_files(built)


def test_interrupted_build_resumes_to_identical_bytes(sample_chips, built, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "shard_tools.cli", "build", "--chips", str(sample_chips), "--out", str(out),
               "--region", "conus", "--chips-per-shard", str(CHIPS_PER_SHARD)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("conus/.build/*/*.json"))) < 3:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "conus" / "metadata" / "chips.parquet").exists(), "killed before the end"
    expected = all_files(built / "conus")
    for tar in out.glob("conus/*/*.tar"):
        assert tar.read_bytes() == expected[str(tar.relative_to(out / "conus"))], "no half shard is visible"
    assert (out / "conus" / ".build" / "lock").exists(), "the killed build left its lock behind"
    assert cli(["build", "--chips", str(sample_chips), "--out", str(out), "--region", "conus",
                "--chips-per-shard", str(CHIPS_PER_SHARD), "--quiet"]) == 0
    assert all_files(out / "conus") == expected


def test_changed_input_rebuilds_only_affected_shards(sample_chips, tmp_path):
    chips = tmp_path / "chips"
    subprocess.run(["cp", "-r", str(sample_chips), str(chips)], check=True)
    first = build(chips, tmp_path / "out", regions=["pakin"], modalities=["esaworldcover"], chips_per_shard=CHIPS_PER_SHARD)
    again = build(chips, tmp_path / "out", regions=["pakin"], modalities=["esaworldcover"], chips_per_shard=CHIPS_PER_SHARD)
    assert first.written > 0 and again.written == 0 and again.reused == first.written
