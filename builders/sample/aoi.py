"""The six M3LEO AOIs (real stems and split files, spec §1.3) and how each land-cover class looks in every product."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from builders.registry import SEASONS


SIDE_M = 4480.0


M_PER_DEG_LAT = 110_574.0


M_PER_DEG_LON = 111_320.0  # at the equator; scaled by cos(lat)


SPLIT_CYCLE = ("train", "train", "train", "test", "val")  # geetiles stripe order for 60-20-20


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


def looks(cover: np.ndarray, *attributes: str) -> list[np.ndarray]:
    """Per-pixel class properties (``Look`` attribute names) for a class-code raster."""
    tables = []
    for attribute in attributes:
        sample = getattr(LOOKS[10], attribute)
        table = np.zeros((101, *np.shape(sample)), "float32")
        for code, look in LOOKS.items():
            table[code] = getattr(look, attribute)
        tables.append(table[cover])
    return tables


def season_swing(season: str) -> float:
    """+1 in summer, -1 in winter, 0 in spring and fall."""
    return math.cos(math.pi * (SEASONS.index(season) - 2) / 2)


def phenology(aoi: Aoi, month: int) -> float:
    """0 at the dormant season, 1 at the growing-season peak (July north, January south)."""
    peak = 7 if aoi.lat >= 0 else 1
    return 0.5 + 0.5 * math.cos(2 * math.pi * (month - peak) / 12)
