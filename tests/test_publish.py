"""publish() against a real Hub-compatible HTTP server (tests/local_hub.py), read back with the real clients.

In this process clients get ``endpoint=hub.url`` explicitly. ``datasets`` reads ``HF_ENDPOINT`` at import,
so ``load_dataset`` runs in a subprocess started with ``hub.client_env(...)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.hf_api import RepoFile
from local_hub import TEST_TOKEN, LocalHub

from shard_tools.publish import PublishError, PublishReport, publish
from tests.conftest import canonical

REPO = "m3leo-test/region-x"
SHAPE = (4, 8, 8)
SHARDS = {"train-000000": 3, "train-000001": 3, "val-000000": 2}
CARD = """---
license: cc-by-4.0
configs:
- config_name: s1grd
  data_files:
  - split: train
    path: s1grd/train-*.tar
  - split: val
    path: s1grd/val-*.tar
dataset_info:
- config_name: s1grd
  features:
  - name: s1grd.npy
    dtype:
      array3_d:
        shape: [4, 8, 8]
        dtype: uint16
  - name: json
    struct:
    - name: chip_id
      dtype: string
    - name: split
      dtype: string
  - name: __key__
    dtype: string
  - name: __url__
    dtype: string
---
# Test region (hand-made fixture)
"""

# Python format: with_format("numpy") would widen uint16 to int64 (datasets' NumpyFormatter default).
LOAD_SCRIPT = """
import json, sys
import numpy as np
from datasets import load_dataset
out = {}
for streaming in (True, False):
    ds = load_dataset(sys.argv[1], "s1grd", split="train", streaming=streaming)
    rows = {r["__key__"]: np.asarray(r["s1grd.npy"]).tolist() for r in ds}
    out[str(streaming)] = {"dtype": ds.features["s1grd.npy"].dtype, "rows": rows}
print(json.dumps(out))
"""


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, samples: dict[str, np.ndarray], split: str) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for chip_id, array in samples.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            _add_member(tar, f"{chip_id}.s1grd.npy", buffer.getvalue())
            _add_member(tar, f"{chip_id}.json", json.dumps({"chip_id": chip_id, "split": split}).encode())


def build_region(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Test fixture (not the real builder): a tiny s1grd region; returns ``{split: {chip_id: array}}``."""
    rng = np.random.default_rng(0)
    (root / "s1grd").mkdir(parents=True)
    (root / "metadata").mkdir()
    arrays: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for shard, count in SHARDS.items():
        split = shard.split("-")[0]
        ids = sorted(f"{rng.integers(16**12, 16**13):013x}" for _ in range(count))
        samples = {chip_id: rng.integers(0, 65535, SHAPE, dtype=np.uint16) for chip_id in ids}
        _write_shard(root / "s1grd" / f"{shard}.tar", samples, split)
        arrays.setdefault(split, {}).update(samples)
        rows += [{"chip_id": c, "split": split, "shard": f"s1grd/{shard}.tar"} for c in samples]
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata" / "s1grd.parquet")
    (root / "README.md").write_text(CARD)
    (root / ".build" / "s1grd").mkdir(parents=True)
    (root / ".build" / "s1grd" / "train-000000.json").write_text("{}")
    (root / "s1grd" / ".train-000002.tar.tmp").write_bytes(b"partial")
    return arrays


def local_sha256(root: Path) -> dict[str, str]:
    files = [p for p in root.rglob("*") if p.is_file() and ".build" not in p.parts and not p.name.endswith(".tmp")]
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def remote_sha256(hub: LocalHub, revision: str = "main") -> dict[str, str]:
    return {p: sha for p, sha in hub.files(REPO, revision).items() if p != ".gitattributes"}


def no_problems(_: Path) -> list[str]:
    return []


def run_publish(region: Path, hub: LocalHub, **kwargs: Any) -> PublishReport:
    return publish(region, REPO, endpoint=hub.url, token=TEST_TOKEN, verify=no_problems, **kwargs)


@pytest.fixture
def region(tmp_path: Path) -> Path:
    build_region(tmp_path / "region")
    return tmp_path / "region"


