"""``python -m benchmarks``: every case in its own subprocess on one generated chip set, then the report.

Build cases time ``m3leo-shard build`` (1 and 2 workers) and ``convert-release`` against a plain copy of
the same chip files. Read cases turn the split's chips into the same joined tensors (checked by CRC):
ours (0 and 2 DataLoader workers), per-file rasterio/h5netcdf reads, Hub-release Parquet rows, stock
``datasets`` streaming and the raw-tar limit; plus ours on one region (RSS against data size) and
ours / stock datasets with a large shuffle buffer. Results go to ``<out>/results.{md,json}`` and, for the
default sizes, to ``benchmarks/results.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks import report
from benchmarks.data import Config, Inputs, chip_files, ensure_shards, prepare, release_groups, write_cards

REPO = Path(__file__).resolve().parent.parent
CASE_TIMEOUT_S = 600


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="work folder (inputs are reused)")
    parser.add_argument("--regions", nargs="+", default=["conus", "europe", "pakin"])
    parser.add_argument("--chips-per-region", type=int, default=12)
    parser.add_argument("--pixels", type=int, default=448, help="chip side (real M3LEO: 448)")
    parser.add_argument("--shard-size-mb", type=float, default=32.0, help="about 5 chips of 448 px per shard")
    parser.add_argument("--modalities", nargs="+", default=["s1grd", "esaworldcover"])
    parser.add_argument("--split", default="train")
    parser.add_argument("--passes", type=int, default=5, help="timed passes per read case (after a warm-up)")
    parser.add_argument("--shuffle-buffer", type=int, default=64, help="the 'large shuffle buffer' cases")
    parser.add_argument("--cases", nargs="+", help="run only these cases (names as in the report JSON)")
    parser.add_argument("--profile", action="store_true", help="cProfile each case into <out>/profiles/")
    parser.add_argument("--results-dir", type=Path,
                        help="where results.{md,json} go too (default: benchmarks/ for the default sizes)")
    return parser.parse_args(argv)


def cases(args: argparse.Namespace, datasets_mode: str) -> list[dict]:
    """Every case: name, kind, case function, label and parameter overrides."""
    buffer = args.shuffle_buffer
    stock = "load_dataset(region_dir, modality)" if datasets_mode == "card" else 'load_dataset("webdataset")'
    return [
        {"name": "copy", "kind": "build", "case": "copy", "label": "plain copy (shutil.copy of each chip file)"},
        {"name": "build", "kind": "build", "case": "build", "label": "m3leo-shard build, 1 worker", "workers": 1},
        {"name": "build_w2", "kind": "build", "case": "build", "label": "m3leo-shard build, 2 workers", "workers": 2},
        {"name": "convert", "kind": "build", "case": "convert_release", "label": "convert-release, 1 worker",
         "workers": 1},
        {"name": "ours_w0", "kind": "read", "case": "ours", "label": "**ours**: m3leo_hf.stream, 0 workers"},
        {"name": "ours_w2", "kind": "read", "case": "ours", "label": "ours: StatefulLoader, 2 workers", "workers": 2},
        {"name": "per_file", "kind": "read", "case": "per_file", "label": "original: per-file rasterio/h5netcdf"},
        {"name": "release", "kind": "read", "case": "release_parquet",
         "label": "Hub release: Parquet rows of .tif/.nc bytes"},
        {"name": "datasets", "kind": "read", "case": "datasets", "label": f"stock datasets streaming, {stock}"},
        {"name": "raw_limit", "kind": "read", "case": "raw_limit", "label": "limit: raw tar bytes + np.frombuffer"},
        {"name": "raw_limit_w2", "kind": "read", "case": "raw_limit", "label": "limit through a DataLoader, 2 workers",
         "workers": 2},
        {"name": "ours_1region", "kind": "read", "case": "ours", "label": "ours, first region only (1/3 data)",
         "regions": 1},
        {"name": "ours_shuffle", "kind": "read", "case": "ours", "label": f"ours, shuffle buffer {buffer}",
         "shuffle_buffer": buffer},
        {"name": "datasets_shuffle", "kind": "read", "case": "datasets",
         "label": f"stock datasets, shuffle buffer {buffer}", "shuffle_buffer": buffer},
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    config = Config(tuple(args.regions), args.chips_per_region, args.pixels, args.shard_size_mb)
    say = lambda message: print(message, flush=True)  # noqa: E731
    started, load_before = time.perf_counter(), os.getloadavg()
    inputs = prepare(args.out, config, say)
    selected = set(args.cases or [])
    all_cases = cases(args, "webdataset")
    results: dict[str, dict] = {}
    for case in (c for c in all_cases if c["kind"] == "build" and (not selected or c["name"] in selected)):
        out = inputs.scratch(case["name"])
        params = {"chips": str(inputs.chips), "release": str(inputs.release), "out": str(out),
                  "shard_size_mb": config.shard_size_mb, "workers": case.get("workers", 1)}
        results[case["name"]] = run_case(case, params, args, inputs)
        if case["name"] == "build" and "error" not in results["build"]:
            ensure_shards(inputs, config, out, say)
        else:
            shutil.rmtree(out, ignore_errors=True)
    ensure_shards(inputs, config, None, say)
    datasets_mode, datasets_note = write_cards(inputs, config)
    all_cases = cases(args, datasets_mode)
    base = {"modalities": args.modalities, "split": args.split,
            "chips": chip_files(inputs, config, args.modalities, args.split),
            "release": release_groups(inputs, config, args.modalities, args.split),
            "datasets_mode": datasets_mode}
    for case in (c for c in all_cases if c["kind"] == "read" and (not selected or c["name"] in selected)):
        roots = inputs.roots(config)[: case.get("regions", len(config.regions))]
        params = {**base, "roots": roots, "workers": case.get("workers", 0),
                  "shuffle_buffer": case.get("shuffle_buffer", 0)}
        results[case["name"]] = {**run_case(case, params, args, inputs), "subset": "regions" in case}
    meta = _meta(args, config, inputs, base, datasets_note, load_before, time.perf_counter() - started)
    print(report.markdown(meta, all_cases, results))
    directories = {args.out.resolve(), (args.results_dir or args.out).resolve()}
    if args.results_dir is None and _is_default(args):
        directories.add(REPO / "benchmarks")
    for directory in sorted(directories):
        say("wrote " + ", ".join(str(p) for p in report.write(directory, meta, all_cases, results)))
    return 0


def run_case(case: dict, params: dict, args: argparse.Namespace, inputs: Inputs) -> dict:
    """Run ``case`` in a fresh interpreter; its JSON line, or ``{"error": ...}``."""
    profile = None
    if args.profile:
        (inputs.out / "profiles").mkdir(parents=True, exist_ok=True)
        profile = str((inputs.out / "profiles" / f"{case['name']}.txt").resolve())
    spec = {"kind": case["kind"], "case": case["case"], "params": params, "passes": args.passes, "profile": profile}
    env = {**os.environ, "HF_HOME": str((inputs.out / "hf-home").resolve()), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    print(f"running {case['name']} ...", flush=True)
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.child", json.dumps(spec)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"kind": case["kind"], "error": f"timed out after {CASE_TIMEOUT_S} s"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        print(done.stderr[-3000:], file=sys.stderr)
        return {"kind": case["kind"], "error": tail[0]}
    return {"kind": case["kind"], **json.loads(done.stdout.strip().splitlines()[-1])}


def _is_default(args: argparse.Namespace) -> bool:
    """Every option but the work folder at its default (the configuration the committed results use)."""
    defaults = vars(parse([]))
    return all(value == defaults[key] for key, value in vars(args).items() if key not in ("out", "results_dir"))


def _meta(args: argparse.Namespace, config: Config, inputs: Inputs, base: dict, datasets_note: str,
          load_before: tuple, seconds: float) -> dict:
    import datasets
    import torch

    chip_mb = sum(p.stat().st_size for p in inputs.chips.rglob("*") if p.is_file()) / 2**20
    command = " ".join([".venv/bin/python -m benchmarks", shlex.join(sys.argv[1:])]).strip()
    return {
        "command": command + ("  (= make bench)" if not sys.argv[1:] else ""),
        "config": asdict(config),
        "data": (f"{len(config.regions)} regions ({', '.join(config.regions)}) x {config.chips_per_region} chips "
                 f"at {config.pixels} px from builders.sample.write_sample ({chip_mb:.0f} MB of chip files), "
                 f"shards of {config.shard_size_mb:g} MB; read cases: split {args.split}, "
                 f"{' + '.join(args.modalities)} joined, {len(base['chips'])} chips per pass"),
        "method": (f"each case in its own subprocess; read cases: setup, 1 warm-up pass (page cache warm, "
                   f"time to first sample, tensor CRCs), then {args.passes} timed passes, median reported; "
                   f"samples are unbatched; MB = bytes of the yielded tensors; peak RSS = VmHWM of the case "
                   f"process; workers: largest summed RSS of its child processes, sampled every 0.2 s; "
                   f"RSS start = after importing numpy + torch"),
        "machine": (f"{os.cpu_count()} CPUs shared with other users, load average {load_before[0]:.1f} before / "
                    f"{os.getloadavg()[0]:.1f} after; Python {platform.python_version()}, torch {torch.__version__}, "
                    f"datasets {datasets.__version__}; whole run {seconds:.0f} s"),
        "datasets_mode": datasets_note,
    }
