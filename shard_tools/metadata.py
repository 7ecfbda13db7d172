"""Region metadata written after the shards: per-chip Parquet, shard index, per-band statistics."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shard_tools.encode import clean_float
from shard_tools.inventory import SPLITS, RegionInventory
from shard_tools.stats import UPSTREAM, empty_stats, finalize, merge
from shard_tools.tarwriter import atomic_write_bytes

MEMBER = pa.struct([("name", pa.string()), ("offset", pa.int64()), ("size", pa.int64())])
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


def write_region_metadata(inventory: RegionInventory, region_dir: Path, records: dict[str, list[dict]],
                          written: list[str]) -> None:
    """``records`` maps each fully built modality to its shard records in plan order; ``written`` were (re)built now."""
    meta_dir = Path(region_dir) / "metadata"
    for modality in written:
        shard_records = records[modality]
        rows = [row for record in shard_records for row in record["rows"]]
        write_parquet(meta_dir / f"{modality}.parquet", pa.Table.from_pylist(rows, schema=CHIP_ROW_SCHEMA))
        write_json(meta_dir / f"{modality}.shards.json", shard_index(inventory.region, modality, shard_records))
        write_json(meta_dir / f"{modality}.stats.json", region_stats(inventory.region, modality, shard_records))
        write_json(meta_dir / f"{modality}.stats-upstream.json",
                   region_stats(inventory.region, modality, shard_records, variant=UPSTREAM))
    write_parquet(meta_dir / "chips.parquet", chips_table(inventory, records))


def shard_index(region: str, modality: str, shard_records: list[dict]) -> dict:
    """wids-shard-index-v1 plus sha256 and split per shard."""
    return {
        "__kind__": "wids-shard-index-v1", "wids_version": 1, "name": f"{region}/{modality}",
        "shardlist": [{"url": r["shard"], "split": r["split"], "nsamples": r["nsamples"], "filesize": r["size"],
                       "sha256": r["sha256"]} for r in shard_records],
    }


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


def chips_table(inventory: RegionInventory, records: dict[str, list[dict]]) -> pa.Table:
    """One row per chip: geometry, split, and ``has_<modality>`` for every fully built modality."""
    available = {m: {row["chip_id"]: row["available"] for r in recs for row in r["rows"]} for m, recs in records.items()}
    columns = {
        "chip_id": [c.chip_id for c in inventory.chips],
        "region": [inventory.region] * len(inventory.chips),
        "split": [c.split for c in inventory.chips],
        **{key: [clean_float(getattr(c, key)) for c in inventory.chips]
           for key in ("lon", "lat", "west", "south", "east", "north", "area_km2")},
    }
    for modality in sorted(available):
        columns[f"has_{modality}"] = [available[modality].get(c.chip_id, False) for c in inventory.chips]
    return pa.table(columns)


def write_parquet(path: Path, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", write_statistics=True, store_schema=True)
    atomic_write_bytes(path, buffer.getvalue())


def write_json(path: Path, value: dict) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n").encode())
