"""What a region holds: its chips (geometry, split) and, per modality, where each chip's bytes are.

The chip tree may be a local folder or an fsspec URL (``s3://``, ``gs://``, ``hf://``, ``memory://``,
``file://``). Locations are ``Path`` objects for plain local paths and full URL strings otherwise; a
``Source`` path is then the chip's URL, which workers open with ``fsspec.open``. Each folder is listed once
(names, types and sizes in one ``ls``): an object store gets one listing request per folder, never one
request per file. Storage options (credentials, endpoints) come from fsspec's configuration
(``FSSPEC_<PROTOCOL>_<OPTION>`` environment variables or its config files), which worker processes read too.
A ``memory://`` tree exists only in the process that wrote it: build from it in-process (local executor,
one worker).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Sequence, Union

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from builders.chip import CHIP_ID
from builders.declarations import Modality
from builders.limits import MAX_FILE_BYTES, MAX_MARKER_BYTES, MAX_TABLE_BYTES, file_kind, read_capped, too_large
from builders.registry import modality_for_folder
from shard_tools.objectstore import is_url, protocols

SPLITS = ("train", "val", "test")
SourceStatus = Literal["file", "skipped", "marker", "absent", "refused"]
MARKER_CODES = ("NO_GRANULES_FOUND", "COULD_NOT_DOWNLOAD", "COULD_NOT_GET_CHIP", "COULD_NOT_WRITE_CHIP",
                "TILE_NOT_FULLY_CONTAINED_IN_ANY_GRANULE")
"""The error codes sartiles writes into ``.skipped`` markers (the first word of the text)."""
UNRECOGNISED_MARKER = "unrecognised marker text"


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
    """Where a chip's file is: a path, or a row of a release Parquet file (``row`` = (row group, index)).

    ``path`` is a local path or a full fsspec URL, either of which a worker process can open. ``mtime`` is the
    modification time the listing gave (``None`` where the store has none: then reuse checks the content).
    """

    status: SourceStatus
    name: str
    size: int = 0
    detail: str = ""
    path: str | None = None
    row: tuple[int, int] | None = None
    mtime: str | None = None


ABSENT = Source("absent", "", detail="no file for this chip")


@dataclass
class RegionInventory:
    """What one region's input holds. ``specs`` declares each found modality; ``unmatched`` maps dataset folders
    no declaration covers (or a second folder of one modality) to why, for the build to refuse or skip."""

    region: str
    stem: str
    chips: list[Chip]
    sources: dict[str, dict[str, Source]]
    strays: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    specs: dict[str, Modality] = field(default_factory=dict)
    unmatched: dict[str, str] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        """Modalities present in the region, by name."""
        return sorted(self.sources)

    def add(self, modality: Modality, where: str, sources: dict[str, Source], strays: list[str]) -> None:
        """Record one dataset folder's chips, or why it cannot be taken (a second folder of ``modality``)."""
        if modality.name in self.sources:
            self.unmatched[where] = f"second folder for {modality.name} (besides {self.specs[modality.name].folder})"
            return
        self.specs[modality.name] = modality
        self.sources[modality.name] = sources
        if strays:
            self.strays[modality.name] = strays
            self.problems.append(f"{where}: {len(strays)} file(s) for chips not in the splits CSV, e.g. {strays[0]}")

    def source(self, modality: str, chip_id: str) -> Source:
        return self.sources[modality].get(chip_id, ABSENT)


Location = Union[Path, str]
"""A local folder or file (``Path``), or a full fsspec URL (``str``)."""

SPLITS_GLOB = "*_splits_*.csv"


class Entry(NamedTuple):
    """One entry of a folder listing; ``kind`` is what a link points to (``limits.file_kind``), ``mtime`` the
    store's modification time, when it has one."""

    name: str
    is_dir: bool
    size: int
    kind: str = "regular file"
    is_link: bool = False
    mtime: str | None = None


def as_location(where: str | Path) -> Location:
    """``Path`` for plain local paths; a URL (``file://`` included) stays a URL, without trailing slash."""
    if not is_url(where):
        return Path(where)
    try:
        url_to_fs(where)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"{where}: cannot open this URL: {exc}") from None
    url = str(where).rstrip("/")
    return url + "//" if url.endswith(":") else url


def child(location: Location, name: str) -> Location:
    return location / name if isinstance(location, Path) else f"{location}/{name}"


