"""Readers that turn M3LEO processed chips (GeoTIFF / NetCDF) into named arrays plus metadata."""

from builders.chip import ChipError, ChipSample
from builders.read import read_chip
from builders.registry import MODALITIES, Modality, get_modality, modality_for_folder, register

__all__ = [
    "MODALITIES", "ChipError", "ChipSample", "Modality", "get_modality", "modality_for_folder", "read_chip",
    "register",
]
