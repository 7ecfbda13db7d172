"""HTTP GETs of shard and metadata bytes the way the Hub serves them.

The Hub answers ``/resolve/<rev>/<path>`` of an LFS or Xet file with a redirect to a signed CDN URL. Every
resolve request counts against the Hub's rate limit for resolvers (a few thousand per 5 minutes), and a
remote stream makes one request per chunk of a few samples: following the redirect anew each time would spend
that budget in minutes and pay the extra round trip on every chunk. So the location a URL redirected to is
remembered in this process for ``LOCATION_TTL_S``, well inside the lifetime of the Hub's signed URLs, and
requests go straight to it (a URL that does not redirect is remembered as itself). A location that refuses the request (401, 403, 404, 410: expired or revoked
signature) is forgotten and the URL resolved again, once, within the same request.

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
import urllib.request
from http.client import HTTPResponse
from typing import Mapping

LOCATION_TTL_S = 600.0
RETRY_AFTER_MAX_S = 300.0  # the Hub's rate-limit window
REFUSED = frozenset({401, 403, 404, 410})
_RATELIMIT_RESET = re.compile(r";\s*t\s*=\s*(\d+)")
_locations: dict[str, tuple[str, float]] = {}  # url -> (where it led, when); dict operations are atomic
_resolving: dict[str, threading.Lock] = {}  # url -> held while one thread resolves it
os.register_at_fork(after_in_child=_resolving.clear)  # a lock held by a parent's thread would never be released


def open_url(url: str, headers: Mapping[str, str], timeout: float = 60) -> HTTPResponse:
    """The response to ``GET url`` with ``headers``, sent to the location ``url`` last redirected to when that
    is fresh; redirects are followed (with the same headers) and their final location remembered. One thread at
    a time resolves a URL: the chunk requests a read-ahead starts together make one resolver request."""
    refused = None
    remembered = _fresh(url)
    if remembered is not None:
        try:
            return _get(remembered[0], headers, timeout)
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
    return _get(remembered[0], headers, timeout)  # resolved again by another thread meanwhile


def forget_locations() -> None:
    """Forget every remembered redirect location (each URL is resolved again on its next request)."""
    _locations.clear()


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


def _get(url: str, headers: Mapping[str, str], timeout: float) -> HTTPResponse:
    return urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers)), timeout=timeout)
