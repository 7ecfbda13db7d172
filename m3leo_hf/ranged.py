"""Bounded byte-range reads and samples parsed from them: read a chip's bytes and nothing around them.

``read_range`` fetches exactly ``[offset, offset + size)`` of a local file, an ``http(s)://`` URL or an
``hf://`` repository file (one ``Range: bytes=a-b`` request, ``m3leo_hf.http_get``) or another fsspec URL
(``hf://buckets`` without read-ahead), retrying transient errors
like ``m3leo_hf.reader``. ``read_runs`` reads the wanted samples of a shard, one request per run of
consecutive samples (at most ``RUN_BYTES`` each unless one sample is larger), and checks every key against the index.
"""

from __future__ import annotations

import tarfile
from typing import Iterator, Mapping, Sequence

import fsspec
import numpy as np
from webdataset.tariterators import group_by_keys

from m3leo_hf import http_get, reader
from m3leo_hf.reader import AlignmentError, ShardError, is_url

RUN_BYTES = 32 << 20
PREALLOCATE_BYTES = 64 << 20  # larger requests grow with what arrives, whatever their size claims


def read_range(url: str, offset: int, size: int, *, retries: int = 3, storage_options: Mapping | None = None,
               buffer: np.ndarray | None = None) -> bytearray | np.ndarray:
    """Exactly ``size`` bytes of ``url`` from ``offset``, with retries; a short source is an ``OSError``.
    ``buffer`` (a writable uint8 array of ``size`` bytes or more): HTTP and local reads go into it and return
    a view of it (no fresh memory to fault in per request)."""
    if offset < 0 or size <= 0:
        raise ValueError(f"{url}: invalid byte range offset={offset} size={size}")
    if buffer is not None and (buffer.dtype != np.uint8 or buffer.ndim != 1 or len(buffer) < size):
        raise ValueError(f"{url}: a receive buffer of {len(buffer)} bytes cannot hold {size}")
    for attempt in range(retries + 1):
        try:
            data = _fetch(url, offset, size, storage_options, buffer)
            if len(data) != size:  # a remote stream may have been cut: retried; a local file is short
                short = f"the source ends after {len(data)} of {size} bytes"
                raise reader._RemoteEOF(short) if is_url(url) else ValueError(short)
            return data
        except Exception as exc:  # noqa: BLE001 - classified by reader._transient
            if not reader._transient(exc) or attempt == retries:
                raise OSError(f"{url}: cannot read bytes {offset}-{offset + size - 1} after {attempt + 1} "
                              f"attempt(s): {exc}") from exc
            reader.wait_to_retry(exc, attempt)
    raise AssertionError("unreachable")


def _fetch(url: str, offset: int, size: int, storage_options: Mapping | None,
           buffer: np.ndarray | None) -> bytearray | np.ndarray:
    """The bytes read in chunks: memory follows what the source really holds, whatever ``size`` claims
    (``buffer``, when given, holds ``size`` bytes already)."""
    url, headers = http_get.http_target(url, storage_options) or (url, {})
    if url.startswith(("http://", "https://")):
        with http_get.open_url(url, {**headers, "Range": f"bytes={offset}-{offset + size - 1}"}) as response:
            if response.status != 206:  # the server ignored Range: skip to offset in the full body
                _skip(response, offset)
            if buffer is not None:
                return _read_into(response, size, buffer)
            return _read_into(response, size) if size <= PREALLOCATE_BYTES else _read_upto(response, size)
    if is_url(url):
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        if "hf" in fs.protocol:  # its buffered file would read ahead a whole block
            with fs.open(path, "rb", cache_type="none") as handle:
                handle.seek(offset)
                return _read_upto(handle, min(size, max(handle.size - offset, 0)))
        return bytearray(fs.cat_file(path, start=offset, end=offset + size))
    with open(url.removeprefix("file://"), "rb") as handle:
        handle.seek(offset)
        return _read_upto(handle, size) if buffer is None else _read_into(handle, size, buffer)


