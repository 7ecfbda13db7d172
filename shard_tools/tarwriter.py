"""Deterministic, atomic WebDataset tar writing that records where every member lands."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BLOCK = tarfile.BLOCKSIZE
MAX_NAME = 99


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` encoding of ``array`` (no pickle; header padded so data is 64-byte aligned)."""
    buffer = io.BytesIO()
    np.save(buffer, np.require(array, requirements="C"), allow_pickle=False)
    return buffer.getvalue()


def json_bytes(value: Any) -> bytes:
    """Canonical JSON: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass
class Member:
    name: str
    offset: int
    size: int
    sha256: str


@dataclass
class SampleExtent:
    key: str
    offset: int
    size: int
    members: list[Member] = field(default_factory=list)


class DeterministicTarWriter:
    """Writes samples to ``<dest>`` through a hidden temp file; ``close()`` fsyncs and renames.

    Headers are fixed (mtime 0, uid/gid 0, no user names, mode 0o444, USTAR) so equal input gives equal bytes.
    """

    def __init__(self, dest: Path):
        self.dest = Path(dest)
        self.tmp = self.dest.with_name(f".{self.dest.name}.tmp")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.tmp, "wb")
        self._hash = hashlib.sha256()
        self._tar = tarfile.open(fileobj=_HashingWriter(self._file, self._hash), mode="w", format=tarfile.USTAR_FORMAT)
        self.samples: list[SampleExtent] = []

    def write(self, key: str, members: list[tuple[str, bytes]]) -> SampleExtent:
        """Append one sample: ``members`` are (field extension, payload) pairs, written in the given order."""
        extent = SampleExtent(key, self._tar.offset, 0)
        for extension, payload in members:
            name = f"{key}.{extension}"
            if len(name) > MAX_NAME:
                raise ValueError(f"member name {name!r} longer than {MAX_NAME} characters")
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 0, 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            header_offset = self._tar.offset
            self._tar.addfile(info, io.BytesIO(payload))
            extent.members.append(Member(extension, header_offset + BLOCK, len(payload),
                                         hashlib.sha256(payload).hexdigest()))
        last = extent.members[-1]
        extent.size = last.offset + last.size - extent.offset
        self.samples.append(extent)
        return extent

    def close(self) -> tuple[int, str]:
        """Finish the archive, make it visible atomically; returns (size, sha256)."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.dest)
        _fsync_dir(self.dest.parent)
        return self.dest.stat().st_size, self._hash.hexdigest()

    def abort(self) -> None:
        """Drop the partial archive; nothing becomes visible."""
        try:
            self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class _HashingWriter:
    """File-like wrapper hashing what tarfile writes, so the shard is hashed in one pass."""

    def __init__(self, file, digest):
        self._file, self._digest = file, digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
