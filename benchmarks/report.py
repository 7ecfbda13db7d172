"""Ratios, targets and the printed / Markdown / JSON report of a benchmark run."""

from __future__ import annotations

import json
import os
from pathlib import Path

REFERENCE = "ours_w0"
PEERS = ("webdataset", "litdata", "mds", "datasets", "per_file")
REMOTE_PEERS = ("webdataset", "datasets")  # the peers that read http:// URLs


def same_tensors(results: dict) -> dict[str, bool]:
    """Per read case: are its chips' tensor digests the reference case's, for all its chips (a
    subset of them for ``subset`` cases), every chip once per pass, the same in every round?"""
    reference = results.get(REFERENCE, {}).get("checksums")
    if reference is None:
        return {}
    return {name: all(reference.get(chip) == sums for chip, sums in r["checksums"].items())
            and (r.get("subset") or (len(r["checksums"]) == len(reference) == r["warmup_samples"] == r["samples"]))
            and r.get("digests_stable", True)
            for name, r in results.items() if r.get("kind") == "read" and "checksums" in r}


def _rate(results: dict, name: str) -> float | None:
    return results.get(name, {}).get("samples_per_s")


def best_peer(results: dict, workers: int) -> tuple[str | None, float | None]:
    """The fastest peer (not ours, not the limit) at ``workers`` workers: (case name, samples/s)."""
    rates = {f"{p}_w{workers}": _rate(results, f"{p}_w{workers}") for p in PEERS}
    rates = {name: rate for name, rate in rates.items() if rate}
    if not rates:
        return None, None
    name = max(rates, key=rates.get)
    return name, rates[name]


