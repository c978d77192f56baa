"""Capture format (docs/capture_format.md): writer -> loader round trip and validation errors."""
import json
import shutil

import numpy as np
import pytest

from relit_hands.camera import Camera
from relit_hands.tools.capture import Capture, CaptureFormatError, CaptureIncompleteError, CaptureWriter
from relit_hands.environment import EnvironmentMap
from relit_hands.image_io import write_hdr_image, write_png
from relit_hands.scene import scene_preset

W, H = 24, 16


def _make(root):
    w = CaptureWriter(root, name="unit", generator={"tool": "test"})
    w.add_camera("cam00", Camera.look_at((0, 0, 0.5), (0, 0, 0), width=W, height=H))
    w.add_camera("cam01", Camera.look_at((0.5, 0, 0), (0, 0, 0), width=W, height=H))
    for i in range(3):
        w.add_light(i, (np.cos(i), 1.0, np.sin(i)), (1.0, 0.9, 0.8))
    env = EnvironmentMap.from_name_or_path("studio")
    w.add_environment("studio", env.source)
    two = scene_preset("clasp")
    one = scene_preset("fist")
    w.add_frame("f0", "olat", "train", two, lights_on=[1])
    w.add_frame("f1", "group", "train", one, lights_on=[0, 2])
    w.add_frame("f2", "env", "heldout", two, env={"id": "studio", "yaw_deg": 30.0, "pitch_deg": -5.0},
                cameras=["cam01"])
    w.write()
    rng = np.random.default_rng(0)
    imgs = {}
    for f in w.frames:
        for cid in f.images:
            img = rng.uniform(0, 4, (H, W, 3)).astype(np.float32)
            m = (rng.uniform(size=(H, W)) * 3).astype(np.uint8)
            w.write_view(f.id, cid, img, m)
            imgs[(f.id, cid)] = (img, m)
    return w, imgs


@pytest.fixture()
def cap_dir(tmp_path):
    root = tmp_path / "cap"
    w, imgs = _make(root)
    return root, w, imgs


def test_round_trip(cap_dir):
    root, w, imgs = cap_dir
    cap = Capture.load(root)
    assert set(cap.cameras) == {"cam00", "cam01"}
    np.testing.assert_allclose(cap.cameras["cam01"].K, w.cameras["cam01"].K)
    np.testing.assert_allclose(cap.cameras["cam01"].R, w.cameras["cam01"].R)
    assert cap.cameras["cam00"].size == (W, H)
    assert cap.lights.ids.tolist() == [0, 1, 2] and cap.lights.positions.shape == (3, 3)
    np.testing.assert_allclose(cap.lights.intensities[2], [1.0, 0.9, 0.8])
    assert [f.id for f in cap.frames] == ["f0", "f1", "f2"]
    assert [f.id for f in cap.frames_by(kind="env")] == ["f2"]
    assert [f.id for f in cap.frames_by(split="train")] == ["f0", "f1"]
    assert cap.splits == {"train": ["f0", "f1"], "heldout": ["f2"]}
    f0 = cap.frame("f0")
    assert [h.side for h in f0.scene.hands] == ["right", "left"]
    ref = scene_preset("clasp")
    np.testing.assert_allclose(f0.scene.hands[1].pose, ref.hands[1].pose, atol=1e-6)
    np.testing.assert_allclose(f0.scene.hands[0].transl, ref.hands[0].transl, atol=1e-6)
    pos, inten = cap.light_intensities("f1")
    np.testing.assert_allclose(pos[1], w.lights[2][0])
    f2 = cap.frame("f2")
    assert set(f2.images) == {"cam01"} and f2.env_id == "studio" and f2.yaw_deg == 30.0
    env = cap.environment(f2)
    ref_env = EnvironmentMap.from_name_or_path("studio").rotate(30.0, -5.0)
    np.testing.assert_allclose(env.rotation, ref_env.rotation)
    np.testing.assert_array_equal(env.image, ref_env.image)
    for (fid, cid), (img, m) in imgs.items():
        got = cap.image(fid, cid)
        assert got.dtype == np.float32 and got.shape == (H, W, 3)
        np.testing.assert_allclose(got, img, rtol=1e-3, atol=1e-3)  # float16 EXR
        np.testing.assert_array_equal(cap.mask(fid, cid), m)
    cap.verify_images()
    assert "3 frames" in repr(cap)


def _edit(root, name, fn):
    p = root / name
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


