"""Embedded, deterministic generator of a small but realistic M3LEO processed-chip tree.

``write_sample`` writes the tree of docs/design.md §1 (no download): per AOI a geojson, a split CSV and one
file per chip and dataset folder, with the real containers, dtypes, band names, NetCDF layouts and the
oddities of the real data (wrapped negative dB, all-zero orbits, cloudy months, partial edge chips, absent
files, ``.skipped`` and ``.tif.nodata`` markers, a stray file outside the split CSV, no GUNW in Europe), for
the 2020 products and further folders of the release (a second year of s1grd, s2rgbm and biomass, a second
GUNW window and a monthly one, lcci-2020, firecci51). ``write_release_parquet`` packs such a tree like the
current Hub release (spec §3.2).

One module per modality family writes its files (``s1grd``, ``s2rgbm``, ``gssic``, ``gunw``, ...); ``tree``
lays them out. Every value derives from ``seed`` through ``numpy.random.default_rng`` seeded with SHA-256
digests of the AOI, chip id and modality (never Python's ``hash``), so the same seed gives byte-identical files.
"""

from builders.registry import GUNW_FAMILIES
from builders.sample.aoi import AOIS, Aoi
from builders.sample.grid import chip_id
from builders.sample.release import RELEASE_SCHEMA, release_placeholder, write_release_parquet
from builders.sample.tree import (GROWTH_FOLDERS, MODALITY_ORDER, ChipManifest, RegionManifest, SampleManifest,
                                  write_sample)

__all__ = ["AOIS", "GROWTH_FOLDERS", "GUNW_FAMILIES", "MODALITY_ORDER", "RELEASE_SCHEMA", "Aoi", "ChipManifest", "RegionManifest",
           "SampleManifest", "chip_id", "release_placeholder", "write_release_parquet", "write_sample"]
