"""NetCDF4 chips (plain or grouped, e.g. GUNW) to arrays + metadata, bit-exact."""

from __future__ import annotations

import io
import math
from pathlib import Path

import h5netcdf
import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError

from builders.chip import DECLARED_EPSG, ChipError, ChipSample, crs_mismatch, field_name, jsonable
from builders.declarations import Modality
from builders.limits import ChipLimits, chip_limits, read_capped, too_large

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# What h5py / h5netcdf raise on damaged HDF5 structures (found by fuzzing sample chips)
DAMAGE = (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, OverflowError, IndexError)
SPATIAL_DIMS = {"x", "y", "lat", "lon", "latitude", "longitude"}


def read_netcdf(modality: Modality, source: str | Path | bytes, chip_id: str, name: str) -> ChipSample:
    """Read every variable of every group: numeric ones become fields, strings go to metadata.

    Every variable's shape and dtype are checked against ``chip_limits(modality)`` before its data are read.
    """
    limits = chip_limits(modality)
    data = source if isinstance(source, bytes) else _read_file(source, limits.max_file_bytes, chip_id, name)
    if len(data) > limits.max_file_bytes:
        raise ChipError(chip_id, name, too_large(len(data), limits.max_file_bytes))
    try:
        opened = h5netcdf.File(io.BytesIO(data), "r")
    except DAMAGE as exc:
        raise ChipError(chip_id, name, _describe_open_error(data, exc)) from None
    try:
        with opened as root:
            arrays, fields, labels, groups = _walk(root, limits, chip_id, name)
    except ChipError:
        raise
    except DAMAGE as exc:
        raise ChipError(chip_id, name, f"unreadable NetCDF content: {type(exc).__name__}: {exc}") from None
    if not any(len(meta["dims"]) >= 2 for meta in fields.values()):
        raise ChipError(chip_id, name, "no gridded variable found")
    meta = {
        "fields": fields,
        "labels": labels,
        "attrs": groups,
        "dates": _dates(modality, labels),
        **_georeference(arrays, fields, groups),
    }
    return ChipSample(chip_id, modality.name, arrays, jsonable(meta))


def _read_file(path: str | Path, max_bytes: int, chip_id: str, name: str) -> bytes:
    try:
        return read_capped(path, max_bytes)
    except FileNotFoundError:
        raise ChipError(chip_id, name, "file not found") from None
    except OSError as exc:
        raise ChipError(chip_id, name, f"cannot read file: {exc.strerror or exc}") from None


def _describe_open_error(data: bytes, exc: Exception) -> str:
    if data[:8] != HDF5_MAGIC:
        return f"not a NetCDF4/HDF5 file ({len(data)} bytes without an HDF5 signature)"
    return f"corrupt or truncated NetCDF4 file: {exc}"


def _walk(root: h5netcdf.File, limits: ChipLimits, chip_id: str, name: str) -> tuple[dict, dict, dict, dict]:
    arrays: dict[str, np.ndarray] = {}
    fields: dict[str, dict] = {}
    labels: dict[str, list] = {}
    groups: dict[str, dict] = {}
    budget = limits.max_decoded_bytes
    for group in _groups(root):
        groups[group.name] = dict(group.attrs)
        for var_name in sorted(group.variables):
            variable = group.variables[var_name]
            path = f"{group.name.rstrip('/')}/{var_name}"
            budget -= _check_variable(variable, path, limits, budget, chip_id, name)
            values = variable[...]
            if values.dtype.kind in "OSU":
                labels[path] = [v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(values)]
                continue
            key = _unique_field(field_name(var_name), group.name, fields)
            arrays[key] = np.asarray(values)
            fields[key] = {
                "variable": path,
                "dims": list(variable.dimensions),
                "dtype": str(values.dtype),
                "shape": list(values.shape),
                "attrs": dict(variable.attrs),
            }
            nodata = variable.attrs.get("_FillValue")
            if nodata is not None:
                fields[key]["nodata"] = np.asarray(nodata).item()
            elif values.dtype.kind == "f":
                fields[key]["nodata"] = float("nan")
    if not arrays:
        raise ChipError(chip_id, name, "NetCDF file holds no numeric variable")
    return arrays, fields, labels, groups


