"""One home each for the shared math (issue #19): the GL environment state, the light stage and the
asset builder use the engine's SH basis, equirect grid, Fibonacci sphere and vertex normals with
the numbers they had; the student's channel names come from the feature builder; every frame's
timing keys are the stage lists of relit_hands.stages, in order."""
import numpy as np
import pytest
import torch

from relit_hands import environment, environment_gl
from relit_hands.stages import COMPOSITE_STAGES, GPU_STUDENT_STAGES, PBR_STAGES, STUDENT_STAGES


# ------------------------------------------------------------------ SH, equirect grid, Fibonacci

def test_gl_environment_uses_the_environment_math():
    assert environment_gl.sh_basis is environment.sh_basis
    assert environment_gl.equirect_directions_and_solid_angles is environment.equirect_directions_and_solid_angles
    np.testing.assert_array_equal(environment.SH_COSINE_BAND,
                                  [np.pi] + [2.0 * np.pi / 3.0] * 3 + [np.pi / 4.0] * 5)
    from relit_hands.compositor import _equirect_dirs  # the name callers import from the compositor
    assert _equirect_dirs is environment.equirect_directions_and_solid_angles


@pytest.mark.parametrize("h, w", [(8, 16), (32, 64), (5, 7)])
def test_equirect_directions_and_solid_angles(h, w):
    d, omega = environment.equirect_directions_and_solid_angles(h, w)
    assert d.shape == (h * w, 3) and omega.shape == (h * w,)
    np.testing.assert_array_equal(d, environment.equirect_directions(h, w).reshape(-1, 3))
    np.testing.assert_array_equal(omega.reshape(h, w), np.repeat(environment.equirect_solid_angles(h, w)[:, None], w, 1))
    assert omega.sum() == pytest.approx(4 * np.pi, rel=1e-12)


def _engine_spiral(n):
    """environment.fibonacci_sphere as it was."""
    i = np.arange(n, dtype=np.float64)
    y = 1.0 - (2.0 * i + 1.0) / n
    r = np.sqrt(np.maximum(0.0, 1.0 - y * y))
    theta = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(theta), y, r * np.sin(theta)], axis=-1)


def _lightstage_spiral(n):
    """tools/lightstage.py's former copy: the azimuth index starts at 0.5."""
    i = np.arange(n) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(np.maximum(0.0, 1.0 - y * y))
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), y, r * np.sin(phi)], 1)


@pytest.mark.parametrize("n", [1, 32, 100, 1024])
def test_fibonacci_sphere_home_and_the_light_stage_rig(n):
    from relit_hands.tools import lightstage
    np.testing.assert_array_equal(environment.fibonacci_sphere(n), _engine_spiral(n))
    np.testing.assert_array_equal(lightstage.fibonacci_sphere(n), _lightstage_spiral(n))  # the rig's lights
    p = lightstage.fibonacci_sphere(n)
    p *= 2.0  # a fresh, writable array (the engine's is cached and read-only)
    assert not environment.fibonacci_sphere(n).flags.writeable
    np.testing.assert_allclose(np.linalg.norm(environment.fibonacci_sphere(n, 0.5), axis=1), 1.0, rtol=1e-12)


# ------------------------------------------------------------------ vertex normals

def test_asset_builder_uses_the_models_area_weighted_vertex_normals():
    from relit_hands.hand_model import vertex_normals
    from relit_hands.tools import build_hand_asset
    from synthetic import synthetic_uv_sphere
    assert build_hand_asset.vertex_normals is vertex_normals
    v, f, _, _ = synthetic_uv_sphere(n_lat=12, n_lon=24)
    v = v.astype(np.float64) * np.array([1.0, 0.6, 0.3])  # an ellipsoid: area weighting matters
    n = vertex_normals(torch.from_numpy(v), f).numpy()   # float64 in, float64 out
    assert n.dtype == np.float64
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # the builder's former numpy copy
    ref = np.zeros_like(v)
    for k in range(3):
        np.add.at(ref, f[:, k], fn)
    ref /= np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(n, ref, rtol=0, atol=1e-15)


# ------------------------------------------------------------------ feature channel names

def test_student_feature_names_are_the_feature_builders():
    from relit_hands.features import feature_names, lighting_features
    from relit_hands.student import FEATURE_NAMES
    assert FEATURE_NAMES == (
        "diffuse_vis_r", "diffuse_vis_g", "diffuse_vis_b",
        "diffuse_novis_r", "diffuse_novis_g", "diffuse_novis_b",
        "spec_a0.20_r", "spec_a0.20_g", "spec_a0.20_b",
        "spec_a0.40_r", "spec_a0.40_g", "spec_a0.40_b",
        "spec_a0.70_r", "spec_a0.70_g", "spec_a0.70_b",
        "ao", "normal_x", "normal_y", "normal_z",
    )
    rng = np.random.default_rng(0)
    V, N = 5, 4
    args = (rng.normal(size=(V, 3)), rng.normal(size=(V, 3)), np.ones((V, N), bool), rng.normal(size=(N, 3)),
            rng.random((N, 3)), np.array([0.0, 0.0, 2.0]))
    feats, _, names = lighting_features(*args)
    assert tuple(names) == FEATURE_NAMES and feats.shape[-1] == len(names)
    kw = dict(roughness=(0.3,), include_view=True, include_normal=False, mean_free_paths=(0.001, 0.004))
    feats, _, names = lighting_features(*args, transmittance=np.zeros((V, N, 2)), **kw)
    assert names == feature_names(**kw) and feats.shape[-1] == len(names)
    assert names[-9:] == ["transmit_1mm_r", "transmit_1mm_g", "transmit_1mm_b",
                          "transmit_4mm_r", "transmit_4mm_g", "transmit_4mm_b", "view_x", "view_y", "view_z"]
    # without transmittance the mean free paths name no channels
    assert lighting_features(*args, **kw)[2] == feature_names(**{**kw, "mean_free_paths": ()})


# ------------------------------------------------------------------ stages

def test_tools_and_viewer_take_the_stage_lists_from_the_engine():
    from relit_hands.compositor import Compositor
    from relit_hands.compositor_nvdiffrast import NvdiffrastCompositor
    from relit_hands.tools import bench
    from relit_hands.viewer.scheduling import STAGES as VIEWER_STAGES
    assert bench.PBR_STAGES is PBR_STAGES and Compositor.student_stages is STUDENT_STAGES
    assert NvdiffrastCompositor.student_stages == GPU_STUDENT_STAGES == tuple(
        s for s in STUDENT_STAGES if s != "upload")
    assert VIEWER_STAGES == ("skinning", "normals_upload", "composite.env_prepare", "composite.shadows",
                             "composite.draw", "composite.readback", "viewer_post", "worker_total")


def test_frames_time_the_stages_in_order(engine, env):
    """Engine.render / render_student and Compositor.render return their stages in the home's order
    (then their extra keys); nothing else is timed."""
    from relit_hands.scene import scene_preset
    scene = scene_preset("clasp")
    cam = engine.default_camera(scene, 64, 48)
    f = engine.render(scene, env, cam, readback="rgb")
    assert list(f.timings_ms) == [*PBR_STAGES, "total"]
    assert list(f.composite_ms) == [*COMPOSITE_STAGES, "total"]
    sf = engine.render_student(scene, env, cam, n_lights=32, readback="rgb")
    assert list(sf.timings_ms) == [*STUDENT_STAGES, "composite_per_view", "total"]
