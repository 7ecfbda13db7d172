"""What moving one pass's shard bytes to the reader costs in CPU on this machine, the way the remote cases move
them, and what reading them locally costs instead.

The remote cases pay it on the same CPUs as the reader (the server is a process of the benchmark on this
machine), so it weighs on how close a remote pass can come to a local one. ``measure(shards, repo)`` runs
``python -m benchmarks.transport '<json>'``, a fresh process that
- fetches every shard through the benchmark's HTTP server as the readers do (``m3leo_hf.prefetch.fetch_range``,
  in its request size and concurrency), ``PASSES`` times after
  a warm-up pass; the server's CPU is this process's own (idle but for the server's threads) over the same time;
- reads the same files from the page cache into fresh buffers of 8 MB (about one member each), as the local
  reader does: the work a remote pass does not do.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PASSES = 3


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def measure(shards: list[tuple[str, str, int]], repo: Path) -> dict:
    """``{"bytes", "client_cpu_s", "server_cpu_s", "local_read_cpu_s"}`` per pass over ``shards``
    (``(url, path, size)``), or ``{"error"}``."""
    before = _cpu_s()
    done = subprocess.run([sys.executable, "-m", "benchmarks.transport", json.dumps(shards)], cwd=repo,
                          env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=600)
    server = _cpu_s() - before  # this process's own CPU (os.times counts the child apart): the server's threads
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "server_cpu_s": max(server, 0.0) / (PASSES + 1)}


def http_passes(shards: list[tuple[str, str, int]]) -> tuple[int, list[float]]:
    """Bytes of one pass and the client CPU of each pass after the warm-up one."""
    from m3leo_hf.prefetch import CHUNK_BYTES, THREADS, fetch_range  # the readers' requests and buffers

    ranges = [(url, start, min(CHUNK_BYTES, size - start)) for url, _, size in shards
              for start in range(0, size, CHUNK_BYTES)]
    cpus, total = [], 0
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in range(PASSES + 1):
            started = _cpu_s()
            total = sum(pool.map(lambda r: len(fetch_range(*r)), ranges))
            cpus.append(_cpu_s() - started)
    return total, cpus[1:]


def local_passes(shards: list[tuple[str, str, int]], piece: int = 8 << 20) -> list[float]:
    """CPU of each pass reading the shard files (``piece`` bytes at a time, each into a fresh buffer: the local
    reader's ``np.empty`` per member) after a warm-up one."""
    import numpy as np

    cpus = []
    for _ in range(PASSES + 1):
        started = _cpu_s()
        for _, path, size in shards:
            with open(path, "rb", buffering=0) as source:
                for start in range(0, size, piece):
                    source.readinto(np.empty(min(piece, size - start), dtype=np.uint8))
        cpus.append(_cpu_s() - started)
    return cpus[1:]


def main(argv: list[str]) -> int:
    shards = json.loads(argv[1])
    wall = time.perf_counter()
    total, client = http_passes(shards)
    local = local_passes(shards)
    print(json.dumps({"bytes": total, "passes": PASSES, "client_cpu_s": statistics.median(client),
                      "local_read_cpu_s": statistics.median(local),
                      "wall_s": time.perf_counter() - wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
