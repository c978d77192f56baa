"""`relit-hands bench`: short CPU runs at tiny settings; the JSON is complete and agrees with the
printed table, per-frame stages sum to the end-to-end time, --compare gives all four configurations."""
import json
import re

import numpy as np
import pytest
import torch

from relit_hands.tools import bench, cli

torch.set_num_threads(1)

TINY = ["--frames", "3", "--warmup", "1", "--size", "64x48", "--resolution", "128", "--lights", "32",
        "--threads", "1", "--quiet"]


def _run(capsys, tmp_path, *extra):
    out = tmp_path / "bench"
    rc = cli.main(["bench", *TINY, "--out", str(out), *extra])
    assert rc == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "bench.json").read_text())
    return result, printed, out


def _table_row(printed, label):
    for line in printed.splitlines():
        if line.startswith(label.ljust(16)):
            return [float(v) for v in re.findall(r"-?\d+\.\d+", line[16:])]
    raise AssertionError(f"no table row {label!r} in\n{printed}")


def test_compare_json_fields_and_table(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))
    result, printed, out = _run(capsys, tmp_path, "--compare", "--inference", "torch")
    assert result["tool"] == "relit-hands bench"
    m = result["machine"]
    for k in ("device", "gpu", "cpu_model", "cpu_count", "load_average_start", "load_average_end", "gl_renderer",
              "torch_threads"):
        assert k in m, k
    assert m["device"] == "cpu" and len(m["load_average_start"]) == 3
    assert "torch" in result["versions"] and "moderngl" in result["versions"]
    s = result["settings"]
    assert (s["hands"], s["resolution"], s["lights"], s["size"], s["stereo"]) == (2, 128, 32, [64, 48], False)
    names = [c["name"] for c in result["configs"]]
    assert names == ["pbr", "student", "student_novis", "student_bottleneck"]
    for c in result["configs"]:
        assert len(c["frames"]) == 3
        for f in c["frames"]:  # the stages (incl. 'other') add up to the end-to-end time, frame by frame
            assert sum(f[k] for k in c["stage_order"]) == pytest.approx(f["end_to_end"], rel=1e-9, abs=1e-9)
            assert all(f[k] >= 0 for k in c["stage_order"])
        e2e = [f["end_to_end"] for f in c["frames"]]
        assert c["end_to_end"]["median_ms"] == pytest.approx(float(np.median(e2e)))
        assert c["end_to_end"]["p95_ms"] == pytest.approx(float(np.percentile(e2e, 95)))
        assert c["fps"] == pytest.approx(1000.0 / c["end_to_end"]["median_ms"])
        for st in c["stage_order"]:
            assert c["stages"][st]["median_ms"] == pytest.approx(float(np.median([f[st] for f in c["frames"]])))
    by = {c["name"]: c for c in result["configs"]}
    assert "raycast" not in by["pbr"]["stages"] and "student" not in by["pbr"]["stages"]
    assert by["student"]["stages"]["raycast"]["median_ms"] > 0  # 'vis' casts rays ...
    assert by["student_novis"]["stages"]["raycast"]["max_ms"] == 0  # ... the ablations do not
    assert by["student_bottleneck"]["stages"]["raycast"]["max_ms"] == 0
    assert by["student"]["inference_backend"] == "torch-cpu-fp32" and by["student"]["untrained"] in (True, False)
    # the printed table carries the JSON's numbers (2 decimals): medians and p95 per configuration
    e2e_row = _table_row(printed, "end-to-end")
    assert e2e_row == pytest.approx([v for c in result["configs"]
                                     for v in (round(c["end_to_end"]["median_ms"], 2),
                                               round(c["end_to_end"]["p95_ms"], 2))], abs=0.006)
    assert _table_row(printed, "fps (median)") == pytest.approx([round(c["fps"], 2) for c in result["configs"]],
                                                               abs=0.006)
    stu = _table_row(printed, "student")  # the 'student' stage row: '-' for pbr, numbers for the students
    assert stu == pytest.approx([round(by[n]["stages"]["student"][k], 2) for n in names[1:]
                                 for k in ("median_ms", "p95_ms")], abs=0.006)
    assert result["table"].splitlines()[-1] in printed
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_stereo_one_hand_onnxruntime(capsys, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))
    result, printed, out = _run(capsys, tmp_path, "--stereo", "--hands", "1", "--inference", "onnxruntime",
                                "--base", "8", "--levels", "3", "--no-chart", "--readback", "all")
    (c,) = result["configs"]
    assert c["name"] == "student" and c["views"] == 2 and c["inference_backend"] == "onnxruntime-cpu"
    assert c["student_base"] == 8 and result["settings"]["stereo"] is True
    assert c["stages"]["composite"]["median_ms"] > 0
    assert not (out / "bench.png").exists()
    assert "end-to-end" in printed


def test_asset_v2_benches_its_shipped_student(capsys, tmp_path, monkeypatch):
    """--asset hand_v2: the engine holds asset v2 and times its shipped student (student_hand_v2, trained
    at R = 256), not the v1 default; the JSON names the asset."""
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    args = [a if a != "128" else "256" for a in TINY]
    assert cli.main(["bench", *args, "--out", str(out), "--asset", "hand_v2", "--inference", "torch", "--no-chart"]) == 0
    result = json.loads((out / "bench.json").read_text())
    (c,) = result["configs"]
    assert result["settings"]["asset"] == "hand_v2" and c["untrained"] is False
    assert c["student_weights"].endswith("student_hand_v2.safetensors")
    assert c["stages"]["raycast"]["median_ms"] > 0


def test_pose_animation_flexes_and_cameras():
    scenes = bench.pose_animation(2, 13)
    assert [h.side for h in scenes[0].hands] == ["right", "left"]
    r0, r12 = scenes[0].hands[0].pose, scenes[12].hands[0].pose  # relaxed -> fist half a period later
    assert np.abs(r12 - r0).max() > 0.5
    l0 = scenes[0].hands[1].pose  # the left hand is half a period out of phase
    assert np.abs(scenes[12].hands[1].pose - l0).max() > 0.5
    assert len(bench.pose_animation(1, 2)[0].hands) == 1
    from relit_hands.camera import Camera

    c = Camera.look_at((0, 0, 0.5), (0, 0, 0), fov_y_deg=40, width=64, height=48)
    left, right = c.stereo_pair(bench.IPD_M)
    assert np.linalg.norm(left.center - right.center) == pytest.approx(bench.IPD_M)
