"""Unit tests of m3leo_hf.transforms (numpy in, numpy out; shared with m3leo_hf.load)."""

from __future__ import annotations

import numpy as np
import pytest

from m3leo_hf.transforms import IGNORE_INDEX, ModalityTransform, center_crop_pad, class_labels, pool_stats

S1_FIELD = {"dims": ["band", "y", "x"], "dtype": "uint16", "nodata": 0, "view_as": "int16",
            "band_names": [f"b{i}" for i in range(3)]}


def test_center_crop_pad_keeps_the_centre():
    array = np.arange(5 * 4).reshape(1, 5, 4)
    out = center_crop_pad(array, (3, 6), fill=-1)
    assert out.shape == (1, 3, 6)
    np.testing.assert_array_equal(out[0, :, 1:5], array[0, 1:4])
    assert (out[0, :, [0, 5]] == -1).all()
    np.testing.assert_array_equal(center_crop_pad(np.arange(4.0), (2,), fill=np.nan), [1.0, 2.0])


@pytest.mark.parametrize("shape, size", [((2, 5, 4), (7, 4)), ((2, 5, 4), (3, 6)), ((5, 4), (8, 9)), ((3, 1, 2), (4, 1)),
                                         ((6,), (9,)), ((2, 3, 447, 448), (448, 448))])
def test_center_crop_pad_equals_a_filled_canvas_with_the_centre_copied(shape, size):
    """Every value outside the kept centre is ``fill`` (margins of each axis and their corners), every value in it
    the source's: as a canvas filled first, then the centre copied in."""
    array = np.arange(1, np.prod(shape) + 1, dtype=np.int16).reshape(shape)
    lead = shape[:len(shape) - len(size)]
    expected = np.full(lead + tuple(size), -7, dtype=np.int16)
    src = tuple(slice(max(h - w, 0) // 2, max(h - w, 0) // 2 + min(h, w)) for h, w in zip(shape[len(lead):], size))
    dst = tuple(slice(max(w - h, 0) // 2, max(w - h, 0) // 2 + min(h, w)) for h, w in zip(shape[len(lead):], size))
    expected[(..., *dst)] = array[(..., *src)]
    np.testing.assert_array_equal(center_crop_pad(array, size, fill=-7), expected)


def test_class_labels_and_presence():
    codes = np.array([[10, 20, 0], [100, 95, 7]], dtype=np.uint8)
    label, presence = class_labels(codes, (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100))
    np.testing.assert_array_equal(label, [[0, 1, IGNORE_INDEX], [10, 9, IGNORE_INDEX]])
    assert label.dtype == np.int64 and np.flatnonzero(presence).tolist() == [0, 1, 9, 10]


def test_pool_stats_equals_stats_of_the_union():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 11.0])
    part = lambda x: {"band_names": ["v"], "count": [len(x)], "mean": [x.mean()], "std": [x.std()]}  # noqa: E731
    pooled = pool_stats([{"f": part(a)}, {"f": part(b)}, {}])["f"]
    union = np.concatenate([a, b])
    assert pooled["count"] == [5]
    np.testing.assert_allclose([pooled["mean"][0], pooled["std"][0]], [union.mean(), union.std()])


def test_view_as_band_selection_and_normalisation():
    raw = np.array([[[0, 65535]], [[5, 65526]], [[3, 3]]], dtype=np.uint16)  # 65535 == -1 as int16
    stats = {"s1grd": {"band_names": S1_FIELD["band_names"], "mean": [-1.0, 0.0, None], "std": [2.0, 5.0, 0.0]}}
    out = ModalityTransform("s1grd", stats=stats, bands=["b2", "b0", "b1"], normalize=True)({"s1grd": raw},
                                                                                          {"s1grd": S1_FIELD})
    np.testing.assert_allclose(out["s1grd"], [[[3.0, 3.0]], [[0.0, 0.0]], [[1.0, -2.0]]])
    raw_out = ModalityTransform("s1grd")({"s1grd": raw}, {"s1grd": S1_FIELD})["s1grd"]
    assert raw_out.dtype == np.int16 and raw_out[0, 0, 1] == -1
    with pytest.raises(KeyError, match="unknown band"):
        ModalityTransform("s1grd", bands=["nope"])({"s1grd": raw}, {"s1grd": S1_FIELD})


def test_placeholders_are_zeros_or_ignored_labels():
    s1 = ModalityTransform("s1grd", spatial_size=4).placeholder({"s1grd": {**S1_FIELD, "shape": [3, 5, 5]}})
    assert s1["s1grd"].shape == (3, 4, 4) and not s1["s1grd"].any()
    field = {"dims": ["band", "y", "x"], "dtype": "uint8", "nodata": 0, "shape": [1, 3, 3]}
    wc = ModalityTransform("esaworldcover").placeholder({"esaworldcover": field})
    assert (wc["label"] == IGNORE_INDEX).all() and not wc["presence"].any()


@pytest.mark.parametrize("height", [5, 4, 7])  # padded, already of size, cropped
def test_the_transform_makes_its_padded_output_in_a_batch_row(height):
    """Given a batch's next row (``BatchRows.destinations``), the transform writes its crop/pad result there
    (the same values as a new array), which the batch then holds; a row of another dtype is not written: the
    result is a new array, copied in as before."""
    import torch

    from m3leo_hf.collate import BatchRows

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 65535, size=(3, height, 6), dtype=np.uint16)
    stats = {"s1grd": {"band_names": S1_FIELD["band_names"], "mean": [1.0, 2.0, 3.0], "std": [2.0, 5.0, 7.0]}}
    transform = ModalityTransform("s1grd", stats=stats, normalize=True, spatial_size=5)
    expected = transform({"s1grd": raw}, {"s1grd": S1_FIELD})["s1grd"]
    rows = BatchRows(3)
    rows.add({"s1grd": expected})
    into = rows.destinations()
    got = transform({"s1grd": raw}, {"s1grd": S1_FIELD}, into=into)["s1grd"]
    assert np.shares_memory(got, into["s1grd"]) and np.array_equal(got, expected)
    rows.add({"s1grd": got})
    other = transform({"s1grd": raw}, {"s1grd": S1_FIELD}, into={"s1grd": np.zeros((3, 5, 5), np.float64)})
    assert not np.shares_memory(other["s1grd"], into["s1grd"])
    rows.add(other)
    batch = rows.finish()["s1grd"]
    assert all(torch.equal(batch[i], torch.from_numpy(expected)) for i in range(3))


def test_class_labels_are_made_in_a_batch_row():
    """The class index map goes straight into the batch's next row when given one (int64, its shape); the
    presence and a row that does not fit are made anew, with the same values."""
    from m3leo_hf.collate import BatchRows

    field = {"dims": ["band", "y", "x"], "dtype": "uint8", "nodata": 0, "shape": [1, 6, 5]}
    codes = np.random.default_rng(4).choice(np.array([0, 10, 20, 95, 100, 7], np.uint8), size=(1, 6, 5))
    transform = ModalityTransform("esaworldcover", spatial_size=5)
    expected = transform({"esaworldcover": codes}, {"esaworldcover": field})
    rows = BatchRows(2)
    rows.add(expected)
    into = rows.destinations()
    got = transform({"esaworldcover": codes}, {"esaworldcover": field}, into=into)
    assert np.shares_memory(got["label"], into["label"]) and not np.shares_memory(got["presence"], into["presence"])
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
    other = transform({"esaworldcover": codes}, {"esaworldcover": field}, into={"label": np.zeros((5, 4), np.int64)})
    assert np.array_equal(other["label"], expected["label"])
