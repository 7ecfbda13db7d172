"""GUNW date-pair selection (``datepairs=``): fixed-size (n_windows, H, W) tensors chosen by temporal
baseline, checked against expectations computed by hand from the raw shard members."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import m3leo_hf
from dataset_cards.card import write_card
from m3leo_hf.transforms import GUNW_BASELINES, DatePairs, ModalityTransform
from tests.conftest import canonical
from tests.test_stream_data import source

FIELDS = ("unwrappedphase", "coherence", "connectedcomponents")
REGIONS = ("conus", "pakin")


def baseline_days(label: str) -> int:
    later, earlier = label.split("_")
    return (dt.date(int(later[:4]), int(later[4:6]), int(later[6:])) -
            dt.date(int(earlier[:4]), int(earlier[4:6]), int(earlier[6:]))).days


def expected(raw: dict, field: str, windows: dict, rule: str, stats: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The reference loader's rule: first (far) / last (close) / mean of the pairs inside each window."""
    meta = raw["json"]["fields"][field]
    values = raw[field].astype(np.float32)
    nodata = float(meta["nodata"])
    values[np.isnan(values) | (raw[field] == nodata)] = np.nan
    if stats:
        values = (values - np.float32(stats[field]["mean"][0])) / np.float32(stats[field]["std"][0])
    days = [baseline_days(label) for label in raw["json"]["dates"]["datepairs"]]
    out, available = np.zeros((len(windows),) + values.shape[1:], np.float32), []
    for i, (low, high) in enumerate(windows.values()):
        match = [k for k, d in enumerate(days) if low <= d <= high]
        available.append(bool(match))
        if match:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
                out[i] = {"far": values[match[0]], "close": values[match[-1]],
                          "mean": np.nanmean(values[match], axis=0)}[rule]
    if stats:
        out[~np.isfinite(out)] = 0.0
    return out, np.array(available)


def train_stats(region: Path) -> dict:
    return json.loads((region / "metadata" / f"{canonical('gunw')}.stats.json").read_text())["splits"]["train"]


def test_labels_agree_with_deltadays_and_far_is_the_longest_baseline(built):
    checked = 0
    for region in REGIONS:
        for raw in source(built / region, "gunw").values():
            if raw["json"]["available"]:
                labels = raw["json"]["dates"]["datepairs"]
                days = [baseline_days(label) for label in labels]
                assert raw["deltadays"].tolist() == days
                assert days == sorted(days, reverse=True)  # later_earlier sorted: first pair = longest baseline
                checked += 1
    assert checked, "no GUNW sample was read"


