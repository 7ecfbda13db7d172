"""M3LEODataModule under a real lightning.Trainer (CPU): epochs of len(loader) batches, a new order every epoch,
exact mid-epoch resume from a Lightning checkpoint, equal batch counts on 2 gloo ranks (torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from m3leo_hf.lightning import M3LEODataModule

REGIONS = ("conus", "europe", "pakin")
QUIET = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
             limit_val_batches=0, num_sanity_val_steps=0)


class Killed(RuntimeError):
    """Stands for a kill: the run stops where it is, after its last checkpoint."""


class Recorder(L.LightningModule):
    """A one-parameter model that records the chip ids of every batch it trains on."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []
        self.stop_at = stop_at

    def training_step(self, batch, batch_idx):
        if self.stop_at is not None and self.global_step == self.stop_at:
            raise Killed(f"killed at step {self.global_step}")
        self.seen.append(list(batch["chip_id"]))
        return (self.weight * batch["s1grd"].float().mean() - 1) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def datamodule(roots) -> M3LEODataModule:
    return M3LEODataModule(roots, modalities=["s1grd"], batch_size=2,
                           stream_options={"spatial_size": 32, "missing": "skip", "shuffle_buffer": 3, "seed": 5})


@pytest.fixture(scope="module")
def roots(built) -> list[str]:
    return [str(built / r) for r in REGIONS]


def test_epochs_are_whole_and_reshuffled(roots):
    model, data = Recorder(), datamodule(roots)
    trainer = L.Trainer(max_epochs=3, enable_checkpointing=False, **QUIET)
    trainer.fit(model, data)
    n = len(data.train_dataloader())
    assert n > 2 and trainer.global_step == 3 * n and len(model.seen) == 3 * n
    epochs = [sum(model.seen[e * n:(e + 1) * n], []) for e in range(3)]
    assert all(sorted(e) == sorted(epochs[0]) for e in epochs)  # every epoch the same chips...
    assert len({tuple(e) for e in epochs}) == 3  # ...in a different order


@pytest.mark.parametrize("offset", [2, 0], ids=["mid-epoch", "last-batch"])
def test_resume_from_a_checkpoint_gets_the_remaining_batches(roots, tmp_path, offset):
    whole = Recorder()
    L.Trainer(max_epochs=3, enable_checkpointing=False, **QUIET).fit(whole, datamodule(roots))
    n = len(whole.seen) // 3
    stop = n + offset  # a checkpoint two batches into the second epoch, or on the first epoch's last batch
    saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1, filename="{step}")
    killed = Recorder(stop_at=stop + 2)
    with pytest.raises(Killed):
        L.Trainer(max_epochs=3, callbacks=[saver], **QUIET).fit(killed, datamodule(roots))
    assert killed.seen == whole.seen[:stop + 2]
    resumed = Recorder()
    trainer = L.Trainer(max_epochs=3, enable_checkpointing=False, **QUIET)
    trainer.fit(resumed, datamodule(roots), ckpt_path=tmp_path / f"step={stop}.ckpt")
    assert resumed.seen == whole.seen[stop:] and trainer.global_step == 3 * n


def test_resume_with_other_order_options_is_refused(roots, tmp_path):
    saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    L.Trainer(max_steps=2, callbacks=[saver], **QUIET).fit(Recorder(), datamodule(roots))
    other = datamodule(roots)
    other.stream_options["shuffle_buffer"] = 7
    with pytest.raises(ValueError, match="shuffle_buffer: saved 3, now 7"):
        L.Trainer(max_epochs=1, enable_checkpointing=False, **QUIET).fit(Recorder(), other,
                                                                          ckpt_path=tmp_path / "step=2.ckpt")


def test_two_gloo_ranks_get_equal_batch_counts(roots, tmp_path):
    script = Path(__file__).parent / "scripts" / "lightning_ddp.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               str(tmp_path), *roots]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["len"] == ranks[1]["len"] > 0
    assert all(r["steps"] == 2 * r["len"] and len(r["batches"]) == 2 * r["len"] for r in ranks)
    chips = [set(sum(r["batches"][:r["len"]], [])) for r in ranks]
    assert not chips[0] & chips[1]  # the ranks share the epoch, they do not repeat it
