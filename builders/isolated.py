"""Read chips in a child process that can be killed: libhdf5 loops forever on some damaged files.

``IsolatedReader.read`` sends the chip's bytes to a long-lived child (``python -m builders.isolated``) over a
pipe and waits at most ``timeout_s`` for the arrays; a child that does not answer is killed and the chip
gets a ``ChipError`` naming it, so a damaged file costs one chip, never the build. The deadline defaults
to ``M3LEO_READ_TIMEOUT_S`` (120 s). The child also caps its own address space at ``M3LEO_READER_MEMORY_MB``
(4096 MB): should a chip get past the checks of ``builders.limits``, running out of memory is that chip's
``ChipError``, not the machine's.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import struct
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from builders.chip import ChipError, ChipSample
from builders.declarations import Modality
from builders.read import ContainerReader

READ_TIMEOUT_S = float(os.environ.get("M3LEO_READ_TIMEOUT_S", "120"))
READER_MEMORY_MB = int(os.environ.get("M3LEO_READER_MEMORY_MB", "4096"))
_HEADER = struct.Struct("<Q")


def send(stream: BinaryIO, message: object) -> None:
    payload = pickle.dumps(message, protocol=5)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def receive(stream: BinaryIO) -> object:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("reader process closed its pipe")
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))


class IsolatedReader:
    """``read_chip`` in a child process with a deadline; the child is started on first use and reused."""

    def __init__(self, timeout_s: float = READ_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._child: subprocess.Popen | None = None

    def read(self, modality: Modality, data: bytes, chip_id: str, name: str,
             reader: ContainerReader | None = None) -> ChipSample:
        child = self._running_child()
        try:
            send(child.stdin, (modality, data, chip_id, name, reader))
            ready, _, _ = select.select([child.stdout], [], [], self.timeout_s)
            if not ready:
                self.close()
                raise ChipError(chip_id, name, f"reader still busy after {self.timeout_s:g} s (damaged file?); "
                                               "stopped")
            status, result = receive(child.stdout)
        except (BrokenPipeError, EOFError):
            code = self.close()
            raise ChipError(chip_id, name, f"reader process died (exit code {code})") from None
        if status == "error":
            raise ChipError(*result)
        return result

    def close(self) -> int | None:
        """Stop the child; returns its exit code."""
        child, self._child = self._child, None
        if child is None:
            return None
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            stream.close()
        return child.returncode

    def _running_child(self) -> subprocess.Popen:
        if self._child is None or self._child.poll() is not None:
            self.close()
            root = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            self._child = subprocess.Popen([sys.executable, "-m", "builders.isolated"], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, env=env)
        return self._child

    def __del__(self) -> None:
        self.close()


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The child's loop: one (modality, bytes, chip id, name, reader) request in, ("ok", sample) or ("error", args)
    out."""
    from builders.read import read_chip

    while True:
        try:
            modality, data, chip_id, name, reader = receive(requests)
        except EOFError:
            return
        try:
            send(replies, ("ok", read_chip(modality, data, chip_id, name, reader)))
        except ChipError as exc:
            send(replies, ("error", (exc.chip_id, exc.source, exc.reason)))
        except MemoryError:
            reason = f"out of memory reading it (reader limit {READER_MEMORY_MB} MB)"
            send(replies, ("error", (chip_id, name, reason)))


def cap_address_space(megabytes: int) -> None:
    """Lower this process's address-space limit to ``megabytes`` (never raise it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = megabytes * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


if __name__ == "__main__":
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints of C libraries must not reach the pipe
    cap_address_space(READER_MEMORY_MB)
    serve(sys.stdin.buffer, replies)
