"""m3leo-shift end to end on the 32-px sample shards: pretraining (resumable), embedding, report."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from m3leo_hf.shift import terrain
from m3leo_hf.shift.checkpoint import load_checkpoint, load_encoder
from m3leo_hf.shift.cli import main
from m3leo_hf.shift.embed import embed, read_table, resolve_encoder
from m3leo_hf.shift.mae import MAEConfig
from m3leo_hf.shift.pretrain import PretrainOptions, pretrain
from m3leo_hf.shift.recipe import CHANNELS
from tests.conftest import CHIPS_PER_SHARD

REGIONS = ("conus", "europe", "pakin")
FAST = ["--image-size", "32", "--batch-size", "2", "--permutations", "50", "--bootstraps", "20"]
CONFIG = MAEConfig.preset("tiny", image_size=32)


def mean_pool() -> torch.nn.Module:
    """An encoder factory for ``module:attr``: per-channel means, (B, 12, S, S) -> (B, 12)."""
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def available_s1grd(region_dir) -> set[str]:
    table = pq.read_table(region_dir / "metadata" / "s1grd-2020.parquet", columns=["chip_id", "available"])
    return {c for c, a in zip(table["chip_id"].to_pylist(), table["available"].to_pylist()) if a}


def test_cli_end_to_end(built, tmp_path, capsys):
    out = tmp_path / "shift-out"
    roots = [str(built / r) for r in REGIONS]
    assert main([*roots, "--epochs", "1", "--out", str(out), "--terrain-extra", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC DATA" in printed and "not the M3LEO paper's result" in printed

    document = json.loads((out / "shift.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN
    assert document["provenance"]["data"] == "synthetic" and "SYNTHETIC" in document["provenance"]["notice"]
    assert document["regions"] == list(REGIONS) and len(document["pairs"]) == 3
    for pair in document["pairs"]:
        raw = pair["raw"]
        for name in ("mmd2", "auc", "frechet"):
            assert raw[name]["low"] <= raw[name]["high"], (pair["a"], pair["b"], name)
        assert 0 < raw["mmd2"]["p_value"] <= 1 and 0 <= raw["auc"]["value"] <= 1
        for condition in ("strata", "nearest"):
            matching = pair[condition]["matching"]
            assert matching["matched_x"] == matching["matched_y"] == pair[condition]["n_a"]
            assert set(matching["smd_before"]) == set(matching["smd_after"]) == set(terrain.COLUMNS)
    markdown = (out / "shift.md").read_text()
    assert "SYNTHETIC DATA" in markdown and "| conus-europe | raw |" in markdown

    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted([f"heatmap-{s}-{c}.png" for s in ("auc", "frechet", "mmd2")
                           for c in ("nearest", "raw", "strata")] + ["projection.png"])
    for name in pngs:
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.width >= 500 and image.height >= 400
            assert len(image.convert("RGB").getcolors(1 << 16) or range(1 << 16)) > 10  # not blank

    table, info = read_table(out / "embeddings.parquet")
    for region in REGIONS:
        assert set(table["chip_id"][table["region"] == region]) == available_s1grd(built / region)
    assert table["embedding"].shape == (len(table["chip_id"]), CONFIG.width)
    assert np.isfinite(table["embedding"]).all() and info["normalizer"]["channels"] == list(CHANNELS)
    assert set(table["split"]) == {"train", "val", "test"}
    descriptors = dict(zip(terrain.COLUMNS, table["terrain"].T))
    fractions = table["terrain"][:, : len(terrain.LANDCOVER)]
    assert np.allclose(fractions.sum(axis=1), 1) and (fractions >= 0).all()
    assert ((descriptors["tree_cover_pct"] >= 0) & (descriptors["tree_cover_pct"] <= 100)).all()
    assert (descriptors["built_up_m2"] >= 0).all() and (descriptors["slope_deg"] >= 0).all()
    assert (-500 < descriptors["elevation_m"]).all() and (descriptors["elevation_m"] < 9000).all()
    with safe_open(str(out / "mae" / "encoder.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["mae_config"])["image_size"] == 32


def test_resumed_pretraining_equals_an_uninterrupted_run(built, tmp_path):
    roots = [built / r for r in REGIONS]
    options = PretrainOptions(epochs=2, batch_size=2, checkpoint_every=2)
    straight = load_encoder(pretrain(roots, tmp_path / "straight", CONFIG, options))[0]
    pretrain(roots, tmp_path / "resumed", CONFIG, PretrainOptions(epochs=1, batch_size=2, checkpoint_every=2))
    state = load_checkpoint(tmp_path / "resumed" / "checkpoint")[2]
    assert state["loader"]["epoch"] == 1 and state["loader"]["batches"] == 0
    resumed = load_encoder(pretrain(roots, tmp_path / "resumed", CONFIG, options))[0]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_factory_encoder_and_reused_parts(built, tmp_path):
    module, normalizer, description = resolve_encoder("test_shift_cli:mean_pool")
    assert normalizer is None and description == "factory test_shift_cli:mean_pool"
    _, normalizer, _ = resolve_encoder(str(pretrain([built / "conus"], tmp_path / "mae", CONFIG,
                                                    PretrainOptions(epochs=1, batch_size=2))))
    out = tmp_path / "embeddings.parquet"
    embed([built / "europe"], module, normalizer, out, image_size=32, batch_size=3, metadata={"encoder": description})
    table, info = read_table(out)
    assert table["embedding"].shape[1] == 12 and info["encoder"] == description
    parts = sorted((tmp_path / "embeddings.parquet.parts").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    embed([built / "europe"], module, normalizer, out, image_size=32, batch_size=3, metadata={"encoder": description})
    assert [p.stat().st_mtime_ns for p in parts] == stamps  # same encoder: parts reused
    other = torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(12, 5))
    embed([built / "europe"], other, normalizer, out, image_size=32, batch_size=3, metadata={"encoder": "other"})
    assert read_table(out)[0]["embedding"].shape[1] == 5  # another encoder: embedded again


def test_bad_encoders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_encoder(str(tmp_path / "missing.safetensors"))
    with pytest.raises(AttributeError, match="no callable"):
        resolve_encoder("test_shift_cli:nothing_here")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="not an m3leo-shift encoder"):
        resolve_encoder(str(tmp_path / "foreign.safetensors"))


def test_hub_url_roots_give_the_local_table(built, tmp_path, local_hub):
    from huggingface_hub import HfApi

    from local_hub import TEST_TOKEN

    api = HfApi(endpoint=local_hub.url, token=TEST_TOKEN)
    for region in ("conus", "europe"):
        api.create_repo(f"m3leo/{region}", repo_type="dataset")
        api.upload_folder(folder_path=str(built / region), repo_id=f"m3leo/{region}", repo_type="dataset")
    urls = [f"{local_hub.url}/datasets/m3leo/{r}/resolve/main" for r in ("conus", "europe")]
    options = ["--encoder", "test_shift_cli:mean_pool", *FAST]
    assert main([*urls, "--out", str(tmp_path / "hub"), *options]) == 0
    assert main([str(built / "conus"), str(built / "europe"), "--out", str(tmp_path / "local"), *options]) == 0
    hub, _ = read_table(tmp_path / "hub" / "embeddings.parquet")
    local, _ = read_table(tmp_path / "local" / "embeddings.parquet")
    assert list(hub["chip_id"]) == list(local["chip_id"]) and set(hub["region"]) == {"conus", "europe"}
    np.testing.assert_array_equal(hub["embedding"], local["embedding"])


def test_a_region_without_terrain_layers_gets_nan_descriptors(sample_chips, tmp_path):
    from shard_tools.build import build

    shards = tmp_path / "shards"
    build(sample_chips, shards, regions=["pakin"], modalities=["s1grd"], chips_per_shard=CHIPS_PER_SHARD)
    module, _, _ = resolve_encoder("test_shift_cli:mean_pool")
    normalizer = resolve_encoder(str(pretrain([shards / "pakin"], tmp_path / "mae", CONFIG,
                                              PretrainOptions(epochs=1, batch_size=2))))[1]
    table, _ = read_table(embed([shards / "pakin"], module, normalizer, tmp_path / "e.parquet", image_size=32))
    assert set(table["chip_id"]) == available_s1grd(shards / "pakin")
    assert np.isnan(table["terrain"]).all() and np.isfinite(table["embedding"]).all()


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(built, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    roots = [str(built / r) for r in REGIONS]
    options = PretrainOptions(epochs=3, batch_size=2, checkpoint_every=1)
    # the same intra-op thread count as here: float reductions, hence the weights, depend on it
    code = (f"import sys, torch; torch.set_num_threads({torch.get_num_threads()}); "
            "from m3leo_hf.shift.pretrain import PretrainOptions, pretrain; "
            "from m3leo_hf.shift.mae import MAEConfig; "
            f"pretrain({roots!r}, sys.argv[1], MAEConfig.preset('tiny', image_size=32), "
            "PretrainOptions(epochs=3, batch_size=2, checkpoint_every=1))")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "killed")], env=os.environ.copy())
    trainer = tmp_path / "killed" / "checkpoint" / "trainer.pt"
    deadline = time.monotonic() + 120
    while not trainer.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    state = load_checkpoint(tmp_path / "killed" / "checkpoint")[2]["loader"]
    assert state["batches"] > 0 and state["epoch"] < 3  # killed inside an epoch
    resumed = load_encoder(pretrain(roots, tmp_path / "killed", CONFIG, options))[0]
    straight = load_encoder(pretrain(roots, tmp_path / "straight", CONFIG, options))[0]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