@pytest.mark.parametrize("name, edit, match", [
    ("capture.json", lambda d: d.update(version=2), "unsupported version 2"),
    ("capture.json", lambda d: d.update(format="other"), "'format'"),
    ("capture.json", lambda d: d["cameras"][1].update(K=[[1, 0], [0, 1]]), r"camera 'cam01'.*'K' has shape \[2, 2\]"),
    ("capture.json", lambda d: d["cameras"][0].update(t=[0, 0]), r"camera 'cam00'.*'t' has shape"),
    ("capture.json", lambda d: d["cameras"][1].update(id="cam00"), r"camera 'cam00': duplicate camera id"),
    ("capture.json", lambda d: d["cameras"][0].update(width=0), "width"),
    ("capture.json", lambda d: d["lights"][2].update(id=0), "light 0: duplicate light id"),
    ("capture.json", lambda d: d["lights"][0].update(intensity=[1, 1]), r"light 0: 'intensity' has shape"),
    ("capture.json", lambda d: d["environments"][0].update(file="environments/nope.hdr"), "missing file .*nope.hdr"),
    ("frames.json", lambda d: d["frames"][1].update(id="f0"), "frame 'f0': duplicate frame id"),
    ("frames.json", lambda d: d["frames"][0].update(lights_on=[7]), "frame 'f0': unknown light id 7"),
    ("frames.json", lambda d: d["frames"][0].update(lights_on=[0, 1]), "frame 'f0': an 'olat' frame has exactly one"),
    ("frames.json", lambda d: d["frames"][2]["env"].update(id="moon"), "frame 'f2': unknown environment id 'moon'"),
    ("frames.json", lambda d: d["frames"][2]["images"].update(cam09="images/f2/cam09.exr"),
     "frame 'f2': image for unknown camera id 'cam09'"),
    ("frames.json", lambda d: d["frames"][1].update(kind="flash"), "frame 'f1': unknown kind 'flash'"),
    ("frames.json", lambda d: d["frames"][1]["hands"][0].update(pose=[0.0] * 44), r"frame 'f1' hand #0: 'pose' has shape \[44\]"),
    ("frames.json", lambda d: d["frames"][0]["hands"][1].update(side="right"), "frame 'f0'.*one per side"),
    ("splits.json", lambda d: d.update(train=["f0"]), "frame 'f1'.*is in no split"),
    ("splits.json", lambda d: d.update(train=["f0", "f1", "f2"]), "frame 'f2' is listed twice"),
    ("splits.json", lambda d: d.update(heldout=["f2", "f9"]), "unknown frame id 'f9'"),
    ("splits.json", lambda d: d.update(train=["f0", "f2"], heldout=["f1"]), "frame 'f1' is in split 'heldout' here"),
])
def test_validation_errors(cap_dir, name, edit, match):
    root, _, _ = cap_dir
    _edit(root, name, edit)
    with pytest.raises(CaptureFormatError, match=match):
        Capture.load(root)


def test_missing_files(cap_dir):
    root, _, _ = cap_dir
    (root / "images" / "f1" / "cam01.exr").unlink()
    with pytest.raises(CaptureFormatError, match=r"frame 'f1' image 'cam01': missing file .*cam01.exr"):
        Capture.load(root)
    with pytest.raises(CaptureIncompleteError):  # the kind train-teacher --allow-partial can train on
        Capture.load(root)
    cap = Capture.load(root, check_files=False)  # structure only
    with pytest.raises(CaptureFormatError, match="f1.*cam01"):
        cap.image("f1", "cam01")
    (root / "splits.json").unlink()
    with pytest.raises(CaptureFormatError, match="splits.json: missing file"):
        Capture.load(root, check_files=False)
    shutil.rmtree(root)
    with pytest.raises(CaptureFormatError, match="capture folder not found"):
        Capture.load(root)


def test_wrong_image_and_mask_shapes(cap_dir):
    root, _, _ = cap_dir
    write_hdr_image(root / "images" / "f0" / "cam00.exr", np.zeros((H + 1, W, 3), np.float32))
    write_png(root / "masks" / "f0" / "cam01.png", np.zeros((H, W + 2), np.uint8))
    write_png(root / "masks" / "f1" / "cam00.png", np.full((H, W), 7, np.uint8))
    cap = Capture.load(root)
    with pytest.raises(CaptureFormatError, match=r"frame 'f0' camera 'cam00': image has shape \[17, 24, 3\], expected \[16, 24, 3\]"):
        cap.image("f0", "cam00")
    with pytest.raises(CaptureFormatError, match=r"frame 'f0' camera 'cam01': mask has shape"):
        cap.mask("f0", "cam01")
    with pytest.raises(CaptureFormatError, match="mask values"):
        cap.mask("f1", "cam00")
    with pytest.raises(KeyError, match="no image for camera 'cam00'"):
        cap.image("f2", "cam00")
    with pytest.raises(ValueError, match="not environment-lit"):
        cap.environment("f0")


def test_writer_resume_and_atomic_views(cap_dir):
    root, w, _ = cap_dir
    assert w.has_view("f0", "cam00")
    (root / "masks" / "f0" / "cam00.png").unlink()
    assert not w.has_view("f0", "cam00")          # an image without its mask is redone
    assert not list(root.rglob(".*partial*"))     # no temporary files left behind
    created = json.loads((root / "capture.json").read_text())["created"]
    w.write()                                      # re-writing the JSON keeps the creation date
    assert json.loads((root / "capture.json").read_text())["created"] == created
    with pytest.raises(ValueError, match="duplicate frame id"):
        w.add_frame("f0", "olat", "train", scene_preset("fist"), lights_on=[0])
    with pytest.raises(ValueError, match="image shape"):
        w.write_view("f0", "cam00", np.zeros((2, 2, 3)), np.zeros((H, W), np.uint8))
