"""Region metadata written after the shards: per-chip Parquet, shard index, per-band statistics."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shard_tools.encode import clean_float
from shard_tools.geoparquet import add_geometry
from shard_tools.inventory import SPLITS, Chip, RegionInventory
from shard_tools.plan import RegionPlan, plan_table
from shard_tools.stats import UPSTREAM, empty_stats, finalize, merge
from shard_tools.summary import summary_columns
from shard_tools.tarwriter import atomic_write_bytes

DECLARATION_SUFFIX = ".modality.json"

MEMBER = pa.struct([("name", pa.string()), ("offset", pa.int64()), ("size", pa.int64()), ("sha256", pa.string())])
CHIP_ROW_SCHEMA = pa.schema([
    ("chip_id", pa.string()), ("region", pa.string()), ("split", pa.string()),
    ("lon", pa.float64()), ("lat", pa.float64()),
    ("bbox_west", pa.float64()), ("bbox_south", pa.float64()), ("bbox_east", pa.float64()), ("bbox_north", pa.float64()),
    ("area_km2", pa.float64()), ("shard", pa.string()), ("shard_index", pa.int32()), ("sample_index", pa.int32()),
    ("offset", pa.int64()), ("size", pa.int64()), ("members", pa.list_(MEMBER)),
    ("available", pa.bool_()), ("missing_reason", pa.string()), ("nodata_fraction", pa.float64()),
    ("source_file", pa.string()), ("source_size", pa.int64()),
])
STATS_NOTE = ("Per-band statistics over every available chip of the split; NaN and the band's nodata value are "
              "ignored; values are taken after the field's view_as reinterpretation; std is the population std.")

UPSTREAM_STATS_NOTE = ("Per-band statistics as the upstream M3LEO MeanStdNormalizer counts: every pixel, nodata included "
                       "and NaN as 0, over every available chip of the split (upstream samples up to 1000); s1grd adds "
                       "<season>_vvvh<dir> = vv - vh bands; gunw: NaN ignored, as upstream's GUNW normaliser.")


def write_region_metadata(inventory: RegionInventory, plan: RegionPlan, region_dir: Path,
                          records: dict[str, list[dict]], written: list[str]) -> None:
    """``records`` maps each fully built modality to its shard records in plan order; ``written`` were (re)built now.

    Files of modalities not written now are left as they are, so growth changes only what it adds.
    """
    meta_dir = Path(region_dir) / "metadata"
    for modality in written:
        shard_records = records[modality]
        rows = [row for record in shard_records for row in record["rows"]]
        write_parquet(meta_dir / f"{modality}.parquet", pa.Table.from_pylist(rows, schema=CHIP_ROW_SCHEMA))
        write_json(meta_dir / f"{modality}.shards.json", shard_index(inventory.region, modality, shard_records))
        write_json(meta_dir / f"{modality}.stats.json", region_stats(inventory.region, modality, shard_records))
        write_json(meta_dir / f"{modality}.stats-upstream.json",
                   region_stats(inventory.region, modality, shard_records, variant=UPSTREAM))
        for split, index in wids_indexes(inventory.region, modality, shard_records).items():
            write_json(meta_dir / f"{modality}.{split}.wids.json", index)
        write_json(meta_dir / f"{modality}{DECLARATION_SUFFIX}", inventory.specs[modality].to_json())
    write_parquet(meta_dir / "plan.parquet", plan_table(plan))
    write_json(meta_dir / "modalities.json", modalities_index(meta_dir, inventory.unmatched))
    write_parquet(meta_dir / "chips.parquet", chips_table(inventory, plan, _chip_rows(meta_dir, records)))


def shard_index(region: str, modality: str, shard_records: list[dict]) -> dict:
    """wids-shard-index-v1 plus sha256 and split per shard."""
    return {
        "__kind__": "wids-shard-index-v1", "wids_version": 1, "name": f"{region}/{modality}",
        "shardlist": [{"url": r["shard"], "split": r["split"], "nsamples": r["nsamples"], "filesize": r["size"],
                       "sha256": r["sha256"]} for r in shard_records],
    }


def wids_indexes(region: str, modality: str, shard_records: list[dict]) -> dict[str, dict]:
    """Per split, a ``wids.ShardListDataset`` descriptor. wids resolves shard URLs against the descriptor's own
    folder (``metadata/``), so they are ``../<modality>/<split>-NNNNNN.tar``."""
    return {split: {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": f"{region}/{modality}/{split}",
                    "shardlist": [{"url": f"../{r['shard']}", "nsamples": r["nsamples"], "filesize": r["size"],
                                   "sha256": r["sha256"]} for r in shard_records if r["split"] == split]}
            for split in SPLITS if any(r["split"] == split for r in shard_records)}


def region_stats(region: str, modality: str, shard_records: list[dict], variant: str = "") -> dict:
    """Per split and field, the merged statistics of ``variant`` (``""``: ours; ``UPSTREAM``: zeros counted)."""
    merged: dict[str, dict[str, dict]] = {}
    for record in shard_records:
        per_split = merged.setdefault(record["split"], {})
        for key, stats in record["stats"].items():
            name, _, suffix = key.partition("@")
            if (f"@{suffix}" if suffix else "") == variant:
                per_split[name] = merge(per_split.get(name, empty_stats(stats["band_names"])), stats)
    splits = {split: {name: finalize(s) for name, s in sorted(merged[split].items())}
              for split in SPLITS if split in merged}
    return {"region": region, "modality": modality, "note": UPSTREAM_STATS_NOTE if variant else STATS_NOTE,
            "splits": splits}


def modalities_index(meta_dir: Path, skipped: dict[str, str]) -> dict:
    """``metadata/modalities.json``: every modality the region holds (its declaration file on disk), the alias
    of each config name, and the input folders a ``--skip-unknown`` build left out."""
    declared = {}
    for path in sorted(meta_dir.glob(f"*{DECLARATION_SUFFIX}")):
        spec = json.loads(path.read_text())
        declared[spec["name"]] = {"folder": spec["folder"], "family": spec["family"], "aliases": spec["aliases"]}
    aliases = {alias: name for name, entry in declared.items() for alias in entry["aliases"]}
    return {"modalities": declared, "aliases": dict(sorted(aliases.items())), "skipped_folders": dict(sorted(skipped.items()))}


def _chip_rows(meta_dir: Path, records: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """Per modality, chip id -> its metadata row: from this build's records, else (a modality whose input folder
    is gone) availability and nodata fraction from its Parquet on disk."""
    rows = {m: {row["chip_id"]: row for r in recs for row in r["rows"]} for m, recs in records.items()}
    for path in sorted(meta_dir.glob(f"*{DECLARATION_SUFFIX}")):
        modality = path.name[: -len(DECLARATION_SUFFIX)]
        table_path = meta_dir / f"{modality}.parquet"
        if modality not in rows and table_path.is_file():
            table = pq.read_table(table_path, columns=["chip_id", "available", "nodata_fraction"])
            rows[modality] = {row["chip_id"]: row for row in table.to_pylist()}
    return rows


def chips_table(inventory: RegionInventory, plan: RegionPlan, rows: dict[str, dict[str, dict]]) -> pa.Table:
    """One row per planned chip, as GeoParquet (``shard_tools.geoparquet``): id, region, split, centre and bounds,
    and for every built modality ``has_<modality>``, ``<modality>_nodata_fraction`` and its summary columns
    (``shard_tools.summary``; null where the chip lacks the modality)."""
    chips: list[Chip] = sorted((chip for shard in plan.shards for chip in shard.chips), key=lambda c: c.chip_id)
    ids = [c.chip_id for c in chips]
    columns = {
        "chip_id": pa.array(ids, pa.string()),
        "region": pa.array([inventory.region] * len(ids), pa.string()),
        "split": pa.array([c.split for c in chips], pa.string()),
        **{key: pa.array([clean_float(getattr(c, key)) for c in chips], pa.float64())
           for key in ("lon", "lat", "west", "south", "east", "north", "area_km2")},
    }
    for modality in sorted(rows):
        chip_rows = [rows[modality].get(chip_id, {}) for chip_id in ids]
        columns[f"has_{modality}"] = pa.array([bool(r.get("available")) for r in chip_rows], pa.bool_())
        columns[f"{modality}_nodata_fraction"] = pa.array([r.get("nodata_fraction") for r in chip_rows], pa.float64())
        spec = inventory.specs.get(modality)
        for name, kind in summary_columns(spec) if spec is not None else []:
            columns[name] = pa.array([(r.get("summary") or {}).get(name) for r in chip_rows], kind)
    bounds = [tuple(clean_float(getattr(c, key)) for key in ("west", "south", "east", "north")) for c in chips]
    return add_geometry(pa.table(columns), bounds)


def write_parquet(path: Path, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", write_statistics=True, store_schema=True)
    atomic_write_bytes(path, buffer.getvalue())


def write_json(path: Path, value: dict) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n").encode())