def _check_variable(variable: h5netcdf.Variable, path: str, limits: ChipLimits, budget: int, chip_id: str,
                    name: str) -> int:
    """Decoded bytes of ``variable`` from its metadata; refuse it when its shape or size exceeds the limits.

    The last two axes of a variable are spatial (at most ``max_side`` each), the others multiply to layers
    (at most ``max_layers``); a 1-D variable (coordinate or per-layer value) is bounded by the larger of the
    two, string variables by ``max_layers`` elements.
    """
    shape = tuple(int(n) for n in variable.shape)
    dtype = np.dtype(variable.dtype)
    what = f"variable {path} of shape {shape}"
    if len(shape) >= 2:
        if max(shape[-2:]) > limits.max_side:
            raise ChipError(chip_id, name, f"{what} exceeds the limit of {limits.max_side} pixels per side")
        if math.prod(shape[:-2]) > limits.max_layers:
            raise ChipError(chip_id, name, f"{what} has more than {limits.max_layers} layers")
    elif shape and shape[0] > max(limits.max_side, limits.max_layers):
        raise ChipError(chip_id, name, f"{what} is longer than {max(limits.max_side, limits.max_layers)}")
    if dtype.kind in "OSU" and math.prod(shape) > limits.max_layers:
        raise ChipError(chip_id, name, f"{what} holds more than {limits.max_layers} strings")
    size = math.prod(shape) * dtype.itemsize
    if size > budget:
        raise ChipError(chip_id, name, f"{what} ({dtype}) brings the decoded size past the limit of "
                                       f"{limits.max_decoded_bytes} bytes")
    return size


def _groups(group: h5netcdf.Group):
    yield group
    for child in sorted(group.groups):
        yield from _groups(group.groups[child])


def _unique_field(base: str, group_name: str, taken: dict) -> str:
    if base not in taken:
        return base
    prefixed = field_name(f"{group_name.strip('/').split('/')[-1]}_{base}")
    if prefixed in taken:
        raise ValueError(f"field name collision for {group_name}/{base}")
    return prefixed


def _dates(modality: Modality, labels: dict[str, list]) -> dict:
    dates = dict(modality.dates)
    for path, values in labels.items():
        if path.endswith("/datepair"):
            dates["datepairs"] = values
    return dates


def _georeference(arrays: dict[str, np.ndarray], fields: dict, groups: dict) -> dict:
    """CRS from grid-mapping attributes and the affine transform of the regular lon/lat grid."""
    xs = next((arrays[k] for k in ("x", "lon", "longitude") if k in arrays and arrays[k].ndim == 1), None)
    ys = next((arrays[k] for k in ("y", "lat", "latitude") if k in arrays and arrays[k].ndim == 1), None)
    crs = next(
        (f["attrs"].get("crs_wkt") or f["attrs"].get("spatial_ref") for f in fields.values()
         if f["attrs"].get("crs_wkt") or f["attrs"].get("spatial_ref")),
        None,
    )
    epsg = _epsg(crs)
    result: dict = {"crs": crs or f"EPSG:{DECLARED_EPSG}", "epsg": epsg}
    mismatch = crs_mismatch(epsg, True)
    if mismatch:
        result["crs_mismatch"] = mismatch
    if xs is not None and ys is not None and len(xs) > 1 and len(ys) > 1:
        dx, dy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
        west, north = float(xs[0]) - dx / 2, float(ys[0]) - dy / 2
        result["transform"] = [dx, 0.0, west, 0.0, dy, north]
        east, south = west + dx * len(xs), north + dy * len(ys)
        result["bounds"] = [min(west, east), min(south, north), max(west, east), max(south, north)]
    return result


def _epsg(crs: object) -> int | None:
    """EPSG code of a grid-mapping CRS attribute; a file without one is on the declared lon/lat grid."""
    if not crs:
        return DECLARED_EPSG
    try:
        return CRS.from_user_input(str(crs)).to_epsg()
    except (CRSError, ValueError, TypeError):
        return None
