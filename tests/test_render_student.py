"""Engine.render_student: every preset renders through the student path; stereo is one feature +
student pass seen by two cameras (same textures, different images)."""
import numpy as np
import pytest
import torch

from relit_hands.engine import StudentFrame
from relit_hands.inference import TorchBackend
from relit_hands.poses import POSE_PRESETS
from relit_hands.scene import SCENE_PRESETS, scene_preset
from relit_hands.student import StudentNet

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["vis", "bottleneck"])
def student(request):
    torch.manual_seed(0)
    m = StudentNet.for_variant(request.param, resolution=128, base=8, levels=3, static_channels=4)
    with torch.no_grad():
        m.out.weight.normal_(std=0.05)
    return TorchBackend(m)


@pytest.mark.parametrize("name", list(SCENE_PRESETS) + list(POSE_PRESETS))
def test_every_preset_renders_through_the_student(engine, env, student, name):
    scene = scene_preset(name)
    f = engine.render_student(scene, env, student=student, n_lights=32, width=160, height=120)
    assert isinstance(f, StudentFrame) and len(f.frames) == 1 and f.backend == "torch-cpu-fp32"
    assert set(f.textures) == {h.side for h in scene.hands}
    for tex in f.textures.values():
        assert tex.shape == (128, 128, 3) and tex.dtype == np.float32 and np.isfinite(tex).all() and tex.min() >= 0
    fr = f.frames[0]
    assert fr.image.shape == (120, 160, 3) and fr.mask.mean() > 0.02
    for k in ("skinning", "raycast", "features", "uv_gather", "student", "composite", "total"):
        assert f.timings_ms[k] >= 0
    assert f.variant == student.variant
    assert (f.timings_ms["raycast"] > 0) == (student.variant == "vis")  # bottleneck: no ray casting


def test_stereo_shares_textures_and_differs_in_images(engine, env, student):
    scene = scene_preset("clasp")
    mid = engine.default_camera(scene, 200, 160)
    left, right = mid.stereo_pair()
    st = engine.render_student(scene, env, [left, right], student=student, n_lights=32)
    mono = engine.render_student(scene, env, mid, student=student, n_lights=32)
    assert len(st.frames) == 2 and st.side_by_side().shape == (160, 400, 3)
    assert np.allclose(st.view_origin, mid.center, atol=1e-9)  # features from the eyes' midpoint
    for side in st.textures:  # one feature + student pass: the same textures as the centre view
        np.testing.assert_allclose(st.textures[side], mono.textures[side], rtol=1e-5, atol=1e-6)
    a, b = st.frames[0].image.astype(int), st.frames[1].image.astype(int)
    assert np.abs(a - b).mean() > 0.5, "the two eyes must see different images"
    assert st.frames[0].mask.mean() > 0.05 and st.frames[1].mask.mean() > 0.05
    # each eye is exactly the engine's uv_texture render of those textures from that eye
    ref = engine.render(scene, env, right, shading="uv_texture", radiance_textures=st.textures, shadows=False)
    assert np.abs(ref.image.astype(int) - b).max() <= 1


def test_errors(engine, env, student):
    scene = scene_preset("clasp")
    with pytest.raises(ValueError, match="resolution"):
        engine.render_student(scene, env, student=student, resolution=256)
    cam = engine.default_camera(scene, 64, 64)
    with pytest.raises(ValueError, match="one or two"):
        engine.render_student(scene, env, [cam, cam, cam], student=student)


def test_missing_default_student_is_a_clear_error(engine, env, tmp_path, monkeypatch):
    """No silent stand-in: without the shipped model the engine names the missing file, and the
    shipped one's single-view Frame carries the pass's scalar timings."""
    import relit_hands.student as student_mod
    from relit_hands.student import StudentLoadError

    scene = scene_preset("flat")
    sf = engine.render_student(scene, env, n_lights=32, width=96, height=64)
    fr = sf.as_frame()
    assert fr.image is sf.frames[0].image and fr.timings_ms["student"] == sf.timings_ms["student"]
    assert not any(isinstance(v, list) for v in fr.timings_ms.values())
    missing = tmp_path / "student.safetensors"
    monkeypatch.setattr(student_mod, "default_student_path", lambda *a, **k: missing)
    with pytest.raises(StudentLoadError, match="no trained default student"):
        engine.render_student(scene, env, n_lights=32, width=96, height=64)


def test_students_are_registered_in_the_evaluation_harness(engine, env, tmp_path, monkeypatch):
    evaluate = pytest.importorskip("relit_hands.tools.evaluate")
    from relit_hands.student import StudentLoadError, save_student
    from relit_hands.tools import student_eval

    names = evaluate.available_renderers()
    assert {"student", "student_novis", "student_bottleneck"} <= set(names)
    # a renderer built from weights named by the environment renders a capture-like frame
    torch.manual_seed(0)
    p = save_student(tmp_path / "nov.safetensors",
                     StudentNet.for_variant("novis", resolution=128, base=8, levels=3, static_channels=4))
    monkeypatch.setenv("RELIT_HANDS_STUDENT_NOVIS", str(p))
    monkeypatch.setenv("RELIT_HANDS_STUDENT_BACKEND", "torch")
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))
    r = student_eval.StudentRenderer(engine, "novis", n_lights=32)
    scene = scene_preset("prayer")
    frame = type("F", (), {"scene": scene})()
    out = r(frame, engine.default_camera(scene, 96, 64), env)
    assert out.linear.shape == (64, 96, 3) and out.mask.any()
    monkeypatch.setenv("RELIT_HANDS_STUDENT_BOTTLENECK", str(p))  # wrong variant in the file
    with pytest.raises(StudentLoadError, match="novis student"):
        student_eval.StudentRenderer(engine, "bottleneck")


