"""GeoTIFF chips (GEE-style: one band description per band) to arrays + metadata, bit-exact."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile

from builders.chip import ChipError, ChipSample, crs_mismatch, jsonable
from builders.declarations import Modality
from builders.limits import ChipLimits, chip_limits, read_capped, too_large

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_geotiff(modality: Modality, source: str | Path | bytes, chip_id: str, name: str) -> ChipSample:
    """Read a GeoTIFF chip given as a path or as the file's bytes; ``name`` labels errors.

    Band count, dtype and size are checked against ``chip_limits(modality)`` before the pixels are read.
    """
    limits = chip_limits(modality)
    data = source if isinstance(source, bytes) else _read_file(source, limits.max_file_bytes, chip_id, name)
    if len(data) > limits.max_file_bytes:
        raise ChipError(chip_id, name, too_large(len(data), limits.max_file_bytes))
    if data[:4] not in TIFF_MAGICS:
        raise ChipError(chip_id, name, f"not a GeoTIFF ({len(data)} bytes without a TIFF signature)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(io.BytesIO(data)) as memfile, memfile.open() as dataset:
                _check_layout(modality, limits, dataset, chip_id, name)
                array = dataset.read()
                meta = _metadata(dataset)
    except (RasterioError, ValueError, MemoryError) as exc:
        raise ChipError(chip_id, name, f"unreadable GeoTIFF: {exc}") from None
    _check_names(modality, meta, chip_id, name)
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
    mismatch = crs_mismatch(meta["epsg"], meta["crs"] is not None)
    if mismatch:
        meta["crs_mismatch"] = mismatch
    return ChipSample(chip_id, modality.name, {modality.field: array}, jsonable(meta))


def _read_file(path: str | Path, max_bytes: int, chip_id: str, name: str) -> bytes:
    try:
        return read_capped(path, max_bytes)
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


def _check_layout(modality: Modality, limits: ChipLimits, dataset: rasterio.io.DatasetReader, chip_id: str,
                  name: str) -> None:
    """Refuse, from the header alone, what the modality does not declare or what is too large to decode."""
    dtypes = set(dataset.dtypes)
    if len(dtypes) != 1:
        raise ChipError(chip_id, name, f"{dataset.count} bands of dtypes {sorted(dtypes)}: need one dtype")
    try:
        dtype = np.dtype(dtypes.pop())
    except TypeError:
        raise ChipError(chip_id, name, f"dtype {dataset.dtypes[0]} has no numpy equivalent") from None
    if modality.dtype and str(dtype) != modality.dtype:
        raise ChipError(chip_id, name, f"dtype {dtype}, expected {modality.dtype} for {modality.name}")
    expected = len(modality.band_names)
    if expected and dataset.count != expected:
        raise ChipError(chip_id, name, f"{dataset.count} bands, expected {expected} for {modality.name}")
    if dataset.count > limits.max_layers:
        raise ChipError(chip_id, name, f"{dataset.count} bands, more than the limit of {limits.max_layers}")
    height, width = dataset.height, dataset.width
    if min(height, width) < 1:
        raise ChipError(chip_id, name, f"empty raster of {height}x{width} pixels")
    if max(height, width) > limits.max_side:
        raise ChipError(chip_id, name, f"raster of {height}x{width} pixels exceeds the limit of {limits.max_side} "
                                       "per side")
    decoded = dataset.count * height * width * dtype.itemsize
    if decoded > limits.max_decoded_bytes:
        raise ChipError(chip_id, name, f"{decoded} decoded bytes exceed the limit of {limits.max_decoded_bytes}")


def _check_names(modality: Modality, meta: dict, chip_id: str, name: str) -> None:
    expected = list(modality.band_names)
    names = meta["band_names"]
    if expected and any(names) and names != expected:
        band = next(i for i, (found, wanted) in enumerate(zip(names, expected)) if found != wanted)
        raise ChipError(chip_id, name, f"band names do not match {modality.name}: band {band + 1} should be "
                                       f"{expected[band]!r}")
    if expected and not any(names):
        meta["band_names"] = expected
