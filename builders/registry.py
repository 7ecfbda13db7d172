"""Declarative registry of M3LEO modalities.

A modality is data, not code: adding a GEE-style GeoTIFF chip folder is one ``register(Modality(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Container = Literal["geotiff", "netcdf"]

SEASONS = ("winter", "spring", "summer", "fall")
MONTHS = tuple(f"{m:02d}" for m in range(1, 13))


@dataclass(frozen=True)
class Modality:
    """How one M3LEO dataset folder is laid out and what its values mean."""

    name: str
    folder: str
    container: Container
    description: str
    aliases: tuple[str, ...] = ()
    dtype: str | None = None
    band_names: tuple[str, ...] = ()
    nodata: float | int | None = None
    units: str | None = None
    view_as: str | None = None
    dates: dict = field(default_factory=dict)
    label_kind: str | None = None
    class_codes: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    variable_axis: str | None = None
    notes: str = ""

    @property
    def extension(self) -> str:
        return ".tif" if self.container == "geotiff" else ".nc"

    @property
    def folders(self) -> tuple[str, ...]:
        return (self.folder, *self.aliases)


MODALITIES: dict[str, Modality] = {}


def register(modality: Modality) -> Modality:
    """Add ``modality`` to the registry; names and folders must be unique."""
    if modality.name in MODALITIES:
        raise ValueError(f"modality {modality.name!r} is already registered")
    taken = {f for m in MODALITIES.values() for f in m.folders}
    clash = taken.intersection(modality.folders)
    if clash:
        raise ValueError(f"modality {modality.name!r}: folder(s) {sorted(clash)} already registered")
    if not modality.name.replace("_", "").isalnum() or modality.name.lower() != modality.name:
        raise ValueError(f"modality name {modality.name!r} must be lower-case letters, digits or '_'")
    MODALITIES[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    try:
        return MODALITIES[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; known: {', '.join(sorted(MODALITIES))}") from None


def modality_for_folder(folder: str) -> Modality | None:
    """The modality stored in dataset folder ``folder`` (aliases included), or None."""
    for modality in MODALITIES.values():
        if folder in modality.folders:
            return modality
    return None


def _season_windows(year: int) -> dict:
    return {
        "winter": [f"{year - 1}-12-01", f"{year}-02-28"],
        "spring": [f"{year}-03-01", f"{year}-05-31"],
        "summer": [f"{year}-06-01", f"{year}-08-31"],
        "fall": [f"{year}-09-01", f"{year}-11-30"],
    }


S1GRD_BANDS = tuple(f"{s}_{pd}" for s in SEASONS for pd in ("vvasc", "vvdes", "vhasc", "vhdes"))
S2RGBM_BANDS = tuple(f"{m}_{c}" for m in MONTHS for c in ("red", "green", "blue"))
MODIS_BANDS = tuple(f"Percent_Tree_Cover_{y}" for y in range(2016, 2021))
ESAWC_CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
ESAWC_NAMES = (
    "tree cover", "shrubland", "grassland", "cropland", "built-up", "bare/sparse vegetation",
    "snow and ice", "permanent water", "herbaceous wetland", "mangroves", "moss and lichen",
)

register(Modality(
    name="s1grd", folder="s1grd-2020", container="geotiff", dtype="uint16", band_names=S1GRD_BANDS,
    nodata=0, units="dB (truncated integer, stored uint16 with negative values wrapped)", view_as="int16",
    dates={"year": 2020, "seasons": _season_windows(2020)},
    description="Sentinel-1 GRD seasonal composites (VV/VH, ascending/descending), 448x448 at ~10 m",
    notes="Read as int16 to recover dB; 0 means no data (also a legitimate 0 dB). Composite: mean (2023 build).",
))
register(Modality(
    name="s2rgbm", folder="s2rgbm-2020", container="geotiff", dtype="uint8", band_names=S2RGBM_BANDS,
    nodata=0, units="uint8 linear stretch of L2A reflectance 0-0.3",
    dates={"year": 2020, "months": list(MONTHS)},
    description="Sentinel-2 L2A monthly RGB median composites, 36 bands (month-major R,G,B)",
))
register(Modality(
    name="gssic", folder="gssic", container="netcdf", nodata=float("nan"),
    dates={"start": "2019-12-01", "end": "2020-11-30", "season_order": ["summer", "fall", "winter", "spring"]},
    description="Global Seasonal Sentinel-1 Interferometric Coherence and Backscatter, ~90 m",
    units="amplitude: scaled DN; coherence: percent; decaymodel: rho/tau/rmse; geometry: inc deg / lsmap",
))
register(Modality(
    name="gunw", folder="gunw_2020-01-01_2020-03-31", aliases=("gunw-2020-01-01_2020-03-31",),
    container="netcdf", nodata=float("nan"), variable_axis="datepair",
    dates={"window": ["2020-01-01", "2020-03-31"]},
    description="ARIA Sentinel-1 GUNW interferograms, variable number of date pairs (later_earlier), ~90 m",
    units="unwrappedPhase: rad; coherence: 0-1; connectedComponents: label; amplitude: DN",
))
register(Modality(
    name="esaworldcover", folder="esaworldcover-2020", container="geotiff", dtype="uint8",
    band_names=("Map",), nodata=0, units="class code", dates={"year": 2020},
    label_kind="segmentation", class_codes=ESAWC_CODES, class_names=ESAWC_NAMES,
    description="ESA WorldCover v100 land cover, 11 classes, 10 m",
))
register(Modality(
    name="ghsbuilts", folder="ghsbuilts-2020", aliases=("ghs-built-S-2020",), container="geotiff",
    dtype="uint16", band_names=("built_surface",), nodata=65535, units="m2 built-up surface per cell",
    dates={"year": 2020}, label_kind="regression",
    description="JRC GHS-BUILT-S built-up surface, ~100 m",
))
register(Modality(
    name="biomass", folder="biomass-2020", container="netcdf", nodata=float("nan"), units="Mg/ha",
    dates={"year": 2020}, label_kind="regression",
    description="ESA CCI above-ground biomass (agb) and its standard error (agb_se), ~100 m",
))
register(Modality(
    name="modis", folder="modis44b006veg", container="geotiff", dtype="uint8", band_names=MODIS_BANDS,
    nodata=253, units="percent tree cover (200 = water, 253 = fill)", dates={"years": list(range(2016, 2021))},
    label_kind="regression", description="MODIS MOD44B v006 percent tree cover 2016-2020 (resampled to 448x448)",
))
register(Modality(
    name="srtmdem", folder="srtmdem", aliases=("strmdem",), container="geotiff", dtype="uint16",
    band_names=("elevation", "slope"), dates={"acquired": ["2000-02-11", "2000-02-22"]}, units="elevation m (uint16, negatives wrapped), slope degrees",
    description="SRTM 90 m DEM elevation and slope (resampled to 448x448)",
))
