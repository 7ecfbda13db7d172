"""Publish a built region folder to a Hugging Face dataset repo, resumably.

Only the documented dataset layout is published (``LAYOUT``: ``README.md``, ``croissant.json``,
``<modality>/<split>-NNNNNN.tar``, ``metadata/*.parquet|*.json``, ``quicklooks/*.png``), as regular files.
Build state (``.build/``, ``.<name>.tmp`` leftovers of atomic writes) is left out. Anything else (dotfiles
such as ``.env``, hidden folders such as ``.git/``, symlinks wherever they point, FIFOs, unknown files) makes
``publish`` refuse the region with the list; ``skip_unknown=True`` (``--skip-unknown``) leaves them out and
reports them instead. Every published file is compared with the remote tree (sha256 for LFS files, git blob
sha1 for regular ones; only when the sizes match) and what is missing or different is committed in batches
under the Hub limits. Each commit is atomic, so a re-run after an interruption uploads only what did not
land. ``README.md`` goes in the last commit: the card appears only once the data is there. Stale remote
files inside the folders the region publishes (e.g. shards of an earlier, larger build, which
``load_dataset``'s globs would still read) are deleted in that last commit unless ``prune=False``; other
remote-only files are reported and left in place. The dataset licence is never defaulted: the region's card
must declare one (``m3leo-shard card --license``), and a ``license`` given here must equal it. A Hub that cannot
be reached (``HubUnreachable``) or answers with an error is one ``PublishError`` line.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile

from dataset_cards.about import declared_license
from shard_tools.progress import SILENT, Progress

logger = logging.getLogger(__name__)

Verifier = Callable[[Path], list[str]]

CARD = "README.md"
MAX_FOLDER_ENTRIES = 10_000  # Hub recommendation: fewer than 10k entries per folder
BUILD_STATE_DIR = ".build"
BUILD_TEMP = re.compile(r"^\.[^/]+\.tmp$")  # leftovers of tarwriter.atomic_write_bytes / an interrupted shard
LAYOUT = re.compile(r"^(README\.md|croissant\.json|[a-z0-9][a-z0-9_-]*/(train|val|test)-\d{6}\.tar"
                    r"|metadata/[A-Za-z0-9_][A-Za-z0-9_.-]*\.(parquet|json)|quicklooks/[A-Za-z0-9_][A-Za-z0-9_.-]*\.png)$")
LAYOUT_TEXT = ("README.md, croissant.json, <modality>/{train,val,test}-NNNNNN.tar, metadata/*.parquet|*.json, "
               "quicklooks/*.png")
HUB_FILES = (".gitattributes",)  # created by the Hub with the repo, not part of a region
_HASH_CHUNK = 8 << 20


class PublishError(RuntimeError):
    """The region cannot be published (verification, Hub limits) or a publish was interrupted."""


class HubUnreachable(PublishError):
    """The Hub could not be reached (a transport failure, not an answer): worth retrying as is."""


@dataclass(frozen=True)
class LocalFile:
    path: str  # path in the repo (POSIX, relative to the region folder)
    file: Path
    size: int


@dataclass
class PublishReport:
    """What a publish uploaded (or, for a dry run, would upload)."""

    uploaded: list[str]
    skipped: list[str]
    commits: int
    bytes: int
    remote_only: list[str]
    deleted: list[str]
    dry_run: bool = False
    left_out: list[str] = field(default_factory=list)  # outside the layout, skipped with skip_unknown

    def summary(self) -> str:
        verb = "would upload" if self.dry_run else "uploaded"
        text = (
            f"{verb} {len(self.uploaded)} files ({self.bytes} bytes) in {self.commits} commits; "
            f"{len(self.skipped)} unchanged; {len(self.deleted)} stale deleted; {len(self.remote_only)} remote-only"
        )
        if self.left_out:
            text += f"; left out {len(self.left_out)} outside the dataset layout: {', '.join(self.left_out)}"
        return text


@dataclass
class RegionLayout:
    """A region folder sorted out: files to publish, paths refused (with why), build state left out."""

    files: list[LocalFile]
    refused: list[str]
    build_state: list[str]


def _verify_region(region_dir: Path) -> list[str]:
    from shard_tools.verify import verify_region

    return verify_region(region_dir, check_layout=False)  # publish sorts the layout out itself


def region_layout(region_dir: Path) -> RegionLayout:
    """Walk ``region_dir`` without following symlinks and sort every entry (see module docstring)."""
    layout = RegionLayout([], [], [])
    region_dir = Path(region_dir)

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = prefix + entry.name
            if entry.is_symlink():
                target = Path(folder, os.readlink(entry.path))
                inside = os.path.realpath(target).startswith(os.path.realpath(region_dir) + os.sep)
                layout.refused.append(f"{path} (symlink{'' if inside else ' to a path outside the region'})")
            elif entry.is_dir(follow_symlinks=False):
                if path == BUILD_STATE_DIR:
                    layout.build_state.append(f"{path}/")
                elif entry.name.startswith("."):
                    layout.refused.append(f"{path}/ (hidden folder)")
                else:
                    walk(Path(entry.path), f"{path}/")
            elif not entry.is_file(follow_symlinks=False):
                layout.refused.append(f"{path} (not a regular file)")
            elif BUILD_TEMP.match(entry.name):
                layout.build_state.append(path)
            elif entry.name.startswith("."):
                layout.refused.append(f"{path} (dotfile)")
            elif not LAYOUT.match(path):
                layout.refused.append(f"{path} (not part of the dataset layout)")
            else:
                layout.files.append(LocalFile(path, Path(entry.path), entry.stat(follow_symlinks=False).st_size))

    walk(region_dir, "")
    return layout


def local_files(region_dir: Path) -> list[LocalFile]:
    """Files to publish, sorted by repo path: the regular files of the dataset layout."""
    return region_layout(region_dir).files


def check_folder_entries(paths: Iterable[str], limit: int = MAX_FOLDER_ENTRIES) -> None:
    """Raise if a folder would hold ``limit`` entries (files and sub-folders) or more."""
    entries: set[tuple[str, str]] = set()
    for path in paths:
        parts = path.split("/")
        entries.update(("/".join(parts[:i]), parts[i]) for i in range(len(parts)))
    counts = Counter(folder for folder, _ in entries)
    crowded = {folder or "/": n for folder, n in counts.items() if n >= limit}
    if crowded:
        raise PublishError(f"folders with >= {limit} entries (Hub limit): {crowded}")


def file_hashes(file: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one read."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % file.stat().st_size)
    with file.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            sha256.update(chunk)
            git.update(chunk)
    return sha256.hexdigest(), git.hexdigest()


def recorded_sha256(region_dir: Path) -> dict[str, str]:
    """sha256 of every shard as recorded by the build (``metadata/*.shards.json``), checked by ``verify``."""
    known = {}
    for index in sorted((region_dir / "metadata").glob("*.shards.json")):
        known.update((s["url"], s["sha256"]) for s in json.loads(index.read_text())["shardlist"])
    return known


def is_unchanged(local: LocalFile, remote: RepoFile | None, known_sha256: str | None = None) -> bool:
    """Whether the remote file has the local content (LFS: sha256, regular: git oid); a ``known_sha256``
    spares hashing the local file."""
    if remote is None or remote.size != local.size:
        return False
    if remote.lfs and known_sha256:
        return known_sha256 == remote.lfs.sha256
    sha256, git_oid = file_hashes(local.file)
    return sha256 == remote.lfs.sha256 if remote.lfs else git_oid == remote.blob_id


def stale_files(remote_only: Iterable[str], local_paths: Iterable[str]) -> list[str]:
    """Remote-only files inside a top-level folder that the region publishes (``<modality>/``, ``metadata/``)."""
    folders = {path.split("/")[0] for path in local_paths if "/" in path}
    return sorted(path for path in remote_only if "/" in path and path.split("/")[0] in folders)


def plan_commits(files: list[LocalFile], max_files: int, max_bytes: int) -> list[list[LocalFile]]:
    """Greedy batches of at most ``max_files`` files and ``max_bytes`` bytes (a bigger file goes alone);
    the card, if any, is its own last commit."""
    batches: list[list[LocalFile]] = []
    size = 0
    for file in (f for f in files if f.path != CARD):
        if not batches or len(batches[-1]) >= max_files or size + file.size > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(file)
        size += file.size
    card = [f for f in files if f.path == CARD]
    return batches + ([card] if card else [])


def remote_files(api: HfApi, repo_id: str, revision: str) -> tuple[str | None, dict[str, RepoFile]]:
    """(commit oid, files) at ``revision``; ``(None, {})`` when the repo or revision does not exist."""
    try:
        sha = api.dataset_info(repo_id, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None, {}
    tree = api.list_repo_tree(repo_id, repo_type="dataset", revision=sha, recursive=True)
    return sha, {entry.path: entry for entry in tree if isinstance(entry, RepoFile)}


def _ensure_target(api: HfApi, repo_id: str, revision: str) -> None:
    """Create the dataset repo and the branch ``revision`` (from main) if missing."""
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    if revision != "main":
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)


def _commit_all(api: HfApi, repo_id: str, revision: str, parent: str | None, batches: list[list[LocalFile]],
                deletions: list[str], progress: Progress = SILENT) -> None:
    """One commit per batch, each on top of the previous one (``parent_commit`` guards concurrent writers);
    ``deletions`` go with the last batch (the card), or in a commit of their own."""
    if deletions and not batches:
        batches = [[]]
    progress.start(f"upload {repo_id}", len(batches), sum(f.size for b in batches for f in b), "commits")
    for i, batch in enumerate(batches, start=1):
        label = "dataset card" if batch and batch[0].path == CARD else f"{len(batch)} files"
        operations = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.file)) for f in batch]
        if i == len(batches) and deletions:
            operations += [CommitOperationDelete(path_in_repo=path) for path in deletions]
            label += f", {len(deletions)} stale files deleted"
        try:
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=f"Publish region ({i}/{len(batches)}): {label}",
                repo_type="dataset",
                revision=revision,
                parent_commit=parent,
            )
        except (HfHubHTTPError, *_network_errors()) as err:
            raise PublishError(
                f"commit {i}/{len(batches)} to {repo_id}@{revision} failed after {i - 1} landed; "
                f"re-run publish to upload the rest: {type(err).__name__}: {_first_line(err)}"
            ) from None
        parent = info.oid
        progress.advance(1, sum(f.size for f in batch))
        logger.info("commit %d/%d (%s): %s", i, len(batches), label, info.oid)
    progress.close()


def _check_license(region_dir: Path, license: str | None) -> None:
    declared = declared_license(region_dir / CARD)
    if declared is None:
        raise PublishError(
            f"refusing to publish {region_dir}: no dataset licence declared ({CARD} says 'licence: not set' or is "
            f"missing); check the source products' terms in the card, then write it with "
            f"`m3leo-shard card {region_dir} --license <hub licence id>`")
    if license is not None and license != declared:
        raise PublishError(f"refusing to publish {region_dir}: --license {license} but {CARD} declares {declared}; "
                           f"rewrite the card with `m3leo-shard card --license {license}`")


def publish(
    region_dir: str | Path,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    revision: str = "main",
    dry_run: bool = False,
    max_files_per_commit: int = 50,
    max_bytes_per_commit: int = 10 * 2**30,
    max_folder_entries: int = MAX_FOLDER_ENTRIES,
    verify: Verifier = _verify_region,
    prune: bool = True,
    license: str | None = None,
    progress: Progress | None = None,
    skip_unknown: bool = False,
) -> PublishReport:
    """Upload what ``repo_id`` (a dataset repo, created if needed) lacks of ``region_dir``.

    Refuses (``PublishError``) a region holding paths outside the dataset layout (unless ``skip_unknown``:
    then they are left out and listed in the report), a region that ``verify`` finds problems in, or whose
    folders break the Hub's entries limit; and a region whose ``README.md`` declares no licence, or one whose
    licence differs from ``license`` (when given). ``dry_run`` reads the remote tree but writes nothing.
    ``prune`` deletes stale remote files in the region's folders (see module docstring). Network and Hub errors
    are a one-line ``PublishError``.
    """
    region_dir = Path(region_dir)
    _check_license(region_dir, license)
    layout = region_layout(region_dir)
    if layout.refused and not skip_unknown:
        raise PublishError(f"refusing to publish {region_dir}: {len(layout.refused)} path(s) outside the dataset "
                           f"layout ({LAYOUT_TEXT}); nothing was uploaded. Remove them, or pass --skip-unknown "
                           f"to leave them out: {', '.join(layout.refused)}")
    problems = verify(region_dir)
    if problems:
        listed = "\n  ".join(problems[:20])
        raise PublishError(f"refusing to publish {region_dir}: {len(problems)} verification problems:\n  {listed}")
    try:
        return _publish(layout, region_dir, repo_id, HfApi(endpoint=endpoint, token=token), revision, dry_run,
                        max_files_per_commit, max_bytes_per_commit, max_folder_entries, prune, progress or SILENT)
    except HfHubHTTPError as exc:  # before the transport errors: it may subclass OSError
        raise PublishError(f"the Hub refused a request for {repo_id}: {_first_line(exc)}") from None
    except _network_errors() as exc:
        where = endpoint or os.environ.get("HF_ENDPOINT") or "huggingface.co"
        raise HubUnreachable(f"cannot reach the Hub at {where}: {type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures: ``OSError`` (requests' errors included) and the http client's own, if any."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _publish(layout: RegionLayout, region_dir: Path, repo_id: str, api: HfApi, revision: str, dry_run: bool,
             max_files_per_commit: int, max_bytes_per_commit: int, max_folder_entries: int,
             prune: bool, progress: Progress) -> PublishReport:
    files = layout.files
    parent, remote = remote_files(api, repo_id, revision)
    check_folder_entries({f.path for f in files} | remote.keys(), max_folder_entries)
    known = recorded_sha256(region_dir)
    progress.start(f"compare {region_dir.name}", len(files), sum(f.size for f in files), "files")
    todo = []
    for file in files:
        if not is_unchanged(file, remote.get(file.path), known.get(file.path)):
            todo.append(file)
        progress.advance(1, file.size)
    progress.close()
    batches = plan_commits(todo, max_files_per_commit, max_bytes_per_commit)
    local_paths = {f.path for f in files}
    remote_only = sorted(remote.keys() - local_paths - set(HUB_FILES))
    deletions = stale_files(remote_only, local_paths) if prune else []
    report = PublishReport(
        uploaded=[f.path for batch in batches for f in batch],
        skipped=sorted(local_paths - {f.path for f in todo}),
        commits=len(batches) or int(bool(deletions)),
        bytes=sum(f.size for f in todo),
        remote_only=[path for path in remote_only if path not in deletions],
        deleted=deletions,
        dry_run=dry_run,
        left_out=layout.refused,
    )
    if layout.refused:
        logger.warning("%s: left out (outside the dataset layout): %s", region_dir, layout.refused)
    if report.remote_only:
        logger.warning("%s has files that are not in %s (left in place): %s", repo_id, region_dir, report.remote_only)
    if not dry_run:
        _ensure_target(api, repo_id, revision)
        _commit_all(api, repo_id, revision, parent, batches, deletions, progress)
    logger.info("%s -> %s@%s: %s", region_dir, repo_id, revision, report.summary())
    return report
