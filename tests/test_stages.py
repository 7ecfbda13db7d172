"""Stages of m3leo_hf.stages, the stream's frozen config and its resume fingerprint, the user transform hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import m3leo_hf
from m3leo_hf.config import StreamConfig
from m3leo_hf.stages import (Chip, ClassLabels, CropPad, Difference, FillNaN, FlagConstant, MonthGroups, Normalize,
                             PercentileStretch, Pipeline, Resize, SelectCoords, SummarizeSeasons, ToFloat, build_pipeline,
                             class_labels)
from m3leo_hf.transforms import ModalityTransform

GRID = {"dims": ["band", "y", "x"], "dtype": "float32"}


def chip(array: np.ndarray, names=None, **extra) -> Chip:
    field = {**GRID, "shape": list(array.shape), **({"band_names": names} if names else {})}
    return Chip("s1grd", {"s1grd": array}, {"s1grd": field}, **extra)


def test_bilinear_resize_is_antialiased_and_nan_aware():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(2, 20, 30)).astype(np.float32)
    out = Resize((7, 9))(chip(array)).arrays["s1grd"]
    # an antialiased 30 -> 9 downsample averages over the footprint: its variance drops far below a point sample's
    assert out.shape == (2, 7, 9) and out.std() < 0.6 * array.std()
    constant = np.full((1, 10, 10), 4.0, np.float32)
    constant[0, 2:4, 2:4] = np.nan
    aware = Resize(25)(chip(constant)).arrays["s1grd"]  # valid pixels keep their value; NaN only deep in the hole
    np.testing.assert_allclose(aware[np.isfinite(aware)], 4.0, rtol=1e-6)
    assert 0 < np.isnan(aware).sum() < 25
    filled = Resize(25, fill_nan=0.0)(chip(constant)).arrays["s1grd"]
    assert filled.min() < 4.0 and not np.isnan(filled).any()


def test_mean_preserving_resize_and_nearest_class_maps():
    values = np.arange(12 * 16, dtype=np.float32).reshape(1, 12, 16) % 7
    values[0, :3, :3] = np.nan
    out = Resize((5, 6), fill_nan=0.0, preserve_mean=True)(chip(values)).arrays["s1grd"]
    np.testing.assert_allclose(out.mean(), np.nanmean(values), rtol=1e-5)
    codes = np.array([[10, 10, 20, 20], [10, 10, 20, 20], [30, 30, 40, 40], [30, 30, 40, 40]], np.uint8)[None]
    labels = Resize(8, mode="nearest")(chip(codes)).arrays["s1grd"]
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {10, 20, 30, 40}
    assert (labels[0, :4, :4] == 10).all() and (labels[0, 4:, 4:] == 40).all()


def test_normalised_fields_are_padded_with_zeros():
    field = {"dims": ["band", "y", "x"], "dtype": "uint16", "nodata": 0, "view_as": "int16", "band_names": ["a"]}
    stats = {"s1grd": {"band_names": ["a"], "mean": [-10.0], "std": [2.0]}}
    raw = np.array([[[0, 65526], [65524, 65530]]], np.uint16)  # nodata, -10, -12, -6 dB
    out = ModalityTransform("s1grd", stats=stats, normalize=True, spatial_size=4)({"s1grd": raw}, {"s1grd": field})
    np.testing.assert_array_equal(out["s1grd"][0, 1:3, 1:3], [[0.0, 0.0], [-1.0, 2.0]])
    assert np.isfinite(out["s1grd"]).all() and out["s1grd"][0, 0].tolist() == [0.0] * 4


@pytest.mark.parametrize("dtype, nodata", [("int16", -32768), ("uint16", 0), ("float32", float("nan")),
                                           ("float32", -9999.0), ("float64", None), ("uint8", None)])
def test_one_pass_normalise_equals_float_normalise_fill(dtype, nodata):
    """``Normalize(fill=0)`` (the stream's) gives the bits and metadata of ToFloat -> Normalize -> FillNaN(0)."""
    rng = np.random.default_rng(1)
    array = rng.integers(-50, 200, size=(2, 30, 40)).astype(dtype)
    if array.dtype.kind == "f":
        array[0, 0, 0], array[1, 2, 3] = np.nan, np.inf
    if nodata is not None and nodata == nodata:
        array[0, 5, 5] = nodata
    field = {**GRID, "dtype": dtype, "shape": list(array.shape), "band_names": ["a", "b"], "nodata": nodata}
    stats = {"s1grd": {"band_names": ["a", "b"], "count": [1, 1], "mean": [3.3, -1.5], "std": [7.1, 0.0]}}
    three = Pipeline([ToFloat(), Normalize(stats), FillNaN(0.0)])(Chip("s1grd", {"s1grd": array}, {"s1grd": field}))
    one = Normalize(stats, fill=0.0)(Chip("s1grd", {"s1grd": array}, {"s1grd": field}))
    assert one.arrays["s1grd"].dtype == np.float32 and np.array_equal(one.arrays["s1grd"], three.arrays["s1grd"])
    assert one.fields["s1grd"] == three.fields["s1grd"]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "float32"])
