"""Hostile regions on the read side (issue 10, items 1-3): every case streams in a child process under an
address-space limit and a timeout (``tests/limits.py``) and must end in a ``ShardError`` naming the file,
shard or sample and what is wrong, with a bounded peak RSS, never a bare MemoryError / RecursionError /
OverflowError / TypeError, a hang, or data handed out against the index.

The region is built once per module with the real builder; each test copies it and damages the copy. A
"consistent" rewrite (``rewrite_sample``) plays a hostile publisher who also fixes up the tar, the per-chip
Parquet (offsets, sizes, member sha256) and ``shards.json``, so only the plausibility checks can catch it.
Run with ``-s`` to print the case / outcome / peak RSS table.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builders.registry import get_modality
from builders.sample import write_sample
from limits import Limited, run_limited
from shard_tools.build import build
from shard_tools.metadata import CHIP_ROW_SCHEMA
from shard_tools.tarwriter import DeterministicTarWriter, npy_bytes

REGION = "conus"
MODALITIES = ["s1grd", "esaworldcover"]  # aliases of the 2020 products, as a user names them
S1, WC = (get_modality(name).name for name in MODALITIES)  # their config / shard-folder / metadata names
LIMIT_MB = 4096   # address space of each child, as in the issue (torch alone reserves ~2.3 GB of it)
PEAK_MB = 700     # a clean stream of this region peaks at ~390 MB (torch and friends imported)
TIMEOUT_S = 120
CHIPS_PER_SHARD = 3  # several shards per split

STREAM = """
import gc, json, m3leo_hf
root, modalities, options, after = {root!r}, {modalities!r}, json.loads({options!r}), {after!r}
seen = []
try:
    data = m3leo_hf.stream(root, modalities=modalities, shuffle=False, **options)
    exec(after)
    for sample in data:
        seen.append(sample["chip_id"])
    print("OK", len(seen))
except m3leo_hf.ShardError as exc:
    print("ShardError:", exc)
    print("yielded:", json.dumps(seen))
