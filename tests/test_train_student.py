"""`relit-hands train-student`: a tiny run on the stand-in set reduces its loss, writes every
documented file, resumes, and its model loads and runs through the engine's backends.

The training runs go through the real CLI in a subprocess, as a user runs them."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from relit_hands.engine import Engine
from relit_hands.inference import make_backend
from relit_hands.student import load_student
from relit_hands.tools.student_data import StudentDataset, make_synthetic_student_set


def cli_main(args, capsys=None) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "relit_hands.tools.cli"] + args, capture_output=True, text=True,
                       env=env, timeout=300)
    if capsys is not None:
        return r
    assert r.returncode == 0, r.stderr[-3000:]
    return r.returncode

torch.set_num_threads(1)
TINY = ["--batch", "4", "--base", "8", "--levels", "3", "--static-channels", "4", "--lr", "3e-3", "--warmup", "5",
        "--log-every", "5", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def sset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sset")
    e = Engine(raycast="embree")
    make_synthetic_student_set(root, e, n=8, resolution=64, n_lights=32, seed=0)
    e.release()
    return root


def test_tiny_run_reduces_loss_and_resumes(sset, tmp_path, monkeypatch):
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["train-student", "--data", str(sset), "--variant", "vis", "--out", str(out), "--val-every", "20",
            "--ckpt-every", "20"] + TINY
    assert cli_main(args + ["--steps", "40"]) == 0
    s = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    first = sum(float(r["loss"]) for r in rows[:2]) / 2
    last = sum(float(r["loss"]) for r in rows[-2:]) / 2
    assert last < 0.6 * first, f"loss {first:.3f} -> {last:.3f}"
    vals = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(vals) == 2 and vals[-1] < s["first_train_loss"]
    for f in ("loss_curve.png", "val/step_000020.png", "val/step_000040.png", "student.safetensors",
              "checkpoints/latest.json", "checkpoints/step_000040.safetensors", "checkpoints/step_000040.state.pt"):
        assert (out / f).is_file(), f
    st = torch.load(out / "checkpoints/step_000040.state.pt", weights_only=True)
    assert st["step"] == 40
    # resume to 60 steps: continues from step 40, keeps the log
    assert cli_main(args + ["--steps", "60", "--resume"]) == 0
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["resumed_from"] == 40 and s2["steps"] == 60
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "train_log.csv"))]
    assert steps == sorted(set(steps)) and steps[-1] == 60 and 5 in steps
    model, meta = load_student(out / "student.safetensors")
    assert meta["variant"] == "vis" and meta["loss_tau"] > 0 and meta["step"] == 60
    be = make_backend("onnxruntime", out / "student.safetensors")
    x = torch.rand(2, 19, 64, 64)
    with torch.no_grad():
        assert float((be.run(x) - model(x)).abs().max()) < 1e-3 * float(model(x).max())


@pytest.mark.parametrize("variant", ["novis", "bottleneck"])
def test_ablations_train(sset, tmp_path, variant):
    out = tmp_path / variant
    assert cli_main(["train-student", "--data", str(sset), "--variant", variant, "--out", str(out), "--steps", "15",
                     "--val-every", "15", "--ckpt-every", "15"] + TINY) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["variant"] == variant and s["final_val_loss"] is not None
    _, meta = load_student(out / "student.safetensors")
    assert meta["in_channels"] == {"novis": 15, "bottleneck": 3}[variant]


def test_turn_augmentation_trains_and_is_recorded(sset, tmp_path):
    out = tmp_path / "turn"
    assert cli_main(["train-student", "--data", str(sset), "--out", str(out), "--steps", "6", "--val-every", "6",
                     "--ckpt-every", "6", "--turn"] + TINY) == 0
    _, meta = load_student(out / "student.safetensors")
    assert "--turn" in meta["augmentation"]
    r = cli_main(["train-student", "--data", str(sset), "--variant", "bottleneck", "--out", str(tmp_path / "b"),
                  "--steps", "2", "--turn"] + TINY, capsys=True)
    assert r.returncode != 0 and "bottleneck" in r.stderr


def test_several_sets_train_together(sset, tmp_path):
    other = tmp_path / "other"
    e = Engine(raycast="embree")
    make_synthetic_student_set(other, e, n=2, resolution=64, n_lights=32, seed=4)
    e.release()
    out = tmp_path / "pooled"
    assert cli_main(["train-student", "--data", str(sset), str(other), "--out", str(out), "--steps", "4",
                     "--val-every", "4", "--ckpt-every", "4"] + TINY) == 0
    _, meta = load_student(out / "student.safetensors")
    n = sum(len(StudentDataset(d, "train")) for d in (sset, other))
    assert meta["dataset"]["n_train_items"] == n and str(other.resolve()) in meta["dataset"]["path"]
    assert json.loads((out / "summary.json").read_text())["data"] == [str(sset.resolve()), str(other.resolve())]


def test_bad_data_is_a_user_error(tmp_path):
    r = cli_main(["train-student", "--data", str(tmp_path), "--out", str(tmp_path / "r")], capsys=True)
    assert r.returncode == 2 and "manifest" in r.stderr


def test_cli_variant_choices_match_the_network():
    from relit_hands.student import VARIANTS
    from relit_hands.tools import train_student

    assert train_student.VARIANTS == VARIANTS


def test_init_from_fine_tunes_on_a_key_light_set(sset, tmp_path):
    """--init-from starts a new run from trained weights; a set recomputed with --key-lights makes
    a student that records key_lights, and the engine renders it with per-texel key lights."""
    from relit_hands.scene import scene_preset
    from relit_hands.environment import EnvironmentMap

    base = tmp_path / "base"
    assert cli_main(["train-student", "--data", str(sset), "--out", str(base), "--steps", "10", "--val-every", "10",
                     "--ckpt-every", "10"] + TINY) == 0
    kset = tmp_path / "kset"
    assert cli_main(["recompute-features", "--data", str(sset), "--out", str(kset), "--key-lights", "2",
                     "--no-progress"]) == 0
    w0, m0 = load_student(base / "student.safetensors")
    out = tmp_path / "ft"
    assert cli_main(["train-student", "--data", str(kset), "--out", str(out), "--steps", "10", "--val-every", "10",
                     "--ckpt-every", "10", "--init-from", str(base / "student.safetensors")] + TINY) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["initialised_from"] == str(base / "student.safetensors")
    model, meta = load_student(out / "student.safetensors")
    assert meta["key_lights"] == 2 and meta["loss_tau"] == m0["loss_tau"]
    assert torch.equal(model.in_scale, w0.in_scale)                      # the normalisation is kept
    e = Engine(raycast="embree")
    f = e.render_student(scene_preset("shadow"), EnvironmentMap.from_name_or_path("sky_sun"),
                         student=str(out / "student.safetensors"), n_lights=32, width=96, height=64)
    assert all(np.isfinite(t).all() for t in f.textures.values())
    e.release()
    # a student of another variant, or resuming with a set of other key lights, is refused
    r = cli_main(["train-student", "--data", str(kset), "--out", str(tmp_path / "bad"), "--variant", "novis",
                  "--steps", "2", "--init-from", str(base / "student.safetensors")] + TINY, capsys=True)
    assert r.returncode != 0 and "vis student, not novis" in r.stderr
    r = cli_main(["train-student", "--data", str(sset), "--out", str(out), "--steps", "12", "--resume"] + TINY,
                 capsys=True)
    assert r.returncode != 0 and "key_lights=2" in r.stderr


def test_student_loss_log_term_and_linear_weight():
    """student_loss: masked L1 on log(1 + x / tau) (masked texels do not count); --linear-weight
    adds W x L1 on x / tau, which grows with the brightness of an error of the same relative size."""
    import math

    import torch

    from relit_hands.tools.train_student import student_loss

    tau = 0.5
    target = torch.full((1, 3, 4, 4), 1.0)
    pred = target.clone()
    pred[..., :2, :] = 2.0                                 # rows 0-1 wrong, rows 2-3 exact
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3] = True                                       # half the masked texels wrong
    log_err = abs(math.log1p(2.0 / tau) - math.log1p(1.0 / tau))
    assert float(student_loss(pred, target, mask, tau)) == pytest.approx(0.5 * log_err, rel=1e-6)
    both = float(student_loss(pred, target, mask, tau, linear_weight=0.3))
    assert both == pytest.approx(0.5 * (log_err + 0.3 * 1.0 / tau), rel=1e-6)
    # the same 2x error ten times brighter: the log term stays nearly the same, the linear one x10
    bright = float(student_loss(10 * pred, 10 * target, mask, tau, linear_weight=0.3))
    assert bright - float(student_loss(10 * pred, 10 * target, mask, tau)) == pytest.approx(0.5 * 0.3 * 10 / tau, rel=1e-6)
