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


def _capture(tmp_path_factory, name: str, **kw):
    """A tiny make-phone-video capture in a fresh folder."""
    out = tmp_path_factory.mktemp(name) / "clip"
    pv.make_phone_video(out, progress=False, **kw)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _capture(tmp_path_factory, "ref", frames=2, resolution=48, spp=4, views=2, person_seed=5, tone="dark",
                    seed=1)


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


@pytest.fixture(scope="module")
def phone_capture(tmp_path_factory):
    return _capture(tmp_path_factory, "phone", frames=3, resolution=40, spp=2, views=1, person_seed=7, tone="light",
                    seed=2)


def _fake_fit(capture, folder, asset, held_out=(1,)):
    """A personalised-asset folder holding ``asset`` and a fit.json made from ``capture`` (frames held out)."""
    shutil.copytree(asset, folder)
    frames = [{"frame": i, "held_out": i in held_out} for i in range(3)]
    (folder / "fit.json").write_text(json.dumps({"inputs": {"video": str(capture / "frames")}, "frames": frames}))
    return folder


def test_novel_views_path_trace_only_the_held_out_frames(phone_capture, tmp_path):
    fit = _fake_fit(phone_capture, tmp_path / "fit", phone_capture / "ground_truth" / "asset")
    assert cli_main(["personalize-relight", "--fit", str(fit), "--reference", str(phone_capture), "--held-out",
                     "--spp", "2", "--no-progress"]) == 0
    r = json.loads((fit / "novel_views" / "report.json").read_text())
    s = r["summary"]
    assert r["frames"] == [1] and r["images"] == 1 and r["renderer"] == "pathtrace" and r["spp"] == 2
    # the same seeds for every asset: the true person as "fit" renders the very images of "true"
    assert s["fit"]["psnr_mean"] == pytest.approx(s["true"]["psnr_mean"], abs=1e-9)
    assert s["fit"]["psnr_mean"] != pytest.approx(s["base"]["psnr_mean"], abs=1e-3)
    # ... and other seeds than the capture's: the reference's noise keeps the ceiling finite
    assert np.isfinite(s["true"]["psnr_mean"]) and s["true"]["psnr_mean"] < 99
    assert "Novel views" in (fit / "novel_views" / "report.md").read_text()


def test_novel_views_refuse_a_fit_of_another_capture_or_without_held_out_frames(phone_capture, reference,
                                                                                tmp_path, capsys):
    fit = _fake_fit(phone_capture, tmp_path / "fit", phone_capture / "ground_truth" / "asset")
    assert cli_main(["personalize-relight", "--fit", str(fit), "--reference", str(reference), "--held-out"]) == 2
    assert "not from the capture" in capsys.readouterr().err
    none = _fake_fit(phone_capture, tmp_path / "none", phone_capture / "ground_truth" / "asset", held_out=())
    assert cli_main(["personalize-relight", "--fit", str(none), "--reference", str(phone_capture), "--held-out"]) == 2
    assert "holds no frame out" in capsys.readouterr().err


def test_re_rendered_references_are_the_true_asset_path_traced(phone_capture, tmp_path):
    fit = _fake_fit(phone_capture, tmp_path / "fit", asset_path("hand_v2").parent)
    out = tmp_path / "nv"
    assert cli_main(["personalize-relight", "--fit", str(fit), "--reference", str(phone_capture), "--held-out",
                     "--spp", "2", "--reference-spp", "8", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert "re-rendered" in r["references"] and "8 spp" in r["references"]
    s = r["summary"]   # the base asset here is the fit: both trace the same images
    assert s["fit"]["psnr_mean"] == pytest.approx(s["base"]["psnr_mean"], abs=1e-9)
    assert s["true"]["psnr_mean"] > s["base"]["psnr_mean"]
