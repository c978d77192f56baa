"""Lighting features: analytic single-light values, scale invariance, backend agreement."""
import math
import os
import sys

import numpy as np
import pytest
import torch
import trimesh

from relit_hands import raycast as rc
from relit_hands.features import LUMA, lighting_features, vertex_normals

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_raycast import fibonacci_dirs, two_bumpy_spheres  # noqa: E402


def sphere():
    m = trimesh.creation.icosphere(2, radius=0.05)
    V = np.asarray(m.vertices, np.float32)
    return V, vertex_normals(V, m.faces).numpy(), np.asarray(m.faces)


def idx(names, prefix):
    return [i for i, n in enumerate(names) if n.startswith(prefix)]


def test_vertex_normals_radial_on_sphere():
    V, N, F = sphere()
    radial = V / np.linalg.norm(V, axis=1, keepdims=True)
    assert np.min((N * radial).sum(1)) > 0.995


def test_single_light_diffuse_exact():
    V, N, F = sphere()
    l = np.array([[0.3, 0.8, -0.52]], np.float32)
    l /= np.linalg.norm(l)
    E = np.array([[2.0, 3.0, 5.0]], np.float32)
    vis = rc.proxy_visibility(V, N, F, l, backend="torch")
    feats, energy, names = lighting_features(V, N, vis, l, E, view_origin=[0, 0, 1.0])
    assert feats.shape == (1, V.shape[0], len(names)) and feats.dtype == torch.float32
    assert len(names) == 19 and names[-4] == "ao"
    assert torch.allclose(energy, torch.tensor([2.0, 3.0, 5.0]))
    cos = np.maximum(0, N @ l[0])
    cos_vis = cos * vis[0, :, 0].numpy()
    # single light: E / energy = 1 per channel -> diffuse = max(0, n.l) (with visibility)
    for c, name in enumerate(["r", "g", "b"]):
        np.testing.assert_allclose(feats[0, :, names.index(f"diffuse_vis_{name}")], cos_vis,
                                   atol=1e-6)
        np.testing.assert_allclose(feats[0, :, names.index(f"diffuse_novis_{name}")], cos,
                                   atol=1e-6)
    # a convex sphere shadows nothing in front of the light -> vis == novis where n.l > 0.2
    assert np.allclose(cos_vis[cos > 0.2], cos[cos > 0.2])
    # luminance normalisation: diffuse = max(0,n.l) * E / lum(E), energy = (L, L, L)
    f2, e2, _ = lighting_features(V, N, vis, l, E, [0, 0, 1.0], normalize="luminance")
    L = float(np.dot(E[0], LUMA))
    assert torch.allclose(e2, torch.full((3,), L))
    np.testing.assert_allclose(f2[0, :, :3].numpy(), cos_vis[:, None] * E[0] / L, rtol=1e-5,
                               atol=1e-6)


def test_specular_analytic_mirror_configuration():
    # vertex at origin, normal +Y, light and camera straight above: n.h = n.l = n.v = 1
    # -> D = 1/(pi a^2), Vis = G2/(4 nl nv) = 0.25, spec = D * Vis * cos = 1/(4 pi a^2)
    x = np.zeros((1, 3), np.float32)
    n = np.array([[0, 1, 0]], np.float32)
    l = np.array([[0, 1, 0]], np.float32)
    E = np.array([[1.0, 1.0, 1.0]], np.float32)
    vis = torch.ones(1, 1, dtype=torch.bool)
    rough = (0.2, 0.4, 0.7)
    f, _, names = lighting_features(x, n, vis, l, E, [0, 2.0, 0], roughness=rough)
    for a in rough:
        got = f[0, 0, names.index(f"spec_a{a:.2f}_g")].item()
        assert got == pytest.approx(1 / (4 * math.pi * a * a), rel=1e-5)
    # light below the horizon -> no diffuse, no specular; invisible light -> only novis
    f2, _, _ = lighting_features(x, n, vis, -l, E, [0, 2.0, 0])
    assert f2[0, 0, :15].abs().max() == 0
    f3, _, names = lighting_features(x, n, ~vis, l, E, [0, 2.0, 0])
    assert f3[0, 0, names.index("diffuse_novis_r")] == pytest.approx(1.0)
    assert f3[0, 0, names.index("diffuse_vis_r")] == 0 and f3[0, 0, names.index("ao")] == 0


