"""``m3leo-shard``: the maintainers' command line (sample, build, verify, card, publish, convert-release)."""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import sys
import time
from pathlib import Path

from shard_tools.executors import EXECUTORS
from shard_tools.lock import BuildLocked


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends each flag's default to its help (unless unset or already stated); keeps line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError, BuildLocked) as exc:
        print(f"m3leo-shard {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except _network_errors() as exc:
        print(f"m3leo-shard {args.command}: error: network: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m3leo-shard", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = functools.partial(commands.add_parser, formatter_class=_HelpFormatter)

    sample = command("sample", help="write the embedded processed-chip sample tree",
                     description="Write a small realistic M3LEO chip tree (GeoTIFF + NetCDF, M3LEO layout).")
    sample.add_argument("--out", required=True, type=Path, help="folder to write the chip tree into")
    sample.add_argument("--chips-per-region", type=int, default=10, help="chips per region")
    sample.add_argument("--pixels", type=int, default=448, help="nominal GEE chip size (real data: 448)")
    sample.add_argument("--region", action="append", dest="regions",
                        help="region to write (repeatable); default conus, europe, pakin")
    sample.add_argument("--seed", type=int, default=0, help="random seed of the generated values")
    sample.add_argument("--release", type=Path, help="also write the current Hub release Parquet layout here")
    sample.set_defaults(func=_sample)

    build = command("build", help="build aligned WebDataset shards + Parquet metadata",
                    description="Build aligned WebDataset shards and Parquet metadata from processed chips.")
    build.add_argument("--chips", required=True,
                       help="processed-chip root (<aoi>/<stem>/<folder>/...): a folder, or an fsspec URL (s3://, gs://, "
                            "hf://, file://; memory:// in-process only)")
    build.add_argument("--out", required=True, help="output folder, or an fsspec URL (s3://, gs://, file://, ...)")
    build.add_argument("--staging", type=Path,
                       help="URL output: local folder seen by this machine and every worker (default: a temp folder)")
    build.add_argument("--no-lock", action="store_true",
                       help="URL output on a store without create-if-absent writes: build without a lock object")
    build.add_argument("--follow-symlinks", action="store_true",
                       help="read chip files that are links out of their region folder (refused by default)")
    _add_build_options(build)
    build.set_defaults(func=_build)

    declare = command("declare", help="draft a modality declaration (YAML) from a dataset folder",
                      description="Draft a modality declaration from a dataset folder, to review and pass to --modalities.")
    declare.add_argument("folder", type=Path, help="a dataset folder of GeoTIFF or NetCDF chips, e.g. .../lcci-2020")
    declare.add_argument("--out", type=Path, help="write the YAML here (default: print it)")
    declare.add_argument("--samples", type=int, default=3, help="chip files inspected")
    declare.set_defaults(func=_declare)

    convert = command("convert-release", help="current Hub release Parquet files to our shards",
                      description="Convert the current Hub release (Parquet rows of .tif/.nc bytes) to our shards.")
    convert.add_argument("parquet", nargs="+", type=Path, help="release *.zstd.parquet files or folders holding them")
    convert.add_argument("--out", required=True, type=Path, help="output folder of the built regions")
    _add_build_options(convert)
    convert.set_defaults(func=_convert)

    verify = command("verify", help="re-read built regions: checksums, counts, alignment, decoding",
                     description="Re-read built regions; exit 1 when any defect is found.")
    verify.add_argument("path", type=Path, help="a built region folder, or the build output holding several")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(func=_verify)

    card = command("card", help="write README.md (dataset card), croissant.json and quicklooks for a region",
                   description="Write README.md, croissant.json and quicklooks/*.png into a built region.")
    card.add_argument("region_dir", type=Path, help="a built region folder")
    card.add_argument("--repo-id", help="Hub repo id used in the card's examples (default M3LEO/<region>)")
    card.add_argument("--license", help="dataset licence to declare, a Hub licence id (e.g. cc-by-4.0, other) chosen "
                                        "after reading the source products' terms; without it the card says "
                                        "'licence: not set' and publish refuses the region")
    card.set_defaults(func=_card)

    publish = command("publish", help="upload a verified region to a Hub dataset repo",
                      description="Upload a verified region (its card must declare a licence) to a Hub dataset repo.")
    publish.add_argument("region_dir", type=Path, help="a built region folder with its card")
    publish.add_argument("--repo-id", required=True, help="target dataset repo, e.g. M3LEO/conus")
    publish.add_argument("--license", help="the licence you publish under; must equal the one the card declares")
    publish.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    publish.add_argument("--revision", default="main", help="branch to commit to (created from main if missing)")
    publish.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the saved login)")
    publish.add_argument("--dry-run", action="store_true", help="list what would be uploaded and deleted; write nothing")
    publish.add_argument("--keep-stale", action="store_true",
                         help="leave remote files that the region no longer has (default: delete them)")
    publish.add_argument("--quiet", action="store_true", help="no progress bars")
    publish.add_argument("--skip-unknown", action="store_true",
                         help="leave out (and list) paths outside the dataset layout instead of refusing the region")
    publish.set_defaults(func=_publish)
    return parser


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", action="append", dest="regions", help="region to build (repeatable); default all")
    parser.add_argument("--modality", action="append", dest="modalities",
                        help="modality to build, a config name or alias (repeatable); default all")
    parser.add_argument("--modalities", action="append", dest="declarations", type=Path, metavar="FILE",
                        help="YAML file of extra modality declarations (repeatable; see builders/modalities.yaml)")
    parser.add_argument("--skip-unknown", action="store_true",
                        help="build even if a dataset folder matches no declaration (it is left out and listed)")
    parser.add_argument("--shard-size-mb", type=float, default=1024.0,
                        help="shard size target of a region's first build, for the largest declared product")
    parser.add_argument("--chips-per-shard", type=int, help="chips per shard of a region's first build "
                        "(default: from --shard-size-mb); later builds keep the pinned plan")
    parser.add_argument("--replan", action="store_true",
                        help="discard the region's pinned shard plan and rebuild every modality on a new one")
    parser.add_argument("--rehash", action="store_true",
                        help="reuse a shard only if its sources' content hashes match (default: size + mtime)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes writing shards in parallel")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: process pool of --workers; dask: a dask.distributed cluster")
    parser.add_argument("--scheduler", help="dask scheduler address (default: a local cluster of --workers processes)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any chip file could not be read")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _version() -> str:
    try:
        return importlib.metadata.version("m3leo-hf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


NETWORK_ERRORS = (("httpx2", "HTTPError"), ("httpx2", "InvalidURL"), ("httpx", "HTTPError"), ("httpx", "InvalidURL"),
                  ("huggingface_hub.errors", "HfHubHTTPError"), ("huggingface_hub.errors", "OfflineModeIsEnabled"),
                  ("requests", "RequestException"), ("urllib3.exceptions", "HTTPError"), ("aiohttp", "ClientError"))


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception bases of the HTTP stacks below huggingface_hub and fsspec that are installed (none of them
    is an ``OSError``), so any subcommand reports a network failure in one line."""
    found = []
    for module, name in NETWORK_ERRORS:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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

    options = dict(regions=args.regions, modalities=args.modalities,
                   executor=Executor(args.executor, args.workers, args.scheduler), progress=_progress(args),
                   follow_symlinks=args.follow_symlinks, **_build_options(args))
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
                             workers=args.workers, executor=Executor(args.executor, args.workers, args.scheduler),
                             progress=_progress(args), **_build_options(args))
    return _summarise(report, time.perf_counter() - started, args.strict)


def _build_options(args: argparse.Namespace) -> dict:
    """Load the extra declarations, then the ``BuildOptions`` of the command line."""
    from builders.registry import load_declarations

    for path in args.declarations or ():
        load_declarations(path)
    return dict(shard_size_mb=args.shard_size_mb, chips_per_shard=args.chips_per_shard, replan=args.replan,
                rehash=args.rehash, skip_unknown=args.skip_unknown)


def _declare(args: argparse.Namespace) -> int:
    from shard_tools.declare import declare_folder

    text = declare_folder(args.folder, samples=args.samples)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote a declaration draft for {args.folder.name} to {args.out}; review it, then build with "
              f"--modalities {args.out}")
    else:
        print(text, end="")
    return 0


def _progress(args: argparse.Namespace):
    from shard_tools.progress import Bars

    return None if args.quiet else Bars()


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
        problems = verify_region(region_dir, progress=_progress(args))
        for problem in problems:
            print(f"{region_dir.name}: {problem}", file=sys.stderr)
        print(f"{region_dir.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        failed += bool(problems)
    return 1 if failed else 0


def _card(args: argparse.Namespace) -> int:
    from dataset_cards.card import write_card

    paths = write_card(args.region_dir, repo_id=args.repo_id, license=args.license)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from shard_tools.publish import HubUnreachable, PublishError, publish

    silence = args.quiet and not are_progress_bars_disabled()  # huggingface_hub's own upload bars too
    if silence:
        disable_progress_bars()
    try:
        report = publish(args.region_dir, args.repo_id, endpoint=args.endpoint, token=args.token,
                         revision=args.revision, dry_run=args.dry_run, prune=not args.keep_stale,
                         license=args.license, progress=_progress(args), skip_unknown=args.skip_unknown)
    except HubUnreachable as exc:  # a network failure, as for every subcommand: exit 3
        print(f"m3leo-shard publish: error: network: {exc}", file=sys.stderr)
        return 3
    except PublishError as exc:
        print(f"m3leo-shard publish: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if silence:
            enable_progress_bars()
    if args.dry_run:
        for path in report.uploaded:
            print(f"  upload {path}")
        for path in report.deleted:
            print(f"  delete {path}")
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