def test_class_labels_table_lookup(dtype):
    """Codes of every integer width and floats (NaN, fractions) map to the classes or the ignore index."""
    codes = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
    values = np.random.default_rng(0).integers(-5, 120, size=(50, 60)).astype(dtype)
    if dtype == "float32":
        values[0, 0], values[0, 1] = np.nan, 10.5
    label, presence = class_labels(values, codes)
    index = {code: i for i, code in enumerate(codes)}
    expected = np.array([[index.get(int(v), 255) if np.isfinite(v) and v == round(v) else 255 for v in row]
                         for row in values.astype(np.float64)])
    assert label.dtype == np.int64 and np.array_equal(label, expected)
    assert presence.tolist() == [float(i in expected) for i in range(len(codes))]


@pytest.mark.parametrize("size", [(3, 3), (5, 7), (6, 9), (3, 9), (2, 2)])
def test_crop_first_then_pad_equals_crop_pad(size):
    """The stream crops stored values first (``CropPad(pad=False)``, views) and pads last: same result."""
    array = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    whole = CropPad(size)(chip(array)).arrays["s1grd"]
    cropped = CropPad(size, pad=False)(chip(array)).arrays["s1grd"]
    assert np.shares_memory(cropped, array)
    assert np.array_equal(CropPad(size)(chip(cropped)).arrays["s1grd"], whole, equal_nan=True)


def test_crop_pad_follows_coordinates():
    c = Chip("biomass", {"agb": np.ones((3, 4), np.float32), "lat": np.arange(3.0), "lon": np.arange(4.0)},
             {"agb": {"dims": ["lat", "lon"], "dtype": "float32"}, "lat": {"dims": ["lat"]}, "lon": {"dims": ["lon"]}})
    out = CropPad(4)(c).arrays
    assert out["agb"].shape == (4, 4) and np.isnan(out["agb"]).sum() == 4
    assert np.isnan(out["lat"]).sum() == 1 and out["lon"].tolist() == [0, 1, 2, 3]


def test_derived_channels_seasons_and_month_groups():
    names = ["winter_vvasc", "winter_vhasc", "spring_vvasc", "spring_vhasc"]
    array = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 1, 2), np.float32)
    diff = Difference([("winter_vvvhasc", "winter_vvasc", "winter_vhasc")])(chip(array, names))
    assert diff.band_names("s1grd")[0] == "winter_vvvhasc" and diff.arrays["s1grd"][0].tolist() == [[-1.0, -1.0]]
    summary = SummarizeSeasons()(chip(array, names))
    assert summary.band_names("s1grd") == ["vhasc", "vvasc"]
    np.testing.assert_array_equal(summary.arrays["s1grd"][:, 0, 0], [2.0, 1.0])
    s2 = [f"{m}_{c}" for m in ("01", "02") for c in ("red", "green", "blue")]
    grouped = MonthGroups([["01", "02"]])(chip(np.arange(6, dtype=np.float32)[:, None, None] + np.zeros((6, 1, 1),
                                                                                                         np.float32), s2))
    assert grouped.band_names("s1grd") == ["01-02_red", "01-02_green", "01-02_blue"]
    np.testing.assert_array_equal(grouped.arrays["s1grd"][:, 0, 0], [1.5, 2.5, 3.5])


