"""Viewer document, undo/redo and drag mapping: pure Python, no GL."""
import numpy as np
import pytest

pytest.importorskip("imgui_bundle")

from relit_hands.poses import JOINT_LIMITS  # noqa: E402
from relit_hands.viewer.picking import Picker  # noqa: E402
from relit_hands.viewer.state import OrbitCamera, ViewerState, joint_index  # noqa: E402


def test_joint_names_and_aliases():
    assert joint_index("index_pip") == 1 == joint_index("index2") == joint_index(1)
    assert joint_index("thumb1") == 12
    with pytest.raises(ValueError):
        joint_index("elbow")


def test_set_joint_clamps_and_touches_only_that_joint():
    st = ViewerState("relaxed")
    before = st.hand("right").pose.copy()
    a = st.set_joint("right", "index2", flexion=500.0, abduction=-50.0)
    lo, hi = JOINT_LIMITS["index_pip"][0]
    assert a[0] == pytest.approx(hi) and a[1] == pytest.approx(JOINT_LIMITS["index_pip"][1][0])
    after = st.hand("right").pose
    changed = np.nonzero(np.abs(after - before) > 1e-7)[0]
    assert set(changed) <= {3, 4, 5}
    assert st.angles("right")[1, 0] == pytest.approx(hi, abs=1e-3)


def test_undo_redo_groups_by_key():
    st = ViewerState("relaxed")
    v0 = st.angles("right")[1, 0]
    for f in (30, 40, 50):  # one drag = one undo step
        st.set_joint("right", 1, flexion=f, key="drag1")
    st.end_edit()
    st.rotate_env(45)
    assert st.undo() and st.env_yaw == 0
    assert st.undo() and st.angles("right")[1, 0] == pytest.approx(v0, abs=1e-3)
    assert not st.can_undo
    assert st.redo() and st.angles("right")[1, 0] == pytest.approx(50, abs=1e-3)
    st.reset()
    assert st.angles("right")[1, 0] == pytest.approx(v0, abs=1e-3) and st.env_yaw == 0


def test_open_with_changes_the_opening_state_only_while_untouched():
    st = ViewerState("clasp")
    assert st.open_with(shading="student", split_modes=("student", "pbr"))
    assert st.shading == "student" and not st.can_undo  # not an edit
    st.set("shading", "albedo")
    st.reset()
    assert st.shading == "student" and st.split_modes == ("student", "pbr")  # reset returns to it
    st.set("shading", "normal")
    assert not st.open_with(shading="pbr") and st.shading == "normal"  # the user's pick stays


def test_presets_and_settings():
    st = ViewerState("clasp")
    st.preset("fist", side="left")
    assert st.sides() == ["right", "left"]
    st.preset("point")
    assert st.sides() == ["right"]
    with pytest.raises(ValueError):
        st.set("tonemap", "bogus")
    st.set("background", "blurred")
    assert st.background == "blurred"


def test_orbit_camera_looks_at_target():
    cam = OrbitCamera(target=np.array([0.0, 0.1, 0.0]), yaw=30, pitch=10, distance=0.5)
    c = cam.camera(640, 480)
    pix = c.project(cam.target[None])[0]
    assert np.allclose(pix, [320, 240], atol=1e-6)
    cam.orbit(400, 200)
    assert -180 <= cam.yaw < 180 and cam.pitch == 89


def test_drag_mapping_follows_screen_direction():
    g = np.array([[0.0, 2.0], [3.0, 0.0]])  # flexion moves the tip down, abduction right (px/deg)
    d = Picker.drag_to_angles(g, (0.0, 40.0))
    assert d[0] == pytest.approx(20.0) and d[1] == pytest.approx(0.0)
    d = Picker.drag_to_angles(np.zeros((2, 2)), (10.0, 40.0))  # foreshortened: fallback
    assert d[0] == pytest.approx(20.0) and d[1] == pytest.approx(5.0)