def base_name(location: Location) -> str:
    return location.name if isinstance(location, Path) else location.rstrip("/").rsplit("/", 1)[-1]


def list_folder(location: Location) -> list[Entry]:
    """Entries of a folder sorted by name, with sizes and types: one ``scandir`` locally, one ``ls`` on a URL.

    Local entries (a ``file://`` URL's too: the same modification times, so either names the same sources) follow
    symbolic links (as ``Path.is_dir``) and say whether they are one; sizes of local folders are not looked up.
    """
    local = location if isinstance(location, Path) else _local_path(location)
    if local is not None:
        with os.scandir(local) as it:
            return sorted(_local_entry(entry) for entry in it)
    fs, path = url_to_fs(location)
    entries = []
    for info in fs.ls(path, detail=True):
        name = info["name"].rstrip("/")
        if name == path.rstrip("/"):  # some stores list a folder's own placeholder object
            continue
        is_link = bool(info.get("islink", False))
        is_dir = info["type"] == "directory" or (is_link and fs.isdir(name))  # file:// links
        kind = {"file": "regular file", "directory": "folder"}.get(info["type"]) or file_kind(info.get("mode", 0))
        if is_link:  # fsspec's local listing describes the link itself: look at its target
            kind = "folder" if is_dir else _local_kind(name)
        entries.append(Entry(name.rsplit("/", 1)[-1], is_dir, int(info.get("size") or 0), kind, is_link,
                             _url_mtime(info)))
    return sorted(entries)


def _local_entry(entry: os.DirEntry) -> Entry:
    try:
        info = entry.stat()
    except OSError:  # a broken link: reading it later says what is wrong
        return Entry(entry.name, False, 0, "regular file", entry.is_symlink())
    is_dir = stat.S_ISDIR(info.st_mode)
    return Entry(entry.name, is_dir, 0 if is_dir else info.st_size, file_kind(info.st_mode), entry.is_symlink(),
                 None if is_dir else str(info.st_mtime_ns))


def _local_kind(path: str) -> str:
    try:
        return file_kind(os.stat(path).st_mode)
    except OSError:
        return "regular file"


MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


def _url_mtime(info: dict) -> str | None:
    """The modification time an fsspec listing reports (names differ per store), as text; None if it has none."""
    for key in MTIME_KEYS:
        if info.get(key) not in (None, ""):
            return str(info[key])
    return None


