"""Run one benchmark case in this (fresh) process and print its measurements as one JSON line.

``python -m benchmarks.child '<spec json>'`` with spec ``{"kind": "read"|"build", "case", "params",
"passes", "profile"}``. numpy and torch are imported before any clock starts (every case pays them);
everything else (m3leo_hf, datasets, rasterio...) counts in the case's setup and time to first sample.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import threading
import time

import numpy  # noqa: F401 - imported before any clock starts: every case pays it
import psutil
import torch  # noqa: F401


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    rss_start = psutil.Process().memory_info().rss
    profiler = cProfile.Profile() if spec.get("profile") else None
    sampler = _WorkerSampler() if spec["params"].get("workers", 0) > (spec["kind"] == "build") else None
    result = (_read if spec["kind"] == "read" else _build)(spec, profiler)
    result["rss_start_mb"] = rss_start / 2**20
    result["peak_rss_mb"] = _peak_rss_mb()
    result["peak_child_rss_mb"] = sampler.stop() if sampler else 0.0
    result["peak_arena_mb"] = sampler.arena_peak / 2**20 if sampler else 0.0
    if profiler is not None:
        _write_profile(profiler, spec["profile"])
    print(json.dumps(result))
    return 0


def _peak_rss_mb() -> float:
    """This process's peak RSS since exec (``VmHWM``; ``ru_maxrss`` would include the launcher's)."""
    return _vmhwm_kb("self") / 1024


def _vmhwm_kb(pid: int | str) -> int:
    """A process's peak RSS (``VmHWM``) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


class _WorkerSampler(threading.Thread):
    """The summed peaks of this process's descendants (DataLoader / pool workers): each one's own ``VmHWM``,
    read every ``PERIOD_S`` while it lives (it only grows, so a transient peak between reads is counted too);
    it counts pages workers share with this process. Also the most shared memory this process's tail arenas
    (``m3leo_hf.tail_arena``) held at once: their pages stay allocated between epochs, and count in an RSS
    only while mapped."""

    PERIOD_S = 0.05

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.arena_peak = 0
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        me = psutil.Process()
        while not self._done.wait(self.PERIOD_S):
            self.arena_peak = max(self.arena_peak, _arena_bytes())
            for child in me.children(recursive=True):
                try:
                    hwm = _vmhwm_kb(child.pid)
                except (OSError, StopIteration):
                    continue
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), hwm)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return sum(self.peaks.values()) / 1024


def _arena_bytes() -> int:
    """Allocated bytes of the tail arena files this process holds open (each once: an mmap holds a duplicate)."""
    files = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:m3leo-tail"):
                stat = os.stat(f"/proc/self/fd/{fd}")
                files[(stat.st_dev, stat.st_ino)] = stat.st_blocks * 512
        except OSError:
            continue
    return sum(files.values())


def _read(spec: dict, profiler: cProfile.Profile | None) -> dict:
    """Setup + a warm-up pass (time to first batch, per-chip digests), then ``passes`` timed passes
    (epochs; DataLoader workers persist across them)."""
    from benchmarks.reads import READ_CASES
    from benchmarks.transform import batch_bytes, batch_digests, batch_rows

    modalities = spec["params"]["modalities"]
    started = time.perf_counter()
    one_pass = READ_CASES[spec["case"]](spec["params"])
    setup = time.perf_counter() - started
    first, digests, seen = None, {}, 0
    for batch in one_pass():
        first = first or time.perf_counter() - started
        digests.update(batch_digests(batch, modalities))
        seen += batch_rows(batch)
    times, samples, volume = [], 0, 0
    for _ in range(spec["passes"]):
        samples = volume = 0
        if profiler:
            profiler.enable()
        begun = time.perf_counter()
        for batch in one_pass():
            samples += batch_rows(batch)
            volume += batch_bytes(batch)
        times.append(time.perf_counter() - begun)
        if profiler:
            profiler.disable()
    median = statistics.median(times)
    return {"samples": samples, "warmup_samples": seen, "bytes": volume, "pass_s": times, "median_pass_s": median,
            "samples_per_s": samples / median, "mb_per_s": volume / 2**20 / median, "setup_s": setup,
            "first_batch_s": first, "checksums": digests}


def _build(spec: dict, profiler: cProfile.Profile | None) -> dict:
    from benchmarks.builds import BUILD_CASES

    if profiler:
        profiler.enable()
    started = time.perf_counter()
    result = BUILD_CASES[spec["case"]](spec["params"])
    seconds = time.perf_counter() - started
    if profiler:
        profiler.disable()
    return {**result, "seconds": seconds, "chips_per_s": result["chips"] / seconds,
            "mb_per_s": result["bytes_in"] / 2**20 / seconds}


def _write_profile(profiler: cProfile.Profile, path: str) -> None:
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    with open(path, "w") as handle:
        handle.write(text.getvalue())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
