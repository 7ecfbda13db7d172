"""Byte sources (local paths, http(s), any fsspec URL) with bounded retries, and tar shard reading.

Local paths open with ``webdataset.gopen``; ``http(s)://`` URLs use ranged GET requests (stdlib
``urllib``: fsspec's http backend needs aiohttp, which is not a dependency); other URLs
(``hf://datasets/ORG/NAME/...``, ``s3://``...) go through ``fsspec``. A transient error (connection
reset, timeout, HTTP 429/5xx, a remote stream ending early) reopens the source at the current
byte after ``BACKOFF_S * 2**k`` seconds, at most ``retries`` times in a row. A shard whose bytes
are wrong raises ``ShardError`` naming the shard, the sample and the member; nothing is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import json
import math
import os
import tarfile
import time
import tokenize
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Sequence

import fsspec
import numpy as np
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys

BACKOFF_S = 0.5
CHUNK = 1 << 20


class ShardError(RuntimeError):
    """A shard that cannot be read as indexed: which shard, where, and what is wrong."""


class AlignmentError(ShardError):
    """Shards of different modalities (or a shard and its index) disagree on the chip at a position."""


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if is_url(root) else os.path.join(root, relative)


class _RemoteEOF(Exception):
    """A remote stream ended before the expected size."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(exc, (OSError, TimeoutError, http.client.HTTPException, _RemoteEOF))


def _open_http(url: str, offset: int) -> BinaryIO:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    if offset and response.status != 206:  # server ignored Range: stream and skip
        remaining = offset
        while remaining:
            got = len(response.read(min(remaining, CHUNK)))
            if not got:
                raise _RemoteEOF(f"{url}: ended before byte {offset}")
            remaining -= got
    return response


def open_source(url: str, offset: int = 0, storage_options: Mapping | None = None) -> BinaryIO:
    """A binary stream of ``url`` positioned at ``offset`` (no retries)."""
    if url.startswith(("http://", "https://")):
        return _open_http(url, offset)
    if is_url(url):
        stream = fsspec.open(url, "rb", **dict(storage_options or {})).open()
    else:
        stream = gopen(url, "rb")
    stream.seek(offset)
    return stream


class RetryingReader(io.RawIOBase):
    """Sequential reads of ``url`` from ``offset`` that reopen at the current byte on transient
    errors; optionally hashes everything read (``sha256``)."""

    def __init__(self, url: str, offset: int = 0, *, size: int | None = None, retries: int = 3,
                 storage_options: Mapping | None = None, sha256: bool = False):
        super().__init__()
        self.url, self.position, self.size, self.retries = url, offset, size, retries
        self.storage_options = storage_options
        self.hash = hashlib.sha256() if sha256 else None
        self._stream: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<{self.url} at byte {self.position}>"

    def read(self, n: int = -1) -> bytes:
        data = self._retrying(lambda stream: stream.read(n), n)
        self._advance(data)
        return data

    def readinto(self, buffer) -> int:
        """Read straight into ``buffer`` (no intermediate bytes object)."""
        view = memoryview(buffer).cast("B")
        count = self._retrying(lambda stream: _fill(stream, view), len(view))
        self._advance(view[:count])
        return count

    def _retrying(self, operation: Callable[[BinaryIO], Any], n: int) -> Any:
        """``operation(stream)``, reopening at the current byte on transient errors."""
        for attempt in range(self.retries + 1):
            try:
                if self._stream is None:
                    self._stream = open_source(self.url, self.position, self.storage_options)
                result = operation(self._stream)
                if not result and n and self.size is not None and self.position < self.size and is_url(self.url):
                    raise _RemoteEOF(f"stream ended at byte {self.position} of {self.size}")
                return result
            except Exception as exc:  # noqa: BLE001 - classified below
                self._drop()
                if not _transient(exc) or attempt == self.retries:
                    raise OSError(f"{self.url}: read failed at byte {self.position} after {attempt + 1} "
                                  f"attempt(s): {exc}") from exc
                time.sleep(BACKOFF_S * 2**attempt)

    def _advance(self, data) -> None:
        self.position += len(data)
        if self.hash is not None:
            self.hash.update(data)

    def drain(self) -> None:
        """Read (and hash) to the end of the source."""
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        self._drop()
        super().close()

    def _drop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - a broken stream may fail to close; it is discarded anyway
                pass
            self._stream = None


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """``stream.readinto(view)``, or a read and a copy for streams without ``readinto``."""
    if hasattr(stream, "readinto"):
        return stream.readinto(view)
    data = stream.read(len(view))
    view[:len(data)] = data
    return len(data)


