"""Encoder files and resumable training checkpoints.

* Encoder: one safetensors file, the ``MaskedAutoencoder`` state with its ``MAEConfig`` and the input
  ``Normalizer`` in the file's metadata (``m3leo_shift_format``, ``mae_config``, ``normalizer``).
* Checkpoint: a folder holding ``model.safetensors`` (an encoder file) and ``trainer.pt`` (optimizer
  state, ``StatefulLoader`` state, step, finished flag). A new checkpoint is written beside the old
  one and swapped in by renames, so an interruption leaves a complete checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from m3leo_hf.shift.mae import MAEConfig, MaskedAutoencoder
from m3leo_hf.shift.recipe import Normalizer

FORMAT = "m3leo-shift-mae-v1"


def save_encoder(path: str | os.PathLike, model: MaskedAutoencoder, normalizer: Normalizer) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"m3leo_shift_format": FORMAT, "mae_config": model.config.to_json(),
                "normalizer": json.dumps(normalizer.state())}
    save_file(state, os.fspath(path), metadata=metadata)


def load_encoder(path: str | os.PathLike) -> tuple[MaskedAutoencoder, Normalizer]:
    """The model and normaliser of an encoder file written by ``save_encoder``."""
    with safe_open(os.fspath(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("m3leo_shift_format") != FORMAT:
            raise ValueError(f"{path}: not an m3leo-shift encoder (metadata m3leo_shift_format="
                             f"{metadata.get('m3leo_shift_format')!r}, expected {FORMAT!r}); for another "
                             f"model give a 'module:attr' factory")
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    model = MaskedAutoencoder(MAEConfig.from_json(metadata["mae_config"]))
    model.load_state_dict(state)
    return model, Normalizer.from_state(json.loads(metadata["normalizer"]))


def save_checkpoint(folder: str | os.PathLike, model: MaskedAutoencoder, normalizer: Normalizer,
                    trainer: dict) -> None:
    folder = Path(folder)
    fresh, old = folder.with_name(folder.name + ".new"), folder.with_name(folder.name + ".old")
    if old.exists() and not folder.exists():  # an interrupted swap: the previous checkpoint is the latest
        old.rename(folder)
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    save_encoder(fresh / "model.safetensors", model, normalizer)
    torch.save(trainer, fresh / "trainer.pt")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    fresh.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: str | os.PathLike) -> tuple[MaskedAutoencoder, Normalizer, dict] | None:
    """The latest complete checkpoint in ``folder`` (or the one an interrupted swap left), or None."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "model.safetensors").exists() and (candidate / "trainer.pt").exists():
            model, normalizer = load_encoder(candidate / "model.safetensors")
            return model, normalizer, torch.load(candidate / "trainer.pt", weights_only=True)
    return None
