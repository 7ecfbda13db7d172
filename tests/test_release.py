"""convert-release: the Hub release Parquet layout to shards equal to ``build``, with bounded memory."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from builders.sample import RELEASE_SCHEMA, release_placeholder, write_release_parquet
from shard_tools.cli import main as cli
from shard_tools.inventory import row_contents
from shard_tools.release import convert_release, release_files, release_inventory
from shard_tools.verify import verify_region
from tests.conftest import CHIPS_PER_SHARD, canonical

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def release(sample_chips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    write_release_parquet(sample_chips, out)
    return out


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("converted")
    report = convert_release([release], out, chips_per_shard=CHIPS_PER_SHARD)
    return out, report


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".build" not in p.relative_to(root).parts}


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def test_convert_is_byte_identical_to_build_except_the_placeholder(sample_chips, built, converted):
    out, report = converted
    region, stem, folder, filename = release_placeholder(sample_chips).split("/")
    chip_id = filename.split(".")[0]
    modality = {"s2rgbm-2020": canonical("s2rgbm")}[folder]
    rows = pq.read_table(built / region / "metadata" / f"{modality}.parquet").to_pylist()
    shard = next(r["shard"] for r in rows if r["chip_id"] == chip_id)
    split = shard.split("/")[1].split("-")[0]
    expected_diff = {shard, f"metadata/{modality}.parquet", f"metadata/{modality}.shards.json",
                     f"metadata/{modality}.{split}.wids.json"}  # the shard's sha256 changes
    assert report.regions == ["conus", "europe", "pakin"]
    for name in report.regions:
        want, got = files_of(built / name), files_of(out / name)
        assert sorted(want) == sorted(got)
        differ = {path for path in want if want[path] != got[path]}
        assert differ == (expected_diff if name == region else set()), name
        assert verify_region(out / name) == []
    # Within the differing shard only the placeholder chip's json member changes.
    want, got = tar_members((built / region / shard).read_bytes()), tar_members((out / region / shard).read_bytes())
    assert [n for n in want if want[n] != got[n]] == [f"{chip_id}.json"]
    assert json.loads(want[f"{chip_id}.json"])["missing_reason"] == "absent: no file for this chip"
    meta = json.loads(got[f"{chip_id}.json"])
    assert meta["available"] is False and meta["missing_reason"].startswith("unreadable: not a GeoTIFF (48 bytes")
    assert meta["source"]["file"] == f"{region}/{stem}/{folder}/{filename}" and meta["source"]["size"] == 48
    assert any(chip_id in p and "not a GeoTIFF" in p for p in report.problems)


def test_skipped_rows_become_json_only_samples_with_their_code(release):
    inventory = release_inventory(release / "pakin", release_files([release / "pakin"]))
    skipped = {m: s for m, sources in inventory.sources.items() for s in sources.values() if s.status == "skipped"}
    assert {m: s.detail for m, s in skipped.items()} == {
        canonical("gunw"): "TILE_NOT_FULLY_CONTAINED_IN_ANY_GRANULE", "gssic": "NO_GRANULES_FOUND"}
    assert all(s.size == 0 and s.name.endswith(".skipped") for s in skipped.values())


def test_planning_reads_content_only_of_row_groups_holding_skipped_rows(release, monkeypatch):
    reads: list[tuple] = []
    read_group, iter_batches = pq.ParquetFile.read_row_group, pq.ParquetFile.iter_batches

    def spy(self, group, columns=None, **kwargs):
        reads.append(tuple(columns or ()))
        return read_group(self, group, columns=columns, **kwargs)

    def spy_batches(self, *args, columns=None, **kwargs):  # content is streamed a few rows at a time
        reads.append(tuple(columns or ()))
        return iter_batches(self, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy_batches)
    inventory = release_inventory(release / "conus", release_files([release / "conus"]))
    skipped = {(s.path, s.row[0]) for sources in inventory.sources.values() for s in sources.values()
               if s.status == "skipped"}
    assert reads.count(("content",)) == len(skipped) >= 1
    assert set(reads) == {("path", "length", "modificationTime"), ("content",)}  # reuse checks the mtime too


def test_bad_release_input_is_explained(release, tmp_path):
    with pytest.raises(ValueError, match="region"):
        convert_release([release], tmp_path / "out", regions=["china"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        convert_release([tmp_path / "nothing"], tmp_path / "out")
    lonely = tmp_path / "lonely" / "x.zstd.parquet"
    lonely.parent.mkdir()
    pq.write_table(pa.table({"path": ["a"], "length": [1]}), lonely)
    with pytest.raises(FileNotFoundError, match="splits"):
        convert_release([lonely], tmp_path / "out")
    region = tmp_path / "r" / "pakin"
    region.mkdir(parents=True)
    for csv_file in (release / "pakin").glob("*.csv"):
        (region / csv_file.name).write_bytes(csv_file.read_bytes())
    pq.write_table(pa.table({"path": ["a"], "length": [1]}), region / "x.parquet")
    with pytest.raises(ValueError, match="missing column"):
        convert_release([region], tmp_path / "out")


def test_foreign_and_stray_rows_are_reported_not_converted(release, tmp_path):
    region = tmp_path / "pakin"
    for path in (release / "pakin").rglob("*"):
        if path.is_file():
            (region / path.relative_to(release / "pakin")).parent.mkdir(parents=True, exist_ok=True)
            (region / path.relative_to(release / "pakin")).write_bytes(path.read_bytes())
    stem = next(region.glob("*.geojson")).stem
    extra = [("pakin/%s/srtmdem/0000000000000.tif" % stem, b"x"), ("conus/other/srtmdem/1.tif", b"y")]
    rows = [{"path": p, "modificationTime": None, "length": len(c), "content": c, "aoi": "pakin", "ds": "srtmdem"}
            for p, c in extra]
    pq.write_table(pa.Table.from_pylist(rows, schema=RELEASE_SCHEMA), region / stem / "srtmdem" / "extra.zstd.parquet")
    inventory = release_inventory(region, release_files([region]))
    assert inventory.strays == {"srtmdem": ["0000000000000.tif"]}
    assert any("conus/other/srtmdem/1.tif" in p for p in inventory.problems)
    assert "0000000000000" not in inventory.sources["srtmdem"]


def test_cli_convert_release(release, tmp_path, capsys):
    assert cli(["convert-release", str(release / "europe"), "--out", str(tmp_path), "--shard-size-mb", "1",
                "--quiet"]) == 0
    assert "built europe: 10 chips" in capsys.readouterr().out
    assert verify_region(tmp_path / "europe") == []


# ------------------------------------------------------------------------------------------ memory

ROW_GROUP_CHIPS, CHIPS, SIDE = 8, 192, 512  # 2-band uint16 chips of ~1 MB, 24 row groups of ~8.4 MB


def write_big_release(root: Path, aoi: str, chips: int) -> int:
    """Region ``aoi``: one srtmdem Parquet file of incompressible GeoTIFFs in many row groups; its bytes."""
    stem = f"{aoi}_partitions_aschips_0000000000000"
    folder = root / aoi / stem / "srtmdem"
    folder.mkdir(parents=True)
    ids = [f"{i:013x}" for i in range(1, chips + 1)]
    with open(root / aoi / f"{stem}_splits_60bands_angle09_60-20-20.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["identifier", "split"])
        writer.writerows([chip, "train"] for chip in ids)
    rng = np.random.default_rng(0)
    rows = []
    for chip in ids:
        array = rng.integers(0, 65535, size=(2, SIDE, SIDE), dtype=np.uint16)
        with rasterio.MemoryFile() as memfile:
            with memfile.open(driver="GTiff", width=SIDE, height=SIDE, count=2, dtype="uint16", crs="EPSG:4326",
                              transform=rasterio.Affine(1e-4, 0, 0, 0, -1e-4, 0)) as dataset:
                dataset.write(array)
            content = memfile.read()
        rows.append({"path": f"{aoi}/{stem}/srtmdem/{chip}.tif", "modificationTime": None,
                     "length": len(content), "content": content, "aoi": aoi, "ds": "srtmdem"})
    table = pa.Table.from_pylist(rows, schema=RELEASE_SCHEMA)
    pq.write_table(table, folder / "train-00000.zstd.parquet", compression="zstd", row_group_size=ROW_GROUP_CHIPS)
    return sum(r["length"] for r in rows)


MEASURE = """
import json, sys, time
from shard_tools.release import convert_release

