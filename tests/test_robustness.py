"""Robustness: damaged inputs give our clear errors, never a hang, a crash or a silent wrong value.

What "silent wrong value" means depends on what each layer can know:

* Chip files (``builders.read_chip``): GeoTIFF and NetCDF4 carry no checksum of their values, so a
  changed pixel byte cannot be noticed there (the build records each source file's sha256 in the
  sample json for provenance). The reader must raise ``ChipError`` naming the chip, or return arrays
  that agree with the file's own structure: the modality's dtype and band count, and field shapes and
  dtypes equal to what the metadata says. Unchanged bytes must give unchanged output.
* Shards (tar + json index): the index holds each shard's sha256. ``verify`` must report every changed
  byte. The stream without ``verify_checksums`` checks structure only: a damaged tar header, ``.npy``
  header or a truncation must raise ``ShardError`` or leave the output unchanged; damaged payload bytes
  (``.npy`` values, json text) may change that one member's values (same dtype and shape) and nothing
  else. With ``verify_checksums`` any changed byte ends the shard in ``ShardError``.
* Release Parquet (``convert-release``): Spark binaryFile rows carry no checksum of their own and zstd
  stores incompressible pixels as raw literals, so without page CRCs a damaged content byte often
  decompresses to a different, decodable chip (7 of 60 examples before CRCs were verified). With page
  CRCs (parquet-java writes them by default; the fixture adds them) a damaged file must give
  ``ValueError``/``OSError`` naming it, or a conversion in which every chip lost against the clean
  conversion comes with problems and no chip's content changed.

Hangs: every test runs under a ``faulthandler`` watchdog that aborts with tracebacks; each hypothesis
example has a deadline. Examples are derandomized so the suite is reproducible and stays under a minute.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import m3leo_hf
from builders import ChipError, get_modality, read_chip
from builders.isolated import IsolatedReader
from builders.registry import modality_for_folder
from builders.sample import write_release_parquet, write_sample
from shard_tools.build import build
from shard_tools.release import convert_release
from shard_tools.verify import verify_region
from tests.conftest import canonical

# h5netcdf's File.__del__ fails on a file whose open failed (AttributeError '_writable'): library noise
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

REGION = "conus"
MODALITIES = ("s1grd", "esaworldcover", "biomass")  # aliases: stream keys; shard folders are canonical(name)
ALIAS_OF = {canonical(name): name for name in MODALITIES}
WATCHDOG_S = 120
HANG_S = 5
FUZZ = settings(max_examples=60, deadline=timedelta(seconds=5), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def watchdog():
    """A hang anywhere (Python or C) aborts the run with every thread's traceback."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("robust_chips")
    write_sample(out, regions=(REGION,), chips_per_region=5, pixels=32, seed=0)
    return out


