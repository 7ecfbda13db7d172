"""Turn joined samples (numpy) into torch: one sample, or a batch stacked field by field."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def to_torch(value: Any) -> Any:
    """Arrays become tensors, recursively; strings, flags and metadata pass through."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: v if k == "meta" else to_torch(v) for k, v in value.items()}
    return value


def collate(samples: Sequence[dict], path: str = "", chips: Sequence[str] | None = None) -> dict:
    """Stack equal-shaped arrays (tensor ``(B, ...)``), flags into bool tensors, keep strings and
    ``meta`` as lists. Different shapes raise ``ValueError`` naming the field and the chips."""
    chips = chips or [sample.get("chip_id", "?") for sample in samples]
    out = {}
    for key, first in samples[0].items():
        values = [sample[key] for sample in samples]
        if isinstance(first, np.ndarray):
            out[key] = torch.from_numpy(_stack(values, f"{path}{key}", chips))
        elif isinstance(first, dict) and key != "meta":
            out[key] = collate(values, f"{path}{key}.", chips)
        elif isinstance(first, (bool, np.bool_)):
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = values
    return out


def _stack(values: list[np.ndarray], name: str, chips: Sequence[str]) -> np.ndarray:
    if len({v.shape for v in values}) > 1:
        detail = ", ".join(f"{c}: {tuple(v.shape)}" for c, v in zip(chips, values))
        raise ValueError(f"cannot batch {name!r}: shapes differ ({detail}); pass spatial_size= to centre "
                         f"crop/pad every chip to a fixed size")
    return np.stack(values)
