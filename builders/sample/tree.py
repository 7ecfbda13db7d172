"""``write_sample``: the processed-chip tree of every folder family, with its manifest."""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from builders.registry import GUNW_FAMILIES, get_modality
from builders.sample.aoi import AOIS, Aoi
from builders.sample.biomass import biomass
from builders.sample.esaworldcover import esaworldcover
from builders.sample.files import write_geotiff
from builders.sample.firecci import firecci
from builders.sample.ghsbuilts import ghsbuilts
from builders.sample.grid import SampleChip, inside, make_chips, rng_for
from builders.sample.gssic import gssic
from builders.sample.gunw import GUNW_LAYOUTS, gunw
from builders.sample.landscape import scene_of
from builders.sample.lcci import lcci
from builders.sample.modis import modis
from builders.sample.s1grd import s1grd
from builders.sample.s2rgbm import s2rgbm
from builders.sample.srtmdem import srtmdem


MODALITY_ORDER = ("s1grd", "s2rgbm", "gssic", "gunw", "esaworldcover", "ghsbuilts", "biomass", "modis", "srtmdem")


GROWTH_FOLDERS = {
    "s1grd-2019": "s1grd-2019", "s2rgbm-2019": "s2rgbm-2019", "biomass-2019": "biomass-2019",
    "gunw-2020-04-01-2020-06-30": "gunw-2020-04-01_2020-06-30", "gunw-2020-01": "gunw-2020-01",
    "lcci-2020": "lcci-2020", "firecci51": "firecci51",
}


GEE_PRODUCTS = {"s1grd": s1grd, "s2rgbm": s2rgbm, "esaworldcover": esaworldcover, "modis": modis,
                "srtmdem": srtmdem}


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
    markers: tuple[str, ...] = ()  # modality names with a ``.tif.nodata`` marker (FireCCI: nothing burned)


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
    folders: dict[str, str]  # modality name -> dataset folder as written (release spelling)

    @property
    def chip_ids(self) -> list[str]:
        return list(self.chips)

    def folder(self, modality: str) -> Path:
        return self.data_dir / self.folders[modality]

    def path(self, chip_id: str, modality: str) -> Path | None:
        """The file written for ``chip_id`` in ``modality`` (data file, .skipped or .tif.nodata marker), or None."""
        folder = self.folder(modality)
        chip = self.chips.get(chip_id)
        if chip is not None and modality in chip.skipped:
            return folder / f"{chip_id}.skipped"
        if chip is not None and modality in chip.markers:
            return folder / f"{chip_id}{get_modality(modality).extension}.nodata"
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


SKIP_CODES = {"gunw": "TILE_NOT_FULLY_CONTAINED_IN_ANY_GRANULE", "gssic": "NO_GRANULES_FOUND"}


def _write_chip_file(folder: Path, name: str, aoi: Aoi, chip: SampleChip, seed: int,
                     gunw_layout: str = "per-pair") -> bool:
    """Write ``chip``'s file for modality ``name`` into ``folder``; False when the product has no data there
    (FireCCI without burned area: a ``.tif.nodata`` marker instead, as geetiles writes). ``gunw_layout`` is the
    layout of the 2020 Q1 GUNW window; the other GUNW folders are always in the sartiles layout."""
    modality = get_modality(name)
    path = folder / f"{chip.chip_id}{modality.extension}"
    scene, rng = scene_of(aoi, chip, seed), rng_for(seed, aoi.key, chip.chip_id, name)
    family = modality.family
    if family == "gssic":
        gssic(path, chip, scene, rng)
    elif family in GUNW_FAMILIES:
        window = tuple(dt.date.fromisoformat(d) for d in modality.dates["window"])
        gunw(path, aoi, chip, scene, rng, seed, window, gunw_layout if name == "gunw" else "sartiles")
    elif family == "biomass":
        biomass(path, chip, scene, rng)
    elif family == "lcci":
        lcci(path, chip, scene)
    elif family == "ghsbuilts":  # cut from a global GeoTIFF by bounding box, not by GEE
        write_geotiff(path, name, ghsbuilts(chip, scene, rng), chip.bounds, compress="deflate", nodata=65535)
    elif family == "firecci51":
        data = firecci(chip, scene, rng)
        if data is None:
            path.with_name(path.name + ".nodata").write_bytes(b"")
            return False
        write_geotiff(path, name, data, chip.bounds)
    else:
        data = GEE_PRODUCTS[family](aoi, chip, scene, rng)
        if chip.partial:
            data[:, ~inside(chip, data.shape[1:])] = 0
        write_geotiff(path, name, data, chip.bounds)
    return True


