"""Ratios, targets and the printed / Markdown / JSON report of a benchmark run."""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE = "ours_w0"


def same_tensors(results: dict) -> dict[str, bool]:
    """Per read case: are its chips' tensor checksums the reference case's, for all its chips (a
    subset of them for ``subset`` cases)?"""
    reference = results.get(REFERENCE, {}).get("checksums")
    if reference is None:
        return {}
    return {name: all(reference.get(chip) == sums for chip, sums in r["checksums"].items())
            and (r.get("subset") or len(r["checksums"]) == len(reference))
            for name, r in results.items() if r.get("kind") == "read" and "checksums" in r}


def targets(results: dict) -> list[dict]:
    """The issue's targets, measured (``met`` is None when a case is missing)."""
    def rate(name: str) -> float | None:
        return results.get(name, {}).get("samples_per_s")

    def ratio(a: str, b: str) -> float | None:
        return rate(a) / rate(b) if rate(a) and rate(b) else None

    def growth() -> float | None:
        small, large = results.get("ours_1region", {}), results.get(REFERENCE, {})
        if "peak_rss_mb" not in small or "peak_rss_mb" not in large:
            return None
        return (large["peak_rss_mb"] - large["rss_start_mb"]) - (small["peak_rss_mb"] - small["rss_start_mb"])

    rows = [
        ("ours >= 10x per-file reads", ratio(REFERENCE, "per_file"), 10.0, "x"),
        ("ours >= 0.8 of the raw-tar limit", ratio(REFERENCE, "raw_limit"), 0.8, "x"),
        ("ours >= stock datasets streaming", ratio(REFERENCE, "datasets"), 1.0, "x"),
    ]
    out = [{"target": t, "measured": v, "threshold": th, "unit": u, "met": None if v is None else v >= th}
           for t, v, th, u in rows]
    extra = growth()
    sample_mb = _sample_mb(results)
    out.append({"target": "bounded RSS: 3x the data adds < 1 sample of peak RSS", "measured": extra,
                "threshold": sample_mb, "unit": "MB",
                "met": None if extra is None or sample_mb is None else extra < sample_mb})
    return out


def _sample_mb(results: dict) -> float | None:
    ref = results.get(REFERENCE, {})
    return ref["bytes"] / ref["samples"] / 2**20 if ref.get("samples") else None


def markdown(meta: dict, cases: list[dict], results: dict) -> str:
    same = same_tensors(results)
    ref = results.get(REFERENCE, {}).get("samples_per_s")
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
        "## Reading (tars → joined torch tensors)",
        "",
        "| case | samples/s | MB/s | ours ÷ case | setup s | first sample s | RSS start → peak MB | worker peak MB "
        "| same tensors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for case in (c for c in cases if c["kind"] == "read"):
        r = results.get(case["name"], {})
        if "error" in r or not r:
            lines.append(f"| {case['label']} | failed: {r.get('error', 'not run')[:120]} |||||||||")
            continue
        lines.append(
            f"| {case['label']} | {r['samples_per_s']:.1f} | {r['mb_per_s']:.0f} | {_x(ref, r['samples_per_s'])} "
            f"| {r['setup_s']:.2f} | {r['first_sample_s']:.2f} | {r['rss_start_mb']:.0f} → {r['peak_rss_mb']:.0f} "
            f"| {_mb(r['peak_child_rss_mb'])} | {'yes' if same.get(case['name']) else 'NO'} |")
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
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|:---:|"]
    for t in targets(results):
        value = "n/a" if t["measured"] is None else f"{t['measured']:.2f} {t['unit']}"
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} (threshold {t['threshold'] if t['threshold'] is None else round(t['threshold'], 2)}"
                     f" {t['unit']}) | {value} | {met} |")
    lines += ["", "## Notes", ""] + [f"* {note}" for note in meta["notes"]]
    return "\n".join(lines) + "\n"


def write(directory: Path, meta: dict, cases: list[dict], results: dict) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "results.md", directory / "results.json"
    md.write_text(markdown(meta, cases, results))
    slim = {name: {k: v for k, v in r.items() if k != "checksums"} for name, r in results.items()}
    payload = {"meta": meta, "cases": cases, "results": slim, "same_tensors": same_tensors(results),
               "targets": targets(results)}
    js.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return [md, js]


def _x(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "–"


def _mb(value: float) -> str:
    return f"{value:.0f}" if value else "–"
