"""examples/train_ddp.py under torchrun (2 CPU processes, gloo): runs and the loss goes down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_ddp.py"


def test_torchrun_example_trains(built):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(EXAMPLE),
               "--data", str(built), "--region", "conus", "--steps", "6", "--batch-size", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 ranks on cpu, 1 batches per rank per epoch" in result.stdout
    losses = [float(x) for x in re.findall(r"^step \d+ epoch \d+ loss ([0-9.]+)$", result.stdout, re.M)]
    assert len(losses) == 6, result.stdout
    assert losses[-1] < losses[0] * 0.9 and sum(losses[-2:]) < sum(losses[:2]), losses