@pytest.mark.parametrize("rule", ["far", "close", "mean"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_rules_equal_hand_computed_selection(built, rule, normalize):
    spec = {"fields": list(FIELDS), "windows": GUNW_BASELINES, "rule": rule}
    seen, counts = 0, np.zeros(len(GUNW_BASELINES), int)
    for region in REGIONS:
        stats = train_stats(built / region) if normalize else None
        data = m3leo_hf.stream(str(built / region), modalities=["gunw"], split="train", shuffle=False,
                               datepairs=spec, normalize=normalize, missing="skip")
        for sample in data:
            raw = source(built / region, "gunw")[sample["chip_id"]]
            assert set(sample["gunw"]) == set(FIELDS) | {"pairs_available"}
            for field in FIELDS:
                want, available = expected(raw, field, GUNW_BASELINES, rule, stats)
                got = sample["gunw"][field]
                assert got.dtype == torch.float32 and tuple(got.shape) == want.shape
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6, equal_nan=True)
                assert sample["gunw"]["pairs_available"].tolist() == available.tolist()
                assert not got[~sample["gunw"]["pairs_available"]].any()  # missing window: zeros
            if normalize:
                assert torch.isfinite(sample["gunw"]["unwrappedphase"]).all()
            counts += available
            seen += 1
    assert seen >= 8 and 0 < counts.min() < seen  # every window used, some missing


def test_missing_windows_are_zeros_with_mask_false(built):
    windows = {"none": (0, 5), "all": (0, 400), "twelve": (12, 12)}
    data = m3leo_hf.stream(str(built / "conus"), modalities=["gunw"], split="train", shuffle=False,
                           missing="skip", datepairs={"fields": "coherence", "windows": windows, "rule": "close"})
    for sample in data:
        days = [baseline_days(label) for label in sample["meta"]["gunw"]["dates"]["datepairs"]]
        mask = sample["gunw"]["pairs_available"]
        assert mask.dtype == torch.bool and mask.tolist() == [False, True, 12 in days]
        assert not sample["gunw"]["coherence"][0].any() and sample["gunw"]["coherence"].shape[0] == 3
        if 12 not in days:
            assert not sample["gunw"]["coherence"][2].any()


def test_batches_with_spatial_size_alongside_s1grd(built):
    roots = [str(built / region) for region in REGIONS]
    options = dict(modalities=["gunw", "s1grd"], split="train", shuffle=False, spatial_size=6,
                   datepairs={"fields": ["unwrappedphase", "amplitude"]})
    singles = {s["chip_id"]: s for s in m3leo_hf.stream(roots, **options)}
    batches = list(m3leo_hf.stream(roots, batch_size=2, **options))
    assert batches and all(len(b["chip_id"]) == 2 for b in batches)
    for batch in batches:
        assert tuple(batch["gunw"]["unwrappedphase"].shape) == (2, 3, 6, 6)
        assert tuple(batch["gunw"]["pairs_available"].shape) == (2, 3)
        assert tuple(batch["s1grd"].shape) == (2, 16, 6, 6)
        for i, chip in enumerate(batch["chip_id"]):
            for key in ("unwrappedphase", "amplitude", "pairs_available"):
                torch.testing.assert_close(batch["gunw"][key][i], singles[chip]["gunw"][key], rtol=0, atol=0,
                                           equal_nan=True)
            assert batch["gunw_available"][i] == singles[chip]["gunw_available"]
            assert torch.equal(batch["s1grd"][i], singles[chip]["s1grd"])


def test_region_without_gunw_gives_zeros_and_no_pairs(built):
    data = m3leo_hf.stream([str(built / "conus"), str(built / "europe")], modalities=["gunw", "s1grd"],
                           split="train", shuffle=False, batch_size=2, spatial_size=8, normalize=True,
                           missing="mask", datepairs=True)
    europe = 0
    for batch in data:
        for i, region in enumerate(batch["region"]):
            if region == "europe":
                europe += 1
                assert not batch["gunw_available"][i] and not batch["gunw"]["pairs_available"][i].any()
                assert not batch["gunw"]["unwrappedphase"][i].any()
                assert batch["s1grd_available"][i]
        assert tuple(batch["gunw"]["unwrappedphase"].shape) == (len(batch["region"]), 3, 8, 8)
    assert europe >= 2


@pytest.mark.datasets
@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "prepared"])
def test_load_gives_the_stream_tensors(built, tmp_path, streaming):
    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region, ignore=shutil.ignore_patterns(".build"))
    write_card(region)
    spec = {"fields": ["unwrappedphase", "coherence"], "windows": {"s": (0, 30), "l": (100, 200)}, "rule": "mean"}
    streamed = {s["chip_id"]: s["gunw"] for s in m3leo_hf.stream(
        str(built / "conus"), modalities=["gunw"], split="val", missing="skip", normalize=True, datepairs=spec)}
    loaded = list(m3leo_hf.load(region, "gunw", "val", streaming=streaming, datepairs=spec,
                                cache_dir=str(tmp_path / "cache")))
    assert sorted(s["__key__"] for s in loaded) == sorted(streamed) and streamed
    for sample in loaded:
        for key in ("unwrappedphase", "coherence", "pairs_available"):
            assert torch.equal(sample[key], streamed[sample["__key__"]][key])


def test_transform_checks_deltadays_and_options():
    field = {"dims": ["datepair", "latitude", "longitude"], "dtype": "float32", "nodata": "nan", "shape": [2, 1, 2]}
    arrays = {"unwrappedphase": np.array([[[1.0, np.nan]], [[3.0, 5.0]]], np.float32),
              "deltadays": np.array([48, 12], np.uint8)}
    dates = {"datepairs": ["20200301_20200113", "20200301_20200218"]}
    fields = {"unwrappedphase": field, "deltadays": {"dims": ["datepair"], "dtype": "uint8", "shape": [2]}}
    mean = ModalityTransform("gunw", datepairs={"windows": {"w": (0, 100), "x": (13, 47)}, "rule": "mean"})
    out = mean(arrays, fields, dates)
    np.testing.assert_array_equal(out["unwrappedphase"], [[[2.0, 5.0]], [[0.0, 0.0]]])
    assert out["pairs_available"].tolist() == [True, False]
    far = ModalityTransform("gunw", datepairs=DatePairs(windows={"w": (0, 100)}, rule="far"))
    np.testing.assert_array_equal(far(arrays, fields, dates)["unwrappedphase"][0], [[1.0, np.nan]])
    with pytest.raises(ValueError, match="deltadays"):
        mean({**arrays, "deltadays": np.array([48, 13], np.uint8)}, fields, dates)
    with pytest.raises(ValueError, match="rule"):
        ModalityTransform("gunw", datepairs={"rule": "none"})
    with pytest.raises(ValueError, match="date pairs"):
        ModalityTransform("s1grd", datepairs=True)
    with pytest.raises(ValueError, match="date pairs"):
        m3leo_hf.stream([], modalities=["s1grd"], datepairs=True)
