"""``get_chip``: one chip by id from a local folder, an https resolve URL and hf:// of the local Hub, reading
only the chip's samples and the per-modality metadata that locates them (bytes counted by the server)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi

import m3leo_hf
from builders.registry import get_modality
from dataset_cards.card import write_card
from local_hub import TEST_TOKEN, LocalHub
from shard_tools.publish import publish
from tests.test_stream_data import source

MODALITIES = ["s1grd-2020", "esaworldcover-2020", "gunw-2020-01-01-2020-03-31"]  # config names: file names


def same_as_source(chip: dict, region_dir, modalities) -> None:
    for modality in modalities:
        raw = source(region_dir, modality)[chip["chip_id"]]
        assert chip["meta"][modality] == raw["json"]
        assert chip[f"{modality}_available"] == raw["json"]["available"]
        if not raw["json"]["available"]:
            assert chip[modality] is None
            continue
        arrays = chip[modality] if isinstance(chip[modality], dict) else {get_modality(modality).field: chip[modality]}
        assert sorted(arrays) == sorted(k for k in raw if k != "json")
        for name, array in arrays.items():
            assert array.dtype == raw[name].dtype
            np.testing.assert_array_equal(array, raw[name])


def test_local_chip_equals_its_samples(built):
    region = built / "conus"
    table = m3leo_hf.chips(str(region))
    every = [n.removeprefix("has_") for n in table.column_names if n.startswith("has_")]
    for row in table.to_pylist()[:4]:
        chip = m3leo_hf.get_chip(str(region), row["chip_id"])
        assert chip["region"] == "conus" and chip["split"] == row["split"]
        same_as_source(chip, region, every)
    lacking = next(r for r in table.to_pylist() if not r["has_s2rgbm-2020"])
    chip = m3leo_hf.get_chip(str(region), lacking["chip_id"], ["s2rgbm"])  # the alias of s2rgbm-2020
    assert chip["s2rgbm"] is None and chip["meta"]["s2rgbm"]["missing_reason"]
    assert chip["meta"]["s2rgbm"]["modality"] == "s2rgbm-2020"
    having = next(r for r in table.to_pylist() if r["has_s1grd-2020"])["chip_id"]
    by_alias = m3leo_hf.get_chip(str(region), having, ["s1grd"])
    by_name = m3leo_hf.get_chip(str(region), having, ["s1grd-2020"])
    assert by_alias["meta"]["s1grd"] == by_name["meta"]["s1grd-2020"]
    np.testing.assert_array_equal(by_alias["s1grd"], by_name["s1grd-2020"])
    assert by_alias["s1grd"].dtype == np.int16  # a single-array modality gives its array, stored as int16 dB


def test_bad_requests_are_named(built):
    region = str(built / "europe")
    with pytest.raises(ValueError, match="13 lower-case hex"):
        m3leo_hf.get_chip(region, "not-a-chip")
    with pytest.raises(KeyError, match="chip 0000000000000 is not in s1grd-2020.parquet"):
        m3leo_hf.get_chip(region, "0000000000000", ["s1grd"])
    chip_id = m3leo_hf.chips(region)["chip_id"][0].as_py()
    with pytest.raises(KeyError, match="no metadata/gunw.parquet"):
        m3leo_hf.get_chip(region, chip_id, ["gunw"])


def test_hub_chip_reads_only_its_members_and_metadata(built, local_hub: LocalHub):
    region = built / "conus"
    api = HfApi(endpoint=local_hub.url, token=TEST_TOKEN)
    api.create_repo("m3leo/conus", repo_type="dataset")
    api.upload_folder(folder_path=str(region), repo_id="m3leo/conus", repo_type="dataset",
                      ignore_patterns=[".build/*"])
    rows = {m: {r["chip_id"]: r for r in pq.read_table(region / "metadata" / f"{m}.parquet").to_pylist()}
            for m in MODALITIES}
    gunw, s1grd = MODALITIES[2], MODALITIES[0]
    chip_id = next(c for c, r in rows[gunw].items() if r["available"] and rows[s1grd][c]["available"])
    expected = {f"m3leo/conus/{rows[m][chip_id]['shard']}": rows[m][chip_id]["size"] for m in MODALITIES}
    expected.update({f"m3leo/conus/metadata/{m}.parquet": (region / "metadata" / f"{m}.parquet").stat().st_size
                     for m in MODALITIES})
    roots = {"https": (f"{local_hub.url}/datasets/m3leo/conus/resolve/main", None),
             "hf": ("hf://datasets/m3leo/conus", {"endpoint": local_hub.url, "token": TEST_TOKEN})}
    for name, (root, options) in roots.items():
        before = local_hub.bytes_sent()
        chip = m3leo_hf.get_chip(root, chip_id, MODALITIES, storage_options=options)
        sent = local_hub.bytes_sent() - before
        assert dict(sent) == expected, f"{name}: only the chip's samples and their metadata"
        members = [m["size"] for mod in MODALITIES for m in rows[mod][chip_id]["members"]]
        overhead = sum(v for k, v in sent.items() if "/metadata/" not in k) - sum(members)
        assert 0 < overhead < 1024 * len(members), "beyond member data: only their tar headers and padding"
        same_as_source(chip, region, MODALITIES)
        assert m3leo_hf.chips(root, "train", storage_options=options) == m3leo_hf.chips(str(region), "train")


LOAD_SELECTION = """
import json, sys
import m3leo_hf
ds = m3leo_hf.load(sys.argv[1], "s1grd", "train", chips=json.loads(sys.argv[2]), normalize=False)
print(json.dumps([[e["__key__"], list(e["s1grd"].shape), int(e["s1grd"].sum())] for e in ds]))
"""


def test_load_selection_from_a_hub_repo_id(built, local_hub: LocalHub, tmp_path):
    """``load("<org>/<name>", chips=...)`` reads the selected samples through hf:// (HF_ENDPOINT) and the card."""
    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region, ignore=shutil.ignore_patterns(".build"))
    write_card(region, repo_id="m3leo/conus", license="cc-by-4.0")
    publish(region, "m3leo/conus", endpoint=local_hub.url, token=TEST_TOKEN)
    rows = [r for r in pq.read_table(region / "metadata" / "s1grd-2020.parquet").to_pylist()
            if r["split"] == "train" and r["available"]]
    wanted = sorted(r["chip_id"] for r in rows)[::2]
    before = local_hub.bytes_sent()
    done = subprocess.run([sys.executable, "-c", LOAD_SELECTION, "m3leo/conus", json.dumps(wanted)],
                          env=local_hub.client_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout.splitlines()[-1])
    local = [[e["__key__"], list(e["s1grd"].shape), int(e["s1grd"].sum())]
             for e in m3leo_hf.load(region, "s1grd", "train", chips=wanted, normalize=False)]
    assert remote == local and sorted(k for k, _, _ in local) == wanted
    shards = {k: v for k, v in (local_hub.bytes_sent() - before).items() if k.endswith(".tar")}
    selected = {}
    for r in rows:
        if r["chip_id"] in wanted:
            selected[f"m3leo/conus/{r['shard']}"] = selected.get(f"m3leo/conus/{r['shard']}", 0) + r["size"]
    assert shards == selected


