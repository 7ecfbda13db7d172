"""``load``: one modality of a region repo through ``datasets.load_dataset``, decoded to model-ready tensors.

A thin layer: the result is the ``datasets`` object (``IterableDataset`` when streaming, ``Dataset``
otherwise) with a transform attached (``.map`` when streaming, ``.with_transform`` otherwise) that runs
``m3leo_hf.transforms.ModalityTransform`` (view_as, band selection, normalisation with the published
train statistics, ESA WorldCover class indices and multi-label presence, centre crop/pad) and returns
torch tensors. Everything else (``shuffle``, ``split_dataset_by_node``, ``take``, caching) is ``datasets``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import datasets
import numpy as np

from m3leo_hf.collate import to_torch
from m3leo_hf.stages import Stage
from m3leo_hf.transforms import DatePairs, ModalityTransform, Size

SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
META_COLUMNS = ("json", "__key__", "__url__")
NPY = ".npy"


def load(region_or_repo: str | os.PathLike, modality: str, split: str = "train", *, streaming: bool = True,
         normalize: bool = True, bands: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
         labels: bool = True, spatial_size: Size | None = None, available_only: bool = True, meta: bool = False,
         revision: str | None = None, datepairs: DatePairs | Mapping[str, Any] | bool | None = None,
         resize: Size | None = None, transform: Stage | Sequence[Stage] | None = None,
         **load_kwargs: Any) -> datasets.Dataset | datasets.IterableDataset:
    """``load_dataset(region_or_repo, modality, split=...)`` yielding ``{field: tensor, ..., "__key__": chip id}``.

    ``region_or_repo``: a built region folder (with its README.md card) or a Hub dataset repo id.
    ``split``: train, val/validation or test. ``normalize``: ``(x - mean) / std`` with the region's
    published train statistics (float32; nodata and NaN -> 0). ``bands``: band names to keep.
    ``labels``: ESA WorldCover -> ``label`` (int64 class index, 255 = ignore) and ``presence``
    (float32 multi-hot). ``spatial_size``: centre crop/pad the last two axes (needed to batch chips,
    whose sizes vary by a pixel or so). ``available_only``: drop chips without data for ``modality``
    (otherwise they come with ``None`` arrays). ``meta``: also return the sample's JSON as ``json``.
    ``datepairs`` (gunw): fixed-size date-pair selection by temporal baseline, as in ``stream()``
    (``True`` or ``{"fields", "windows", "rule"}``, see ``m3leo_hf.transforms.DatePairs``): each
    chosen field ``(n_windows, H, W)`` float32 plus ``pairs_available`` ``(n_windows,)`` bool.
    ``resize``: resample the last two axes (bilinear with antialias; class maps nearest). ``transform``:
    stages (``Chip -> Chip``, see ``m3leo_hf.stages``) run after the built-in ones.
    Other keyword arguments go to ``datasets.load_dataset``.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {sorted(SPLIT_NAMES)}, not {split!r}")
    source = os.fspath(region_or_repo)
    stats = _train_stats(source, modality, revision) if normalize else None
    transform = ModalityTransform(modality, stats=stats, bands=bands, normalize=normalize, labels=labels,
                                  spatial_size=spatial_size, resize=resize, datepairs=datepairs, transform=transform)
    ds = datasets.load_dataset(source, modality, split=SPLIT_NAMES[split], streaming=streaming,
                               revision=revision, **load_kwargs)
    if available_only:
        ds = ds.filter(lambda sample: sample["available"], input_columns="json")
    if streaming:
        decoder = _Decoder(transform, meta, _columns_reader(ds.features))
        return ds.map(decoder.example, remove_columns=list(ds.features))
    decoder = _Decoder(transform, meta, _RowReader(ds))
    return ds.with_transform(decoder.batch, columns=list(META_COLUMNS))


class _Decoder:
    """Arrays of a sample, transformed, as tensors; ``read(sample)`` gives the arrays of an available sample."""

    def __init__(self, transform: ModalityTransform, meta: bool, read: Callable[[dict], dict[str, np.ndarray]]):
        self.transform, self.meta, self.read = transform, meta, read

    def example(self, sample: dict) -> dict:
        sample_meta = sample["json"]
        out: dict[str, Any] = {}
        if sample_meta["available"]:
            out.update(to_torch(self.transform(self.read(sample), sample_meta["fields"], sample_meta.get("dates"),
                                               sample_meta.get("labels"), sample_meta.get("region"))))
        out["__key__"] = sample["__key__"]
        if self.meta:
            out["json"] = sample_meta
        return out

    def batch(self, batch: dict) -> dict:
        rows = [self.example({key: values[i] for key, values in batch.items()})
                for i in range(len(batch["__key__"]))]
        keys = dict.fromkeys(key for row in rows for key in row if key not in META_COLUMNS)
        keys.update(dict.fromkeys(key for key in META_COLUMNS if key in rows[0]))
        return {key: [row.get(key) for row in rows] for key in keys}


def _columns_reader(features: datasets.Features) -> Callable[[dict], dict[str, np.ndarray]]:
    """Streaming samples carry their arrays as (lists of) numpy arrays: restore the declared dtype."""
    dtypes = {name: _leaf_dtype(feature) for name, feature in features.items() if name.endswith(NPY)}

    def read(sample: dict) -> dict[str, np.ndarray]:
        return {name[: -len(NPY)]: np.asarray(sample[name], dtype=dtype) for name, dtype in dtypes.items()
                if sample.get(name) is not None}
    return read


class _RowReader:
    """Arrays of a prepared dataset's row by chip key, through its numpy format with stored dtypes: the
    python lists a ``with_transform`` function receives are several times slower to turn into arrays."""

    def __init__(self, ds: datasets.Dataset):
        columns = [name for name in ds.features if name.endswith(NPY)]
        self.rows = ds.with_format("numpy", columns=columns, dtype=None)
        self.position = {key: i for i, key in enumerate(ds["__key__"])}

    def __call__(self, sample: dict) -> dict[str, np.ndarray]:
        row = self.rows[self.position[sample["__key__"]]]
        return {name[: -len(NPY)]: value for name, value in row.items() if value is not None}


def _leaf_dtype(feature: Any) -> str:
    while not isinstance(feature, datasets.Value):
        feature = feature.feature
    return feature.dtype


def _train_stats(source: str, modality: str, revision: str | None) -> dict:
    """The ``train`` split statistics of ``metadata/<modality>.stats.json`` (local folder or Hub repo)."""
    name = f"metadata/{modality}.stats.json"
    local = Path(source) / name
    if local.is_file():
        path = local
    elif Path(source).is_dir():
        raise FileNotFoundError(f"{local}: missing; normalize=True needs the region's published statistics")
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, name, repo_type="dataset", revision=revision))
    stats = json.loads(path.read_text()).get("splits", {}).get("train")
    if not stats:
        raise ValueError(f"{source}: {name} has no train statistics; use normalize=False")
    return stats