def _skip(stream, count: int) -> None:
    while count:
        got = len(stream.read(min(count, reader.CHUNK)))
        if not got:
            raise reader._RemoteEOF(f"ended before byte {count}")
        count -= got


def _read_into(stream, size: int, buffer: np.ndarray | None = None) -> bytearray | np.ndarray:
    """At most ``size`` bytes of ``stream`` read into one buffer (a new one, or the start of ``buffer``;
    no per-chunk copies), fewer if it ends first."""
    data = bytearray(size) if buffer is None else buffer
    filled = 0
    with memoryview(data) as view:
        while filled < size:
            count = stream.readinto(view[filled:size])
            if not count:
                break
            filled += count
    if buffer is not None:
        return buffer[:filled]
    del data[filled:]
    return data


def _read_upto(stream, size: int) -> bytearray:
    """At most ``size`` bytes of ``stream``, fewer if it ends first."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(reader.CHUNK * 8, size - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def members(data: bytearray, url: str, base: int) -> Iterator[dict]:
    """Members ``{"fname", "data"}`` of the tar bytes ``data`` (read from byte ``base`` of ``url``); payloads
    are writable uint8 views of ``data``. Only regular USTAR members; anything else is ``tarfile.ReadError``."""
    array = np.frombuffer(data, dtype=np.uint8)
    position = 0
    while position + tarfile.BLOCKSIZE <= len(data):
        try:
            info = tarfile.TarInfo.frombuf(bytes(data[position:position + tarfile.BLOCKSIZE]), tarfile.ENCODING,
                                           "surrogateescape")
        except tarfile.EOFHeaderError:
            return
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(f"invalid header at byte {base + position}: {exc}") from None
        if not info.isreg():
            raise tarfile.ReadError(f"member {info.name}: type {info.type!r} is not a regular file")
        start = position + tarfile.BLOCKSIZE
        if start + info.size > len(data):
            raise tarfile.ReadError(f"member {info.name} runs past the indexed sample bytes")
        yield {"fname": info.name, "data": array[start:start + info.size], "__url__": url}
        position = start + info.size + (-info.size % tarfile.BLOCKSIZE)


def runs(wanted: Sequence[int], offsets: np.ndarray, sizes: np.ndarray, limit: int = RUN_BYTES) -> list[list[int]]:
    """``wanted`` (increasing sample indices) cut into runs of consecutive samples of at most ``limit`` bytes."""
    out: list[list[int]] = []
    for index in wanted:
        if out and index == out[-1][-1] + 1 and offsets[index] + sizes[index] - offsets[out[-1][0]] <= limit:
            out[-1].append(index)
        else:
            out.append([index])
    return out


def read_runs(url: str, keys: Sequence[str], wanted: Sequence[int], offsets: np.ndarray, sizes: np.ndarray, *,
              retries: int = 3, storage_options: Mapping | None = None) -> Iterator[tuple[int, dict]]:
    """Raw samples ``(index, {"__key__", "<field>.npy", "json"})`` at the increasing indices ``wanted`` of the
    shard at ``url``, each run of consecutive samples read with one bounded request."""
    for run in runs(wanted, offsets, sizes):
        start, stop = int(offsets[run[0]]), int(offsets[run[-1]] + sizes[run[-1]])
        data = read_range(url, start, stop - start, retries=retries, storage_options=storage_options)
        try:
            samples = list(group_by_keys(members(data, url, start)))
        except (tarfile.TarError, ValueError) as exc:
            raise ShardError(f"{url}: cannot read sample {run[0]} ({keys[run[0]]}) at bytes {start}-{stop - 1}: "
                             f"{exc}") from exc
        got = [s["__key__"] for s in samples]
        if got != [keys[i] for i in run]:
            raise AlignmentError(f"{url}: bytes {start}-{stop - 1} hold samples {got}, the index says "
                                 f"{[keys[i] for i in run]}")
        yield from zip(run, samples)
