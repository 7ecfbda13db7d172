"""M3LEO chips as aligned WebDataset shards: streaming torch pipelines with exact distributed epochs."""

from m3leo_hf.chip import get_chip
from m3leo_hf.dataset import M3LEOStream, stream
from m3leo_hf.device import normalize_on
from m3leo_hf.loader import StatefulLoader
from m3leo_hf.mapstyle import M3LEODataset
from m3leo_hf.plot import plot
from m3leo_hf.presets import preset
from m3leo_hf.reader import AlignmentError, ShardError
from m3leo_hf.selection import Selection, chips

__all__ = ["AlignmentError", "M3LEODataset", "M3LEOStream", "Selection", "ShardError", "StatefulLoader", "chips",
           "get_chip", "load", "normalize_on", "plot", "preset", "stream"]


def __getattr__(name: str):
    """``load`` (stock ``datasets``) is imported on first use: streaming does not pay for ``datasets``."""
    if name == "load":
        from m3leo_hf.hub import load
        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
