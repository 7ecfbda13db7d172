"""A Hub-compatible HTTP server for offline tests (stdlib only).

It implements the routes that huggingface_hub 2.4.0 and datasets 5.2.0 call for creating repos,
committing files (preupload answers ``uploadMode: "regular"``, so neither the LFS batch API nor Xet is
needed), listing trees and downloading files. Repos live in memory as immutable commit snapshots;
file contents are stored once per sha256 under ``root/blobs``.

Like the Hub, the server reports a file as LFS (``lfs: {oid: sha256, size, pointerSize}`` in trees,
ETag = sha256 on resolve) when it is binary (NUL byte in its first 512 bytes) or >= 10 MiB; other files
are regular git blobs (oid = git blob sha1, ETag = that sha1). A new repo starts with a commit holding
``.gitattributes``, as on the Hub. Like the Hub, ``/resolve/`` of an LFS file answers 302 to a "CDN" URL (here
``cdn_url/cdn/<sha256>?...&expires=<unix time>``, another origin, refused with 403 once ``cdn_ttl_s`` have
passed or after ``expire_cdn_urls()``), with ``X-Linked-Size`` / ``X-Linked-Etag`` on the redirect, and
refusing a request that carries a token too; ``resolve_requests()`` counts the resolver requests (what the Hub
rate-limits) per file. A repo created with ``private=True`` answers reads without the token 401
``RepositoryNotFound``, as the Hub answers anonymous reads of a private repo.

Use it through the ``local_hub`` fixture (``from local_hub import local_hub`` in a test module or in
tests/conftest.py), or ``with LocalHub(tmp_dir) as hub: ...``. In-process clients take ``endpoint=hub.url``
(and ``token=TEST_TOKEN`` for writes); ``datasets`` reads ``HF_ENDPOINT`` when imported, so run it in a
subprocess with ``env=hub.client_env(tmp_dir)``. Test hooks: ``fail_commits_after(n)``, ``uploads()``,
``files()``, ``history()``, ``resolve_requests()``, ``route_requests()``, ``expire_cdn_urls()``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
import yaml

TEST_TOKEN = "hf_local_test_token"
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"*.tar filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
_COPY_CHUNK = 1 << 20


class HubError(Exception):
    """An HTTP error answered the way the Hub does (X-Error-Code / X-Error-Message headers)."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit snapshot."""

    sha256: str
    size: int
    git_oid: str  # git blob sha1 of the content, or of the LFS pointer for LFS files
    pointer_size: int | None  # set for LFS files
    commit: str  # oid of the commit that last wrote the file


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    date: str
    index: int  # position in the repo's history, for "last commit" lookups
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    created: str
    private: bool = False  # reads need the token (``_Handler._target``), as the Hub's private repos do
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """Git object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(data: bytes) -> bool:
    return len(data) >= LFS_THRESHOLD or b"\0" in data[:512]


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


class LocalHub:
    """Hub-compatible server on 127.0.0.1 storing repos under ``root``."""

    def __init__(self, root: Path, token: str | None = TEST_TOKEN, cdn_ttl_s: float = 3600.0):
        self.root = Path(root)
        self.token = token
        self.cdn_ttl_s = cdn_ttl_s
        self._cdn_valid_from = 0.0  # CDN URLs issued before this are refused (``expire_cdn_urls``)
        self.resolves: Counter[str] = Counter()  # resolve requests per <repo_id>/<path>
        self.routes: Counter[str] = Counter()  # requests per route name (``repo_info``, ``tree``, ``resolve``...)
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self._uploads: Counter[tuple[str, str, str]] = Counter()
        self.sent: Counter[str] = Counter()  # body bytes served per resolved file path (see ``bytes_sent``)
        self._commits_before_failure: int | None = None
        self._lock = threading.Lock()
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for _ in range(2)]  # the Hub, its CDN
        for server in self._servers:
            server.daemon_threads = True
            server.hub = self  # type: ignore[attr-defined]
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self._servers]
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)

    def __enter__(self) -> LocalHub:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    # ---- test helpers -------------------------------------------------------------------------

    def fail_commits_after(self, n: int) -> None:
        """Let ``n`` more commits succeed, answer 500 to the next one (once), then work again."""
        self._commits_before_failure = n

    def uploads(self, repo_id: str, repo_type: str = "dataset") -> Counter[str]:
        """How many committed additions each path received."""
        return Counter({p: c for (t, r, p), c in self._uploads.items() if (t, r) == (repo_type, repo_id)})

    def bytes_sent(self) -> Counter[str]:
        """File content bytes this server has sent per ``<repo_id>/<path>`` (resolve requests, ranges counted)."""
        with self._lock:
            return Counter(self.sent)

    def expire_cdn_urls(self) -> None:
        """Refuse (403) every CDN URL handed out so far, as the Hub's signed URLs expire."""
        self._cdn_valid_from = time.time()

    def route_requests(self) -> Counter[str]:
        """Requests per route name: ``repo_info``, ``tree``, ``paths_info`` (the Hub's API, its lowest rate
        limits), ``resolve``, ``cdn``..."""
        with self._lock:
            return Counter(self.routes)

    def resolve_requests(self) -> Counter[str]:
        """Resolve requests (GET and HEAD of ``/resolve/``, what the Hub rate-limits) per ``<repo_id>/<path>``."""
        with self._lock:
            return Counter(self.resolves)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, str]:
        """``{path: sha256}`` of the files at ``revision``."""
        commit = self._commit(self._repo(repo_type, repo_id), revision)
        return {path: f.sha256 for path, f in commit.files.items()}

    def history(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> list[str]:
        """Commit titles from ``revision`` back to the first commit."""
        repo = self._repo(repo_type, repo_id)
        oid: str | None = self._commit(repo, revision).oid
        titles = []
        while oid is not None:
            titles.append(repo.commits[oid].title)
            oid = repo.commits[oid].parent
        return titles

    def client_env(self, home: Path) -> dict[str, str]:
        """Environment for a subprocess whose huggingface_hub/datasets must use this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(
            HF_ENDPOINT=self.url,
            HF_HOME=str(home / "hf_home"),
            HF_DATASETS_CACHE=str(home / "hf_datasets"),
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_UPDATE_DOWNLOAD_COUNTS="0",
        )
        return env

    # ---- repository state ---------------------------------------------------------------------

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound") from None

    def _commit(self, repo: Repo, revision: str) -> Commit:
        oid = repo.refs.get(revision, revision)
        if oid not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _store_blob(self, data: bytes) -> tuple[str, int, str, int | None]:
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.blobs / sha256
        if not target.exists():
            tmp = target.with_name(f".{sha256}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        if _is_lfs(data):
            pointer = _lfs_pointer(sha256, len(data))
            return sha256, len(data), git_blob_oid(pointer), len(pointer)
        return sha256, len(data), git_blob_oid(data), None

    @staticmethod
    def _new_commit(repo: Repo, branch: str, title: str, files: dict[str, StoredFile]) -> Commit:
        """Record a commit on ``branch`` (lock held); files with an empty ``commit`` get its oid."""
        parent = repo.refs.get(branch)
        date = _now()
        seed = json.dumps([parent, title, date, sorted((p, f.git_oid) for p, f in files.items())])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        files = {p: f if f.commit else replace(f, commit=oid) for p, f in files.items()}
        commit = Commit(oid, parent, title, date, len(repo.commits), files)
        repo.commits[oid] = commit
        repo.refs[branch] = oid
        return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> None:
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = Repo(repo_type, repo_id, _now(), private)
            gitattributes = StoredFile(*self._store_blob(GITATTRIBUTES), commit="")
            self._new_commit(repo, "main", "initial commit", {".gitattributes": gitattributes})
            self.repos[(repo_type, repo_id)] = repo

    def apply_commit(self, repo: Repo, revision: str, lines: list[dict[str, Any]]) -> Commit:
        """Apply NDJSON commit operations atomically; the fault injector may refuse the commit."""
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        staged: dict[str, tuple[str, int, str, int | None]] = {}
        deleted: list[tuple[str, bool]] = []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                staged[value["path"]] = self._store_blob(base64.b64decode(value["content"]))
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append((value["path"].rstrip("/"), key == "deletedFolder"))
            elif key != "header":
                raise HubError(400, f"Unsupported commit operation {key!r} (this server only takes regular files)")
        with self._lock:
            if revision not in repo.refs:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.refs[revision]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            if self._commits_before_failure is not None:
                if self._commits_before_failure == 0:
                    self._commits_before_failure = None
                    raise HubError(500, "Injected commit failure")
                self._commits_before_failure -= 1
            files = dict(head.files)
            for path, is_folder in deleted:
                doomed = [p for p in files if p == path or (is_folder and p.startswith(path + "/"))]
                if not doomed:
                    raise HubError(404, f"{path} does not exist", "EntryNotFound")
                for p in doomed:
                    del files[p]
            for path, blob in staged.items():
                files[path] = StoredFile(*blob, commit="")
                self._uploads[(repo.repo_type, repo.repo_id, path)] += 1
            return self._new_commit(repo, revision, header.get("summary", ""), files)

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        with self._lock:
            if branch in repo.refs:
                raise HubError(409, f"Branch {branch} already exists")
            repo.refs[branch] = self._commit(repo, starting_point or "main").oid


# ---- JSON views ---------------------------------------------------------------------------------


def _last_commit(repo: Repo, oids: list[str]) -> dict[str, str]:
    commit = max((repo.commits[o] for o in oids), key=lambda c: c.index)
    return {"id": commit.oid, "title": commit.title, "date": commit.date}


def _file_entry(repo: Repo, path: str, f: StoredFile, expand: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": path}
    if f.pointer_size is not None:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    if expand:
        entry["lastCommit"] = _last_commit(repo, [f.commit])
    return entry


def _dir_entry(repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
    inside = sorted((p, f) for p, f in commit.files.items() if p.startswith(path + "/"))
    oid = hashlib.sha1("\n".join(f"{p} {f.git_oid}" for p, f in inside).encode()).hexdigest()
    entry: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": path}
    if expand:
        entry["lastCommit"] = _last_commit(repo, [f.commit for _, f in inside])
    return entry


def _folders(files: dict[str, StoredFile]) -> set[str]:
    return {p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)}


def _entry(repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any] | None:
    if path in commit.files:
        return _file_entry(repo, path, commit.files[path], expand)
    if path in _folders(commit.files):
        return _dir_entry(repo, commit, path, expand)
    return None


def _tree(repo: Repo, commit: Commit, path: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
    if path and path not in _folders(commit.files):
        raise HubError(404, f"{path} is not a folder at {commit.oid}", "EntryNotFound")
    prefix = f"{path}/" if path else ""
    below = {p for p in commit.files.keys() | _folders(commit.files) if p.startswith(prefix)}
    if not recursive:
        below = {p for p in below if "/" not in p[len(prefix) :]}
    folders = sorted(p for p in below if p not in commit.files)
    files = sorted(p for p in below if p in commit.files)
    return [_dir_entry(repo, commit, p, expand) for p in folders] + [
        _file_entry(repo, p, commit.files[p], expand) for p in files
    ]


def _repo_info(repo: Repo, commit: Commit, blobs: bool) -> dict[str, Any]:
    siblings = []
    for path, f in sorted(commit.files.items()):
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling.update(size=f.size, blobId=f.git_oid)
            if f.pointer_size is not None:
                sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        siblings.append(sibling)
    return {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": commit.oid,
        "createdAt": repo.created,
        "lastModified": commit.date,
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": sum(f.size for f in commit.files.values()),
    }


def _yaml_problems(content: str) -> list[str]:
    """Errors in the YAML front matter of a README, as the Hub's validate-yaml reports them."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if match is None:
        return []
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"Invalid YAML: {err}"]
    return [] if metadata is None or isinstance(metadata, dict) else ["YAML metadata must be a mapping"]


