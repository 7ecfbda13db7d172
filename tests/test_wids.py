"""``wids.ShardListDataset`` reads our per-split index (``metadata/<modality>.<split>.wids.json``, config-named:
``s1grd-2020.train.wids.json``) as given, from a local folder and over HTTP, and yields our samples."""

from __future__ import annotations

import json
import shutil
from functools import partial

import numpy as np
import pyarrow.parquet as pq
import pytest
import wids
from wids.wids_decode import default_decoder

from byte_server import ByteServer
from tests.test_stream_data import source

DECODE = partial(default_decoder, format="numpy")  # .npy -> arrays, .json -> objects


def expected_keys(region_dir, modality: str, split: str) -> list[str]:
    rows = pq.read_table(region_dir / "metadata" / f"{modality}.parquet").to_pylist()
    return [r["chip_id"] for r in sorted(rows, key=lambda r: (r["shard"], r["sample_index"])) if r["split"] == split]


def check(dataset, region_dir, modality: str, split: str) -> None:
    keys = expected_keys(region_dir, modality, split)
    assert len(dataset) == len(keys) > 0
    for i, key in enumerate(keys):
        sample = dataset[i]
        raw = source(region_dir, modality)[key]
        assert sample["__key__"] == key and sample[".json"] == raw["json"]
        fields = sorted(k for k in raw if k != "json")
        assert sorted(k for k in sample if k.endswith(".npy")) == [f".{f}.npy" for f in fields]
        for field in fields:
            np.testing.assert_array_equal(sample[f".{field}.npy"], raw[field])
            assert sample[f".{field}.npy"].dtype == raw[field].dtype


@pytest.mark.parametrize("modality,split", [("s1grd-2020", "train"), ("gunw-2020-01-01-2020-03-31", "val"),
                                            ("esaworldcover-2020", "test"), ("s1grd-2019", "train")])
def test_local_index(built, tmp_path, modality, split):
    region = built / "conus"
    index = region / "metadata" / f"{modality}.{split}.wids.json"
    shards = json.loads(index.read_text())["shardlist"]
    assert shards and all(s["url"].startswith(f"../{modality}/{split}-") for s in shards)
    check(wids.ShardListDataset(str(index), cache_dir=str(tmp_path), transformations=[DECODE]), region, modality, split)


@pytest.mark.skipif(shutil.which("curl") is None, reason="wids downloads http(s) shards with curl")
def test_http_index(built, tmp_path):
    with ByteServer(built) as server:
        dataset = wids.ShardListDataset(f"{server.url}/pakin/metadata/s2rgbm-2020.train.wids.json",
                                        cache_dir=str(tmp_path), transformations=[DECODE])
        assert all(s["url"].startswith(f"{server.url}/pakin/s2rgbm-2020/train-") for s in dataset.shards)
        check(dataset, built / "pakin", "s2rgbm-2020", "train")
