"""M3LEO chips as aligned WebDataset shards: streaming torch pipelines with exact distributed epochs."""

from m3leo_hf.dataset import M3LEOStream, stream
from m3leo_hf.loader import StatefulLoader
from m3leo_hf.reader import AlignmentError, ShardError

__all__ = ["AlignmentError", "M3LEOStream", "ShardError", "StatefulLoader", "load", "stream"]


def __getattr__(name: str):
    """``load`` (stock ``datasets``) is imported on first use: streaming does not pay for ``datasets``."""
    if name == "load":
        from m3leo_hf.hub import load
        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
