"""Readers that turn M3LEO processed chips (GeoTIFF / NetCDF) into named arrays plus metadata.

The declaration model (``builders.declarations``, ``builders.registry``) imports no raster or HDF5 library;
the readers (``read_chip``) load theirs when first used.
"""

from builders.chip import ChipError, ChipSample
from builders.registry import Family, Modality, get_modality, load_declarations, modality_for_folder, register

__all__ = [
    "ChipError", "ChipSample", "Family", "Modality", "get_modality", "load_declarations", "modality_for_folder",
    "read_chip", "register",
]


def __getattr__(name: str):
    if name == "read_chip":
        from builders.read import read_chip

        return read_chip
    raise AttributeError(f"module 'builders' has no attribute {name!r}")