def test_coordinate_selection_keeps_the_requested_order():
    coherence = np.arange(4 * 4, dtype=np.float32).reshape(4, 4, 1, 1)
    c = Chip("gssic", {"coherence": coherence, "deltadays": np.array([12, 24, 36, 48])},
             {"coherence": {"dims": ["season", "deltadays", "y", "x"]}, "deltadays": {"dims": ["deltadays"]}},
             labels={"/season": ["summer", "fall", "winter", "spring"]})
    out = SelectCoords({"coherence": {"season": ["winter", "summer"], "deltadays": [36]}})(c)
    assert out.arrays["coherence"][:, :, 0, 0].tolist() == [[10.0], [2.0]]
    assert out.band_names("coherence") == ["winter_36", "summer_36"]
    with pytest.raises(KeyError, match="unknown band"):
        SelectCoords({"coherence": {"season": ["monsoon"]}})(c)


def test_percentile_stretch_and_class_labels_other_code():
    out = PercentileStretch(0, 100)(chip(np.array([[[2.0, 4.0, 6.0]]], np.float32))).arrays["s1grd"]
    np.testing.assert_allclose(out, [[[0.0, 0.5, 1.0]]])
    c = Chip("esaworldcover", {"esaworldcover": np.array([[[0, 10, 20]]], np.uint8)},
             {"esaworldcover": {"dims": ["band", "y", "x"]}})
    assert ClassLabels((10, 20))(c).arrays["label"].tolist() == [[255, 0, 1]]
    assert ClassLabels((10, 20), other=0)(c).arrays["label"].tolist() == [[0, 0, 1]]


def test_flag_constant_channels():
    varying = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    assert not FlagConstant()(chip(varying)).arrays["constant_channels"]
    flat = varying.copy()
    flat[1] = 3.0
    assert FlagConstant()(chip(flat)).arrays["constant_channels"]
    holey = varying.copy()
    holey[1, 0, 0] = np.nan  # a NaN std is not a constant channel (as upstream's np.std check)
    assert not FlagConstant()(chip(holey)).arrays["constant_channels"]


def test_lonlat_is_the_chip_centre(built):
    sample = next(iter(m3leo_hf.stream([str(built / "conus")], modalities=["s1grd"], split="val", lonlat=True)))
    west, south, east, north = sample["meta"]["s1grd"]["bounds"]
    np.testing.assert_allclose(sample["lonlat"].numpy(), [(west + east) / 2, (south + north) / 2], rtol=1e-6)


def test_declared_pipeline_and_user_stage():
    pipeline = build_pipeline([{"stage": "to_float"}, {"stage": "resize", "size": 4}, {"stage": "crop_pad", "size": 3}])
    assert pipeline(chip(np.ones((1, 8, 8), np.float32))).arrays["s1grd"].shape == (1, 3, 3)
    with pytest.raises(ValueError, match="unknown stage"):
        build_pipeline([{"stage": "sharpen"}])
    double = lambda c: c.with_arrays({n: c.arrays[n] * 2 for n in c.grids()})  # noqa: E731
    field = {"dims": ["band", "y", "x"], "dtype": "uint16", "nodata": 0, "view_as": "int16", "band_names": ["a"]}
    out = ModalityTransform("s1grd", transform=double)({"s1grd": np.array([[[3]]], np.uint16)}, {"s1grd": field})
    assert out["s1grd"].tolist() == [[[6]]] and out["s1grd"].dtype == np.int16


