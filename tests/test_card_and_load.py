"""Dataset card (README YAML configs + declared features, body, croissant.json) and loading through
``datasets`` (streaming and not, every modality) and ``m3leo_hf.load``, checked against the source chips."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
import yaml
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard
from local_hub import TEST_TOKEN, LocalHub

from builders import get_modality, read_chip
from dataset_cards.card import write_card
from dataset_cards.features import HF_SPLITS, modality_features
from dataset_cards.summary import FieldSummary, _merge, summarize
from m3leo_hf.hub import load
from m3leo_hf.transforms import ModalityTransform
from shard_tools.cli import main as cli
from shard_tools.inventory import find_regions, scan_region
from shard_tools.metadata import modalities_index, write_json
from shard_tools.publish import publish
from tests.conftest import canonical

REPO_ID = "M3LEO-test/conus"

pytestmark = pytest.mark.datasets  # run on the oldest supported datasets too (make test-datasets-oldest)


@pytest.fixture(scope="module")
def regions(built, tmp_path_factory) -> dict[str, Path]:
    """Private copies of built regions (the shared ``built`` stays untouched) with their cards."""
    root = tmp_path_factory.mktemp("carded")
    out = {}
    for name in ("conus", "europe"):
        shutil.copytree(built / name, root / name, ignore=shutil.ignore_patterns(".build"))
        write_card(root / name, repo_id=REPO_ID if name == "conus" else None, license="cc-by-4.0")
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def sources(sample_chips) -> dict[str, object]:
    return {name: scan_region(path) for name, path in find_regions(sample_chips).items()}


def front_matter(readme: Path) -> dict:
    return yaml.safe_load(readme.read_text().split("---\n")[1])


def source_arrays(inventory, modality: str, chip_id: str) -> dict[str, np.ndarray] | None:
    """The source chip's arrays in ``modality`` (a config name or alias), None without a data file."""
    source = inventory.source(canonical(modality), chip_id)
    if source.status != "file":
        return None
    return read_chip(get_modality(modality), Path(source.path), chip_id).arrays


def rows_of(region: Path, modality: str, split: str) -> list[dict]:
    """Metadata rows of ``modality`` (a config name or alias) in ``split``."""
    table = pq.read_table(region / "metadata" / f"{canonical(modality)}.parquet", columns=["chip_id", "split", "available"])
    return [r for r in table.to_pylist() if r["split"] == split]


# ------------------------------------------------------------------------------------------ the card

def test_front_matter_declares_one_config_per_modality_with_features(regions):
    for name, region in regions.items():
        meta = front_matter(region / "README.md")
        modalities = [p.name[: -len(".shards.json")] for p in (region / "metadata").glob("*.shards.json")]
        aliases = json.loads((region / "metadata" / "modalities.json").read_text())["aliases"]  # s1grd -> s1grd-2020
        assert set(aliases.values()) <= set(modalities)
        assert sorted(c["config_name"] for c in meta["configs"]) == sorted(modalities + list(aliases))
        assert datasets.get_dataset_config_names(str(region)) == [c["config_name"] for c in meta["configs"]]
        for config in meta["configs"]:
            folder = aliases.get(config["config_name"], config["config_name"])  # an alias reads the same shards
            assert config["data_files"] == [{"split": HF_SPLITS[s], "path": f"{folder}/{s}-*.tar"}
                                            for s in ("train", "val", "test")]
        assert meta["license"] == "cc-by-4.0" and meta["viewer"] is False and meta["size_categories"] == ["n<1K"]
        infos = DatasetInfosDict.from_dataset_card_data(DatasetCard.load(region / "README.md").data)
        summary = summarize(region)
        for modality in summary.modalities:
            for config_name in (modality.name, *modality.modality.aliases):
                info = infos[config_name]
                assert info.features == modality_features(modality)
                assert isinstance(info.features["json"], datasets.Json)
                assert {s: i.num_examples for s, i in info.splits.items()} == {
                    HF_SPLITS[s]: n for s, n in modality.chips.items()}
        assert "gunw" in [c["config_name"] for c in meta["configs"]] or name == "europe"


