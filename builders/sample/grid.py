"""Sample chips: the geetiles grid near a real place of each AOI, chip ids as geetiles hashes them, seeded RNGs."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from builders.sample.aoi import M_PER_DEG_LAT, M_PER_DEG_LON, SIDE_M, SPLIT_CYCLE, Aoi


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


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(_stable(k) for k in keys)])


@dataclass(frozen=True)
class SampleChip:
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
               seed: int) -> SampleChip:
    ring = _ring(_cell_bounds(aoi, col, row), partial)
    cid = chip_id(ring)
    jitter = rng_for(seed, aoi.key, cid, "shape").integers(-1, 2, size=6)
    sar_rows = pixels // 9
    sar_cols = round(sar_rows / math.cos(math.radians(aoi.lat)))
    return SampleChip(
        chip_id=cid, split=split, east=cols > 1 and 2 * col >= cols, ring=ring, partial=partial,
        gee_shape=(pixels + int(jitter[0]), pixels + int(jitter[1])),
        sar_shape=(max(2, sar_rows + int(jitter[2])), max(2, sar_cols + int(jitter[3]))),
        coarse_shape=(max(2, pixels // 10 + int(jitter[4])), max(2, pixels // 8 + int(jitter[5]))),
    )


def make_chips(aoi: Aoi, n: int, pixels: int, seed: int) -> tuple[list[SampleChip], SampleChip]:
    """Grid chips (column-major, 2 rows; split = column stripe) and one stray cell east of the grid."""
    rows = 2 if n >= 4 else 1
    cols = math.ceil(n / rows)
    stripes = [SPLIT_CYCLE[col % len(SPLIT_CYCLE)] for col in range(cols)]
    chips = [_make_chip(aoi, i // rows, i % rows, cols, stripes[i // rows], i == n - 1, pixels, seed) for i in range(n)]
    return chips, _make_chip(aoi, cols, 0, cols, None, False, pixels, seed)


def inside(chip: SampleChip, shape: tuple[int, int]) -> np.ndarray:
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
