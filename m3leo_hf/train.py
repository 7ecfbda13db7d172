"""Train an upstream M3LEO experiment on our shards with Lightning and Hydra (extra ``m3leo-hf[hydra]``):

    python -m m3leo_hf.train experiment=baseline-esawc/s1grd-vv-vh data.roots=[OUT/conus,OUT/europe]

``m3leo_hf/configs/train.yaml`` holds the defaults (upstream: batch 8, 60 epochs, seed 42); each
``configs/experiment/<upstream experiment>.yaml`` sets the preset and the model's channels and task. Runs
unchanged on CPU and GPUs (``trainer.accelerator``, ``trainer.devices``, ``trainer.strategy``).
"""

from __future__ import annotations

import hydra
import lightning.pytorch as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from m3leo_hf.models import UNet, masked_patches

TASKS = ("segmentation", "regression", "reconstruction")


class Baseline(L.LightningModule):
    """A UNet on ``batch["x"]``. ``segmentation``: cross-entropy over ``num_classes`` against ``y``;
    ``regression``: the output average-pooled to the label grid, RMSE against ``y`` (upstream casts the label
    to long first, which truncates it: not done here); ``reconstruction`` (stand-in for MAE pre-training, not
    upstream's ViT): MSE on ``mask_ratio`` of 16-pixel patches hidden from the input."""

    def __init__(self, in_channels: int, task: str = "segmentation", num_classes: int = 11, width: int = 64,
                 depth: int = 4, lr: float = 1e-3, mask_ratio: float = 0.75):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        self.save_hyperparameters()
        out = {"segmentation": num_classes, "regression": 1, "reconstruction": in_channels}[task]
        self.net = UNet(in_channels, out, width=width, depth=depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, batch: dict) -> torch.Tensor:
        x = batch["x"].float()
        if x.shape[1] != self.hparams.in_channels:
            raise ValueError(f"the data has {x.shape[1]} input channels, the model {self.hparams.in_channels}")
        if self.hparams.task == "reconstruction":
            hidden = masked_patches(x, self.hparams.mask_ratio, 16)
            out = self(x.masked_fill(hidden, 0.0))
            return ((out - x) ** 2 * hidden).sum() / (hidden.sum() * x.shape[1]).clamp(min=1)
        out, y = self(x), batch["y"]
        if self.hparams.task == "segmentation":
            return F.cross_entropy(out, y.long(), ignore_index=255)
        pred = F.adaptive_avg_pool2d(out, y.shape[-2:])
        return torch.sqrt(F.mse_loss(pred, y.float()))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["x"]))
        rank_zero_info(f"step {self.global_step} epoch {self.current_epoch} loss {loss.item():.6f}")
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("val/loss", loss, batch_size=len(batch["x"]), sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def run(cfg: DictConfig) -> L.Trainer:
    """Instantiate ``cfg.data``, ``cfg.model``, ``cfg.trainer`` and fit."""
    L.seed_everything(cfg.seed, workers=True)
    data, model, trainer = instantiate(cfg.data), instantiate(cfg.model), instantiate(cfg.trainer)
    trainer.fit(model, data)
    return trainer


@hydra.main(version_base=None, config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
