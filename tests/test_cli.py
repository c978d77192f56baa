"""The relit-hands command line: real renders, JSON summaries, clear errors (exit 2, no traceback)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from relit_hands.image_io import read_hdr_image, read_png, write_hdr_image
from relit_hands.scene import save_scene_file, scene_preset
from relit_hands.tools.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "relit_hands.tools.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_render_writes_png_exr_and_summary(tmp_path):
    out = tmp_path / "frame.png"
    rc = main(["render", "--shading", "pbr", "--scene", "shadow", "--env", "sky_sun", "--yaw", "45", "--size", "160x120",
               "--out", str(out), "--exr", str(tmp_path / "frame.exr")])
    assert rc == 0
    img = read_png(out)
    assert img.shape == (120, 160, 3)
    lin = read_hdr_image(tmp_path / "frame.exr")
    assert lin.shape == (120, 160, 3) and np.isfinite(lin).all() and lin.max() > 0
    summary = json.loads((tmp_path / "frame.json").read_text())
    assert summary["env"] == "sky_sun" and summary["yaw_deg"] == 45.0
    assert [h["side"] for h in summary["scene"]["hands"]] == ["right", "left"]
    assert 0.02 < summary["hand_coverage"] < 0.8
    assert summary["timings_ms"]["skinning"] > 0


def test_render_with_pose_files_and_one_hand(tmp_path):
    save_scene_file(scene_preset("fist"), tmp_path / "fist.json")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["render", "--shading", "pbr", "--scene", "flat", "--size", "96x96", "--out", str(a)]) == 0
    assert main(["render", "--shading", "pbr", "--scene", "flat", "--pose-right", str(tmp_path / "fist.json"), "--size", "96x96",
                 "--out", str(b)]) == 0
    assert np.abs(read_png(a).astype(int) - read_png(b).astype(int)).mean() > 1.0
    assert main(["render", "--shading", "pbr", "--scene", "clasp", "--hands", "left", "--size", "96x96", "--out", str(a)]) == 0
    assert json.loads(a.with_suffix(".json").read_text())["scene"]["hands"][0]["side"] == "left"


def test_render_student_and_pbr_shading(tmp_path):
    """--shading student runs the feature + student + composite path with the given weights file and
    records it; --shading pbr is the baseline; a bad weights file is a one-line error."""
    import torch

    from relit_hands.student import StudentNet, save_student

    torch.manual_seed(0)
    w = save_student(tmp_path / "s.safetensors", StudentNet.for_variant("vis", resolution=64, base=8, levels=3,
                                                                         static_channels=4))
    out = tmp_path / "st.png"
    assert main(["render", "--scene", "shadow", "--shading", "student", "--student", str(w), "--inference", "torch",
                 "--lights", "32", "--size", "96x96", "--background", "none", "--out", str(out)]) == 0
    s = json.loads(out.with_suffix(".json").read_text())
    assert s["shading"] == "student" and s["student"]["variant"] == "vis" and s["student"]["resolution"] == 64
    assert s["timings_ms"]["student"] > 0 and s["timings_ms"]["raycast"] >= 0
    img = read_png(out)
    assert 0.02 < s["hand_coverage"] < 0.9 and img[..., :3].max() > 0
    assert main(["render", "--scene", "shadow", "--shading", "pbr", "--size", "96x96", "--out", str(tmp_path / "p.png")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["shading"] == "pbr"
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    r = run("render", "--shading", "student", "--student", str(tmp_path / "bad.safetensors"), "--size", "64x64",
            "--out", str(tmp_path / "b.png"))
    assert r.returncode == 2 and "bad.safetensors" in r.stderr and "Traceback" not in r.stderr


def test_render_errors_are_one_line(tmp_path):
    bad = tmp_path / "corrupt.hdr"
    bad.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 64 +X 128\n" + b"\x02\x02" * 10)
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps({"pose": [0.1] * 40}))
    cases = [
        (["render", "--env", str(tmp_path / "missing.hdr")], "missing.hdr"),
        (["render", "--env", str(bad)], "corrupt.hdr"),
        (["render", "--scene", "nope"], "unknown scene"),
        (["render", "--pose-right", str(pose)], "45 numbers"),
        (["render", "--scene", "flat", "--hands", "left"], "no left hand"),
        (["render", "--asset", "no_such_asset"], "no_such_asset"),
    ]
    for args, text in cases:
        r = run(*args, "--out", str(tmp_path / "x.png"), "--size", "64x64")
        assert r.returncode == 2, (args, r.stderr)
        assert text in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("render", "--size", "10x")
    assert r.returncode == 2 and "size must look like" in r.stderr


def test_nan_environment_is_cleaned_with_a_warning(tmp_path):
    img = np.ones((32, 64, 3), np.float32)
    img[3, 4] = np.nan
    write_hdr_image(tmp_path / "nan.exr", img)
    r = run("render", "--shading", "pbr", "--env", str(tmp_path / "nan.exr"), "--size", "64x64", "--out", str(tmp_path / "o.png"))
    assert r.returncode == 0, r.stderr
    assert "nan.exr" in r.stderr and "NaN" in r.stderr


def test_list_json_and_info(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["pose_presets"]) >= 8 and len(data["scene_presets"]) >= 4 and len(data["environments"]) >= 6
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"] and info["opengl"].get("renderer"), info["opengl"]


def test_render_asset_v2(tmp_path):
    """--asset picks the hand asset (here v2 with its forearm): a different silhouette from v1."""
    cov = {}
    for asset in ("hand", "hand_v2"):
        out = tmp_path / f"{asset}.png"
        assert main(["render", "--shading", "pbr", "--asset", asset, "--scene", "flat", "--env", "studio",
                     "--size", "160x120", "--out", str(out)]) == 0
        summary = json.loads(out.with_suffix(".json").read_text())
        assert summary["asset"] == asset
        cov[asset] = summary["hand_coverage"]
    assert cov["hand"] > 0.02 and cov["hand_v2"] > 0.02 and cov["hand_v2"] != cov["hand"]