def test_a_student_of_another_asset_is_refused(engine, env, tmp_path):
    """A weights file made for hand_v2's atlas does not render on the default (v1) engine: one
    clear error naming both assets instead of a picture with the textures in the wrong places."""
    from relit_hands.student import StudentLoadError, save_student

    p = save_student(tmp_path / "v2.safetensors",
                     StudentNet.for_variant("novis", resolution=128, base=8, levels=3, static_channels=4),
                     {"asset": "hand_v2"})
    with pytest.raises(StudentLoadError, match="'hand_v2'.*'hand'"):
        engine.render_student(scene_preset("flat"), env, student=p, inference="torch", n_lights=32,
                              width=64, height=48)


def test_a_person_on_the_students_layout_renders_with_their_albedo(env, tmp_path):
    """A personalised asset (hand_v2's layout and topology, its own albedo) renders through a
    student trained on hand_v2: the albedo prior is swapped for the person's, so the textures
    change exactly by the albedo ratio (same geometry, same features)."""
    import shutil

    from PIL import Image

    from relit_hands.engine import Engine
    from relit_hands.hand_model import HandAsset, asset_path
    from relit_hands.student import save_student

    person = tmp_path / "person"
    shutil.copytree(asset_path("hand_v2").parent, person)
    alb = np.asarray(Image.open(person / "albedo.png").convert("RGB")).astype(np.float32)
    Image.fromarray((alb * np.array([0.5, 1.0, 0.8])).astype(np.uint8)).save(person / "albedo.png")
    torch.manual_seed(0)
    m = StudentNet.for_variant("vis", resolution=64, base=8, levels=3, static_channels=4, albedo_prior=True)
    m.set_albedo(HandAsset.load(asset_path("hand_v2")).albedo_map(64))
    p = save_student(tmp_path / "v2.safetensors", m, {"asset": "hand_v2"})
    scene = scene_preset("flat")
    tex = {}
    for name, src in (("v2", asset_path("hand_v2")), ("person", person)):
        e = Engine(asset=src, raycast="embree")
        f = e.render_student(scene, env, student=p, inference="torch", n_lights=32, width=64, height=48)
        tex[name] = f.textures["right"]
        e.release()
    a_v2 = HandAsset.load(asset_path("hand_v2")).albedo_map(64).permute(1, 2, 0).numpy()
    a_p = HandAsset.load(person / "right_hand.npz").albedo_map(64).permute(1, 2, 0).numpy()
    ok = a_v2 > 0.02
    assert np.allclose(tex["person"][ok], (tex["v2"] * a_p / np.maximum(a_v2, 1e-6))[ok], rtol=1e-3, atol=1e-6)
    assert not np.allclose(tex["person"], tex["v2"])


def test_shipped_v2_student_relights_asset_v2_close_to_pbr():
    """models/student/student_hand_v2.safetensors (README: Students on asset v2) is what an Engine on
    hand_v2 loads by default: key lights on, tied to hand_v2, and its picture agrees with the PBR
    baseline on the hand pixels (both approximate the same path tracer; broken weights, a wrong
    albedo or missing key-light maps fall far below this)."""
    from relit_hands.engine import Engine
    from relit_hands.environment import EnvironmentMap
    from relit_hands.hand_model import asset_path
    from relit_hands.student import default_student_path, read_student_meta

    eng = Engine(asset=asset_path("hand_v2"))
    try:
        path = default_student_path(asset=eng.asset)
        meta = read_student_meta(path)
        assert path.name == "student_hand_v2.safetensors" and meta["asset"] == "hand_v2"
        assert meta["variant"] == "vis" and int(meta["key_lights"]) > 0
        scene = scene_preset("clasp")
        sky = EnvironmentMap.from_name_or_path("sky_sun").rotate(160.0, 0.0)
        cam = eng.default_camera(scene, 192, 144)
        st = eng.render_student(scene, sky, cam, return_linear=True, background="none")
        pbr = eng.render(scene, sky, cam, shading="pbr", return_linear=True, background="none")
        a, b = st.frames[0], pbr
        m = a.mask & b.mask
        assert m.mean() > 0.05
        x, y = a.linear[m], b.linear[m]
        assert np.isfinite(x).all() and x.min() >= 0
        psnr = 10 * np.log10(float(np.percentile(y, 99.5)) ** 2 / float(np.mean((x - y) ** 2)))
        assert psnr > 24.0, psnr
        assert 0.7 < x.mean() / y.mean() < 1.4
    finally:
        eng.release()