def test_stream_resize_and_transform_hook(built):
    roots = [str(built / "conus")]
    data = m3leo_hf.stream(roots, modalities=["gssic", "esaworldcover"], split="val", resize={"gssic": 16, "esaworldcover": 16},
                           transform={"gssic": lambda c: c.with_arrays({"marker": np.ones(1, np.float32)})})
    sample = next(iter(data))
    assert sample["gssic"]["coherence"].shape[-2:] == (16, 16) and sample["gssic"]["marker"].tolist() == [1.0]
    assert sample["esaworldcover"]["label"].shape == (16, 16) and sample["esaworldcover"]["label"].dtype == torch.int64


def test_config_fingerprint_guards_resume(built):
    roots = [str(built / "conus"), str(built / "europe")]
    base = m3leo_hf.stream(roots, modalities=["s1grd"], batch_size=2)
    assert isinstance(base.config, StreamConfig) and base.config.fingerprint == StreamConfig.create(
        roots, modalities=["s1grd"], batch_size=2).fingerprint
    state = base.state_dict()
    m3leo_hf.stream(roots, modalities=["s1grd"], batch_size=2, normalize=False).load_state_dict(state)
    for change in ({"shuffle_buffer": 8}, {"missing": "skip"}, {"equalize": "pad"}, {"drop_last": False}):
        with pytest.raises(ValueError, match=f"{next(iter(change))}: saved"):
            m3leo_hf.stream(roots, modalities=["s1grd"], batch_size=2, **change).load_state_dict(state)
    with pytest.raises(ValueError, match="roots: saved"):
        m3leo_hf.stream(roots[:1], modalities=["s1grd"], batch_size=2).load_state_dict(state)
    with pytest.raises(TypeError, match="unknown option"):
        m3leo_hf.stream(roots, modalities=["s1grd"], shufle=True)
    with pytest.raises(Exception):
        base.config.seed = 3  # frozen


def test_load_takes_resize_and_a_user_stage(built, tmp_path):
    import shutil

    from dataset_cards.card import write_card

    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region)
    write_card(region)
    marker = lambda c: c.with_arrays({"marker": np.ones(1, np.float32)})  # noqa: E731
    ds = m3leo_hf.load(region, "gssic", "val", normalize=True, resize=12, transform=marker,
                       cache_dir=str(tmp_path / "cache"))
    sample = next(iter(ds))
    assert sample["coherence"].shape == (4, 4, 12, 12) and sample["x"].shape == (12,)
    assert torch.isfinite(sample["coherence"]).all() and sample["marker"].tolist() == [1.0]


@pytest.mark.parametrize("dtype", ["int16", "uint8", "int32"])
def test_one_pass_normalise_of_integers_fills_what_overflows(dtype):
    """Integers normalised by tiny or missing statistics overflow to inf or turn NaN: still filled, as
    ToFloat -> Normalize -> FillNaN fills them; with ordinary statistics only the nodata is."""
    array = (np.arange(2 * 4 * 5).reshape(2, 4, 5) * 6).astype(dtype)
    field = {**GRID, "dtype": dtype, "shape": list(array.shape), "band_names": ["a", "b"], "nodata": None}
    for std, mean in [([1e-37, 2.0], [0.0, 1.0]), ([1.0, 2.0], [float("nan"), 1.0]), ([3.0, 2.0], [1.0, 1.0])]:
        stats = {"s1grd": {"band_names": ["a", "b"], "count": [1, 1], "mean": mean, "std": std}}
        chip = Chip("s1grd", {"s1grd": array}, {"s1grd": field})
        three = Pipeline([ToFloat(), Normalize(stats), FillNaN(0.0)])(chip).arrays["s1grd"]
        one = Normalize(stats, fill=0.0)(chip).arrays["s1grd"]
        assert np.isfinite(one).all() and np.array_equal(one, three), (std, mean)