def test_publish_uploads_everything_once_card_last(region: Path, local_hub: LocalHub, tmp_path: Path) -> None:
    report = run_publish(region, local_hub, max_files_per_commit=2)

    assert remote_sha256(local_hub) == local_sha256(region)
    assert sorted(report.uploaded) == sorted(local_sha256(region)) and report.commits == 3
    assert local_hub.history(REPO)[0].endswith("dataset card") and len(local_hub.history(REPO)) == 4
    listing = HfApi(endpoint=local_hub.url).list_repo_tree(REPO, repo_type="dataset", recursive=True)
    tree = {e.path: e for e in listing if isinstance(e, RepoFile) and e.path != ".gitattributes"}
    assert tree.keys() == local_sha256(region).keys()
    assert {p: e.lfs.sha256 for p, e in tree.items() if e.lfs} == {
        p: sha for p, sha in local_sha256(region).items() if p.endswith((".tar", ".parquet"))
    }
    path = "s1grd/train-000001.tar"
    tar = hf_hub_download(REPO, path, repo_type="dataset", endpoint=local_hub.url, cache_dir=tmp_path / "dl")
    assert Path(tar).read_bytes() == (region / path).read_bytes()

    again = run_publish(region, local_hub)
    assert (again.uploaded, again.commits, len(again.skipped)) == ([], 0, len(report.uploaded))


def test_changed_files_are_reuploaded(region: Path, local_hub: LocalHub) -> None:
    run_publish(region, local_hub)
    _write_shard(region / "s1grd" / "val-000000.tar", {"0123456789abc": np.ones(SHAPE, np.uint16)}, "val")  # LFS
    (region / "README.md").write_text(CARD + "\nMore text.\n")  # regular file

    report = run_publish(region, local_hub)

    assert report.uploaded == ["s1grd/val-000000.tar", "README.md"]
    assert remote_sha256(local_hub) == local_sha256(region)


def test_dry_run_touches_nothing(region: Path, local_hub: LocalHub) -> None:
    report = run_publish(region, local_hub, dry_run=True, max_files_per_commit=2)

    assert report.dry_run and report.commits == 3 and len(report.uploaded) == 5
    assert report.bytes == sum((region / p).stat().st_size for p in report.uploaded)
    assert local_hub.repos == {}


def test_interrupted_publish_resumes_without_reuploading(region: Path, local_hub: LocalHub) -> None:
    local_hub.fail_commits_after(1)
    with pytest.raises(PublishError, match="commit 2/3 .* failed after 1 landed"):
        run_publish(region, local_hub, max_files_per_commit=2)
    assert "README.md" not in local_hub.files(REPO)

    report = run_publish(region, local_hub, max_files_per_commit=2)

    assert len(report.uploaded) == 3 and report.uploaded[-1] == "README.md"
    assert remote_sha256(local_hub) == local_sha256(region)
    assert set(local_hub.uploads(REPO).values()) == {1}


def test_refuses_region_failing_verification(region: Path, local_hub: LocalHub) -> None:
    problem = "s1grd/train-000000.tar: sha256 differs from metadata/s1grd.shards.json"
    with pytest.raises(PublishError, match=f"1 verification problems:\n  {problem}"):
        publish(region, REPO, endpoint=local_hub.url, token=TEST_TOKEN, verify=lambda _: [problem])
    with pytest.raises(PublishError, match="shards.json"):  # default: shard_tools.verify.verify_region
        publish(region, REPO, endpoint=local_hub.url, token=TEST_TOKEN)
    assert local_hub.repos == {}


def test_refuses_crowded_folder(region: Path, local_hub: LocalHub) -> None:
    with pytest.raises(PublishError, match="'s1grd': 3"):
        run_publish(region, local_hub, max_folder_entries=3)
    assert local_hub.repos == {}


def test_publish_to_branch_leaves_main_alone(region: Path, local_hub: LocalHub) -> None:
    run_publish(region, local_hub, revision="staging")

    assert remote_sha256(local_hub, "staging") == local_sha256(region)
    assert remote_sha256(local_hub, "main") == {}


@pytest.mark.datasets
def test_load_dataset_reads_published_repo(local_hub: LocalHub, tmp_path: Path) -> None:
    train = build_region(tmp_path / "region")["train"]
    run_publish(tmp_path / "region", local_hub)

    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, REPO],
        env=local_hub.client_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    expected = {"dtype": "uint16", "rows": {chip_id: array.tolist() for chip_id, array in train.items()}}
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"True": expected, "False": expected}


