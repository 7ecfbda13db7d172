"""``python -m benchmarks``: every case in its own subprocess on one generated chip set, then the report.

Build cases time ``m3leo-shard build`` (1 and 2 workers) and ``convert-release`` against a plain copy of
the same chip files. Read cases run the user pipeline (join s1grd + esaworldcover by chip, view_as,
normalise, crop/pad, batch, torch) through ours, stock webdataset, litdata, MosaicML streaming, stock
``datasets`` streaming, per-file rasterio/h5netcdf and the raw-tar limit, at 0 and 2 DataLoader workers,
alternating the cases over ``--rounds`` rounds; every case must yield the same tensors per chip
(digests). The litdata and MDS copies are converted from the same chips first (untimed). Results go to
``<out>/results.{md,json}`` and, for the default sizes, to ``benchmarks/results.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks import report, transport
from benchmarks.data import Config, Inputs, chip_files, ensure_shards, prepare, write_cards
from benchmarks.delayed_server import DelayedServer

REPO = Path(__file__).resolve().parent.parent
CASE_TIMEOUT_S = 600
READERS = [  # (case, label)
    ("ours", "**ours**: `stream(normalize=True, spatial_size=448, batch_size=8)` + `StatefulLoader`"),
    ("ours_deferred", "**ours, deferred**: `stream(..., defer=True)` + `normalize_on(stream, \"cpu\")` in the main "
                      "process (on a GPU: the device)"),
    ("raw_limit", "limit: raw tar bytes + np.frombuffer, same transform, DataLoader batching"),
    ("webdataset", "stock webdataset, two `.decode()` pipelines zipped"),
    ("litdata", "litdata `StreamingDataset` + `StreamingDataLoader`"),
    ("mds", "MosaicML streaming (MDS) `StreamingDataset` + DataLoader"),
    ("datasets", "stock `datasets` streaming, modalities zipped"),
    ("per_file", "per-file rasterio/h5netcdf, map-style Dataset (TorchGeo style)"),
]


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
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--spatial-size", type=int, default=448, help="centre crop/pad of every chip")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the worker cases")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all read cases, alternating them")
    parser.add_argument("--passes", type=int, default=3, help="timed passes (epochs) per case and round")
    parser.add_argument("--latency-ms", type=float, default=50.0,
                        help="delay of every request of the remote cases' HTTP server (negative: no remote cases)")
    parser.add_argument("--cases", nargs="+", help="run only these cases (names as in the report JSON)")
    parser.add_argument("--profile", action="store_true", help="cProfile each case into <out>/profiles/")
    parser.add_argument("--results-dir", type=Path,
                        help="where results.{md,json} go too (default: benchmarks/ for the default sizes)")
    return parser.parse_args(argv)


REMOTE_READERS = [  # (case, label): the same cases reading region URLs of the delayed HTTP server
    ("ours", "**ours, remote**: the same `stream(...)` on `http://` region roots"),
    ("webdataset", "stock webdataset on `http://` shard URLs (curl)"),
    ("datasets", "stock `datasets` streaming, `webdataset` builder on `http://` shard URLs (fsspec)"),
]


def cases(args: argparse.Namespace) -> list[dict]:
    """Every case: name, kind, case function, row (of the report), label and parameter overrides."""
    reads = [{"name": f"{case}_w{workers}", "kind": "read", "case": case, "row": case, "label": label,
              "workers": workers} for case, label in READERS for workers in (0, args.workers)]
    if args.latency_ms >= 0:
        reads += [{"name": f"{case}_remote_w{workers}", "kind": "read", "case": case, "row": f"{case}_remote",
                   "label": f"{label}, {args.latency_ms:g} ms a request", "workers": workers, "remote": True}
                  for case, label in REMOTE_READERS for workers in (0, args.workers)]
    if args.latency_ms > 0:  # what the delay itself costs: the same reader and server, no delay
        reads.append({"name": f"ours_nodelay_w{args.workers}", "kind": "read", "case": "ours", "row": "ours_nodelay",
                      "label": "ours, remote with no added delay: the same `stream(...)` and HTTP server, 0 ms a "
                               "request", "workers": args.workers, "remote": True, "delay_ms": 0.0})
    return [
        {"name": "copy", "kind": "build", "case": "copy", "label": "plain copy (shutil.copy of each chip file)"},
        {"name": "build", "kind": "build", "case": "build", "label": "m3leo-shard build, 1 worker", "workers": 1},
        {"name": "build_w2", "kind": "build", "case": "build", "label": "m3leo-shard build, 2 workers", "workers": 2},
        {"name": "convert", "kind": "build", "case": "convert_release", "label": "convert-release, 1 worker",
         "workers": 1},
        *reads,
        {"name": "ours_1region", "kind": "read", "case": "ours", "label": "ours, first region only (1/3 data)",
         "workers": 0, "regions": 1},
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    config = Config(tuple(args.regions), args.chips_per_region, args.pixels, args.shard_size_mb)
    say = lambda message: print(message, flush=True)  # noqa: E731
    started, load_before = time.perf_counter(), os.getloadavg()
    inputs = prepare(args.out, config, say)
    selected = set(args.cases or [])
    all_cases = cases(args)
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
    base = read_params(args, config, inputs, datasets_mode, say)
    reads = [c for c in all_cases if c["kind"] == "read" and (not selected or c["name"] in selected)]
    rounds: dict[str, list[dict]] = {c["name"]: [] for c in reads}
    with (DelayedServer(inputs.shards, max(args.latency_ms, 0) / 1000) as server,  # its own threads, not the cases'
          DelayedServer(inputs.shards, 0.0) as undelayed):
        if any(case.get("remote") for case in reads):
            say("measuring the CPU cost of the remote cases' transport")
            results["transport"] = {"kind": "transport", **transport.measure(pass_urls(base, server.url), REPO)}
        for number in range(args.rounds):
            shift = number % max(len(reads), 1)
            for case in reads[shift:] + reads[:shift]:  # each round starts one case later
                roots = base["roots"][: case.get("regions", len(config.regions))]
                params = {**base, "roots": roots, "workers": case["workers"]}
                if case.get("remote"):
                    url = (undelayed if case.get("delay_ms") == 0 else server).url
                    params.update(local_roots=roots, roots=[f"{url}/{Path(r).name}" for r in roots],
                                  datasets_mode="files")
                rounds[case["name"]].append(run_case(case, params, args, inputs,
                                                     f"round {number + 1}/{args.rounds}"))
    for case in reads:
        results[case["name"]] = {**summarise(rounds[case["name"]]), "subset": "regions" in case}
    meta = _meta(args, config, inputs, base, datasets_note, load_before, time.perf_counter() - started)
    print(report.markdown(meta, all_cases, results))
    directories = {args.out.resolve(), (args.results_dir or args.out).resolve()}
    if args.results_dir is None and _is_default(args):
        directories.add(REPO / "benchmarks")
    for directory in sorted(directories):
        say("wrote " + ", ".join(str(p) for p in report.write(directory, meta, all_cases, results)))
    return 0


def read_params(args: argparse.Namespace, config: Config, inputs: Inputs, datasets_mode: str, say) -> dict:
    """What every read case gets: chips (with their fields, for per-file reads), pooled train
    statistics, and the litdata / MDS copies (converted here, untimed)."""
    from benchmarks.reads import chip_fields
    from benchmarks.transform import pipeline_stats

    roots = inputs.roots(config)
    chips = chip_files(inputs, config, args.modalities, args.split)
    fields = chip_fields(roots, args.modalities, args.split)
    say("converting the chips for litdata and MosaicML streaming (untimed)")
    spec = {"out": str((inputs.out / "peers").resolve()), "roots": roots, "modalities": args.modalities,
            "split": args.split, "chunk_mb": config.shard_size_mb}
    done = subprocess.run([sys.executable, "-m", "benchmarks.peers", json.dumps(spec)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=CASE_TIMEOUT_S)
    peers = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    return {"modalities": args.modalities, "split": args.split, "batch_size": args.batch_size,
            "spatial_size": args.spatial_size, "stats": pipeline_stats(roots, args.modalities), "roots": roots,
            "chips": [{**chip, "fields": fields[chip["chip_id"]]} for chip in chips],
            "datasets_mode": datasets_mode, "peers": peers}


def summarise(rounds: list[dict]) -> dict:
    """One read case over its rounds: median and range of the rounds' samples/s (each the median of
    its passes), median first batch, largest peak RSS; the digests of the first round that has them,
    ``digests_stable`` when every round yielded the same."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return {"kind": "read", "error": rounds[0].get("error", "not run") if rounds else "not run"}
    rates = [r["samples_per_s"] for r in good]
    return {"kind": "read", "rounds": len(good), "failed_rounds": len(rounds) - len(good),
            "samples_per_s": statistics.median(rates), "samples_per_s_min": min(rates),
            "samples_per_s_max": max(rates), "round_samples_per_s": rates,
            "mb_per_s": statistics.median(r["mb_per_s"] for r in good),
            "first_batch_s": statistics.median(r["first_batch_s"] for r in good),
            "setup_s": statistics.median(r["setup_s"] for r in good),
            "samples": good[0]["samples"], "warmup_samples": good[0]["warmup_samples"], "bytes": good[0]["bytes"],
            "rss_start_mb": good[0]["rss_start_mb"], "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
            "peak_child_rss_mb": max(r["peak_child_rss_mb"] for r in good),
            "peak_total_rss_mb": max(r["peak_rss_mb"] + r["peak_child_rss_mb"] for r in good),
            "peak_arena_mb": max(r.get("peak_arena_mb", 0.0) for r in good),
            "checksums": good[0]["checksums"], "digests_stable": all(r["checksums"] == good[0]["checksums"] for r in good)}