def targets(results: dict, workers: int) -> list[dict]:
    """The issue's targets that a local run measures (``met`` is None when a case is missing)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    ours_w, limit_w = f"ours_w{workers}", f"raw_limit_w{workers}"
    _, peer_rate = best_peer(results, workers)
    first = results.get(REFERENCE, {}).get("first_batch_s")
    peer_rss = [results[f"{p}_w{workers}"]["peak_total_rss_mb"] for p in PEERS
                if "peak_total_rss_mb" in results.get(f"{p}_w{workers}", {})]
    ours_rss = results.get(ours_w, {}).get("peak_total_rss_mb")
    rows = [
        (f"{workers} workers: ours >= 1.2x the best peer", ratio(_rate(results, ours_w), peer_rate), 1.2, "x"),
        (f"{workers} workers: ours with defer=True (finished on the CPU here) >= 1.2x the best peer",
         ratio(_rate(results, f"ours_deferred_w{workers}"), peer_rate), 1.2, "x"),
        (f"{workers} workers: ours >= 0.9x the raw-tar limit with the same transform",
         ratio(_rate(results, ours_w), _rate(results, limit_w)), 0.9, "x"),
        ("0 workers: ours >= 0.95x the raw-tar limit with the same transform",
         ratio(_rate(results, REFERENCE), _rate(results, "raw_limit_w0")), 0.95, "x"),
        ("first batch <= 0.3 s locally (ours, 0 workers)", first, 0.3, "s"),
        (f"peak RSS (main + workers, {workers} workers) <= the best (lowest) peer's", ours_rss,
         min(peer_rss) if peer_rss else None, "MB"),
    ]
    remote_firsts = [results[f"{p}_remote_w0"]["first_batch_s"] for p in REMOTE_PEERS
                     if "first_batch_s" in results.get(f"{p}_remote_w0", {})]
    if f"ours_remote_w{workers}" in results:
        rows += [
            (f"remote (delayed HTTP server): ours at {workers} workers >= 0.8x ours local",
             ratio(_rate(results, f"ours_remote_w{workers}"), _rate(results, ours_w)), 0.8, "x"),
            ("remote first batch (ours, 0 workers) <= 2x the best remote peer's",
             results.get("ours_remote_w0", {}).get("first_batch_s"),
             2 * min(remote_firsts) if remote_firsts else None, "s"),
        ]
    out = []
    for target, value, threshold, unit in rows:
        met = None if value is None or threshold is None else (value <= threshold if unit in ("s", "MB")
                                                               else value >= threshold)
        out.append({"target": target, "measured": value, "threshold": threshold, "unit": unit, "met": met})
    extra, added = _growth(results), _added_mb(results)
    out.append({"target": "RSS flat when the data triples: peak RSS growth < 10% of the added bytes per pass",
                "measured": extra, "threshold": None if added is None else 0.1 * added, "unit": "MB",
                "met": None if extra is None or added is None else extra < 0.1 * added})
    return out


def _growth(results: dict) -> float | None:
    small, large = results.get("ours_1region", {}), results.get(REFERENCE, {})
    if "peak_rss_mb" not in small or "peak_rss_mb" not in large:
        return None
    return (large["peak_rss_mb"] - large["rss_start_mb"]) - (small["peak_rss_mb"] - small["rss_start_mb"])


def _added_mb(results: dict) -> float | None:
    """Tensor MB per pass that the full case reads beyond the one-region case."""
    small, large = results.get("ours_1region", {}), results.get(REFERENCE, {})
    return (large["bytes"] - small["bytes"]) / 2**20 if "bytes" in small and "bytes" in large else None


def readers(cases: list[dict]) -> list[tuple[str, str, list[int]]]:
    """(case function, label, worker counts) of the reader rows, in case order."""
    rows: dict[str, tuple[str, list[int]]] = {}
    for case in cases:
        if case["kind"] == "read" and "regions" not in case:
            rows.setdefault(case.get("row", case["case"]), (case["label"], []))[1].append(case["workers"])
    return [(name, label, workers) for name, (label, workers) in rows.items()]


def markdown(meta: dict, cases: list[dict], results: dict) -> str:
    same = same_tensors(results)
    rows = readers(cases)
    counts = sorted({w for _, _, workers in rows for w in workers})
    head = " | ".join(f"{w} workers: samples/s median (min–max)" for w in counts)
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"* Data: {meta['data']}",
        f"* Method: {meta['method']}",
        f"* Machine: {meta['machine']}",
        f"* Stock datasets case: {meta['datasets_mode']}",
        "",
        "## Reading: the user pipeline (join by chip, view_as, normalise, crop/pad, batch, torch)",
        "",
        f"| case | {head} | first batch s ({' / '.join(f'{w}w' for w in counts)}) "
        f"| peak RSS main + workers MB ({' / '.join(f'{w}w' for w in counts)}) | same tensors |",
        "|---|" + "---:|" * len(counts) + "---:|---:|:---:|",
    ]
    for name, label, measured in rows:
        cells, firsts, rss, agree = [], [], [], []
        for w in counts:
            r = results.get(f"{name}_w{w}", {})
            if w not in measured:
                cells.append("–")
                firsts.append("–")
                rss.append("–")
                continue
            if not r or "error" in r:
                cells.append(f"failed: {r.get('error', 'not run')[:100]}")
                firsts.append("–")
                rss.append("–")
                continue
            cells.append(f"{r['samples_per_s']:.1f} ({r['samples_per_s_min']:.1f}–{r['samples_per_s_max']:.1f})")
            firsts.append(f"{r['first_batch_s']:.2f}")
            rss.append(f"{r['peak_total_rss_mb']:.0f}")
            agree.append(same.get(f"{name}_w{w}", False))
        verdict = "yes" if agree and all(agree) else ("NO" if agree else "–")
        lines.append(f"| {label} | {' | '.join(cells)} | {' / '.join(firsts)} | {' / '.join(rss)} | {verdict} |")
    small = results.get("ours_1region", {})
    if "samples_per_s" in small:
        lines += ["", f"Ours on the first region only (1/3 of the data, 0 workers): {small['samples_per_s']:.1f} "
                      f"samples/s, peak RSS {small['peak_rss_mb']:.0f} MB (all regions: "
                      f"{results.get(REFERENCE, {}).get('peak_rss_mb', float('nan')):.0f} MB)."]
    copy = results.get("copy", {}).get("mb_per_s")
    lines += ["", "## Building (chip files → shards)", "",
              "| case | seconds | chips/s | MB/s in | ÷ plain copy | MB out | peak RSS MB | worker peak MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in (c for c in cases if c["kind"] == "build"):
        r = results.get(case["name"], {})
        if "error" in r or not r:
            lines.append(f"| {case['label']} | failed: {r.get('error', 'not run')[:120]} |||||||")
            continue
        lines.append(f"| {case['label']} | {r['seconds']:.1f} | {r['chips_per_s']:.1f} | {r['mb_per_s']:.0f} "
                     f"| {_x(r['mb_per_s'], copy)} | {r['bytes_out'] / 2**20:.0f} | {r['peak_rss_mb']:.0f} "
                     f"| {_mb(r['peak_child_rss_mb'])} |")
    lines += ["", f"## Targets (issue 12; remote: {meta.get('remote', 'no remote cases')})", "",
              "| target | measured | met |", "|---|---:|:---:|"]
    for t in targets(results, max(counts) if counts else 0):
        value = "n/a" if t["measured"] is None else f"{t['measured']:.2f} {t['unit']}"
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        threshold = "n/a" if t["threshold"] is None else f"{t['threshold']:.2f} {t['unit']}"
        lines.append(f"| {t['target']} (threshold {threshold}) | {value} | {met} |")
    lines += ["", "## Notes", ""] + [f"* {note}" for note in observations(results, counts)]
    return "\n".join(lines) + "\n"


def observations(results: dict, counts: list[int]) -> list[str]:
    """What the numbers say beyond the targets (only statements the numbers support)."""
    notes = []
    for w in counts:
        ours, limit = _rate(results, f"ours_w{w}"), _rate(results, f"raw_limit_w{w}")
        peer, peer_rate = best_peer(results, w)
        if ours and limit:
            text = f"{w} workers: ours is {ours / limit:.2f}x the raw-tar limit"
            if peer_rate:
                text += f" and {ours / peer_rate:.2f}x the fastest peer ({peer.rsplit('_w', 1)[0]})"
            spread = [r for r in (results.get(f"ours_w{w}"), results.get(f"raw_limit_w{w}")) if r]
            low, high = (min(r["samples_per_s_min"] / r["samples_per_s"] for r in spread),
                         max(r["samples_per_s_max"] / r["samples_per_s"] for r in spread))
            notes.append(text + f"; rounds of these two ranged {100 * (low - 1):+.0f}% to {100 * (high - 1):+.0f}% "
                                f"around their medians.")
    notes += arena_notes(results, counts)
    notes += transport_notes(results, max(counts) if counts else 0)
    notes += latency_notes(results, max(counts) if counts else 0)
    return notes


def latency_notes(results: dict, workers: int) -> list[str]:
    """What the remote cases' added delay costs: ours remote against the same reader on an undelayed server."""
    delayed, undelayed = _rate(results, f"ours_remote_w{workers}"), _rate(results, f"ours_nodelay_w{workers}")
    local = _rate(results, f"ours_w{workers}")
    if not delayed or not undelayed:
        return []
    hidden = delayed >= 0.95 * undelayed
    text = (f"Latency: at {workers} workers ours remote ran at {delayed:.1f} samples/s with the delay and "
            f"{undelayed:.1f} from the same server with none ({delayed / undelayed:.2f}x: "
            + ("the delay is hidden" if hidden else f"the delay costs {1 - delayed / undelayed:.0%}") + ")")
    if local:
        text += (f"; with no delay, remote was {undelayed / local:.2f}x local"
                 + (", so what a remote pass loses is moving the bytes, not waiting for them" if hidden else ""))
    pairs = [results.get(f"{name}_w{workers}", {}) for name in ("ours_remote", "ours")]
    if all(r.get("round_samples_per_s") and not r.get("failed_rounds") for r in pairs):
        text += ("; remote/local round by round (each round runs both): "
                 + ", ".join(f"{a / b:.2f}x" for a, b in zip(*(r["round_samples_per_s"] for r in pairs))))
    return [text + "."]


