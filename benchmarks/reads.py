"""Read cases: the user pipeline (join by chip, view_as, normalise, crop/pad, batch, torch) through
each reader, with ``workers`` DataLoader workers (persistent across passes when > 0).

A case is ``open_case(params) -> one_pass``: setup (indexes, file lists, loaders), where
``one_pass()`` iterates batches ``{"chip_id": [ids], "<modality>": tensor | {field: tensor}}``.
``params``: ``roots`` (built region folders), ``modalities``, ``split``, ``workers``, ``batch_size``,
``spatial_size``, ``stats`` (pooled train statistics), plus what the case needs (``chips``,
``datasets_mode``, ``peers`` = folders of the converted litdata / MDS copies).
"""

from __future__ import annotations

import importlib.machinery
import io
import json
import sys
import types
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from benchmarks.transform import UserTransform
from builders.registry import get_modality


def folder(modality: str) -> str:
    """The shard folder (and metadata name) of a config name or alias (``s1grd`` -> ``s1grd-2020``)."""
    return get_modality(modality).name

Pass = Callable[[], Iterator[dict]]


def shard_urls(params: dict, modality: str) -> list[str]:
    """The split's tar files of ``modality`` in every root: paths, or URLs under the remote ``roots`` (listed
    from ``local_roots``, the folders the server serves)."""
    local = params.get("local_roots", params["roots"])
    return [f"{root}/{folder(modality)}/{path.name}" for root, base in zip(params["roots"], local)
            for path in sorted(Path(base, folder(modality)).glob(f"{params['split']}-*.tar"))]


def _user_transform(params: dict) -> UserTransform:
    return UserTransform(params["modalities"], params["stats"], params["spatial_size"])


def _loader_options(params: dict) -> dict:
    """The DataLoader options every case uses: workers, persistent when there are any."""
    workers = params["workers"]
    return {"num_workers": workers, "persistent_workers": workers > 0}


def _batched(dataset, params: dict) -> Pass:
    """The stock way to batch: ``DataLoader(dataset, batch_size=...)`` (collated in the workers)."""
    loader = DataLoader(dataset, batch_size=params["batch_size"], **_loader_options(params))
    return lambda: iter(loader)


def ours(params: dict) -> Pass:
    """``m3leo_hf.stream(normalize=True, spatial_size=..., batch_size=...)`` + ``StatefulLoader``."""
    import m3leo_hf

    data = m3leo_hf.stream(params["roots"], modalities=params["modalities"], split=params["split"],
                           normalize=True, labels=True, spatial_size=params["spatial_size"],
                           batch_size=params["batch_size"], missing="skip", shuffle=False, drop_last=False)
    loader = m3leo_hf.StatefulLoader(data, **_loader_options(params))
    return lambda: iter(loader)


def ours_deferred(params: dict) -> Pass:
    """``stream(..., defer=True)`` + ``StatefulLoader``: workers ship the stored integers; the main process
    finishes each batch with ``normalize_on(stream, "cpu")`` (on a GPU machine: the device)."""
    import m3leo_hf

    data = m3leo_hf.stream(params["roots"], modalities=params["modalities"], split=params["split"],
                           normalize=True, labels=True, spatial_size=params["spatial_size"], defer=True,
                           batch_size=params["batch_size"], missing="skip", shuffle=False, drop_last=False)
    loader = m3leo_hf.StatefulLoader(data, **_loader_options(params))
    finish = m3leo_hf.normalize_on(data, "cpu")
    return lambda: (finish(batch) for batch in loader)


class _Contiguous(IterableDataset):
    """``items`` (a list) cut into equal contiguous parts, one per DataLoader worker, each mapped
    through ``read``."""

    def __init__(self, items: list, read: Callable):
        self.items, self.read = items, read

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        bounds = np.linspace(0, len(self.items), workers + 1).round().astype(int)
        for item in self.items[bounds[worker]:bounds[worker + 1]]:
            yield self.read(item)


def raw_limit(params: dict) -> Pass:
    """The floor: each sample's tar bytes (offsets from the published metadata) read into one
    uninitialised buffer, ``.npy`` payloads viewed with ``np.frombuffer``, the JSON member parsed,
    no tar parsing; then the same transform and the stock DataLoader batching. Workers get equal
    contiguous runs of samples."""
    transform = _user_transform(params)
    plan = limit_plan(params["roots"], params["modalities"], params["split"])

    def read(chip: tuple[str, dict]) -> dict:
        chip_id, rows = chip
        return transform(chip_id, {m: read_raw(path, row) for m, (path, row) in rows.items()})

    return _batched(_Contiguous(plan, read), params)


