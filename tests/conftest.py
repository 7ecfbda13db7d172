"""Shared fixtures: the embedded sample chip tree and shards built from it (session-scoped, small)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import get_modality
from builders.sample import write_sample
from shard_tools.build import build

pytest_plugins = ["local_hub"]  # the ``local_hub`` fixture: a Hub-compatible HTTP server on 127.0.0.1

SAMPLE_KWARGS = dict(regions=("conus", "europe", "pakin"), chips_per_region=10, pixels=32, seed=0)
CHIPS_PER_SHARD = 3  # several shards per split


def canonical(name: str) -> str:
    """The config, shard-folder and metadata name of a modality given by name or alias (``s1grd`` -> ``s1grd-2020``)."""
    return get_modality(name).name


@pytest.fixture(scope="session")
def sample_chips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chips")
    write_sample(out, **SAMPLE_KWARGS)
    return out


@pytest.fixture(scope="session")
def built(sample_chips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    build(sample_chips, out, chips_per_shard=CHIPS_PER_SHARD)
    return out