gc.collect()  # EXIT_GC
"""
# EXIT_GC: after a ShardError raised while the index is read, a process that imported torch and pyarrow (26)
# aborts at interpreter exit about every second run ("terminate called without an active exception"), after
# its output is complete; collecting garbage before exit avoids it. An environment issue, reported to the lead.


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile_chips")
    write_sample(out, regions=(REGION,), chips_per_region=8, pixels=32, seed=0)
    return out


@pytest.fixture(scope="module")
def clean(chips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile_shards")
    build(chips, out, modalities=MODALITIES, chips_per_shard=CHIPS_PER_SHARD)
    return out / REGION


@pytest.fixture
def region(clean, tmp_path) -> Path:
    copy = tmp_path / "shards" / REGION
    shutil.copytree(clean, copy)
    return copy


# -------------------------------------------------------------------------------------------- helpers

def streamed(region: Path, *, modalities=MODALITIES, after: str = "", **options) -> Limited:
    """Stream the train split of ``region`` in a limited child (running ``after`` once the stream exists)."""
    code = STREAM.format(root=str(region), modalities=list(modalities), options=json.dumps(options), after=after)
    return run_limited(code, limit_mb=LIMIT_MB, timeout_s=TIMEOUT_S)


def refused(result: Limited, case: str, *patterns: str) -> str:
    """The child ended in a ShardError matching ``patterns``, within ``PEAK_MB``; returns the message."""
    assert result.returncode == 0, result.output[-3000:]
    message = next((line for line in result.stdout.splitlines() if line.startswith("ShardError:")), None)
    assert message, result.output[-3000:]
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert result.peak_rss_mb is not None and result.peak_rss_mb < PEAK_MB, result.peak_rss_mb
    shown = re.sub(r"/tmp/\S+?/shards/conus/?", "", message[len("ShardError: "):])
    print(f"\nHOSTILE | {case} | {shown[:180]} | {result.peak_rss_mb:.0f} MB")
    return message


def yielded(result: Limited) -> list[str]:
    line = next(line for line in result.stdout.splitlines() if line.startswith("yielded:"))
    return json.loads(line.split(":", 1)[1])


def rows(region: Path, modality: str) -> list[dict]:
    return pq.read_table(region / "metadata" / f"{modality}.parquet").to_pylist()


def write_rows(region: Path, modality: str, table_rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(table_rows, schema=CHIP_ROW_SCHEMA), region / "metadata" / f"{modality}.parquet")


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


def shard_with_samples(region: Path, modality: str, count: int = 2) -> str:
    """Relative url of the first train shard of ``modality`` holding at least ``count`` available samples."""
    per_shard: dict[str, int] = {}
    for row in rows(region, modality):
        if row["split"] == "train" and row["available"]:
            per_shard[row["shard"]] = per_shard.get(row["shard"], 0) + 1
    return next(url for url, n in sorted(per_shard.items()) if n >= count)


def rewrite_sample(region: Path, modality: str, url: str, index: int,
                   edit: Callable[[dict[str, bytes]], dict[str, bytes]]) -> str:
    """Rewrite sample ``index`` of shard ``url`` with ``edit(members)`` and fix up the tar, the Parquet
    rows and shards.json so that everything agrees (a hostile but consistent publisher). Returns its key."""
    path = region / url
    samples: list[tuple[str, dict[str, bytes]]] = []
    with tarfile.open(path) as tar:
        for member in tar:
            key, extension = member.name.split(".", 1)
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            samples[-1][1][extension] = tar.extractfile(member).read()
    key = samples[index][0]
    samples[index] = (key, edit(dict(samples[index][1])))
    writer = DeterministicTarWriter(path)
    extents = [writer.write(k, list(members.items())) for k, members in samples]
    size, sha256 = writer.close()
    table_rows = rows(region, modality)
    for row in table_rows:
        if row["shard"] == url:
            extent = extents[row["sample_index"]]
            row.update(offset=extent.offset, size=extent.size,
                       members=[{"name": m.name, "offset": m.offset, "size": m.size, "sha256": m.sha256}
                                for m in extent.members])
    write_rows(region, modality, table_rows)

    def fix(index_json: dict) -> None:
        entry = next(e for e in index_json["shardlist"] if e["url"] == url)
        entry.update(filesize=size, sha256=sha256)

    edit_json(region / "metadata" / f"{modality}.shards.json", fix)
    return key


def with_json(members: dict[str, bytes], edit: Callable[[dict], None]) -> dict[str, bytes]:
    info = json.loads(members["json"])
    edit(info)
    members["json"] = json.dumps(info, sort_keys=True).encode()
    return members


def available_index(region: Path, modality: str, url: str, nth: int = 1) -> int:
    return [r["sample_index"] for r in sorted(rows(region, modality), key=lambda r: r["sample_index"])
            if r["shard"] == url and r["available"]][nth]


def member_row(region: Path, modality: str, url: str, index: int) -> dict:
    return next(r for r in rows(region, modality) if r["shard"] == url and r["sample_index"] == index)


# ------------------------------------------------------------------------------------ the clean region

def test_clean_region_streams_within_the_bound(region):
    result = streamed(region, spatial_size=448, normalize=True, verify_checksums=True)
    assert result.returncode == 0 and result.stdout.startswith("OK"), result.output[-3000:]
    assert result.peak_rss_mb < PEAK_MB
    print(f"\nHOSTILE | clean region, verify_checksums, spatial_size=448 | streams | {result.peak_rss_mb:.0f} MB")


# ------------------------------------------------------------------------------------- 1. bounded reading

def test_nsamples_of_a_billion_in_shards_json(region):
    edit_json(region / "metadata" / f"{S1}.shards.json",
              lambda index: index["shardlist"][0].update(nsamples=10**9))
    refused(streamed(region), "shards.json nsamples = 1e9",
            rf"metadata/{S1}\.shards\.json: {S1}/\w+-\d{{6}}\.tar: nsamples 1000000000 does not fit")


def test_shards_json_nested_100000_deep(region):
    (region / "metadata" / f"{S1}.shards.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(streamed(region), "shards.json nested 100,000 deep", rf"{S1}\.shards\.json: JSON nested too deeply")


def test_sample_json_nested_100000_deep(region):
    url = shard_with_samples(region, S1)
    index = available_index(region, S1, url)
    key = rewrite_sample(region, S1, url, index,
                         lambda m: {**m, "json": b"[" * 100_000 + b"]" * 100_000})
    refused(streamed(region), "sample json nested 100,000 deep",
            rf"{re.escape(url)}: member {key}\.json: JSON nested too deeply")


def with_3000_bands(region: Path) -> tuple[str, str]:
    """(shard url, chip id) of an s1grd sample rewritten to a 6 KB (3000, 1, 1) int16 array, its json and the
    index rewritten to match."""
    url = shard_with_samples(region, S1)
    index = available_index(region, S1, url)

    def edit(members):
        members["s1grd.npy"] = npy_bytes(np.zeros((3000, 1, 1), dtype=np.int16))
        return with_json(members, lambda info: info["fields"]["s1grd"].update(shape=[3000, 1, 1]))

    return url, rewrite_sample(region, S1, url, index, edit)


def test_npy_claiming_3000_bands_for_s1grd(region):
    """The 6 KB (3000, 1, 1) int16 array of the issue (s1grd is stored as int16), with its json and the index rewritten to match:
    refused against the declaration (16 bands) before the 448-px crop/pad could allocate 2.4 GB."""
    url, key = with_3000_bands(region)
    refused(streamed(region, spatial_size=448, verify_checksums=True), ".npy header (3000, 1, 1) for s1grd",
            rf"{re.escape(url)}: member {key}\.s1grd\.npy: shape \[3000, 1, 1\] exceeds the plausible \[16, ")


def test_npy_shape_product_overflow(region):
    """A header claiming (2**40,)*3 in place (same header length): no OverflowError, a ShardError."""
    url = shard_with_samples(region, S1)
    row = member_row(region, S1, url, available_index(region, S1, url))
    member = next(m for m in row["members"] if m["name"] == "s1grd.npy")
    path = region / url
    data = bytearray(path.read_bytes())
    head = bytes(data[member["offset"]:member["offset"] + 128])
    match = re.search(rb"'shape': \(\d+, \d+, \d+\), \}( +)\n", head)
    huge = b"'shape': (1099511627776, 1099511627776, 1099511627776), }"
    new = huge + b" " * (len(match.group(0)) - len(huge) - 1) + b"\n"
    start = member["offset"] + match.start()
    data[start:start + len(new)] = new
    path.write_bytes(bytes(data))
    refused(streamed(region), ".npy shape product overflow",
            rf"{re.escape(url)}: member {row['chip_id']}\.s1grd\.npy is not a valid \.npy array: header claims")


def rewrite_tar_header(path: Path, member: dict, **changes) -> None:
    """Rewrite the tar header in front of ``member`` with ``changes`` (name, size; checksum recomputed)."""
    data = bytearray(path.read_bytes())
    start = member["offset"] - tarfile.BLOCKSIZE
    info = tarfile.TarInfo.frombuf(bytes(data[start:start + tarfile.BLOCKSIZE]), tarfile.ENCODING, "surrogateescape")
    for key, value in changes.items():
        setattr(info, key, value)
    data[start:start + tarfile.BLOCKSIZE] = info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
    path.write_bytes(bytes(data))


def test_tar_header_claiming_a_3_5_gb_member(region):
    """The member buffer is sized from the index: the header's 3.5 GB is a named mismatch, not an allocation."""
    url = shard_with_samples(region, S1)
    row = member_row(region, S1, url, available_index(region, S1, url))
    member = next(m for m in row["members"] if m["name"] == "s1grd.npy")
    rewrite_tar_header(region / url, member, size=3_500_000_000)
    refused(streamed(region), "tar header claims a 3.5 GB member",
            rf"{re.escape(url)}: sample \d+ \({row['chip_id']}\): tar header of {row['chip_id']}\.s1grd\.npy says "
            rf"3500000000 bytes, the index says {member['size']}")


