"""The sample a reader produces for one chip and modality, and the error it raises."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHIP_ID = re.compile(r"^[0-9a-f]{13}$")
DECLARED_EPSG = 4326
"""The CRS every M3LEO chip is declared in."""


class ChipError(Exception):
    """A chip file that cannot be turned into a sample: names the chip, the file and the defect."""

    def __init__(self, chip_id: str, source: str, reason: str):
        self.chip_id, self.source, self.reason = chip_id, source, reason
        super().__init__(f"chip {chip_id}: {source}: {reason}")


@dataclass
class ChipSample:
    """Named arrays of one chip in one modality plus JSON-able metadata."""

    chip_id: str
    modality: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def check_chip_id(chip_id: str, source: str = "") -> str:
    if not isinstance(chip_id, str) or not CHIP_ID.match(chip_id):
        raise ChipError(str(chip_id), source or "?", "chip id must be 13 lower-case hex characters")
    return chip_id


def field_name(name: str) -> str:
    """Lower-case WebDataset field name: letters, digits and '_' only (no dots)."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_")
    if not cleaned:
        raise ValueError(f"cannot make a field name from {name!r}")
    return cleaned


def jsonable(value: Any) -> Any:
    """Plain JSON types for numpy scalars/arrays, bytes and non-finite floats (as strings)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def nodata_mask(array: np.ndarray, nodata: Any) -> np.ndarray:
    """Boolean mask of missing values: NaN for floats, plus equality with ``nodata`` when given."""
    marks = nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata))
    if marks and isinstance(nodata, str):
        nodata = float(nodata)
    equal = (array == np.asarray(nodata).astype(array.dtype)) if marks else None
    if array.dtype.kind != "f":
        return equal if equal is not None else np.zeros(array.shape, dtype=bool)
    mask = np.isnan(array)
    return mask if equal is None else np.logical_or(mask, equal, out=mask)


def crs_mismatch(epsg: int | None, has_crs: bool) -> dict | None:
    """``{"declared", "found"}`` when a chip's CRS is not the declared EPSG:4326, else None."""
    if epsg == DECLARED_EPSG:
        return None
    found = f"EPSG:{epsg}" if epsg else ("a CRS without an EPSG code" if has_crs else "no CRS")
    return {"declared": f"EPSG:{DECLARED_EPSG}", "found": found}
