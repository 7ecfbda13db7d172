"""Run under torchrun (2 CPU processes): a Lightning DDP fit on M3LEODataModule; each rank writes what it trained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as L
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_lightning import Recorder, datamodule  # noqa: E402


def main(roots: list[str], out: Path) -> None:
    model = Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    data = datamodule(roots)
    trainer.fit(model, data)
    rank = dist.get_rank()
    (out / f"rank{rank}.json").write_text(json.dumps({"steps": trainer.global_step, "batches": model.seen,
                                                      "len": len(data.train_dataloader())}))


if __name__ == "__main__":
    main(sys.argv[2:], Path(sys.argv[1]))