def test_parquet_of_4m_rows(region):
    """A small Parquet file holding 4M rows: refused from its footer (rows must match the shard index)."""
    n = 4_000_000
    member = {"name": "json", "offset": 512, "size": 600, "sha256": "0" * 64}
    columns = {field.name: pa.nulls(n, field.type) for field in CHIP_ROW_SCHEMA}
    columns.update(chip_id=pa.repeat(pa.scalar("0123456789abc"), n), split=pa.repeat(pa.scalar("train"), n),
                   shard=pa.repeat(pa.scalar(f"{S1}/train-000000.tar"), n), offset=pa.repeat(pa.scalar(0), n),
                   sample_index=pa.array(np.arange(n, dtype=np.int32)), available=pa.repeat(pa.scalar(True), n),
                   members=pa.repeat(pa.scalar([member], CHIP_ROW_SCHEMA.field("members").type), n))
    path = region / "metadata" / f"{S1}.parquet"
    pq.write_table(pa.table(columns, schema=CHIP_ROW_SCHEMA), path, compression="zstd")
    size_kb = path.stat().st_size / 1024
    refused(streamed(region), f"metadata Parquet of {size_kb:.0f} KB holding 4M rows",
            rf"metadata/{S1}\.parquet: 4000000 rows, the shard index lists \d+ samples")


