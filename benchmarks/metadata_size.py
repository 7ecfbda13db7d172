"""Size of a region's per-chip Parquet at full scale, from a real row of a built sample.

``python -m benchmarks.metadata_size bench-out/build/shards/conus/metadata/s1grd.parquet --rows 167406``
Clones one available row into ``--rows`` rows with random chip ids, coordinates and nodata fractions
(incompressible, so an upper bound), shard names at ``--chips-per-shard``, and writes them as the build does.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shard_tools.metadata import CHIP_ROW_SCHEMA, write_parquet


def synthetic_rows(template: dict, rows: int, chips_per_shard: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    ids = sorted(f"{rng.getrandbits(52):013x}" for _ in range(rows))
    folder, extension = template["source_file"].rsplit("/", 1)[0], template["source_file"].rsplit(".", 1)[1]
    modality = template["shard"].split("/")[0]
    out = []
    for i, chip_id in enumerate(ids):
        split = "train" if i < 0.6 * rows else "val" if i < 0.8 * rows else "test"
        shard, position = divmod(i, chips_per_shard)
        lon, lat = rng.uniform(-120, -70), rng.uniform(25, 49)
        shift = position * template["size"]
        out.append({**template, "chip_id": chip_id, "split": split, "lon": lon, "lat": lat,
                    "bbox_west": lon - 0.02, "bbox_east": lon + 0.02, "bbox_south": lat - 0.02,
                    "bbox_north": lat + 0.02, "area_km2": rng.uniform(19, 21),
                    "shard": f"{modality}/{split}-{shard:06d}.tar", "shard_index": shard, "sample_index": position,
                    "offset": shift, "nodata_fraction": rng.random(),
                    "members": [{**m, "offset": m["offset"] + shift} for m in template["members"]],
                    "source_file": f"{folder}/{chip_id}.{extension}"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parquet", type=Path, help="a built <modality>.parquet")
    parser.add_argument("--rows", type=int, default=167_406)
    parser.add_argument("--chips-per-shard", type=int, default=140)
    args = parser.parse_args()
    template = next(r for r in pq.read_table(args.parquet).to_pylist() if r["available"])
    table = pa.Table.from_pylist(synthetic_rows(template, args.rows, args.chips_per_shard), schema=CHIP_ROW_SCHEMA)
    with tempfile.TemporaryDirectory() as folder:
        write_parquet(Path(folder) / "rows.parquet", table)
        size = (Path(folder) / "rows.parquet").stat().st_size
    print(f"{args.parquet.name}: {len(template['members'])} members per row, {args.rows} rows, "
          f"{size / 1e6:.2f} MB, {size / args.rows:.1f} bytes per row")


if __name__ == "__main__":
    main()