def pass_urls(base: dict, url: str) -> list[tuple[str, str, int]]:
    """(URL at the server, path, size) of every shard one pass of a remote case reads."""
    from benchmarks.reads import shard_urls

    remote = {**base, "local_roots": base["roots"], "roots": [f"{url}/{Path(r).name}" for r in base["roots"]]}
    local = {**base, "local_roots": base["roots"]}
    return [(at, path, Path(path).stat().st_size) for m in base["modalities"]
            for at, path in zip(shard_urls(remote, m), shard_urls(local, m))]


def run_case(case: dict, params: dict, args: argparse.Namespace, inputs: Inputs, when: str = "") -> dict:
    """Run ``case`` in a fresh interpreter; its JSON line, or ``{"error": ...}``."""
    profile = None
    if args.profile:
        (inputs.out / "profiles").mkdir(parents=True, exist_ok=True)
        profile = str((inputs.out / "profiles" / f"{case['name']}.txt").resolve())
    spec = {"kind": case["kind"], "case": case["case"], "params": params, "passes": args.passes, "profile": profile}
    env = {**os.environ, "HF_HOME": str((inputs.out / "hf-home").resolve()), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    print(f"running {case['name']} {when}...", flush=True)
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
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    chip_mb = sum(p.stat().st_size for p in inputs.chips.rglob("*") if p.is_file()) / 2**20
    interpreter = Path(sys.executable)
    command = " ".join([f"{interpreter.parent.parent.name}/bin/python -m benchmarks", shlex.join(sys.argv[1:])])
    peers = {name: ("converted" if not str(where).startswith("error") else where)
             for name, where in base["peers"].items()} or {"litdata": "not converted", "mds": "not converted"}
    return {
        "command": command.strip() + ("  (= make bench)" if not sys.argv[1:] else ""),
        "config": asdict(config),
        "data": (f"{len(config.regions)} regions ({', '.join(config.regions)}) x {config.chips_per_region} chips "
                 f"at {config.pixels} px from builders.sample.write_sample ({chip_mb:.0f} MB of chip files), "
                 f"shards of {config.shard_size_mb:g} MB; read cases: split {args.split}, "
                 f"{' + '.join(args.modalities)} joined, {len(base['chips'])} chips per pass, batches of "
                 f"{args.batch_size}, crop/pad to {args.spatial_size}; litdata / MDS copies: {peers}"),
        "method": (f"each case in its own subprocess, {args.rounds} rounds over all read cases (each round "
                   f"starts one case later); per case and round: setup, 1 warm-up pass (page cache warm, time "
                   f"to first batch, per-chip tensor CRCs), then {args.passes} timed passes (epochs; DataLoader "
                   f"workers persistent), the round's figure = median pass; reported: median of the rounds "
                   f"and their min-max; first batch = median over rounds, from the case's start (after "
                   f"importing numpy + torch) to its first batch; peak RSS = VmHWM of the main process + the "
                   f"VmHWM of each of its workers (read every 0.05 s while it lives; pages shared with the main "
                   f"process are counted in both), the largest over rounds"),
        "remote": ("no remote cases" if args.latency_ms < 0 else
                   f"the `_remote` cases read the same shards from benchmarks.delayed_server on 127.0.0.1 (a "
                   f"process of the benchmark, not the case's), which answers every request {args.latency_ms:g} ms "
                   f"late; `ours_nodelay` reads them from a second such server that adds no delay"),
        "machine": (f"{os.cpu_count()} CPUs shared with other users, load average {load_before[0]:.1f} before / "
                    f"{os.getloadavg()[0]:.1f} after; Python {platform.python_version()}, torch "
                    f"{installed('torch')}, datasets {installed('datasets')}, webdataset {installed('webdataset')}, "
                    f"litdata {installed('litdata')}, mosaicml-streaming {installed('mosaicml-streaming')}; "
                    f"whole run {seconds:.0f} s"),
        "datasets_mode": datasets_note,
    }
