"""An exclusive lock file so two builds never write into the same region at once."""

from __future__ import annotations

import os
import socket
from pathlib import Path


class BuildLocked(RuntimeError):
    """Another live build holds the region."""


class BuildLock:
    """``O_EXCL`` lock file holding ``host pid``; a lock left by a dead process on this host is taken over."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> "BuildLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    raise BuildLocked(f"{self.path}: another build is running ({self._holder()}); "
                                      "wait for it or remove the lock if that process is gone") from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(owner)
            return self
        raise BuildLocked(f"{self.path}: could not take the lock")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown holder"
        except OSError:
            return "unknown holder"

    def _stale(self) -> bool:
        return held_by_dead_local_process(self._holder())


def held_by_dead_local_process(holder: str) -> bool:
    """True when ``holder`` (``host pid``) names a process of this host that no longer exists."""
    try:
        host, pid = holder.split()
        number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
