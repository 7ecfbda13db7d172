"""``m3leo-shard``'s front door: help and defaults on every flag, ``--version``, progress bars (off with
``--quiet``, never from library calls), and a network failure as one line with a non-zero exit."""

from __future__ import annotations

import argparse
import io
import shutil
import socket
from pathlib import Path

import pytest

from shard_tools.cli import _parser, main as cli
from shard_tools.progress import Bars
from shard_tools.verify import verify_region


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_has_help_and_shows_its_default():
    for name, parser in subcommands().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
        text = " ".join(parser.format_help().split())  # undo line wrapping
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert f"default: {action.default}" in text or "default" in action.help, (name, action.dest)
    build = " ".join(subcommands()["build"].format_help().split())
    assert "(default: 1024.0)" in build and "(default: 1)" in build and "(default: None)" not in build


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("m3leo-shard ")


def test_verify_shows_a_progress_bar_unless_quiet(built, tmp_path, capsys):
    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region, ignore=shutil.ignore_patterns(".build"))
    assert cli(["verify", str(region)]) == 0
    bars = capsys.readouterr().err
    assert "verify conus" in bars and "100%" in bars and "shards" in bars and "B/s" in bars
    assert cli(["verify", str(region), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert verify_region(region) == []  # library call: silent
    assert capsys.readouterr().err == ""


def test_bars_count_items_and_bytes():
    out = io.StringIO()
    bars = Bars(out)
    bars.start("upload x", total=2, total_bytes=3_000_000, unit="commits")
    bars.advance(1, 1_000_000)
    bars.advance(1, 2_000_000)
    bars.close()
    text = out.getvalue()
    assert "upload x" in text and "2/2 commits" in text and "3.00M/3.00M" in text


@pytest.mark.datasets  # writes a card
def test_network_failure_is_one_line_and_non_zero(built, tmp_path, capsys):
    from dataset_cards.card import write_card

    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region, ignore=shutil.ignore_patterns(".build"))
    write_card(region, license="cc-by-4.0")
    with socket.socket() as probe:  # a local port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = cli(["publish", str(region), "--repo-id", "a/b", "--endpoint", f"http://127.0.0.1:{port}", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1, err
    assert err.startswith("m3leo-shard publish: error: network: ") and "Traceback" not in err