def status(key):  # bytes; VmHWM (peak RSS) restarts at exec, unlike ru_maxrss
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024

root, out = sys.argv[1:]
imports = status("VmRSS")
convert_release([root], out, regions=["small"], shard_size_mb=8)
small = status("VmHWM")
started = time.perf_counter()
report = convert_release([root], out, regions=["big"], shard_size_mb=8)
seconds = time.perf_counter() - started
print(json.dumps({"imports": imports, "small": small, "big": status("VmHWM"), "seconds": seconds,
                  "bytes_in": report.bytes_in, "problems": report.problems}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from Linux procfs")
def test_peak_memory_stays_bounded_by_row_groups_not_input(tmp_path):
    """Peak RSS converting 24 row groups exceeds that of converting 4 by less than 6 row groups.

    Memory that grew with the input would add 20 row groups; allocator noise was up to 4 here."""
    root = tmp_path / "release"
    write_big_release(root, "small", 4 * ROW_GROUP_CHIPS)
    total = write_big_release(root, "big", CHIPS)
    row_group = total / (CHIPS / ROW_GROUP_CHIPS)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(root), str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert [p for p in result["problems"] if not p.endswith("geometry left empty")] == []
    assert result["bytes_in"] == total
    mb = {key: result[key] / 1e6 for key in ("imports", "small", "big")}
    print(f"\nconvert-release: {total / 1e6:.1f} MB in {result['seconds']:.2f} s "
          f"({total / 1e6 / result['seconds']:.1f} MB/s); RSS after imports {mb['imports']:.0f} MB, peak "
          f"{mb['small']:.0f} MB for 4 row groups, {mb['big']:.0f} MB for {CHIPS // ROW_GROUP_CHIPS} "
          f"row groups of {row_group / 1e6:.1f} MB")
    assert result["big"] - result["small"] < 6 * row_group
    assert verify_region(tmp_path / "out" / "big") == []


def test_release_content_is_streamed_within_its_limits(tmp_path):
    """Row contents are read a few rows at a time, each within the chip file limit: a row group declaring more
    content than its rows may hold is refused from its metadata, an oversized row by its length, a row that is
    not there by its index; each error names the file, the row group and the row."""
    path = tmp_path / "x.parquet"
    rows = [b"a" * 100_000, b"b" * 3_000_000, b"c" * 10]
    pq.write_table(pa.table({"content": rows}), path, row_group_size=3, compression="zstd")
    assert row_contents(str(path), 0, {0, 2}, max_bytes=2_000_000) == {0: rows[0], 2: rows[2]}
    with pytest.raises(OSError, match=r"x.parquet: row group 0: row 1: content of 3000000 bytes exceeds"):
        row_contents(str(path), 0, {1}, max_bytes=2_000_000)
    with pytest.raises(OSError, match=r"x.parquet: row group 0: declares \d+ bytes of content for 3 rows"):
        row_contents(str(path), 0, {0}, max_bytes=500_000)
    with pytest.raises(OSError, match=r"row group 0: no row 7 \(it has 3\)"):
        row_contents(str(path), 0, {7})


BOMB = """
import sys
import pyarrow as pa, pyarrow.parquet as pq
from builders.sample import RELEASE_SCHEMA
root, aoi, stem, length = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
content = bytes(600 * 2**20)  # zeros: a few hundred KB once compressed
row = {"path": f"{aoi}/{stem}/srtmdem/0000000000001.tif", "modificationTime": None,
       "length": len(content) if length == "true" else int(length),
       "content": content, "aoi": aoi, "ds": "srtmdem"}
pq.write_table(pa.Table.from_pylist([row], schema=RELEASE_SCHEMA),
               f"{root}/{aoi}/{stem}/srtmdem/train-00000.zstd.parquet", compression="zstd")
"""


@pytest.mark.parametrize("length, reason", [("true", "file of 629145600 bytes exceeds the limit"),
                                            ("1000", "declares 6291")], ids=["its-length", "a-false-length"])
def test_a_compressed_600_mb_row_is_refused_unread_within_a_memory_limit(tmp_path, length, reason):
    """convert-release of a release whose one row inflates to 600 MB: refused before it is decompressed, by its
    ``length`` column or, when that lies, by its row group's declared content size (over the 528 MB chip
    limit); the chip is named and the conversion finishes, under a 1 GB address-space limit."""
    from tests.limits import run_limited

    root = tmp_path / "release"
    write_big_release(root, "bomb", 1)
    stem = "bomb_partitions_aschips_0000000000000"
    (root / "bomb" / stem / "srtmdem" / "train-00000.zstd.parquet").unlink()
    subprocess.run([sys.executable, "-c", BOMB, str(root), "bomb", stem, length], cwd=REPO, check=True,
                   env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert (root / "bomb" / stem / "srtmdem" / "train-00000.zstd.parquet").stat().st_size < 50 * 2**20
    done = run_limited(f"""
        from shard_tools.release import convert_release
        report = convert_release([{str(root / 'bomb')!r}], {str(tmp_path / 'out')!r})
        print("problems:", report.problems)
        """, limit_mb=1024, timeout_s=120)
    assert done.returncode == 0, done.output
    assert "chip 0000000000001" in done.stdout and reason in done.stdout, done.output
    assert done.peak_rss_mb is not None and done.peak_rss_mb < 400, done.peak_rss_mb


def test_release_row_groups_over_the_row_and_byte_limits_are_refused_from_their_metadata(release, monkeypatch):
    """A row group whose path/length/mtime columns declare more rows (or bytes) than a region may hold is refused
    by its metadata before it is read, naming the file and the row group."""
    import shard_tools.release as release_module

    files = release_files([release / "conus"])
    monkeypatch.setattr(release_module, "MAX_RELEASE_ROWS", 1)
    with pytest.raises(ValueError, match=r"\.parquet: row group 0 declares \d+ rows and \d+ bytes of path, length"):
        release_inventory(release / "conus", files)
    monkeypatch.setattr(release_module, "MAX_RELEASE_ROWS", 10**6)
    monkeypatch.setattr(release_module, "MAX_TABLE_BYTES", 10)
    with pytest.raises(ValueError, match=r"over the limits \(1000000 rows, 10 bytes\)"):
        release_inventory(release / "conus", files)
