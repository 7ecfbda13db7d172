"""Hostile chip trees: each bad chip is refused from its metadata or its file type, named, and costs nothing else.

Every case runs in a child process under an address-space limit and a timeout (``tests/limits.py``) and asserts
the named error, no hang and a bounded peak RSS; the last test builds one tree holding all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import h5py
import h5netcdf
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine

from builders import ChipError, get_modality
from builders.isolated import IsolatedReader
from builders.sample import write_sample
from shard_tools.inventory import scan_region
from shard_tools.verify import verify_region
from tests.conftest import CHIPS_PER_SHARD, SAMPLE_KWARGS, canonical
from tests.limits import Limited, run_limited

REGION = "pakin"
LIMIT_MB = 1024  # address space of each child: a decoded bomb (0.4-14 GB) cannot fit
TIMEOUT_S = 120.0
PEAK_MB = 400  # peak RSS of a child: imports and a 32-px tree take about 110-200 MB
SECRET = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
          "-----END OPENSSH PRIVATE KEY-----\n")
SECRET_PIECES = ("BEGIN", "PRIVATE", "OPENSSH", "b3BlbnNz", "-----")
UTM_33N = 32633


# ------------------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def clean_chips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile-chips")
    write_sample(out, **{**SAMPLE_KWARGS, "regions": (REGION,)})
    return out


@pytest.fixture
def chips(clean_chips, tmp_path) -> Path:
    """A private copy of the clean tree to plant bad chips in."""
    shutil.copytree(clean_chips, tmp_path / "chips", symlinks=True)
    return tmp_path / "chips"


def chip_files(chips: Path, modality: str) -> list[tuple[str, Path]]:
    """(chip id, file) of the chips of ``modality`` (name or alias) that have a data file, by id."""
    sources = scan_region(chips / REGION).sources[canonical(modality)]
    return [(c, Path(s.path)) for c, s in sorted(sources.items()) if s.status == "file"]


def limited(code: str, case: str) -> Limited:
    done = run_limited(code, limit_mb=LIMIT_MB, timeout_s=TIMEOUT_S)
    assert done.returncode == 0, done.output
    assert done.peak_rss_mb is not None and done.peak_rss_mb < PEAK_MB, done.peak_rss_mb
    print(f"\npeak RSS {case}: {done.peak_rss_mb:.0f} MB")
    return done


def read_limited(modality: str, path: Path, chip_id: str, case: str) -> str:
    """``read_chip`` in a limited child; returns the ChipError message it printed."""
    done = limited(f"""
        from builders import ChipError, get_modality, read_chip
        try:
            read_chip(get_modality({modality!r}), {str(path)!r}, {chip_id!r})
            print("read without error")
        except ChipError as exc:
            print("ChipError:", exc)
        """, case)
    assert "ChipError:" in done.stdout, done.output
    return done.stdout


def build_limited(chips: Path, out: Path, case: str, *options: str) -> Limited:
    """``m3leo-shard build`` in a limited child; it must finish with exit code 0. The peak RSS of its NetCDF
    reader child (which inherits the limit) is bounded too."""
    args = ["build", "--chips", str(chips), "--out", str(out), "--chips-per-shard", str(CHIPS_PER_SHARD), "--quiet",
            *options]
    done = limited(f"""
        import resource
        from shard_tools.cli import main
        from shard_tools.encode import _ISOLATED
        print('exit code', main({args!r}))
        _ISOLATED.close()
        print('reader peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        """, case)
    assert "exit code 0" in done.stdout, done.output
    reader_mb = float(done.stdout.split("reader peak")[1])
    assert reader_mb < PEAK_MB, reader_mb
    print(f"peak RSS {case}, child processes (NetCDF reader): {reader_mb:.0f} MB")
    return done


def rows(out: Path, modality: str) -> dict[str, dict]:
    table = pq.read_table(out / REGION / "metadata" / f"{canonical(modality)}.parquet")
    return {row["chip_id"]: row for row in table.to_pylist()}


def samples(out: Path, modality: str) -> dict[str, dict[str, bytes]]:
    """Chip id -> member name -> bytes, over every shard of ``modality`` (name or alias)."""
    found: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted((out / REGION / canonical(modality)).glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, field = member.name.split(".", 1)
                found.setdefault(key, {})[field] = tar.extractfile(member).read()
    return found


def chip_json(out: Path, modality: str, chip_id: str) -> dict:
    return json.loads(samples(out, modality)[chip_id]["json"])


def named(done: Limited, chip_id: str, path: Path, *words: str) -> bool:
    """Some warning line names the chip, its file and says ``words``."""
    return any(chip_id in line and path.name in line and all(w in line for w in words)
               for line in done.stderr.splitlines())


# ------------------------------------------------------------------------------------------ bad chip makers

def sparse_geotiff(path: Path, *, count: int, size: int, dtype: str, crs: str = "EPSG:4326") -> None:
    """A deflate GeoTIFF whose tiles were never written: a few KB on disk, zeros of full size when read."""
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=count, dtype=dtype, crs=crs,
                       transform=Affine(1 / size, 0, 0, 0, -1 / size, 1), compress="deflate", tiled=True,
                       blockxsize=1024 if size >= 1024 else 256, blockysize=1024 if size >= 1024 else 256,
                       sparse_ok=True):
        pass


def netcdf_bomb(path: Path, dims: dict[str, int], dtype: str = "f8") -> None:
    """A NetCDF4 file with a gzip-chunked variable of ``dims`` whose chunks were never written."""
    with h5netcdf.File(path, "w") as nc:
        nc.dimensions = dims
        shape = tuple(dims.values())
        nc.create_variable("agb", tuple(dims), dtype=dtype, chunks=tuple(min(n, 256) for n in shape),
                           compression="gzip")


def reproject_label(path: Path, epsg: int) -> None:
    """Rewrite a GeoTIFF chip with the same pixels and band names in another CRS."""
    with rasterio.open(path) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    path.unlink()
    with rasterio.open(path, "w", **{**profile, "crs": f"EPSG:{epsg}"}) as dst:
        dst.write(data)
        for index, name in enumerate(names, start=1):
            dst.set_band_description(index, name)


def utm_grid_mapping(path: Path, epsg: int) -> None:
    """Set the grid-mapping WKT of a NetCDF chip to another CRS."""
    wkt = rasterio.crs.CRS.from_epsg(epsg).to_wkt()
    with h5py.File(path, "r+") as nc:
        for name in ("crs_wkt", "spatial_ref"):
            nc["spatial_ref"].attrs[name] = wkt


# ----------------------------------------------------------------------------------------------- the cases

def test_deflate_bomb_is_refused_from_its_header(chips, tmp_path):
    chip_id, path = chip_files(chips, "esaworldcover")[0]
    path.unlink()
    sparse_geotiff(path, count=1, size=30000, dtype="uint8")  # 900 MB of zeros when decoded
    assert path.stat().st_size < 20_000
    message = read_limited("esaworldcover", path, chip_id, "deflate bomb (read_chip)")
    assert f"chip {chip_id}" in message and "raster of 30000x30000 pixels exceeds the limit" in message

    done = build_limited(chips, tmp_path / "out", "deflate bomb (build)", "--modality", "esaworldcover")
    assert named(done, chip_id, path, "exceeds the limit")
    assert rows(tmp_path / "out", "esaworldcover")[chip_id]["missing_reason"].startswith("unreadable: raster of")


def test_thousand_band_geotiff_is_refused_before_its_pixels_are_read(chips):
    chip_id, path = chip_files(chips, "s1grd")[0]
    path.unlink()
    sparse_geotiff(path, count=1000, size=448, dtype="uint16")  # 400 MB when decoded
    message = read_limited("s1grd", path, chip_id, "1000-band GeoTIFF")
    assert f"chip {chip_id}" in message and path.name in message and "1000 bands, expected 16" in message


@pytest.mark.parametrize("dims, message", [
    ({"lat": 20000, "lon": 20000}, "exceeds the limit of 2048 pixels per side"),  # 3.2 GB decoded
    ({"datepair": 1000, "lat": 2048, "lon": 2048}, "brings the decoded size past the limit"),  # 34 GB decoded
], ids=["side", "decoded-size"])
def test_netcdf_bomb_is_refused_from_its_metadata(chips, tmp_path, dims, message):
    chip_id, path = chip_files(chips, "biomass")[0]
    path.unlink()
    netcdf_bomb(path, dims)
    assert path.stat().st_size < 50_000
    found = read_limited("biomass", path, chip_id, f"NetCDF bomb {list(dims.values())} (read_chip)")
    assert f"chip {chip_id}" in found and "variable /agb of shape" in found and message in found

    done = build_limited(chips, tmp_path / "out", "NetCDF bomb (build)", "--modality", "biomass")
    assert named(done, chip_id, path, message)


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow-symlinks"])
def test_dev_zero_link_is_never_read(chips, tmp_path, follow):
    chip_id, path = chip_files(chips, "esaworldcover")[0]
    path.unlink()
    path.symlink_to("/dev/zero")
    message = read_limited("esaworldcover", path, chip_id, "/dev/zero link (read_chip)")
    assert f"chip {chip_id}" in message and "not a regular file (character device)" in message

    options = ("--follow-symlinks",) if follow else ()
    done = build_limited(chips, tmp_path / "out", f"/dev/zero link (build{', follow' if follow else ''})",
                         "--modality", "esaworldcover", *options)
    reason = "not a regular file (character device)" if follow else "symbolic link to a file outside the chip tree"
    assert named(done, chip_id, path, reason)
    assert rows(tmp_path / "out", "esaworldcover")[chip_id]["missing_reason"] == f"refused: {reason}" + (
        "" if follow else ", not followed (build with --follow-symlinks)")


def test_fifo_does_not_hang_the_build(chips, tmp_path):
    chip_id, path = chip_files(chips, "esaworldcover")[0]
    path.unlink()
    os.mkfifo(path)
    marker_chip, marker_path = chip_files(chips, "gssic")[0]
    marker_path.unlink()
    os.mkfifo(marker_path.with_suffix(".skipped"))
    message = read_limited("esaworldcover", path, chip_id, "FIFO (read_chip)")
    assert f"chip {chip_id}" in message and "not a regular file (FIFO)" in message

    done = build_limited(chips, tmp_path / "out", "FIFO (build)", "--modality", "esaworldcover", "--modality", "gssic")
    assert named(done, chip_id, path, "not a regular file (FIFO)")
    assert rows(tmp_path / "out", "esaworldcover")[chip_id]["missing_reason"] == "refused: not a regular file (FIFO)"
    assert named(done, marker_chip, marker_path.with_suffix(".skipped"), "not a regular file (FIFO)")


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow-symlinks"])
def test_link_out_of_the_tree_is_refused_unless_followed(chips, tmp_path, follow):
    chip_id, path = chip_files(chips, "esaworldcover")[0]
    outside = tmp_path / "elsewhere" / path.name
    outside.parent.mkdir()
    shutil.move(path, outside)
    path.symlink_to(outside)
    inside_id, inside = chip_files(chips, "esaworldcover")[1]
    inside_copy = inside.read_bytes()
    inside.unlink()
    kept = chips / REGION / "kept.tif"
    kept.write_bytes(inside_copy)
    inside.symlink_to(os.path.relpath(kept, inside.parent))  # a link that stays in the region is always read

    options = ("--follow-symlinks",) if follow else ()
    done = build_limited(chips, tmp_path / "out", f"outside link (build{', follow' if follow else ''})",
                         "--modality", "esaworldcover", *options)
    table = rows(tmp_path / "out", "esaworldcover")
    assert table[inside_id]["available"] is True
    if follow:
        assert table[chip_id]["available"] is True
        meta = chip_json(tmp_path / "out", "esaworldcover", chip_id)
        assert meta["source"]["sha256"] == hashlib.sha256(outside.read_bytes()).hexdigest()
    else:
        assert table[chip_id]["missing_reason"].startswith("refused: symbolic link to a file outside the chip tree")
        assert named(done, chip_id, path, "outside the chip tree", "--follow-symlinks")
        assert str(outside) not in done.output, "the link's target is not echoed"


def test_file_content_never_reaches_messages_or_shards(chips, tmp_path):
    planted = []
    for modality in ("esaworldcover", "biomass"):
        chip_id, path = chip_files(chips, modality)[0]
        path.write_text(SECRET)
        planted.append((modality, chip_id, path))
    chip_id, path = chip_files(chips, "gunw")[0]
    path.unlink()
    marker = path.with_suffix(".skipped")
    marker.write_text(SECRET)

    done = build_limited(chips, tmp_path / "out", "private-key content (build)",
                         "--modality", "esaworldcover", "--modality", "biomass", "--modality", "gunw")
    for modality, planted_id, planted_path in planted:
        assert named(done, planted_id, planted_path, "not a")
        reason = rows(tmp_path / "out", modality)[planted_id]["missing_reason"]
        assert reason.startswith("unreadable: not a ") and "signature" in reason
    assert rows(tmp_path / "out", "gunw")[chip_id]["missing_reason"] == "skipped: unrecognised marker text"
    for piece in SECRET_PIECES:
        assert piece not in done.output
    for written in (tmp_path / "out").rglob("*"):
        if written.is_file():
            content = written.read_bytes()
            assert not any(piece.encode() in content for piece in SECRET_PIECES), written


@pytest.mark.parametrize("modality", ["esaworldcover", "gssic"])
def test_crs_other_than_declared_is_warned_about_and_recorded(chips, tmp_path, modality):
    chip_id, path = chip_files(chips, modality)[0]
    (reproject_label if modality == "esaworldcover" else utm_grid_mapping)(path, UTM_33N)
    done = build_limited(chips, tmp_path / "out", f"CRS EPSG:{UTM_33N} ({modality})", "--modality", modality)
    assert named(done, chip_id, path, f"CRS is EPSG:{UTM_33N}, not the declared EPSG:4326")
    assert rows(tmp_path / "out", modality)[chip_id]["available"] is True
    meta = chip_json(tmp_path / "out", modality, chip_id)
    assert meta["crs_mismatch"] == {"declared": "EPSG:4326", "found": f"EPSG:{UTM_33N}"}
    assert meta["epsg"] == UTM_33N
    others = [json.loads(s["json"]) for c, s in samples(tmp_path / "out", modality).items() if c != chip_id]
    assert others and not any("crs_mismatch" in m for m in others)


# ------------------------------------------------------------------------------------------- the mixed tree

def plant_everything(chips: Path, outside: Path) -> dict[tuple[str, str], tuple[Path, str]]:
    """Every bad case above in one tree: (modality, chip id) -> (its entry, a word its warning holds)."""
    labels = chip_files(chips, "esaworldcover")
    bad: dict[tuple[str, str], tuple[Path, str]] = {}

    def plant(modality: str, chip_id: str, path: Path, word: str) -> None:
        bad[(modality, chip_id)] = (path, word)

    (bomb_id, bomb), (zero_id, zero), (fifo_id, fifo), (link_id, link), (key_id, key), (crs_id, crs) = labels[:6]
    bomb.unlink()
    sparse_geotiff(bomb, count=1, size=30000, dtype="uint8")
    plant("esaworldcover", bomb_id, bomb, "exceeds the limit")
    zero.unlink()
    zero.symlink_to("/dev/zero")
    plant("esaworldcover", zero_id, zero, "outside the chip tree")
    fifo.unlink()
    os.mkfifo(fifo)
    plant("esaworldcover", fifo_id, fifo, "not a regular file (FIFO)")
    outside.mkdir()
    shutil.move(link, outside / link.name)
    link.symlink_to(outside / link.name)
    plant("esaworldcover", link_id, link, "outside the chip tree")
    key.write_text(SECRET)
    plant("esaworldcover", key_id, key, "not a GeoTIFF")
    reproject_label(crs, UTM_33N)
    plant("esaworldcover", crs_id, crs, "not the declared EPSG:4326")

    bands_id, bands = chip_files(chips, "s1grd")[0]
    bands.unlink()
    sparse_geotiff(bands, count=1000, size=448, dtype="uint16")
    plant("s1grd", bands_id, bands, "1000 bands, expected 16")
    (side_id, side), (budget_id, budget), (nc_key_id, nc_key) = chip_files(chips, "biomass")[:3]
    for path, dims in ((side, {"lat": 20000, "lon": 20000}), (budget, {"datepair": 1000, "lat": 2048, "lon": 2048})):
        path.unlink()
        netcdf_bomb(path, dims)
    plant("biomass", side_id, side, "pixels per side")
    plant("biomass", budget_id, budget, "decoded size past the limit")
    nc_key.write_text(SECRET)
    plant("biomass", nc_key_id, nc_key, "not a NetCDF4/HDF5 file")
    return bad


def test_build_over_a_hostile_tree_keeps_every_good_chip_exact_and_names_every_bad_one(clean_chips, chips,
                                                                                       tmp_path):
    bad = plant_everything(chips, tmp_path / "elsewhere")
    gunw_id, gunw = chip_files(chips, "gunw")[0]
    gunw.unlink()
    gunw.with_suffix(".skipped").write_text(SECRET)  # unrecognised marker text, no warning: a failed chip

    done = build_limited(chips, tmp_path / "out", "mixed hostile tree (build)")
    build_limited(clean_chips, tmp_path / "clean", "clean tree (build)")

    for (modality, chip_id), (path, word) in bad.items():
        assert named(done, chip_id, path, word), (modality, chip_id, word)
        row = rows(tmp_path / "out", modality)[chip_id]
        assert row["available"] is (word == "not the declared EPSG:4326"), (modality, chip_id, row["missing_reason"])
    assert rows(tmp_path / "out", "gunw")[gunw_id]["missing_reason"] == "skipped: unrecognised marker text"
    for piece in SECRET_PIECES:
        assert piece not in done.output

    changed = {(canonical(modality), chip_id) for modality, chip_id in (*bad, ("gunw", gunw_id))}
    compared = 0
    for modality in scan_region(clean_chips / REGION).modalities:
        ours, theirs = samples(tmp_path / "out", modality), samples(tmp_path / "clean", modality)
        assert ours.keys() == theirs.keys()
        for chip_id, members in theirs.items():
            if (modality, chip_id) not in changed:
                assert ours[chip_id] == members, (modality, chip_id)
                compared += 1
    assert compared >= 140, compared  # 16 dataset folders x 10 chips, less the 14 planted ones
    assert verify_region(tmp_path / "out" / REGION) == []


# ------------------------------------------------------------------------------------ second lines of defence

def test_reader_child_caps_its_own_memory(tmp_path, monkeypatch):
    """A NetCDF chip within the limits (30 x 2048 x 2048 float32, 0.5 GB decoded) still fails in a reader child
    capped below that, as a ChipError, and the next chip is read by a fresh child."""
    monkeypatch.setenv("M3LEO_READER_MEMORY_MB", "700")
    path = tmp_path / "big.nc"
    netcdf_bomb(path, {"band": 30, "lat": 2048, "lon": 2048}, "f4")
    reader = IsolatedReader(timeout_s=TIMEOUT_S)
    try:
        with pytest.raises(ChipError, match=r"chip 0123456789abc: big\.nc: (out of memory|unreadable NetCDF)"):
            reader.read(get_modality("biomass"), path.read_bytes(), "0123456789abc", path.name)
        small = tmp_path / "small.nc"
        netcdf_bomb(small, {"lat": 8, "lon": 8})
        assert reader.read(get_modality("biomass"), small.read_bytes(), "0123456789abc", small.name).arrays
    finally:
        reader.close()


def test_a_file_url_tree_refuses_the_same_entries(chips, tmp_path):
    """``file://`` listings come from fsspec: FIFOs and links out of the region are refused there too."""
    (fifo_id, fifo), (link_id, link) = chip_files(chips, "esaworldcover")[:2]
    fifo.unlink()
    os.mkfifo(fifo)
    shutil.move(link, tmp_path / link.name)
    link.symlink_to(tmp_path / link.name)
    local = scan_region(chips / REGION).sources[canonical("esaworldcover")]
    remote = scan_region(f"file://{chips}/{REGION}").sources[canonical("esaworldcover")]
    for chip_id in (fifo_id, link_id):
        assert local[chip_id].status == remote[chip_id].status == "refused"
        assert local[chip_id].detail == remote[chip_id].detail
    assert "FIFO" in local[fifo_id].detail and "outside the chip tree" in local[link_id].detail
    followed = scan_region(f"file://{chips}/{REGION}", follow_symlinks=True).sources[canonical("esaworldcover")]
    assert followed[link_id].status == "file" and followed[fifo_id].status == "refused"


# ------------------------------------------------------------------------------------------ region tables

def _sparse(path: Path, size: int) -> None:
    path.unlink()
    with open(path, "wb") as handle:
        handle.truncate(size)


def _plant_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _deep_json(path: Path) -> None:
    path.write_text('{"features": ' + "[" * 200_000 + "]" * 200_000 + "}")


def _text_coordinates(path: Path) -> None:
    collection = json.loads(path.read_text())
    collection["features"][0]["geometry"]["coordinates"] = "x"  # a string of strings: endless nesting
    path.write_text(json.dumps(collection))


def _csv_huge_field(path: Path) -> None:
    path.write_text("identifier,split\n" + "0" * 300_000 + ",train\n")


@pytest.mark.parametrize("table, plant, message", [
    ("geojson", _plant_fifo, "not a regular file (FIFO)"),
    ("geojson", lambda p: _sparse(p, 300 * 2**20), "exceeds the limit of 268435456 bytes"),
    ("geojson", _deep_json, "not a GeoJSON FeatureCollection (RecursionError"),
    ("geojson", _text_coordinates, "feature 0: no identifier and polygon coordinates (RecursionError"),
    ("geojson", lambda p: p.write_bytes(b"\xff\xfe" + SECRET.encode("utf-16-le")), "is not UTF-8 text"),
    ("csv", _plant_fifo, "not a regular file (FIFO)"),
    ("csv", lambda p: _sparse(p, 300 * 2**20), "exceeds the limit of 268435456 bytes"),
    ("csv", _csv_huge_field, "not a valid CSV row"),
], ids=["geojson-fifo", "geojson-300mb", "geojson-deep", "geojson-text-coordinates", "geojson-utf16",
        "csv-fifo", "csv-300mb", "csv-huge-field"])
def test_bad_region_tables_are_named_errors(chips, table, plant, message):
    """The region's splits CSV and geojson: read within a size cap, never a FIFO, parsed without a bare
    RecursionError; each failure names the file and says what is wrong, never what it holds."""
    region = chips / REGION
    path = next(region.glob("*.geojson" if table == "geojson" else "*_splits_*.csv"))
    plant(path)
    done = limited(f"""
        from shard_tools.inventory import scan_region
        try:
            scan_region({str(region)!r})
            print("scanned without error")
        except ValueError as exc:
            print("ValueError:", exc)
        """, f"region {table}")
    assert "ValueError:" in done.stdout and path.name in done.stdout and message in done.stdout, done.output
    assert not any(piece in done.output for piece in SECRET_PIECES)
