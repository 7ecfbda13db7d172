"""What a region holds: its chips (geometry, split) and, per modality, where each chip's bytes are."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import pyarrow.parquet as pq

from builders.chip import CHIP_ID
from builders.registry import MODALITIES, modality_for_folder

SPLITS = ("train", "val", "test")
SourceStatus = Literal["file", "skipped", "marker", "absent"]


@dataclass(frozen=True)
class Chip:
    """One grid cell: id, split and EPSG:4326 envelope from the region's definition file."""

    chip_id: str
    split: str
    west: float = math.nan
    south: float = math.nan
    east: float = math.nan
    north: float = math.nan
    area_km2: float = math.nan

    @property
    def lon(self) -> float:
        return (self.west + self.east) / 2

    @property
    def lat(self) -> float:
        return (self.south + self.north) / 2


@dataclass(frozen=True)
class Source:
    """Where a chip's file is: a path, or a row of a release Parquet file (``row`` = (row group, index))."""

    status: SourceStatus
    name: str
    size: int = 0
    detail: str = ""
    path: str | None = None
    row: tuple[int, int] | None = None


ABSENT = Source("absent", "", detail="no file for this chip")


@dataclass
class RegionInventory:
    region: str
    stem: str
    chips: list[Chip]
    sources: dict[str, dict[str, Source]]
    strays: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        """Modalities present in the region, in registry order."""
        return [name for name in MODALITIES if name in self.sources]

    def source(self, modality: str, chip_id: str) -> Source:
        return self.sources[modality].get(chip_id, ABSENT)


def find_regions(chips_dir: Path) -> dict[str, Path]:
    """Region folders under ``chips_dir``: those holding a splits CSV."""
    found = {}
    for region_dir in sorted(p for p in Path(chips_dir).iterdir() if p.is_dir()):
        if any(region_dir.glob("*_splits_*.csv")):
            found[region_dir.name] = region_dir
    if not found:
        raise FileNotFoundError(f"no region folder with a *_splits_*.csv under {chips_dir}")
    return found


def splits_csv(region_dir: Path) -> Path:
    candidates = sorted(p for p in region_dir.glob("*_splits_*.csv") if not p.stem.endswith("_parquet"))
    if len(candidates) != 1:
        raise FileNotFoundError(f"{region_dir}: expected one *_splits_*.csv, found {[p.name for p in candidates]}")
    return candidates[0]


def read_splits(path: Path) -> dict[str, str]:
    """``identifier -> split`` with ids kept as strings; bad rows are errors naming the line."""
    result: dict[str, str] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"identifier", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns identifier,split; has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            chip_id, split = row["identifier"].strip(), row["split"].strip()
            if not CHIP_ID.match(chip_id):
                raise ValueError(f"{path}:{line}: identifier {chip_id!r} is not a 13-hex chip id")
            if split not in SPLITS:
                raise ValueError(f"{path}:{line}: split {split!r} not in {SPLITS}")
            result[chip_id] = split
    return result


def read_geometry(path: Path) -> dict[str, tuple[float, float, float, float, float]]:
    """``identifier -> (west, south, east, north, area_km2)`` from the region's geojson."""
    features = json.loads(Path(path).read_text())["features"]
    result = {}
    for feature in features:
        props = feature["properties"]
        coords = _flatten(feature["geometry"]["coordinates"])
        lons, lats = [c[0] for c in coords], [c[1] for c in coords]
        result[str(props["identifier"])] = (min(lons), min(lats), max(lons), max(lats), float(props.get("area_km2", math.nan)))
    return result


def _flatten(coords) -> list:
    if coords and isinstance(coords[0], (int, float)):
        return [coords]
    return [point for part in coords for point in _flatten(part)]


