"""``StreamConfig``: every option of an ``M3LEOStream``, frozen, with a fingerprint of those that fix the order."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from m3leo_hf.planning import Equalize
from m3leo_hf.stages import DatePairs, Size, Stage

Bands = Sequence[str] | Mapping[str, Sequence[str]]
ORDER_KEYS = ("roots", "modalities", "split", "batch_size", "shuffle", "shuffle_buffer", "seed", "equalize",
              "drop_last", "missing", "chips", "where", "bbox")


@dataclass(frozen=True)
class StreamConfig:
    """The options of ``m3leo_hf.stream`` with their defaults resolved (see ``stream`` for their meaning).

    ``order()`` holds the options that decide which samples each rank reads and in which order;
    ``fingerprint`` hashes them. A resume (``load_state_dict``) is refused when they differ.
    """

    roots: tuple[str, ...]
    modalities: tuple[str, ...]
    split: str = "train"
    batch_size: int | None = None
    shuffle: bool | None = None
    shuffle_buffer: int = 256
    seed: int = 0
    equalize: Equalize | None = None
    drop_last: bool | None = None
    missing: str = "mask"
    bands: Mapping[str, Bands] | None = None
    normalize: bool | Sequence[str] = False
    defer: bool = False
    labels: bool = True
    spatial_size: Size | Mapping[str, Size] | None = None
    resize: Size | Mapping[str, Size] | None = None
    datepairs: DatePairs | Mapping | bool | None = None
    transform: Stage | Sequence[Stage] | Mapping[str, Stage | Sequence[Stage]] | None = None
    recipe: str | Mapping[str, Sequence] | None = None
    stack: Mapping[str, str | Sequence[str]] | None = None
    lonlat: bool = False
    rank: int | None = None
    world_size: int | None = None
    verify_checksums: bool = False
    retries: int = 3
    storage_options: Mapping | None = None
    chips: Sequence[str] | None = None
    where: Any = None
    bbox: Sequence[float] | None = None

    def __post_init__(self):
        roots = self.roots
        roots = [roots] if isinstance(roots, (str, os.PathLike)) else roots
        train = self.split == "train"
        resolved = {
            "roots": tuple(os.fspath(r) for r in roots), "modalities": tuple(self.modalities),
            "shuffle": train if self.shuffle is None else bool(self.shuffle),
            "equalize": self.equalize or ("drop" if train else "pad"),
            "drop_last": train if self.drop_last is None else bool(self.drop_last),
        }
        if not resolved["shuffle"]:
            resolved["shuffle_buffer"] = 0
        for key, value in resolved.items():
            object.__setattr__(self, key, value)
        if self.missing not in ("mask", "skip"):
            raise ValueError(f"missing must be 'mask' or 'skip', not {self.missing!r}")
        if self.equalize not in ("drop", "pad"):
            raise ValueError(f"equalize must be 'drop' or 'pad', not {self.equalize!r}")
        if (self.rank is None) != (self.world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if isinstance(self.recipe, str) and self.recipe not in ("ours", "upstream"):
            raise ValueError(f"recipe must be 'ours', 'upstream' or {{modality: [stages]}}, not {self.recipe!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or None, not {self.batch_size!r}")

    @classmethod
    def create(cls, roots, *, modalities: Sequence[str], **options: Any) -> "StreamConfig":
        """The config of ``stream(roots, modalities=..., **options)``; an unknown option is a clear error."""
        known = {f.name for f in dataclasses.fields(cls)} - {"roots", "modalities"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"stream: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(roots, tuple(modalities), **options)

    def order(self) -> dict:
        """The options that fix the sample order (JSON-able; a ``where`` as its text: an expression's, or a
        callable's qualified name)."""
        order = {}
        for key in ORDER_KEYS:
            value = getattr(self, key)
            if key == "where" and value is not None:
                value = getattr(value, "__qualname__", None) or str(value)
            order[key] = list(value) if isinstance(value, (tuple, list)) else value
        return order

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.order(), sort_keys=True).encode()).hexdigest()[:16]

    def per_modality(self, option: str, modality: str) -> Any:
        """``option``'s value for ``modality``: its entry when given per modality, else the value itself."""
        value = getattr(self, option)
        if option == "normalize" and not isinstance(value, bool):
            return modality in value
        if isinstance(value, Mapping) and not isinstance(value, DatePairs) and option != "datepairs":
            return value.get(modality)
        return value

    def replace(self, **changes: Any) -> "StreamConfig":
        return dataclasses.replace(self, **changes)
