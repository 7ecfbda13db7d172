"""The card's quicklooks and licences, ``m3leo_hf.plot``, and values from files that try to break the card."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import m3leo_hf
from builders import Modality, register
from builders.registry import families, unregister
from dataset_cards.about import SUPPORTED_DATASETS, declared_license, source_products
from dataset_cards.card import write_card
from dataset_cards.quicklooks import CHIPS, SPLIT_COLOURS
from m3leo_hf.plot import TILE
from shard_tools.build import build
from tests.chip_files import region_with_folder, write_tif
from tests.conftest import CHIPS_PER_SHARD

pytestmark = pytest.mark.datasets  # cards declare datasets features

HOSTILE_BANDS = ("<script>alert(1)</script>", "---", "a|b", "x\n---\ny", "`tick` *bold* [link](javascript:x)")
HOSTILE = Modality(name="hostile", folder="hostile", container="geotiff", dtype="uint8", nodata=0,
                   description="A test modality whose files carry hostile band names")


@pytest.fixture(scope="module")
def region(built, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("pictures") / "conus"
    shutil.copytree(built / "conus", copy, ignore=shutil.ignore_patterns(".build"))
    write_card(copy, license="cc-by-4.0")
    return copy


def front_matter(text: str) -> dict:
    return yaml.safe_load(re.match(r"\A---\n(.*?)\n---\n", text, re.S).group(1))


def tile_pixels(png: Path, tiles: int) -> np.ndarray:
    """The pixels of the chip tiles of a quicklook grid (gaps and captions left out), as (N, 3)."""
    image = np.asarray(Image.open(png).convert("RGB"))
    return np.concatenate([image[4:4 + TILE, 4 + i * (TILE + 4): 4 + i * (TILE + 4) + TILE].reshape(-1, 3)
                           for i in range(tiles)])


def test_quicklooks_exist_are_embedded_and_not_blank(region):
    text = (region / "README.md").read_text()
    modalities = sorted(p.name[: -len(".shards.json")] for p in (region / "metadata").glob("*.shards.json"))
    pngs = sorted((region / "quicklooks").glob("*.png"))
    assert {p.stem for p in pngs} == {"footprints", *modalities}
    for png in pngs:
        assert f"](quicklooks/{png.name})" in text, png.name
        if png.stem == "footprints":
            continue
        image = Image.open(png)
        tiles = (image.width - 4) // (TILE + 4)
        assert tiles == CHIPS and image.height > TILE
        pixels = tile_pixels(png, tiles)
        assert (pixels.astype(np.float64).var(axis=0) > 0).all(), f"{png.name} has a constant channel"
    footprints = np.asarray(Image.open(region / "quicklooks" / "footprints.png").convert("RGB")).reshape(-1, 3)
    for split, colour in SPLIT_COLOURS.items():
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        assert (footprints == rgb).all(axis=1).sum() > 20, f"no {split} chip drawn"


def test_plot_draws_a_joined_sample(region, tmp_path):
    modalities = ["s1grd", "s2rgbm", "esaworldcover", "srtmdem", "gunw"]
    stream = m3leo_hf.stream(region, modalities=modalities, split="train", batch_size=2, spatial_size=32,
                             normalize=True, shuffle=False)
    batch = next(iter(stream))
    path = tmp_path / "sample.png"
    image = m3leo_hf.plot(batch, path, tile=64)
    assert path.is_file() and Image.open(path).size == image.size == (len(modalities) * 68 + 4, 18 + 64 + 14 + 8)
    pixels = np.asarray(image.convert("RGB"))
    for i, name in enumerate(modalities):
        panel = pixels[22:22 + 64, 4 + i * 68: 4 + i * 68 + 64].reshape(-1, 3).astype(np.float64)
        if bool(batch[f"{name}_available"][0]):
            assert (panel.var(axis=0) > 0).any(), name
    with pytest.raises(ValueError, match="no modality"):
        m3leo_hf.plot({"chip_id": "x"})


def test_licences_are_listed_declared_and_never_defaulted(region, built, tmp_path):
    text = (region / "README.md").read_text()
    assert front_matter(text)["license"] == "cc-by-4.0" == declared_license(region / "README.md")
    products = source_products(["s1grd", "esaworldcover", "srtmdem"])
    assert [p["id"] for p in products] == ["copernicus-sentinel", "esa-worldcover", "srtm-cgiar"]
    every = source_products([family.key for family in families()])
    for product in every:
        assert product["sources"] and all(url.startswith(("http://", "https://")) for url in product["sources"])
    assert {m for p in every for m in p["modalities"]} == {family.key for family in families()}  # none unlisted
    assert "Contains modified Copernicus Sentinel data" in text and "doi:10.5281/zenodo.5571936" in text
    assert "Restriction: redistribution needs CIAT" in text
    unset = tmp_path / "conus"
    shutil.copytree(built / "conus", unset, ignore=shutil.ignore_patterns(".build"))
    write_card(unset)
    unset_text = (unset / "README.md").read_text()
    assert "license" not in front_matter(unset_text) and "Dataset licence: not set" in unset_text
    assert declared_license(unset / "README.md") is None
    with pytest.raises(ValueError, match="Hub licence id"):
        write_card(unset, license="CC BY 4.0\n---")


def test_supported_datasets_range_is_stated_in_pyproject_and_card(region):
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert f"datasets{SUPPORTED_DATASETS}" in pyproject["project"]["dependencies"]
    text = (region / "README.md").read_text()
    assert f"`datasets{SUPPORTED_DATASETS}`" in text and "split_dataset_by_node" in text and "two ranks got 16 and 8" in text


@pytest.fixture
def hostile():
    register(HOSTILE)
    yield HOSTILE
    unregister(HOSTILE.name)


def test_values_from_files_cannot_break_the_card(hostile, sample_chips, tmp_path):
    chips, inventory, folder = region_with_folder(sample_chips, tmp_path, hostile.folder)
    rng = np.random.default_rng(0)
    for chip in inventory.chips:
        array = rng.integers(1, 255, size=(len(HOSTILE_BANDS), 16, 16), dtype=np.uint8)
        write_tif(folder / f"{chip.chip_id}.tif", array, HOSTILE_BANDS, (chip.west, chip.south, chip.east, chip.north))
    build(chips, tmp_path / "out", chips_per_shard=CHIPS_PER_SHARD)
    region = tmp_path / "out" / "pakin"
    write_card(region, license="cc-by-4.0")
    text = (region / "README.md").read_text()

    assert "<script" not in text and "&#60;script&#62;" in text and "](javascript:" not in text
    assert text.split("\n").count("---") == 2  # the front matter's delimiters only
    meta = front_matter(text)
    assert "hostile" in [c["config_name"] for c in meta["configs"]]
    bands = next(line for line in text.splitlines() if line.startswith("Bands of `hostile`"))
    assert bands.count("<code>") == 3 and "`---`" in bands and "`x --- y`" in bands  # escaped, one line each
    for table in re.findall(r"(?:^\|.*\n)+", text, re.M):  # every Markdown table keeps its columns
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, table
    stats_rows = [line for line in text.splitlines() if line.startswith("| `hostile` |") and line.count("|") == 8]
    assert len(stats_rows) == len(HOSTILE_BANDS)

    from datasets import load_dataset  # stock datasets reads the card's configs and features

    example = next(iter(load_dataset(str(region), "hostile", split="train", streaming=True)))
    assert example["json"]["fields"]["hostile"]["band_names"] == list(HOSTILE_BANDS)