def test_json_feature_yaml_spelling_round_trips(regions):
    entry = next(e for e in front_matter(regions["conus"] / "README.md")["dataset_info"] if e["config_name"] == "s1grd")
    assert entry["features"] == [
        {"name": "s1grd.npy", "list": {"list": {"list": "int16"}}}, {"name": "json", "dtype": "json"},
        {"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
    assert datasets.Features._from_yaml_list(entry["features"])["json"] == datasets.Json()


def test_card_body_explains_modalities_splits_stats_and_loading(regions):
    text = (regions["conus"] / "README.md").read_text()
    summary = summarize(regions["conus"])
    for modality in summary.modalities:
        assert f"### `{modality.name}`" in text
        assert f"metadata/{modality.name}.shards.json" in text
        for field in modality.fields:
            assert f"| `{field.name}.npy` | {field.dtype} |" in text
    s1 = next(m for m in summary.modalities if m.name == canonical("s1grd"))
    band = s1.stats["train"]["s1grd"]
    assert f"| `s1grd` | winter_vvasc | {band['count'][0]} | {band['mean'][0]:.6g} | {band['std'][0]:.6g} |" in text
    assert f"| `val` | `validation` | {s1.chips['val']} | {len(s1.split_shards('val'))} |" in text
    s2 = next(m for m in summary.modalities if m.name == canonical("s2rgbm"))  # lacks one chip
    row = " |".join(f" {s2.available[split]} / {s2.chips[split]}" for split in ("train", "val", "test"))
    assert f"| `{s2.name}` |{row} |" in text and "by reason: absent 1." in text
    assert f"| all modalities | {summary.complete['train']} / {summary.chips['train']} |" in text
    assert "`datepair` axis has a different length for each chip" in text
    assert "| 0 | 10 | tree cover |" in text and "Stored as `int16`: the source files hold `uint16`" in text
    assert f'load_dataset("{REPO_ID}", "{s1.name}", split="train", streaming=True)' in text
    assert "m3leo_hf.load(" in text and "m3leo_hf.stream(" in text and "wds.WebDataset(" in text
    assert "arXiv" in text and "2406.04230" in text and "Allen, Matt" in text


def test_card_is_deterministic_and_independent_of_location(regions, tmp_path):
    region = regions["europe"]
    before = {p: (region / p).read_bytes() for p in ("README.md", "croissant.json", f"quicklooks/{canonical('s1grd')}.png")}
    copy = tmp_path / "europe"
    shutil.copytree(region, copy)
    assert write_card(region, license="cc-by-4.0") == [region / "README.md", region / "croissant.json"]
    write_card(copy, license="cc-by-4.0")
    for name, data in before.items():
        assert (region / name).read_bytes() == data == (copy / name).read_bytes()


def test_cli_card_and_errors(regions, tmp_path, capsys):
    copy = tmp_path / "conus"
    shutil.copytree(regions["conus"], copy)
    assert cli(["card", str(copy), "--repo-id", "someone/else"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert f'load_dataset("someone/else", "{canonical("s1grd")}"' in (copy / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="built region"):
        write_card(tmp_path)


def test_conflicting_field_types_are_refused():
    found = {"x": FieldSummary("x", "float32", (3, 4), (3, 4))}
    _merge(found, "x", "float32", (3, 5), "a.tar")
    assert found["x"].min_shape == (3, 4) and found["x"].max_shape == (3, 5)
    with pytest.raises(ValueError, match="one feature type"):
        _merge(found, "x", "float64", (3, 4), "b.tar")


def test_croissant_describes_every_file_and_field(regions):
    region = regions["conus"]
    doc = json.loads((region / "croissant.json").read_text())
    assert doc["@type"] == "sc:Dataset" and doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    objects = {d["@id"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    sets = {d["@id"]: d for d in doc["distribution"] if d["@type"] == "cr:FileSet"}
    records = {r["@id"]: r for r in doc["recordSet"]}
    fields = {f["@id"] for r in records.values() for f in r["field"]}
    summary = summarize(region)
    for modality in summary.modalities:
        for shard in modality.shards:
            obj = objects[shard.url]
            assert obj["sha256"] == shard.sha256 and obj["contentSize"] == f"{shard.filesize} B"
            assert obj["contentUrl"] == f"https://huggingface.co/datasets/{REPO_ID}/resolve/main/{shard.url}"
        index_columns = pq.read_schema(region / "metadata" / f"{modality.name}.parquet").names
        assert {f["name"] for f in records[modality.name]["field"]} <= set(index_columns)
        members = [f"{f.name}.npy" for f in modality.fields] + ["json"]
        for member in members:
            record = records[f"{modality.name}/{member}"]
            assert [f["name"] for f in record["field"]] == ["chip_id", "content"]
            assert sets[record["field"][1]["source"]["fileSet"]["@id"]]["includes"] == f"*.{member}"
            assert record["field"][0]["references"]["field"]["@id"] == f"{modality.name}/chip_id"
    for file_set in sets.values():
        assert all(ref["@id"] in objects for ref in file_set["containedIn"])
    for record in records.values():
        assert record["key"]["@id"] in {f["@id"] for f in record["field"]}
        for field in record["field"]:
            source = field["source"]
            assert (source.get("fileSet", {}).get("@id") in sets) or (source["fileObject"]["@id"] in objects)
            assert field.get("references", {"field": {"@id": "chips/chip_id"}})["field"]["@id"] in fields
    chips = records["chips"]
    assert {f["name"] for f in chips["field"]} <= set(pq.read_schema(region / "metadata" / "chips.parquet").names)


def test_croissant_validates_with_mlcroissant(regions, caplog):
    mlc = pytest.importorskip("mlcroissant")
    mlc.Dataset(jsonld=str(regions["conus"] / "croissant.json"))  # raises on any error
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


CROISSANT_SCRIPT = """
import io, json, pathlib, sys
import numpy as np
import mlcroissant as mlc
jsonld, record_set, out = sys.argv[1:]
root = pathlib.Path(jsonld).parent
doc = json.loads(pathlib.Path(jsonld).read_text())
objects = [d["@id"] for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
dataset = mlc.Dataset(jsonld=jsonld, mapping={i: str(root / i) for i in objects})  # local files, not the Hub
arrays = {r[f"{record_set}/chip_id"].decode(): np.load(io.BytesIO(r[f"{record_set}/content"]))
          for r in dataset.records(record_set)}
np.savez(out, **arrays)
"""


def test_croissant_records_read_the_local_shards(regions, sources, tmp_path):
    """mlcroissant reads a member record set out of the tars (mapped to local paths) equal to the source chips."""
    pytest.importorskip("mlcroissant")
    region, out = regions["conus"], tmp_path / "agb.npz"
    done = subprocess.run([sys.executable, "-c", CROISSANT_SCRIPT, str(region / "croissant.json"), f"{canonical('biomass')}/agb.npy",
                           str(out)], env={**os.environ, "CROISSANT_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    arrays = dict(np.load(out))
    available = [r["chip_id"] for split in ("train", "val", "test") for r in rows_of(region, "biomass", split)
                 if r["available"]]
    assert sorted(arrays) == sorted(available) and available
    for chip_id, array in arrays.items():
        expected = source_arrays(sources["conus"], "biomass", chip_id)["agb"]
        assert array.dtype == expected.dtype
        np.testing.assert_array_equal(array, expected)


# --------------------------------------------------------------------------- loading with datasets

def check_example(example: dict, arrays: dict | None, features: datasets.Features, widen: bool) -> None:
    """Values equal the source chip; dtypes are the stored ones, or datasets' int64/float32 when ``widen``.
    (The numpy/torch formats also turn the json dict's leaves into arrays, hence ``bool(...)``.)"""
    columns = [c for c in features if c.endswith(".npy")]
    if arrays is None:
        assert not bool(example["json"]["available"]) and all(missing(example[c]) for c in columns)
        return
    assert bool(example["json"]["available"]) and sorted(columns) == sorted(f"{n}.npy" for n in arrays)
    for name, expected in arrays.items():
        got = example[f"{name}.npy"]
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        if widen:  # datasets' numpy/torch formats may widen integers to int64 and floats to float32
            got = np.asarray(got)
            assert got.dtype in (expected.dtype, np.int64 if expected.dtype.kind in "iub" else np.float32)
            expected = expected.astype(got.dtype)
        else:  # python lists/scalars, or arrays with the stored dtype
            assert not isinstance(got, np.ndarray) or got.dtype == expected.dtype
            got = np.asarray(got, dtype=expected.dtype)
        assert got.shape == expected.shape and np.array_equal(got, expected, equal_nan=True), name


def missing(value) -> bool:
    """No data: None (prepared numpy/torch formats turn a None next to stackable rows into NaN)."""
    if value is None:
        return True
    value = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value)
    return value.ndim == 0 and bool(np.isnan(value))


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "prepared"])
def test_load_dataset_every_modality_and_split_equals_source_chips(regions, sources, cache_dir, streaming):
    region, inventory = regions["conus"], sources["conus"]
    formats = [("numpy", True), ("torch", True), (None, False)] + ([] if streaming else [("numpy-native", False)])
    for modality in inventory.modalities:
        splits = datasets.load_dataset(str(region), modality, streaming=streaming, cache_dir=cache_dir)
        assert list(splits) == list(HF_SPLITS.values())
        for split, hf_split in HF_SPLITS.items():
            ds = splits[hf_split]
            assert ds.features == modality_features(summarize_cached(region, modality))
            rows = rows_of(region, modality, split)
            expected = [source_arrays(inventory, modality, row["chip_id"]) for row in rows]
            for fmt, widen in formats:
                view = (ds.with_format("numpy", dtype=None) if fmt == "numpy-native" else
                        ds.with_format(fmt) if fmt else ds)
                examples = list(view)
                assert [str(e["__key__"]) for e in examples] == [r["chip_id"] for r in rows]
                for example, arrays in zip(examples, expected):
                    check_example(example, arrays, ds.features, widen)
            assert sum(not r["available"] for r in rows) == sum(
                inventory.source(modality, r["chip_id"]).status != "file" for r in rows)


_SUMMARIES: dict[Path, object] = {}


def summarize_cached(region: Path, modality: str):
    if region not in _SUMMARIES:
        _SUMMARIES[region] = summarize(region)
    return next(m for m in _SUMMARIES[region].modalities if m.name == modality)


def test_plain_webdataset_reads_the_same_samples(regions, sources):
    region, inventory = regions["conus"], sources["conus"]
    rows = rows_of(region, "s1grd", "train")
    url = f"{region}/{canonical('s1grd')}/train-{{000000..{len(summarize_cached(region, canonical('s1grd')).split_shards('train')) - 1:06d}}}.tar"
    samples = list(wds.WebDataset(url, shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [r["chip_id"] for r in rows]
    for sample in samples:
        expected = source_arrays(inventory, "s1grd", sample["__key__"])["s1grd"]
        assert sample["s1grd.npy"].dtype == np.int16 and np.array_equal(sample["s1grd.npy"], expected)


# ------------------------------------------------------------------------------------ m3leo_hf.load

@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "prepared"])
def test_m3leo_load_gives_model_ready_tensors(regions, sources, cache_dir, streaming):
    region, inventory = regions["conus"], sources["conus"]
    stats = json.loads((region / "metadata" / f"{canonical('s1grd')}.stats.json").read_text())["splits"]["train"]
    bands = ["winter_vvasc", "winter_vhasc"]
    ds = load(region, "s1grd", "val", streaming=streaming, spatial_size=30, bands=bands, cache_dir=cache_dir)
    assert isinstance(ds, datasets.IterableDataset if streaming else datasets.Dataset)
    transform = ModalityTransform("s1grd", stats=stats, bands=bands, normalize=True, spatial_size=30)
    got = list(ds)
    assert [g["__key__"] for g in got] == [r["chip_id"] for r in rows_of(region, "s1grd", "val")]
    for sample in got:
        arrays = source_arrays(inventory, "s1grd", sample["__key__"])
        expected = transform(arrays, {"s1grd": {"dims": ["band", "y", "x"], "nodata": 0, "source_dtype": "uint16",
                                                "band_names": list(get_modality("s1grd").band_names)}})
        assert sample["s1grd"].dtype == torch.float32 and tuple(sample["s1grd"].shape) == (2, 30, 30)
        assert torch.equal(sample["s1grd"], torch.from_numpy(expected["s1grd"]))
    if not streaming:  # rows keep their arrays through datasets' reordering
        picked = ds.select([1, 0])
        assert [picked[i]["__key__"] for i in (0, 1)] == [got[1]["__key__"], got[0]["__key__"]]
        assert torch.equal(picked[0]["s1grd"], got[1]["s1grd"])

    labels = list(load(region, "esaworldcover", "train", streaming=streaming, spatial_size=32, cache_dir=cache_dir))
    for sample in labels:
        codes = source_arrays(inventory, "esaworldcover", sample["__key__"])["esaworldcover"][0]
        assert sample["label"].dtype == torch.int64 and sample["presence"].dtype == torch.float32
        classes = get_modality("esaworldcover").class_codes
        present = {classes.index(c) for c in np.unique(codes) if c in classes}
        assert set(torch.nonzero(sample["presence"]).flatten().tolist()) == present
        assert set(torch.unique(sample["label"]).tolist()) <= present | {255}


def test_m3leo_load_keeps_or_drops_chips_without_data(regions, cache_dir):
    region = regions["conus"]
    rows = rows_of(region, "s2rgbm", "test")
    missing = [r["chip_id"] for r in rows if not r["available"]]
    assert len(missing) == 1
    kept = list(load(region, "s2rgbm", "test", normalize=False, available_only=False, meta=True))
    assert [k["__key__"] for k in kept] == [r["chip_id"] for r in rows]
    absent = next(k for k in kept if k["__key__"] == missing[0])
    assert absent["json"]["available"] is False and "s2rgbm" not in absent
    dropped = load(region, "s2rgbm", "test", streaming=False, normalize=False, cache_dir=cache_dir)
    assert [d["__key__"] for d in dropped] == [r["chip_id"] for r in rows if r["available"]]
    assert dropped[0]["s2rgbm"].dtype == torch.uint8


def test_m3leo_load_batches_with_a_dataloader(regions):
    ds = load(regions["conus"], "s1grd", "train", spatial_size=32)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["s1grd"].shape == (4, 16, 32, 32) and len(batch["__key__"]) == 4
    with pytest.raises(ValueError, match="split"):
        load(regions["conus"], "s1grd", "training")


HUB_SCRIPT = """
import json, sys
import m3leo_hf.hub as hub
from datasets import load_dataset
repo = sys.argv[1]
out = {"raw": [e["__key__"] for e in load_dataset(repo, "s1grd", split="validation", streaming=True)]}
for streaming in (True, False):
    ds = hub.load(repo, "esaworldcover", "val", streaming=streaming, spatial_size=32)
    out[str(streaming)] = [[e["__key__"], e["label"].sum().item(), e["presence"].tolist()] for e in ds]
print(json.dumps(out))
"""


def test_load_from_a_hub_repo_id(regions, local_hub: LocalHub, tmp_path):
    """The published repo (card included) loads by repo id; stats come through hf_hub_download."""
    region = tmp_path / "conus"
    shutil.copytree(regions["conus"], region)
    kept = {canonical("s1grd"), canonical("esaworldcover"), "metadata", "quicklooks"}
    for modality in {p.name for p in region.iterdir() if p.is_dir()} - kept:
        shutil.rmtree(region / modality)
        for suffix in (".parquet", ".shards.json", ".stats.json", ".modality.json"):
            (region / "metadata" / f"{modality}{suffix}").unlink()
    write_json(region / "metadata" / "modalities.json", modalities_index(region / "metadata", {}))
    write_card(region, repo_id="m3leo/conus", license="cc-by-4.0")
    publish(region, "m3leo/conus", endpoint=local_hub.url, token=TEST_TOKEN)
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT, "m3leo/conus"], env=local_hub.client_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["raw"] == [r["chip_id"] for r in rows_of(region, "s1grd", "val")]
    local = [[e["__key__"], e["label"].sum().item(), e["presence"].tolist()]
             for e in load(region, "esaworldcover", "val", spatial_size=32)]
    assert result["True"] == result["False"] == local and local