def read_bytes(location: Location | str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Content of a local regular file or URL of at most ``max_bytes``; failures are ``OSError``s (a missing
    backend is an ``ImportError``). Other file types and bigger files are refused, at most ``max_bytes + 1``
    bytes are read."""
    if not is_url(location):
        return read_capped(location, max_bytes)
    try:
        with fsspec.open(location, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except (OSError, ImportError):
        raise
    except Exception as exc:  # backends raise their own errors (HTTP, auth, ...): report them as read errors
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    if len(data) > max_bytes:
        raise OSError(too_large(len(data), max_bytes))
    return data


def require_in_process(chips_dir: str | Path, in_process: bool) -> None:
    """Refuse ``memory://`` input when chips would be read in other processes, where it does not exist."""
    if not in_process and is_url(chips_dir) and "memory" in protocols(url_to_fs(chips_dir)[0]):
        raise ValueError(f"{chips_dir}: memory:// is private to each process: use the local executor with 1 worker")


def find_regions(chips_dir: str | Path) -> dict[str, Location]:
    """Region folders under ``chips_dir`` (a folder or a URL): those holding a splits CSV."""
    root = as_location(chips_dir)
    try:
        folders = [entry.name for entry in list_folder(root) if entry.is_dir]
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{chips_dir}: no such folder") from None
    found = {}
    for name in folders:
        region_dir = child(root, name)
        if any(fnmatch.fnmatchcase(entry.name, SPLITS_GLOB) for entry in list_folder(region_dir)):
            found[name] = region_dir
    if not found:
        raise FileNotFoundError(f"no region folder with a {SPLITS_GLOB} under {chips_dir}")
    return found


def splits_csv(region_dir: str | Path, listing: list[Entry] | None = None) -> Location:
    """The region's split CSV (not the release's ``*_parquet.csv`` mapping); ``listing`` saves a listing."""
    region_dir = as_location(region_dir)
    names = [e.name for e in (list_folder(region_dir) if listing is None else listing)
             if fnmatch.fnmatchcase(e.name, SPLITS_GLOB) and not e.name[: -len(".csv")].endswith("_parquet")]
    if len(names) != 1:
        raise FileNotFoundError(f"{region_dir}: expected one {SPLITS_GLOB}, found {names}")
    return child(region_dir, names[0])


def region_text(path: str | Path, what: str) -> str:
    """A region's table (splits CSV, geojson) as text: a regular file (or URL) of at most ``MAX_TABLE_BYTES``,
    UTF-8; anything else is a ``ValueError`` naming the file and what is wrong."""
    try:
        data = read_bytes(as_location(path), MAX_TABLE_BYTES)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the region's {what}: {exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: the region's {what} is not UTF-8 text (byte {exc.start})") from None


def read_splits(path: str | Path) -> dict[str, str]:
    """``identifier -> split`` with ids kept as strings; bad rows are errors naming the line."""
    result: dict[str, str] = {}
    reader = csv.DictReader(io.StringIO(region_text(path, "splits CSV"), newline=""))
    try:
        if not reader.fieldnames or not {"identifier", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns identifier,split; has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            chip_id, split = (row["identifier"] or "").strip(), (row["split"] or "").strip()
            if not CHIP_ID.match(chip_id):
                raise ValueError(f"{path}:{line}: identifier {chip_id[:40]!r} is not a 13-hex chip id")
            if split not in SPLITS:
                raise ValueError(f"{path}:{line}: split {split[:40]!r} not in {SPLITS}")
            result[chip_id] = split
    except csv.Error as exc:
        raise ValueError(f"{path}:{reader.line_num}: not a valid CSV row ({exc})") from None
    return result


def read_geometry(path: str | Path) -> dict[str, tuple[float, float, float, float, float]]:
    """``identifier -> (west, south, east, north, area_km2)`` from the region's geojson; a malformed file is a
    ``ValueError`` naming it and the feature."""
    text = region_text(path, "geojson")
    try:
        features = json.loads(text)["features"]
        if not isinstance(features, list):
            raise TypeError("features is not a list")
    except (ValueError, RecursionError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: not a GeoJSON FeatureCollection ({type(exc).__name__}: {str(exc)[:200]})") from None
    result = {}
    for number, feature in enumerate(features):
        try:
            props = feature["properties"]
            coords = _flatten(feature["geometry"]["coordinates"])
            lons, lats = [float(c[0]) for c in coords], [float(c[1]) for c in coords]
            result[str(props["identifier"])[:64]] = (min(lons), min(lats), max(lons), max(lats),
                                                     float(props.get("area_km2", math.nan)))
        except (KeyError, TypeError, ValueError, IndexError, RecursionError) as exc:
            raise ValueError(f"{path}: feature {number}: no identifier and polygon coordinates "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return result


def _flatten(coords) -> list:
    if coords and isinstance(coords[0], (int, float)):
        return [coords]
    return [point for part in coords for point in _flatten(part)]


def region_chips(region_dir: str | Path, listing: list[Entry] | None = None) -> tuple[str, list[Chip], list[str]]:
    """Stem, chips (sorted by id) and problems of a region folder, from its splits CSV and geojson."""
    region_dir = as_location(region_dir)
    listing = list_folder(region_dir) if listing is None else listing
    csv_path = splits_csv(region_dir, listing)
    stem = base_name(csv_path).split("_splits_")[0]
    splits = read_splits(csv_path)
    geojson = child(region_dir, f"{stem}.geojson")
    has_geojson = any(e.name == f"{stem}.geojson" and not e.is_dir for e in listing)
    problems: list[str] = []
    geometry = read_geometry(geojson) if has_geojson else {}
    if not has_geojson:
        problems.append(f"{geojson}: missing; chip geometry left empty")
    chips = []
    for chip_id in sorted(splits):
        box = geometry.get(chip_id)
        if box is None and geometry:
            problems.append(f"chip {chip_id}: not in {base_name(geojson)}; geometry left empty")
        chips.append(Chip(chip_id, splits[chip_id], *(box or ())))
    return stem, chips, problems


def scan_region(region_dir: str | Path, *, follow_symlinks: bool = False) -> RegionInventory:
    """Inventory of a processed-chip region folder or URL (``<aoi>/<stem>/<dataset_folder>/<id>.<ext>``).

    Chip entries that are not regular files, and symbolic links leading out of the region folder unless
    ``follow_symlinks``, become ``refused`` sources saying why.
    """
    region_dir = as_location(region_dir)
    listing = list_folder(region_dir)
    stem, chips, problems = region_chips(region_dir, listing)
    known = {chip.chip_id for chip in chips}
    region = base_name(region_dir)
    inventory = RegionInventory(region, stem, chips, {}, problems=problems)
    data_dir = child(region_dir, stem)
    if not any(e.name == stem and e.is_dir for e in listing):
        raise FileNotFoundError(f"{data_dir}: chip folder missing")
    for entry in list_folder(data_dir):
        if not entry.is_dir:
            continue
        folder = child(data_dir, entry.name)
        where = f"{region}/{stem}/{entry.name}"
        modality = modality_for_folder(entry.name)
        if modality is None:
            inventory.unmatched[where] = "no declaration matches this dataset folder"
            continue
        inventory.add(modality, where, *_scan_folder(folder, modality.extension, known, where,
                                                     _tree_root(region_dir, follow_symlinks)))
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


def _scan_folder(folder: Location, extension: str, known: set[str], prefix: str,
                 tree: str | None = None) -> tuple[dict[str, Source], list[str]]:
    """Chip entries of one dataset folder; ``prefix`` (``<aoi>/<stem>/<folder>``) names them like release paths.

    Sizes come from the folder's one listing; only ``.skipped`` markers (chips that failed) are read, together,
    and only their known error code is kept. ``tree`` is the real path symbolic links must stay inside
    (None: follow them).
    """
    files: dict[str, Source] = {}
    markers: dict[str, tuple[SourceStatus, str, str]] = {}
    order: dict[str, None] = {}  # chips by first entry, the order ``sources`` has always had
    strays: list[str] = []
    for entry in list_folder(folder):
        classified = classify_entry(entry.name, extension)
        if classified is None:
            continue
        chip_id, status = classified
        if chip_id not in known:
            strays.append(entry.name)
            continue
        order.setdefault(chip_id)
        refusal = _refusal(folder, entry, tree)
        if status == "file":
            files[chip_id] = Source("refused" if refusal else "file", f"{prefix}/{entry.name}", entry.size,
                                    detail=refusal or "", path=str(child(folder, entry.name)),
                                    mtime=entry.mtime)
        else:
            markers.setdefault(chip_id, ("refused", entry.name, refusal) if refusal else (status, entry.name, ""))
    unread = [name for chip_id, (status, name, _) in markers.items() if status == "skipped" and chip_id not in files]
    texts = _marker_texts(folder, unread)
    sources: dict[str, Source] = {}
    for chip_id in order:
        if chip_id in files:
            sources[chip_id] = files[chip_id]
            continue
        status, name, refusal = markers[chip_id]
        detail = texts[name] if status == "skipped" else "placeholder marker" if status == "marker" else refusal
        sources[chip_id] = Source(status, f"{prefix}/{name}", 0, detail=detail, path=str(child(folder, name)))
    return sources, strays


def _tree_root(region_dir: Location, follow_symlinks: bool) -> str | None:
    """Real path of a local region folder, which chip links must not leave; None when links are followed."""
    if follow_symlinks:
        return None
    path = _local_path(region_dir)
    return os.path.realpath(path) if path is not None else None


def _local_path(location: Location) -> str | None:
    """The local path of a folder or ``file://`` URL; None for other stores (they have no links)."""
    if isinstance(location, Path):
        return str(location)
    fs, path = url_to_fs(location)
    return path if "file" in protocols(fs) else None


def _refusal(folder: Location, entry: Entry, tree: str | None) -> str | None:
    """Why a chip entry is not read: not a regular file, or a link out of ``tree``; None when it is fine."""
    if entry.is_link and tree is not None:
        target = os.path.realpath(os.path.join(_local_path(folder) or "", entry.name))
        if os.path.commonpath([tree, target]) != tree:
            return "symbolic link to a file outside the chip tree, not followed (build with --follow-symlinks)"
    if entry.kind != "regular file":
        return f"not a regular file ({entry.kind})"
    return None


def marker_detail(text: bytes | None) -> str:
    """The sartiles error code a ``.skipped`` marker holds, or ``UNRECOGNISED_MARKER``: never other content."""
    if text is None or len(text) > MAX_MARKER_BYTES:
        return UNRECOGNISED_MARKER
    words = text.decode("utf-8", errors="replace").split()
    return words[0] if words and words[0] in MARKER_CODES else UNRECOGNISED_MARKER


def _marker_texts(folder: Location, names: list[str]) -> dict[str, str]:
    """Details (``marker_detail``) of the named marker files, reading at most ``MAX_MARKER_BYTES + 1`` bytes of
    each; one batched fetch on a URL."""
    if not names:
        return {}
    if isinstance(folder, Path):
        return {name: marker_detail(_head(folder / name)) for name in names}
    fs, path = url_to_fs(folder)
    size = MAX_MARKER_BYTES + 1
    contents = fs.cat_ranges([f"{path}/{name}" for name in names], [0] * len(names), [size] * len(names),
                             on_error="return")
    return {name: marker_detail(data if isinstance(data, bytes) else None) for name, data in zip(names, contents)}


def _head(path: Path) -> bytes | None:
    try:
        return read_capped(path, MAX_MARKER_BYTES)
    except OSError:
        return None


def load_source(source: Source, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of one chip file (a local path, a URL, or a single release row); files over ``max_bytes``
    are refused."""
    if source.row is None:
        return read_bytes(source.path, max_bytes)
    group, index = source.row
    return row_contents(source.path, group, {index}, max_bytes)[index] or b""


def prefetch_rows(sources: Sequence[Source]) -> dict[int, bytes]:
    """Content of the release-row ``sources`` (by position), reading each needed row group once.

    Memory stays at the requested rows' bytes (at most one shard of one modality) plus the row being decoded
    (``row_contents``), whatever the size of the release, its row groups or the order of its rows. A row group
    that cannot be read so is left out: each of its sources is then read, and refused, on its own
    (``load_source``), so one bad row costs only its chip.
    """
    wanted: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for position, source in enumerate(sources):
        if source.status == "file" and source.row is not None:
            wanted[(source.path, source.row[0])].append((position, source.row[1]))
    contents: dict[int, bytes] = {}
    for (path, group), rows in sorted(wanted.items()):
        try:
            found = row_contents(path, group, {index for _, index in rows})
        except OSError:
            continue
        contents.update({position: found[index] for position, index in rows})
    return contents


ROW_BATCH = 1  # release rows decoded at a time


def row_contents(path: str, group: int, indices: set[int], max_bytes: int = MAX_FILE_BYTES) -> dict[int, bytes | None]:
    """The ``content`` of rows ``indices`` of row group ``group`` of a release file, streamed ``ROW_BATCH`` rows
    at a time (page by page), each row at most ``max_bytes``. A row group that cannot hold such rows (its
    declared content size, checked before anything is decoded), an oversized or missing row, or one pyarrow
    cannot read is an ``OSError`` naming the file, the row group and the row. (A row is decoded before its size
    is known: within a group declaring a plausible total, one row can take up to that total.)"""
    where = f"{path}: row group {group}"
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True, buffer_size=1 << 20)
        meta = parquet.metadata.row_group(group)
        column = parquet.schema_arrow.get_field_index("content")
        declared = meta.column(column).total_uncompressed_size
        if declared > max(meta.num_rows, 1) * (max_bytes + 4096):
            raise OSError(f"declares {declared} bytes of content for {meta.num_rows} rows (at most {max_bytes} each)")
        found: dict[int, bytes | None] = {}
        start, last = 0, max(indices, default=-1)
        for batch in parquet.iter_batches(batch_size=ROW_BATCH, row_groups=[group], columns=["content"]):
            if start > last:  # the rows after the last wanted one are not decoded
                break
            values = batch.column(0)
            for index in sorted(indices & set(range(start, start + len(values)))):
                value = values[index - start]
                data = value.as_buffer() if value.is_valid else None
                if data is not None and data.size > max_bytes:
                    raise OSError(f"row {index}: content of {data.size} bytes exceeds the limit of {max_bytes} bytes")
                found[index] = None if data is None else data.to_pybytes()
            start += len(values)
    except (pa.ArrowException, ValueError, IndexError) as exc:
        raise OSError(f"{where}: unreadable release content: {exc}") from None
    except OSError as exc:
        raise OSError(f"{where}: {exc}") from None
    missing = sorted(indices - set(found))
    if missing:
        raise OSError(f"{where}: no row {missing[0]} (it has {start})")
    return found
