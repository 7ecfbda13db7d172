"""GUNW files in the layout rramosp/sartiles writes (pairs in granule-query order, ``extraMetaData/deltadays`` its own
sorted dimension; sartiles gunw.py:170-172,283-292,450-463,516): the sample variant, the build, ``stream(datepairs=)``
and upstream's pair rule (far/close = first/last matching pair in file order, M3LEO io/io_blosc.py:494-499)."""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path

import h5netcdf
import numpy as np
import pytest

import m3leo_hf
from builders.sample import write_sample
from shard_tools.build import build

WINDOWS = {"short": (0, 60), "medium": (72, 132), "long": (140, 216)}


@pytest.fixture(scope="module")
def sartiles(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sartiles")
    write_sample(root / "chips", regions=("conus", "pakin"), chips_per_region=8, pixels=32, seed=0, gunw_layout="sartiles")
    build(root / "chips", root / "shards", modalities=["gunw"], shard_size_mb=0.12)
    return root / "chips", root / "shards"


def chip_files(chips: Path) -> dict[str, Path]:
    return {p.stem: p for p in chips.glob("*/*/gunw_*/*.nc")}


def read_pairs(path: Path) -> tuple[np.ndarray, list[str], list[int]]:
    with h5netcdf.File(path, "r") as nc:
        data, extra = nc["science/grids/data"], nc["science/extraMetaData"]
        labels = [v.decode() if isinstance(v, bytes) else str(v) for v in data.variables["datepair"][:]]
        assert extra.variables["deltadays"].dimensions == ("deltadays",)
        return data.variables["unwrappedPhase"][:], labels, list(extra.variables["deltadays"][:])


def days(label: str) -> int:
    later, earlier = (datetime.strptime(d, "%Y%m%d") for d in label.split("_"))
    return (later - earlier).days


def test_sample_writes_the_sartiles_layout(sartiles):
    chips, _ = sartiles
    unsorted = 0
    for path in chip_files(chips).values():
        _, labels, deltadays = read_pairs(path)
        baselines = [days(label) for label in labels]
        assert deltadays == sorted(set(baselines))
        unsorted += baselines != sorted(baselines, reverse=True)
    assert unsorted > 0  # file order is not baseline order: far/close rules can differ


@pytest.mark.parametrize("rule", ["far", "close"])
def test_file_order_rule_matches_upstream_and_differs_from_ours(sartiles, rule):
    chips, shards = sartiles
    files = chip_files(chips)
    roots = [str(shards / r) for r in ("conus", "pakin")]
    spec = {"windows": WINDOWS, "rule": rule}
    upstream = {s["chip_id"]: s for s in m3leo_hf.stream(roots, modalities=["gunw"], split="train", missing="skip",
                                                          datepairs={**spec, "order": "file"})}
    ours = {s["chip_id"]: s for s in m3leo_hf.stream(roots, modalities=["gunw"], split="train", missing="skip",
                                                      datepairs=spec)}
    assert upstream and upstream.keys() == ours.keys()
    differ = 0
    for chip, sample in upstream.items():
        phase, labels, _ = read_pairs(files[chip])
        baselines = [days(label) for label in labels]
        for i, (low, high) in enumerate(WINDOWS.values()):
            match = [k for k, d in enumerate(baselines) if low <= d <= high]
            assert bool(sample["gunw"]["pairs_available"][i]) == bool(match)
            if match:
                want = phase[match[0] if rule == "far" else match[-1]]
                np.testing.assert_array_equal(sample["gunw"]["unwrappedphase"][i].numpy(), want)
        differ += not np.array_equal(sample["gunw"]["unwrappedphase"].numpy(), ours[chip]["gunw"]["unwrappedphase"].numpy(),
                                     equal_nan=True)
    assert differ > 0


def test_date_bounds_filter_pairs(sartiles):
    _, shards = sartiles
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samples = list(m3leo_hf.stream([str(shards / "conus")], modalities=["gunw"], split="train", missing="skip",
                                       datepairs={"windows": {"all": (0, 400)}, "rule": "mean",
                                                  "first_start_date": "20200101"}))
    for sample in samples:
        starts = [label.split("_")[1] for label in sample["meta"]["gunw"]["dates"]["datepairs"]]
        assert bool(sample["gunw"]["pairs_available"][0]) == any(s >= "20200101" for s in starts)
    with pytest.raises(ValueError, match="YYYYMMDD"):
        m3leo_hf.stream([str(shards / "conus")], modalities=["gunw"], datepairs={"last_end_date": "2020-03-01"})


def test_event_pairs_pre_co_pos():
    from m3leo_hf.stages import Chip, SelectEventPairs
    labels = ["20200110_20191201", "20200301_20200101", "20200320_20200305", "20200201_20191225", "20200115_20191130"]
    stack = np.arange(len(labels), dtype=np.float32)[:, None, None] * np.ones((1, 1, 2), np.float32)
    chip = Chip("gunw", {"unwrappedphase": stack}, {"unwrappedphase": {"dims": ["datepair", "latitude", "longitude"]}},
                dates={"datepairs": labels})
    event = dict(event_start="20200120", event_end="20200205")
    # pre: ends before 2020-01-20 (pairs 0 and 4; upstream takes the farthest, 0); co: spans the event (1 only,
    # pair 3 ends before its end); pos: starts after 2020-02-05 (pair 2)
    assert SelectEventPairs(**event).choose(labels) == [0, 1, 2]
    assert SelectEventPairs(**event, pre_rule="nearest").choose(labels) == [4, 1, 2]
    out = SelectEventPairs(**event, modes=("pos", "pre")).__call__(chip).arrays
    assert out["unwrappedphase"][:, 0, 0].tolist() == [2.0, 0.0] and out["pairs_available"].tolist() == [True, True]
    none = SelectEventPairs(event_start="20210101", event_end="20210102")(chip).arrays
    assert none["pairs_available"].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="before event_start"):
        SelectEventPairs(event_start="20200205", event_end="20200120")
