"""`relit-hands personalize-relight`: the personalised / base / true assets rendered by a student of
the layout against a path-traced reference capture of the true person."""
import json
import shutil

import numpy as np
import pytest
import torch

from relit_hands.hand_model import HandAsset, asset_path
from relit_hands.student import StudentNet, save_student
from relit_hands.tools import phone_video as pv
from relit_hands.tools.cli import main as cli_main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "views"
    pv.make_phone_video(out, frames=2, resolution=48, spp=4, views=2, person_seed=5, tone="dark", seed=1,
                        progress=False)
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    m = StudentNet.for_variant("vis", resolution=64, base=8, levels=3, static_channels=4, albedo_prior=True)
    m.set_albedo(HandAsset.load(asset_path("hand_v2")).albedo_map(64))
    return save_student(tmp_path_factory.mktemp("w") / "v2.safetensors", m, {"asset": "hand_v2"})


def test_the_true_person_as_fit_scores_as_the_ceiling(reference, student, tmp_path):
    fit = tmp_path / "fit"
    shutil.copytree(reference / "ground_truth" / "asset", fit)     # a perfect personalisation
    out = tmp_path / "report"
    assert cli_main(["personalize-relight", "--fit", str(fit), "--reference", str(reference), "--student",
                     str(student), "--lights", "32", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    s = r["summary"]
    assert r["images"] == 4 and r["student"]["albedo_of"] is not None
    assert s["fit"]["psnr_mean"] == pytest.approx(s["true"]["psnr_mean"], abs=1e-6)
    assert s["fit"]["psnr_mean"] != pytest.approx(s["base"]["psnr_mean"], abs=1e-3)   # another shape and albedo
    assert all(np.isfinite(row[k]["psnr"]) for row in r["rows"] for k in ("fit", "base", "true"))
    for k in ("fit", "base", "true"):   # the least-squares global scale can only lower the pooled error
        assert s[k]["psnr_pooled_scaled"] >= s[k]["psnr_pooled"] - 1e-6 and len(s[k]["global_scale_rgb"]) == 3
    assert s["fit"]["global_scale_rgb"] == pytest.approx(s["true"]["global_scale_rgb"], rel=1e-6)
    from relit_hands.image_io import read_png

    grid = read_png(out / "relit_grid.png")
    assert grid.shape[0] == 4 * 48 and grid.shape[1] == 4 * 48
    assert "Personalised minus base" in (out / "report.md").read_text()


def test_missing_inputs_are_one_line_errors(reference, student, tmp_path, capsys):
    assert cli_main(["personalize-relight", "--fit", str(tmp_path / "nope"), "--reference", str(reference)]) == 2
    assert "nope" in capsys.readouterr().err
