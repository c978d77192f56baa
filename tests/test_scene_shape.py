"""Per-hand shape (tracked bone lengths) carried by a scene: HandState.shape, pose files, and the
Engine's skinning (Engine.pose, render_student)."""
import json

import numpy as np
import pytest
import torch

from relit_hands.scene import HandState, PoseFileError, Scene, load_scene_file, save_scene_file, scene_preset


def long_fingers():
    s = np.ones((16, 2), np.float32)
    s[1:, 0] = 1.15  # every finger bone 15% longer, palm and girths unchanged
    return s


def test_hand_state_shape_default_copy_and_dict():
    h = HandState("right", np.zeros(45))
    assert h.shape is None and "shape" not in h.to_dict()  # files without shapes stay as they were
    h2 = HandState("right", np.zeros(45), shape=long_fingers().tolist())
    assert h2.shape.dtype == np.float32 and h2.shape.shape == (16, 2)
    c = h2.copy()
    c.shape[0, 0] = 2.0
    assert h2.shape[0, 0] == 1.0  # a deep copy
    again = HandState(**h2.to_dict())  # what the viewer's worker does
    np.testing.assert_array_equal(again.shape, h2.shape)
    assert Scene([h2]).copy().hands[0].shape is not None
    for bad, msg in ((np.ones((16, 3)), "16, 2"), (np.full((16, 2), np.nan), "NaN"), (np.full((16, 2), 9.0), "within"),
                     ("long", "16, 2")):
        with pytest.raises(ValueError, match=msg):
            HandState("left", np.zeros(45), shape=bad)


def test_shape_round_trips_through_pose_files(tmp_path):
    scene = scene_preset("clap")
    scene.hands[0].shape = long_fingers()
    save_scene_file(scene, tmp_path / "s.json")
    back = load_scene_file(tmp_path / "s.json")
    np.testing.assert_allclose(back.hands[0].shape, long_fingers())
    assert back.hands[1].shape is None
    one = Scene([scene.hands[0]])
    save_scene_file(one, tmp_path / "h.npz")
    np.testing.assert_allclose(load_scene_file(tmp_path / "h.npz").hands[0].shape, long_fingers())
    bad = json.loads((tmp_path / "s.json").read_text())
    bad["hands"][0]["shape"] = [[1.0, 1.0]] * 15
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PoseFileError, match="bad.json.*shape"):
        load_scene_file(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def engine():
    from relit_hands import Engine
    e = Engine(shadow_map_size=256)
    yield e
    e.release()


def test_engine_skins_each_hand_with_its_shape(engine):
    scene = scene_preset("flat")
    plain = engine.pose(scene, meshes=("render", "proxy"))["right"]
    scene.hands[0].shape = long_fingers()
    shaped = engine.pose(scene, meshes=("render", "proxy"))["right"]
    ref = engine.models["right"](scene.hands[0].pose, scene.hands[0].global_orient, scene.hands[0].transl,
                                 shape=long_fingers(), meshes=("render", "proxy"))
    assert torch.allclose(shaped.render_vertices, ref.render_vertices)
    assert torch.allclose(shaped.proxy_vertices, ref.proxy_vertices)
    # the wrist stays, the middle fingertip moves out by 15% of the finger's length
    assert torch.allclose(shaped.joints[0, 0], plain.joints[0, 0], atol=1e-6)
    finger = (plain.keypoints[0, 18] - plain.joints[0, 4]).norm()
    reach = (shaped.keypoints[0, 18] - shaped.joints[0, 4]).norm()
    assert abs(float(reach / finger) - 1.15) < 0.02
    cam = engine.default_camera(scene_preset("flat"), 96, 96)
    a = engine.render(scene_preset("flat"), None, cam, shading="albedo", background="none").mask
    b = engine.render(scene, None, cam, shading="albedo", background="none").mask
    assert b.sum() > a.sum() * 1.03  # the longer fingers cover more pixels
