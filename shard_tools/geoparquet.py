"""GeoParquet 1.1 for per-chip tables: a WKB polygon ``geometry`` column, a ``bbox`` covering column and the
``geo`` file metadata (CRS EPSG:4326 as PROJJSON), so geopandas, DuckDB spatial, GDAL and QGIS read it.

Spec: https://geoparquet.org/releases/v1.1.0/ (coordinates are longitude, latitude).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Sequence

import pyarrow as pa

# EPSG:4326 as PROJJSON (the identifier makes PROJ resolve it to the full definition).
EPSG_4326 = {
    "$schema": "https://proj.org/schemas/v0.7/projjson.schema.json", "type": "GeographicCRS", "name": "WGS 84",
    "datum": {"type": "GeodeticReferenceFrame", "name": "World Geodetic System 1984",
              "ellipsoid": {"name": "WGS 84", "semi_major_axis": 6378137, "inverse_flattening": 298.257223563}},
    "coordinate_system": {"subtype": "ellipsoidal", "axis": [
        {"name": "Geodetic latitude", "abbreviation": "Lat", "direction": "north", "unit": "degree"},
        {"name": "Geodetic longitude", "abbreviation": "Lon", "direction": "east", "unit": "degree"}]},
    "id": {"authority": "EPSG", "code": 4326},
}
BBOX_TYPE = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()), ("ymax", pa.float64())])


def box_wkb(west: float, south: float, east: float, north: float) -> bytes | None:
    """ISO WKB (little endian) of the closed rectangle polygon, or None when a bound is missing."""
    if any(v is None or not math.isfinite(v) for v in (west, south, east, north)):
        return None
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def add_geometry(table: pa.Table, bounds: Sequence[tuple[float | None, ...]]) -> pa.Table:
    """``table`` with ``geometry`` (WKB rectangles of ``bounds`` = (west, south, east, north) per row) and
    ``bbox`` columns and GeoParquet ``geo`` schema metadata."""
    wkb = [box_wkb(*b) for b in bounds]
    boxes = [dict(zip(("xmin", "ymin", "xmax", "ymax"), b)) if w is not None else None for b, w in zip(bounds, wkb)]
    table = table.append_column("geometry", pa.array(wkb, pa.binary())).append_column("bbox", pa.array(boxes, BBOX_TYPE))
    present = [b for b, w in zip(bounds, wkb) if w is not None]
    column = {
        "encoding": "WKB", "geometry_types": ["Polygon"] if present else [], "crs": EPSG_4326,
        "covering": {"bbox": {key: ["bbox", key] for key in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if present:
        column["bbox"] = [min(b[0] for b in present), min(b[1] for b in present),
                          max(b[2] for b in present), max(b[3] for b in present)]
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), b"geo": json.dumps(geo).encode()})
