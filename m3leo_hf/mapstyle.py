"""``M3LEODataset``: the chips of a selection as a map-style ``torch.utils.data.Dataset`` (random samplers,
``DistributedSampler``, TorchGeo habits), each item read by its byte ranges only."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from m3leo_hf.collate import to_torch
from m3leo_hf.dataset import M3LEOStream
from m3leo_hf.selection import Where


class M3LEODataset(Dataset):
    """Item ``i`` = the ``i``-th chip of the selection: regions in the order of ``roots``, then chip id (shard
    and sample order). Items are ``stream()`` samples as torch tensors: ``{"chip_id", "region", "<modality>",
    "<modality>_available", "meta"}``.

    Options as ``stream()``: ``split``, ``missing`` (``"mask"`` or ``"skip"``), ``bands``, ``normalize``,
    ``labels``, ``spatial_size``, ``datepairs``, ``retries``, ``storage_options`` and the selection ``chips`` /
    ``where`` / ``bbox``. ``transform``: a callable applied to each item. ``torchgeo=True`` adds TorchGeo-style
    keys: ``image`` (the float inputs, i.e. modalities without a label kind, concatenated on the channel
    axis; needs equal spatial sizes, e.g. ``spatial_size``), ``mask`` (the ESA WorldCover class-index label,
    when requested, by alias or config name), ``crs`` (``"EPSG:<code>"`` of the first available modality) and
    ``bounds`` (its ``(west, south, east, north)`` in that CRS, float64 tensor).
    """

    def __init__(self, roots: str | os.PathLike | Sequence[str | os.PathLike], *, modalities: Sequence[str],
                 split: str = "train", chips: Iterable[str] | None = None, where: Where | None = None,
                 bbox: Sequence[float] | None = None, transform: Callable[[dict], Any] | None = None,
                 torchgeo: bool = False, **options: Any):
        fixed = sorted(set(options) & {"batch_size", "shuffle", "shuffle_buffer", "seed", "equalize", "drop_last",
                                       "rank", "world_size", "verify_checksums"})
        if fixed:
            raise ValueError(f"M3LEODataset takes no {fixed}: use a sampler (RandomSampler, DistributedSampler) "
                             f"and a DataLoader")
        self.stream = M3LEOStream(roots, modalities=modalities, split=split, chips=chips, where=where, bbox=bbox,
                                  shuffle=False, rank=0, world_size=1, **options)
        self.items = [(s, int(i)) for s, eligible in enumerate(self.stream.eligible) for i in eligible]
        self.transform, self.torchgeo = transform, torchgeo

    def __len__(self) -> int:
        return len(self.items)

    @property
    def chip_ids(self) -> list[str]:
        """Chip id of every item, in item order."""
        return [self.stream.shards[s].keys[i] for s, i in self.items]

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} chips")
        shard_id, sample = self.items[index]
        shard = self.stream.shards[shard_id]
        item = self.stream.joined(shard, sample, self.stream.read_one(shard, sample))
        if self.torchgeo:
            item.update(self._torchgeo(item))
        item = to_torch(item)
        return self.transform(item) if self.transform else item

    @staticmethod
    def collate(items: Sequence[dict]) -> dict:
        """``DataLoader(collate_fn=M3LEODataset.collate)``: tensors stacked, flags as bool tensors, strings and
        ``meta`` as lists (the default collate cannot batch the metadata's None values)."""
        out = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key == "meta":
                out[key] = values
                continue
            try:
                out[key] = default_collate(values)
            except RuntimeError as exc:
                chips = [item.get("chip_id") for item in items]
                raise ValueError(f"cannot batch {key!r} of chips {chips}: {exc}; pass spatial_size= to centre "
                                 f"crop/pad every chip to a fixed size") from None
        return out

    def _torchgeo(self, item: dict) -> dict:
        inputs = [np.asarray(item[m], dtype=np.float32) for m in self.stream.modalities
                  if self.stream.declarations[m].label_kind is None and isinstance(item[m], np.ndarray)]
        out: dict = {}
        if inputs:
            shapes = {a.shape[-2:] for a in inputs}
            if len(shapes) > 1:
                raise ValueError(f"chip {item['chip_id']}: cannot concatenate inputs of sizes {sorted(shapes)} into "
                                 f"'image'; pass spatial_size=")
            out["image"] = np.concatenate([a.reshape(-1, *a.shape[-2:]) for a in inputs])
        label = next((item[m] for m in self.stream.modalities if self.stream.declarations[m].family == "esaworldcover"),
                     None)  # whatever the config name it was asked by (esaworldcover, esaworldcover-2020)
        if isinstance(label, dict) and "label" in label:
            out["mask"] = label["label"]
        first = next((item["meta"][m] for m in self.stream.modalities if item[f"{m}_available"]), None)
        if first is not None:
            out["crs"] = f"EPSG:{first['epsg']}" if first.get("epsg") else first.get("crs")
            bounds = first.get("bounds")
            if isinstance(bounds, dict):
                bounds = [bounds.get(k) for k in ("left", "bottom", "right", "top")]
            if bounds is not None:
                out["bounds"] = torch.tensor([float(b) for b in bounds], dtype=torch.float64)
        return out
