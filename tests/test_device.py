"""``stream(defer=True)`` + ``normalize_on``: stored integers through the loader, the same tensors after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import m3leo_hf
from m3leo_hf.stages.checks import StoredMismatch
from m3leo_hf.transforms import ModalityTransform

OPTIONS = dict(split="train", normalize=True, batch_size=3, shuffle=False, missing="mask")


def batches(built, modalities, num_workers=0, **options):
    roots = [built / "conus", built / "europe"]
    data = m3leo_hf.stream(roots, modalities=modalities, **{**OPTIONS, **options})
    return data, list(m3leo_hf.StatefulLoader(data, num_workers=num_workers))


def assert_same(eager, finished):
    assert set(eager) == set(finished)
    for key, value in eager.items():
        if isinstance(value, dict) and key != "meta":
            assert_same(value, finished[key])
        elif isinstance(value, torch.Tensor):
            assert value.dtype == finished[key].dtype and torch.equal(value, finished[key]), key
        elif key != "meta":
            assert value == finished[key], key


@pytest.mark.parametrize("size, workers", [(24, 0), (40, 2)])  # crop (chips are 32 px) / pad, in workers
def test_deferred_batches_finish_to_the_eager_tensors(built, size, workers):
    modalities = ["s1grd", "s2rgbm", "esaworldcover"]  # s2rgbm lacks a conus chip: a deferred placeholder
    _, eager = batches(built, modalities, num_workers=workers, spatial_size=size)
    data, raw = batches(built, modalities, num_workers=workers, spatial_size=size, defer=True)
    finish = m3leo_hf.normalize_on(data, "cpu")
    assert raw[0]["s1grd"].dtype == torch.int16 and raw[0]["s2rgbm"].dtype == torch.uint8
    assert raw[0]["esaworldcover"].dtype == torch.uint8  # 1 byte a pixel instead of an int64 label map's 8
    assert not all(bool(x) for batch in eager for x in batch["s2rgbm_available"])
    assert len(raw) == len(eager)
    for before, after in zip(eager, raw):
        assert_same(before, finish(after))


def test_deferred_refuses_what_it_cannot_finish(built):
    with pytest.raises(ValueError, match="no resize, datepairs or transform"):
        m3leo_hf.stream(built / "conus", modalities=["s1grd"], normalize=True, resize=16, defer=True)
    with pytest.raises(ValueError, match="not recipe="):
        m3leo_hf.stream(built / "conus", modalities=["s1grd"], recipe="upstream", defer=True)
    plain = m3leo_hf.stream(built / "conus", modalities=["s1grd"], batch_size=2, defer=True)
    with pytest.raises(ValueError, match="defers nothing"):
        m3leo_hf.normalize_on(plain, "cpu")


def test_a_chip_unlike_the_declaration_is_refused_by_name():
    """Eager normalisation looks a chip's bands and nodata up per chip; the deferred one finishes all chips
    alike, so a chip with other bands or another nodata is an error naming both, never other numbers."""
    stats = {"s1grd": {"band_names": ["a", "b"], "count": [1, 1], "mean": [0.0, 0.0], "std": [1.0, 1.0]}}
    transform = ModalityTransform("s1grd", stats=stats, normalize=True, defer=True, bands=["a", "b"])
    array = np.zeros((2, 4, 4), np.int16)
    field = {"dims": ["band", "y", "x"], "dtype": "int16", "shape": [2, 4, 4], "band_names": ["a", "b"], "nodata": 0}
    assert transform({"s1grd": array}, {"s1grd": field})["s1grd"].dtype == np.int16
    with pytest.raises(StoredMismatch, match=r"s1grd-2020\.s1grd: nodata -9999, expected 0"):
        transform({"s1grd": array}, {"s1grd": {**field, "nodata": -9999}})
    unselected = ModalityTransform("s1grd", stats=stats, normalize=True, defer=True)
    with pytest.raises(StoredMismatch, match=r"bands \['b', 'a'\], expected \['a', 'b'\]"):
        unselected({"s1grd": array}, {"s1grd": {**field, "band_names": ["b", "a"]}})


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_deferred_field_fills_what_eager_fills():
    """Float input (NaN, inf), an overflowing tiny std, and nodata all become the fill, as in eager normalisation."""
    from m3leo_hf.device import DeferredField, DeferredNormalize
    from m3leo_hf.stages import Chip, Normalize

    stats = {"x": {"band_names": ["a", "b"], "count": [1, 1], "mean": [1.5, 0.0], "std": [2.0, 1e-36]}}
    for dtype, nodata in [(np.int16, -32768), (np.float32, -9999.0)]:
        array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype) * 1000
        array[0, 0, 0] = nodata
        if dtype == np.float32:
            array[0, 1, 1], array[1, 2, 2] = np.nan, np.inf
        field = {"dims": ["band", "y", "x"], "band_names": ["a", "b"], "nodata": nodata, "shape": [2, 3, 4]}
        eager = Normalize(stats, fill=0.0)(Chip("m", {"x": array}, {"x": field})).arrays["x"]
        spec = DeferredField(np.float32([1.5, 0.0]), np.float32([2.0, 1e-36]), nodata)
        batch = torch.from_numpy(array[None].copy())
        finished = DeferredNormalize({"x": spec}).finish(batch, torch.device("cpu"))
        assert np.array_equal(finished[0].numpy(), eager), dtype
        assert np.array_equal(batch[0].numpy(), array, equal_nan=True)  # the loader's batch is left as it was
        assert np.isfinite(eager).all() and (eager[1] != 0).sum() <= 1  # band b overflowed to inf: filled