def webdataset_zip(params: dict) -> Pass:
    """Stock webdataset: one ``WebDataset(urls).decode()`` per modality (its default split by
    worker), zipped by position and checked by key, then the transform and DataLoader batching."""
    import webdataset as wds

    modalities, transform = params["modalities"], _user_transform(params)
    urls = {m: shard_urls(params, m) for m in modalities}

    class Zipped(IterableDataset):
        def __iter__(self) -> Iterator[dict]:
            pipes = [wds.WebDataset(urls[m], shardshuffle=False, empty_check=False).decode() for m in modalities]
            for samples in zip(*pipes):
                keys = {s["__key__"] for s in samples}
                if len(keys) != 1:
                    raise RuntimeError(f"webdataset: modalities out of step: {sorted(keys)}")
                infos = [s["json"] for s in samples]
                if not all(info["available"] for info in infos):
                    continue
                raw = {m: ({f: s[f"{f}.npy"] for f in info["fields"]}, info["fields"])
                       for m, s, info in zip(modalities, samples, infos)}
                yield transform(keys.pop(), raw)

    return _batched(Zipped(), params)


def stock_datasets(params: dict) -> Pass:
    """Stock ``datasets`` streaming (``load_dataset(region_dir, modality)`` through the README card,
    or the ``webdataset`` builder over the tars), regions concatenated, modalities zipped by
    position; in DataLoader workers ``datasets`` splits both by shard itself."""
    from datasets import concatenate_datasets, load_dataset

    modalities, split, transform = params["modalities"], params["split"], _user_transform(params)

    def load(root: str, modality: str):
        if params["datasets_mode"] == "card":
            return load_dataset(root, modality, split=split, streaming=True)
        return load_dataset("webdataset", data_files={split: shard_urls({**params, "roots": [root]}, modality)},
                            split=split, streaming=True)

    per_modality = [concatenate_datasets([load(root, m) for root in params["roots"]]).with_format("numpy")
                    for m in modalities]

    class Zipped(IterableDataset):
        def __iter__(self) -> Iterator[dict]:
            for samples in zip(*per_modality):
                keys = {str(s["__key__"]) for s in samples}
                if len(keys) != 1:
                    raise RuntimeError(f"stock datasets: modalities out of step: {sorted(keys)}")
                infos = [_plain(s["json"]) for s in samples]  # the numpy format gives JSON lists as arrays
                if not all(info["available"] for info in infos):
                    continue
                raw = {m: ({f: np.asarray(s[f"{f}.npy"], dtype=meta["dtype"]) for f, meta in info["fields"].items()},
                           info["fields"]) for m, s, info in zip(modalities, samples, infos)}
                yield transform(keys.pop(), raw)

    return _batched(Zipped(), params)


def _plain(value):
    """JSON as Python values: numpy arrays and scalars (``with_format("numpy")``) become lists and numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


class _PerFile(Dataset):
    """TorchGeo style: a map-style dataset opening each chip's files with rasterio / h5netcdf."""

    def __init__(self, chips: list[dict], transform: UserTransform):
        self.chips, self.transform = chips, transform

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> dict:
        import rasterio

        from builders.read import read_chip
        from builders.registry import get_modality

        chip = self.chips[index]
        raw = {}
        for name, path in chip["files"].items():
            fields = chip["fields"][name]
            declared = get_modality(name)
            if declared.container == "geotiff":
                with rasterio.open(path) as dataset:  # the files' wrapped uint16 read as the int16 they hold
                    data = dataset.read()
                raw[name] = ({declared.field: data.view(declared.store_as) if declared.store_as else data}, fields)
            else:
                raw[name] = (read_chip(get_modality(name), Path(path).read_bytes(), chip["chip_id"]).arrays, fields)
        return self.transform(chip["chip_id"], raw)


def per_file(params: dict) -> Pass:
    """One rasterio / h5netcdf open per chip file (TorchGeo style), stock DataLoader batching; the
    nodata / band metadata the transform needs come from the built metadata, as a GeoDataset's would."""
    return _batched(_PerFile(params["chips"], _user_transform(params)), params)


def litdata_case(params: dict) -> Pass:
    """litdata: ``StreamingDataset`` over the copy ``litdata.optimize`` wrote (same raw chips), the
    transform in ``__getitem__``, ``StreamingDataLoader`` batching."""
    from litdata import StreamingDataLoader, StreamingDataset

    modalities, transform = params["modalities"], _user_transform(params)

    class Transformed(StreamingDataset):
        def __getitem__(self, index):
            return transform_record(super().__getitem__(index), modalities, transform)

    data = Transformed(params["peers"]["litdata"], shuffle=False)
    loader = StreamingDataLoader(data, batch_size=params["batch_size"], **_loader_options(params))
    return lambda: iter(loader)


def mds_case(params: dict) -> Pass:
    """MosaicML streaming: ``StreamingDataset`` over the ``MDSWriter`` copy (same raw chips), the
    transform in ``__getitem__``, DataLoader batching."""
    modalities, transform = params["modalities"], _user_transform(params)  # imports datasets first
    streaming = import_streaming()
    streaming.base.util.clean_stale_shared_memory()

    class Transformed(streaming.StreamingDataset):
        def __getitem__(self, index):
            return transform_record(super().__getitem__(index), modalities, transform)

    data = Transformed(local=params["peers"]["mds"], shuffle=False, batch_size=params["batch_size"])
    return _batched(data, params)


