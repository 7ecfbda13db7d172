"""What a chip file of a modality may be, checked before anything is allocated, and bounded file reads.

The limits come from the modality's declaration where it has one (band count, dtype) and otherwise from
plausible sizes of M3LEO chips (448 px at 10 m, about 50 px at 90 m): a file or a decoded chip beyond them
is refused with a ``ChipError`` before its data are read, so a decompression bomb costs its metadata only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builders.registry import Modality

MAX_SIDE = 2048
"""Pixels per spatial axis (4.5 times a 448-px GEE chip)."""
MAX_LAYERS = 1024
"""Non-spatial elements per variable when the modality declares no band list (date pairs x components)."""
MAX_CHIP_BYTES = 512 * 2**20
"""Decoded bytes of one chip, all fields together."""
FILE_OVERHEAD_BYTES = 16 * 2**20
"""Container overhead allowed above the decoded size (headers, coordinates, attributes)."""
MAX_FILE_BYTES = MAX_CHIP_BYTES + FILE_OVERHEAD_BYTES
"""The largest chip file of any modality."""
MAX_MARKER_BYTES = 4096
"""Bytes read from a ``.skipped`` marker (its text is one short error code)."""
MAX_TABLE_BYTES = 256 * 2**20
"""Bytes read from a region's splits CSV or geojson (about a million chips' polygons)."""


@dataclass(frozen=True)
class ChipLimits:
    """Bounds for one chip of one modality."""

    max_side: int
    max_layers: int
    max_decoded_bytes: int
    max_file_bytes: int


def chip_limits(modality: Modality) -> ChipLimits:
    """Limits for ``modality``: its declared band count and dtype bound the decoded size when it has them."""
    layers = len(modality.band_names) or MAX_LAYERS
    itemsize = np.dtype(modality.dtype).itemsize if modality.dtype else 8
    decoded = min(MAX_CHIP_BYTES, layers * itemsize * MAX_SIDE**2)
    return ChipLimits(MAX_SIDE, layers, decoded, decoded + FILE_OVERHEAD_BYTES)


def file_kind(mode: int) -> str:
    """A readable name of a file type (``stat`` mode)."""
    kinds = ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def read_capped(path: str | Path, max_bytes: int) -> bytes:
    """Content of the regular file at ``path``, refusing other file types and files over ``max_bytes``.

    The type is checked before the file is opened (a FIFO would block, a device would never end) and again
    on the open descriptor; at most ``max_bytes + 1`` bytes are read. Failures are ``OSError``s whose
    message says what is wrong, never what the file holds.
    """
    kind = file_kind(os.stat(path).st_mode)
    if kind != "regular file":
        raise OSError(f"not a regular file ({kind})")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file ({file_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise OSError(too_large(info.st_size, max_bytes))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(too_large(len(data), max_bytes))
    return data


def too_large(size: int, max_bytes: int) -> str:
    return f"file of {size} bytes exceeds the limit of {max_bytes} bytes"
