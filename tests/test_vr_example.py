"""examples/openxr_hands.py: the VR frame loop's synthetic path (no pyopenxr / runtime here) runs
headless, draws both eyes into host textures, writes the stereo GIF + JSON summary and reports the
dropped frame as held; the OpenXR joint-array parsing matches the C layout."""
import ctypes
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vr():
    spec = importlib.util.spec_from_file_location("openxr_hands", ROOT / "examples" / "openxr_hands.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["openxr_hands"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_synthetic_loop_writes_stereo_gif_and_summary(vr, tmp_path):
    from PIL import Image

    out = tmp_path / "vr.gif"
    summary = vr.main(["--mode", "synthetic", "--frames", "4", "--eye-size", "48x50", "--calibrate", "2",
                       "--drop-frame", "2", "--out", str(out)])
    assert out.is_file() and out.with_suffix(".json").is_file()
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk["held_frames"] == {"left": [], "right": [2]} == summary["held_frames"]
    assert on_disk["frames"] == 4 and on_disk["eye_size"] == [48, 50]
    assert on_disk["shape_calibrated"] == {"left": True, "right": True}
    for k in ("retarget", "skinning", "raycast", "features", "uv_gather", "student", "composite", "gl_finish", "total"):
        assert on_disk["median_ms"][k] >= 0.0, k
    gif = Image.open(out)
    assert gif.size == (96, 50) and gif.n_frames == 4
    for i in range(gif.n_frames):
        gif.seek(i)
        im = np.asarray(gif.convert("RGB")).astype(np.int32)
        for eye in (im[:, :48], im[:, 48:]):
            assert eye.std() > 3.0 and len(np.unique(eye.reshape(-1, 3), axis=0)) > 10  # not empty / flat
    # the eyes see the hands from 64 mm apart: the two halves differ
    assert np.abs(im[:, :48] - im[:, 48:]).mean() > 1.0


def test_step_core_holds_then_reports_absent(vr):
    """VRHands.retarget: a hand never seen is absent; a dropped frame after a good one is held."""
    from relit_hands import Engine, EnvironmentMap

    engine = Engine(shadow_map_size=256)
    try:
        hands = vr.VRHands(engine, EnvironmentMap.from_name_or_path("studio"), calibrate=0, smoothing=False)
        src = vr.SyntheticXR(engine, frames=4, drop_frame=None)
        j = src.joints(0)
        states, status = hands.retarget({"right": j["right"], "left": None})
        assert status == {"left": "absent", "right": "tracked"} and [h.side for h in states] == ["right"]
        bad = dict(j["right"], location_flags=np.zeros(26, np.int64))
        states, status = hands.retarget({"right": bad, "left": None})
        assert status["right"] == "held" and states[0].shape is None
        cams = vr.eye_cameras(src.views(0), 40, 42)
        assert cams[0].center[0] < cams[1].center[0]  # left eye on the left
        np.testing.assert_allclose(np.linalg.norm(cams[1].center - cams[0].center), vr.IPD, atol=1e-9)
    finally:
        engine.release()


def test_joint_locations_parse_the_c_layout(vr):
    class Quat(ctypes.Structure):
        _fields_ = [("x", ctypes.c_float), ("y", ctypes.c_float), ("z", ctypes.c_float), ("w", ctypes.c_float)]

    class Vec(ctypes.Structure):
        _fields_ = [("x", ctypes.c_float), ("y", ctypes.c_float), ("z", ctypes.c_float)]

    class Pose(ctypes.Structure):
        _fields_ = [("orientation", Quat), ("position", Vec)]

    class Loc(ctypes.Structure):  # XrHandJointLocationEXT
        _fields_ = [("location_flags", ctypes.c_uint64), ("pose", Pose), ("radius", ctypes.c_float)]

    assert ctypes.sizeof(Loc) == 40
    arr = (Loc * 26)()
    for i in range(26):
        arr[i].location_flags = 0xF if i != 3 else 0x1
        arr[i].pose.orientation = Quat(0.1 * i, 0.2, 0.3, 0.9)
        arr[i].pose.position = Vec(i, -i, 0.5 * i)
        arr[i].radius = 0.01
    j = vr._joints_from_locations(arr)
    np.testing.assert_allclose(j["positions"][7], [7, -7, 3.5])
    np.testing.assert_allclose(j["orientations"][5], [0.5, 0.2, 0.3, 0.9], rtol=1e-6)
    assert j["location_flags"][3] == 1 and j["location_flags"][0] == 15
