"""Hostile region folders on the publish side (issue 10, item 5): ``m3leo-shard publish`` uploads exactly the
dataset layout, refuses (or with ``--skip-unknown`` leaves out and names) dotfiles, hidden folders, symlinks,
FIFOs and unknown files, and a Hub that cannot be reached or refuses is one line and a non-zero exit.

Every CLI run is a child under an address-space limit and a timeout (``tests/limits.py``) talking to the real
``huggingface_hub`` client's counterpart, the local Hub server of ``tests/local_hub.py``; what was uploaded is
counted on the server side. Run with ``-s`` to print the case / outcome / peak RSS table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path

import pytest
from local_hub import TEST_TOKEN, LocalHub

from builders.registry import get_modality
from dataset_cards.card import write_card
from limits import Limited, run_limited
from shard_tools.publish import region_layout
from shard_tools.verify import verify_region

REPO = "m3leo-test/hostile"
LIMIT_MB = 4096
PEAK_MB = 400
TIMEOUT_S = 120
SECRET = b"HF_TOKEN=hf_secret_do_not_publish\n"
S1 = get_modality("s1grd").name  # the shard folder of the 2020 s1grd product (``s1grd-2020``)

CLI = """
import sys
from shard_tools.cli import main
code = main({args!r})
sys.stdout.write(f"\\n__exit__={{code}}")
"""  # the exit code is printed, so the limited child still reports its peak RSS after main() returns


@pytest.fixture
def licensed(built: Path, tmp_path: Path) -> Path:
    """A copy of a built region (the shared ``built`` stays untouched) whose card declares a licence, so publish
    gets past its licence check to the layout and the Hub."""
    copy = tmp_path / "conus"
    shutil.copytree(built / "conus", copy)
    write_card(copy, license="cc-by-4.0")
    return copy


@pytest.fixture
def region(licensed: Path, tmp_path: Path) -> Path:
    """A built region (real builder) with everything a maintainer's folder may collect besides the dataset."""
    copy = licensed
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(SECRET)
    (copy / ".env").write_bytes(SECRET)
    (copy / ".git").mkdir()
    (copy / ".git" / "config").write_text('[remote "origin"]\n\turl = https://user:hf_secret@huggingface.co/x\n')
    (copy / "metadata" / "extra.json").symlink_to(outside / "secret.json")     # named like the layout
    (copy / S1 / "train-000099.tar").symlink_to(copy / S1 / "train-000000.tar")  # inside, still a link
    shutil.rmtree(copy / "quicklooks")  # the card's own quicklooks, replaced by a link leaving the region
    (copy / "quicklooks").symlink_to(outside, target_is_directory=True)
    (copy / "notes.txt").write_text("stray")
    os.mkfifo(copy / "metadata" / "pipe.json")
    return copy


REFUSED = [".env (dotfile)", ".git/ (hidden folder)", "metadata/extra.json (symlink to a path outside the region)",
           "metadata/pipe.json (not a regular file)", "notes.txt (not part of the dataset layout)",
           "quicklooks (symlink to a path outside the region)", f"{S1}/train-000099.tar (symlink)"]


def cli(*args: str) -> Limited:
    """``m3leo-shard ARGS`` in a limited child; ``returncode`` is the command's exit code."""
    result = run_limited(CLI.format(args=list(args)), limit_mb=LIMIT_MB, timeout_s=TIMEOUT_S)
    stdout, marker, code = result.stdout.rpartition("\n__exit__=")
    assert result.returncode == 0 and marker, result.output[-3000:]
    return Limited(int(code), stdout, result.stderr, result.peak_rss_mb)


def report(case: str, result: Limited, outcome: str) -> None:
    assert result.peak_rss_mb is not None and result.peak_rss_mb < PEAK_MB, result.peak_rss_mb
    print(f"\nHOSTILE | {case} | {outcome[:200]} | {result.peak_rss_mb:.0f} MB")


def dataset_files(region: Path) -> set[str]:
    """What the layout says a region publishes: regular files named as documented."""
    return {f.path for f in region_layout(region).files}


def test_layout_sorts_every_entry(region):
    layout = region_layout(region)
    assert sorted(layout.refused) == sorted(REFUSED)
    assert layout.build_state == [".build/"]
    assert {f.path.split("/")[0] for f in layout.files} <= {"README.md", "croissant.json", "metadata", S1,
                                                             *(p.name for p in region.iterdir() if p.is_dir())}
    assert all(not Path(f.file).is_symlink() and Path(f.file).is_file() for f in layout.files)


def test_publish_refuses_the_region_and_uploads_nothing(region, local_hub: LocalHub):
    result = cli("publish", str(region), "--repo-id", REPO, "--endpoint", local_hub.url, "--token", TEST_TOKEN)
    assert result.returncode == 1, result.output[-3000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nothing was uploaded" in result.stderr and "--skip-unknown" in result.stderr
    for item in REFUSED:
        assert item in result.stderr, item
    assert local_hub.uploads(REPO) == {} and local_hub.repos == {}
    report("publish of a region with .env, .git/, symlinks, a FIFO, a stray file", result,
           f"exit 1, refused, 0 files uploaded: {result.stderr.strip()[-160:]}")


def test_publish_skip_unknown_uploads_only_the_dataset(region, local_hub: LocalHub):
    result = cli("publish", str(region), "--repo-id", REPO, "--endpoint", local_hub.url, "--token", TEST_TOKEN,
                 "--skip-unknown")
    assert result.returncode == 0, result.output[-3000:]
    assert f"left out {len(REFUSED)} outside the dataset layout" in result.stdout
    uploaded = set(local_hub.uploads(REPO))
    assert uploaded == dataset_files(region)
    assert not any(p.startswith((".env", ".git", ".build", "notes", "quicklooks")) or p in (
        "metadata/extra.json", "metadata/pipe.json", f"{S1}/train-000099.tar") for p in uploaded)
    assert hashlib.sha256(SECRET).hexdigest() not in set(local_hub.files(REPO).values())
    report("publish --skip-unknown of the same region", result,
           f"exit 0, {len(uploaded)} dataset files uploaded, the {len(REFUSED)} others named and left out")


def test_verify_reports_what_publish_refuses(region):
    problems = verify_region(region)
    for item in REFUSED:
        assert f"{item}: publish refuses it" in problems, (item, problems)
    result = cli("verify", str(region))
    assert result.returncode == 1 and all(item in result.stderr for item in REFUSED), result.output[-3000:]
    report("verify of the same region", result, f"exit 1, {len(REFUSED)} refused paths reported")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_publish_without_network_is_one_line(licensed: Path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    result = cli("publish", str(licensed), "--repo-id", REPO, "--endpoint", endpoint, "--token", TEST_TOKEN,
                 "--quiet")  # no progress bars on stderr: what is left is the error alone
    assert result.returncode == 3, result.output[-3000:]  # a network failure, as for every subcommand
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"m3leo-shard publish: error: network: cannot reach the Hub at {endpoint}: "), lines
    report("publish with the Hub unreachable", result, lines[0])


def test_publish_refused_by_the_hub_is_one_line(licensed: Path, local_hub: LocalHub):
    result = cli("publish", str(licensed), "--repo-id", REPO, "--endpoint", local_hub.url,
                 "--token", "hf_wrong_token", "--quiet")  # no progress bars on stderr: the error alone
    assert result.returncode == 1, result.output[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("m3leo-shard publish: error: the Hub refused a request") and "401" in lines[0], lines
    assert local_hub.repos == {}
    report("publish with a token the Hub refuses", result, lines[0])
