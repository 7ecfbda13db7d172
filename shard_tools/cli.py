"""``m3leo-shard``: the maintainers' command line (sample, build, verify, card, publish, convert-release)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shard_tools.executors import EXECUTORS
from shard_tools.lock import BuildLocked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="m3leo-shard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="write the embedded processed-chip sample tree")
    sample.add_argument("--out", required=True, type=Path)
    sample.add_argument("--chips-per-region", type=int, default=10)
    sample.add_argument("--pixels", type=int, default=448, help="nominal GEE chip size (real data: 448)")
    sample.add_argument("--region", action="append", dest="regions", help="repeatable; default conus, europe, pakin")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--release", type=Path, help="also write the current Hub release Parquet layout here")
    sample.set_defaults(func=_sample)

    build = commands.add_parser("build", help="build aligned WebDataset shards + Parquet metadata")
    build.add_argument("--chips", required=True,
                       help="processed-chip root (<aoi>/<stem>/<folder>/...): a folder, or an fsspec URL (s3://, gs://, "
                            "hf://, file://; memory:// in-process only)")
    build.add_argument("--out", required=True, help="output folder, or an fsspec URL (s3://, gs://, file://, ...)")
    build.add_argument("--staging", type=Path,
                       help="URL output: local folder seen by this machine and every worker (default: a temp folder)")
    build.add_argument("--no-lock", action="store_true",
                       help="URL output on a store without create-if-absent writes: build without a lock object")
    _add_build_options(build)
    build.set_defaults(func=_build)

    convert = commands.add_parser("convert-release", help="current Hub release Parquet files to our shards")
    convert.add_argument("parquet", nargs="+", type=Path, help="release *.zstd.parquet files or folders holding them")
    convert.add_argument("--out", required=True, type=Path)
    _add_build_options(convert)
    convert.set_defaults(func=_convert)

    verify = commands.add_parser("verify", help="re-read built regions: checksums, counts, alignment, decoding")
    verify.add_argument("path", type=Path, help="a built region folder, or the build output holding several")
    verify.set_defaults(func=_verify)

    card = commands.add_parser("card", help="write README.md (dataset card) and croissant.json for a region")
    card.add_argument("region_dir", type=Path)
    card.add_argument("--repo-id", help="Hub repo id used in the card's examples (default M3LEO/<region>)")
    card.set_defaults(func=_card)

    publish = commands.add_parser("publish", help="upload a verified region to a Hub dataset repo")
    publish.add_argument("region_dir", type=Path)
    publish.add_argument("--repo-id", required=True)
    publish.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    publish.add_argument("--revision", default="main")
    publish.add_argument("--token")
    publish.add_argument("--dry-run", action="store_true")
    publish.add_argument("--keep-stale", action="store_true",
                         help="leave remote files that the region no longer has (default: delete them)")
    publish.add_argument("--skip-unknown", action="store_true",
                         help="leave out (and list) paths outside the dataset layout instead of refusing the region")
    publish.set_defaults(func=_publish)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError, BuildLocked) as exc:
        print(f"m3leo-shard {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", action="append", dest="regions", help="repeatable; default all")
    parser.add_argument("--modality", action="append", dest="modalities", help="repeatable; default all")
    parser.add_argument("--shard-size-mb", type=float, default=1024.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: process pool of --workers; dask: a dask.distributed cluster")
    parser.add_argument("--scheduler", help="dask scheduler address (default: a local cluster of --workers processes)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any chip file could not be read")
    parser.add_argument("--quiet", action="store_true")


def _sample(args: argparse.Namespace) -> int:
    from builders.sample import write_release_parquet, write_sample

    regions = tuple(args.regions or ("conus", "europe", "pakin"))
    started = time.perf_counter()
    manifest = write_sample(args.out, regions=regions, chips_per_region=args.chips_per_region,
                            pixels=args.pixels, seed=args.seed)
    print(f"wrote sample chips for {', '.join(manifest.regions)} to {args.out} in {time.perf_counter() - started:.1f} s")
    if args.release:
        files = write_release_parquet(args.out, args.release)
        print(f"wrote {len(files)} release Parquet files to {args.release}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from shard_tools.build import build
    from shard_tools.executors import Executor
    from shard_tools.objectstore import is_url
    from shard_tools.remote import build_to_url

    options = dict(regions=args.regions, modalities=args.modalities, shard_size_mb=args.shard_size_mb,
                   executor=Executor(args.executor, args.workers, args.scheduler), progress=_progress(args))
    started = time.perf_counter()
    if is_url(args.out):
        report = build_to_url(args.chips, args.out, staging=args.staging, lock=not args.no_lock, **options)
    else:
        report = build(args.chips, Path(args.out), **options)
    return _summarise(report, time.perf_counter() - started, args.strict)


def _convert(args: argparse.Namespace) -> int:
    from shard_tools.executors import Executor
    from shard_tools.release import convert_release

    started = time.perf_counter()
    report = convert_release(args.parquet, args.out, regions=args.regions, modalities=args.modalities,
                             shard_size_mb=args.shard_size_mb, workers=args.workers,
                             executor=Executor(args.executor, args.workers, args.scheduler), progress=_progress(args))
    return _summarise(report, time.perf_counter() - started, args.strict)


def _progress(args: argparse.Namespace):
    return None if args.quiet else print


def _summarise(report, seconds: float, strict: bool) -> int:
    rate = report.chips / seconds if seconds else 0.0
    print(f"built {', '.join(report.regions)}: {report.chips} chips, {report.written} shards written, "
          f"{report.reused} reused, {report.bytes_in / 1e6:.1f} MB in, {report.bytes_out / 1e6:.1f} MB out, "
          f"{seconds:.1f} s ({rate:.1f} chips/s, {report.bytes_in / 1e6 / seconds if seconds else 0:.1f} MB/s)")
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 1 if strict and report.problems else 0


def _verify(args: argparse.Namespace) -> int:
    from shard_tools.verify import verify_region

    regions = [args.path] if (args.path / "metadata").is_dir() else sorted(
        p for p in args.path.iterdir() if (p / "metadata").is_dir())
    if not regions:
        print(f"m3leo-shard verify: error: no built region under {args.path}", file=sys.stderr)
        return 2
    failed = 0
    for region_dir in regions:
        problems = verify_region(region_dir)
        for problem in problems:
            print(f"{region_dir.name}: {problem}", file=sys.stderr)
        print(f"{region_dir.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        failed += bool(problems)
    return 1 if failed else 0


def _card(args: argparse.Namespace) -> int:
    from dataset_cards.card import write_card

    paths = write_card(args.region_dir, repo_id=args.repo_id)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from shard_tools.publish import PublishError, publish

    try:
        report = publish(args.region_dir, args.repo_id, endpoint=args.endpoint, token=args.token,
                         revision=args.revision, dry_run=args.dry_run, prune=not args.keep_stale,
                         skip_unknown=args.skip_unknown)
    except PublishError as exc:
        print(f"m3leo-shard publish: error: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        for path in report.uploaded:
            print(f"  upload {path}")
        for path in report.deleted:
            print(f"  delete {path}")
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
