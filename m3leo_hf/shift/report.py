"""Write the results of ``compare``: ``shift.json``, ``shift.md``, one heatmap PNG per statistic and
condition (``heatmap-<stat>-<condition>.png``) and ``projection.png`` (the embeddings' first two
principal components, coloured by region)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from m3leo_hf.shift.compare import CONDITIONS
from m3leo_hf.shift.plots import heatmap, scatter

STATISTIC_NAMES = {"mmd2": "MMD² (RBF, median heuristic)", "auc": "classifier two-sample AUC (linear probe)",
                   "frechet": "Fréchet distance"}
CONDITION_NAMES = {"raw": "raw", "strata": "terrain-controlled: strata", "nearest": "terrain-controlled: nearest"}
PROJECTION_CHIPS = 5000


def write_report(out: str | Path, results: Mapping, table: Mapping[str, np.ndarray], provenance: Mapping) -> list[Path]:
    """Write every output file under ``out``; returns their paths. ``provenance``: ``data`` (what the
    data is, e.g. "synthetic"), ``roots``, ``encoder``, ``notice``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "shift.json", out / "shift.md"]
    document = {"provenance": dict(provenance), **results}
    written[0].write_text(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n")
    written[1].write_text(markdown(document))
    regions = list(results["regions"])
    for statistic in STATISTIC_NAMES:
        for condition in CONDITIONS:
            values, labels = _matrix(results, regions, statistic, condition)
            path = out / f"heatmap-{statistic}-{condition}.png"
            heatmap(path, regions, values, f"{STATISTIC_NAMES[statistic]}, {CONDITION_NAMES[condition]}",
                    provenance["notice"], labels)
            written.append(path)
    points, groups = projection(table)
    path = out / "projection.png"
    scatter(path, points, groups, "Embeddings, first two principal components", provenance["notice"])
    written.append(path)
    return written


def _finite(value):
    """``value`` with NaN and infinities as None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def projection(table: Mapping[str, np.ndarray], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """PCA to 2-D of (at most ``PROJECTION_CHIPS`` random) standardised embeddings."""
    rows = np.random.default_rng(seed).permutation(len(table["region"]))[:PROJECTION_CHIPS]
    x = table["embedding"][rows].astype(np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2)), [str(g) for g in table["region"][rows]]
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    x = x / np.where(scale > 0, scale, 1.0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    components = vt[:2] if len(vt) >= 2 else np.vstack([vt, np.zeros_like(vt)])
    return x @ components.T, [str(g) for g in table["region"][rows]]


def _matrix(results: Mapping, regions: list[str], statistic: str, condition: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(regions)
    values = np.full((n, n), np.nan)
    labels = np.full((n, n), "", dtype=object)
    for i in range(n):
        labels[i, i] = "-"
    for pair in results["pairs"]:
        i, j = regions.index(pair["a"]), regions.index(pair["b"])
        result = pair[condition].get(statistic)
        text = f"n/a\nn={pair[condition]['n_a']}/{pair[condition]['n_b']}"
        if result is not None:
            values[i, j] = values[j, i] = result["value"]
            text = f"{result['value']:.3g}"
            if result["p_value"] is not None:
                text += f"\np={result['p_value']:.2g}"
            text += f"\nn={pair[condition]['n_a']}/{pair[condition]['n_b']}"
        labels[i, j] = labels[j, i] = text
    return values, labels


def _cell(result: Mapping | None) -> str:
    if result is None:
        return "n/a"
    text = f"{_number(result['value'])} [{_number(result['low'])}, {_number(result['high'])}]"
    if result["p_value"] is not None:
        text += f", p={result['p_value']:.2g}"
    return text


def _number(value: float) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3g}"


def markdown(document: Mapping) -> str:
    provenance = document["provenance"]
    lines = ["# Embedding shift between regions", "", f"> **{provenance['notice']}**", "",
             f"* Data: {provenance['data']}; region roots: {', '.join(map(str, provenance['roots']))}",
             f"* Encoder: {provenance['encoder']}; embedding dimension {document['embedding_dim']}",
             f"* Settings: {json.dumps(document['settings'])}", "",
             "| region | chips embedded | used (subsample) | with terrain descriptors |", "|---|---|---|---|"]
    for region, count in document["counts"].items():
        lines.append(f"| {region} | {count['chips']} | {count['used']} | {count['with_terrain']} |")
    lines += ["", "Values with 95% bootstrap intervals; p-values: MMD² by permutation, AUC against 0.5 "
              "(Mann-Whitney). SMD: largest absolute standardised mean difference of the terrain descriptors "
              "(before -> after matching).", "",
              "| pair | condition | n | MMD² | AUC | Fréchet | max abs SMD |", "|---|---|---|---|---|---|---|"]
    for pair in document["pairs"]:
        for condition in CONDITIONS:
            entry = pair[condition]
            matching = entry.get("matching")
            if matching:
                smd = f"{_number(matching['max_abs_smd_before'])} -> {_number(matching['max_abs_smd_after'])}"
            else:
                values = [abs(v) for v in entry.get("smd", {}).values() if v is not None and math.isfinite(v)]
                smd = _number(max(values)) if values else "n/a"
            n = f"{entry['n_a']}/{entry['n_b']}" + (f" ({entry['skipped']})" if entry.get("skipped") else "")
            lines.append(f"| {pair['a']}-{pair['b']} | {CONDITION_NAMES[condition]} | {n} | {_cell(entry['mmd2'])} "
                         f"| {_cell(entry['auc'])} | {_cell(entry['frechet'])} | {smd} |")
    lines += ["", "How to read it: docs/shift.md. Figures: `heatmap-<statistic>-<condition>.png`, `projection.png`.",
              ""]
    return "\n".join(lines)
