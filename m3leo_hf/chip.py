"""``get_chip``: one chip by id, reading only its samples' byte ranges and the per-modality metadata that
locates them (``metadata/<modality>.parquet``; ``metadata/chips.parquet`` too when no modality is named, and
``metadata/modalities.json`` when a name is an alias such as ``s1grd`` for ``s1grd-2020``)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from builders.chip import CHIP_ID
from m3leo_hf.index import config_names
from m3leo_hf.limits import MAX_PARQUET_BYTES
from m3leo_hf.ranged import read_runs
from m3leo_hf.reader import decode, join, read_bytes
from m3leo_hf.selection import chips as chips_table

LOCATION = ["chip_id", "split", "shard", "sample_index", "offset", "size"]


def get_chip(root: str, chip_id: str, modalities: Sequence[str] | None = None, *, retries: int = 3,
             storage_options: Mapping | None = None) -> dict:
    """Chip ``chip_id`` of region ``root`` (local folder, ``https://…/resolve/<rev>``, ``hf://datasets/…``):
    ``{"chip_id", "region", "split", "<modality>": {field: array} | None, "<modality>_available", "meta":
    {modality: sample json}}`` for ``modalities`` (config names or their aliases, keyed as given; default: every
    modality built for the region). A single-array modality (GeoTIFF: ``s1grd-2020``) gives its array.

    Arrays are exactly the stored ones (dtype included; ``meta[m]["fields"][f]["view_as"]`` says how to
    reinterpret, if anything); a chip lacking a modality gives ``None`` and the reason in its meta. A modality
    the region does not have, or an id the region does not hold, is a ``KeyError``.
    """
    if not isinstance(chip_id, str) or not CHIP_ID.match(chip_id):
        raise ValueError(f"chip id must be 13 lower-case hex characters, not {chip_id!r}")
    if modalities is None:
        names = chips_table(root, retries=retries, storage_options=storage_options).column_names
        modalities = [name.removeprefix("has_") for name in names if name.startswith("has_")]
    out: dict = {"chip_id": chip_id, "meta": {}}
    for modality in modalities:
        row = _location(root, modality, chip_id, retries, storage_options)
        url = join(root, row["shard"])
        ((_, raw),) = read_runs(url, [chip_id], [0], np.array([row["offset"]]), np.array([row["size"]]),
                                retries=retries, storage_options=storage_options)
        arrays, info = decode(raw, url)
        available = bool(info.get("available", bool(arrays)))
        out.setdefault("region", info.get("region"))
        out.setdefault("split", info.get("split", row["split"]))
        out[modality] = (next(iter(arrays.values())) if len(arrays) == 1 else arrays) if available else None
        out[f"{modality}_available"] = available
        out["meta"][modality] = info
    return out


def _location(root: str, modality: str, chip_id: str, retries: int, storage_options: Mapping | None) -> dict:
    """The chip's row (shard, sample index, byte offset and size) in ``metadata/<modality>.parquet``, or in
    that of the config ``modality`` is an alias of (``metadata/modalities.json``)."""
    def fetch(name: str, limit: int = MAX_PARQUET_BYTES) -> bytes:
        try:
            return read_bytes(join(root, f"metadata/{name}"), retries=retries, storage_options=storage_options,
                              limit=limit)
        except OSError as exc:
            raise FileNotFoundError(f"{root}: cannot read metadata/{name}: {exc}") from exc

    try:
        data, name = fetch(f"{modality}.parquet"), modality
    except FileNotFoundError as exc:
        name = config_names(root, fetch).get(modality, modality)
        if name == modality:
            raise KeyError(f"{root}: no metadata/{modality}.parquet ({exc.__cause__}); is {modality!r} built for "
                           "this region?") from None
        data = fetch(f"{name}.parquet")
    path = join(root, f"metadata/{name}.parquet")
    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read(columns=LOCATION)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: unreadable per-chip metadata: {exc}") from None
    ids = table["chip_id"].to_pylist()
    rows = table.take(np.flatnonzero(np.array(ids, dtype=object) == chip_id)).to_pylist() if chip_id in ids else []
    if not rows:
        raise KeyError(f"{root}: chip {chip_id} is not in {name}.parquet")
    if len(rows) > 1:
        raise ValueError(f"{path}: chip {chip_id} has {len(rows)} rows")
    row = rows[0]
    if not isinstance(row["offset"], int) or not isinstance(row["size"], int) or row["offset"] < 0 or row["size"] <= 0:
        raise ValueError(f"{path}: chip {chip_id}: invalid byte range offset={row['offset']} size={row['size']}")
    return row