def transform_record(record: dict, modalities: list[str], transform: UserTransform) -> dict:
    """A peer's stored record (``chip_id``, ``fields`` JSON, one array per ``<modality>__<field>``)
    through the transform."""
    fields = json.loads(record["fields"])
    raw = {m: ({f: record[f"{m}__{f}"] for f in fields[m]}, fields[m]) for m in modalities}
    return transform(str(record["chip_id"]), raw)


def import_streaming() -> types.ModuleType:
    """``import streaming``. PyPI's torchvision is built for CUDA torch: next to a CPU-only torch its
    operators fail to load, and ``streaming/__init__`` imports ``streaming.vision``, which imports
    torchvision. Only ``streaming.vision`` (unused here) needs it, so then a stand-in of the two names
    it imports is put in its place."""
    try:
        import streaming
        return streaming
    except (RuntimeError, OSError, ImportError):
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith(("torchvision.", "streaming"))]:
            del sys.modules[name]
    stand_in = types.ModuleType("torchvision")
    stand_in.datasets = types.ModuleType("torchvision.datasets")
    stand_in.datasets.VisionDataset = Dataset
    stand_in.transforms = types.ModuleType("torchvision.transforms")
    stand_in.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    stand_in.transforms.functional.to_tensor = None
    for module in (stand_in, stand_in.datasets, stand_in.transforms, stand_in.transforms.functional):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
        sys.modules[module.__name__] = module
    import streaming
    return streaming


READ_CASES: dict[str, Callable[[dict], Pass]] = {
    "ours": ours, "ours_deferred": ours_deferred, "raw_limit": raw_limit, "webdataset": webdataset_zip, "litdata": litdata_case,
    "mds": mds_case, "datasets": stock_datasets, "per_file": per_file,
}


def read_raw(path: str, row: dict) -> tuple[dict[str, np.ndarray], dict]:
    """One sample's arrays (viewed in one buffer) and its JSON ``fields``, by metadata offsets."""
    buffer = np.empty(row["size"], dtype=np.uint8)  # not zero-filled, unlike bytearray
    with open(path, "rb", buffering=0) as handle:
        handle.seek(row["offset"])
        handle.readinto(buffer)
    arrays, fields = {}, {}
    for member in row["members"]:
        start = member["offset"] - row["offset"]
        if member["name"].endswith(".npy"):
            arrays[member["name"][:-4]] = npy_view(buffer, start)
        elif member["name"] == "json":
            fields = json.loads(buffer[start:start + member["size"]].tobytes())["fields"]
    return arrays, fields


def npy_view(buffer: np.ndarray, start: int) -> np.ndarray:
    """The array of the version 1/2 ``.npy`` file starting at ``buffer[start]``, viewed in place."""
    width = 2 if buffer[start + 6] == 1 else 4
    end = start + 8 + width + int.from_bytes(buffer[start + 8:start + 8 + width].tobytes(), "little")
    head = io.BytesIO(buffer[start:end].tobytes())
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shape, fortran, dtype = read_header[np.lib.format.read_magic(head)](head)
    array = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape)), offset=end)
    return array.reshape(shape, order="F" if fortran else "C")


def limit_plan(roots: list[str], modalities: list[str], split: str) -> list[tuple[str, dict]]:
    """``[(chip_id, {modality: (tar path, metadata row)})]`` of the split's chips available in every
    modality, in region, shard and sample order."""
    plan = []
    for root in roots:
        tables = {}
        for name in modalities:
            table = pq.read_table(Path(root, "metadata", f"{folder(name)}.parquet"),
                                  columns=["chip_id", "split", "shard", "sample_index", "offset", "size",
                                           "members", "available"]).to_pylist()
            rows = [r for r in table if r["split"] == split]
            tables[name] = sorted(rows, key=lambda r: (r["shard"], r["sample_index"]))
        for rows in zip(*(tables[m] for m in modalities)):
            if len({r["chip_id"] for r in rows}) != 1:
                raise RuntimeError(f"{root}: modalities not aligned at {[r['chip_id'] for r in rows]}")
            if all(r["available"] for r in rows):
                plan.append((rows[0]["chip_id"], {m: (str(Path(root, r["shard"])), r) for m, r in zip(modalities, rows)}))
    return plan


def chip_fields(roots: list[str], modalities: list[str], split: str) -> dict[str, dict]:
    """``{chip_id: {modality: fields}}``: the JSON ``fields`` (dtype, band names, nodata, view_as) of
    each chip, the metadata a per-file reader takes from the file headers."""
    return {chip_id: {m: read_raw(path, row)[1] for m, (path, row) in rows.items()}
            for chip_id, rows in limit_plan(roots, modalities, split)}