def test_int64_label_codes_for_esaworldcover(region):
    """Label codes of 4e9 and -1 in an int64 array, json and index rewritten: refused against the declared
    uint8 before any label lookup."""
    url = shard_with_samples(region, WC)
    index = available_index(region, WC, url)

    def edit(members):
        codes = np.full((1, 33, 33), 10, dtype=np.int64)
        codes[0, 0, :2] = [4_000_000_000, -1]
        members["esaworldcover.npy"] = npy_bytes(codes)
        return with_json(members, lambda info: info["fields"]["esaworldcover"].update(dtype="int64", shape=[1, 33, 33]))

    key = rewrite_sample(region, WC, url, index, edit)
    refused(streamed(region), "int64 label code 4e9 in esaworldcover",
            rf"member {key}\.esaworldcover\.npy: dtype int64, the modality stores uint8")


def test_unusable_field_description_is_not_a_type_error(region):
    url = shard_with_samples(region, S1)
    index = available_index(region, S1, url)
    key = rewrite_sample(region, S1, url, index, lambda m: with_json(
        m, lambda info: info["fields"]["s1grd"].update(nodata=[1, 2])))
    refused(streamed(region, normalize=True), "field nodata [1, 2] in a sample json",
            rf"member {key}\.json: field s1grd: nodata \[1, 2\] is not a number")


def test_view_as_of_another_item_size(region):
    url = shard_with_samples(region, S1)
    index = available_index(region, S1, url)
    key = rewrite_sample(region, S1, url, index, lambda m: with_json(
        m, lambda info: info["fields"]["s1grd"].update(view_as="int32")))
    refused(streamed(region), "view_as int32 on an int16 field",
            rf"sample {key}: field s1grd has view_as 'int32', not a 2-byte dtype")


# ------------------------------------------------------------------------------------------ 2. containment

@pytest.mark.parametrize("url", [f"/tmp/outside/{S1}/train-000000.tar", f"../outside/{S1}/train-000000.tar",
                                 f"{S1}/../../outside/train-000000.tar"])
def test_shard_url_outside_the_region(region, url):
    outside = region.parent / "outside" / S1
    outside.mkdir(parents=True)
    shutil.copy(region / S1 / "train-000000.tar", outside / "train-000000.tar")
    edit_json(region / "metadata" / f"{S1}.shards.json", lambda index: index["shardlist"][0].update(url=url))
    refused(streamed(region), f"shard url {url}",
            rf"{S1}\.shards\.json: shard url '{re.escape(url)}' is not <modality>/<split>-NNNNNN\.tar inside the region")


def test_chip_id_that_is_not_13_hex(region):
    table_rows = rows(region, S1)
    table_rows[0]["chip_id"] = "../../etc/pwd"
    write_rows(region, S1, table_rows)
    refused(streamed(region), "chip id '../../etc/pwd' in the Parquet",
            rf"metadata/{S1}\.parquet: chip id '\.\./\.\./etc/pwd' is not 13 lower-case hex characters")


def test_tar_key_that_is_not_the_indexed_chip(region):
    """A tar whose member names another chip (header checksum fixed): an AlignmentError naming both."""
    url = shard_with_samples(region, S1)
    row = member_row(region, S1, url, available_index(region, S1, url))
    member = next(m for m in row["members"] if m["name"] == "s1grd.npy")
    rewrite_tar_header(region / url, member, name="ZZZZZZZZZZZZZ.s1grd.npy")
    refused(streamed(region), "tar member key 'ZZZZZZZZZZZZZ'",
            rf"{re.escape(url)}: sample \d+ is 'ZZZZZZZZZZZZZ', the index says '{row['chip_id']}'")


