"""Every preset (upstream experiment) on the sample chips against an independent implementation of the upstream
recipe (tests/upstream_reference.py, written from upstream's documented behaviour, file and line there):
same channels, order, shapes, normalisation and labels, within float32 tolerance.

Upstream sources (spaceml-org/M3LEO): configs/<experiment>/datamodule.yaml (inputs, label, options),
src/fdlsar/io/io.py:118-186 (s1grd), io/io_blosc.py:906-943 (s2rgbm), io/io.py:330-364 (gssic),
io/io_blosc.py:375-531 (gunw), utils.py:350-584 (normalisers), datamodules/transforms.py:178-187,428-530
(resize, ScaleMean), datamodules/components/esawc.py:10-41 (labels)."""

from __future__ import annotations

import numpy as np
import pytest

import m3leo_hf
import upstream_reference as ref
from m3leo_hf.presets import experiment, names

SAR_SIZE = 24  # gssic/gunw resize target (upstream 448; small to keep the test fast)
CROP = 32  # fusion presets: the common grid of the sample chips (31-33 px)
SAMPLES = 3  # chips checked per preset


def test_every_upstream_experiment_has_a_preset():
    expected = {f"{kind}-{label}/{x}" for kind, inputs in (("baseline", ("s1grd-vv", "s1grd-vh", "s1grd-vv-vh", "s2rgbm",
                                                                         "gssic", "gunw")),
                                                          ("fusion", ("gssic", "gunw", "s1grd-vv-vh")))
                for label in ("agb", "esawc", "ghsbuilts") for x in inputs}
    expected |= {"mae-pretraining/s1grd", "mae-finetuning/s1grd-to-esawc", "mae-finetuning/s1grd-to-veg"}
    assert set(names()) == expected


@pytest.mark.parametrize("name", names())
def test_preset_matches_the_upstream_recipe(name, built, sample_chips):
    parts = experiment(name)
    roots = {r: str(built / r) for r in ("conus", "europe", "pakin")}
    fusion = name.startswith("fusion")  # inputs on one grid: the SAR resize target and a crop of the others
    size, crop = (CROP, CROP) if fusion else (SAR_SIZE, None)
    data = m3leo_hf.preset(name, list(roots.values()), split="train", batch_size=None, sar_size=size, crop=crop,
                           shuffle=False)
    checked = 0
    for sample in data:
        root = str(sample_chips / sample["region"])
        expected = [ref.input_tensor(root, sample["chip_id"], m, o, size) for m, o in parts["inputs"]]
        if fusion:
            expected = [ref.center_crop(x, CROP) for x in expected]
        x = np.concatenate(expected)
        np.testing.assert_allclose(sample["x"].numpy(), x, rtol=1e-5, atol=2e-5, err_msg=f"{name} {sample['chip_id']}")
        flagged = [ref.constant_channels(root, sample["chip_id"], m, o) for m, o in parts["inputs"]
                   if o.get("skip_constant_channels")]
        assert ("constant_channels" in sample) == bool(flagged)
        if flagged:
            assert bool(sample["constant_channels"]) == any(flagged)
        if parts["label"]:
            y = ref.label_tensor(root, sample["chip_id"], parts["label"][0])
            if fusion and parts["label"][0] == "esaworldcover":  # not resized upstream: cropped like the inputs
                y = ref.center_crop(y, CROP)
            assert sample["y"].shape == y.shape and sample["y"].dtype.is_floating_point == (y.dtype.kind == "f")
            np.testing.assert_allclose(sample["y"].numpy(), y, rtol=1e-5, atol=1e-4, err_msg=name)
        else:
            assert "y" not in sample
        checked += 1
        if checked == SAMPLES:
            break
    assert checked == SAMPLES
