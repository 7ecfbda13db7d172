"""Byte sources (local paths, http(s), any fsspec URL) with bounded retries, and tar shard reading.

Local paths open with ``webdataset.gopen``; ``http(s)://`` URLs use ranged GET requests (stdlib
``urllib`` through ``m3leo_hf.http_get``, which remembers where the Hub redirected; fsspec's http backend
needs aiohttp, which is not a dependency), and so do ``hf://datasets/ORG/NAME/...`` files, by their
``/resolve/`` URL; other URLs (``hf://buckets/...``, ``s3://``...) go through ``fsspec``. A transient error
(connection reset, timeout, HTTP 429/5xx, a remote stream ending early) reopens the source at the current byte
after ``BACKOFF_S * 2**k`` seconds (longer when a 429/503 says so), at most ``retries`` times in a row. A
shard whose bytes are wrong raises ``ShardError`` naming the shard, the sample and the member; nothing is
skipped.

Nothing read is trusted: tar members are read where the (checked) index says, into buffers sized from
the index; headers, ``.npy`` headers and sample JSON are checked against the index and
``m3leo_hf.limits`` before anything is allocated from them (see ``docs/design.md`` §6).
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
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Sequence

import fsspec
import numpy as np
from webdataset.gopen import gopen

from m3leo_hf import http_get
from m3leo_hf.limits import FieldLimit, shape_problem

BACKOFF_S = 0.5
CHUNK = 1 << 20
SKIP_READ = 1 << 20  # gaps up to this are read through; longer ones reopen the source at the target byte


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
    status = http_get.status_of(exc)
    if status is not None:  # a refusal (401, 403, 404...) stays one
        return status == 429 or status >= 500
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(exc, (OSError, TimeoutError, http.client.HTTPException, _RemoteEOF))


def wait_to_retry(exc: BaseException, attempt: int) -> None:
    """Sleep before retry ``attempt + 1``: ``BACKOFF_S * 2**attempt``, or longer when a 429/503 says so."""
    time.sleep(max(BACKOFF_S * 2**attempt, http_get.retry_after_s(exc) or 0.0))


def _open_http(url: str, offset: int, headers: Mapping[str, str]) -> BinaryIO:
    response = http_get.open_url(url, {**headers, "Range": f"bytes={offset}-"} if offset else headers)
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
    url, headers = http_get.http_target(url, storage_options) or (url, {})
    if url.startswith(("http://", "https://")):
        return _open_http(url, offset, headers)
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
                 storage_options: Mapping | None = None, sha256: bool = False, expected_size: int | None = None):
        super().__init__()
        self.url, self.position, self.size, self.retries = url, offset, size, retries
        self.expected_size = expected_size
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
                    self._check_size()
                result = operation(self._stream)
                if not result and n and self.size is not None and self.position < self.size and is_url(self.url):
                    raise _RemoteEOF(f"stream ended at byte {self.position} of {self.size}")
                return result
            except ShardError:
                self._drop()
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                self._drop()
                if not _transient(exc) or attempt == self.retries:
                    raise OSError(f"{self.url}: read failed at byte {self.position} after {attempt + 1} "
                                  f"attempt(s): {exc}") from exc
                wait_to_retry(exc, attempt)

    def _advance(self, data) -> None:
        self.position += len(data)
        if self.hash is not None:
            self.hash.update(data)

    def _check_size(self) -> None:
        """The opened source must have ``expected_size`` bytes (when its size can be known)."""
        total = _total_size(self._stream, self.position)
        if self.expected_size is not None and total is not None and total != self.expected_size:
            raise ShardError(f"{self.url}: {total} bytes on disk, the index says {self.expected_size}: "
                             f"truncated, replaced or rebuilt since the index was read")

    def skip(self, n: int) -> None:
        """Advance ``n`` bytes: read through (and hash) short gaps, reopen at the target after long ones."""
        if n > SKIP_READ and self.hash is None:
            self._drop()
            self.position += n
            return
        scratch = np.empty(min(n, CHUNK), dtype=np.uint8)
        while n:
            count = self.readinto(scratch[:min(n, len(scratch))])
            if not count:
                return
            n -= count

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


def _total_size(stream: Any, offset: int) -> int | None:
    """Size of the whole source behind an opened ``stream`` (HTTP headers, fsspec ``size``, ``fstat``), if known."""
    headers = getattr(stream, "headers", None)
    if headers is not None and hasattr(stream, "status"):  # an http.client response
        content_range, length = headers.get("Content-Range", ""), headers.get("Content-Length", "")
        if content_range.rpartition("/")[2].isdigit():
            return int(content_range.rpartition("/")[2])
        if length.isdigit():
            return int(length) + (offset if stream.status == 206 else 0)
        return None
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """``stream.readinto(view)``, or a read and a copy for streams without ``readinto``."""
    if hasattr(stream, "readinto"):
        return stream.readinto(view)
    data = stream.read(len(view))
    view[:len(data)] = data
    return len(data)


def read_bytes(url: str, *, retries: int = 3, storage_options: Mapping | None = None,
               offset: int = 0, size: int = -1, limit: int | None = None) -> bytes:
    """``size`` bytes of ``url`` from ``offset`` (all of it by default), with retries; more than ``limit``
    bytes (reading everything) is a ``ShardError``, found without reading past ``limit + 1`` bytes."""
    chunks, total = [], 0
    if size < 0 and limit is not None:
        size = limit + 1
    with RetryingReader(url, offset, retries=retries, storage_options=storage_options) as reader:
        while size < 0 or total < size:
            chunk = reader.read(CHUNK if size < 0 else min(CHUNK, size - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    if limit is not None and total > limit:
        raise ShardError(f"{url}: larger than {limit} bytes, the limit for this file")
    return b"".join(chunks)


def load_json(data: bytes | memoryview | np.ndarray, where: str) -> Any:
    """Parsed JSON of ``data``; invalid, too deeply nested or numerically absurd JSON is a ``ShardError``."""
    try:
        return json.loads(bytes(data))
    except RecursionError:
        raise ShardError(f"{where}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShardError(f"{where}: not valid JSON: {exc}") from None


@dataclass(frozen=True)
class ShardFile:
    """One modality's tar of an aligned shard, as its index describes it (checked by ``m3leo_hf.index``):
    per sample its first header byte (``offsets``) and members ``member_start[i]:member_start[i + 1]`` of
    the flat member arrays (name as ``<field>.npy`` / ``json``, data offset, size, sha256 or ``None`` for
    regions built before per-member hashes)."""

    url: str
    filesize: int
    sha256: str
    offsets: np.ndarray
    member_start: np.ndarray
    member_names: tuple[str, ...]
    member_offsets: np.ndarray
    member_sizes: np.ndarray
    member_sha256: tuple[str, ...] | None


def read_samples(shard: ShardFile, keys: Sequence[str], wanted: Sequence[int], *, verify: bool = False,
                 retries: int = 3, storage_options: Mapping | None = None) -> Iterator[tuple[int, dict]]:
    """Raw samples (``{"__key__", "<field>.npy": uint8 array, "json": uint8 array}``) at the increasing
    sample indices ``wanted``, read where the index says: each tar header must name the indexed member
    with the indexed size, and each payload buffer is sized from the index, never from the header.

    The shard's size on disk must be the indexed one (checked at every open: a truncated, replaced or
    rebuilt shard fails before a byte of it is used), and each sample's json member must have its indexed
    sha256 (a few KB per sample; the json holds the chip file's sha256, so a rebuilt chip is noticed
    before it is yielded). With ``verify`` the shard is read from byte 0, every member's sha256 is checked
    against the index before its sample is yielded, and the whole shard's sha256 is compared at its end
    (regions without per-member hashes: the whole shard is hashed before anything is yielded).
    """
    per_member = verify and shard.member_sha256 is not None
    if verify and not per_member:
        _verify_whole(shard, retries, storage_options)
    start = 0 if per_member else int(shard.offsets[wanted[0]])
    reader = RetryingReader(shard.url, start, size=shard.filesize, retries=retries,
                            storage_options=storage_options, sha256=per_member, expected_size=shard.filesize)
    index = wanted[0]
    try:
        for index in wanted:
            yield index, _read_sample(reader, shard, keys, index, per_member)
        if per_member:
            reader.drain()
            _check_digest(shard, reader.hash.hexdigest())
    except (tarfile.TarError, OSError, EOFError) as exc:
        key = keys[index] if index < len(keys) else "?"
        raise ShardError(f"{shard.url}: cannot read sample {index} ({key}): {exc}") from exc
    finally:
        reader.close()


def _verify_whole(shard: ShardFile, retries: int, storage_options: Mapping | None) -> None:
    with RetryingReader(shard.url, 0, size=shard.filesize, retries=retries, storage_options=storage_options,
                        sha256=True, expected_size=shard.filesize) as reader:
        reader.drain()
        _check_digest(shard, reader.hash.hexdigest())


def _check_digest(shard: ShardFile, digest: str) -> None:
    if digest != shard.sha256:
        raise ShardError(f"{shard.url}: sha256 {digest} does not match the index ({shard.sha256}): "
                         f"corrupt or changed shard")


def _read_sample(reader: "RetryingReader", shard: ShardFile, keys: Sequence[str], index: int, verify: bool) -> dict:
    """The members of sample ``index``, each checked against the index (name, size, with ``verify`` sha256)."""
    key = keys[index]
    sample: dict = {"__key__": key, "__url__": shard.url}
    for j in range(int(shard.member_start[index]), int(shard.member_start[index + 1])):
        name, offset, size = shard.member_names[j], int(shard.member_offsets[j]), int(shard.member_sizes[j])
        _skip_to(reader, offset - tarfile.BLOCKSIZE, shard.url, index)
        header = _read_exact(reader, tarfile.BLOCKSIZE)
        if len(header) < tarfile.BLOCKSIZE:
            raise ShardError(f"{shard.url}: sample {index} ({key}): unexpected end of data before member {name}")
        try:
            info = tarfile.TarInfo.frombuf(header.tobytes(), tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError as exc:
            raise ShardError(f"{shard.url}: sample {index} ({key}): invalid header at byte "
                             f"{offset - tarfile.BLOCKSIZE}: {exc}") from None
        expected = f"{key}.{name}"
        if info.name != expected:
            found = info.name.split(".", 1)[0]
            error = AlignmentError if found != key else ShardError
            raise error(f"{shard.url}: sample {index} is {found!r}, the index says {key!r} "
                        f"(member {info.name!r}, expected {expected!r})")
        if not info.isreg():
            raise ShardError(f"{shard.url}: member {info.name}: type {info.type!r} is not a regular file")
        if info.size != size:
            raise ShardError(f"{shard.url}: sample {index} ({key}): tar header of {info.name} says {info.size} "
                             f"bytes, the index says {size}: corrupt or changed shard")
        try:
            data = _read_exact(reader, size)
        except MemoryError:
            raise ShardError(f"{shard.url}: sample {index} ({key}): no memory for member {info.name} "
                             f"({size} bytes)") from None
        if len(data) < size:
            raise ShardError(f"{shard.url}: sample {index} ({key}): unexpected end of data in member {info.name}")
        if shard.member_sha256 is not None and (verify or name == "json"):  # json: a few KB, always
            digest = hashlib.sha256(data).hexdigest()
            if digest != shard.member_sha256[j]:
                raise ShardError(f"{shard.url}: sha256 {digest} of member {info.name} (sample {index}) does not "
                                 f"match the index ({shard.member_sha256[j]}): corrupt or changed shard")
        sample[name] = data
    return sample


def _skip_to(reader: "RetryingReader", position: int, url: str, index: int) -> None:
    if position < reader.position:
        raise ShardError(f"{url}: sample {index}: the index puts a member at byte {position}, before byte "
                         f"{reader.position} already read")
    reader.skip(position - reader.position)


def _read_exact(reader: RetryingReader, size: int) -> np.ndarray:
    """``size`` bytes of ``reader`` in an uninitialised uint8 array (a view when the reader holds its bytes
    already, ``prefetch.MemoryReader``); shorter only at the end of the source."""
    if hasattr(reader, "view"):
        return reader.view(size)
    buffer = np.empty(size, dtype=np.uint8)
    filled = 0
    while filled < size:
        count = reader.readinto(buffer[filled:])
        if not count:
            return buffer[:filled]
        filled += count
    return buffer


def decode(sample: Mapping, url: str, limits: Mapping[str, FieldLimit] | None = None
           ) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of the ``.npy`` members and the parsed ``json`` member of a raw sample; the arrays must be
    exactly the json's ``fields``, with its dtypes and shapes (so a changed ``.npy`` header cannot
    reinterpret values silently), a ``view_as`` of the same item size, and within ``limits`` (per field,
    from ``m3leo_hf.limits.field_limits``) before any transform allocates from them."""
    key = sample["__key__"]
    if "json" not in sample:
        raise ShardError(f"{url}: sample {key!r} has no json member")
    info = load_json(sample["json"], f"{url}: member {key}.json")
    problem = sample_info_problem(info, key)
    if problem:
        raise ShardError(f"{url}: member {key}.json: {problem}")
    arrays = {}
    for name, data in sample.items():
        if name.endswith(".npy"):
            try:
                arrays[name[:-4]] = npy_array(data)
            except ValueError as exc:
                raise ShardError(f"{url}: member {key}.{name} is not a valid .npy array: {exc}") from None
    fields = info.get("fields") or {}
    if sorted(arrays) != sorted(fields):
        raise ShardError(f"{url}: sample {key}: .npy members {sorted(arrays)} but its json lists fields "
                         f"{sorted(fields)}")
    for name, array in arrays.items():
        field = fields[name]
        if field.get("dtype") != str(array.dtype) or field.get("shape") != list(array.shape):
            raise ShardError(f"{url}: member {key}.{name}.npy is {array.dtype} {list(array.shape)}, its json "
                             f"says {field.get('dtype')} {field.get('shape')}")
        if field.get("view_as") is not None and _itemsize(field["view_as"]) != array.dtype.itemsize:
            raise ShardError(f"{url}: sample {key}: field {name} has view_as {field['view_as']!r}, not a "
                             f"{array.dtype.itemsize}-byte dtype")
        limit = (limits or {}).get(name)
        problem = limit.problem(str(array.dtype), array.shape) if limit else None
        if problem:
            raise ShardError(f"{url}: member {key}.{name}.npy: {problem}")
    return arrays, info