@pytest.fixture(scope="module")
def region(chips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("robust_shards")
    build(chips, out, modalities=MODALITIES, chips_per_shard=1)
    return out / REGION


@pytest.fixture(scope="module")
def release(chips, tmp_path_factory) -> Path:
    """The sample release, rewritten row group by row group with page CRCs (as parquet-java writes by
    default; pyarrow does not)."""
    out = tmp_path_factory.mktemp("robust_release")
    write_release_parquet(chips, out)
    for path in out.rglob("*.zstd.parquet"):
        source = pq.ParquetFile(path)
        groups = [source.read_row_group(g) for g in range(source.metadata.num_row_groups)]
        with pq.ParquetWriter(path, source.schema_arrow, compression="zstd", write_page_checksum=True) as writer:
            for table in groups:
                writer.write_table(table)
    return out


# -------------------------------------------------------------------------------------------- helpers

@st.composite
def damage(draw, size: int, spans: list[tuple] | None = None) -> tuple:
    """Without ``spans``: a truncation or 1-8 bytes overwritten anywhere; with: bytes overwritten
    starting inside one of the ``(kind, start, end, ...)`` spans."""
    if spans is None and draw(st.booleans()):
        return ("truncate", draw(st.integers(0, size - 1)))
    if spans is None:
        start = draw(st.integers(0, size - 1))
    else:
        span = draw(st.sampled_from(spans))
        start = draw(st.integers(span[1], span[2] - 1))
    return ("overwrite", start, draw(st.binary(min_size=1, max_size=8)))


def damaged(data: bytes, change: tuple) -> bytes:
    if change[0] == "truncate":
        return data[:change[1]]
    _, start, payload = change
    return data[:start] + payload[:len(data) - start] + data[start + len(payload):]


@contextmanager
def replaced(path: Path, data: bytes):
    """``path`` holds ``data`` inside the block and its original bytes after it."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)


def tar_spans(path: Path) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, member) of every byte range of a shard: tar_header, npy_header, npy_data,
    json, padding, end."""
    data = path.read_bytes()
    spans, end = [], 0
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            start, stop = member.offset_data, member.offset_data + member.size
            spans.append(("tar_header", member.offset, start, member.name))
            if member.name.endswith(".npy"):
                header = 10 + int.from_bytes(data[start + 8:start + 10], "little")
                spans += [("npy_header", start, start + header, member.name),
                          ("npy_data", start + header, stop, member.name)]
            else:
                spans.append(("json", start, stop, member.name))
            end = start + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if end > stop:
                spans.append(("padding", stop, end, member.name))
    spans.append(("end", end, len(data), ""))
    return [s for s in spans if s[2] > s[1]]


def shards(region: Path) -> list[Path]:
    return sorted(region.glob("*/*.tar"))


def splits(region: Path) -> list[str]:
    return sorted({path.name.split("-")[0] for path in shards(region)})


def streamed(region: Path, split: str, verify: bool = False) -> list[tuple[str, dict, dict]]:
    """(chip id, {modality.field: array}, meta) of every sample of ``split``."""
    data = m3leo_hf.stream(str(region), modalities=list(MODALITIES), split=split, shuffle=False, labels=False,
                           verify_checksums=verify)
    out = []
    for sample in data:
        arrays = {}
        for name in MODALITIES:
            value = sample[name]
            items = value.items() if isinstance(value, dict) else [(name, value)]
            arrays.update({f"{name}.{field}": tensor.numpy().copy() for field, tensor in items})
        out.append((sample["chip_id"], arrays, {m: sample["meta"][m] for m in MODALITIES}))
    return out


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------------------------ chip readers

@pytest.mark.parametrize("modality", ["s1grd", "esaworldcover", "ghsbuilts", "biomass", "gssic", "gunw"])
def test_read_chip_on_damaged_bytes(chips, modality):
    """GeoTIFF (plain and deflate) and NetCDF (flat and grouped): ``ChipError`` naming the chip, or
    arrays consistent with the modality and with their own metadata; equal bytes give equal output."""
    spec = get_modality(modality)
    path = next(p for p in sorted(chips.glob(f"{REGION}/*/{spec.folder}/*{spec.extension}")))
    chip_id = path.name.split(".")[0]
    original = path.read_bytes()
    clean = read_chip(spec, original, chip_id)

    @FUZZ
    @given(change=damage(len(original)))
    def check(change):
        data = damaged(original, change)
        try:
            sample = read_chip(spec, data, chip_id)
        except ChipError as exc:
            assert chip_id in str(exc) and exc.reason
            return
        if data == original:
            assert sample.arrays.keys() == clean.arrays.keys()
            assert all(same(sample.arrays[k], clean.arrays[k]) for k in clean.arrays)
        for name, array in sample.arrays.items():
            field = sample.meta["fields"][name]
            assert field["dtype"] == str(array.dtype) and field["shape"] == list(array.shape)
        if spec.container == "geotiff":
            (array,) = sample.arrays.values()
            assert str(array.dtype) == spec.stored_dtype and array.shape[0] == len(spec.band_names)

    check()


def hanging_gunw_chip(chips: Path) -> tuple[Path, bytes]:
    """The first gunw chip with bytes 6574-6576 set to 62 65 be: libhdf5 (via h5netcdf's dimension-scale
    lookup) loops forever on it, in C, where no Python signal or timeout can stop it."""
    path = sorted(chips.glob(f"{REGION}/*/{get_modality('gunw').folder}/*.nc"))[0]
    data = bytearray(path.read_bytes())
    data[6574:6577] = b"be\xbe"
    return path, bytes(data)


def test_isolated_reader_stops_a_reader_hanging_in_hdf5(chips):
    """The build reads NetCDF in a killable child: the hanging chip is a ChipError after the deadline,
    and the next chip reads normally in a fresh child."""
    path, data = hanging_gunw_chip(chips)
    reader = IsolatedReader(timeout_s=HANG_S)
    with pytest.raises(ChipError, match=f"chip {path.stem}: .*: reader still busy after {HANG_S} s"):
        reader.read(get_modality("gunw"), data, path.stem, path.name)
    good = reader.read(get_modality("gunw"), path.read_bytes(), path.stem, path.name)
    reference = read_chip(get_modality("gunw"), path, path.stem)
    assert good.arrays.keys() == reference.arrays.keys()
    assert all(np.array_equal(good.arrays[k], reference.arrays[k], equal_nan=True) for k in reference.arrays)
    reader.close()


def test_build_over_a_hanging_chip_finishes_and_names_it(chips, tmp_path):
    path, data = hanging_gunw_chip(chips)
    tree = tmp_path / "chips"
    shutil.copytree(chips, tree)
    (tree / path.relative_to(chips)).write_bytes(data)
    env = {**os.environ, "M3LEO_READ_TIMEOUT_S": str(HANG_S)}
    done = subprocess.run([sys.executable, "-m", "shard_tools.cli", "build", "--chips", str(tree), "--out",
                           str(tmp_path / "out"), "--modality", "gunw", "--chips-per-shard", "1", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=WATCHDOG_S)
    assert done.returncode == 0, done.stderr
    assert f"chip {path.stem}" in done.stderr and "reader still busy" in done.stderr
    rows = pq.read_table(tmp_path / "out" / REGION / "metadata" / f"{canonical('gunw')}.parquet").to_pylist()
    reasons = {r["chip_id"]: r["missing_reason"] for r in rows}
    assert reasons[path.stem].startswith("unreadable: reader still busy")
    assert verify_region(tmp_path / "out" / REGION) == []


# ----------------------------------------------------------------------------------------------- verify

def test_verify_reports_every_changed_shard_byte(region):
    """verify finds no problem in the built region and at least one whenever a shard byte changed
    (anywhere, or aimed at tar headers, .npy headers, payloads, padding, end blocks); it never raises."""
    assert verify_region(region) == []
    files = shards(region)

    @FUZZ
    @given(data=st.data())
    def check(data):
        path = data.draw(st.sampled_from(files))
        original = path.read_bytes()
        change = data.draw(st.one_of(damage(len(original)), damage(len(original), tar_spans(path))))
        mutated = damaged(original, change)
        with replaced(path, mutated):
            problems = verify_region(region)
        assert bool(problems) == (mutated != original)
        assert all(isinstance(p, str) for p in problems)

    check()


# ----------------------------------------------------------------------------------------------- stream

STRUCTURE = ("tar_header", "npy_header", "padding", "end")


def test_stream_structure_damage_is_an_error_or_harmless(region):
    """Without checksums: damaged tar headers, .npy headers, padding or end blocks, and truncations,
    raise ``ShardError`` or leave every sample unchanged."""
    files = shards(region)
    clean = {split: streamed(region, split) for split in splits(region)}

    @FUZZ
    @given(data=st.data())
    def check(data):
        path = data.draw(st.sampled_from(files))
        original = path.read_bytes()
        spans = [s for s in tar_spans(path) if s[0] in STRUCTURE]
        change = data.draw(st.one_of(st.tuples(st.just("truncate"), st.integers(0, len(original) - 1)),
                                     damage(len(original), spans)))
        split = path.name.split("-")[0]
        with replaced(path, damaged(original, change)):
            try:
                got = streamed(region, split)
            except m3leo_hf.ShardError:
                return
        _assert_same_samples(got, clean[split])

    check()


@pytest.mark.parametrize("old,new,message", [
    (b"'descr': '<i2'", b"'descr': '>i2'", r"\.npy is >i2 .* its json says int16"),
    # no view_as is stored (s1grd is int16 already): put one, of the same length, where source_dtype was
    (b'"source_dtype":"uint16"', b'"view_as":      "int26"', r"view_as 'int26', not a 2-byte dtype"),
])
def test_stream_refuses_reinterpreting_headers(region, old, new, message):
    """Damage that keeps a valid .npy header or json but would reinterpret every value (byte order,
    view_as) is refused, checksums or not (by the member's sha256 before decoding where the member is
    hashed: every member with checksums, json members always; tests/test_hostile_read.py rewrites the
    index to match and reaches the decoder's own checks)."""
    path = next(p for p in shards(region) if p.parent.name == canonical("s1grd"))
    original = path.read_bytes()
    with replaced(path, original.replace(old, new, 1)):
        for verify in (False, True):
            hashed = verify or old.startswith(b'"')  # a json member: its sha256 is always checked
            expected = r"sha256 [0-9a-f]{64} of member .* does not match the index" if hashed else message
            with pytest.raises(m3leo_hf.ShardError, match=expected):
                streamed(region, path.name.split("-")[0], verify=verify)


def _assert_same_samples(got: list, clean: list) -> None:
    assert [c for c, _, _ in got] == [c for c, _, _ in clean]
    for (_, arrays, meta), (_, clean_arrays, clean_meta) in zip(got, clean):
        assert arrays.keys() == clean_arrays.keys() and meta == clean_meta
        assert all(same(arrays[k], clean_arrays[k]) for k in arrays)


def test_stream_payload_damage_stays_in_its_member(region):
    """Without checksums: damaged .npy values or json text raise ``ShardError`` or change only that
    member (values of the same dtype and shape, or that sample's metadata); nothing else moves."""
    files = shards(region)
    clean = {split: streamed(region, split) for split in splits(region)}

    @FUZZ
    @given(data=st.data())
    def check(data):
        path = data.draw(st.sampled_from(files))
        original = path.read_bytes()
        spans = [s for s in tar_spans(path) if s[0] in ("npy_data", "json")]
        change = data.draw(damage(len(original), spans))
        member = next(s[3] for s in spans if s[1] <= change[1] < s[2])
        key, field = member.split(".", 1)[0], f"{ALIAS_OF[path.parent.name]}.{member.split('.')[1]}"
        split = path.name.split("-")[0]
        with replaced(path, damaged(original, change)):
            try:
                got = streamed(region, split)
            except m3leo_hf.ShardError:
                return
        assert [c for c, _, _ in got] == [c for c, _, _ in clean[split]]
        for (chip, arrays, meta), (_, clean_arrays, clean_meta) in zip(got, clean[split]):
            for name, array in arrays.items():
                assert array.dtype == clean_arrays[name].dtype and array.shape == clean_arrays[name].shape
                assert same(array, clean_arrays[name]) or (chip == key and name == field)
            assert meta == clean_meta or (chip == key and member.endswith(".json"))

    check()


def test_checksum_mismatch_is_reported_by_verify_and_by_the_stream(region):
    """Payload damage that still decodes (values, digits in the json, padding, end blocks) is caught by
    the shard sha256: verify names the shard, the stream with ``verify_checksums`` raises ``ShardError``."""
    files = shards(region)

    @FUZZ
    @given(data=st.data())
    def check(data):
        path = data.draw(st.sampled_from(files))
        original = path.read_bytes()
        spans = [s for s in tar_spans(path) if s[0] in ("npy_data", "padding", "end")]
        spans += _json_digits(original, tar_spans(path))
        _, start, _, _ = data.draw(st.sampled_from(spans))
        old = original[start]
        choices = b"0123456789" if chr(old).isdigit() else bytes(range(256))
        new = bytes([data.draw(st.sampled_from([b for b in choices if b != old]))])
        relative = f"{path.parent.name}/{path.name}"
        with replaced(path, damaged(original, ("overwrite", start, new))):
            assert any(relative in p and "sha256" in p for p in verify_region(region))
            with pytest.raises(m3leo_hf.ShardError, match=rf"{path.name}: (sha256|cannot read|member|sample)"):
                streamed(region, path.name.split("-")[0], verify=True)

    check()


def _json_digits(data: bytes, spans: list[tuple]) -> list[tuple]:
    """One-byte spans on the digits of every json member (a changed digit keeps the JSON valid)."""
    return [("digit", i, i + 1, name) for kind, start, stop, name in spans if kind == "json"
            for i in range(start, stop) if data[i:i + 1].isdigit()]


# ---------------------------------------------------------------------------------------------- release

def test_convert_release_on_damaged_parquet(release, tmp_path):
    """A damaged release Parquet file (with page CRCs): ``ValueError``/``OSError`` naming it, or a
    conversion where every chip lost against the clean conversion comes with problems and every other
    chip was converted from its unchanged content."""
    files = sorted(release.rglob("*.zstd.parquet"))
    clean: dict[str, dict[str, dict]] = {}

    def convert(modality: str) -> tuple[dict[str, dict], list[str]]:
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        report = convert_release([release], out, modalities=[modality], chips_per_shard=1)
        return {row["chip_id"]: row for row in _rows(out / REGION, modality)}, report.problems

    @FUZZ
    @given(data=st.data())
    def check(data):
        path = data.draw(st.sampled_from(files))
        modality = modality_for_folder(path.parent.name).name
        if modality not in clean:
            clean[modality] = convert(modality)[0]
        original = path.read_bytes()
        with replaced(path, damaged(original, data.draw(damage(len(original))))):
            try:
                rows, problems = convert(modality)
            except (ValueError, OSError) as exc:
                assert path.name in str(exc), exc
                return
        for chip, row in clean[modality].items():
            if row["available"] and not rows.get(chip, {}).get("available"):
                assert problems, f"chip {chip} lost without a problem"
            elif row["available"]:
                assert rows[chip]["sha256"] == row["sha256"], f"chip {chip}: content changed silently"

    check()


def _rows(region_dir: Path, modality: str) -> list[dict]:
    rows = []
    for tar_path in sorted((region_dir / modality).glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    info = json.loads(tar.extractfile(member).read())
                    rows.append({"chip_id": info["chip_id"], "available": info["available"],
                                 "sha256": info["source"].get("sha256")})
    return rows


# ------------------------------------------------------------------------------- builds and filesystems

def _cli(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """``m3leo-shard`` in a fresh process, optionally with files capped at ``limit_bytes`` (ulimit -f)."""
    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap raise EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "shard_tools.cli", *args], capture_output=True, text=True,
                          timeout=WATCHDOG_S, preexec_fn=cap if limit_bytes else None)


def _no_partial_shard(out: Path) -> None:
    """Every visible tar is complete (its build record matches it) and no temp file or lock is left."""
    region_dir = out / REGION
    assert not list(region_dir.rglob("*.tmp")) and not (region_dir / ".build" / "lock").exists()
    for tar_path in region_dir.glob("*/*.tar"):
        record = json.loads((region_dir / ".build" / tar_path.parent.name / f"{tar_path.stem}.json").read_text())
        assert tar_path.stat().st_size == record["size"]
        assert hashlib.sha256(tar_path.read_bytes()).hexdigest() == record["sha256"]


def test_concurrent_builds_are_refused_or_safe(chips, tmp_path):
    """Two real ``build`` processes into one output: the loser is refused with exit 2 naming the
    running build, or both succeed; the result verifies and equals a lone build."""
    out, lone = tmp_path / "out", tmp_path / "lone"
    args = ["build", "--chips", str(chips), "--modality", "s1grd", "--modality", "biomass",
            "--chips-per-shard", "1", "--quiet"]
    runs = [subprocess.Popen([sys.executable, "-m", "shard_tools.cli", *args, "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=WATCHDOG_S), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert any(code == 0 for code, _ in results), results
    for code, stderr in results:
        assert code == 0 or (code == 2 and "another build is running" in stderr), (code, stderr)
    assert _cli(*args, "--out", str(lone)).returncode == 0
    assert verify_region(out / REGION) == []
    for tar_path in sorted((lone / REGION).glob("*/*.tar")):
        assert (out / REGION / tar_path.relative_to(lone / REGION)).read_bytes() == tar_path.read_bytes()


def test_build_refused_while_another_holds_the_region(chips, tmp_path):
    """A live build's lock (held by a sleeping process) refuses a second build before it writes."""
    out = tmp_path / "out"
    lock = out / REGION / ".build" / "lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.parent.mkdir(parents=True)
        lock.write_text(f"{os.uname().nodename} {holder.pid}")
        done = _cli("build", "--chips", str(chips), "--out", str(out), "--modality", "s1grd", "--quiet")
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2 and "another build is running" in done.stderr and str(holder.pid) in done.stderr
    assert not list((out / REGION).glob("*/*.tar"))


def test_file_size_limit_leaves_no_partial_shard(chips, tmp_path):
    """Writes failing with EFBIG (``ulimit -f``, like a full disk) mid-shard: the build fails, no
    partial shard or temp file is visible, the lock is released and a re-run completes."""
    out = tmp_path / "out"
    args = ["build", "--chips", str(chips), "--out", str(out), "--modality", "s1grd", "--chips-per-shard", "4",
            "--quiet"]
    failed = _cli(*args, limit_bytes=48_000)
    assert failed.returncode != 0 and "File too large" in failed.stderr, failed.stderr[-2000:]
    _no_partial_shard(out)
    assert _cli(*args).returncode == 0
    assert verify_region(out / REGION) == []


@contextmanager
def read_only(folder: Path):
    """``folder`` refuses new files inside the block: ``chattr +i`` as root (who ignores modes), else
    ``chmod 555``."""
    folder.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    if root:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
            pytest.skip("cannot make a folder read-only as root here (no chattr +i)")
    else:
        folder.chmod(0o555)
    try:
        yield
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)])
        else:
            folder.chmod(0o755)


def test_read_only_output_leaves_no_partial_shard(chips, tmp_path):
    """A modality folder that refuses writes: the build fails naming the error, other shards are
    complete or absent, nothing partial is visible and a re-run after fixing it completes."""
    out = tmp_path / "out"
    args = ["build", "--chips", str(chips), "--out", str(out), "--modality", "s1grd", "--modality",
            "esaworldcover", "--chips-per-shard", "1", "--quiet"]
    with read_only(out / REGION / canonical("esaworldcover")):
        failed = _cli(*args)
        assert failed.returncode != 0 and ("not permitted" in failed.stderr or "denied" in failed.stderr)
        assert not list((out / REGION / canonical("esaworldcover")).iterdir())
    _no_partial_shard(out)
    assert _cli(*args).returncode == 0
    assert verify_region(out / REGION) == []
