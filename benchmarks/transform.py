"""The user pipeline every read case runs, and the per-chip digests that prove the cases agree.

Per chip: s1grd viewed as int16 and normalised with the published (pooled) train statistics to
float32 (nodata and NaN -> 0), esaworldcover mapped to class indices (int64) plus multi-hot presence,
both centre cropped/padded to ``spatial_size``; then batches of ``batch_size`` as torch tensors.
Peers apply the very ``m3leo_hf.transforms.ModalityTransform`` that ``m3leo_hf.stream`` applies, so
equal digests mean equal work, not merely similar work.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np
import torch

Raw = Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, Mapping]]]  # modality -> (arrays, fields)


class UserTransform:
    """``(chip_id, raw) -> sample`` shaped like one row of an ``m3leo_hf.stream`` batch."""

    def __init__(self, modalities: Sequence[str], stats: Mapping[str, Mapping], spatial_size: int):
        from m3leo_hf.transforms import ModalityTransform

        self.transforms = {m: ModalityTransform(m, stats=stats[m], normalize=True, labels=True,
                                                spatial_size=spatial_size) for m in modalities}

    def __call__(self, chip_id: str, raw: Raw) -> dict:
        sample: dict = {"chip_id": chip_id}
        for modality, transform in self.transforms.items():
            arrays, fields = raw[modality]
            value = transform(arrays, fields)
            sample[modality] = value[modality] if list(value) == [modality] else value
        return sample


def pipeline_stats(roots: Sequence[str], modalities: Sequence[str]) -> dict[str, dict]:
    """Train statistics pooled over the regions, per modality (what the stream normalises with)."""
    from m3leo_hf.index import load_region
    from m3leo_hf.transforms import pool_stats

    regions = [load_region(root, modalities, "train") for root in roots]
    return {m: pool_stats([region.stats[m] for region in regions]) for m in modalities}


def batch_digests(batch: Mapping, modalities: Sequence[str]) -> dict[str, dict[str, list]]:
    """``{chip_id: {"<modality>[.<field>]": [dtype, shape, crc32]}}`` for every row of ``batch``."""
    tensors: dict[str, torch.Tensor] = {}
    for modality in modalities:
        value = batch[modality]
        items = value.items() if isinstance(value, Mapping) else [(None, value)]
        tensors.update({modality if field is None else f"{modality}.{field}": t for field, t in items})
    out = {}
    for row, chip_id in enumerate(batch["chip_id"]):
        out[chip_id] = {key: _digest(tensor[row]) for key, tensor in sorted(tensors.items())}
    return out


def batch_rows(batch: Mapping) -> int:
    return len(batch["chip_id"])


def batch_bytes(batch: Mapping) -> int:
    total = 0
    for value in batch.values():
        for tensor in (value.values() if isinstance(value, Mapping) else [value]):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def _digest(tensor: torch.Tensor) -> list:
    array = np.ascontiguousarray(tensor.numpy())
    return [str(array.dtype), list(array.shape), zlib.crc32(array.reshape(-1).view(np.uint8))]
