"""``m3leo-shard declare``: draft a modality declaration from a dataset folder, to review and pass to ``--modalities``.

GeoTIFF folders give band count, band descriptions, dtype, nodata and raster size; NetCDF folders their
variables, dimensions and attributes (as a comment: the reader keeps every variable). The folder name gives
the family pattern (``lcci-2020`` → ``lcci-{year}``). The draft builds as it is; descriptions and units are
for the reviewer to fill in.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml

from builders.declarations import config_name
from builders.read import READERS

PATTERNS = ((re.compile(r"^(?P<base>.+)-(?P<year>\d{4})$"), "{year}", "year"),
            (re.compile(r"^(?P<base>.+)-(?P<month>\d{4}-\d{2})$"), "{month}", "month"))
NOMINAL_PIXELS = 448


def declare_folder(folder: Path, *, samples: int = 3) -> str:
    """YAML text of a one-family declarations file for the chips in ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    by_extension = {reader.extension: reader.container for reader in READERS.values()}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in by_extension)
    if not files:
        raise ValueError(f"{folder}: no chip files ({', '.join(sorted(by_extension))})")
    container = by_extension[files[0].suffix]
    key, name, folders, dates = _naming(folder.name)
    spec: dict = {"name": name, "folders": folders, "container": container,
                  "description": f"TODO: describe {folder.name}"}
    observed = _geotiff(files[:samples]) if container == "geotiff" else _netcdf(files[:samples])
    comment = observed.pop("comment")
    spec.update(observed)
    if dates:
        spec["dates"] = dates
    text = (f"# Draft declaration of {folder.name} from {min(samples, len(files))} of {len(files)} chip files.\n"
            f"# {comment}\n# Review description/units/nodata, then: m3leo-shard build --modalities THIS_FILE ...\n"
            + yaml.safe_dump({"version": 1, "families": {key: spec}}, sort_keys=False, width=110))
    return text


def _naming(folder: str) -> tuple[str, str, list[str], str | None]:
    for pattern, placeholder, rule in PATTERNS:
        found = pattern.match(folder)
        if found:
            base = found.group("base")
            return _key(base), f"{config_name(base)}-{placeholder}", [f"{base}-{placeholder}"], rule
    return _key(folder), config_name(folder), [folder], None


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "product"


def _geotiff(files: list[Path]) -> dict:
    import rasterio

    profiles = []
    for path in files:
        with rasterio.open(path) as dataset:
            profiles.append((dataset.count, dataset.dtypes[0], tuple(d or "" for d in dataset.descriptions),
                             dataset.nodata, dataset.height, dataset.width))
    counts, dtypes, names = {p[0] for p in profiles}, {p[1] for p in profiles}, {p[2] for p in profiles}
    spec: dict = {"field": _key(files[0].parent.name.split("-")[0])}
    if len(dtypes) == 1:
        spec["dtype"] = dtypes.pop()
    band_names = next(iter(names))
    if len(names) == 1 and all(band_names):
        spec["bands"] = list(band_names)
    nodata = profiles[0][3]
    if nodata is not None and not np.isnan(nodata):
        spec["nodata"] = int(nodata) if float(nodata).is_integer() else float(nodata)
    itemsize = np.dtype(profiles[0][1]).itemsize
    spec["nominal_mb"] = round(max(counts) * itemsize * NOMINAL_PIXELS ** 2 / 1e6, 3)
    shapes = sorted({(p[4], p[5]) for p in profiles})
    spec["comment"] = (f"GeoTIFF: {sorted(counts)} band(s), dtype {sorted({p[1] for p in profiles})}, "
                       f"rasters {shapes}, nodata {nodata}")
    return spec


def _netcdf(files: list[Path]) -> dict:
    import h5netcdf

    variables: dict[str, tuple] = {}
    decoded = 0
    for path in files:
        with h5netcdf.File(path, "r") as nc:
            size = 0
            for group in _groups(nc):
                for name, variable in group.variables.items():
                    variables.setdefault(f"{group.name.rstrip('/')}/{name}", (variable.dimensions, str(variable.dtype)))
                    size += int(np.prod(variable.shape)) * variable.dtype.itemsize
            decoded = max(decoded, size)
    floats = any(np.dtype(dtype).kind == "f" for _, dtype in variables.values() if dtype not in ("object", "str"))
    spec: dict = {"nominal_mb": round(decoded / 1e6, 3)}
    if floats:
        spec["nodata"] = float("nan")
    listed = "; ".join(f"{path} {list(dims)} {dtype}" for path, (dims, dtype) in sorted(variables.items()))
    spec["comment"] = f"NetCDF variables: {listed}"
    return spec


def _groups(group):
    yield group
    for child in group.groups.values():
        yield from _groups(child)