def arena_notes(results: dict, counts: list[int]) -> list[str]:
    """The shared memory our tail arenas keep between epochs, beside the RSS figures it is only partly in."""
    held = {w: results.get(f"ours_w{w}", {}).get("peak_arena_mb", 0.0) for w in counts}
    if not any(held.values()):
        return []
    w = max(held, key=held.get)
    total = results[f"ours_w{w}"]["peak_total_rss_mb"]
    return [f"Tail arenas: at {w} workers ours kept up to {held[w]:.0f} MB of shared memory in its two tail "
            f"arenas (pages allocated once and reused every other epoch, m3leo_hf/tail_arena.py). An RSS counts "
            f"those pages only while a process maps them (the last batch of each epoch), so the peak RSS above "
            f"({total:.0f} MB) holds part of them; main + workers + all of them is at most "
            f"{total + held[w]:.0f} MB."]


def transport_notes(results: dict, workers: int) -> list[str]:
    """What the remote cases' transport costs on this machine, and the remote/local ratios it allows."""
    moved, local = results.get("transport", {}), results.get(f"ours_w{workers}", {})
    if "client_cpu_s" not in moved or not local.get("samples_per_s") or f"ours_remote_w{workers}" not in results:
        return []
    cpus = os.cpu_count() or 1
    local_cpu = cpus * local["samples"] / local["samples_per_s"]
    cost = moved["client_cpu_s"] + moved["server_cpu_s"]
    remote = _rate(results, f"ours_remote_w{workers}")
    skipped = moved.get("local_read_cpu_s", 0.0)
    return [f"Remote transport: one pass moves {moved['bytes'] / 2**20:.0f} MB. Through the HTTP server on this "
            f"machine, as the readers fetch it, that costs {moved['client_cpu_s']:.3f} CPU-s in the reading process "
            f"and {moved['server_cpu_s']:.3f} CPU-s in the server. Reading the same bytes from the page cache, as "
            f"a local pass does, costs {skipped:.3f} CPU-s, "
            f"which a remote pass does not spend (medians of {moved.get('passes', 3)} passes after a warm-up, no "
            f"reader running). A local {workers}-worker pass of ours takes {local_cpu / cpus:.3f} s on {cpus} CPUs "
            f"(at most {local_cpu:.2f} CPU-s). With the server on the same CPUs, that transport alone would put a "
            f"remote pass at about {local_cpu / (local_cpu - skipped + cost):.2f}x of a local one (an estimate: it "
            f"ignores how transport and transform contend for CPUs, caches and the GIL); ours remote measured "
            f"{remote / local['samples_per_s']:.2f}x."]


def write(directory: Path, meta: dict, cases: list[dict], results: dict) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "results.md", directory / "results.json"
    md.write_text(markdown(meta, cases, results))
    counts = sorted({w for _, _, workers in readers(cases) for w in workers})
    slim = {name: {k: v for k, v in r.items() if k != "checksums"} for name, r in results.items()}
    payload = {"meta": meta, "cases": cases, "results": slim, "same_tensors": same_tensors(results),
               "targets": targets(results, max(counts) if counts else 0),
               "observations": observations(results, counts)}
    js.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return [md, js]


def _x(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "–"


def _mb(value: float) -> str:
    return f"{value:.0f}" if value else "–"