def rewrite(path, chip_id: str, **changes) -> None:
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if row["chip_id"] == chip_id:
            row.update(changes)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)


def test_lying_index_is_a_named_error(built, tmp_path):
    region = tmp_path / "conus"
    shutil.copytree(built / "conus", region, ignore=shutil.ignore_patterns(".build"))
    index = region / "metadata" / "s1grd-2020.parquet"  # of s1grd-2020, alias s1grd
    rows = pq.read_table(index).to_pylist()
    first, second = rows[0], next(r for r in rows if r["shard"] == rows[0]["shard"] and r["sample_index"] == 1)
    rewrite(index, first["chip_id"], size=10**15)  # far beyond the file
    with pytest.raises(OSError, match=rf"{first['shard']}: cannot read bytes .* ends after"):
        m3leo_hf.get_chip(str(region), first["chip_id"], ["s1grd"])
    rewrite(index, first["chip_id"], offset=second["offset"], size=second["size"])
    with pytest.raises(m3leo_hf.AlignmentError, match=rf"hold samples \['{second['chip_id']}'\], the index says"):
        m3leo_hf.get_chip(str(region), first["chip_id"], ["s1grd"])
    rewrite(index, first["chip_id"], offset=first["offset"] + 7, size=first["size"])
    with pytest.raises(m3leo_hf.ShardError, match=rf"{first['shard']}: cannot read sample 0 \({first['chip_id']}\)"):
        m3leo_hf.get_chip(str(region), first["chip_id"], ["s1grd"])
    (region / "metadata" / "chips.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(ValueError, match="chips.parquet is not a readable Parquet file"):
        m3leo_hf.chips(str(region))
