"""The Engine end to end on llvmpipe: presets frame sensibly, lighting responds, shadows fall,
and the UV radiance-texture path reproduces a known texture."""
import numpy as np
import pytest

from relit_hands.engine import Engine, framing_camera
from relit_hands.environment import EnvironmentMap
from relit_hands.poses import POSE_PRESETS
from relit_hands.scene import SCENE_PRESETS, scene_preset

W, H = 192, 144


@pytest.fixture(scope="module")
def engine():
    e = Engine(shadow_map_size=1024)
    yield e
    e.release()


def overhead_light_env():
    """Dim grey sky with a small, very bright patch straight overhead (+Y)."""
    img = np.full((64, 128, 3), 0.05, np.float32)
    img[:3] = 400.0  # rows next to the +Y pole
    return EnvironmentMap(img, name="overhead")


def lum(x):
    return x @ np.array([0.2126, 0.7152, 0.0722], np.float32)


@pytest.mark.parametrize("name", list(POSE_PRESETS) + list(SCENE_PRESETS))
def test_every_preset_fills_a_sensible_part_of_the_frame(engine, name):
    env = EnvironmentMap.from_name_or_path("studio")
    frame = engine.render(scene_preset(name), env, width=W, height=H)
    cover = frame.mask.mean()
    assert 0.04 < cover < 0.6, f"{name}: hands cover {cover:.1%} of the image"
    # the hands are inside the frame, not cut at its borders (the wrist stub may touch)
    border = np.concatenate([frame.mask[0], frame.mask[:, 0], frame.mask[:, -1]])
    assert border.mean() < 0.02
    assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
    sides = {h.side for h in scene_preset(name).hands}
    ids = set(np.unique(frame.hand_id)) - {-1}
    assert len(ids) == len(sides)  # every hand visible
    assert frame.timings_ms["skinning"] > 0 and frame.timings_ms["composite"] > 0


def test_rotating_the_environment_changes_the_shading(engine):
    scene = scene_preset("flat")
    env = EnvironmentMap.from_name_or_path("sky_sun")
    cam = engine.default_camera(scene, W, H)
    a = engine.render(scene, env, cam, return_linear=True, background="none")
    b = engine.render(scene, env.rotate(120.0), cam, return_linear=True, background="none")
    hand = a.mask & b.mask
    rel = np.abs(lum(a.linear[hand]) - lum(b.linear[hand])).mean() / lum(a.linear[hand]).mean()
    assert rel > 0.2
    # ...while rotating by a full turn changes nothing
    c = engine.render(scene, env.rotate(360.0), cam, return_linear=True, background="none")
    assert np.allclose(a.linear[hand], c.linear[hand], rtol=2e-3, atol=1e-4)


def test_upper_hand_shadows_the_lower_hand(engine):
    scene = scene_preset("shadow")
    env = overhead_light_env()
    cam = engine.default_camera(scene, 256, 192)
    on = engine.render(scene, env, cam, return_linear=True, shadows=True, background="none")
    off = engine.render(scene, env, cam, return_linear=True, shadows=False, background="none")
    lower = scene.hands.index(scene.hand("left"))
    pix = (on.hand_id == lower) & (off.hand_id == lower)
    ratio = lum(on.linear[pix]) / np.maximum(lum(off.linear[pix]), 1e-6)
    # a large part of the lower hand lies in the upper hand's shadow...
    assert (ratio < 0.5).mean() > 0.25
    assert lum(on.linear[pix]).mean() < 0.75 * lum(off.linear[pix]).mean()
    # ...and shadows never brighten anything
    assert (ratio < 1.0 + 1e-3).all()


def test_uv_texture_path_reproduces_a_known_texture(engine):
    scene = scene_preset("clap")
    R = 256
    v, u = np.meshgrid((np.arange(R) + 0.5) / R, (np.arange(R) + 0.5) / R, indexing="ij")
    tex = {"right": np.stack([u, v, np.full_like(u, 0.25)], -1).astype(np.float32),
           "left": np.stack([v, u, np.full_like(u, 0.75)], -1).astype(np.float32)}
    cam = engine.default_camera(scene, W, H)
    uv = engine.render(scene, None, cam, shading="uv", background="none", return_linear=True, tonemap="none")
    out = engine.render(scene, None, cam, shading="uv_texture", radiance_textures=tex, background="none",
                        return_linear=True, tonemap="none")
    from scipy.ndimage import binary_erosion

    for k, side in enumerate(out.sides):
        inner = binary_erosion(out.hand_id == k, iterations=2) & binary_erosion(uv.hand_id == k, iterations=2)
        uu, vv = uv.linear[inner, 0], uv.linear[inner, 1]
        expect = np.stack([uu, vv, np.full_like(uu, 0.25)], -1) if side == "right" else \
            np.stack([vv, uu, np.full_like(uu, 0.75)], -1)
        err = np.abs(out.linear[inner] - expect)
        assert np.median(err) < 2e-3 and np.percentile(err, 99) < 0.02, side


def test_uv_texture_requires_textures(engine):
    with pytest.raises(ValueError, match="radiance_textures"):
        engine.render(scene_preset("flat"), None, shading="uv_texture", width=32, height=32)


def test_framing_camera_contains_points():
    pts = np.random.default_rng(0).normal(size=(500, 3)) * 0.05
    cam = framing_camera(pts, 320, 240)
    px = cam.project(pts)
    assert (px[:, 0] > 0).all() and (px[:, 0] < 320).all() and (px[:, 1] > 0).all() and (px[:, 1] < 240).all()
