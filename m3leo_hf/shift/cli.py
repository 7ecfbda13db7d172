"""``m3leo-shift``: pretrain an MAE (or take a given encoder), embed every chip of the regions, and
measure the shift of the embeddings between every pair of regions, raw and terrain-controlled.

Runs on one process or under ``torchrun`` (pretraining and embedding on every rank, statistics on
rank 0). Rerunning with the same ``--out`` resumes: the pretraining checkpoint and the embedded
(region, split) parts are kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

SYNTHETIC = "synthetic"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m3leo-shift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+",
                   help="built region roots: local folders, https://.../resolve/main, hf://datasets/...")
    p.add_argument("--out", type=Path, default=Path("shift-out"))
    p.add_argument("--data", default=SYNTHETIC,
                   help="what the shards are, printed with every number: 'synthetic' (default: the embedded "
                        "sample of make demo) or a description such as 'M3LEO release 2024-06'")
    model = p.add_argument_group("encoder")
    model.add_argument("--encoder", help="use this encoder instead of pretraining: an m3leo-shift .safetensors "
                                         "file or a 'module:attr' factory of a torch module (B,12,S,S)->(B,D)")
    model.add_argument("--model", default="tiny", choices=["tiny", "vit-b16"],
                       help="MAE to pretrain: 'vit-b16' is the upstream model, 'tiny' a CPU-sized one")
    model.add_argument("--image-size", type=int, default=448, help="chip size (centre crop/pad); upstream 448")
    model.add_argument("--pretrain-root", action="append", default=None,
                       help="pretrain on these roots only (repeat; default: all roots; upstream: europe)")
    model.add_argument("--epochs", type=int, default=75)
    model.add_argument("--batch-size", type=int, default=8)
    model.add_argument("--lr", type=float, default=1.5e-4)
    model.add_argument("--checkpoint-every", type=int, default=500, help="batches between checkpoints")
    model.add_argument("--normalizer-chips", type=int, default=1000)
    model.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    model.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    model.add_argument("--bf16", action="store_true", help="bfloat16 autocast for pretraining and embedding (GPUs)")
    model.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to embed")
    statistics = p.add_argument_group("statistics")
    statistics.add_argument("--seed", type=int, default=0)
    statistics.add_argument("--max-chips", type=int, default=2000, help="random chips per region for the statistics")
    statistics.add_argument("--permutations", type=int, default=500)
    statistics.add_argument("--bootstraps", type=int, default=200)
    statistics.add_argument("--caliper", type=float, default=0.2, help="in SDs of the propensity logit")
    statistics.add_argument("--terrain-extra", action="store_true",
                            help="also match on MODIS tree cover and GHS built-up surface")
    statistics.add_argument("--strata", type=int, default=10, help="propensity-score quantile bins")
    return p


def notice(data: str) -> str:
    if data == SYNTHETIC:
        return ("SYNTHETIC DATA: computed on synthetic chips (the embedded sample); these numbers say nothing "
                "about real regions and are not the M3LEO paper's result")
    return f"Computed by m3leo-shift on {data}; not the M3LEO paper's result"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if len(args.roots) < 2:
        print("m3leo-shift: give at least two region roots", file=sys.stderr)
        return 2
    started = time.perf_counter()
    created = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if created:  # started by torchrun
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(args.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    say = print if rank == 0 else (lambda *a, **k: None)
    say(notice(args.data), flush=True)

    from m3leo_hf.shift import terrain
    from m3leo_hf.shift.compare import Settings, compare
    from m3leo_hf.shift.embed import embed, read_table, resolve_encoder
    from m3leo_hf.shift.mae import MAEConfig
    from m3leo_hf.shift.pretrain import PretrainOptions, fit_normalizer, pretrain
    from m3leo_hf.shift.report import write_report

    encoder_spec = args.encoder
    if encoder_spec is None:
        config = MAEConfig.preset(args.model, image_size=args.image_size)
        options = PretrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  num_workers=args.workers, checkpoint_every=args.checkpoint_every,
                                  normalizer_chips=args.normalizer_chips, device=args.device,
                                  bf16=args.bf16)
        encoder_spec = os.fspath(pretrain(args.pretrain_root or args.roots, args.out / "mae", config, options))
        say(f"pretrained {args.model} MAE ({args.epochs} epochs) -> {encoder_spec}", flush=True)
    module, normalizer, description = resolve_encoder(encoder_spec)
    if normalizer is None:
        normalizer = fit_normalizer(args.pretrain_root or args.roots, args.image_size, args.batch_size,
                                    args.normalizer_chips, args.seed)
    table_path = embed(args.roots, module, normalizer, args.out / "embeddings.parquet", splits=args.splits,
                       image_size=args.image_size, batch_size=args.batch_size, num_workers=args.workers,
                       device=args.device, bf16=args.bf16, metadata={"encoder": description})
    if rank == 0:
        table, _ = read_table(table_path)
        settings = Settings(seed=args.seed, max_chips=args.max_chips, permutations=args.permutations,
                            bootstraps=args.bootstraps, caliper=args.caliper, strata_bins=args.strata,
                            terrain_columns=terrain.BASE + (terrain.EXTRA if args.terrain_extra else ()))
        results = compare(table, settings)
        provenance = {"data": args.data, "notice": notice(args.data), "roots": [os.fspath(r) for r in args.roots],
                      "encoder": description, "embeddings": os.fspath(table_path)}
        written = write_report(args.out, results, table, provenance)
        _summary(results)
        say(notice(args.data))
        say(f"wrote {len(written)} files under {args.out} ({', '.join(p.name for p in written[:2])}, "
            f"{len(written) - 2} PNGs) in {time.perf_counter() - started:.0f} s")
    if dist.is_initialized():
        dist.barrier()
    if created:
        dist.destroy_process_group()
    return 0


def _summary(results: dict) -> None:
    for pair in results["pairs"]:
        for condition in ("raw", "nearest"):
            entry = pair[condition]
            if entry.get("mmd2") is None:
                print(f"{pair['a']}-{pair['b']} {condition}: {entry.get('skipped')}")
                continue
            print(f"{pair['a']}-{pair['b']} {condition:8s} n={entry['n_a']}/{entry['n_b']} "
                  f"MMD²={entry['mmd2']['value']:.4g} (p={entry['mmd2']['p_value']:.3g}) "
                  f"AUC={entry['auc']['value']:.3f} (p={entry['auc']['p_value']:.3g}) "
                  f"FD={entry['frechet']['value']:.4g}")


if __name__ == "__main__":
    raise SystemExit(main())
