"""Build from a chip tree at an fsspec URL (memory://, file://): the same bytes as from the local folder."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest

from shard_tools.build import BuildOptions, build, build_inventories
from shard_tools.cli import main as cli
from shard_tools.inventory import find_regions, load_source, scan_region
from tests.conftest import CHIPS_PER_SHARD, canonical
from tests.test_build import all_files


@pytest.fixture
def memory_chips(sample_chips):
    """The sample chip tree copied into this process's memory:// filesystem."""
    root = f"/m3leo-url-input-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for path in sorted(sample_chips.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(sample_chips).as_posix()}", path.read_bytes())
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def without_paths(inventory) -> tuple:
    sources = {m: [(c, s.status, s.name, s.size, s.detail) for c, s in chips.items()]
               for m, chips in inventory.sources.items()}
    return inventory.region, inventory.stem, inventory.chips, sources, inventory.strays, len(inventory.problems)


def same_build(got: dict[str, bytes], want: dict[str, bytes]) -> bool:
    """The same files with the same bytes, except the private build records' ``plan_key``, which fingerprints the
    sources' modification times as each store reports them (a URL listing's differ from a local ``stat``)."""
    def comparable(path: str, data: bytes):
        if "/.build/" not in f"/{path}":
            return data
        record = json.loads(data)
        record.pop("plan_key")
        return record

    return sorted(got) == sorted(want) and all(comparable(k, got[k]) == comparable(k, want[k]) for k in want)


def test_memory_url_inventory_and_build_equal_the_local_ones(sample_chips, built, memory_chips, tmp_path):
    local, remote = find_regions(sample_chips), find_regions(memory_chips)
    assert remote == {name: f"{memory_chips}/{name}" for name in local}
    for name in local:
        ours = scan_region(remote[name])
        assert without_paths(ours) == without_paths(scan_region(local[name]))
        source = next(s for chips in ours.sources.values() for s in chips.values() if s.status == "file")
        assert source.path.startswith(f"{memory_chips}/{name}/") and len(load_source(source)) == source.size
    report = build(memory_chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD)
    assert report.written > 0
    assert same_build(all_files(tmp_path / "out"), all_files(built))


def test_cli_builds_from_a_file_url_with_two_workers(sample_chips, built, tmp_path):
    sources = [s for chips in scan_region(f"file://{sample_chips}/pakin").sources.values() for s in chips.values()]
    assert all(s.path.startswith(f"file://{sample_chips}/pakin/") for s in sources), "workers read by URL"
    out = tmp_path / "out"
    assert cli(["build", "--chips", f"file://{sample_chips}/", "--out", str(out), "--workers", "2",
                "--chips-per-shard", str(CHIPS_PER_SHARD), "--quiet"]) == 0
    assert same_build(all_files(out), all_files(built))


def test_bad_urls_and_regions_are_named(memory_chips, tmp_path, capsys):
    missing = f"memory:///m3leo-url-input-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such folder"):
        build(missing, tmp_path / "out")
    with pytest.raises(ValueError, match=rf"\['atlantis'\] not found under {memory_chips}"):
        build(memory_chips, tmp_path / "out", regions=["atlantis"])
    with pytest.raises(ValueError, match="private to each process"):
        build(memory_chips, tmp_path / "out", workers=2)
    assert cli(["build", "--chips", "nosuchproto://bucket/chips", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "nosuchproto://bucket/chips: cannot open this URL" in capsys.readouterr().err
    assert cli(["build", "--chips", missing, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert f"{missing}: no such folder" in capsys.readouterr().err


def test_unreadable_url_chip_names_chip_and_file(memory_chips, tmp_path):
    inventory = scan_region(f"{memory_chips}/pakin")
    chip_id, source = next((c, s) for c, s in sorted(inventory.sources[canonical("esaworldcover")].items()) if s.status == "file")
    fsspec.filesystem("memory").rm_file(source.path[len("memory://"):])
    report = build_inventories([inventory], tmp_path / "out", modalities=["esaworldcover"],
                               options=BuildOptions(chips_per_shard=CHIPS_PER_SHARD))
    problem = next(p for p in report.problems if chip_id in p)
    assert source.name in problem and "cannot read" in problem
    assert Path(tmp_path / "out" / "pakin" / "metadata" / f"{canonical('esaworldcover')}.parquet").is_file()