def carded_copy(region_dir: Path, tmp_path: Path) -> Path:
    """A copy of a built region (the shared ``built`` stays untouched) with a card declaring a licence."""
    from dataset_cards.card import write_card

    copy = tmp_path / region_dir.name
    shutil.copytree(region_dir, copy, ignore=shutil.ignore_patterns(".build"))
    write_card(copy, license="cc-by-4.0")
    return copy


@pytest.mark.datasets
def test_publishes_a_built_region_with_default_verify(built: Path, local_hub: LocalHub, tmp_path: Path) -> None:
    region_dir = carded_copy(sorted(p for p in built.iterdir() if p.is_dir())[0], tmp_path)  # real builder

    report = publish(region_dir, REPO, endpoint=local_hub.url, token=TEST_TOKEN, max_files_per_commit=50)

    assert remote_sha256(local_hub) == local_sha256(region_dir)
    data_files = len(report.uploaded) - 1  # the card goes in a last commit of its own
    assert report.uploaded[-1] == "README.md" and report.commits == -(-data_files // 50) + 1
    assert not any(".build" in p for p in report.uploaded)


def test_stale_shards_of_an_earlier_build_are_deleted_with_the_card(region: Path, local_hub: LocalHub) -> None:
    stale = region / "s1grd" / "train-000099.tar"
    stale.write_bytes((region / "s1grd" / "train-000000.tar").read_bytes())
    run_publish(region, local_hub)
    HfApi(endpoint=local_hub.url, token=TEST_TOKEN).upload_file(  # publish uploads only the dataset layout
        path_or_fileobj=b"uploaded by hand", path_in_repo="NOTES.md", repo_id=REPO, repo_type="dataset")
    stale.unlink()

    dry = run_publish(region, local_hub, dry_run=True)
    assert dry.deleted == ["s1grd/train-000099.tar"] and "s1grd/train-000099.tar" in local_hub.files(REPO)
    report = run_publish(region, local_hub)

    assert report.deleted == ["s1grd/train-000099.tar"] and report.remote_only == ["NOTES.md"]
    assert remote_sha256(local_hub) == {**local_sha256(region), "NOTES.md": remote_sha256(local_hub)["NOTES.md"]}
    kept = run_publish(region, local_hub, prune=False)
    assert kept.deleted == [] and kept.commits == 0


def test_publish_refuses_a_region_without_a_declared_licence(region: Path, local_hub: LocalHub) -> None:
    card = region / "README.md"
    card.write_text(CARD.replace("license: cc-by-4.0\n", ""))
    with pytest.raises(PublishError, match="no dataset licence declared"):
        run_publish(region, local_hub)
    card.unlink()
    with pytest.raises(PublishError, match="no dataset licence declared"):
        run_publish(region, local_hub, dry_run=True)
    card.write_text(CARD)
    with pytest.raises(PublishError, match="--license cc0-1.0 but README.md declares cc-by-4.0"):
        run_publish(region, local_hub, license="cc0-1.0")
    assert local_hub.repos == {}
    assert run_publish(region, local_hub, license="cc-by-4.0").commits


@pytest.mark.datasets
def test_cli_publish_dry_run_then_upload_and_refusal(built: Path, region: Path, local_hub: LocalHub, capsys,
                                                     tmp_path: Path) -> None:
    from shard_tools.cli import main as cli

    region_dir = carded_copy(built / "europe", tmp_path)
    common = ["--repo-id", REPO, "--endpoint", local_hub.url, "--token", TEST_TOKEN]
    assert cli(["publish", str(region_dir), *common, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "would upload" in plan and f"  upload {canonical('s1grd')}/train-000000.tar" in plan and local_hub.repos == {}
    assert cli(["publish", str(region_dir), *common, "--quiet"]) == 0
    assert remote_sha256(local_hub) == local_sha256(region_dir)
    assert capsys.readouterr().err == ""  # --quiet: no bar on stderr
    assert cli(["publish", str(region), *common]) == 1
    assert "refusing to publish" in capsys.readouterr().err
