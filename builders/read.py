"""Dispatch a chip file to the reader of its modality's container."""

from __future__ import annotations

from pathlib import Path

from builders.chip import ChipSample, check_chip_id
from builders.geotiff import read_geotiff
from builders.netcdf import read_netcdf
from builders.registry import Modality

READERS = {"geotiff": read_geotiff, "netcdf": read_netcdf}


def read_chip(modality: Modality, source: str | Path | bytes, chip_id: str, name: str | None = None) -> ChipSample:
    """Read one chip of ``modality`` from a path or raw bytes; raises ``ChipError`` naming chip and file."""
    label = name or (str(source) if not isinstance(source, bytes) else f"<{len(source)} bytes>")
    check_chip_id(chip_id, label)
    return READERS[modality.container](modality, source, chip_id, label)