def test_specular_off_mirror_matches_formula():
    rng = np.random.default_rng(3)
    n = np.array([[0, 0, 1]], np.float32)
    l = rng.normal(size=(5, 3)).astype(np.float32)
    l[:, 2] = np.abs(l[:, 2])
    l /= np.linalg.norm(l, axis=1, keepdims=True)
    E = rng.uniform(0.5, 2, size=(5, 3)).astype(np.float32)
    cam = np.array([0.3, -0.2, 1.0], np.float32)
    f, energy, names = lighting_features(np.zeros((1, 3)), n, torch.ones(1, 5, dtype=bool), l, E,
                                         cam, roughness=(0.4,))
    o = cam / np.linalg.norm(cam)
    a2 = 0.16
    tot = np.zeros(3)
    for k in range(5):
        h = (l[k] + o) / np.linalg.norm(l[k] + o)
        nh, nl, nv = h[2], l[k, 2], o[2]
        D = a2 / (math.pi * (nh * nh * (a2 - 1) + 1) ** 2)
        lam = lambda c: (-1 + math.sqrt(1 + a2 * (1 - c * c) / (c * c))) / 2  # noqa: E731
        G2 = 1 / (1 + lam(nl) + lam(nv))               # height-correlated Smith
        tot += E[k] * D * G2 / (4 * nl * nv) * nl
    np.testing.assert_allclose(f[0, 0, idx(names, "spec_a0.40")].numpy(),
                               tot / E.sum(0), rtol=1e-4)


def test_scale_invariance_and_ranges():
    V, N, F = two_bumpy_spheres(1)
    d = fibonacci_dirs(64)
    rng = np.random.default_rng(0)
    E = rng.uniform(0, 1, size=(64, 3)).astype(np.float32) ** 4
    vis = rc.proxy_visibility(V, N, F, d, backend="torch")
    f1, e1, names = lighting_features(V, N, vis, d, E, [0.1, 0.2, 0.5])
    f2, e2, _ = lighting_features(V, N, vis, d, E * 100, [0.1, 0.2, 0.5])
    assert f1.shape == (2, V.shape[1], 19)
    torch.testing.assert_close(f2, f1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e2, e1 * 100, rtol=1e-5, atol=0)
    dif = f1[..., :6]
    assert dif.min() >= 0 and dif.max() <= 1 + 1e-6           # averages of cosines
    assert (f1[..., :3] <= f1[..., 3:6] + 1e-6).all()         # visibility only removes light
    ao = f1[..., names.index("ao")]
    assert ao.min() >= 0 and ao.max() <= 1 + 1e-6 and ao.min() < 0.9
    # feature * energy = un-normalised sum
    cos = np.maximum(0, np.einsum("hvk,nk->hvn", N, d)) * vis.numpy()
    raw = np.einsum("hvn,nc->hvc", cos, E)
    np.testing.assert_allclose((f1[..., :3] * e1).numpy(), raw, rtol=1e-4, atol=1e-6)


def test_embree_features_match_torch():
    pytest.importorskip("embreex")
    V, N, F = two_bumpy_spheres(2)
    d = fibonacci_dirs(64)
    E = np.random.default_rng(1).uniform(0.1, 1, size=(64, 3)).astype(np.float32)
    ft, _, _ = lighting_features(V, N, rc.proxy_visibility(V, N, F, d, backend="torch"), d, E,
                                 [0, 0, 0.6])
    fe, _, _ = lighting_features(V, N, rc.proxy_visibility(V, N, F, d, backend="embree"), d, E,
                                 [0, 0, 0.6])
    err = (fe - ft).abs() / ft.abs().clamp_min(1e-3)
    assert err.max().item() <= 1e-3, err.max()


def test_optional_channels_and_zero_energy():
    V, N, F = sphere()
    d = fibonacci_dirs(8)
    vis = torch.ones(V.shape[0], 8, dtype=torch.bool)
    f, e, names = lighting_features(V, N, vis, d, np.zeros((8, 3)), [0, 0, 1],
                                    include_normal=False, include_view=True)
    assert names[-3:] == ["view_x", "view_y", "view_z"] and f.shape[-1] == len(names) == 19
    assert torch.isfinite(f).all() and torch.all(e == 0)
    assert (f[..., names.index("ao")] == 1).all()   # nothing to shadow -> 1
