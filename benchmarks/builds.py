"""Build cases: ``m3leo-shard build``, ``convert-release`` and a plain copy of the same input bytes.

A case is ``run(params) -> {"chips", "bytes_in", "bytes_out"}`` writing into ``params["out"]``
(which must not exist); the child runner times it. ``bytes_in`` is the chip files' size in every case,
so MB/s compare the same input.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from shard_tools.inventory import find_regions, scan_region


def build(params: dict) -> dict:
    from shard_tools.build import build as build_shards

    report = build_shards(params["chips"], params["out"], shard_size_mb=params["shard_size_mb"],
                          workers=params["workers"], executor="local")
    return {"chips": report.chips, "bytes_in": report.bytes_in, "bytes_out": report.bytes_out}


def convert_release(params: dict) -> dict:
    from shard_tools.release import convert_release as convert

    report = convert([params["release"]], params["out"], shard_size_mb=params["shard_size_mb"],
                     workers=params["workers"])
    return {"chips": report.chips, "bytes_in": report.bytes_in, "bytes_out": report.bytes_out}


def copy(params: dict) -> dict:
    """``shutil.copy`` of exactly the chip files ``build`` reads (scanned the same way)."""
    chips, out = Path(params["chips"]), Path(params["out"])
    inventories = [scan_region(path) for path in find_regions(chips).values()]
    files = [Path(s.path) for inv in inventories for sources in inv.sources.values()
             for s in sources.values() if s.status == "file"]
    for file in files:
        target = out / file.relative_to(chips)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target)
    size = sum(f.stat().st_size for f in files)
    return {"chips": sum(len(inv.chips) for inv in inventories), "bytes_in": size, "bytes_out": size}


BUILD_CASES: dict[str, Callable[[dict], dict]] = {"build": build, "convert_release": convert_release, "copy": copy}
