"""HTTP GETs of shard and metadata bytes the way the Hub serves them.

The Hub answers ``/resolve/<rev>/<path>`` of an LFS or Xet file with a redirect to a signed CDN URL. Every
resolve request counts against the Hub's rate limit for resolvers (a few thousand per 5 minutes), and a
remote stream makes one request per chunk of a few samples: following the redirect anew each time would spend
that budget in minutes and pay the extra round trip on every chunk. So the location a URL redirected to is
remembered in this process for ``LOCATION_TTL_S``, well inside the lifetime of the Hub's signed URLs, and
requests go straight to it (a URL that does not redirect is remembered as itself). Only shards (``.tar``) are
remembered: a published shard never changes (docs/design.md), while a growth commit rewrites the metadata under
the same path, so metadata is resolved on every read. A location that refuses the request (401, 403, 404, 410:
expired or revoked signature) is forgotten and the URL resolved again, once, within the same request.

An ``hf://`` file of a repository is read the same way (``http_target``): as its ``/resolve/`` URL at the
endpoint, with the token ``HfFileSystem`` would send. An ``https://`` URL at the Hub's endpoint carries that token
too, as ``datasets`` sends it (so a private repo reads by either URL); any http(s) URL carries the
``storage_options["headers"]`` fsspec's HTTP filesystem would send. Reading an ``hf://`` file through
``HfFileSystem`` instead costs one resolver request and, every few chunks, Hub API calls (repo info, tree
listings), which have the lowest limits.
``Authorization`` never leaves the origin it was meant for: a redirect to the CDN drops it, as the Hub's
clients do (a signed URL plus a token is refused by the storage).

A 429 or 503 says how long to wait in ``Retry-After`` or the ``RateLimit`` header (the Hub's ``"resolvers";
r=0;t=55``): ``retry_after_s`` reads it for the readers' retries, at most ``RETRY_AFTER_MAX_S``.
"""

from __future__ import annotations

import email.utils
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from typing import Mapping

LOCATION_TTL_S = 600.0
RETRY_AFTER_MAX_S = 300.0  # the Hub's rate-limit window
REFUSED = frozenset({401, 403, 404, 410})
_RATELIMIT_RESET = re.compile(r";\s*t\s*=\s*(\d+)")
_locations: dict[str, tuple[str, float]] = {}  # url -> (where it led, when); dict operations are atomic
_targets: dict[tuple[str, str], tuple[str, dict[str, str]] | None] = {}  # (url, options) -> http_target
_hub_filesystems: dict[str, object] = {}  # storage options -> the HfFileSystem resolving hf:// paths with them
_resolving: dict[str, threading.Lock] = {}  # url -> held while one thread resolves it
os.register_at_fork(after_in_child=_resolving.clear)  # a lock held by a parent's thread would never be released


def open_url(url: str, headers: Mapping[str, str], timeout: float = 60) -> HTTPResponse:
    """The response to ``GET url`` with ``headers``, sent to the location ``url`` last redirected to when that
    is fresh; redirects are followed (with the same headers) and their final location remembered. One thread at
    a time resolves a URL: the chunk requests a read-ahead starts together make one resolver request. Only
    shard URLs (``.tar``) are remembered."""
    if not urllib.parse.urlsplit(url).path.endswith(".tar"):
        return _get(url, headers, timeout)
    refused = None
    remembered = _fresh(url)
    if remembered is not None:
        try:
            return _get(remembered[0], _for(remembered[0], url, headers), timeout)
        except urllib.error.HTTPError as exc:
            if exc.code not in REFUSED or remembered[0] == url:
                raise
            exc.close()
            refused = remembered
    with _resolving.setdefault(url, threading.Lock()):
        remembered = _fresh(url)
        if remembered is None or remembered == refused:
            response = _get(url, headers, timeout)
            _locations[url] = (response.geturl(), time.monotonic())
            return response
    return _get(remembered[0], _for(remembered[0], url, headers), timeout)  # resolved by another thread meanwhile


