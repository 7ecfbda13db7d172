"""Streaming MAE pretraining on s1grd shards: the upstream recipe (``recipe``), AdamW at 1.5e-4, one
``RandomResizedCrop`` (torchvision defaults) per batch, chips with a constant channel left out.

Exact epochs under DDP (``torchrun``; every rank gets the same number of batches, see
``m3leo_hf.planning``), resumable: a checkpoint (``checkpoint.py``) every ``checkpoint_every`` batches
and at each epoch end holds the model, the optimizer and the loader position; a rerun with the same
options continues from it. Crops and masks are drawn from generators seeded by (seed, epoch, batch),
so a resumed run draws what the uninterrupted run would have.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from tqdm import tqdm

from m3leo_hf import StatefulLoader, stream
from m3leo_hf.shift.checkpoint import load_checkpoint, save_checkpoint, save_encoder
from m3leo_hf.shift.mae import MAEConfig, MaskedAutoencoder
from m3leo_hf.shift.recipe import BANDS, MODALITY, Normalizer


@dataclass(frozen=True)
class PretrainOptions:
    epochs: int = 75
    batch_size: int = 8
    lr: float = 1.5e-4
    seed: int = 0
    num_workers: int = 0
    crop: bool = True
    normalizer_chips: int = 1000
    checkpoint_every: int = 500
    device: str = "cpu"
    bf16: bool = False  # bfloat16 autocast of the forward pass (GPUs)


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def s1grd_stream(roots: Sequence[str], split: str, batch_size: int, size: int, seed: int, **options):
    """The raw recipe bands (int16 dB) of the chips having s1grd, centre-cropped/padded to ``size``."""
    return stream(list(roots), modalities=[MODALITY], split=split, batch_size=batch_size, missing="skip",
                  bands={MODALITY: BANDS}, normalize=False, spatial_size=size, seed=seed, **options)


def fit_normalizer(roots: Sequence[str], size: int, batch_size: int, max_chips: int, seed: int) -> Normalizer:
    """Channel statistics from up to ``max_chips`` random training chips (all ranks together)."""
    world = _rank()[1]
    batches = (batch[MODALITY] for batch in s1grd_stream(roots, "train", batch_size, size, seed + 1))
    return Normalizer.fit(batches, max_chips=math.ceil(max_chips / world))


def random_resized_crop(images: torch.Tensor, generator: torch.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """One random crop of area ``scale`` and aspect ``ratio`` for the whole batch, resized back
    (bilinear, antialiased): torchvision ``RandomResizedCrop``'s sampling, with its centre fallback."""
    _, _, height, width = images.shape
    area = height * width
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*scale, generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            break
    else:
        h, w, top, left = height, width, 0, 0
    crop = images[:, :, top:top + h, left:left + w]
    return torch.nn.functional.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False,
                                           antialias=True)


def _non_constant(x: torch.Tensor) -> torch.Tensor:
    """Chips whose every normalised channel varies (upstream ``skip_constant_channels``)."""
    return (x.flatten(2).std(dim=2) >= 1e-7).all(dim=1)


def pretrain(roots: Sequence[str | os.PathLike], out: str | os.PathLike, config: MAEConfig,
             options: PretrainOptions = PretrainOptions()) -> Path:
    """Train (or resume) an MAE on the train split of ``roots``; returns ``out/encoder.safetensors``."""
    roots = [os.fspath(r) for r in roots]
    out = Path(out)
    rank, world = _rank()
    folder, encoder_path = out / "checkpoint", out / "encoder.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(options.seed)
    resumed = load_checkpoint(folder)
    if resumed is not None:
        model, normalizer, trainer = resumed
        if model.config != config:
            raise ValueError(f"{folder}: checkpoint model {model.config} differs from the requested {config}; "
                             f"use another --out or the same model options")
    else:
        model = MaskedAutoencoder(config)
        normalizer = fit_normalizer(roots, config.image_size, options.batch_size, options.normalizer_chips,
                                    options.seed)
        trainer = None
    device = torch.device(options.device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr)
    dataset = s1grd_stream(roots, "train", options.batch_size, config.image_size, options.seed)
    loader = StatefulLoader(dataset, num_workers=options.num_workers, pin_memory=device.type == "cuda")
    if trainer is not None:
        optimizer.load_state_dict(trainer["optimizer"])
        loader.load_state_dict(trainer["loader"])
    if len(loader) == 0:
        raise ValueError(f"no training batch of {options.batch_size} chips with s1grd on rank {rank} of {world} "
                         f"in {roots}; lower --batch-size")
    if world == 1:
        trained = model
    else:
        index = device.index
        if index is None and device.type == "cuda":
            index = torch.cuda.current_device()
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=None if index is None else [index])

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(folder, model, normalizer, {"optimizer": optimizer.state_dict(),
                                                        "loader": loader.state_dict()})
        if world > 1:
            dist.barrier()

    generator = torch.Generator()
    while loader.epoch < options.epochs:
        epoch = loader.epoch
        progress = tqdm(total=len(loader), initial=loader.batches, desc=f"MAE epoch {epoch + 1}/{options.epochs}",
                        unit="batch", disable=rank != 0)
        for batch in loader:
            step = loader.batches  # counted: this batch is number ``step`` of the epoch
            generator.manual_seed(options.seed * 1_000_003 + epoch * 100_003 + step)
            images = normalizer(batch[MODALITY].to(device))
            images = images[_non_constant(images)] if len(images) else images
            if options.crop and len(images):
                images = random_resized_crop(images, generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16):
                if len(images):
                    loss = trained(images, generator=_device_generator(device, generator))
                else:  # every chip constant: a zero-weight step keeps the DDP ranks in lockstep
                    blank = torch.zeros((1, config.channels, config.image_size, config.image_size), device=device)
                    loss = trained(blank, generator=_device_generator(device, generator)) * 0.0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
            if loader.batches % options.checkpoint_every == 0 and loader.batches < len(loader):
                checkpoint()
        progress.close()
        checkpoint()
    if rank == 0:
        save_encoder(encoder_path, model, normalizer)
    if world > 1:
        dist.barrier()
    return encoder_path


def _device_generator(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """A generator on ``device`` seeded from the CPU one (masks are drawn where the model runs)."""
    if device.type == "cpu":
        return generator
    return torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
