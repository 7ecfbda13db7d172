"""``make demo``: sample chips -> shards -> dataset card -> ``load_dataset`` and a streaming loop.

Everything runs offline on the embedded sample; each step prints what it did.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m3leo_hf.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--pixels", type=int, default=448, help="GEE chip size; the real data is 448")
    parser.add_argument("--chips-per-region", type=int, default=10)
    parser.add_argument("--shard-size-mb", type=float, default=64.0)
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    os.environ.setdefault("HF_DATASETS_CACHE", str((args.out / "hf-cache").resolve()))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    chips, shards = args.out / "chips", args.out / "shards"
    step("1. embedded sample of processed chips (GeoTIFF + NetCDF, M3LEO layout)")
    started = time.perf_counter()
    from builders.sample import write_sample

    manifest = write_sample(chips, chips_per_region=args.chips_per_region, pixels=args.pixels)
    size = sum(p.stat().st_size for p in chips.rglob("*") if p.is_file())
    print(f"   {len(manifest.regions)} regions ({', '.join(manifest.regions)}), "
          f"{sum(len(r.chips) for r in manifest.regions.values())} chips, {size / 1e6:.0f} MB "
          f"in {time.perf_counter() - started:.1f} s -> {chips}")

    step("2. m3leo-shard build (aligned WebDataset shards + Parquet metadata, one config per dataset folder)")
    from shard_tools.build import build

    started = time.perf_counter()
    report = build(chips, shards, shard_size_mb=args.shard_size_mb, workers=2)
    seconds = time.perf_counter() - started
    configs = sorted({p.name for r in shards.iterdir() for p in r.iterdir() if p.is_dir() and p.name[0] != "."}
                     - {"metadata"})
    print(f"   {report.chips} chips, {report.written} shards, {report.bytes_in / 1e6:.0f} MB in {seconds:.1f} s: "
          f"{report.chips / seconds:.1f} chips/s, {report.bytes_in / 1e6 / seconds:.0f} MB/s "
          f"({len(report.problems)} recorded input problems, e.g. stray files and a skipped chip)")
    print(f"   {len(configs)} modalities: {', '.join(configs)}")

    step("3. m3leo-shard verify and card")
    from dataset_cards.card import write_card
    from shard_tools.verify import verify_region

    for region_dir in sorted(p for p in shards.iterdir() if p.is_dir()):
        problems = verify_region(region_dir)
        write_card(region_dir)
        print(f"   {region_dir.name}: verify {'OK' if not problems else problems}; README.md (licence: not set) + "
              f"croissant.json + quicklooks/*.png")
        if problems:
            return 1

    step('4. stock datasets: load_dataset("<region dir>", "<config>", split="train", streaming=True)')
    import numpy as np
    from datasets import load_dataset

    region = shards / "conus"
    for modality in ("s1grd", "s1grd-2019", "gunw"):
        row = next(iter(load_dataset(str(region), modality, split="train", streaming=True)))
        arrays = {k: np.asarray(v) for k, v in row.items() if k.endswith(".npy") and v is not None}
        shapes = {k: f"{v.dtype}{list(v.shape)}" for k, v in arrays.items() if v.ndim >= 2}
        print(f"   {modality}: key {row['__key__']}, available {row['json']['available']}, {shapes}")

    step("5. m3leo_hf.stream: s1grd 2019 + 2020 + esaworldcover joined by chip id, normalised, 2 DataLoader workers")
    from m3leo_hf import StatefulLoader, plot, stream

    dataset = stream([shards / r for r in ("conus", "europe", "pakin")],
                     modalities=["s1grd-2019", "s1grd", "esaworldcover"], split="train", batch_size=4, normalize=True,
                     spatial_size=args.pixels, seed=0)
    started, batches, samples = time.perf_counter(), 0, 0
    for batch in StatefulLoader(dataset, num_workers=2):
        batches, samples = batches + 1, samples + len(batch["chip_id"])
        if batches == 1:
            label = batch["esaworldcover"]["label"]
            change = (batch["s1grd"] - batch["s1grd-2019"]).abs().mean()
            print(f"   first batch: s1grd-2019 and s1grd {tuple(batch['s1grd'].shape)} {batch['s1grd'].dtype}, "
                  f"mean |2020 - 2019| {change:.3f} std, label {tuple(label.shape)} {label.dtype}")
            picture = plot(batch, args.out / "sample.png")
            print(f"   m3leo_hf.plot(first sample) -> {args.out / 'sample.png'} ({picture.width}x{picture.height})")
    print(f"   {batches} batches, {samples} samples in {time.perf_counter() - started:.1f} s")
    step(f"done: shards and cards under {shards}")
    return 0


def step(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
