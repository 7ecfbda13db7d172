"""fsspec output primitives for builds into URLs: atomic put and a create-if-absent lock object."""

from __future__ import annotations

import os
import posixpath
import socket
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fsspec import AbstractFileSystem

from shard_tools.lock import BuildLocked, held_by_dead_local_process

# Stores where an uploaded object becomes visible only once complete (S3, GCS, Azure, Hub commits).
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "hf"}
# Backends whose ``open(path, "xb")`` fails on an existing object, and the first release that does it right.
EXCLUSIVE_CREATE = {"file": None, "local": None, "memory": None,
                    "s3": ("s3fs", "2025.7.0"), "s3a": ("s3fs", "2025.7.0"),
                    "gs": ("gcsfs", "2024.12.0"), "gcs": ("gcsfs", "2024.12.0")}


def is_url(value: str | Path) -> bool:
    """True for ``protocol://...`` strings; plain paths (and ``Path`` objects) are local."""
    return isinstance(value, str) and "://" in value


def protocols(fs: AbstractFileSystem) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def put_atomic(fs: AbstractFileSystem, local: Path, remote: str) -> None:
    """Copy ``local`` to ``remote`` so readers see nothing or the whole file.

    Object stores publish an object only when its upload completes; elsewhere the file is put to a hidden
    ``.<name>.tmp`` next to the target and moved over it (a rename on local disks).
    """
    if protocols(fs) & ATOMIC_PUT:
        fs.put_file(str(local), remote)
        return
    parent, name = posixpath.split(remote)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.tmp"
    fs.put_file(str(local), tmp)
    fs.mv(tmp, remote)


def exclusive_create_problem(fs: AbstractFileSystem) -> str | None:
    """Why a lock object on ``fs`` would not be exclusive, or None when create-if-absent is supported."""
    for protocol in sorted(protocols(fs) & set(EXCLUSIVE_CREATE)):
        requirement = EXCLUSIVE_CREATE[protocol]
        if requirement is None:
            return None
        package, minimum = requirement
        try:
            installed = version(package)
        except PackageNotFoundError:
            return f"{package} is not installed"
        if _release(installed) >= _release(minimum):
            return None
        return f"{package} {installed} predates exclusive writes ({minimum})"
    return (f"{'/'.join(sorted(protocols(fs)))}:// has no create-if-absent write in fsspec, so two builds "
            "could both take the lock")


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


class ObjectLock:
    """A lock object created with ``open(path, "xb")`` (``O_EXCL`` locally, a conditional PUT on S3/GCS).

    It holds ``host pid``; a lock left by a dead process on this host is taken over, any other is refused.
    Unlike the local lock it cannot see dead processes on other hosts: remove it by hand once that build is gone.
    """

    def __init__(self, fs: AbstractFileSystem, path: str):
        self.fs, self.path = fs, path

    def __enter__(self) -> "ObjectLock":
        owner = f"{socket.gethostname()} {os.getpid()}".encode()
        if not protocols(self.fs) & ATOMIC_PUT:
            self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                with self.fs.open(self.path, "xb") as handle:
                    handle.write(owner)
                return self
            except FileExistsError:
                holder = self._holder()
                if not held_by_dead_local_process(holder):
                    raise BuildLocked(f"{self.fs.unstrip_protocol(self.path)}: another build is running ({holder}); "
                                      "wait for it or delete the lock object if that build is gone") from None
                self.fs.rm_file(self.path)
        raise BuildLocked(f"{self.fs.unstrip_protocol(self.path)}: could not take the lock")

    def __exit__(self, *exc) -> None:
        self.fs.rm_file(self.path)

    def _holder(self) -> str:
        try:
            return self.fs.cat_file(self.path).decode(errors="replace").strip() or "unknown holder"
        except OSError:
            return "unknown holder"
