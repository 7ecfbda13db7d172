"""GeoTIFF chips (GEE-style: one band description per band) to arrays + metadata, bit-exact."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile

from builders.chip import ChipError, ChipSample, jsonable
from builders.declarations import Modality

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_geotiff(modality: Modality, source: str | Path | bytes, chip_id: str, name: str) -> ChipSample:
    """Read a GeoTIFF chip given as a path or as the file's bytes; ``name`` labels errors."""
    data = source if isinstance(source, bytes) else _read_file(source, chip_id, name)
    if data[:4] not in TIFF_MAGICS:
        raise ChipError(chip_id, name, f"not a GeoTIFF ({len(data)} bytes, starts with {data[:8]!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(io.BytesIO(data)) as memfile, memfile.open() as dataset:
                array = dataset.read()
                meta = _metadata(dataset)
    except (RasterioError, ValueError, MemoryError) as exc:
        raise ChipError(chip_id, name, f"unreadable GeoTIFF: {exc}") from None
    _check(modality, array, meta, chip_id, name)
    field_meta = {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "dims": ["band", "y", "x"],
        "band_names": meta.pop("band_names"),
        "nodata": modality.nodata if meta["file_nodata"] is None else meta["file_nodata"],
        "units": modality.units,
    }
    meta["fields"] = {modality.field: field_meta}
    meta["dates"] = dict(modality.dates)
    return ChipSample(chip_id, modality.name, {modality.field: array}, jsonable(meta))


def _read_file(path: str | Path, chip_id: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ChipError(chip_id, name, f"cannot read file: {exc.strerror or exc}") from None


def _metadata(dataset: rasterio.io.DatasetReader) -> dict:
    crs = dataset.crs
    return {
        "band_names": [d or "" for d in dataset.descriptions],
        "file_nodata": dataset.nodata,
        "crs": crs.to_wkt() if crs else None,
        "epsg": crs.to_epsg() if crs else None,
        "transform": list(dataset.transform)[:6],
        "bounds": list(dataset.bounds),
        "attrs": {"tags": dataset.tags(), "band_tags": [dataset.tags(i) for i in dataset.indexes]},
    }


def _check(modality: Modality, array: np.ndarray, meta: dict, chip_id: str, name: str) -> None:
    if modality.dtype and str(array.dtype) != modality.dtype:
        raise ChipError(chip_id, name, f"dtype {array.dtype}, expected {modality.dtype} for {modality.name}")
    expected = list(modality.band_names)
    if expected and array.shape[0] != len(expected):
        raise ChipError(chip_id, name, f"{array.shape[0]} bands, expected {len(expected)} for {modality.name}")
    if min(array.shape[1:]) < 1:
        raise ChipError(chip_id, name, f"empty raster of shape {array.shape}")
    names = meta["band_names"]
    if expected and any(names) and names != expected:
        raise ChipError(chip_id, name, f"band names {names[:3]}... do not match {modality.name}: {expected[:3]}...")
    if expected and not any(names):
        meta["band_names"] = expected