def sample_info_problem(info: Any, key: str) -> str | None:
    """Why a sample's parsed json cannot be used (its types, chip id and field descriptions), or ``None``."""
    if not isinstance(info, dict):
        return "not a JSON object"
    if info.get("chip_id", key) != key:
        return f"chip_id {info.get('chip_id')!r} is not the sample key {key!r}"
    if not isinstance(info.get("available", False), bool):
        return f"available is {info.get('available')!r}, not true/false"
    if not isinstance(info.get("dates") or {}, dict):
        return "dates is not an object"
    fields = info.get("fields") or {}
    if not isinstance(fields, dict):
        return "fields is not an object"
    return next(filter(None, (field_problem(name, field) for name, field in fields.items())), None)


def field_problem(name: str, field: Any) -> str | None:
    """Why a field description (dtype, shape, dims, band_names, nodata, view_as) is unusable, or ``None``."""
    if not isinstance(field, dict):
        return f"field {name!r} is not an object"
    shape_error = shape_problem(field.get("shape"))
    if shape_error:
        return f"field {name}: {shape_error}"
    if not isinstance(field.get("dtype"), str) or _itemsize(field["dtype"]) is None:
        return f"field {name}: dtype {field.get('dtype')!r} is not a numpy dtype"
    for key in ("dims", "band_names"):
        value = field.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"field {name}: {key} is not a list of strings"
    nodata = field.get("nodata")
    if nodata is not None and not isinstance(nodata, (int, float, str)) or isinstance(nodata, bool):
        return f"field {name}: nodata {nodata!r} is not a number"
    if isinstance(nodata, str):
        try:
            float(nodata)
        except ValueError:
            return f"field {name}: nodata {nodata!r} is not a number"
    if field.get("view_as") is not None and not isinstance(field["view_as"], str):
        return f"field {name}: view_as {field['view_as']!r} is not a dtype name"
    return None


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
    if start > len(view):
        raise ValueError(f"header of {start} bytes in a {len(view)}-byte member")
    shape, dtype = _npy_header(bytes(view[:start]))
    problem = shape_problem(list(shape))
    if problem:
        raise ValueError(f"header claims {problem}")
    if math.prod(shape) * dtype.itemsize != len(view) - start:
        raise ValueError(f"header claims {dtype} {list(shape)} ({math.prod(shape) * dtype.itemsize} bytes), "
                         f"the member holds {len(view) - start} bytes of data")
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
