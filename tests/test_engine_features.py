"""Lighting features on the real hand asset through the Engine: backends agree with the
brute-force reference on every two-hand preset, one hand shadows the other, the UV maps cover the
atlas and respect the mirrored layout."""
import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from relit_hands import raycast
from relit_hands.features import lighting_features
from relit_hands.hand_model import vertex_normals
from relit_hands.scene import SCENE_PRESETS, Scene, scene_preset


def posed_proxies(engine, scene):
    v = torch.stack([engine.models[h.side](h.pose, h.global_orient, h.transl, meshes=("proxy",)).proxy_vertices[0]
                     for h in scene.hands])
    faces = [engine.models[h.side].proxy_faces for h in scene.hands]
    n = torch.stack([vertex_normals(v[i], faces[i]) for i in range(len(faces))])
    return v, n, faces


@pytest.mark.parametrize("name", SCENE_PRESETS)
def test_embree_matches_brute_force_on_two_hand_presets(engine, env, name):
    scene = scene_preset(name)
    v, n, faces = posed_proxies(engine, scene)
    dirs, rgb = env.directional_lights(32)
    fast = raycast.proxy_visibility(v, n, faces, dirs, backend="embree")
    ref = raycast.proxy_visibility(v, n, faces, dirs, backend="torch")
    agree = (fast == ref).float().mean().item()
    assert agree >= 0.995, f"{name}: {agree:.4%} of rays agree"
    view = np.array([0.0, 0.0, 0.5])
    fe, e1, _ = lighting_features(v, n, fast, dirs, rgb, view)
    fr, e2, _ = lighting_features(v, n, ref, dirs, rgb, view)
    uv = engine.uv_rasterizer(128)
    me, mr = uv.gather(fe, engine.asset.proxy_faces), uv.gather(fr, engine.asset.proxy_faces)
    rel = (me - mr).abs().sum() / mr.abs().sum()
    assert rel < 1e-3, f"{name}: feature maps differ by {rel:.2e} (relative L1)"


def test_upper_hand_takes_light_from_the_lower_hand(engine):
    """Shadow preset under light from above: the lower hand's vertices under the upper hand lose
    visibility compared with the same frame without the upper hand."""
    scene = scene_preset("shadow")
    lower = scene.hand("left")
    up = np.array([[0.0, 1.0, 0.0], [0.2, 0.98, 0.0], [-0.2, 0.98, 0.0], [0.0, 0.98, 0.2], [0.0, 0.98, -0.2]])
    up = up / np.linalg.norm(up, axis=1, keepdims=True)
    v, n, faces = posed_proxies(engine, scene)
    k = scene.hands.index(lower)
    both = raycast.proxy_visibility(v, n, faces, up, backend="embree")[k]
    alone_scene = Scene([lower])
    va, na, fa = posed_proxies(engine, alone_scene)
    alone = raycast.proxy_visibility(va, na, fa, up, backend="embree")[0]
    assert (both <= alone).all(), "adding a hand can only remove visibility"
    lost = (alone & ~both).any(1)
    # the vertices that lost light lie under the upper hand's footprint (in x, z)
    upper = v[1 - k].numpy()
    lost_xz = va[0].numpy()[lost.numpy()][:, [0, 2]]
    lo, hi = upper[:, [0, 2]].min(0) - 0.01, upper[:, [0, 2]].max(0) + 0.01
    assert lost.float().mean() > 0.15
    assert ((lost_xz >= lo) & (lost_xz <= hi)).all(1).mean() > 0.95


def test_features_in_a_fixed_range_for_any_hdr_scale(engine, env):
    scene = scene_preset("clasp")
    a = engine.lighting_features(scene, env, (0.0, 0.1, 0.5), n_lights=64, resolution=128)
    b = engine.lighting_features(scene, env.with_exposure(7.0), (0.0, 0.1, 0.5), n_lights=64, resolution=128)
    assert torch.allclose(a.maps, b.maps, rtol=1e-4, atol=1e-5)
    assert torch.allclose(b.energy, a.energy * 2 ** 7, rtol=1e-4)
    i = a.names.index("diffuse_vis_g")
    assert a.maps[:, i].max() <= 1.0 + 1e-5 and a.maps[:, i].min() >= 0
    j = a.names.index("diffuse_novis_g")
    assert (a.maps[:, i] <= a.maps[:, j] + 1e-5).all()  # visibility only removes light


@pytest.mark.parametrize("R", [128, 256, 512, 1024])
def test_no_uncovered_texel_inside_the_atlas_after_dilation(engine, R):
    uv = engine.uv_rasterizer(R)
    assert 0.3 < uv.mask.mean() < 0.95
    near_atlas = binary_dilation(uv.mask, iterations=uv.dilation)
    assert uv.valid[near_atlas].all()
    assert (uv.tri[uv.valid] >= 0).all() and (uv.tri[uv.valid] < len(engine.asset.proxy_faces)).all()


def test_uv_gather_respects_the_mirrored_layout(engine):
    """Both hands share one atlas: gathering each hand's rest positions gives mirror images."""
    right = torch.as_tensor(engine.models["right"].asset.proxy_vertices)
    left = torch.as_tensor(engine.models["left"].asset.proxy_vertices)
    uv = engine.uv_rasterizer(256)
    maps = uv.gather(torch.stack([right, left]), engine.asset.proxy_faces)
    mirror = maps[0].clone()
    mirror[2] *= -1
    valid = torch.as_tensor(uv.valid)
    assert torch.allclose(maps[1][:, valid], mirror[:, valid], atol=1e-6)
    # and texels reproduce the surface: interpolated positions lie on the proxy's triangles
    assert maps[0][:, valid].abs().max() < 0.25