def region_chips(region_dir: Path) -> tuple[str, list[Chip], list[str]]:
    """Stem, chips (sorted by id) and problems of a region folder, from its splits CSV and geojson."""
    csv_path = splits_csv(region_dir)
    stem = csv_path.name.split("_splits_")[0]
    splits = read_splits(csv_path)
    geojson = region_dir / f"{stem}.geojson"
    problems: list[str] = []
    geometry = read_geometry(geojson) if geojson.exists() else {}
    if not geojson.exists():
        problems.append(f"{geojson}: missing; chip geometry left empty")
    chips = []
    for chip_id in sorted(splits):
        box = geometry.get(chip_id)
        if box is None and geometry:
            problems.append(f"chip {chip_id}: not in {geojson.name}; geometry left empty")
        chips.append(Chip(chip_id, splits[chip_id], *(box or ())))
    return stem, chips, problems


def scan_region(region_dir: Path) -> RegionInventory:
    """Inventory of a processed-chip region folder (``<aoi>/<stem>/<dataset_folder>/<id>.<ext>``)."""
    region_dir = Path(region_dir)
    stem, chips, problems = region_chips(region_dir)
    known = {chip.chip_id for chip in chips}
    inventory = RegionInventory(region_dir.name, stem, chips, {}, problems=problems)
    data_dir = region_dir / stem
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: chip folder missing")
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        modality = modality_for_folder(folder.name)
        if modality is None:
            inventory.problems.append(f"{folder}: unknown dataset folder, not registered; ignored")
            continue
        if modality.name in inventory.sources:
            inventory.problems.append(f"{folder}: second folder for {modality.name}; ignored")
            continue
        sources, strays = _scan_folder(folder, modality.extension, known, f"{region_dir.name}/{stem}/{folder.name}")
        inventory.sources[modality.name] = sources
        if strays:
            inventory.strays[modality.name] = strays
            inventory.problems.append(f"{folder}: {len(strays)} file(s) for chips not in the splits CSV, e.g. {strays[0]}")
    return inventory


def classify_entry(filename: str, extension: str) -> tuple[str, SourceStatus] | None:
    """(chip id, status) of a dataset-folder entry name, or None when it is not a chip entry."""
    if filename.endswith(extension):
        return filename[: -len(extension)], "file"
    if filename.endswith(".skipped"):
        return filename[: -len(".skipped")], "skipped"
    if filename.endswith(extension + ".nodata"):
        return filename[: -len(extension + ".nodata")], "marker"
    return None


def _scan_folder(folder: Path, extension: str, known: set[str], prefix: str) -> tuple[dict[str, Source], list[str]]:
    """Chip entries of one dataset folder; ``prefix`` (``<aoi>/<stem>/<folder>``) names them like release paths."""
    sources: dict[str, Source] = {}
    strays: list[str] = []
    for path in sorted(folder.iterdir()):
        entry = classify_entry(path.name, extension)
        if entry is None:
            continue
        chip_id, status = entry
        if chip_id not in known:
            strays.append(path.name)
            continue
        if status == "file":
            sources[chip_id] = Source("file", f"{prefix}/{path.name}", path.stat().st_size, path=str(path))
        elif chip_id not in sources:
            text = path.read_text(errors="replace").strip()[:200] if status == "skipped" else "placeholder marker"
            sources[chip_id] = Source(status, f"{prefix}/{path.name}", 0, detail=text, path=str(path))
    return sources, strays


def load_source(source: Source) -> bytes:
    """The bytes of one chip file (a path, or a single release row)."""
    if source.row is None:
        return Path(source.path).read_bytes()
    return next(iter(prefetch_rows([source]).values()))


def prefetch_rows(sources: Sequence[Source]) -> dict[int, bytes]:
    """Content of the release-row ``sources`` (by position), reading each needed row group once.

    Memory stays at the requested rows' bytes (at most one shard of one modality) plus one row group,
    whatever the size of the release or the order of its rows.
    """
    wanted: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for position, source in enumerate(sources):
        if source.status == "file" and source.row is not None:
            wanted[(source.path, source.row[0])].append((position, source.row[1]))
    contents: dict[int, bytes] = {}
    for (path, group), rows in sorted(wanted.items()):
        column = pq.ParquetFile(path).read_row_group(group, columns=["content"]).column(0)
        for position, index in rows:
            contents[position] = column[index].as_py()
        del column
    return contents
