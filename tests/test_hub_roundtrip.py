"""A whole built region published to the local Hub and read back with stock ``load_dataset`` through
``HF_ENDPOINT``: every modality and split equals the source chips, dtype and shape included."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from local_hub import TEST_TOKEN, LocalHub

from builders import read_chip
from dataset_cards.card import write_card
from shard_tools.inventory import find_regions, scan_region
from shard_tools.publish import publish

REPO_ID = "M3LEO-test/conus"
pytestmark = pytest.mark.datasets  # run on the oldest supported datasets too (make test-datasets-oldest)
SPLITS = {"train": "train", "val": "validation", "test": "test"}

LOAD_EVERY_MODALITY = """
import hashlib, json, sys
import numpy as np
from datasets import get_dataset_config_names, load_dataset

repo, splits = sys.argv[1], json.loads(sys.argv[2])
out = {}
for config in get_dataset_config_names(repo):
    for split in splits:
        for example in load_dataset(repo, config, split=split, streaming=True):
            fields = {}
            for name, value in example.items():
                if name.endswith(".npy") and value is not None:
                    declared = example["json"]["fields"][name[:-4]]["dtype"]
                    raw = np.asarray(value)
                    if raw.ndim and str(raw.dtype) != declared:  # 0-d values come back as Python scalars
                        raise SystemExit(f"{config} {example['__key__']} {name}: {raw.dtype} != {declared}")
                    array = np.asarray(value, dtype=declared)
                    fields[name[:-4]] = [str(array.dtype), list(array.shape),
                                         hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()]
            out.setdefault(config, {})[example["__key__"]] = [split, example["json"]["available"], fields]
print(json.dumps(out))
"""


def fingerprint(array: np.ndarray) -> list:
    return [str(array.dtype), list(array.shape), hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()]


def test_every_modality_loads_through_the_endpoint_after_publish(built, sample_chips, local_hub: LocalHub,
                                                                tmp_path: Path):
    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region, ignore=shutil.ignore_patterns(".build"))
    write_card(region, repo_id=REPO_ID, license="cc-by-4.0")
    publish(region, REPO_ID, endpoint=local_hub.url, token=TEST_TOKEN)

    done = subprocess.run([sys.executable, "-c", LOAD_EVERY_MODALITY, REPO_ID, json.dumps(list(SPLITS.values()))],
                          env=local_hub.client_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1])

    inventory = scan_region(find_regions(sample_chips)["conus"])
    configs = {config: modality for modality in inventory.modalities  # every modality and each of its aliases
               for config in (modality, *inventory.specs[modality].aliases)}
    assert sorted(loaded) == sorted(configs)
    for config, samples in loaded.items():
        modality = configs[config]
        assert sorted(samples) == [chip.chip_id for chip in inventory.chips], config
        for chip in inventory.chips:
            split, available, fields = samples[chip.chip_id]
            assert split == SPLITS[chip.split]
            source = inventory.source(modality, chip.chip_id)
            assert available == (source.status == "file")
            expected = ({} if not available else
                        read_chip(inventory.specs[modality], Path(source.path), chip.chip_id).arrays)
            assert fields == {name: fingerprint(array) for name, array in expected.items()}, (config, chip)
