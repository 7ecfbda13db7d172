"""metadata/chips.parquet as GeoParquet with per-chip summaries, and selecting chips before reading them:
``chips()``, ``stream(chips=/where=/bbox=)`` reading only the selected byte ranges, and exact epochs over a
selection under 2 gloo ranks (``stream`` and ``load``)."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import geopandas
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import shapely
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import m3leo_hf
from builders.registry import get_modality
from byte_server import ByteServer
from dataset_cards.card import write_card
from tests.test_ddp_stream import free_port
from tests.test_stream_data import source

REGIONS = ("conus", "europe", "pakin")
TREE = "esaworldcover-2020_frac_10"
SUMMARIZED = ("esaworldcover-2020", "srtmdem", "modis44b006veg", "ghsbuilts-2020", "biomass-2019", "biomass-2020",
              "s2rgbm-2019", "s2rgbm-2020", "gunw-2020-01-01-2020-03-31", "gunw-2020-04-01-2020-06-30",
              "gunw-2020-01", "s1grd-2019", "s1grd-2020")  # every year of each family with summaries


def roots(built: Path) -> list[str]:
    return [str(built / r) for r in REGIONS]


def frames(built: Path) -> geopandas.GeoDataFrame:
    import pandas

    return pandas.concat([geopandas.read_parquet(built / r / "metadata" / "chips.parquet") for r in REGIONS],
                         ignore_index=True)


def tree_threshold(built: Path) -> float:
    """Median train tree-cover fraction: the land-cover selection keeps about half the chips."""
    train = frames(built).query("split == 'train'")
    return float(np.nanmedian(train[TREE]))


def bbox_of_half(built: Path) -> tuple[float, float, float, float]:
    """A box over the western half of conus (by chip centre)."""
    conus = geopandas.read_parquet(built / "conus" / "metadata" / "chips.parquet")
    return (float(conus.west.min()) - 1, float(conus.south.min()) - 1, float(conus.lon.median()),
            float(conus.north.max()) + 1)


def test_chips_parquet_is_geoparquet(built):
    for region in REGIONS:
        path = built / region / "metadata" / "chips.parquet"
        frame = geopandas.read_parquet(path)
        assert frame.crs.to_epsg() == 4326 and len(frame) == 10
        geo = json.loads(pq.read_schema(path).metadata[b"geo"])
        column = geo["columns"]["geometry"]
        assert geo["version"] == "1.1.0" and column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
        assert column["covering"]["bbox"]["xmax"] == ["bbox", "xmax"]
        np.testing.assert_allclose(frame.total_bounds, column["bbox"])
        np.testing.assert_allclose(np.stack(frame.geometry.bounds.values), frame[["west", "south", "east", "north"]])
        boxes = pq.read_table(path, columns=["bbox"])["bbox"].to_pylist()
        np.testing.assert_allclose([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in boxes],
                                   frame[["west", "south", "east", "north"]])


def test_summaries_equal_the_stored_arrays(built):
    checked = 0
    for region in REGIONS:
        region_dir = built / region
        for row in m3leo_hf.chips(str(region_dir)).to_pylist():
            chip = row["chip_id"]
            for modality in SUMMARIZED:
                family, field = get_modality(modality).family, get_modality(modality).field
                if f"has_{modality}" not in row:
                    assert family in ("gunw", "gunw_monthly") and region == "europe"
                    continue
                sample = source(region_dir, modality)[chip]
                assert row[f"has_{modality}"] == sample["json"]["available"]
                if not sample["json"]["available"]:
                    continue
                checked += 1
                if family == "esaworldcover":
                    codes = sample[field]
                    for code in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100):
                        assert row[f"{modality}_frac_{code}"] == pytest.approx(
                            (codes == code).sum() / (codes != 0).sum())
                elif family == "srtmdem":
                    dem = sample[field].view(np.int16).astype(np.float64)
                    assert row["srtmdem_elevation_mean"] == pytest.approx(dem[0].mean())
                    assert row["srtmdem_elevation_std"] == pytest.approx(dem[0].std())
                    assert row["srtmdem_slope_mean"] == pytest.approx(dem[1].mean())
                elif family == "modis":
                    last = sample[field][-1]
                    assert row[f"{modality}_tree_cover_mean"] == pytest.approx(
                        last[(last != 200) & (last != 253)].mean())
                elif family == "ghsbuilts":
                    values = sample[field]
                    assert row[f"{modality}_mean"] == pytest.approx(values[values != 65535].mean())
                elif family == "biomass":
                    assert row[f"{modality}_agb_mean"] == pytest.approx(np.nanmean(sample["agb"]))
                elif family == "s2rgbm":
                    months = sample[field].reshape(12, -1)
                    assert row[f"{modality}_months_with_data"] == int((months != 0).any(axis=1).sum())
                elif family in ("gunw", "gunw_monthly"):
                    assert row[f"{modality}_pairs"] == len(sample["json"]["dates"]["datepairs"])
                    assert row[f"{modality}_deltadays"] == sample["deltadays"].tolist()
                    assert row[f"{modality}_deltadays_max"] == sample["deltadays"].max()
                    assert row[f"{modality}_perpendicular_baseline_min"] == pytest.approx(
                        np.nanmin(sample["perpendicularbaseline"]))
                per_chip = pq.read_table(region_dir / "metadata" / f"{modality}.parquet").to_pylist()
                expected = next(r["nodata_fraction"] for r in per_chip if r["chip_id"] == chip)
                assert row[f"{modality}_nodata_fraction"] == expected
    assert checked > 100


def test_chips_table_splits(built):
    table = m3leo_hf.chips(str(built / "conus"))
    val = m3leo_hf.chips(str(built / "conus"), "validation")
    assert set(val["split"].to_pylist()) == {"val"} and val.num_rows == table["split"].to_pylist().count("val")
    assert b"geo" in val.schema.metadata
    with pytest.raises(ValueError, match="split must be one of"):
        m3leo_hf.chips(str(built / "conus"), "dev")
    with pytest.raises(FileNotFoundError, match="metadata/chips.parquet"):
        m3leo_hf.chips(str(built / "atlantis"))


def selected_ids(built: Path, predicate) -> set[str]:
    frame = frames(built)
    return set(frame[(frame.split == "train") & predicate(frame)].chip_id)


def streamed(data) -> list[str]:
    return [s["chip_id"] for s in data]


def test_stream_by_landcover_bbox_ids_and_callable(built):
    options = dict(modalities=["s1grd", "esaworldcover"], shuffle=False, spatial_size=32, labels=False)
    every = {s["chip_id"]: s for s in m3leo_hf.stream(roots(built), **options)}
    threshold = tree_threshold(built)
    forest = selected_ids(built, lambda f: f[TREE] > threshold)
    assert 0 < len(forest) < len(every)
    chosen = list(m3leo_hf.stream(roots(built), where=pc.field(TREE) > threshold, **options))
    assert sorted(s["chip_id"] for s in chosen) == sorted(forest)
    for sample in chosen:
        assert torch.equal(sample["s1grd"], every[sample["chip_id"]]["s1grd"])
    verified = m3leo_hf.stream(roots(built), where=pc.field(TREE) > threshold, verify_checksums=True, **options)
    assert streamed(verified) == [s["chip_id"] for s in chosen]  # whole shards read, same selection

    box = bbox_of_half(built)
    inside = selected_ids(built, lambda f: f.intersects(shapely.box(*box)))
    assert 0 < len(inside) < len(every)
    assert sorted(streamed(m3leo_hf.stream(roots(built), bbox=box, **options))) == sorted(inside)

    both = streamed(m3leo_hf.stream(roots(built), bbox=box, where=lambda t: pc.greater(t[TREE], threshold), **options))
    assert sorted(both) == sorted(inside & forest)
    ids = sorted(every)[::3]
    assert sorted(streamed(m3leo_hf.stream(roots(built), chips=ids, **options))) == ids


def test_bad_selections_are_named(built):
    options = dict(modalities=["s1grd"])
    with pytest.raises(KeyError, match="0000000000000"):
        m3leo_hf.stream(roots(built), chips=["0000000000000"], **options)
    with pytest.raises(ValueError, match="keeps no train chip"):
        m3leo_hf.stream(roots(built), bbox=(0, 0, 0.1, 0.1), **options)
    with pytest.raises(ValueError, match=r"bbox .* west must be <= east"):
        m3leo_hf.stream(roots(built), bbox=(10, 0, 0, 1), **options)
    with pytest.raises(ValueError, match=r"cannot evaluate .*no_such_column.*columns: chip_id"):
        m3leo_hf.stream(roots(built), where=pc.field("no_such_column") > 1, **options)
    with pytest.raises(TypeError, match="boolean mask"):
        m3leo_hf.stream(roots(built), where=lambda t: t["lon"], **options)


def test_selection_reads_only_the_selected_byte_ranges(built):
    modalities = ["s1grd-2020", "esaworldcover-2020"]  # config names: shard folders and metadata files
    threshold = tree_threshold(built)
    with ByteServer(built) as server:
        urls = [f"{server.url}/{r}" for r in REGIONS]
        data = m3leo_hf.stream(urls, modalities=modalities, where=pc.field(TREE) > threshold, shuffle=False)
        server.reset()  # what follows is the data reading only
        got = set(streamed(data))
        sent = dict(server.sent)
    expected: dict[str, int] = {}  # per shard: the selected samples, a run of consecutive ones read as one span
    for region in REGIONS:
        for modality in modalities:
            rows = sorted(pq.read_table(built / region / "metadata" / f"{modality}.parquet").to_pylist(),
                          key=lambda r: (r["shard"], r["sample_index"]))
            previous = None
            for row in rows:
                if row["chip_id"] in got:
                    key = f"{region}/{row['shard']}"
                    joined = previous and previous["shard"] == row["shard"] and (
                        previous["sample_index"] + 1 == row["sample_index"])
                    start = previous["offset"] + previous["size"] if joined else row["offset"]
                    expected[key] = expected.get(key, 0) + row["offset"] + row["size"] - start
                    previous = row
                else:
                    previous = None
    for modality in modalities:  # plus the template its limits come from: the first region's first chip having it
        region = REGIONS[0]
        template = next(r for r in pq.read_table(built / region / "metadata" / f"{modality}.parquet").to_pylist()
                        if r["available"])
        json_member = next(m for m in template["members"] if m["name"] == "json")
        key = f"{region}/{template['shard']}"
        expected[key] = expected.get(key, 0) + json_member["size"]
    assert got == selected_ids(built, lambda f: f[TREE] > threshold)
    assert sent == expected, ("exactly the selected samples' bytes (and tar padding between neighbours) and each "
                              "modality's template json member, nothing else")
    every = sum(p.stat().st_size for r in REGIONS for m in modalities for p in (built / r / m).glob("*.tar"))
    assert sum(sent.values()) < every / 2


# -- exact epochs over a selection, 2 gloo ranks --------------------------------------------------------------

def rank_main(rank: int, world_size: int, port: int, data: list[str], card_root: str, selections: dict,
              out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    seen = {}
    for name, selection in selections.items():
        where = pc.field(TREE) > selection["threshold"] if "threshold" in selection else None
        bbox = selection.get("bbox")
        stream = m3leo_hf.stream(data, modalities=["s1grd", "esaworldcover"], batch_size=2, drop_last=False,
                                 spatial_size=32, where=where, bbox=bbox)
        batches = []
        for batch in m3leo_hf.StatefulLoader(stream):
            dist.all_reduce(torch.ones(1))  # hangs (times out) if a rank has fewer batches
            batches.append(batch["chip_id"])
        loaded = m3leo_hf.load(card_root, "s1grd", "train", normalize=False, where=where, bbox=bbox)
        load_batches = []
        for batch in torch.utils.data.DataLoader(loaded, batch_size=2, collate_fn=lambda b: [s["__key__"] for s in b]):
            dist.all_reduce(torch.ones(1))
            load_batches.append(batch)
        seen[name] = {"stream": batches, "load": load_batches}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def carded(built, tmp_path_factory) -> Path:
    """A copy of conus with its dataset card (``load`` reads the declared features)."""
    root = tmp_path_factory.mktemp("select_card") / "conus"
    shutil.copytree(built / "conus", root, ignore=shutil.ignore_patterns(".build"))
    write_card(root)
    return root


def test_selection_epochs_are_exact_under_two_ranks(built, carded, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    selections = {"landcover": {"threshold": tree_threshold(built)}, "bbox": {"bbox": bbox_of_half(built)}}
    mp.spawn(rank_main, args=(2, free_port(), roots(built), str(carded), selections, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    conus = geopandas.read_parquet(carded / "metadata" / "chips.parquet")
    for name, selection in selections.items():
        if "threshold" in selection:
            expected = selected_ids(built, lambda f: f[TREE] > selection["threshold"])
            in_conus = set(conus[(conus.split == "train") & (conus[TREE] > selection["threshold"])].chip_id)
        else:
            expected = selected_ids(built, lambda f: f.intersects(shapely.box(*selection["bbox"])))
            in_conus = set(conus[(conus.split == "train") & conus.intersects(shapely.box(*selection["bbox"]))].chip_id)
        in_conus &= set(conus[conus["has_s1grd-2020"]].chip_id)  # "s1grd" is its alias
        for kind, chosen in (("stream", expected), ("load", in_conus)):
            per_rank = [[c for batch in r[name][kind] for c in batch] for r in ranks]
            assert len(ranks[0][name][kind]) == len(ranks[1][name][kind]) > 0, f"{name} {kind}: unequal batches"
            flat = per_rank[0] + per_rank[1]
            assert len(flat) == len(set(flat)) == 2 * (len(chosen) // 2) and set(flat) <= chosen, (name, kind)


@pytest.mark.parametrize("streaming", [True, False])
def test_load_selection_equals_stock_load(carded, tmp_path, monkeypatch, streaming):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    options = dict(normalize=True, spatial_size=32, streaming=streaming, meta=True)
    stock = {e["__key__"]: e for e in m3leo_hf.load(carded, "esaworldcover", "test", **options)}
    wanted = sorted(stock)[1:]
    assert wanted
    chosen = list(m3leo_hf.load(carded, "esaworldcover", "test", chips=wanted, **options))
    assert [e["__key__"] for e in chosen] == wanted
    for example in chosen:
        reference = stock[example["__key__"]]
        assert example["json"] == reference["json"]
        assert torch.equal(example["label"], reference["label"]) and torch.equal(example["presence"], reference["presence"])
