"""Container readers, declared: ``register_reader(container, read, extension=..., isolated=...)``.

A reader is named by its import path (``"package.module:function"``) and imported on first use, so declaring
the built-in ones costs nothing and the read side of the project never imports rasterio or h5py. ``isolated``
readers run in a killable child process (libhdf5 can hang on damaged files; see ``builders.isolated``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from builders.chip import ChipError, ChipSample, check_chip_id
from builders.declarations import Modality


@dataclass(frozen=True)
class ContainerReader:
    """How chips of one container are read: ``read(modality, path | bytes, chip_id, name) -> ChipSample``."""

    container: str
    read: str
    extension: str
    isolated: bool = False

    def load(self) -> Callable[..., ChipSample]:
        module, _, function = self.read.partition(":")
        return getattr(importlib.import_module(module), function)


READERS: dict[str, ContainerReader] = {}


def register_reader(container: str, read: str | Callable, *, extension: str, isolated: bool = False) -> None:
    """Declare the reader of ``container`` files (``extension`` such as ``.tif``); a callable must be importable."""
    path = read if isinstance(read, str) else f"{read.__module__}:{read.__qualname__}"
    if not extension.startswith(".") or "/" in extension:
        raise ValueError(f"container {container!r}: extension {extension!r} must look like '.tif'")
    READERS[container] = ContainerReader(container, path, extension, isolated)


def reader_for(container: str) -> ContainerReader:
    try:
        return READERS[container]
    except KeyError:
        raise KeyError(f"no reader for container {container!r}; declared: {', '.join(sorted(READERS))} "
                       "(builders.read.register_reader adds one)") from None


register_reader("geotiff", "builders.geotiff:read_geotiff", extension=".tif")
register_reader("netcdf", "builders.netcdf:read_netcdf", extension=".nc", isolated=True)


def read_chip(modality: Modality, source: str | Path | bytes, chip_id: str, name: str | None = None,
              reader: ContainerReader | None = None) -> ChipSample:
    """Read one chip of ``modality`` from a path or raw bytes; raises ``ChipError`` naming chip and file.

    Arrays are returned as the shards store them: a declared ``store_as`` reinterprets the file's dtype.
    """
    label = name or (str(source) if not isinstance(source, bytes) else f"<{len(source)} bytes>")
    check_chip_id(chip_id, label)
    sample = (reader or reader_for(modality.container)).load()(modality, source, chip_id, label)
    return as_stored(modality, sample, label)


def as_stored(modality: Modality, sample: ChipSample, label: str) -> ChipSample:
    """Apply ``store_as`` (same bytes, e.g. uint16 holding wrapped int16 dB → int16) to the files' dtype."""
    if not modality.store_as:
        return sample
    target = np.dtype(modality.store_as)
    for name, array in sample.arrays.items():
        field = sample.meta["fields"][name]
        if str(array.dtype) != modality.dtype:
            continue
        if array.dtype.itemsize != target.itemsize:
            raise ChipError(sample.chip_id, label, f"store_as {target} does not fit {array.dtype} losslessly")
        sample.arrays[name] = array.view(target)
        field.update(dtype=str(target), source_dtype=str(array.dtype))
    return sample
