"""The shipped Hydra configs (m3leo_hf/configs): every experiment composes and instantiates (data module, model,
trainer) and its model takes the data's channels; ``python -m m3leo_hf.train`` trains on small shards, loss down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from m3leo_hf.presets import names

REGIONS = ("conus", "europe", "pakin")
SMALL = ["data.batch_size=2", "+data.stream_options.crop=32", "+data.stream_options.sar_size=32", "model.width=4",
         "model.depth=2"]


def roots_override(built: Path) -> str:
    return "data.roots=[" + ",".join(str(built / r) for r in REGIONS) + "]"


def test_every_experiment_has_a_config():
    shipped = Path(__file__).resolve().parents[1] / "m3leo_hf" / "configs" / "experiment"
    assert sorted(str(p.relative_to(shipped).with_suffix("")) for p in shipped.rglob("*.yaml")) == names()


@pytest.mark.parametrize("name", names())
def test_config_instantiates_and_fits_its_data(name, built):
    with initialize_config_module("m3leo_hf.configs", version_base=None):
        cfg = compose("train", overrides=[f"experiment={name}", roots_override(built), *SMALL])
    data, model, trainer = instantiate(cfg.data), instantiate(cfg.model), instantiate(cfg.trainer)
    assert data.preset == name and trainer.max_epochs == cfg.trainer.max_epochs
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        loss = model.eval().loss(batch)
    assert torch.isfinite(loss)


def test_train_example_loss_decreases(built, tmp_path):
    command = [sys.executable, "-m", "m3leo_hf.train", "experiment=baseline-esawc/s1grd-vv-vh", roots_override(built),
               "data.batch_size=4", "+data.stream_options.crop=32", "model.width=8", "model.depth=2", "model.lr=0.01",
               "trainer.max_epochs=8", "trainer.limit_val_batches=0", "trainer.enable_checkpointing=false",
               "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                                os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"step \d+ epoch \d+ loss ([0-9.]+)", result.stdout + result.stderr)]
    assert len(losses) >= 16, result.stdout[-2000:] + result.stderr[-2000:]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
