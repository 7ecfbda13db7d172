"""Embedded, deterministic generator of a small but realistic M3LEO processed-chip tree.

``write_sample`` writes the tree of docs/design.md §1 (no download): per AOI a geojson, a split CSV and one
file per chip and modality, with the real containers, dtypes, band names, NetCDF layouts and the oddities
of the real data (wrapped negative dB, all-zero orbits, cloudy months, partial edge chips, absent files,
``.skipped`` markers, a stray file outside the split CSV, no GUNW in Europe).
``write_release_parquet`` packs such a tree like the current Hub release (spec §3.2).

Every value derives from ``seed`` through ``numpy.random.default_rng`` seeded with SHA-256 digests of the
AOI, chip id and modality (never Python's ``hash``), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import h5netcdf
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.transform import Affine

from builders.registry import SEASONS, get_modality, modality_for_folder

SIDE_M = 4480.0
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0  # at the equator; scaled by cos(lat)
LATENT = 17  # control points per side of the latent landscape fields
SPLIT_CYCLE = ("train", "train", "train", "test", "val")  # geetiles stripe order for 60-20-20
GSSIC_SEASONS = ("summer", "fall", "winter", "spring")  # file order
GUNW_WINDOW = (dt.date(2020, 1, 1), dt.date(2020, 3, 31))
WAVELENGTH_M = 0.05546576
MODIFICATION_TIME = np.datetime64("2024-11-20T10:00:00", "ns")
PLACEHOLDER = bytes(48)
WKT_4326 = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],'
    'AUTHORITY["EPSG","4326"]]'
)
RELEASE_SCHEMA = pa.schema([
    ("path", pa.string()), ("modificationTime", pa.timestamp("ns")), ("length", pa.int64()),
    ("content", pa.binary()), ("aoi", pa.string()), ("ds", pa.string()),
])
MODALITY_ORDER = ("s1grd", "s2rgbm", "gssic", "gunw", "esaworldcover", "ghsbuilts", "biomass", "modis", "srtmdem")


# --------------------------------------------------------------------------------------------- AOIs

@dataclass(frozen=True)
class Aoi:
    """One M3LEO AOI: real stem and split suffix (spec §1.3) plus where and what the sample grid shows."""

    key: str
    stem: str
    split_suffix: str
    lon: float  # south-west corner of the sample grid
    lat: float
    cover: dict[int, float]  # ESA WorldCover code -> landscape share
    elevation: tuple[float, float]  # lowest (water, plains) and typical high ground, metres
    cloudy_months: tuple[int, ...]  # months that may lack a cloud-free Sentinel-2 scene
    orbit_gap: str  # season_direction without S1 coverage in the eastern half of the grid
    has_gunw: bool = True

    @property
    def splits_name(self) -> str:
        return f"{self.stem}{self.split_suffix}"


AOIS: dict[str, Aoi] = {a.key: a for a in (
    Aoi("china", "china_partitions_aschips_23489d30a312b", "_splits_60bands_angle15_60-20-20.csv",
        121.20, 31.05, {50: .4, 40: .3, 80: .15, 10: .1, 30: .05}, (-2.0, 12.0), (1, 2, 6), "fall_asc"),
    Aoi("conus", "conus_partitions_aschips_293d95e3ee589", "_splits_60bands_angle09_60-20-20.csv",
        -71.10, 42.30, {10: .35, 50: .3, 80: .15, 30: .1, 40: .05, 90: .05}, (-4.0, 120.0), (1, 2, 12),
        "winter_asc"),
    Aoi("europe", "europe_partitions_aschips_2f8bd3f01ddd5", "_splits_60bands_angle09_60-20-20.csv",
        4.40, 51.95, {40: .4, 30: .25, 50: .15, 80: .1, 10: .05, 90: .05}, (-6.0, 3.0), (1, 11, 12),
        "spring_des", has_gunw=False),
    Aoi("middleeast", "middleeast_partitions_aschips_0a596e5469add", "_splits_60bands_angle15_60-20-20.csv",
        35.30, 31.35, {60: .55, 20: .2, 80: .2, 50: .05}, (-434.0, 90.0), (1, 2), "winter_des"),
    Aoi("pakin", "pakin_partitions_aschips_0f26dc7030c75", "_splits_60bands_angle15_60-20-20.csv",
        67.95, 24.75, {40: .35, 60: .2, 20: .15, 80: .1, 95: .1, 50: .05, 90: .05}, (-3.0, 20.0), (1, 7, 8),
        "summer_asc"),
    Aoi("southamerica", "southamerica_partitions_aschips_3219aa0f411c2", "_splits_60bands_angle02_60-20-20.csv",
        -68.75, -16.30, {30: .35, 60: .3, 80: .15, 20: .1, 70: .05, 100: .05}, (3810.0, 4300.0), (1, 2),
        "spring_asc"),
)}


@dataclass(frozen=True)
class Look:
    """How one land-cover class appears in each product."""

    vv_db: float  # S1 VV backscatter, dB
    vh_gap: float  # VV - VH, dB
    s1_seasonal: float  # seasonal VV swing, dB
    dormant: tuple[int, int, int]  # S2 uint8 RGB out of season
    peak: tuple[int, int, int]  # S2 uint8 RGB at the growing-season peak
    tree_pct: float  # MODIS percent tree cover
    agb: float  # above-ground biomass, Mg/ha
    rho: float  # long-term coherence (GSSIC decay model)
    tau: float  # coherence decay time, days
    built_m2: float  # GHS built-up surface per 100 m cell


LOOKS: dict[int, Look] = {
    10: Look(-7.5, 6.0, 0.5, (30, 38, 28), (22, 45, 20), 70, 160, .08, 8, 0),
    20: Look(-10.0, 7.0, 0.8, (70, 65, 50), (55, 65, 40), 15, 25, .15, 15, 0),
    30: Look(-11.0, 7.5, 1.0, (85, 80, 60), (50, 80, 35), 4, 6, .18, 18, 0),
    40: Look(-9.5, 7.0, 2.0, (100, 85, 65), (45, 90, 30), 2, 5, .15, 20, 0),
    50: Look(-1.0, 8.0, 0.2, (115, 110, 105), (115, 110, 105), 8, 8, .60, 120, 4500),
    60: Look(-14.0, 9.0, 0.3, (150, 130, 105), (150, 130, 105), 0, 1, .50, 60, 0),
    70: Look(-12.0, 6.0, 1.5, (235, 238, 245), (235, 238, 245), 0, 0, .20, 10, 0),
    80: Look(-19.0, 6.0, 0.5, (18, 28, 38), (18, 28, 38), 0, 0, .03, 2, 0),
    90: Look(-13.0, 7.0, 1.0, (50, 60, 45), (35, 60, 35), 10, 15, .10, 10, 0),
    95: Look(-7.0, 6.0, 0.3, (25, 45, 30), (20, 50, 25), 55, 120, .08, 8, 0),
    100: Look(-12.0, 7.5, 0.8, (95, 95, 80), (80, 90, 60), 2, 3, .20, 25, 0),
}


def _looks(cover: np.ndarray, *attributes: str) -> list[np.ndarray]:
    """Per-pixel class properties (``Look`` attribute names) for a class-code raster."""
    tables = []
    for attribute in attributes:
        sample = getattr(LOOKS[10], attribute)
        table = np.zeros((101, *np.shape(sample)), "float32")
        for code, look in LOOKS.items():
            table[code] = getattr(look, attribute)
        tables.append(table[cover])
    return tables


def _season_swing(season: str) -> float:
    """+1 in summer, -1 in winter, 0 in spring and fall."""
    return math.cos(math.pi * (SEASONS.index(season) - 2) / 2)


# ------------------------------------------------------------------------------------ ids and randomness

def chip_id(coords: Iterable[Sequence[float]]) -> str:
    """M3LEO chip id of a polygon given by its (lon, lat) vertices (spec §1.2).

    The hashed bytes are the UTF-8 ``repr`` of the tuple ``(minx, miny, maxx, maxy)`` of the envelope, each a
    Python float rounded with ``round(v, 5)``, e.g. ``b"(-71.1, 42.3, -71.04566, 42.34052)"``. SHA-256 of it,
    as an integer, mod 10**15, in lower-case hex zero-padded to 13 characters. (geetiles hashes numpy's
    print form of the envelope ring, which depends on numpy's print options; this form is stable.)
    """
    xs, ys = zip(*((float(x), float(y)) for x, y, *_ in coords))
    envelope = tuple(round(v, 5) for v in (min(xs), min(ys), max(xs), max(ys)))
    digest = int(hashlib.sha256(repr(envelope).encode("utf-8")).hexdigest(), 16)
    return format(digest % 10**15, "x").zfill(13)


def _stable(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(_stable(k) for k in keys)])


# ------------------------------------------------------------------------------------------- chips

@dataclass(frozen=True)
class _Chip:
    chip_id: str
    split: str | None  # None: not in the split CSV (stray)
    east: bool  # eastern half of the grid: outside one S1 track (see Aoi.orbit_gap)
    ring: tuple[tuple[float, float], ...]  # closed, counter-clockwise, shapely ``box`` vertex order
    partial: bool
    gee_shape: tuple[int, int]  # GEE GeoTIFFs: pixels +- 1
    sar_shape: tuple[int, int]  # ~90 m native grid (gssic, gunw)
    coarse_shape: tuple[int, int]  # ~100 m native grid (biomass, ghsbuilts)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*self.ring)
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def area_km2(self) -> float:
        lat = (self.bounds[1] + self.bounds[3]) / 2
        kx, ky = M_PER_DEG_LON * math.cos(math.radians(lat)) / 1e3, M_PER_DEG_LAT / 1e3
        pts = self.ring
        twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))
        return abs(twice) / 2 * kx * ky


def _ring(bounds: tuple[float, float, float, float], partial: bool) -> tuple[tuple[float, float], ...]:
    """Chip polygon; a partial chip has its north-east corner cut off by the AOI boundary."""
    minx, miny, maxx, maxy = bounds
    if not partial:
        return (maxx, miny), (maxx, maxy), (minx, maxy), (minx, miny), (maxx, miny)
    cut_y, cut_x = miny + 0.55 * (maxy - miny), minx + 0.45 * (maxx - minx)
    return (maxx, miny), (maxx, cut_y), (cut_x, maxy), (minx, maxy), (minx, miny), (maxx, miny)


def _cell_bounds(aoi: Aoi, col: int, row: int) -> tuple[float, float, float, float]:
    dlat = SIDE_M / M_PER_DEG_LAT
    dlon = SIDE_M / (M_PER_DEG_LON * math.cos(math.radians(aoi.lat)))
    minx, miny = aoi.lon + col * dlon, aoi.lat + row * dlat
    return minx, miny, minx + dlon, miny + dlat


def _make_chip(aoi: Aoi, col: int, row: int, cols: int, split: str | None, partial: bool, pixels: int,
               seed: int) -> _Chip:
    ring = _ring(_cell_bounds(aoi, col, row), partial)
    cid = chip_id(ring)
    jitter = _rng(seed, aoi.key, cid, "shape").integers(-1, 2, size=6)
    sar_rows = pixels // 9
    sar_cols = round(sar_rows / math.cos(math.radians(aoi.lat)))
    return _Chip(
        chip_id=cid, split=split, east=cols > 1 and 2 * col >= cols, ring=ring, partial=partial,
        gee_shape=(pixels + int(jitter[0]), pixels + int(jitter[1])),
        sar_shape=(max(2, sar_rows + int(jitter[2])), max(2, sar_cols + int(jitter[3]))),
        coarse_shape=(max(2, pixels // 10 + int(jitter[4])), max(2, pixels // 8 + int(jitter[5]))),
    )


def _chips(aoi: Aoi, n: int, pixels: int, seed: int) -> tuple[list[_Chip], _Chip]:
    """Grid chips (column-major, 2 rows; split = column stripe) and one stray cell east of the grid."""
    rows = 2 if n >= 4 else 1
    cols = math.ceil(n / rows)
    stripes = [SPLIT_CYCLE[col % len(SPLIT_CYCLE)] for col in range(cols)]
    chips = [_make_chip(aoi, i // rows, i % rows, cols, stripes[i // rows], i == n - 1, pixels, seed) for i in range(n)]
    return chips, _make_chip(aoi, cols, 0, cols, None, False, pixels, seed)


# ----------------------------------------------------------------------------------- latent landscape

def _interp(n: int, points: int = LATENT) -> np.ndarray:
    """(n, points) linear-interpolation weights of ``points`` control values at n pixel centres."""
    pos = (np.arange(n) + 0.5) / n * (points - 1)
    lo = np.minimum(pos.astype(int), points - 2)
    frac = pos - lo
    weights = np.zeros((n, points))
    weights[np.arange(n), lo] = 1 - frac
    weights[np.arange(n), lo + 1] = frac
    return weights


def _latent(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` smooth random control grids: a coarse octave plus a finer one (std about 1.3)."""
    coarse = rng.standard_normal((count, 5, 5))
    up = _interp(LATENT, 5)
    return (up @ coarse @ up.T) * 1.2 + 0.45 * rng.standard_normal((count, LATENT, LATENT))


def _at(grids: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Evaluate control grids (..., LATENT, LATENT) on a (H, W) pixel grid."""
    return (_interp(shape[0]) @ grids @ _interp(shape[1]).T).astype("float32")


@dataclass(frozen=True)
class _Scene:
    """A chip's landscape, sampled consistently by every product at its own resolution."""

    codes: np.ndarray  # class codes
    scores: np.ndarray  # (classes, LATENT, LATENT)
    relief: np.ndarray  # (LATENT, LATENT)

    def cover(self, shape: tuple[int, int]) -> np.ndarray:
        return self.codes[np.argmax(_at(self.scores, shape), axis=0)]

    def relief_at(self, shape: tuple[int, int]) -> np.ndarray:
        return _at(self.relief, shape)


def _scene(aoi: Aoi, chip: _Chip, seed: int) -> _Scene:
    rng = _rng(seed, aoi.key, chip.chip_id, "scene")
    codes = np.array(sorted(aoi.cover), dtype="uint8")
    relief, *_ = _latent(rng, 1)
    scores = _latent(rng, len(codes))
    water = codes == 80
    scores[water] = 0.4 * scores[water] - 0.8 * relief  # water lies in the low ground
    bias = np.log([aoi.cover[int(c)] for c in codes]) + rng.normal(0, 0.6, len(codes))
    return _Scene(codes, scores + bias[:, None, None], relief)


def _inside(chip: _Chip, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies in the chip polygon (convex, counter-clockwise)."""
    minx, miny, maxx, maxy = chip.bounds
    h, w = shape
    x = minx + (np.arange(w) + 0.5) / w * (maxx - minx)
    y = maxy - (np.arange(h) + 0.5) / h * (maxy - miny)
    px, py = np.meshgrid(x, y)
    inside = np.ones(shape, bool)
    for (ax, ay), (bx, by) in zip(chip.ring, chip.ring[1:]):
        inside &= (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= -1e-12
    return inside


# ------------------------------------------------------------------------------------- GeoTIFF products

def _to_wrapped_uint16(values: np.ndarray) -> np.ndarray:
    """Truncate to int16 and reinterpret as uint16, as numpy's float->uint16 cast does on x86."""
    return values.astype("int16").view("uint16")


def _phenology(aoi: Aoi, month: int) -> float:
    """0 at the dormant season, 1 at the growing-season peak (July north, January south)."""
    peak = 7 if aoi.lat >= 0 else 1
    return 0.5 + 0.5 * math.cos(2 * math.pi * (month - peak) / 12)


def _s1grd(aoi: Aoi, chip: _Chip, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.gee_shape
    cover = scene.cover(shape)
    vv, gap, swing = _looks(cover, "vv_db", "vh_gap", "s1_seasonal")
    bands = []
    for season in SEASONS:
        for pd in ("vvasc", "vvdes", "vhasc", "vhdes"):
            pol, direction = pd[:2], pd[2:]
            if chip.east and f"{season}_{direction}" == aoi.orbit_gap:
                bands.append(np.zeros(shape, "uint16"))
                continue
            db = vv + swing * _season_swing(season) + (0.6 if direction == "asc" else -0.6)
            if pol == "vh":
                db = db - gap
            db = db + rng.standard_normal(shape, dtype="float32") * 1.1
            bands.append(_to_wrapped_uint16(np.clip(db, -27, 6)))
    return np.stack(bands)


def _s2rgbm(aoi: Aoi, chip: _Chip, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.gee_shape
    cover = scene.cover(shape)
    dormant, peak = _looks(cover, "dormant", "peak")
    empty = {m for m in aoi.cloudy_months if rng.random() < 0.5} or {int(rng.choice(aoi.cloudy_months))}
    clouds = _at(_latent(rng, 12), shape)
    months = []
    for month in range(1, 13):
        p = _phenology(aoi, month)
        rgb = (1 - p) * dormant + p * peak + rng.standard_normal((*shape, 3), dtype="float32") * 4
        rgb = np.clip(rgb, 1, 255).astype("uint8")
        if month in empty:
            rgb[:] = 0
        elif month in aoi.cloudy_months:
            rgb[clouds[month - 1] > 1.0] = 0
        months.append(np.moveaxis(rgb, -1, 0))
    return np.concatenate(months)


def _esaworldcover(aoi: Aoi, chip: _Chip, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    cover = scene.cover(chip.gee_shape)
    flat = cover.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 2000), replace=False)] = 0
    return cover[None]


def _modis(aoi: Aoi, chip: _Chip, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """250 m MOD44B cells resampled (nearest) to the GEE pixel grid."""
    h, w = chip.gee_shape
    cells = (18, 18)
    cover = scene.cover(cells)
    base = _looks(cover, "tree_pct")[0]
    trend = rng.normal(0, 1.0)
    fill = (rng.integers(cells[0]), rng.integers(cells[1]))
    years = []
    for k in range(5):
        pct = np.clip(base + trend * k + rng.normal(0, 2.5, cells), 0, 100).astype("uint8")
        pct[cover == 80] = 200
        pct[fill] = 253
        years.append(pct)
    stack = np.stack(years)
    return stack[:, (np.arange(h) * cells[0]) // h][:, :, (np.arange(w) * cells[1]) // w]


def _srtmdem(aoi: Aoi, chip: _Chip, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.gee_shape
    low, high = aoi.elevation
    ground = np.maximum(scene.relief_at(shape) + 1, 0) / 3  # flat at the lowest level (water, plains)
    elevation = low + (high - low) * ground + rng.normal(0, 0.1, shape)
    minx, miny, maxx, maxy = chip.bounds
    dy = (maxy - miny) * M_PER_DEG_LAT / shape[0]
    dx = (maxx - minx) * M_PER_DEG_LON * math.cos(math.radians((miny + maxy) / 2)) / shape[1]
    gy, gx = np.gradient(elevation, dy, dx)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    return np.stack([_to_wrapped_uint16(elevation), slope.astype("uint16")])


def _ghsbuilts(chip: _Chip, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    shape = chip.coarse_shape
    cover = scene.cover(shape)
    built = _looks(cover, "built_m2")[0] * rng.uniform(0.4, 1.6, shape)
    sprawl = rng.random(shape) < 0.1
    built[sprawl] += rng.uniform(10, 400, int(sprawl.sum()))
    values = np.clip(built, 0, 10_000).astype("uint16")
    flat = values.reshape(-1)
    flat[rng.choice(flat.size, size=min(3, flat.size), replace=False)] = 65535
    return values[None]


GEE_PRODUCTS = {"s1grd": _s1grd, "s2rgbm": _s2rgbm, "esaworldcover": _esaworldcover, "modis": _modis,
                "srtmdem": _srtmdem}


def _from_bounds(bounds: tuple[float, ...], width: int, height: int) -> Affine:
    """``rasterio.transform.from_bounds`` without its affine PendingDeprecationWarning."""
    west, south, east, north = bounds
    return Affine((east - west) / width, 0.0, west, 0.0, -(north - south) / height, north)


def _write_geotiff(path: Path, name: str, data: np.ndarray, bounds: tuple[float, ...], **options) -> None:
    modality = get_modality(name)
    count, h, w = data.shape
    assert data.dtype == np.dtype(modality.dtype) and count == len(modality.band_names), name
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=count, dtype=modality.dtype,
                       crs="EPSG:4326", transform=_from_bounds(bounds, w, h), **options) as dst:
        dst.write(data)
        for band, description in enumerate(modality.band_names, start=1):
            dst.set_band_description(band, description)


# -------------------------------------------------------------------------------------- NetCDF products

def _lat_lon(chip: _Chip, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre latitudes (descending) and longitudes of a native grid over the chip envelope."""
    minx, miny, maxx, maxy = chip.bounds
    h, w = shape
    lat = maxy - (np.arange(h) + 0.5) * (maxy - miny) / h
    lon = minx + (np.arange(w) + 0.5) * (maxx - minx) / w
    return lat, lon


def _geotransform(chip: _Chip, shape: tuple[int, int]) -> str:
    minx, miny, maxx, maxy = chip.bounds
    return f"{minx!r} {(maxx - minx) / shape[1]!r} 0.0 {maxy!r} 0.0 {-(maxy - miny) / shape[0]!r}"


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def _var(group, name: str, dims: tuple[str, ...], data: np.ndarray, fill=None, **attrs) -> None:
    """Create a variable (string arrays become variable-length strings) and set its attributes."""
    if data.dtype == object:
        var = group.create_variable(name, dims, dtype=h5py.string_dtype())
        var[...] = data
    else:
        var = group.create_variable(name, dims, data=data, fillvalue=fill)
    for key, value in attrs.items():
        var.attrs[key] = value


def _lat_lon_coords(group, chip: _Chip, shape: tuple[int, int], names: tuple[str, str]) -> None:
    lat, lon = _lat_lon(chip, shape)
    group.dimensions[names[0]], group.dimensions[names[1]] = shape
    _var(group, names[0], (names[0],), lat, units="degrees_north", standard_name="latitude", axis="Y")
    _var(group, names[1], (names[1],), lon, units="degrees_east", standard_name="longitude", axis="X")


def _holes(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """Boolean mask of ``count`` small rectangular gaps."""
    mask = np.zeros(shape, bool)
    for _ in range(count):
        i, j = rng.integers(shape[0]), rng.integers(shape[1])
        mask[i:i + 1 + shape[0] // 8, j:j + 1 + shape[1] // 8] = True
    return mask


def _coherence(rho: np.ndarray, tau: np.ndarray, days: float) -> np.ndarray:
    """GSSIC exponential decay model: (1 - rho) * exp(-t / tau) + rho."""
    return (1 - rho) * np.exp(-days / tau) + rho


def _dn(db: np.ndarray) -> np.ndarray:
    """Amplitude digital numbers, assuming dB = 20 log10(DN) - 83 (unverified; DN 8000 ~ -5 dB VV)."""
    return 10 ** ((db + 83) / 20)


def _gssic(path: Path, chip: _Chip, scene: _Scene, rng: np.random.Generator) -> None:
    shape = chip.sar_shape
    cover = scene.cover(shape)
    vv, gap, swing = _looks(cover, "vv_db", "vh_gap", "s1_seasonal")
    rho, tau = _looks(cover, "rho", "tau")
    seasons = len(GSSIC_SEASONS)
    amplitude = np.empty((seasons, 2, *shape), "float32")
    coherence = np.empty((seasons, 4, *shape), "float32")
    decay = np.empty((seasons, 3, *shape), "float32")
    for s, season in enumerate(GSSIC_SEASONS):
        db = vv + swing * _season_swing(season) + rng.normal(0, 0.5, shape)
        amplitude[s] = _dn(np.stack([db, db - gap]))
        r = np.clip(rho + rng.normal(0, 0.02, shape), 0.01, 0.95)
        t = np.clip(tau * rng.uniform(0.8, 1.2, shape), 1, None)
        for k, days in enumerate((12, 24, 36, 48)):
            coherence[s, k] = np.clip(100 * _coherence(r, t, days) + rng.normal(0, 3, shape), 0, 100)
        decay[s] = np.stack([r, t, rng.uniform(0.01, 0.08, shape)])
    gaps = _holes(rng, shape, 2)
    season = int(rng.integers(seasons))
    for layers in (amplitude, coherence, decay):
        layers[season][:, gaps] = np.nan
    inc = np.broadcast_to(np.linspace(33, 43, shape[1]) + rng.normal(0, 0.05), shape)
    lsmap = np.where(rng.random(shape) < 0.01, 2, 1)
    geometry = np.stack([inc, lsmap]).astype("float32")

    with h5netcdf.File(path, "w") as nc:
        nc.dimensions = {"season": seasons, "polarimetry": 2, "deltadays": 4, "param": 3, "feature": 2}
        _lat_lon_coords(nc, chip, shape, ("y", "x"))
        _var(nc, "season", ("season",), _strings(GSSIC_SEASONS))
        _var(nc, "polarimetry", ("polarimetry",), _strings(("vv", "vh")))
        _var(nc, "deltadays", ("deltadays",), np.array([12, 24, 36, 48], "int64"), units="days")
        _var(nc, "param", ("param",), _strings(("rho", "tau", "rmse")))
        _var(nc, "feature", ("feature",), _strings(("inc", "lsmap")))
        _var(nc, "spatial_ref", (), np.array(0, "int64"), crs_wkt=WKT_4326, spatial_ref=WKT_4326,
             grid_mapping_name="latitude_longitude", GeoTransform=_geotransform(chip, shape))
        nan = np.float32(np.nan)
        grid = {"grid_mapping": "spatial_ref"}
        _var(nc, "amplitude", ("season", "polarimetry", "y", "x"), amplitude, nan, units="DN", **grid)
        _var(nc, "coherence", ("season", "deltadays", "y", "x"), coherence, nan, units="percent", **grid)
        _var(nc, "decaymodel", ("season", "param", "y", "x"), decay, nan, **grid)
        _var(nc, "geometry", ("feature", "y", "x"), geometry, nan, **grid)


def _datepairs(aoi: Aoi, rng: np.random.Generator, seed: int) -> tuple[list[str], list[int]]:
    """Pairs sharing one reference (later) date inside the window, labelled later_earlier, sorted."""
    first = GUNW_WINDOW[0] + dt.timedelta(days=int(_rng(seed, aoi.key, "track").integers(12)))
    reference = first + dt.timedelta(days=12 * int(rng.integers(7)))
    count = int(rng.integers(2, 7))
    baselines = sorted(int(d) for d in rng.choice([6, 12, 18, 24, 36, 48, 60, 72, 96, 120, 144, 168], count,
                                                  replace=False))
    pairs = sorted((f"{reference:%Y%m%d}_{reference - dt.timedelta(days=d):%Y%m%d}", d) for d in baselines)
    return [p for p, _ in pairs], [d for _, d in pairs]


GUNW_LAYOUTS = ("per-pair", "sartiles")


def _gunw(path: Path, aoi: Aoi, chip: _Chip, scene: _Scene, rng: np.random.Generator, seed: int,
          layout: str = "per-pair") -> None:
    """``per-pair``: pairs in descending-baseline order, ``extraMetaData/deltadays`` along ``datepair``.
    ``sartiles`` (as rramosp/sartiles gunw.py writes them): pairs in granule-query order (unsorted), and
    ``deltadays`` its own dimension holding the distinct baselines, sorted, uint8."""
    shape = chip.sar_shape
    labels, deltadays = _datepairs(aoi, rng, seed)
    if layout == "sartiles":
        order = _rng(seed, chip.chip_id, "gunw-query-order").permutation(len(labels))
        labels, deltadays = [labels[i] for i in order], [deltadays[i] for i in order]
    n = len(labels)
    cover = scene.cover(shape)
    rho, tau = _looks(cover, "rho", "tau")
    deformation = _at(_latent(rng, 1)[0], shape)
    phase = np.empty((n, *shape), "float32")
    coherence = np.empty((n, *shape), "float32")
    for k, days in enumerate(deltadays):
        atmosphere = _at(_latent(rng, 1)[0], shape)
        phase[k] = deformation * days / 12 + 3 * atmosphere + rng.uniform(-5, 5)
        coherence[k] = np.clip(_coherence(rho, tau, days) + rng.normal(0, 0.05, shape), 0, 1)
    amplitude = (_dn(_looks(cover, "vv_db")[0] + rng.normal(0, 1.5, (n, *shape))) / 10).astype("float32")
    invalid = (cover == 80) | _holes(rng, shape, 1)
    for layers in (phase, coherence, amplitude):
        layers[:, invalid] = np.nan
    components = np.where(deformation > 0, 1, 2).astype("int16") * (coherence >= 0.2)
    components[:, invalid] = -1
    direction = "A" if rng.random() < 0.7 else "D"
    incidence = rng.uniform(30, 44)

    with h5netcdf.File(path, "w") as nc:
        data = nc.create_group("science/grids/data")
        data.dimensions = {"datepair": n}
        _var(data, "datepair", ("datepair",), _strings(labels))
        _lat_lon_coords(data, chip, shape, ("latitude", "longitude"))
        dims = ("datepair", "latitude", "longitude")
        nan = np.float32(np.nan)
        _var(data, "unwrappedPhase", dims, phase, nan, units="radians", grid_mapping="crs")
        _var(data, "coherence", dims, coherence, nan, units="1", grid_mapping="crs")
        _var(data, "connectedComponents", dims, components, np.int16(-1), grid_mapping="crs")
        _var(data, "amplitude", dims, amplitude, nan, units="1", grid_mapping="crs")
        _var(data, "crs", (), np.array(0, "int32"), grid_mapping_name="latitude_longitude", crs_wkt=WKT_4326,
             spatial_ref=WKT_4326, semi_major_axis=6378137.0, inverse_flattening=298.257223563,
             GeoTransform=_geotransform(chip, shape))
        geometry = _datepair_group(nc, "science/grids/imagingGeometry", labels)
        perpendicular = rng.uniform(-150, 150, n)
        angles = {
            "perpendicularBaseline": (perpendicular, "m"), "parallelBaseline": (perpendicular * 0.4, "m"),
            "incidenceAngle": (incidence + rng.normal(0, 0.01, n), "degrees"),
            "lookAngle": (incidence - 3.6 + rng.normal(0, 0.01, n), "degrees"),
            "azimuthAngle": (np.full(n, -79.0 if direction == "A" else -101.0), "degrees"),
        }
        for name, (values, units) in angles.items():
            _var(geometry, name, ("datepair",), values.astype("float32"), units=units)
        radar = _datepair_group(nc, "science/radarMetaData", labels)
        _var(radar, "wavelength", ("datepair",), np.full(n, WAVELENGTH_M), units="m")
        extra = _datepair_group(nc, "science/extraMetaData", labels)
        if layout == "sartiles":
            distinct = sorted(set(deltadays))
            extra.dimensions["deltadays"] = len(distinct)
            _var(extra, "deltadays", ("deltadays",), np.array(distinct, "uint8"), units="days")
        else:
            _var(extra, "deltadays", ("datepair",), np.array(deltadays, "uint8"), units="days")
        _var(extra, "direction", ("datepair",), _strings([direction] * n))


def _datepair_group(nc: h5netcdf.File, name: str, labels: list[str]):
    group = nc.create_group(name)
    group.dimensions = {"datepair": len(labels)}
    _var(group, "datepair", ("datepair",), _strings(labels))
    return group


def _biomass(path: Path, chip: _Chip, scene: _Scene, rng: np.random.Generator) -> None:
    shape = chip.coarse_shape
    cover = scene.cover(shape)
    agb = np.clip(_looks(cover, "agb")[0] * rng.lognormal(0, 0.3, shape), 0, None).astype("float32")
    agb_se = (agb * rng.uniform(0.2, 0.5, shape) + 5).astype("float32")
    invalid = cover == 80
    agb[invalid] = agb_se[invalid] = np.nan
    with h5netcdf.File(path, "w") as nc:
        _lat_lon_coords(nc, chip, shape, ("lat", "lon"))
        nan = np.float32(np.nan)
        _var(nc, "agb", ("lat", "lon"), agb, nan, units="Mg/ha", long_name="above-ground biomass")
        _var(nc, "agb_se", ("lat", "lon"), agb_se, nan, units="Mg/ha",
             long_name="above-ground biomass standard error")


# ------------------------------------------------------------------------------------------- manifest

@dataclass
class ChipManifest:
    """One chip of the sample: geometry, split and what each modality folder holds for it."""

    chip_id: str
    split: str
    bounds: tuple[float, float, float, float]  # envelope (minx, miny, maxx, maxy), EPSG:4326
    partial: bool  # polygon clipped by the AOI boundary; GEE rasters are 0 outside it
    shape: tuple[int, int]  # (H, W) of its GEE GeoTIFFs
    present: tuple[str, ...]  # modality names with a data file
    missing: tuple[str, ...]  # modality names with no file at all
    skipped: dict[str, str]  # modality name -> text of its .skipped marker


@dataclass
class RegionManifest:
    """One AOI of the sample tree."""

    aoi: str
    stem: str
    geojson: Path
    splits_csv: Path
    data_dir: Path  # <root>/<aoi>/<stem>
    modalities: tuple[str, ...]  # modality names that have a folder
    chips: dict[str, ChipManifest]  # in split-CSV order
    stray: dict[str, str]  # modality name -> id of a file that is not in the split CSV

    @property
    def chip_ids(self) -> list[str]:
        return list(self.chips)

    def path(self, chip_id: str, modality: str) -> Path | None:
        """The file written for ``chip_id`` in ``modality`` (data file or .skipped marker), or None."""
        folder = self.data_dir / get_modality(modality).folder
        chip = self.chips.get(chip_id)
        if chip is not None and modality in chip.skipped:
            return folder / f"{chip_id}.skipped"
        if (chip is not None and modality in chip.present) or self.stray.get(modality) == chip_id:
            return folder / f"{chip_id}{get_modality(modality).extension}"
        return None


@dataclass
class SampleManifest:
    """What ``write_sample`` wrote under ``root``."""

    root: Path
    seed: int
    pixels: int
    regions: dict[str, RegionManifest]


# ------------------------------------------------------------------------------------------- writing

SKIP_CODES = {"gunw": "TILE_NOT_FULLY_CONTAINED_IN_ANY_GRANULE", "gssic": "NO_GRANULES_FOUND"}


def _write_chip_file(folder: Path, name: str, aoi: Aoi, chip: _Chip, seed: int, gunw_layout: str = "per-pair") -> None:
    """Write ``chip``'s file for modality ``name`` into ``folder``."""
    path = folder / f"{chip.chip_id}{get_modality(name).extension}"
    scene, rng = _scene(aoi, chip, seed), _rng(seed, aoi.key, chip.chip_id, name)
    if name == "gssic":
        _gssic(path, chip, scene, rng)
    elif name == "gunw":
        _gunw(path, aoi, chip, scene, rng, seed, gunw_layout)
    elif name == "biomass":
        _biomass(path, chip, scene, rng)
    elif name == "ghsbuilts":  # cut from a global GeoTIFF by bounding box, not by GEE
        _write_geotiff(path, name, _ghsbuilts(chip, scene, rng), chip.bounds, compress="deflate", nodata=65535)
    else:
        data = GEE_PRODUCTS[name](aoi, chip, scene, rng)
        if chip.partial:
            data[:, ~_inside(chip, data.shape[1:])] = 0
        _write_geotiff(path, name, data, chip.bounds)


def _write_definitions(root: Path, aoi: Aoi, chips: list[_Chip]) -> tuple[Path, Path]:
    geojson, splits = root / f"{aoi.stem}.geojson", root / aoi.splits_name
    features = [
        {"type": "Feature", "properties": {"area_km2": round(c.area_km2, 6), "identifier": c.chip_id},
         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in c.ring]]}}
        for c in chips
    ]
    collection = {"type": "FeatureCollection",
                  "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
                  "features": features}
    geojson.write_text(json.dumps(collection) + "\n", encoding="utf-8")
    with splits.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["identifier", "split"])
        writer.writerows([c.chip_id, c.split] for c in chips)
    return geojson, splits


def _special_chips(aoi: Aoi, chips: list[_Chip], seed: int) -> dict[str, str]:
    """Chip ids for the failure cases: s2rgbm absent, gunw and gssic skipped (distinct when possible)."""
    pool = [c.chip_id for c in chips if not c.partial] or [c.chip_id for c in chips]
    order = _rng(seed, aoi.key, "failures").permutation(len(pool))
    return {name: pool[int(order[k % len(pool)])] for k, name in enumerate(("s2rgbm", "gunw", "gssic"))}


def _write_region(out: Path, aoi: Aoi, chips_per_region: int, pixels: int, seed: int,
                  gunw_layout: str = "per-pair") -> RegionManifest:
    root = out / aoi.key
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty")
    data_dir = root / aoi.stem
    chips, stray = _chips(aoi, chips_per_region, pixels, seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    geojson, splits = _write_definitions(root, aoi, chips)
    names = tuple(n for n in MODALITY_ORDER if n != "gunw" or aoi.has_gunw)
    special = _special_chips(aoi, chips, seed)
    for name in names:
        (data_dir / get_modality(name).folder).mkdir()
    manifest = {}
    for chip in chips:
        present, skipped = [], {}
        for name in names:
            folder = data_dir / get_modality(name).folder
            if special.get(name) != chip.chip_id:
                _write_chip_file(folder, name, aoi, chip, seed, gunw_layout)
                present.append(name)
            elif name in SKIP_CODES:
                (folder / f"{chip.chip_id}.skipped").write_text(SKIP_CODES[name], encoding="utf-8")
                skipped[name] = SKIP_CODES[name]
        missing = tuple(n for n in MODALITY_ORDER if n not in present and n not in skipped)
        manifest[chip.chip_id] = ChipManifest(chip.chip_id, chip.split, chip.bounds, chip.partial,
                                              chip.gee_shape, tuple(present), missing, skipped)
    _write_chip_file(data_dir / get_modality("s1grd").folder, "s1grd", aoi, stray, seed)
    return RegionManifest(aoi.key, aoi.stem, geojson, splits, data_dir, names, manifest,
                          {"s1grd": stray.chip_id})


def write_sample(out: str | Path, *, regions: Sequence[str] = ("conus", "europe", "pakin"),
                 chips_per_region: int = 10, pixels: int = 448, seed: int = 0,
                 gunw_layout: str = "per-pair") -> SampleManifest:
    """Write a deterministic M3LEO processed-chip tree under ``out`` and describe it.

    ``gunw_layout``: ``"per-pair"`` (pairs sorted by descending baseline, ``deltadays`` per pair) or
    ``"sartiles"`` (the layout of the released files: pairs unsorted, ``deltadays`` its own sorted dimension).

    Each region gets a 2-row grid of ``chips_per_region`` chips (4480 m side) near a real place of its AOI;
    split = column stripe (train, train, train, test, val, ...). Refuses to write into a non-empty
    ``<out>/<aoi>``.
    """
    unknown = [r for r in regions if r not in AOIS]
    if unknown:
        raise KeyError(f"unknown region(s) {unknown}; known: {', '.join(sorted(AOIS))}")
    if gunw_layout not in GUNW_LAYOUTS:
        raise ValueError(f"gunw_layout must be one of {GUNW_LAYOUTS}, not {gunw_layout!r}")
    if chips_per_region < 1 or pixels < 16 or seed < 0:
        raise ValueError("need chips_per_region >= 1, pixels >= 16 and seed >= 0")
    root = Path(out)
    regions_written = {r: _write_region(root, AOIS[r], chips_per_region, pixels, seed, gunw_layout) for r in regions}
    return SampleManifest(root, seed, pixels, regions_written)


# ---------------------------------------------------------------------------------------- Hub release

def _splits_csv(aoi_dir: Path) -> Path | None:
    found = sorted(p for p in aoi_dir.glob("*_splits_*.csv")
                   if not p.name.endswith(("_parquet.csv", "_miniset.csv")))
    return found[0] if found else None


def _read_splits(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(row["identifier"], row["split"]) for row in csv.DictReader(f)]


def _chip_files(folder: Path) -> dict[str, Path]:
    """Chip id -> its file (data or .skipped) in a dataset folder."""
    return {p.name.split(".", 1)[0]: p for p in sorted(folder.iterdir()) if p.is_file()}


def _regions(chips: Path) -> list[tuple[Path, Path, str]]:
    """(aoi dir, split CSV, stem) of every AOI in a chip tree."""
    found = []
    for aoi_dir in sorted(p for p in chips.iterdir() if p.is_dir()):
        splits = _splits_csv(aoi_dir)
        if splits is not None:
            found.append((aoi_dir, splits, splits.name.split("_splits", 1)[0]))
    return found


def release_placeholder(chips: str | Path) -> str | None:
    """``path`` of the 48-byte placeholder row ``write_release_parquet`` adds, or None.

    It stands for the first chip (split-CSV order) lacking a file in the first GeoTIFF folder (sorted)
    of the first AOI (sorted) that has such a chip.
    """
    for aoi_dir, splits, stem in _regions(Path(chips)):
        for folder in sorted(p for p in (aoi_dir / stem).iterdir() if p.is_dir()):
            modality = modality_for_folder(folder.name)
            if modality is None or modality.container != "geotiff":
                continue
            files = _chip_files(folder)
            for chip, _ in _read_splits(splits):
                if chip not in files:
                    return f"{aoi_dir.name}/{stem}/{folder.name}/{chip}{modality.extension}"
    return None


def _parquet_groups(splits: list[tuple[str, str]], chips_per_file: int) -> dict[str, list[str]]:
    """Split-pure chip groups: ``<split>-NNNNN`` -> sorted chip ids."""
    groups: dict[str, list[str]] = {}
    for split in sorted({s for _, s in splits}):
        ids = sorted(c for c, s in splits if s == split)
        for k in range(0, len(ids), chips_per_file):
            groups[f"{split}-{k // chips_per_file:05d}"] = ids[k:k + chips_per_file]
    return groups


def _write_mapping(path: Path, splits: list[tuple[str, str]], groups: dict[str, list[str]]) -> None:
    group_of = {chip: name for name, ids in groups.items() for chip in ids}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["identifier", "split", "parquet_identifier"])
        writer.writerows([chip, split, group_of[chip]] for chip, split in splits)


def _release_rows(aoi: str, stem: str, folder: Path, ids: list[str], placeholder: str | None) -> list[dict]:
    files = _chip_files(folder)
    rows = []
    for chip in ids:
        if chip in files:
            rel, content = f"{aoi}/{stem}/{folder.name}/{files[chip].name}", files[chip].read_bytes()
        elif placeholder is not None and placeholder.startswith(f"{aoi}/{stem}/{folder.name}/{chip}."):
            rel, content = placeholder, PLACEHOLDER
        else:
            continue
        rows.append({"path": rel, "modificationTime": MODIFICATION_TIME, "length": len(content),
                     "content": content, "aoi": aoi, "ds": folder.name})
    return rows


def write_release_parquet(chips: str | Path, out: str | Path, *, chips_per_file: int = 4,
                          row_group_size: int = 2) -> list[Path]:
    """Pack a chip tree as the current Hub release (spec §3.2); return the Parquet files written.

    Per AOI: the split CSV and geojson copied, ``<splits>_parquet.csv`` (identifier, split,
    parquet_identifier) and ``<stem>/<ds>/<parquet_identifier>.zstd.parquet`` with the Spark binaryFile
    columns plus aoi, ds. Groups are split-pure (``train-00000``) and name the same chips in every folder;
    ``.skipped`` markers are rows; files not in the split CSV are left out; one 48-byte placeholder row
    is added (see ``release_placeholder``).
    """
    chips, out = Path(chips), Path(out)
    if chips_per_file < 1 or row_group_size < 1:
        raise ValueError("chips_per_file and row_group_size must be >= 1")
    placeholder = release_placeholder(chips)
    written = []
    for aoi_dir, splits_csv, stem in _regions(chips):
        target = out / aoi_dir.name
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"{target} already exists and is not empty")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(splits_csv, target / splits_csv.name)
        shutil.copyfile(aoi_dir / f"{stem}.geojson", target / f"{stem}.geojson")
        splits = _read_splits(splits_csv)
        groups = _parquet_groups(splits, chips_per_file)
        _write_mapping(target / f"{splits_csv.stem}_parquet.csv", splits, groups)
        for folder in sorted(p for p in (aoi_dir / stem).iterdir() if p.is_dir()):
            for name, ids in groups.items():
                rows = _release_rows(aoi_dir.name, stem, folder, ids, placeholder)
                if not rows:
                    continue
                path = target / stem / folder.name / f"{name}.zstd.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                table = pa.Table.from_pylist(rows, schema=RELEASE_SCHEMA)
                pq.write_table(table, path, compression="zstd", row_group_size=row_group_size,
                               write_page_checksum=True)  # as parquet-java (Spark) writes by default
                written.append(path)
    return written
