"""M3LEO chips as aligned WebDataset shards: streaming torch pipelines with exact distributed epochs."""

from m3leo_hf.dataset import M3LEOStream, stream
from m3leo_hf.hub import load
from m3leo_hf.loader import StatefulLoader
from m3leo_hf.presets import preset
from m3leo_hf.reader import AlignmentError, ShardError

__all__ = ["AlignmentError", "M3LEOStream", "ShardError", "StatefulLoader", "load", "preset", "stream"]
