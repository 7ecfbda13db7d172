"""The upstream MAE input recipe on our s1grd shards (spaceml-org/M3LEO
``configs/mae-pretraining/s1grd``): 2020 composites, pols ``[vv, vh, vv-vh]``, ascending, the four
seasons, per-channel z-score, 448 px, no resizing.

Our stream gives the stored int16 dB bands; the 12 input channels are derived here in upstream's
order, ``vv-vh`` first: ``4 x (vv - vh)``, ``4 x vv``, ``4 x vh`` (seasons winter, spring, summer,
fall). ``vv - vh`` is computed from the int16 dB values *before* normalising, then every channel is
z-scored with a ``Normalizer`` fitted on training chips (mean/std per channel over pixels where both
vv and vh are valid, i.e. non-zero; invalid pixels become 0 after normalising). Upstream counts nodata
pixels in its statistics (M3LEO ``utils.py``); we leave them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from builders.registry import SEASONS

CHANNELS = tuple([f"{s}_vv-vh_asc" for s in SEASONS] + [f"{s}_vv_asc" for s in SEASONS]
                 + [f"{s}_vh_asc" for s in SEASONS])
BANDS = [f"{s}_vvasc" for s in SEASONS] + [f"{s}_vhasc" for s in SEASONS]  # what we ask the stream for
MODALITY = "s1grd"
IMAGE_SIZE = 448


def channels(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 8, H, W) int16 dB ``BANDS`` -> (B, 12, H, W) float32 ``CHANNELS`` and the valid mask
    (B, 4, H, W): a pixel of a season is valid when its vv and vh are both non-zero (0 = nodata)."""
    if raw.ndim != 4 or raw.shape[1] != len(BANDS):
        raise ValueError(f"s1grd batch: expected (B, {len(BANDS)}, H, W) int16 dB bands {BANDS}, "
                         f"got {tuple(raw.shape)}")
    vv, vh = raw[:, :4].float(), raw[:, 4:].float()
    valid = (vv != 0) & (vh != 0)
    return torch.cat([vv - vh, vv, vh], dim=1), valid


@dataclass
class Normalizer:
    """Per-channel mean and std of ``CHANNELS`` (float32 tensors of 12)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, 8, H, W) int16 bands -> (B, 12, H, W) normalised float32, invalid pixels 0."""
        x, valid = channels(raw)
        x = (x - self.mean.view(1, -1, 1, 1).to(x.device)) / self.std.view(1, -1, 1, 1).to(x.device)
        return x * valid.repeat(1, 3, 1, 1)

    def state(self) -> dict[str, list[float]]:
        return {"channels": list(CHANNELS), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        if list(state.get("channels", [])) != list(CHANNELS):
            raise ValueError(f"normaliser channels {state.get('channels')} are not {list(CHANNELS)}")
        return cls(torch.tensor(state["mean"], dtype=torch.float32), torch.tensor(state["std"], dtype=torch.float32))

    @classmethod
    def fit(cls, batches: Iterable[torch.Tensor], max_chips: int = 1000) -> "Normalizer":
        """Fit on (B, 8, H, W) raw batches (up to ``max_chips`` chips, upstream uses 1000); under
        ``torch.distributed`` the sums are all-reduced, so every rank gets the same normaliser."""
        sums = torch.zeros(3, len(CHANNELS), dtype=torch.float64)  # count, sum, sum of squares
        chips = 0
        for raw in batches:
            x, valid = channels(raw)
            mask = valid.repeat(1, 3, 1, 1).double()
            x = x.double() * mask
            sums += torch.stack([mask.sum((0, 2, 3)), x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))])
            chips += len(raw)
            if chips >= max_chips:
                break
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        count = sums[0]
        if (count == 0).any():
            raise ValueError("cannot fit the s1grd normaliser: no valid (non-zero vv and vh) pixel in the "
                             "training chips read")
        mean = sums[1] / count
        std = (sums[2] / count - mean ** 2).clamp(min=0).sqrt()
        return cls(mean.float(), torch.where(std > 0, std, torch.ones_like(std)).float())
