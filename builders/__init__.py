"""Readers that turn M3LEO processed chips (GeoTIFF / NetCDF) into named arrays plus metadata."""

from builders.chip import ChipError, ChipSample
from builders.registry import MODALITIES, Modality, get_modality, modality_for_folder, register

__all__ = [
    "MODALITIES", "ChipError", "ChipSample", "Modality", "get_modality", "modality_for_folder", "read_chip",
    "register",
]


def __getattr__(name: str):
    """``read_chip`` (rasterio, h5netcdf) is imported on first use: the streaming side needs only the registry."""
    if name == "read_chip":
        from builders.read import read_chip
        return read_chip
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
