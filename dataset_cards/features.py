"""The ``datasets`` feature types of a modality's WebDataset columns, declared so nothing is inferred.

Columns: ``<field>.npy`` as nested ``List`` of the field's dtype (one level per dimension: chip shapes
vary, e.g. 447-449 px GEE rasters, GUNW date pairs), ``json`` as ``Json()``, ``__key__``, ``__url__``.
A sample without data for the modality (json member only) gets ``None`` in every ``.npy`` column.
"""

from __future__ import annotations

from datasets import DatasetInfo, Features, Json, List, SplitDict, SplitInfo, Value

from dataset_cards.summary import ModalitySummary

NUMERIC = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64"}
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def column(field: str) -> str:
    """The WebDataset column holding ``field``: the member's extension after the chip id."""
    return f"{field}.npy"


def modality_features(summary: ModalitySummary) -> Features:
    columns = {}
    for field in summary.fields:
        if field.dtype not in NUMERIC:
            raise ValueError(f"{summary.name}.{field.name}: dtype {field.dtype} has no datasets Value type")
        feature = Value(field.dtype)
        for _ in range(field.ndim):
            feature = List(feature)
        columns[column(field.name)] = feature
    return Features({**columns, "json": Json(), "__key__": Value("string"), "__url__": Value("string")})


def dataset_info(summary: ModalitySummary) -> DatasetInfo:
    """Declared features plus split sizes (``num_examples`` is checked by ``datasets`` when preparing;
    byte sizes are those of the tar shards, whose ``.npy`` members are stored uncompressed)."""
    splits = SplitDict()
    for split, count in summary.chips.items():
        shard_bytes = sum(s.filesize for s in summary.split_shards(split))
        splits.add(SplitInfo(HF_SPLITS[split], num_bytes=shard_bytes, num_examples=count))
    size = sum(s.filesize for s in summary.shards)
    return DatasetInfo(features=modality_features(summary), splits=splits, download_size=size,
                       dataset_size=size, config_name=summary.name)


def dataset_info_yaml(summary: ModalitySummary) -> dict:
    """The config's ``dataset_info`` entry of the card's YAML, serialised by ``datasets`` itself."""
    entry = dataset_info(summary)._to_yaml_dict()
    return {"config_name": entry.pop("config_name"), **entry}
