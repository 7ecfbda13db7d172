"""``m3leo-shard verify``: re-read a built region and report every defect."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import tokenize
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from builders.declarations import Modality
from shard_tools.build import SHARD_NAME
from shard_tools.plan import read_plan
from shard_tools.progress import SILENT, Progress

SHARD_URL = re.compile(r"^[a-z0-9][a-z0-9_-]*/(train|val|test)-\d{6}\.tar$")

def verify_region(region_dir: str | Path, progress: Progress | None = None, *, check_layout: bool = True) -> list[str]:
    """Problems found in ``region_dir`` (empty when sound): checksums, counts, alignment, decodability,
    declarations and the pinned plan, and (``check_layout``) paths that ``publish`` refuses: dotfiles, hidden
    folders, symlinks, unknown files."""
    region_dir = Path(region_dir)
    progress = progress or SILENT
    meta_dir = region_dir / "metadata"
    indexes = sorted(meta_dir.glob("*.shards.json")) if meta_dir.is_dir() else []
    if not indexes:
        return [f"{region_dir}: no metadata/*.shards.json; is this a built region?"]
    problems: list[str] = []
    if check_layout:
        from shard_tools.publish import region_layout

        problems += [f"{path}: publish refuses it" for path in region_layout(region_dir).refused]
    keys_by_modality: dict[str, dict[str, list[str]]] = {}
    loaded = {}
    for index_path in indexes:
        index = _read_index(index_path, problems)
        loaded[index_path.name[: -len(".shards.json")]] = index
    listed = [s for index in loaded.values() if index for s in index["shardlist"]]
    progress.start(f"verify {region_dir.name}", len(listed), sum(s["filesize"] for s in listed), "shards")
    for modality, index in loaded.items():
        keys_by_modality[modality] = _verify_modality(region_dir, modality, index, problems, progress) if index else {}
    progress.close()
    problems += _check_alignment(keys_by_modality)
    problems += _check_unlisted(region_dir, keys_by_modality)
    problems += _check_declarations_and_plan(meta_dir, keys_by_modality)
    return problems


def _read_index(path: Path, problems: list[str]) -> dict | None:
    """A shards.json whose entries name shards inside the region (``None`` after recording why not)."""
    try:
        index = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:
        problems.append(f"metadata/{path.name}: not valid JSON: {type(exc).__name__}")
        return None
    entries = index.get("shardlist") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append(f"metadata/{path.name}: no list of shard entries")
        return None
    for entry in entries:
        if not isinstance(entry.get("url"), str) or not SHARD_URL.match(entry["url"]):
            problems.append(f"metadata/{path.name}: shard url {entry.get('url')!r:.200} is not "
                            f"<modality>/<split>-NNNNNN.tar inside the region")
            return None
        if not all(type(entry.get(k)) is int for k in ("nsamples", "filesize")) or not isinstance(entry.get("sha256"), str):
            problems.append(f"metadata/{path.name}: {entry['url']}: nsamples, filesize or sha256 missing or of the wrong type")
            return None
    return index


def _verify_modality(region_dir: Path, modality: str, index: dict, problems: list[str],
                     progress: Progress) -> dict[str, list[str]]:
    rows = _parquet_rows(region_dir / "metadata" / f"{modality}.parquet", problems)
    keys: dict[str, list[str]] = {}
    for shard in index["shardlist"]:
        path = region_dir / shard["url"]
        if path.is_symlink():
            problems.append(f"{shard['url']}: a symlink, not a shard file")
            continue
        if not path.is_file():
            problems.append(f"{shard['url']}: listed in {modality}.shards.json but missing")
            progress.advance(1, shard["filesize"])
            continue
        data = path.read_bytes()
        if len(data) != shard["filesize"]:
            problems.append(f"{shard['url']}: size {len(data)} != recorded {shard['filesize']}")
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            problems.append(f"{shard['url']}: sha256 mismatch (file changed or corrupt)")
        shard_keys = _check_members(shard["url"], data, problems)
        if len(shard_keys) != shard["nsamples"]:
            problems.append(f"{shard['url']}: {len(shard_keys)} samples, index says {shard['nsamples']}")
        keys[shard["url"]] = shard_keys
        _check_offsets(shard["url"], data, rows.get(shard["url"], []), problems)
        progress.advance(1, shard["filesize"])
    return keys


def _parquet_rows(path: Path, problems: list[str]) -> dict[str, list[dict]]:
    try:
        table = pq.read_table(path, columns=["chip_id", "shard", "sample_index", "members"])
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: unreadable per-chip metadata: {exc}")
        return {}
    by_shard: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_shard.setdefault(row["shard"], []).append(row)
    return by_shard


def _check_members(url: str, data: bytes, problems: list[str]) -> list[str]:
    """Sample keys in order; every .npy and .json member must decode and samples must be contiguous."""
    keys: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                if not keys or keys[-1] != key:
                    if key in keys:
                        problems.append(f"{url}: sample {key} is not contiguous")
                    keys.append(key)
                payload = tar.extractfile(member).read()
                _check_payload(url, member.name, extension, payload, problems)
    except tarfile.TarError as exc:
        problems.append(f"{url}: not a readable tar: {exc}")
    return keys


def _check_payload(url: str, name: str, extension: str, payload: bytes, problems: list[str]) -> None:
    try:
        if extension.endswith("npy"):
            np.load(io.BytesIO(payload), allow_pickle=False)
        elif extension == "json":
            json.loads(payload)
        else:
            problems.append(f"{url}: member {name}: unexpected extension")
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # numpy tokenizes npy headers
        problems.append(f"{url}: member {name} does not decode: {exc}")


def _check_offsets(url: str, data: bytes, rows: list[dict], problems: list[str]) -> None:
    for row in rows:
        for member in row["members"]:
            end = member["offset"] + member["size"]
            if end > len(data):
                problems.append(f"{url}: {row['chip_id']}.{member['name']} offset beyond end of shard")
            elif member["name"] == "json":
                try:
                    if json.loads(data[member["offset"]:end])["chip_id"] != row["chip_id"]:
                        problems.append(f"{url}: {row['chip_id']}: index offset points at another sample")
                except (ValueError, KeyError):
                    problems.append(f"{url}: {row['chip_id']}: index offset does not point at its json member")


def _check_alignment(keys_by_modality: dict[str, dict[str, list[str]]]) -> list[str]:
    """Shard i of every modality of a split must hold the same keys in the same order.

    The key list most modalities agree on is the reference, so the report names the odd one out.
    """
    problems = []
    by_file: dict[str, dict[str, tuple[str, ...]]] = {}
    for modality, shards in keys_by_modality.items():
        for url, keys in shards.items():
            by_file.setdefault(url.split("/", 1)[1], {})[modality] = tuple(keys)
    for name, lists in sorted(by_file.items()):
        missing = sorted(set(keys_by_modality) - set(lists))
        if missing:
            problems.append(f"{name}: missing for {', '.join(missing)} while other modalities have it")
        votes = Counter(lists.values())
        reference = max(votes, key=lambda keys: (votes[keys], keys))
        for modality, keys in sorted(lists.items()):
            if keys != reference:
                problems.append(f"{modality}/{name}: keys or order differ from the other modalities' {name}")
    return problems


def _check_unlisted(region_dir: Path, keys_by_modality: dict[str, dict[str, list[str]]]) -> list[str]:
    problems = []
    for modality, shards in keys_by_modality.items():
        folder = region_dir / modality
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.is_symlink():
                continue  # not a shard file; the layout check names it
            if SHARD_NAME.match(path.name) and f"{modality}/{path.name}" not in shards:
                problems.append(f"{modality}/{path.name}: shard not listed in {modality}.shards.json")
            elif path.name.endswith(".tmp"):
                problems.append(f"{modality}/{path.name}: leftover temporary file")
    return problems


def _check_declarations_and_plan(meta_dir: Path, keys_by_modality: dict[str, dict[str, list[str]]]) -> list[str]:
    """Every modality has a readable declaration listed in ``modalities.json``; the shards hold the pinned plan."""
    problems = []
    try:
        listed = json.loads((meta_dir / "modalities.json").read_text())["modalities"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"metadata/modalities.json: missing or unreadable ({exc})"]
    for modality in sorted(keys_by_modality):
        try:
            Modality.from_json(json.loads((meta_dir / f"{modality}.modality.json").read_text()))
        except (OSError, ValueError) as exc:
            problems.append(f"metadata/{modality}.modality.json: missing or not a declaration ({exc})")
        if modality not in listed:
            problems.append(f"metadata/modalities.json: does not list {modality}")
    try:
        plan = read_plan(meta_dir / "plan.parquet")
    except ValueError as exc:
        return problems + [str(exc)]
    if plan is None:
        return problems + ["metadata/plan.parquet: missing (the pinned shard plan)"]
    planned = {shard.filename: [chip.chip_id for chip in shard.chips] for shard in plan}
    for modality, shards in sorted(keys_by_modality.items()):
        for url, keys in sorted(shards.items()):
            name = url.split("/", 1)[1]
            if planned.get(name) != keys:
                problems.append(f"{url}: chips differ from the pinned plan's {name}")
    return problems