def read_bytes(url: str, *, retries: int = 3, storage_options: Mapping | None = None,
               offset: int = 0, size: int = -1) -> bytes:
    """``size`` bytes of ``url`` from ``offset`` (all of it by default), with retries."""
    chunks, total = [], 0
    with RetryingReader(url, offset, retries=retries, storage_options=storage_options) as reader:
        while size < 0 or total < size:
            chunk = reader.read(CHUNK if size < 0 else min(CHUNK, size - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class ShardFile:
    """One modality's tar of an aligned shard, as its index describes it."""

    url: str
    filesize: int
    sha256: str
    offsets: np.ndarray


def read_samples(shard: ShardFile, keys: Sequence[str], wanted: Sequence[int], *, verify: bool = False,
                 retries: int = 3, storage_options: Mapping | None = None) -> Iterator[tuple[int, dict]]:
    """Raw samples (``{"__key__", "<field>.npy": bytes, "json": bytes}``) at the increasing sample
    indices ``wanted``, checking every key read against ``keys`` (the index's chip ids).

    Reading starts at the first wanted sample's byte offset, or at byte 0 with ``verify``, which
    also reads the shard to its end and compares its sha256 with the index.
    """
    first = wanted[0]
    start = 0 if verify else first
    reader = RetryingReader(shard.url, int(shard.offsets[start]) if start else 0, size=shard.filesize,
                            retries=retries, storage_options=storage_options, sha256=verify)
    members = _Tracked(tar_members(reader), shard.url)
    want = iter(wanted)
    target = next(want)
    index = start
    try:
        for sample in group_by_keys(members):
            if index >= len(keys) or sample["__key__"] != keys[index]:
                expected = keys[index] if index < len(keys) else "the end of the shard"
                raise AlignmentError(f"{shard.url}: sample {index} is {sample['__key__']!r}, "
                                     f"the index says {expected!r}")
            if index == target:
                yield index, sample
                target = next(want, None)
                if target is None:
                    break
            index += 1
        if target is not None:
            raise ShardError(f"{shard.url}: ended after sample {index - 1} (member {members.last!r}); "
                             f"sample {target} of {len(keys)} is missing: truncated or corrupt shard")
        if verify:
            reader.drain()
            digest = reader.hash.hexdigest()
            if digest != shard.sha256:
                raise ShardError(f"{shard.url}: sha256 {digest} does not match the index ({shard.sha256}): "
                                 f"corrupt or changed shard")
    except (tarfile.TarError, ValueError, OSError, EOFError) as exc:
        where = f"after member {members.last!r}" if members.last else "in its first member"
        raise ShardError(f"{shard.url}: cannot read sample {index} ({keys[index] if index < len(keys) else '?'}) "
                         f"{where}: {exc}") from exc
    finally:
        reader.close()


def tar_members(reader: RetryingReader) -> Iterator[dict]:
    """Members ``{"fname", "data"}`` of an uncompressed USTAR tar of regular files (a shard) read
    sequentially from ``reader``; each payload is read in one call into its own uninitialised uint8
    array, so ``.npy`` members decode without a copy. A header failing its checksum, any other member
    type (directories, links, pax/GNU extensions) or a payload cut short raises ``tarfile.ReadError``."""
    while True:
        header = _read_exact(reader, tarfile.BLOCKSIZE)
        if not len(header):
            return
        try:
            info = tarfile.TarInfo.frombuf(header.tobytes(), tarfile.ENCODING, "surrogateescape")
        except tarfile.EOFHeaderError:  # the end-of-archive zero block
            return
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(f"invalid header at byte {reader.position - len(header)}: {exc}") from None
        if not info.isreg():
            raise tarfile.ReadError(f"member {info.name}: type {info.type!r} is not a regular file")
        data = _read_exact(reader, info.size)
        padding = -info.size % tarfile.BLOCKSIZE
        if len(data) < info.size or len(_read_exact(reader, padding)) < padding:
            raise tarfile.ReadError(f"unexpected end of data in member {info.name}")
        yield {"fname": info.name, "data": data}


def _read_exact(reader: RetryingReader, size: int) -> np.ndarray:
    """``size`` bytes of ``reader`` in an uninitialised uint8 array; shorter only at the end of the source."""
    buffer = np.empty(size, dtype=np.uint8)
    filled = 0
    while filled < size:
        count = reader.readinto(buffer[filled:])
        if not count:
            return buffer[:filled]
        filled += count
    return buffer


class _Tracked:
    """Passes tar members through, remembering the last member name (for error messages)."""

    def __init__(self, members: Iterator[dict], url: str):
        self.members, self.url, self.last = members, url, None

    def __iter__(self) -> Iterator[dict]:
        for member in self.members:
            self.last = member["fname"]
            member["__url__"] = self.url
            yield member


def decode(sample: Mapping, url: str) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of the ``.npy`` members and the parsed ``json`` member of a raw sample; the arrays must be
    exactly the json's ``fields``, with its dtypes and shapes (so a changed ``.npy`` header cannot
    reinterpret values silently) and a ``view_as`` of the same item size."""
    key = sample["__key__"]
    try:
        info = json.loads(bytes(sample["json"]))
    except KeyError:
        raise ShardError(f"{url}: sample {key!r} has no json member") from None
    except ValueError as exc:
        raise ShardError(f"{url}: member {key}.json is not valid JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ShardError(f"{url}: member {key}.json is not a JSON object")
    arrays = {}
    for name, data in sample.items():
        if name.endswith(".npy"):
            try:
                arrays[name[:-4]] = npy_array(data)
            except ValueError as exc:
                raise ShardError(f"{url}: member {key}.{name} is not a valid .npy array: {exc}") from None
    fields = info.get("fields") or {}
    if not isinstance(fields, dict) or sorted(arrays) != sorted(fields):
        raise ShardError(f"{url}: sample {key}: .npy members {sorted(arrays)} but its json lists fields "
                         f"{sorted(fields) if isinstance(fields, dict) else fields!r}")
    for name, array in arrays.items():
        field = fields[name] if isinstance(fields[name], dict) else {}
        if field.get("dtype") != str(array.dtype) or field.get("shape") != list(array.shape):
            raise ShardError(f"{url}: member {key}.{name}.npy is {array.dtype} {list(array.shape)}, its json "
                             f"says {field.get('dtype')} {field.get('shape')}")
        if field.get("view_as") is not None and _itemsize(field["view_as"]) != array.dtype.itemsize:
            raise ShardError(f"{url}: sample {key}: field {name} has view_as {field['view_as']!r}, not a "
                             f"{array.dtype.itemsize}-byte dtype")
    return arrays, info


def _itemsize(name: object) -> int | None:
    try:
        return np.dtype(name).itemsize
    except (TypeError, ValueError):
        return None


def npy_array(data: bytes | bytearray | np.ndarray) -> np.ndarray:
    """The C-order array of a version 1.0 / 2.0 ``.npy`` payload (what ``np.save`` writes for shards),
    viewing ``data`` in place (writable when ``data`` is); anything else is a ``ValueError``."""
    view = memoryview(data)
    if len(view) < 10 or view[:6] != b"\x93NUMPY" or view[6] not in (1, 2):
        raise ValueError("not a version 1.0 or 2.0 .npy payload")
    width = 2 if view[6] == 1 else 4
    start = 8 + width + int.from_bytes(view[8:8 + width], "little")
    shape, dtype = _npy_header(bytes(view[:start]))
    return np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start).reshape(shape)


@functools.lru_cache(maxsize=4096)
def _npy_header(head: bytes) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` header; cached: chips of a modality share a handful of headers, and
    numpy parses each with ``ast.literal_eval``."""
    stream = io.BytesIO(head)
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = read_header(stream)
    except (SyntaxError, tokenize.TokenError) as exc:  # numpy tokenizes the header dict; NULs etc. end here
        raise ValueError(f"unparsable header: {exc}") from None
    if fortran or dtype.hasobject or any(d < 0 for d in shape):
        raise ValueError(f"unsupported header: dtype {dtype}, shape {shape}, fortran order {fortran}")
    return shape, dtype