def test_out_of_range_label_codes_become_the_ignore_index():
    """-1, 4e9, NaN and codes between classes map to the ignore index; the lookup spans the class codes."""
    result = run_limited("""
import numpy as np
from m3leo_hf.transforms import IGNORE_INDEX, class_labels
from builders.registry import get_modality
codes = get_modality("esaworldcover").class_codes
label, presence = class_labels(np.array([[-1, 4_000_000_000, 10, 100, 11]], dtype=np.int64), codes)
assert label.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 0, len(codes) - 1, IGNORE_INDEX]], label
assert presence.sum() == 2
label, _ = class_labels(np.array([np.nan, -1.0, 20.0, 1e300]), codes)
assert label.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX], label
print("OK")
""", limit_mb=LIMIT_MB, timeout_s=TIMEOUT_S)
    assert result.returncode == 0 and result.stdout.startswith("OK"), result.output[-3000:]
    assert result.peak_rss_mb < PEAK_MB
    print(f"\nHOSTILE | label codes -1, 4e9, NaN | ignore index 255 | {result.peak_rss_mb:.0f} MB")


@pytest.mark.parametrize("std,why", [
    (float("nan"), r"std nan is not a finite number"),
    (float("inf"), r"std inf is not a finite number"),
    (1e-30, r"std 1e-30 is below 1e-06"),
    (-3.5, r"std -3\.5 is negative"),
])
def test_statistics_that_cannot_normalise(region, std, why):
    def edit(stats):
        stats["splits"]["train"]["s1grd"]["std"][2] = std

    path = region / "metadata" / f"{S1}.stats.json"
    edit_json(path, edit)  # json.dumps writes NaN / Infinity literals, which json.loads reads back
    band = json.loads(path.read_text())["splits"]["train"]["s1grd"]["band_names"][2]
    refused(streamed(region, normalize=True), f"stats.json std {std}",
            rf"metadata/{S1}\.stats\.json: refusing to normalise {S1}: field s1grd band {band}: {why}")
    unnormalised = streamed(region)
    assert unnormalised.stdout.startswith("OK"), unnormalised.output[-3000:]


# ------------------------------------------------------------------------------------ 3. integrity

def flip_value_byte(region: Path, url: str) -> dict:
    """Flip one value byte of the s1grd member of an available chip of shard ``url``; returns the chip's row."""
    row = member_row(region, S1, url, available_index(region, S1, url))
    member = next(m for m in row["members"] if m["name"] == "s1grd.npy")
    path = region / url
    data = bytearray(path.read_bytes())
    data[member["offset"] + member["size"] - 7] ^= 0xFF
    path.write_bytes(bytes(data))
    return row


def test_verify_checksums_never_yields_a_changed_sample(region):
    """A changed value byte in a later sample of a shard: the samples before it (verified) may come, the
    changed one never does; the error names the member and its sha256."""
    url = shard_with_samples(region, S1)
    row = flip_value_byte(region, url)
    result = streamed(region, verify_checksums=True)
    refused(result, "changed value byte, verify_checksums=True",
            rf"{re.escape(url)}: sha256 [0-9a-f]{{64}} of member {row['chip_id']}\.s1grd\.npy .* does not match the index")
    assert row["chip_id"] not in yielded(result)
    plain = streamed(region)  # without checksums a changed value byte is not noticed (documented)
    assert plain.stdout.startswith("OK"), plain.output[-3000:]


def test_verify_checksums_without_member_hashes_hashes_the_shard_first(region):
    """A region built before per-member hashes: the whole shard is verified before any of it is yielded."""
    url = shard_with_samples(region, S1)
    table_rows = rows(region, S1)
    for table_row in table_rows:
        table_row["members"] = [{**m, "sha256": None} for m in table_row["members"]]
    write_rows(region, S1, table_rows)
    chips_of_shard = {r["chip_id"] for r in table_rows if r["shard"] == url}
    flip_value_byte(region, url)
    result = streamed(region, verify_checksums=True)
    refused(result, "changed byte, no member hashes, verify_checksums=True",
            rf"{re.escape(url)}: sha256 [0-9a-f]{{64}} does not match the index")
    assert not chips_of_shard & set(yielded(result))


def test_shard_of_another_size_is_refused_when_opened(region):
    url = shard_with_samples(region, S1)
    path = region / url
    path.write_bytes(path.read_bytes() + b"\0" * 1024)
    refused(streamed(region), "shard 1 KB longer than indexed, no checksums",
            rf"{re.escape(url)}: \d+ bytes on disk, the index says \d+: truncated, replaced or rebuilt")


