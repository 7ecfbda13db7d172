"""Build throughput per worker on a realistic sample: local executor (1, 2 workers) and a dask cluster.

``python -m benchmarks.build_throughput --out bench-out/build --regions conus europe pakin``
Writes the 448-px sample once, then times full builds from scratch and prints one JSON line per run and a
Markdown table of medians. Besides wall time it records the CPU seconds of every process doing the work
(the driver, pool children, dask workers), so chips per CPU-second stays meaningful on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable

from builders.sample import write_sample
from shard_tools.build import build
from shard_tools.executors import Executor


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def local_cpu() -> float:
    """CPU of this process and of its finished children (the process pool is joined when a build ends)."""
    return cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)


def time_build(chips: Path, out: Path, executor: Executor, shard_size_mb: float,
               cpu: Callable[[], float]) -> dict:
    """One full build from scratch: wall and CPU seconds, chips and bytes."""
    shutil.rmtree(out, ignore_errors=True)
    cpu_before, started = cpu(), time.perf_counter()
    report = build(chips, out, shard_size_mb=shard_size_mb, executor=executor)
    wall, used = time.perf_counter() - started, cpu() - cpu_before
    return {"wall_s": round(wall, 2), "cpu_s": round(used, 2), "load_avg_1min": round(os.getloadavg()[0], 2),
            "chips": report.chips, "shards": report.written, "mb_in": round(report.bytes_in / 1e6, 1),
            "mb_out": round(report.bytes_out / 1e6, 1)}


def summarise(executor: str, workers: int, runs: list[dict]) -> dict:
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    chips, mb = runs[0]["chips"], runs[0]["mb_out"]
    return {"executor": executor, "workers": workers, "chips": chips, "mb_out": mb, "wall_s": wall, "cpu_s": cpu,
            "chips_per_s": round(chips / wall, 2), "chips_per_s_per_worker": round(chips / wall / workers, 2),
            "chips_per_cpu_s": round(chips / cpu, 2), "mb_per_cpu_s": round(mb / cpu, 1)}


def time_dask(chips: Path, shards: Path, shard_size_mb: float, repeats: int) -> tuple[dict, dict]:
    """Builds on a 2-worker LocalCluster started once (its start-up time is reported, not counted)."""
    from dask.distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        startup = round(time.perf_counter() - started, 2)

        def cluster_cpu() -> float:
            usages = client.run(resource.getrusage, resource.RUSAGE_SELF).values()
            return cpu_seconds() + sum(u.ru_utime + u.ru_stime for u in usages)

        executor = Executor("dask", 2, cluster.scheduler_address)
        runs = [time_build(chips, shards, executor, shard_size_mb, cluster_cpu) for _ in range(repeats)]
    return summarise("dask", 2, runs), {"executor": "dask", "workers": 2, "cluster_start_s": startup, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/build"))
    parser.add_argument("--regions", nargs="+", default=["conus", "europe", "pakin"])
    parser.add_argument("--chips-per-region", type=int, default=10)
    parser.add_argument("--pixels", type=int, default=448)
    parser.add_argument("--shard-size-mb", type=float, default=1024.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    chips = args.out / "chips"
    if not chips.exists():
        write_sample(chips, regions=tuple(args.regions), chips_per_region=args.chips_per_region, pixels=args.pixels)
    shards = args.out / "shards"
    summaries = []
    for workers in (1, 2):
        runs = [time_build(chips, shards, Executor("local", workers), args.shard_size_mb, local_cpu)
                for _ in range(args.repeats)]
        summaries.append(summarise("local", workers, runs))
        print(json.dumps({"executor": "local", "workers": workers, "runs": runs}))

    summary, line = time_dask(chips, shards, args.shard_size_mb, args.repeats)
    summaries.append(summary)
    print(json.dumps(line))

    print("| executor | workers | chips | MB out | wall s | CPU s | chips/s | chips/s per worker | "
          "chips per CPU-s | MB per CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        print(f"| {s['executor']} | {s['workers']} | {s['chips']} | {s['mb_out']:.0f} | {s['wall_s']} | {s['cpu_s']} | "
              f"{s['chips_per_s']} | {s['chips_per_s_per_worker']} | {s['chips_per_cpu_s']} | {s['mb_per_cpu_s']} |")


if __name__ == "__main__":
    main()
