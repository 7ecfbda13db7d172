"""``preset(name, roots, split=...)``: an upstream M3LEO experiment's datamodule on our shards.

The experiments are data (``presets.yaml``): inputs and label as ``m3leo_hf.upstream`` recipes. A preset is
an ``M3LEOStream`` whose samples carry ``x`` (the inputs concatenated on channels, in upstream order) and
``y`` (the label; absent for MAE pre-training), besides the per-modality tensors.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Sequence

import yaml

from m3leo_hf import upstream
from m3leo_hf.dataset import M3LEOStream

PRESET_DEFAULTS = {"batch_size": 8, "missing": "skip"}  # upstream: batch 8; only chips having every modality


@functools.cache
def _declarations() -> dict:
    return yaml.safe_load(resources.files("m3leo_hf").joinpath("presets.yaml").read_text())


def names() -> list[str]:
    """Every preset name (``baseline-esawc/s1grd-vv-vh`` ...)."""
    return sorted(_declarations()["experiments"])


def experiment(name: str) -> dict:
    """``{"inputs": [(modality, options)], "label": (modality, options) | None}`` of preset ``name``."""
    declared = _declarations()
    if name not in declared["experiments"]:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(names())}")
    spec = declared["experiments"][name]
    inputs = [item for key in spec["inputs"] for item in declared["inputs"][key].items()]
    label = next(iter(declared["labels"][spec["label"]].items())) if spec["label"] else None
    return {"inputs": inputs, "label": label}


def recipes(name: str, crop: int | tuple[int, int] | None = None,
            sar_size: int | tuple[int, int] | None = None) -> dict[str, list]:
    """``{modality: stages}`` of preset ``name``; ``crop``: centre crop/pad the arrays upstream does not resize
    (upstream assumes 448 x 448 chips; ours vary by a pixel or so; padding is 0); ``sar_size``: gssic/gunw resize target
    instead of upstream's 448 (to match small sample chips)."""
    parts = experiment(name)
    out = {}
    for modality, options in parts["inputs"] + ([parts["label"]] if parts["label"] else []):
        options = _options(options)
        if sar_size is not None and modality in ("gssic", "gunw"):
            options["size"] = sar_size
        stages = upstream.DEFAULTS[modality](**options)
        if crop is not None and not any(s["stage"] == "resize" for s in stages):
            stages += [{"stage": "crop_pad", "size": crop}, {"stage": "fill_nan", "value": 0.0}]
        out[modality] = stages
    return out


def _options(options: dict) -> dict:
    return {k: tuple(v) if k == "size" else v for k, v in options.items()}


def preset(name: str, roots: Any, *, split: str = "train", crop: int | tuple[int, int] | None = None,
           sar_size: int | tuple[int, int] | None = None, **options: Any) -> M3LEOStream:
    """The stream of preset ``name`` on region ``roots`` (see ``m3leo_hf.stream`` for ``options``; defaults:
    ``batch_size=8``, ``missing="skip"``). ``crop``, ``sar_size``: see ``recipes``."""
    parts = experiment(name)
    inputs: Sequence[str] = [m for m, _ in parts["inputs"]]
    stack = {"x": list(inputs)}
    if parts["label"]:
        stack["y"] = parts["label"][0]
    modalities = list(dict.fromkeys([*inputs, *([parts["label"][0]] if parts["label"] else [])]))
    return M3LEOStream(roots, modalities=modalities, split=split, recipe=recipes(name, crop, sar_size), stack=stack,
                       **{**PRESET_DEFAULTS, **options})
