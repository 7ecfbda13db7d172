"""A built region's published metadata, read once: aligned shards, chip keys, offsets, availability, stats.

Reads ``metadata/modalities.json`` (config names and their aliases), and for the requested modalities and
split ``metadata/<modality>.modality.json`` (the declaration: what the values mean),
``metadata/<modality>.shards.json`` (nsamples, sha256, filesize per shard), ``metadata/<modality>.parquet``
(chip id, byte offset and availability per sample) and ``metadata/<modality>.stats.json`` (train statistics).
"""

from __future__ import annotations

import functools
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from builders.declarations import Modality
from m3leo_hf import http_get, limits
from m3leo_hf.reader import AlignmentError, ShardError, ShardFile, is_url, join, load_json, read_bytes

NEEDS_TOKEN = ("; a private or gated repository needs a token: pass storage_options={'token': ...} or log in "
               "with `hf auth login`")
COLUMNS = ["chip_id", "split", "shard", "sample_index", "offset", "size", "available", "members"]


@dataclass(frozen=True)
class AlignedShard:
    """Shard ``name`` (e.g. ``train-000003``) of one region: the same chips, in the same order, in
    every modality's tar."""

    region: str
    name: str
    keys: tuple[str, ...]
    files: Mapping[str, ShardFile]
    available: Mapping[str, np.ndarray]
    sizes: Mapping[str, np.ndarray] = field(default_factory=dict)  # bytes of each sample, per modality

    @property
    def nsamples(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class RegionIndex:
    """What the stream needs to know about one region root before reading any shard.

    ``templates[m]`` locates the JSON member (url, offset, size) of the first chip having modality
    ``m``: its ``fields`` give the shapes used for chips that lack ``m``.
    """

    root: str
    region: str
    shards: tuple[AlignedShard, ...]
    stats: Mapping[str, Mapping]
    templates: Mapping[str, tuple[str, int, int] | None]
    declarations: Mapping[str, Modality]


def load_region(root: str, modalities: Sequence[str], split: str, *, retries: int = 3,
                storage_options: Mapping | None = None) -> RegionIndex:
    """Index of ``split`` in region ``root`` (local dir or URL) for ``modalities``.

    Nothing in the metadata is trusted: sizes, counts, byte offsets, shard paths and chip ids are checked
    against each other and against ``m3leo_hf.limits`` before anything is allocated from them; a defect is
    a ``ShardError`` naming the file and what is wrong.
    """
    def fetch(name: str, limit: int) -> bytes:
        try:
            return read_bytes(join(root, f"metadata/{name}"), retries=retries, storage_options=storage_options,
                              limit=limit)
        except OSError as exc:
            hint = NEEDS_TOKEN if http_get.status_of(exc) in (401, 403) else ""
            raise FileNotFoundError(f"{root}: cannot read metadata/{name}: {exc}{hint}") from exc

    names = config_names(root, fetch)
    load = functools.partial(_load_modality, root, names=names, fetch=fetch, split=split)
    if is_url(root):  # one request after another would pay the latency of each: all of them at once
        with ThreadPoolExecutor(min(len(modalities), 8) or 1, thread_name_prefix="m3leo-metadata") as pool:
            loaded = list(pool.map(load, modalities))
    else:
        loaded = [load(modality) for modality in modalities]
    region, per_modality, stats, templates, declarations = None, {}, {}, {}, {}
    for modality, found in zip(modalities, loaded):
        stats[modality], templates[modality] = {}, None
        if found is None:
            continue  # the region has no such modality (e.g. no GUNW over Europe): all chips lack it
        label, declarations[modality], per_modality[modality], stats[modality], templates[modality] = found
        region = region or (label if isinstance(label, str) else root.rstrip("/").rsplit("/", 1)[-1]).split("/")[0]
    if not per_modality:
        raise FileNotFoundError(f"{root}: no metadata/<modality>.shards.json for any of {list(modalities)}; "
                                f"is it a built region?")
    shards = _align(region, per_modality, modalities)
    return RegionIndex(root, region, shards, stats, templates, declarations)


def _load_modality(root: str, modality: str, *, names: Mapping[str, str], fetch, split: str) -> tuple | None:
    """(index name, declaration, shard files, train statistics, template location) of one modality of a
    region, or None when the region lacks it."""
    name = names.get(modality, modality)
    where = f"{root}: metadata/{name}.shards.json"
    try:
        index = load_json(fetch(f"{name}.shards.json", limits.MAX_INDEX_BYTES), where)
    except FileNotFoundError as exc:
        if not _absent(exc):
            raise
        return None
    entries = _shard_entries(index, where)
    declaration = _declaration(root, name, fetch)
    table = _read_rows(fetch(f"{name}.parquet", limits.MAX_PARQUET_BYTES),
                       f"{root}: metadata/{name}.parquet", sum(e["nsamples"] for e in entries))
    files = _shard_files(root, name, entries, table, split)
    published = load_json(fetch(f"{name}.stats.json", limits.MAX_STATS_BYTES), f"{root}: metadata/{name}.stats.json")
    train = published.get("splits", {}).get("train", {}) if isinstance(published, dict) else None
    return (index.get("name"), declaration, files, train if isinstance(train, dict) else {},
            _template(root, name, entries, table))


def config_names(root: str, fetch) -> dict[str, str]:
    """``{config name or alias: shard-folder name}`` from ``metadata/modalities.json`` (empty when absent)."""
    where = f"{root}: metadata/modalities.json"
    try:
        index = load_json(fetch("modalities.json", limits.MAX_INDEX_BYTES), where)
    except FileNotFoundError as exc:
        if not _absent(exc):
            raise
        return {}
    aliases = index.get("aliases", {}) if isinstance(index, dict) else None
    if not isinstance(aliases, dict) or not isinstance(index.get("modalities", {}), dict):
        raise ShardError(f"{where}: not a modalities index")
    names = {str(alias): str(name) for alias, name in aliases.items()}
    names.update({str(name): str(name) for name in index.get("modalities", {})})
    bad = next((n for n in names.values() if not limits.MODALITY_NAME.match(n)), None)
    if bad is not None:
        raise ShardError(f"{where}: modality name {bad!r:.60} is not a shard folder name")
    return names


def _declaration(root: str, name: str, fetch) -> Modality:
    """The declaration the region was built with, from ``metadata/<name>.modality.json``."""
    where = f"{root}: metadata/{name}.modality.json"
    try:
        return Modality.from_json(load_json(fetch(f"{name}.modality.json", limits.MAX_INDEX_BYTES), where))
    except FileNotFoundError as exc:
        if not _absent(exc):
            raise
        raise ShardError(f"{where}: missing: the region was built without declarations (rebuild it with this "
                         "version)") from None
    except (ValueError, TypeError) as exc:
        raise ShardError(f"{where}: not a modality declaration: {exc}") from None


def _shard_entries(index: object, where: str) -> list[dict]:
    """The shard list of a ``shards.json``, each entry checked: a relative ``<modality>/<split>-NNNNNN.tar``
    url inside the region, its split, integer counts and sizes that fit together, a sha256."""
    shardlist = index.get("shardlist") if isinstance(index, dict) else None
    if not isinstance(shardlist, list):
        raise ShardError(f"{where}: no shardlist")
    total = 0
    for entry in shardlist:
        if not isinstance(entry, dict):
            raise ShardError(f"{where}: shard entry {entry!r:.80} is not an object")
        url, nsamples, filesize = entry.get("url"), entry.get("nsamples"), entry.get("filesize")
        if not isinstance(url, str) or not limits.SHARD_URL.match(url) or url.split("/")[1].split("-")[0] != entry.get("split"):
            raise ShardError(f"{where}: shard url {url!r:.200} is not <modality>/<split>-NNNNNN.tar inside the "
                             f"region (split {entry.get('split')!r:.20})")
        if type(filesize) is not int or not 0 < filesize <= limits.MAX_SHARD_BYTES:
            raise ShardError(f"{where}: {url}: filesize {filesize!r:.40} is not a plausible size")
        if type(nsamples) is not int or not 0 <= nsamples <= filesize // limits.MIN_SAMPLE_BYTES:
            raise ShardError(f"{where}: {url}: nsamples {nsamples!r:.40} does not fit a {filesize}-byte shard")
        if not isinstance(entry.get("sha256"), str) or not limits.SHA256.match(entry["sha256"]):
            raise ShardError(f"{where}: {url}: sha256 {entry.get('sha256')!r:.80} is not a sha256 digest")
        total += nsamples
    if total > limits.MAX_CHIPS_PER_REGION:
        raise ShardError(f"{where}: {total} samples, more than the {limits.MAX_CHIPS_PER_REGION} a region may hold")
    if len({e["url"] for e in shardlist}) != len(shardlist):
        raise ShardError(f"{where}: a shard url is listed twice")
    return shardlist


def _read_rows(data: bytes, where: str, expected_rows: int) -> pa.Table:
    """The index columns of a per-chip Parquet file whose footer agrees with the shard index: one row per
    sample, at most ``MAX_MEMBERS_PER_SAMPLE`` members per row, a bounded decoded size."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        meta = parquet.metadata
        if meta.num_rows != expected_rows:
            raise ShardError(f"{where}: {meta.num_rows} rows, the shard index lists {expected_rows} samples")
        decoded = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        if decoded > limits.MAX_PARQUET_BYTES:
            raise ShardError(f"{where}: {decoded} bytes decoded, more than {limits.MAX_PARQUET_BYTES}")
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                if column.num_values > max(group.num_rows, 1) * limits.MAX_MEMBERS_PER_SAMPLE:
                    raise ShardError(f"{where}: column {column.path_in_schema} holds {column.num_values} values "
                                     f"for {group.num_rows} rows")
        present = set(parquet.schema_arrow.names)
        # from a pa.BufferReader, never io.BytesIO: with torch imported, pyarrow 26 reading through a Python
        # file object makes the process abort at exit now and then ("terminate called without an active
        # exception": 5 of 6 runs of a minimal reproducer with io.BytesIO, 0 of 6 with BufferReader)
        table = parquet.read(columns=[c for c in COLUMNS if c in present])  # not pq.read_table: no pyarrow.dataset
    except ShardError:
        raise
    except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
        raise ShardError(f"{where}: unreadable: {exc}") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing or table.num_rows != expected_rows:
        raise ShardError(f"{where}: missing columns {missing}" if missing else f"{where}: row count changed")
    for name in COLUMNS:
        if table[name].null_count and name not in ("members",):
            raise ShardError(f"{where}: column {name} has null values")
    # in Python: pyarrow's RE2 regex kernels, once used in a process that imported torch, abort it at exit
    bad = next((v for v in table["chip_id"].to_pylist() if not limits.CHIP_ID.match(v)), None)
    if bad is not None:
        raise ShardError(f"{where}: chip id {bad!r:.40} is not 13 lower-case hex characters")
    return table


def _numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An integer or boolean column without nulls as numpy, from its buffers: pyarrow's ``to_numpy`` imports
    pandas and pyarrow.compute, a quarter of a first batch. Other types raise ``TypeError``."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise ValueError(f"{array.null_count} null values")
    kind = array.type
    if pa.types.is_boolean(kind):
        bits = np.frombuffer(array.buffers()[1], dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[array.offset:array.offset + len(array)].astype(bool)
    if not pa.types.is_integer(kind):
        raise TypeError(f"{kind} values, expected integers")
    dtype = np.dtype(f"{'u' if pa.types.is_unsigned_integer(kind) else ''}int{kind.bit_width}")
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def _valid(array: pa.Array) -> np.ndarray:
    """Boolean validity of each slot of ``array``, from its bitmap."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    bitmap = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bitmap, bitorder="little")[array.offset:array.offset + len(array)].astype(bool)


def _shard_files(root: str, modality: str, entries: list[dict], table: pa.Table, split: str) -> dict[str, tuple]:
    """``{shard name: (ShardFile, keys, available, sample sizes)}`` for the split's shards of one modality."""
    where = f"{root}: metadata/{modality}.parquet"
    try:  # numpy on whole columns, no pyarrow.compute (its import is a third of a first batch)
        in_split = np.flatnonzero(np.array(table["split"].to_pylist(), dtype=object) == split)
        shard_of = table["shard"].to_pylist()
        shard_of = [shard_of[r] for r in in_split]
        sample_index = _numpy(table["sample_index"])[in_split]
        offsets, ids = _numpy(table["offset"])[in_split], table["chip_id"].to_pylist()
        ids = [ids[r] for r in in_split]
        sample_sizes = _numpy(table["size"])[in_split]
        available = _numpy(table["available"])[in_split]
        members = table["members"].combine_chunks()
        bounds = _numpy(members.offsets)
        counts = np.where(_valid(members), np.diff(bounds), 0)[in_split]  # a null list holds no member
        first = np.concatenate([[0], np.cumsum(counts)])
        flat = members.values  # every row's members; row r's are values[bounds[r]:bounds[r] + count]
        if flat.null_count or any(flat.field(f).null_count for f in ("name", "offset", "size")):
            raise ShardError(f"{where}: a member entry has null values")
        picked_all = np.arange(first[-1], dtype=np.int64) + np.repeat(bounds[in_split] - first[:-1], counts)
        names = flat.field("name").to_pylist()
        names = [names[i] for i in picked_all]
        member_offsets = _numpy(flat.field("offset"))[picked_all]
        member_sizes = _numpy(flat.field("size"))[picked_all]
        digests = flat.field("sha256").to_pylist() if flat.type.get_field_index("sha256") >= 0 else None
        digests = None if digests is None else [digests[i] for i in picked_all]
    except (KeyError, TypeError, ValueError, pa.ArrowException) as exc:
        raise ShardError(f"{where}: index columns of unexpected types: {exc}") from None
    by_shard: dict[str, list[int]] = {}
    for row, shard in enumerate(shard_of):
        by_shard.setdefault(shard, []).append(row)
    out = {}
    for entry in sorted(entries, key=lambda e: e["url"]):
        if entry["split"] != split:
            continue
        rows = np.array(by_shard.pop(entry["url"], []), dtype=np.int64)
        if len(rows) != entry["nsamples"]:
            raise AlignmentError(f"{root}: {entry['url']}: {modality}.parquet lists {len(rows)} samples, "
                                 f"{modality}.shards.json says {entry['nsamples']}")
        rows = rows[np.argsort(sample_index[rows], kind="stable")]
        if not np.array_equal(sample_index[rows], np.arange(len(rows))):
            raise AlignmentError(f"{root}: {entry['url']}: {modality}.parquet sample_index values are not "
                                 f"0..{len(rows) - 1}")
        picked = np.concatenate([np.arange(first[r], first[r + 1]) for r in rows]) if len(rows) else np.zeros(0, int)
        start = np.concatenate([[0], np.cumsum(counts[rows])]).astype(np.int64)
        file = ShardFile(join(root, entry["url"]), entry["filesize"], entry["sha256"], offsets[rows].astype(np.int64),
                         start, tuple(names[i] for i in picked), member_offsets[picked].astype(np.int64),
                         member_sizes[picked].astype(np.int64),
                         _digests(digests, picked))
        keys = tuple(ids[r] for r in rows)
        problem = layout_problem(file, keys)
        if problem:
            raise ShardError(f"{where}: {entry['url']}: {problem}")
        out[entry["url"].rsplit("/", 1)[-1].removesuffix(".tar")] = (file, keys, available[rows].astype(bool),
                                                                     sample_sizes[rows].astype(np.int64))
    if by_shard:
        raise ShardError(f"{where}: rows of split {split} name shards the shard index does not list: "
                         f"{sorted(by_shard)[:5]}")
    return out


def _digests(digests: list | None, picked: np.ndarray) -> tuple[str, ...] | None:
    """Per-member sha256 of a shard; ``None`` unless every member has one (regions built before them)."""
    chosen = tuple(digests[i] for i in picked) if digests is not None else ()
    return chosen if chosen and all(d is not None for d in chosen) else None


def layout_problem(file: ShardFile, keys: Sequence[str]) -> str | None:
    """Why the indexed byte layout of a shard is impossible (overlapping or out-of-file members, sizes
    over the limits, a member list that is not ``<field>.npy``... then ``json``), or ``None``."""
    if len(set(keys)) != len(keys):
        return "a chip id appears twice"
    offsets, starts = file.offsets, file.member_start
    if len(offsets) and (offsets[0] < 0 or np.any(np.diff(offsets) <= 0)):
        return "sample offsets are not increasing"
    end_of_previous = 0
    for i, key in enumerate(keys):
        span = range(int(starts[i]), int(starts[i + 1]))
        names = [file.member_names[j] for j in span]
        if not names or names[-1] != "json" or len(names) > limits.MAX_MEMBERS_PER_SAMPLE or not all(
                isinstance(n, str) and limits.NPY_MEMBER.match(n) for n in names[:-1]) or len(set(names)) != len(names):
            return f"sample {i} ({key}): members {names[:8]!r:.200} are not <field>.npy ... json"
        if file.member_sha256 is not None and not all(
                isinstance(file.member_sha256[j], str) and limits.SHA256.match(file.member_sha256[j]) for j in span):
            return f"sample {i} ({key}): a member sha256 is not a digest"
        position = int(offsets[i])
        if position < end_of_previous:
            return f"sample {i} ({key}) starts at byte {position}, inside the previous sample"
        for j, name in zip(span, names):
            offset, size = int(file.member_offsets[j]), int(file.member_sizes[j])
            cap = limits.MAX_JSON_MEMBER_BYTES if name == "json" else limits.MAX_MEMBER_BYTES
            if size < 0 or size > cap:
                return f"sample {i} ({key}): member {name} of {size} bytes (limit {cap})"
            if offset - tarfile.BLOCKSIZE < position or offset % tarfile.BLOCKSIZE or offset + size > file.filesize:
                return f"sample {i} ({key}): member {name} at bytes {offset}..{offset + size} is outside its place"
            position = offset + size
        end_of_previous = position
    return None


def _template(root: str, modality: str, entries: list[dict], table: pa.Table) -> tuple[str, int, int] | None:
    """Location (url, offset, size) of the json member of the region's first chip having ``modality``."""
    available = np.flatnonzero(_numpy(table["available"]))
    if not len(available):
        return None
    rows = table.slice(int(available[0]), 1).to_pylist()
    sizes = {e["url"]: e["filesize"] for e in entries}
    member = next((m for m in rows[0]["members"] or [] if m and m["name"] == "json"), None)
    if (rows[0]["shard"] not in sizes or member is None or not 0 < member["size"] <= limits.MAX_JSON_MEMBER_BYTES
            or not 0 <= member["offset"] <= sizes[rows[0]["shard"]] - member["size"]):
        raise ShardError(f"{root}: metadata/{modality}.parquet: the json member of chip {rows[0]['chip_id']} "
                         f"is not inside a listed shard")
    return join(root, rows[0]["shard"]), member["offset"], member["size"]


def _align(region: str, per_modality: Mapping[str, dict], modalities: Sequence[str]) -> tuple[AlignedShard, ...]:
    """Join the modalities' shards by name, checking they hold the same chips in the same order;
    modalities the region lacks have no files and no available chip."""
    first, *others = list(per_modality)
    names = list(per_modality[first])
    for modality in others:
        if list(per_modality[modality]) != names:
            raise AlignmentError(f"{region}: {modality} has shards {list(per_modality[modality])}, "
                                 f"{first} has {names}")
    shards = []
    for name in names:
        keys = per_modality[first][name][1]
        for modality in others:
            other = per_modality[modality][name][1]
            if other != keys:
                at = next((i for i, (a, b) in enumerate(zip(keys, other)) if a != b), min(len(keys), len(other)))
                raise AlignmentError(f"{region}/{name}: sample {at} is {_at(keys, at)!r} in {first} "
                                     f"but {_at(other, at)!r} in {modality}")
        shards.append(AlignedShard(region, name, keys, {m: per_modality[m][name][0] for m in per_modality},
                                   {m: per_modality[m][name][2] if m in per_modality else np.zeros(len(keys), bool)
                                    for m in modalities},
                                   {m: per_modality[m][name][3] for m in per_modality}))
    return tuple(shards)


def _absent(exc: BaseException) -> bool:
    """Whether a metadata read failed because the file does not exist (locally, 404, fsspec)."""
    status = http_get.status_of(exc)
    if status is not None:
        return status == 404
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, FileNotFoundError)


def _at(keys: Sequence[str], position: int) -> str | None:
    return keys[position] if position < len(keys) else None
