"""Bad input: each defect gives a clear error naming chip and file, and nothing else is lost."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from builders import ChipError, get_modality, read_chip
from shard_tools.build import UnknownFolderError, build
from shard_tools.cli import main as cli
from shard_tools.inventory import scan_region
from shard_tools.lock import BuildLock, BuildLocked
from shard_tools.verify import verify_region
from tests.chip_files import write_tif
from tests.conftest import CHIPS_PER_SHARD, canonical


@pytest.fixture
def pakin(sample_chips, tmp_path) -> tuple[Path, object]:
    """A private copy of one region's chip tree to damage."""
    chips = tmp_path / "chips"
    shutil.copytree(sample_chips / "pakin", chips / "pakin")
    return chips, scan_region(chips / "pakin")


def a_file(inventory, modality: str) -> tuple[str, Path]:
    chip_id, source = next((c, s) for c, s in sorted(inventory.sources[canonical(modality)].items()) if s.status == "file")
    return chip_id, Path(source.path)


def rows_by_id(out: Path, modality: str) -> dict[str, dict]:
    return {r["chip_id"]: r for r in pq.read_table(out / "pakin" / "metadata" / f"{canonical(modality)}.parquet").to_pylist()}


@pytest.mark.parametrize("modality, damage", [
    ("s1grd", "truncate"), ("s2rgbm", "garbage"), ("gssic", "truncate"), ("gunw", "garbage"), ("biomass", "empty"),
])
def test_corrupt_files_are_named_and_the_rest_is_kept(pakin, tmp_path, capsys, modality, damage):
    chips, inventory = pakin
    chip_id, path = a_file(inventory, modality)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 3], "garbage": b"\x00junk" * 50, "empty": b""}[damage])
    with pytest.raises(ChipError) as error:
        read_chip(get_modality(modality), path, chip_id)
    assert chip_id in str(error.value) and path.name in str(error.value)

    assert cli(["build", "--chips", str(chips), "--out", str(tmp_path / "out"), "--chips-per-shard",
                str(CHIPS_PER_SHARD), "--strict", "--quiet"]) == 1
    warning = capsys.readouterr().err
    assert chip_id in warning and path.name in warning
    rows = rows_by_id(tmp_path / "out", modality)
    assert rows[chip_id]["available"] is False and rows[chip_id]["missing_reason"].startswith("unreadable: ")
    others = [r for c, r in rows.items() if c != chip_id and inventory.source(canonical(modality), c).status == "file"]
    assert others and all(r["available"] for r in others), "other chips are kept"
    assert verify_region(tmp_path / "out" / "pakin") == []


def test_wrong_band_count_dtype_and_band_names(tmp_path):
    modality = get_modality("s1grd")
    cases = {
        "bands": (np.zeros((3, 8, 8), np.uint16), modality.band_names[:3], "3 bands, expected 16"),
        "dtype": (np.zeros((16, 8, 8), np.float32), modality.band_names, "dtype float32, expected uint16"),
        "names": (np.zeros((16, 8, 8), np.uint16), tuple(reversed(modality.band_names)), "band names"),
    }
    for case, (array, names, message) in cases.items():
        path = tmp_path / f"{case}.tif"
        write_tif(path, array, names)
        with pytest.raises(ChipError, match=message) as error:
            read_chip(modality, path, "0123456789abc")
        assert "0123456789abc" in str(error.value) and path.name in str(error.value)


def test_bad_chip_ids_are_refused(tmp_path):
    with pytest.raises(ChipError, match="13 lower-case hex"):
        read_chip(get_modality("s1grd"), b"II*\x00", "12.5_lon3")


def test_markers_and_missing_files(pakin, tmp_path):
    chips, inventory = pakin
    chip_id, path = a_file(inventory, "esaworldcover")
    path.unlink()
    (path.parent / f"{chip_id}.tif.nodata").write_text("")
    other_id, other = a_file(scan_region(chips / "pakin"), "modis")
    other.unlink()
    build(chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD)
    assert rows_by_id(tmp_path / "out", "esaworldcover")[chip_id]["missing_reason"].startswith("marker")
    assert rows_by_id(tmp_path / "out", "modis")[other_id]["missing_reason"].startswith("absent")
    assert rows_by_id(tmp_path / "out", "s1grd")[chip_id]["available"] is True


def test_stray_and_unknown_folders_are_reported(pakin, tmp_path):
    chips, inventory = pakin
    (chips / "pakin" / inventory.stem / "mystery-2020").mkdir()
    with pytest.raises(UnknownFolderError, match="mystery-2020: no declaration matches"):
        build(chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD)
    report = build(chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD, skip_unknown=True)
    assert any("mystery-2020: no declaration matches this dataset folder; skipped" in p for p in report.problems)
    assert any(f"{canonical('s1grd')}: 1 file(s) for chips not in the splits CSV" in p for p in report.problems)


def test_bad_splits_csv_names_the_line(pakin, tmp_path):
    chips, _ = pakin
    csv_path = next((chips / "pakin").glob("*_splits_*.csv"))
    csv_path.write_text(csv_path.read_text() + "12345,train\n")
    assert cli(["build", "--chips", str(chips), "--out", str(tmp_path / "out")]) == 2
    with pytest.raises(ValueError, match=r"csv:\d+: identifier '12345'"):
        build(chips, tmp_path / "out")


def test_concurrent_build_is_refused_and_stale_lock_taken_over(pakin, tmp_path):
    chips, _ = pakin
    lock = tmp_path / "out" / "pakin" / ".build" / "lock"
    with BuildLock(lock):
        with pytest.raises(BuildLocked, match="another build is running"):
            build(chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{os.uname().nodename} 999999999")
    assert build(chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD).written > 0
    assert not lock.exists()


def test_verify_reports_checksum_mismatch_missing_and_unlisted_shards(built, tmp_path, capsys):
    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region)
    s1grd = canonical("s1grd")
    index = json.loads((region / "metadata" / f"{s1grd}.shards.json").read_text())["shardlist"]
    flipped, removed = region / index[0]["url"], region / index[1]["url"]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    removed.unlink()
    shutil.copy(region / index[2]["url"], region / s1grd / "train-999999.tar")
    problems = "\n".join(verify_region(region))
    assert f"{index[0]['url']}: sha256 mismatch" in problems
    assert f"{index[1]['url']}: listed in {s1grd}.shards.json but missing" in problems
    assert f"{s1grd}/train-999999.tar: shard not listed" in problems
    assert cli(["verify", str(region)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err


def test_verify_reports_misaligned_modalities(built, tmp_path):
    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region)
    biomass = canonical("biomass")
    shardlist = json.loads((region / "metadata" / f"{biomass}.shards.json").read_text())["shardlist"]
    shard = region / next(s["url"] for s in shardlist if s["nsamples"] >= 2)
    samples: dict[str, list] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            samples.setdefault(member.name.split(".")[0], []).append((member, tar.extractfile(member).read()))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key in reversed(list(samples)):
            for member, payload in samples[key]:
                tar.addfile(member, io.BytesIO(payload))
    problems = "\n".join(verify_region(region))
    assert f"{biomass}/{shard.name}: keys or order differ from the other modalities'" in problems
    assert f"{canonical('s1grd')}/" not in problems