def _rebuild(chips: Path, out: Path, change: str) -> str:
    """Code that changes the chip tree and rebuilds ``out`` with the real builder (run inside the child)."""
    return f"""
import shutil
from pathlib import Path
from shard_tools.build import build
OUT = Path({str(out)!r})
tifs = sorted(Path({str(chips)!r}).glob("{REGION}/*/s1grd-2020/*.tif"))
{change}
build({str(chips)!r}, {str(out)!r}, modalities={MODALITIES!r}, chips_per_shard={CHIPS_PER_SHARD})
"""


@pytest.mark.parametrize("case,change", [
    ("same shapes, other values, from scratch",
     "import rasterio\nwith rasterio.open(next(t for t in tifs if t.stem == CHIP), 'r+') as f:\n    f.write(f.read() ^ 1)\n"
     f"shutil.rmtree(OUT / '{REGION}' / '.build')"),
    ("another chip's file", "target = next(t for t in tifs if t.stem == CHIP); shutil.copy(next(t for t in tifs if t != target), target)"),
    ("a chip lost its s1grd file", "next(t for t in tifs if t.stem == CHIP).unlink()"),
])
def test_region_rebuilt_under_a_running_reader(chips, region, tmp_path, case, change):
    """The stream's index is read, then the region is rebuilt from changed chips: the reader refuses the
    rebuilt shard (its size, or a json member's sha256, against the old index) without checksums, before
    the changed chip is yielded."""
    tree = tmp_path / "chips"
    shutil.copytree(chips, tree)
    chip = next(r["chip_id"] for r in sorted(rows(region, S1), key=lambda r: (r["shard"], r["sample_index"]))
                if r["split"] == "train" and r["available"])
    result = streamed(region, after=f"CHIP = {chip!r}" + _rebuild(tree, region.parent, change))
    message = refused(result, f"region rebuilt under the reader ({case})", rf"({S1}|{WC})/train-\d{{6}}\.tar: ")
    assert any(why in message for why in ("corrupt or changed shard", "rebuilt since the index was read",
                                          "No such file")), message
    assert chip not in yielded(result)


def test_member_hashes_are_recorded_by_the_build(clean):
    """Every member row carries the sha256 of its payload (what the checks above compare against)."""
    table_rows = rows(clean, S1)
    data = {url: (clean / url).read_bytes() for url in {r["shard"] for r in table_rows}}
    for row in table_rows:
        for member in row["members"]:
            payload = data[row["shard"]][member["offset"]:member["offset"] + member["size"]]
            assert member["sha256"] == hashlib.sha256(payload).hexdigest()


# ------------------------------------------------------------------- the same checks through m3leo_hf.load

LOAD = """
import m3leo_hf
try:
    data = m3leo_hf.load({root!r}, "s1grd", "train", normalize={normalize!r}, spatial_size=448)
    print("OK", sum(1 for _ in data))
except m3leo_hf.ShardError as exc:
    print("ShardError:", exc)
import gc; gc.collect()  # EXIT_GC
"""


def test_load_refuses_statistics_that_cannot_normalise(region):
    edit_json(region / "metadata" / f"{S1}.stats.json",
              lambda stats: stats["splits"]["train"]["s1grd"]["std"].__setitem__(0, float("nan")))
    result = run_limited(LOAD.format(root=str(region), normalize=True), limit_mb=LIMIT_MB, timeout_s=TIMEOUT_S)
    refused(result, "load(normalize=True) with a NaN std",
            rf"{S1}\.stats\.json: refusing to normalise {S1}: field s1grd band winter_vvasc: std nan is not a finite")


def test_load_refuses_an_array_beyond_the_declaration(region):
    """Through stock ``datasets`` (which decodes the .npy itself): the 3000-band chip is refused by
    ``load``'s decoder before the 448-px crop/pad."""
    from dataset_cards.card import write_card

    url, key = with_3000_bands(region)
    write_card(region)
    result = run_limited(LOAD.format(root=str(region), normalize=False), limit_mb=LIMIT_MB, timeout_s=TIMEOUT_S)
    refused(result, "load() of a (3000, 1, 1) s1grd chip",
            rf"sample '{key}': field s1grd: shape \[3000, 1, 1\] exceeds the plausible \[16, ")
