"""Self-supervised embeddings of M3LEO chips and their distribution shift across regions.

``pretrain`` (MAE on streamed s1grd, the upstream recipe) -> ``embed`` (Parquet table of embeddings
and terrain descriptors) -> ``compare`` (MMD², classifier AUC, Fréchet distance per region pair, raw
and after terrain matching) -> ``write_report`` (JSON, Markdown, PNGs). CLI: ``m3leo-shift``.
"""

from m3leo_hf.shift.compare import Settings, compare
from m3leo_hf.shift.embed import embed, read_table, resolve_encoder
from m3leo_hf.shift.mae import MAEConfig, MaskedAutoencoder
from m3leo_hf.shift.pretrain import PretrainOptions, pretrain
from m3leo_hf.shift.report import write_report

__all__ = ["MAEConfig", "MaskedAutoencoder", "PretrainOptions", "Settings", "compare", "embed", "pretrain",
           "read_table", "resolve_encoder", "write_report"]
