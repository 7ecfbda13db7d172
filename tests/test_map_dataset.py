"""``M3LEODataset``: map-style access to a selection, equal to the stream's samples, under RandomSampler and
2 DataLoader workers, with TorchGeo-style keys."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

import m3leo_hf
from tests.test_select import REGIONS, TREE, roots, tree_threshold

OPTIONS = dict(modalities=["s1grd", "s2rgbm", "esaworldcover"], normalize=True, spatial_size=32)


def assert_same(a: dict, b: dict) -> None:
    assert a["chip_id"] == b["chip_id"] and a["region"] == b["region"]
    for modality in OPTIONS["modalities"]:
        assert a[f"{modality}_available"] == b[f"{modality}_available"]
        left, right = a[modality], b[modality]
        if isinstance(left, dict):
            assert sorted(left) == sorted(right) and all(torch.equal(left[k], right[k]) for k in left)
        else:
            assert torch.equal(left, right)


@pytest.fixture(scope="module")
def selection(built):
    return dict(where=pc.field(TREE) > tree_threshold(built))


def test_item_i_is_the_ith_chip_of_the_selection(built, selection):
    data = m3leo_hf.M3LEODataset(roots(built), **OPTIONS, **selection)
    streamed = list(m3leo_hf.stream(roots(built), shuffle=False, **OPTIONS, **selection))
    assert len(data) == len(streamed) > 0
    assert data.chip_ids == [s["chip_id"] for s in streamed]
    for i, sample in enumerate(streamed):
        item = data[i]
        assert_same(item, sample)
        assert item["meta"]["s1grd"] == sample["meta"]["s1grd"]
    assert_same(data[-1], streamed[-1])
    with pytest.raises(IndexError, match=f"index {len(data)} out of range"):
        data[len(data)]
    keys = [(REGIONS.index(s["region"]), s["chip_id"]) for s in streamed]
    assert keys == sorted(keys), "regions in roots order, chip ids rising within each"


def test_random_sampler_with_two_workers(built, selection):
    data = m3leo_hf.M3LEODataset(roots(built), **OPTIONS, **selection)
    loader = DataLoader(data, batch_size=3, sampler=RandomSampler(data, generator=torch.Generator().manual_seed(0)),
                        num_workers=2, collate_fn=m3leo_hf.M3LEODataset.collate)
    seen = []
    for batch in loader:
        assert batch["s1grd"].shape[1:] == (16, 32, 32) and batch["s1grd_available"].dtype == torch.bool
        for j, chip in enumerate(batch["chip_id"]):
            item = data[data.chip_ids.index(chip)]
            assert torch.equal(batch["s1grd"][j], item["s1grd"])
            assert torch.equal(batch["esaworldcover"]["label"][j], item["esaworldcover"]["label"])
        seen += batch["chip_id"]
    assert sorted(seen) == sorted(data.chip_ids) and seen != data.chip_ids


@pytest.mark.parametrize("s1grd, esaworldcover", [("s1grd", "esaworldcover"), ("s1grd-2020", "esaworldcover-2020")])
def test_torchgeo_keys_and_transform(built, s1grd, esaworldcover):
    data = m3leo_hf.M3LEODataset(str(built / "conus"), modalities=[s1grd, esaworldcover], split="val",
                                 normalize=True, spatial_size=32, torchgeo=True,
                                 transform=lambda item: {**item, "seen": True})
    item = data[0]
    assert item["seen"] and item["image"].shape == (16, 32, 32) and item["image"].dtype == torch.float32
    assert torch.equal(item["image"], item[s1grd]) and torch.equal(item["mask"], item[esaworldcover]["label"])
    assert item["crs"] == "EPSG:4326"
    assert item["bounds"].tolist() == item["meta"][s1grd]["bounds"]
    with pytest.raises(ValueError, match="use a sampler"):
        m3leo_hf.M3LEODataset(str(built / "conus"), modalities=["s1grd"], batch_size=4)
