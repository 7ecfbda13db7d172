"""``write_release_parquet``: a chip tree packed like the current Hub release (Spark binaryFile rows, spec §3.2)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from builders.registry import modality_for_folder


MODIFICATION_TIME = np.datetime64("2024-11-20T10:00:00", "ns")


PLACEHOLDER = bytes(48)


RELEASE_SCHEMA = pa.schema([
    ("path", pa.string()), ("modificationTime", pa.timestamp("ns")), ("length", pa.int64()),
    ("content", pa.binary()), ("aoi", pa.string()), ("ds", pa.string()),
])


def _splits_csv(aoi_dir: Path) -> Path | None:
    found = sorted(p for p in aoi_dir.glob("*_splits_*.csv")
                   if not p.name.endswith(("_parquet.csv", "_miniset.csv")))
    return found[0] if found else None


def _read_splits(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(row["identifier"], row["split"]) for row in csv.DictReader(f)]


def _chip_files(folder: Path) -> dict[str, Path]:
    """Chip id -> its file (data or .skipped) in a dataset folder."""
    return {p.name.split(".", 1)[0]: p for p in sorted(folder.iterdir()) if p.is_file()}


def _regions(chips: Path) -> list[tuple[Path, Path, str]]:
    """(aoi dir, split CSV, stem) of every AOI in a chip tree."""
    found = []
    for aoi_dir in sorted(p for p in chips.iterdir() if p.is_dir()):
        splits = _splits_csv(aoi_dir)
        if splits is not None:
            found.append((aoi_dir, splits, splits.name.split("_splits", 1)[0]))
    return found


def release_placeholder(chips: str | Path) -> str | None:
    """``path`` of the 48-byte placeholder row ``write_release_parquet`` adds, or None.

    It stands for the first chip (split-CSV order) lacking a file in the first GeoTIFF folder (sorted)
    of the first AOI (sorted) that has such a chip.
    """
    for aoi_dir, splits, stem in _regions(Path(chips)):
        for folder in sorted(p for p in (aoi_dir / stem).iterdir() if p.is_dir()):
            modality = modality_for_folder(folder.name)
            if modality is None or modality.container != "geotiff":
                continue
            files = _chip_files(folder)
            for chip, _ in _read_splits(splits):
                if chip not in files:
                    return f"{aoi_dir.name}/{stem}/{folder.name}/{chip}{modality.extension}"
    return None


def _parquet_groups(splits: list[tuple[str, str]], chips_per_file: int) -> dict[str, list[str]]:
    """Split-pure chip groups: ``<split>-NNNNN`` -> sorted chip ids."""
    groups: dict[str, list[str]] = {}
    for split in sorted({s for _, s in splits}):
        ids = sorted(c for c, s in splits if s == split)
        for k in range(0, len(ids), chips_per_file):
            groups[f"{split}-{k // chips_per_file:05d}"] = ids[k:k + chips_per_file]
    return groups


def _write_mapping(path: Path, splits: list[tuple[str, str]], groups: dict[str, list[str]]) -> None:
    group_of = {chip: name for name, ids in groups.items() for chip in ids}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["identifier", "split", "parquet_identifier"])
        writer.writerows([chip, split, group_of[chip]] for chip, split in splits)


def _release_rows(aoi: str, stem: str, folder: Path, ids: list[str], placeholder: str | None) -> list[dict]:
    files = _chip_files(folder)
    rows = []
    for chip in ids:
        if chip in files:
            rel, content = f"{aoi}/{stem}/{folder.name}/{files[chip].name}", files[chip].read_bytes()
        elif placeholder is not None and placeholder.startswith(f"{aoi}/{stem}/{folder.name}/{chip}."):
            rel, content = placeholder, PLACEHOLDER
        else:
            continue
        rows.append({"path": rel, "modificationTime": MODIFICATION_TIME, "length": len(content),
                     "content": content, "aoi": aoi, "ds": folder.name})
    return rows


def write_release_parquet(chips: str | Path, out: str | Path, *, chips_per_file: int = 4,
                          row_group_size: int = 2) -> list[Path]:
    """Pack a chip tree as the current Hub release (spec §3.2); return the Parquet files written.

    Per AOI: the split CSV and geojson copied, ``<splits>_parquet.csv`` (identifier, split,
    parquet_identifier) and ``<stem>/<ds>/<parquet_identifier>.zstd.parquet`` with the Spark binaryFile
    columns plus aoi, ds. Groups are split-pure (``train-00000``) and name the same chips in every folder;
    ``.skipped`` markers are rows; files not in the split CSV are left out; one 48-byte placeholder row
    is added (see ``release_placeholder``).
    """
    chips, out = Path(chips), Path(out)
    if chips_per_file < 1 or row_group_size < 1:
        raise ValueError("chips_per_file and row_group_size must be >= 1")
    placeholder = release_placeholder(chips)
    written = []
    for aoi_dir, splits_csv, stem in _regions(chips):
        target = out / aoi_dir.name
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"{target} already exists and is not empty")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(splits_csv, target / splits_csv.name)
        shutil.copyfile(aoi_dir / f"{stem}.geojson", target / f"{stem}.geojson")
        splits = _read_splits(splits_csv)
        groups = _parquet_groups(splits, chips_per_file)
        _write_mapping(target / f"{splits_csv.stem}_parquet.csv", splits, groups)
        for folder in sorted(p for p in (aoi_dir / stem).iterdir() if p.is_dir()):
            for name, ids in groups.items():
                rows = _release_rows(aoi_dir.name, stem, folder, ids, placeholder)
                if not rows:
                    continue
                path = target / stem / folder.name / f"{name}.zstd.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                table = pa.Table.from_pylist(rows, schema=RELEASE_SCHEMA)
                pq.write_table(table, path, compression="zstd", row_group_size=row_group_size,
                               write_page_checksum=True)  # as parquet-java (Spark) writes by default
                written.append(path)
    return written
