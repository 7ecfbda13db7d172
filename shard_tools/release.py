"""``m3leo-shard convert-release``: the current Hub release (zstd Parquet rows of raw chip files) to our shards.

No Spark and nothing unpacked to disk. Planning reads only the ``path``, ``length`` and (when present)
``modificationTime`` columns, one row group at a time; each chip becomes a ``Source`` pointing at its (Parquet file, row group, row), whose
``content`` the shared build back end reads one row group at a time while writing shards. Regions are
inventoried lazily, one at a time, so the output equals ``build`` on the same chips unpacked to a tree.

Release layout (spec §3.2): ``<aoi>/<stem>_splits_*.csv`` (+ ``_parquet.csv``, geojson) and
``<aoi>/<stem>/<dataset_folder>/<parquet_identifier>.zstd.parquet`` with columns
``path, modificationTime, length, content, aoi, ds``; ``path`` is ``<aoi>/<stem>/<folder>/<file>``.
Page CRCs, when the writer stored them (parquet-java does by default), are verified on every read.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from builders.limits import MAX_TABLE_BYTES
from builders.registry import modality_for_folder
from shard_tools.build import BuildOptions, BuildReport, build_inventories
from shard_tools.executors import Executor
from shard_tools.inventory import RegionInventory, Source, classify_entry, marker_detail, region_chips, row_contents
from shard_tools.progress import Progress

PLAN_COLUMNS = ["path", "length"]
MAX_RELEASE_ROWS = 1_000_000  # rows of one row group (all of M3LEO holds about a million chips per product)
MTIME_COLUMN = "modificationTime"
MARKER_DETAIL = {"marker": "placeholder marker"}


@dataclass(frozen=True)
class ReleaseRow:
    """One release row, without its content: where it is and what it names."""

    path: str
    length: int
    file: str
    row: tuple[int, int]
    mtime: str | None = None

    @property
    def parts(self) -> list[str]:
        return self.path.split("/")


def convert_release(
    paths: Iterable[str | Path],
    out: str | Path,
    *,
    regions: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    workers: int = 1,
    executor: str | Executor = "local",
    progress: Progress | None = None,
    **options,
) -> BuildReport:
    """Shard the release Parquet files ``paths`` (files, or folders searched recursively) into ``out``.

    A region's split CSV must sit in an ancestor folder of its Parquet files (as on the Hub). ``options`` are
    ``BuildOptions`` fields (``shard_size_mb``, ``chips_per_shard``, ``replan``, ``rehash``, ``skip_unknown``).
    """
    by_region = group_by_region(release_files(paths))
    unknown = sorted(set(regions or ()) - set(by_region))
    if unknown:
        raise ValueError(f"region(s) {unknown} not among the release files; found {sorted(by_region)}")
    selected = [by_region[name] for name in (regions or sorted(by_region))]
    inventories = (release_inventory(region_dir, files) for region_dir, files in selected)
    return build_inventories(inventories, out, modalities=modalities, options=BuildOptions(**options),
                             workers=workers, executor=executor, progress=progress)


def release_files(paths: Iterable[str | Path]) -> list[Path]:
    """The release Parquet files named by ``paths``, folders expanded, sorted and unique."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("*.parquet") if p.is_file())
        elif path.is_file():
            found.add(path.resolve())
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not found:
        raise FileNotFoundError(f"no *.parquet file under {[str(p) for p in paths]}")
    return sorted(found)


def group_by_region(files: list[Path]) -> dict[str, tuple[Path, list[Path]]]:
    """``aoi -> (definition folder, Parquet files)``; the folder is the nearest ancestor holding a split CSV."""
    groups: dict[str, tuple[Path, list[Path]]] = {}
    for file in files:
        region_dir = next((p for p in file.parents if _has_splits(p)), None)
        if region_dir is None:
            raise FileNotFoundError(f"{file}: no *_splits_*.csv in any folder above it; download the region's "
                                    "split CSV next to its Parquet folders")
        groups.setdefault(region_dir.name, (region_dir, []))[1].append(file)
    return groups


def _has_splits(folder: Path) -> bool:
    return any(not p.stem.endswith("_parquet") for p in folder.glob("*_splits_*.csv"))


