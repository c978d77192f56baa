"""Scenes: presets place real hands sensibly; pose files round-trip and reject bad input."""
import json

import numpy as np
import pytest
import trimesh

from relit_hands.hand_model import HandModel
from relit_hands.poses import POSE_PRESETS, is_within_limits
from relit_hands.scene import (SCENE_PRESETS, HandState, PoseFileError, Scene, load_hand_file, load_scene_file,
                               orientation, save_scene_file, scene_preset)
from scipy.spatial.transform import Rotation


@pytest.fixture(scope="module")
def models():
    return {s: HandModel(side=s) for s in ("right", "left")}


def test_orientation_maps_rest_axes():
    go = orientation(fingers=(0, 1, 0), palm_normal=(0, 0, 1))
    R = Rotation.from_rotvec(go).as_matrix()
    assert np.allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-6)   # fingers up
    assert np.allclose(R @ [0, -1, 0], [0, 0, 1], atol=1e-6)  # palm towards +Z


@pytest.mark.parametrize("name", list(POSE_PRESETS) + list(SCENE_PRESETS))
def test_presets_are_valid_and_render_mesh_stays_on_proxy(name, models):
    scene = scene_preset(name)
    assert len(scene.hands) == (2 if name in SCENE_PRESETS else 1)
    for h in scene.hands:
        assert is_within_limits(h.pose, side=h.side)
        out = models[h.side](h.pose, h.global_orient, h.transl)
        proxy = trimesh.Trimesh(out.proxy_vertices[0].numpy(), models[h.side].asset.proxy_faces, process=False)
        _, dist, _ = trimesh.proximity.closest_point(proxy, out.render_vertices[0].numpy())
        assert dist.max() < 3e-3, f"{name}/{h.side}: render mesh {dist.max() * 1e3:.2f} mm off the proxy"


def test_two_hand_presets_touch_but_do_not_collapse(models):
    """Both hands of a two-hand preset are close (interacting) yet distinct."""
    for name in SCENE_PRESETS:
        scene = scene_preset(name)
        v = {h.side: models[h.side](h.pose, h.global_orient, h.transl).proxy_vertices[0].numpy() for h in scene.hands}
        d = np.linalg.norm(v["right"][:, None] - v["left"][None], axis=-1).min()
        assert d < 0.08, f"{name}: hands {d:.3f} m apart"
        centres = np.linalg.norm(v["right"].mean(0) - v["left"].mean(0))
        assert centres > 0.01, name


def test_shadow_preset_has_upper_hand_above_lower():
    s = scene_preset("shadow")
    assert s.hand("right").transl[1] > s.hand("left").transl[1] + 0.05


def test_scene_file_round_trip(tmp_path):
    scene = scene_preset("clasp")
    save_scene_file(scene, tmp_path / "s.json")
    back = load_scene_file(tmp_path / "s.json")
    assert [h.side for h in back.hands] == ["right", "left"]
    for a, b in zip(scene.hands, back.hands):
        assert np.allclose(a.pose, b.pose) and np.allclose(a.global_orient, b.global_orient)
        assert np.allclose(a.transl, b.transl)
    assert np.allclose(back.view_direction, scene.view_direction)
    # one hand from the scene file, and single-hand npz files
    left = load_hand_file(tmp_path / "s.json", side="left")
    assert np.allclose(left.pose, scene.hand("left").pose)
    single = Scene([scene.hand("right")])
    save_scene_file(single, tmp_path / "r.npz")
    assert np.allclose(load_hand_file(tmp_path / "r.npz").pose, scene.hand("right").pose)


@pytest.mark.parametrize("content, message", [
    ({"pose": [0.0] * 44}, "expected 45 numbers"),
    ({"pose": [0.0] * 44 + [float("nan")]}, "NaN"),
    ({"pose": [0.0] * 45, "transl": [0, 0]}, "transl"),
    ({"side": "middle", "pose": [0.0] * 45}, "side"),
    ({"hands": "nope"}, "pose"),
    ({"rotation": [0, 0, 0]}, "'pose'"),
])
def test_bad_pose_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PoseFileError, match=message) as err:
        load_hand_file(path)
    assert "bad.json" in str(err.value)


def test_missing_and_corrupt_pose_files(tmp_path):
    with pytest.raises(PoseFileError, match="not found"):
        load_hand_file(tmp_path / "nope.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(PoseFileError, match="junk.json"):
        load_hand_file(tmp_path / "junk.json")
    (tmp_path / "pose.txt").write_text("1 2 3")
    with pytest.raises(PoseFileError, match="unsupported"):
        load_hand_file(tmp_path / "pose.txt")


def test_scene_rejects_duplicate_sides():
    h = HandState("right", np.zeros(45))
    with pytest.raises(ValueError, match="one per side"):
        Scene([h, h.copy()])
