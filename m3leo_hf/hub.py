"""``load``: one modality of a region repo through ``datasets.load_dataset``, decoded to model-ready tensors.

A thin layer: the result is the ``datasets`` object (``IterableDataset`` when streaming, ``Dataset``
otherwise) with a transform attached (``.map`` when streaming, ``.with_transform`` otherwise) that runs
``m3leo_hf.transforms.ModalityTransform`` (view_as, band selection, normalisation with the published
train statistics, ESA WorldCover class indices and multi-label presence, centre crop/pad) and returns
torch tensors. Everything else (``shuffle``, ``split_dataset_by_node``, ``take``, caching) is ``datasets``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import datasets
import numpy as np

from builders.declarations import Modality
from m3leo_hf.collate import to_torch
from m3leo_hf.hub_select import selected_dataset
from m3leo_hf.planning import Equalize
from m3leo_hf.selection import Selection, Where
from m3leo_hf.limits import CHIP_ID, MAX_STATS_BYTES, MODALITY_NAME, FieldLimit, field_limits, stats_problems
from m3leo_hf.reader import ShardError, load_json, sample_info_problem
from m3leo_hf.stages import Stage
from m3leo_hf.transforms import DatePairs, ModalityTransform, Size

SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
META_COLUMNS = ("json", "__key__", "__url__")
NPY = ".npy"


def load(region_or_repo: str | os.PathLike, modality: str, split: str = "train", *, streaming: bool = True,
         normalize: bool = True, bands: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
         labels: bool = True, spatial_size: Size | None = None, available_only: bool = True, meta: bool = False,
         revision: str | None = None, datepairs: DatePairs | Mapping[str, Any] | bool | None = None,
         chips: Iterable[str] | None = None, where: Where | None = None, bbox: Sequence[float] | None = None,
         rank: int | None = None, world_size: int | None = None, equalize: Equalize | None = None,
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
    Selection (``chips`` ids, ``where`` expression or callable on ``metadata/chips.parquet``, ``bbox``
    (west, south, east, north); see ``m3leo_hf.selection``): only the selected samples are read, by byte
    range, and each rank (``rank``/``world_size``, default torch.distributed) gets an equal share of them
    (``equalize``: "drop" for train, "pad" otherwise; do not call ``split_dataset_by_node``); see
    ``m3leo_hf.hub_select``. ``resize``: resample the last two axes (bilinear with antialias; class maps
    nearest). ``transform``: stages (``Chip -> Chip``, see ``m3leo_hf.stages``) run after the built-in ones.
    Other keyword arguments go to ``datasets.load_dataset``.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {sorted(SPLIT_NAMES)}, not {split!r}")
    source = os.fspath(region_or_repo)
    name = _shard_folder(source, modality, revision)
    try:
        declared = Modality.from_json(_metadata_json(source, f"{name}.modality.json", revision))
    except (ValueError, TypeError) as exc:
        raise ShardError(f"{source}: metadata/{name}.modality.json: not a modality declaration: {exc}") from None
    stats = _train_stats(source, name, revision) if normalize else None
    transform = ModalityTransform(declared, stats=stats, bands=bands, normalize=normalize, labels=labels,
                                  spatial_size=spatial_size, resize=resize, datepairs=datepairs,
                                  transform=transform)
    selection = Selection.of(chips, where, bbox)
    if selection is None:
        ds = datasets.load_dataset(source, modality, split=SPLIT_NAMES[split], streaming=streaming,
                                   revision=revision, **load_kwargs)
    else:
        ds = selected_dataset(source, modality, split, selection, streaming=streaming, revision=revision,
                              available_only=available_only, rank=rank, world_size=world_size, equalize=equalize,
                              load_kwargs=load_kwargs)
    if available_only:
        ds = ds.filter(lambda sample: sample["available"], input_columns="json")
    if streaming:
        decoder = _Decoder(transform, meta, _columns_reader(ds.features))
        return ds.map(decoder.example, remove_columns=list(ds.features))
    decoder = _Decoder(transform, meta, _RowReader(ds))
    return ds.with_transform(decoder.batch, columns=list(META_COLUMNS))


class _Decoder:
    """Arrays of a sample, checked and transformed, as tensors; ``read(sample)`` gives the arrays of an
    available sample. The key must be a chip id, the json usable, and the arrays must be what the json
    says and within the limits of the modality (``m3leo_hf.limits``; the first available sample seen is
    the template) before the transform allocates from them."""

    def __init__(self, transform: ModalityTransform, meta: bool, read: Callable[[dict], dict[str, np.ndarray]]):
        self.transform, self.meta, self.read = transform, meta, read
        self.limits: dict[str, FieldLimit] | None = None

    def example(self, sample: dict) -> dict:
        sample_meta, key = sample["json"], sample["__key__"]
        where = f"{sample.get('__url__', 'sample')}: sample {key!r:.40}"
        if not isinstance(key, str) or not CHIP_ID.match(key):
            raise ShardError(f"{where}: the key is not a 13-hex chip id")
        problem = sample_info_problem(sample_meta, key)
        if problem:
            raise ShardError(f"{where}: json: {problem}")
        out: dict[str, Any] = {}
        if sample_meta.get("available"):
            arrays = self._checked(self.read(sample), sample_meta.get("fields") or {}, where)
            out.update(to_torch(self.transform(arrays, sample_meta["fields"], sample_meta.get("dates"),
                                               sample_meta.get("labels"), sample_meta.get("region"))))
        out["__key__"] = sample["__key__"]
        if self.meta:
            out["json"] = sample_meta
        return out

    def _checked(self, arrays: dict[str, np.ndarray], fields: Mapping, where: str) -> dict[str, np.ndarray]:
        if self.limits is None:
            spec = self.transform.modality
            self.limits = field_limits(spec.stored_dtype, len(spec.band_names), spec.variable_axis, fields)
        if sorted(arrays) != sorted(fields):
            raise ShardError(f"{where}: arrays {sorted(arrays)} but its json lists fields {sorted(fields)}")
        for name, array in arrays.items():
            if fields[name].get("shape") != list(array.shape):
                raise ShardError(f"{where}: field {name} is {list(array.shape)}, its json says {fields[name]['shape']}")
            limit = self.limits.get(name)
            problem = limit.problem(str(array.dtype), array.shape) if limit else None
            if problem:
                raise ShardError(f"{where}: field {name}: {problem}")
        return arrays

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


def _metadata_json(source: str, name: str, revision: str | None) -> Any:
    """``metadata/<name>`` of a local region folder or a Hub repo, parsed."""
    relative = f"metadata/{name}"
    local = Path(source) / relative
    if local.is_file():
        path = local
    elif Path(source).is_dir():
        raise FileNotFoundError(f"{local}: missing; is {source} a region built by this version?")
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, relative, repo_type="dataset", revision=revision))
    if path.stat().st_size > MAX_STATS_BYTES:
        raise ShardError(f"{source}: {relative}: larger than {MAX_STATS_BYTES} bytes")
    return load_json(path.read_bytes(), f"{source}: {relative}")


def _shard_folder(source: str, config: str, revision: str | None) -> str:
    """The shard folder (and metadata name) of config ``config``: itself, or the modality it is an alias of."""
    index = _metadata_json(source, "modalities.json", revision)
    modalities = index.get("modalities", {}) if isinstance(index, dict) else {}
    aliases = index.get("aliases", {}) if isinstance(index, dict) else {}
    if not isinstance(modalities, dict) or not isinstance(aliases, dict):
        raise ShardError(f"{source}: metadata/modalities.json: not a modalities index")
    if config in modalities:
        return config
    if config in aliases and isinstance(aliases[config], str) and MODALITY_NAME.match(aliases[config]):
        return aliases[config]
    raise KeyError(f"{source} has no modality {config!r}; it has {sorted(modalities)} and aliases {sorted(aliases)}")


def _train_stats(source: str, modality: str, revision: str | None) -> dict:
    """The ``train`` split statistics of ``metadata/<modality>.stats.json`` (local folder or Hub repo)."""
    name = f"metadata/{modality}.stats.json"
    published = _metadata_json(source, f"{modality}.stats.json", revision)
    stats = published.get("splits", {}).get("train") if isinstance(published, dict) else None
    if not stats:
        raise ValueError(f"{source}: {name} has no train statistics; use normalize=False")
    problems = stats_problems(stats)
    if problems:
        raise ShardError(f"{source}: {name}: refusing to normalise {modality}: {'; '.join(problems[:5])}")
    return stats
