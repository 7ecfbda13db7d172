"""Published shards are immutable: a new year or new chips append, a changed chip rewrites only its shard."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from dataset_cards.card import write_card
from local_hub import TEST_TOKEN, LocalHub
from shard_tools.build import build
from shard_tools.inventory import scan_region, splits_csv
from shard_tools.publish import publish
from shard_tools.verify import verify_region

REPO = "M3LEO/conus"


def digests(region: Path) -> dict[str, str]:
    """sha256 of every file a Hub repo of the region holds."""
    return {p.relative_to(region).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(region.rglob("*")) if p.is_file() and ".build" not in p.relative_to(region).parts}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {path for path, digest in after.items() if before.get(path) != digest}


@pytest.fixture
def conus(sample_chips, tmp_path) -> Path:
    shutil.copytree(sample_chips / "conus", tmp_path / "chips" / "conus")
    return tmp_path / "chips"


def build_and_card(chips: Path, out: Path) -> Path:
    build(chips, out, chips_per_shard=3)
    write_card(out / "conus", license="cc-by-4.0")  # the licence is the publisher's statement, never a default
    return out / "conus"


def test_a_new_year_adds_only_its_own_tars_metadata_and_card(conus, tmp_path, local_hub: LocalHub):
    stem = scan_region(conus / "conus").stem
    year = conus / "conus" / stem / "s1grd-2019"
    held_back = tmp_path / "held"
    shutil.move(year, held_back)
    region = build_and_card(conus, tmp_path / "out")
    before = digests(region)
    publish(region, REPO, endpoint=local_hub.url, token=TEST_TOKEN)
    uploaded_first = local_hub.uploads(REPO)

    shutil.move(held_back, year)
    region = build_and_card(conus, tmp_path / "out")
    after = digests(region)
    assert verify_region(region) == []
    assert all(after[path] == digest for path, digest in before.items() if path.endswith(".tar"))
    grown = changed(before, after)
    assert {p for p in grown if p.endswith(".tar")} == {p for p in after if p.startswith("s1grd-2019/")}
    assert {p for p in grown if not p.endswith(".tar")} == {
        "README.md", "croissant.json", "metadata/chips.parquet", "metadata/modalities.json",
        "quicklooks/s1grd-2019.png",
        *(f"metadata/s1grd-2019.{kind}" for kind in ("parquet", "shards.json", "stats.json", "stats-upstream.json",
                                                     "modality.json")),
        *(f"metadata/s1grd-2019.{split}.wids.json" for split in ("train", "val", "test"))}

    publish(region, REPO, endpoint=local_hub.url, token=TEST_TOKEN)
    uploaded = local_hub.uploads(REPO) - uploaded_first
    assert set(uploaded) == grown and set(uploaded.values()) == {1}  # counted on the server side


def test_new_chips_go_into_new_shards_after_the_existing_ones(conus, tmp_path):
    csv_path = Path(splits_csv(conus / "conus"))
    full = csv_path.read_text()
    rows = list(csv.DictReader(io.StringIO(full)))
    train = [r["identifier"] for r in rows if r["split"] == "train"]
    held = set(train[-2:])
    kept = [r for r in rows if r["identifier"] not in held]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["identifier", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    region = build_and_card(conus, tmp_path / "out")
    before = digests(region)
    before_shards = sorted(p.name for p in (region / "s1grd-2020").iterdir())

    csv_path.write_text(full)
    region = build_and_card(conus, tmp_path / "out")
    after = digests(region)
    assert verify_region(region) == []
    assert all(after[p] == d for p, d in before.items() if p.endswith(".tar"))
    new_shards = sorted(set(p.name for p in (region / "s1grd-2020").iterdir()) - set(before_shards))
    last_train = max(int(n[6:12]) for n in before_shards if n.startswith("train-"))
    assert new_shards == [f"train-{last_train + 1:06d}.tar"]
    plan = pq.read_table(region / "metadata" / "plan.parquet").to_pylist()
    assert {r["chip_id"] for r in plan if r["shard_index"] == last_train + 1 and r["split"] == "train"} == held

    # a chip that leaves the input keeps its place as an unavailable sample
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["identifier", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    region = build_and_card(conus, tmp_path / "out")
    rows_after = {r["chip_id"]: r for r in pq.read_table(region / "metadata" / "s1grd-2020.parquet").to_pylist()}
    assert held <= set(rows_after) and not any(rows_after[c]["available"] for c in held)
    assert verify_region(region) == []


def rewrite_same_size(path: Path) -> None:
    """New values, same dtype/shape/layout: the file keeps its size."""
    with rasterio.open(path) as dataset:
        profile, data, names = dataset.profile, dataset.read(), dataset.descriptions
    size = path.stat().st_size
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write((data.astype(np.int64) + 1).astype(data.dtype))
        for index, name in enumerate(names, start=1):
            dataset.set_band_description(index, name)
    assert path.stat().st_size == size


def test_changed_content_of_the_same_size_rewrites_its_shard(conus, tmp_path):
    region = build_and_card(conus, tmp_path / "out")
    inventory = scan_region(conus / "conus")
    chip = next(c for c in inventory.chips if inventory.source("esaworldcover-2020", c.chip_id).status == "file")
    path = Path(inventory.source("esaworldcover-2020", chip.chip_id).path)
    stat = path.stat()
    rows = {r["chip_id"]: r for r in pq.read_table(region / "metadata" / "esaworldcover-2020.parquet").to_pylist()}
    shard = rows[chip.chip_id]["shard"]
    before = digests(region)

    rewrite_same_size(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same size AND modification time
    assert build(conus, tmp_path / "out").written == 0  # size + mtime cannot see it ...
    report = build(conus, tmp_path / "out", rehash=True)  # ... the content hash can
    assert report.written == 1
    after = digests(region)
    assert {p for p in changed(before, after) if p.endswith(".tar")} == {shard}
    assert verify_region(region) == []

    rewrite_same_size(path)  # a normal edit changes the modification time: found without --rehash
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert build(conus, tmp_path / "out").written == 1

    tar = region / shard
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # edited by hand
    tar.write_bytes(bytes(data))
    assert any(shard in problem for problem in verify_region(region))


def test_the_same_tree_as_a_path_or_a_file_url_reuses_every_shard(conus, tmp_path):
    """A tree given as a path, then as a ``file://`` URL (and back): the same sources, so nothing is rewritten
    and every file of the region is unchanged."""
    region = build_and_card(conus, tmp_path / "out")
    before = digests(region)
    assert build(conus.as_uri(), tmp_path / "out").written == 0
    assert build(conus, tmp_path / "out").written == 0
    assert changed(before, digests(region)) == set()