# ---- HTTP plumbing ------------------------------------------------------------------------------

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_REPO_PATH = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API_REPO = r"/api/(?P<rtype>models|datasets|spaces)/" + _REPO_PATH
_RESOLVE = r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(_API_REPO + r"(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("POST", re.compile(_API_REPO + r"/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(_API_REPO + r"/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(_API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(_API_REPO + r"/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("POST", re.compile(_API_REPO + r"/branch/(?P<branch>[^/]+)$"), "create_branch"),
    ("GET", re.compile(r"/(?:(?P<rtype>datasets|spaces)/)?" + _REPO_PATH + _RESOLVE), "resolve"),
    ("GET", re.compile(r"/cdn/(?P<oid>[0-9a-f]{64})$"), "cdn"),
]
_WRITES = {"create_repo", "preupload", "commit", "create_branch"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    @property
    def hub(self) -> LocalHub:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Keep test output quiet."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(url.path)
                if match and (route_method == method or (route_method, method) == ("GET", "HEAD")):
                    with self.hub._lock:
                        self.hub.routes[name] += 1
                    if name in _WRITES:
                        self._check_token()
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    getattr(self, "_" + name)(body=body, head=method == "HEAD", **args)
                    return
            raise HubError(404, f"No route for {method} {url.path}")
        except HubError as err:
            self._send_error(err)
        except Exception as err:  # a server bug must reach the client as a 500, not a dropped connection
            self._send_error(HubError(500, f"{type(err).__name__}: {err}"))

    def _check_token(self) -> None:
        if self.hub.token and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _send_error(self, err: HubError) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers, self.command == "HEAD")

    def _base(self) -> str:
        return f"http://{self.headers.get('Host', self.hub.url.split('//', 1)[1])}"

    def _target(self, rtype: str | None, ns: str, name: str, rev: str) -> tuple[Repo, Commit]:
        repo = self.hub._repo(_TYPES[rtype or "models"], f"{ns}/{name}")
        if repo.private and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise HubError(401, "Repository not found", "RepositoryNotFound")  # the Hub's answer to anonymous reads
        with self.hub._lock:
            return repo, self.hub._commit(repo, rev)

    # ---- routes -----------------------------------------------------------------------------

    def _create_repo(self, body: bytes, **_: Any) -> None:
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or 'local-user'}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self._base()}/{prefix}{repo_id}"
        try:
            private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
            self.hub.create_repo(repo_type, repo_id, private)  # huggingface_hub 2.x sends visibility, 1.x private
        except HubError as err:
            self._json({"error": err.message, "url": url}, err.status)
            return
        self._json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _validate_yaml(self, body: bytes, **_: Any) -> None:
        errors = _yaml_problems(json.loads(body).get("content", ""))
        self._json({"errors": [{"message": e} for e in errors], "warnings": []}, 400 if errors else 200)

    def _repo_info(self, rtype: str, ns: str, name: str, rev: str = "main", **_: Any) -> None:
        repo, commit = self._target(rtype, ns, name, rev)
        self._json(_repo_info(repo, commit, _truthy((self.query.get("blobs") or [None])[0])))

    def _preupload(self, rtype: str, ns: str, name: str, rev: str, body: bytes, **_: Any) -> None:
        if self.query.get("create_pr"):
            raise HubError(501, "Pull requests are not supported by the local hub")
        _, commit = self._target(rtype, ns, name, rev)
        files = []
        for item in json.loads(body)["files"]:
            stored = commit.files.get(item["path"])
            oid = None if stored is None else git_blob_oid((self.hub.blobs / stored.sha256).read_bytes())
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": files, "commitOid": commit.oid})

    def _commit(self, rtype: str, ns: str, name: str, rev: str, body: bytes, **_: Any) -> None:
        if self.query.get("create_pr"):
            raise HubError(501, "Pull requests are not supported by the local hub")
        repo = self.hub._repo(_TYPES[rtype], f"{ns}/{name}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        commit = self.hub.apply_commit(repo, rev, lines)
        url = f"{self._base()}/{rtype}/{repo.repo_id}/commit/{commit.oid}"
        self._json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _tree(self, rtype: str, ns: str, name: str, rev: str, path: str = "", **_: Any) -> None:
        repo, commit = self._target(rtype, ns, name, rev)
        recursive = _truthy((self.query.get("recursive") or [None])[0])
        expand = _truthy((self.query.get("expand") or [None])[0])
        self._json(_tree(repo, commit, path.strip("/"), recursive, expand))

    def _paths_info(self, rtype: str, ns: str, name: str, rev: str, body: bytes, **_: Any) -> None:
        repo, commit = self._target(rtype, ns, name, rev)
        form = parse_qs(body.decode())
        expand = _truthy((form.get("expand") or [None])[0])
        entries = (_entry(repo, commit, p.strip("/"), expand) for p in form.get("paths", []))
        self._json([e for e in entries if e is not None])

    def _create_branch(self, rtype: str, ns: str, name: str, branch: str, body: bytes, **_: Any) -> None:
        repo = self.hub._repo(_TYPES[rtype], f"{ns}/{name}")
        self.hub.create_branch(repo, branch, (json.loads(body or b"{}") or {}).get("startingPoint"))
        self._json({})

    def _resolve(
        self, ns: str, name: str, rev: str, path: str, head: bool, rtype: str | None = None, **_: Any
    ) -> None:
        with self.hub._lock:
            self.hub.resolves[f"{ns}/{name}/{path}"] += 1
        _, commit = self._target(rtype, ns, name, rev)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"{path} does not exist at {commit.oid}", "EntryNotFound", commit.oid)
        if stored.pointer_size is not None:  # LFS: the Hub redirects to a signed, expiring CDN URL
            now = time.time()
            query = urlencode({"file": f"{ns}/{name}/{path}", "issued": f"{now:.6f}",
                               "expires": f"{now + self.hub.cdn_ttl_s:.6f}"})
            self.send_response(302)
            location = f"{self.hub.cdn_url}/cdn/{stored.sha256}?{query}"
            for key, value in {"Location": location, "X-Repo-Commit": commit.oid, "ETag": f'"{stored.sha256}"',
                               "X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size),
                               "Content-Length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()
            return
        headers = {
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "ETag": f'"{stored.git_oid if stored.pointer_size is None else stored.sha256}"',
        }
        if stored.pointer_size is not None:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        start, end = self._range(stored.size)
        if (start, end) != (0, stored.size):
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
        self.send_response(206 if "Content-Range" in headers else 200)
        for key, value in {**headers, "Content-Length": str(end - start)}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            with self.hub._lock:  # counted before sending: a client done reading never sees a stale count
                self.hub.sent[f"{ns}/{name}/{path}"] += end - start
            self._copy(self.hub.blobs / stored.sha256, start, end)

    def _cdn(self, oid: str, head: bool, **_: Any) -> None:
        """A blob by its sha256, as the Hub's CDN serves an LFS file: ranges, and 403 once the URL expired."""
        issued, expires = (float(self.query.get(key, ["0"])[0]) for key in ("issued", "expires"))
        file = self.query.get("file", [""])[0]
        if time.time() > expires or issued < self.hub._cdn_valid_from:
            raise HubError(403, "Request has expired")
        if "Authorization" in self.headers:  # as the storage behind a signed URL answers a token
            raise HubError(400, "Only one auth mechanism allowed")
        blob = self.hub.blobs / oid
        if not blob.is_file():
            raise HubError(404, f"no blob {oid}")
        size = blob.stat().st_size
        start, end = self._range(size)
        self.send_response(206 if (start, end) != (0, size) else 200)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "ETag": f'"{oid}"',
                   "Content-Length": str(end - start)}
        if (start, end) != (0, size):
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            with self.hub._lock:
                self.hub.sent[file] += end - start
            self._copy(blob, start, end)

    def _range(self, size: int) -> tuple[int, int]:
        """``[start, end)`` requested by the Range header (whole file without one)."""
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match is None or match.groups() == ("", ""):
            return 0, size
        first, last = match.groups()
        if first == "":
            start, end = max(size - int(last), 0), size
        else:
            start, end = int(first), min(int(last or size - 1) + 1, size)
        if start >= size or start >= end:
            raise HubError(416, f"Range not satisfiable (size {size})")
        return start, end

    def _copy(self, blob: Path, start: int, end: int) -> None:
        with blob.open("rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining:
                chunk = f.read(min(_COPY_CHUNK, remaining))
                self.wfile.write(chunk)
                remaining -= len(chunk)


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A started ``LocalHub`` (token ``TEST_TOKEN``); in-process clients must pass ``endpoint=hub.url``."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with LocalHub(tmp_path_factory.mktemp("local_hub")) as hub:
        yield hub