def _write_definitions(root: Path, aoi: Aoi, chips: list[SampleChip]) -> tuple[Path, Path]:
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


def _special_chips(aoi: Aoi, chips: list[SampleChip], seed: int) -> dict[str, str]:
    """Chip ids for the failure cases: s2rgbm absent, gunw and gssic skipped (distinct when possible)."""
    pool = [c.chip_id for c in chips if not c.partial] or [c.chip_id for c in chips]
    order = rng_for(seed, aoi.key, "failures").permutation(len(pool))
    return {name: pool[int(order[k % len(pool)])] for k, name in enumerate(("s2rgbm", "gunw", "gssic"))}


def _write_region(out: Path, aoi: Aoi, chips_per_region: int, pixels: int, seed: int,
                  gunw_layout: str) -> RegionManifest:
    root = out / aoi.key
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty")
    data_dir = root / aoi.stem
    chips, stray = make_chips(aoi, chips_per_region, pixels, seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    geojson, splits = _write_definitions(root, aoi, chips)
    folders = {n: get_modality(n).folder for n in MODALITY_ORDER} | GROWTH_FOLDERS
    names = tuple(n for n in folders if aoi.has_gunw or get_modality(n).family not in GUNW_FAMILIES)
    special = _special_chips(aoi, chips, seed)
    for name in names:
        (data_dir / folders[name]).mkdir()
    manifest = {}
    for chip in chips:
        present, skipped, markers = [], {}, []
        for name in names:
            folder = data_dir / folders[name]
            if special.get(name) != chip.chip_id:
                written = _write_chip_file(folder, name, aoi, chip, seed, gunw_layout)
                (present if written else markers).append(name)
            elif name in SKIP_CODES:
                (folder / f"{chip.chip_id}.skipped").write_text(SKIP_CODES[name], encoding="utf-8")
                skipped[name] = SKIP_CODES[name]
        missing = tuple(n for n in folders if n not in present and n not in skipped)
        manifest[chip.chip_id] = ChipManifest(chip.chip_id, chip.split, chip.bounds, chip.partial,
                                              chip.gee_shape, tuple(present), missing, skipped, tuple(markers))
    _write_chip_file(data_dir / folders["s1grd"], "s1grd", aoi, stray, seed)
    return RegionManifest(aoi.key, aoi.stem, geojson, splits, data_dir, names, manifest,
                          {"s1grd": stray.chip_id}, {n: folders[n] for n in names})


def write_sample(out: str | Path, *, regions: Sequence[str] = ("conus", "europe", "pakin"),
                 chips_per_region: int = 10, pixels: int = 448, seed: int = 0,
                 gunw_layout: str = "per-pair") -> SampleManifest:
    """Write a deterministic M3LEO processed-chip tree under ``out`` and describe it.

    ``gunw_layout`` (the 2020 Q1 window, config ``gunw``): ``"per-pair"`` (pairs sorted by descending baseline,
    ``deltadays`` per pair) or ``"sartiles"`` (the layout of the released files: pairs unsorted, ``deltadays``
    its own sorted dimension). The other GUNW folders of the sample are always in the sartiles layout, so the
    default sample holds both.

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