def read_rows(file: Path) -> Iterator[ReleaseRow]:
    """Every row of a release file (path, length, position, mtime), reading the small columns one row group at a time.

    A file pyarrow cannot read, or a row without path or length, is a ``ValueError`` naming the file."""
    try:
        parquet = pq.ParquetFile(file, page_checksum_verification=True)
        missing = sorted(set(PLAN_COLUMNS + ["content"]) - set(parquet.schema_arrow.names))
        groups = parquet.metadata.num_row_groups
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise ValueError(f"{file}: unreadable Parquet file: {exc}") from None
    if missing:
        raise ValueError(f"{file}: not a release Parquet file, missing column(s) {missing}")
    columns = PLAN_COLUMNS + [c for c in (MTIME_COLUMN,) if c in parquet.schema_arrow.names]
    positions = [parquet.schema_arrow.get_field_index(c) for c in columns]
    for group in range(groups):
        meta = parquet.metadata.row_group(group)
        declared = sum(meta.column(i).total_uncompressed_size for i in positions)
        if meta.num_rows > MAX_RELEASE_ROWS or declared > MAX_TABLE_BYTES:
            raise ValueError(f"{file}: row group {group} declares {meta.num_rows} rows and {declared} bytes of "
                             f"{', '.join(columns)}, over the limits ({MAX_RELEASE_ROWS} rows, {MAX_TABLE_BYTES} bytes)")
        try:
            table = parquet.read_row_group(group, columns=columns)
            paths, lengths = table.column("path").to_pylist(), table.column("length").to_pylist()
            mtimes = (table.column(MTIME_COLUMN).cast(pa.int64()).to_pylist() if MTIME_COLUMN in columns
                      else [None] * len(paths))
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise ValueError(f"{file}: row group {group} unreadable: {exc}") from None
        for index, (path, length, mtime) in enumerate(zip(paths, lengths, mtimes)):
            if path is None or length is None:
                raise ValueError(f"{file}: row group {group} row {index} has no path or length")
            yield ReleaseRow(path, int(length), str(file), (group, index), None if mtime is None else str(mtime))


def release_inventory(region_dir: Path, files: list[Path]) -> RegionInventory:
    """Inventory of one region of the release, equal to ``scan_region`` of the same chips as a file tree."""
    region = region_dir.name
    stem, chips, problems = region_chips(region_dir)
    inventory = RegionInventory(region, stem, chips, {}, problems=problems)
    folders: dict[str, list[ReleaseRow]] = defaultdict(list)
    for file in files:
        for row in read_rows(file):
            parts = row.parts
            if len(parts) != 4 or parts[:2] != [region, stem]:
                inventory.problems.append(f"{file}: row {row.path!r} is not {region}/{stem}/<folder>/<file>; ignored")
                continue
            folders[parts[2]].append(row)
    known = {chip.chip_id for chip in chips}
    for folder in sorted(folders):
        modality = modality_for_folder(folder)
        where = f"{region}/{stem}/{folder}"
        if modality is None:
            inventory.unmatched[where] = "no declaration matches this dataset folder"
        else:
            inventory.add(modality, where, *_folder_sources(folders[folder], modality.extension, known,
                                                            inventory.problems))
    return inventory


def _folder_sources(rows: list[ReleaseRow], extension: str, known: set[str],
                    problems: list[str]) -> tuple[dict[str, Source], list[str]]:
    """Per chip: its file row, else its first marker row by name (as ``scan_region`` picks among files)."""
    entries: dict[str, list[tuple[str, str, ReleaseRow]]] = defaultdict(list)
    strays: list[str] = []
    for row in sorted(rows, key=lambda r: (r.path, r.file, r.row)):
        filename = row.parts[3]
        entry = classify_entry(filename, extension)
        if entry is None:
            problems.append(f"{row.file}: row {row.path!r} is not a chip file ({extension}, .skipped); ignored")
            continue
        chip_id, status = entry
        if chip_id not in known:
            strays.append(filename)
            continue
        entries[chip_id].append((status, filename, row))
    chosen: dict[str, tuple[str, ReleaseRow]] = {}
    for chip_id, candidates in entries.items():
        files = [row for status, _, row in candidates if status == "file"]
        if len(files) > 1:
            problems.append(f"chip {chip_id}: {len(files)} rows for {files[0].path}; using {files[0].file}")
        if files:
            chosen[chip_id] = ("file", files[0])
        else:
            status, _, row = min(candidates, key=lambda candidate: candidate[1])
            chosen[chip_id] = (status, row)
    texts = _marker_texts([row for status, row in chosen.values() if status == "skipped"])
    sources = {}
    for chip_id, (status, row) in sorted(chosen.items()):
        if status == "file":
            sources[chip_id] = Source("file", row.path, row.length, path=row.file, row=row.row, mtime=row.mtime)
        else:
            detail = texts.get(row, MARKER_DETAIL.get(status, ""))
            sources[chip_id] = Source(status, row.path, 0, detail=detail, path=row.file, row=row.row)
    return sources, sorted(strays)


def _marker_texts(rows: list[ReleaseRow]) -> dict[ReleaseRow, str]:
    """Text of ``.skipped`` rows (the failure code), reading one row group's content at a time."""
    by_group: dict[tuple[str, int], list[ReleaseRow]] = defaultdict(list)
    for row in rows:
        by_group[(row.file, row.row[0])].append(row)
    texts = {}
    for (file, group), members in sorted(by_group.items()):
        try:
            content = row_contents(file, group, {row.row[1] for row in members})
        except OSError as exc:
            raise ValueError(str(exc)) from None
        for row in members:
            texts[row] = marker_detail(content[row.row[1]] or b"")
    return texts
