"""What moving one pass's shard bytes over the benchmark's HTTP server costs in CPU, client and server side.

The remote cases pay it on the same CPUs as the reader (the server is a process of the benchmark on this
machine), so it weighs on how close a remote pass can come to a local one. ``measure(urls, repo)`` runs
``python -m benchmarks.transport '<json>'``: a fresh process fetching every URL with ``m3leo_hf.ranged.read_range``
in the readers' request size and concurrency (``m3leo_hf.prefetch.CHUNK_BYTES`` / ``THREADS``); the server's CPU
is this process's own (idle but for the server's threads) over the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def measure(urls: list[tuple[str, int]], repo: Path) -> dict:
    """``{"bytes", "client_cpu_s", "server_cpu_s"}`` of fetching ``urls`` (``(url, size)``) once."""
    before = _cpu_s()
    done = subprocess.run([sys.executable, "-m", "benchmarks.transport", json.dumps(urls)], cwd=repo,
                          env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=600)
    server = _cpu_s() - before  # this process's own CPU (os.times counts the child apart): the server's threads
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "server_cpu_s": max(server, 0.0)}


def main(argv: list[str]) -> int:
    from m3leo_hf.prefetch import CHUNK_BYTES, THREADS  # the readers' request size and requests in flight
    from m3leo_hf.ranged import read_range

    urls = json.loads(argv[1])
    ranges = [(url, start, min(CHUNK_BYTES, size - start)) for url, size in urls for start in range(0, size, CHUNK_BYTES)]
    started, wall = _cpu_s(), time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(lambda r: len(read_range(*r)), ranges))
    print(json.dumps({"bytes": total, "client_cpu_s": _cpu_s() - started, "wall_s": time.perf_counter() - wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