def http_target(url: str, storage_options: Mapping | None = None) -> tuple[str, dict[str, str]] | None:
    """The http(s) URL a GET of ``url`` goes to and the headers it carries, or None for a URL read another way
    (local paths, ``hf://buckets``, other fsspec URLs):
    - an ``hf://`` file of a repository: its ``/resolve/`` URL, with the token and user agent ``HfFileSystem``
      with ``storage_options`` would send;
    - an ``http(s)://`` URL: itself, with ``storage_options["headers"]``, plus the Hub's token and user agent
      when it is at the Hub's endpoint (``storage_options["endpoint"]``, else ``HF_ENDPOINT``) and those headers
      hold no ``Authorization``; ``storage_options["token"]`` chooses the token as for ``hf://``."""
    if not url.startswith(("hf://", "http://", "https://")):
        return None
    options = repr(sorted((storage_options or {}).items()))
    if (url, options) not in _targets:
        _targets[url, options] = (_hub_https(url, storage_options, options) if url.startswith("hf://")
                                  else _https(url, storage_options))
    return _targets[url, options]


def _https(url: str, storage_options: Mapping | None) -> tuple[str, dict[str, str]]:
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    storage_options = storage_options or {}
    headers = {str(k): str(v) for k, v in dict(storage_options.get("headers") or {}).items()}
    at_hub = _origin(url) == _origin(storage_options.get("endpoint") or constants.ENDPOINT)
    if at_hub and not any(k.lower() == "authorization" for k in headers):
        headers = build_hf_headers(token=storage_options.get("token"), headers=headers)
    return url, headers


def _hub_https(url: str, storage_options: Mapping | None, options: str) -> tuple[str, dict[str, str]] | None:
    from huggingface_hub import HfFileSystem, hf_hub_url
    from huggingface_hub.hf_file_system import HfFileSystemResolvedRepositoryPath
    from huggingface_hub.utils import build_hf_headers

    if options not in _hub_filesystems:  # fsspec's cache keeps one per thread, and each checks the repo anew
        _hub_filesystems[options] = HfFileSystem(**dict(storage_options or {}), skip_instance_cache=True)
    fs = _hub_filesystems[options]
    resolved = fs.resolve_path(url)  # the repo and revision are checked once per filesystem, then cached
    if not isinstance(resolved, HfFileSystemResolvedRepositoryPath):
        return None
    return (hf_hub_url(resolved.repo_id, resolved.path_in_repo, repo_type=resolved.repo_type,
                       revision=resolved.revision, endpoint=fs.endpoint),
            build_hf_headers(token=fs.token, headers={"Accept-Encoding": "identity"}))


def forget_locations() -> None:
    """Forget every remembered redirect location (each URL is resolved again on its next request)."""
    _locations.clear()


def status_of(exc: BaseException | None) -> int | None:
    """The HTTP status behind ``exc`` or one of its causes: urllib's ``HTTPError.code``, or the response of an
    HTTP client's error (``huggingface_hub``'s ``HfHubHTTPError``, requests, httpx); None when none is there."""
    while exc is not None:
        if isinstance(exc, urllib.error.HTTPError):
            return exc.code
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__
    return None


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a 429/503 response asks to wait (``Retry-After`` seconds or date, else the ``RateLimit``
    header's reset ``t=``), at most ``RETRY_AFTER_MAX_S``; None when it says nothing usable."""
    if not isinstance(exc, urllib.error.HTTPError) or exc.code not in (429, 503) or exc.headers is None:
        return None
    seconds = _seconds(exc.headers.get("Retry-After", ""))
    if seconds is None:
        reset = _RATELIMIT_RESET.search(exc.headers.get("RateLimit", ""))
        seconds = float(reset.group(1)) if reset else None
    return None if seconds is None else min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _seconds(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.timestamp() - time.time() if when.tzinfo is not None else None


def _fresh(url: str) -> tuple[str, float] | None:
    remembered = _locations.get(url)
    return remembered if remembered is not None and time.monotonic() - remembered[1] < LOCATION_TTL_S else None


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


def _for(location: str, url: str, headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` for a request to ``location`` (where ``url`` led): without ``Authorization`` off its origin."""
    if _origin(location) == _origin(url):
        return headers
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


class _KeepAuthorizationOnItsOrigin(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0913 - stdlib signature
        request = super().redirect_request(req, fp, code, msg, headers, newurl)
        if request is not None and _origin(newurl) != _origin(req.full_url):
            request.remove_header("Authorization")
        return request


_opener = urllib.request.build_opener(_KeepAuthorizationOnItsOrigin)


def _get(url: str, headers: Mapping[str, str], timeout: float) -> HTTPResponse:
    return _opener.open(urllib.request.Request(url, headers=dict(headers)), timeout=timeout)
