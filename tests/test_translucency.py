"""Translucency cue: nearest-hit distances of the ray casters (box / sphere geometry, torch
brute force vs Embree) and proxy_transmittance / the transmit_* features against a per-ray
analytic reference on spheres."""
import numpy as np
import pytest
import torch
import trimesh

from relit_hands import raycast as rc
from relit_hands.features import lighting_features, vertex_normals
from relit_hands.translucency import proxy_transmittance

BACKENDS = ["torch"] + (["embree"] if rc.EmbreeRayCaster.is_available() else [])


def fibonacci_dirs(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.cos(phi), np.sin(th) * np.sin(phi)], 1).astype(np.float32)


def sphere(radius, centre=(0.0, 0.0, 0.0), subdiv=3):
    m = trimesh.creation.icosphere(subdiv, radius=radius)
    return (np.asarray(m.vertices) + centre).astype(np.float32), np.asarray(m.faces, np.int64)


def ray_sphere(p, d, c, r):
    """Analytic nearest t > 0 of rays p + t d (unit d) with the sphere (c, r); inf if none."""
    q = p - c
    b = (q * d).sum(-1)
    disc = b * b - ((q * q).sum(-1) - r * r)
    root = np.sqrt(np.maximum(disc, 0.0))
    t0, t1 = -b - root, -b + root
    t = np.where(t0 > 1e-9, t0, np.where(t1 > 1e-9, t1, np.inf))
    return np.where(disc >= 0, t, np.inf)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hit_distance_in_a_box_is_exact(backend):
    """Planar faces: the distance from inside to each face along the axes is exact."""
    box = trimesh.creation.box(extents=[0.2, 0.1, 0.04])
    caster = rc.get_backend(backend)
    caster.build(np.asarray(box.vertices, np.float32), np.asarray(box.faces, np.int64))
    o = np.array([[0.01, 0.02, -0.005]] * 6 + [[0.0, 0.0, 1.0]], np.float32)
    d = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [0, 0, 1]], np.float32)
    t = caster.hit_distance(o, d).numpy()
    expected = [0.09, 0.11, 0.03, 0.07, 0.025, 0.015, np.inf]
    assert np.allclose(t[:6], expected[:6], atol=1e-6) and np.isinf(t[6])


def test_embree_hit_distance_equals_the_reference():
    if "embree" not in BACKENDS:
        pytest.skip("embreex is not installed")
    v, f = sphere(0.04, subdiv=3)
    v2, f2 = sphere(0.03, centre=(0.075, 0.01, 0.0), subdiv=3)
    verts, faces = np.concatenate([v, v2]), np.concatenate([f, f2 + len(v)])
    rng = np.random.default_rng(0)
    o = rng.uniform(-0.08, 0.12, (4000, 3)).astype(np.float32)
    d = rng.uniform(-0.03, 0.09, (4000, 3)).astype(np.float32) - o   # aimed at the spheres' region
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    ref, emb = rc.get_backend("torch"), rc.get_backend("embree")
    ref.build(verts, faces)
    emb.build(verts, faces)
    a, b = ref.hit_distance(o, d).numpy(), emb.hit_distance(o, d).numpy()
    assert np.array_equal(np.isinf(a), np.isinf(b))
    fin = np.isfinite(a)
    assert fin.sum() > 1000 and np.allclose(a[fin], b[fin], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_thickness_of_a_sphere_is_its_chord(backend):
    """From just inside a sphere towards a light behind the surface, the ray leaves after the
    chord 2 R |n.w| (minus the epsilon step); in front of the surface the cue is 0."""
    R, eps = 0.01, 1e-4
    v, f = sphere(R)
    n = vertex_normals(torch.as_tensor(v), f)
    dirs = fibonacci_dirs(48)
    out = proxy_transmittance(v[None], n[None], f, dirs, mean_free_paths=(0.002, 0.006), epsilon=eps, backend=backend)
    th, T = out["thickness"][0].numpy(), out["transmittance"][0].numpy()
    nn = n.numpy()
    p = v - eps * nn
    P = np.repeat(p[:, None], len(dirs), 1)
    D = np.broadcast_to(dirs[None], P.shape)
    chord = ray_sphere(P, D, np.zeros(3), R)
    behind = nn @ dirs.T < 0
    assert behind.mean() == pytest.approx(0.5, abs=0.05)
    # exact against an independent brute-force ray cast of the same triangles (trimesh, numpy)
    mesh = trimesh.Trimesh(v, f, process=False)
    vi, li = np.nonzero(behind)
    origins, rays = P[vi, li], D[vi, li]
    hit_t = np.full(len(vi), np.inf)
    locs, ray_id, _ = trimesh.ray.ray_triangle.RayMeshIntersector(mesh).intersects_location(
        origins, rays, multiple_hits=True)
    np.minimum.at(hit_t, ray_id, np.einsum("rk,rk->r", locs - origins[ray_id], rays[ray_id]))
    assert np.allclose(th[vi, li], hit_t, atol=1e-6)
    # and the chord of the true sphere, up to the polygon's sagitta (worst at grazing exits)
    err = np.abs(th[behind] - chord[behind])
    assert np.median(err) < 0.01 * R and err.max() < 0.1 * R
    assert (th[~behind] == 0).all() and (T[~behind] == 0).all()
    assert out["exit_visible"][0].numpy()[behind].all()  # nothing else in the scene
    assert np.allclose(T[behind], np.exp(-th[behind][:, None] / np.array([0.002, 0.006])), rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exit_visibility_sees_the_other_hand(backend):
    """A second sphere behind the first (in the light's direction) blocks the light at the exit."""
    R = 0.01
    va, f = sphere(R)
    vb, _ = sphere(R, centre=(0.025, 0.0, 0.0))
    V = np.stack([va, vb])
    N = torch.stack([vertex_normals(torch.as_tensor(x), f) for x in V])
    # ~+x: towards sphere b; ~+y: free (tilted off the icospheres' symmetry planes, where a ray
    # through a shared edge can slip between two triangles in float32 Moller-Trumbore)
    w = np.array([[1.0, 0.013, 0.007], [0.011, 1.0, 0.005]], np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    out = proxy_transmittance(V, N, f, w, epsilon=1e-4, backend=backend)
    th, ev = out["thickness"].numpy(), out["exit_visible"].numpy()
    behind = np.einsum("hvk,nk->hvn", N.numpy(), w) < 0
    # reference: the exit point of sphere a continued along the light hits sphere b or not
    exit_a = va - 1e-4 * N[0].numpy() + th[0][:, :1] * w[0] + 1e-4 * w[0]
    t_b = ray_sphere(exit_a, np.broadcast_to(w[0], exit_a.shape), np.array([0.025, 0.0, 0.0]), R)
    assert np.abs(th[0][behind[0, :, 0], 0]).max() <= 2 * R   # every exit is on sphere a
    centre_b = np.array([0.025, 0.0, 0.0])
    off_axis = np.linalg.norm(np.cross(exit_a - centre_b, w[0]), axis=1)   # distance of the ray from b's centre
    clear = behind[0, :, 0] & (np.abs(off_axis - R) > 0.05 * R)
    assert clear.sum() > 100
    assert np.array_equal(ev[0, clear, 0], np.isinf(t_b[clear]))
    assert (~ev[0, clear, 0]).sum() > 50          # the centre of the backlit side is shadowed
    assert ev[0, behind[0, :, 1], 1].all()        # towards +y nothing is in the way


def test_transmit_features_reference():
    """transmit_{m} = sum_l E_l T_lm max(0, -n.w_l) / sum_l E_l, per colour channel."""
    rng = np.random.default_rng(1)
    H, V, N = 2, 7, 5
    x = rng.normal(size=(H, V, 3)).astype(np.float32)
    n = rng.normal(size=(H, V, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    w = fibonacci_dirs(N)
    E = rng.uniform(0.1, 2.0, (N, 3)).astype(np.float32)
    T = rng.uniform(0, 1, (H, V, N, 2)).astype(np.float32)
    vis = np.ones((H, V, N), bool)
    feats, energy, names = lighting_features(x, n, vis, w, E, np.zeros(3), transmittance=T,
                                             mean_free_paths=(0.002, 0.006))
    for m, tag in enumerate(("transmit_2mm", "transmit_6mm")):
        cols = [names.index(f"{tag}_{c}") for c in "rgb"]
        back = np.maximum(0.0, -np.einsum("hvk,nk->hvn", n, w))
        ref = np.einsum("hvn,nc->hvc", T[..., m] * back, E) / E.sum(0)
        assert np.allclose(feats[..., cols].numpy(), ref, rtol=1e-5, atol=1e-7)
    base, _, base_names = lighting_features(x, n, vis, w, E, np.zeros(3))
    assert names[:len(base_names) - 3] == base_names[:-3] and len(names) == len(base_names) + 6
    with pytest.raises(ValueError, match="transmittance"):
        lighting_features(x, n, vis, w, E, np.zeros(3), transmittance=T, mean_free_paths=(0.002,))


def test_engine_translucency_lights_a_backlit_finger():
    from relit_hands.engine import Engine
    from relit_hands.environment import EnvironmentMap
    from relit_hands.scene import scene_preset

    engine = Engine()
    try:
        scene = scene_preset("flat")
        env = EnvironmentMap.from_name_or_path("sky_sun")
        vf = engine.vertex_features(scene, env, np.array([0.0, 0.1, 0.6]), n_lights=32, sources=("vis", "novis"),
                                    translucency=(0.002, 0.006))
        names = vf["names"]
        cols = [i for i, c in enumerate(names) if c.startswith("transmit_")]
        assert len(cols) == 6
        tr = vf["vis"][..., cols]
        assert torch.isfinite(tr).all() and tr.min() >= 0 and tr.max() <= 1
        assert (tr.amax(-1) > 0.01).float().mean() > 0.05   # some skin glows from behind
        assert (vf["novis"][..., cols] == 0).all()          # no ray cast, no cue
        plain = engine.vertex_features(scene, env, np.array([0.0, 0.1, 0.6]), n_lights=32)
        assert plain["names"] == [c for c in names if not c.startswith("transmit_")]
    finally:
        engine.release()


def test_student_with_transmit_inputs_gets_them_at_run_time(tmp_path):
    """A student whose inputs include transmit_* channels: the engine computes the cue for it
    (render_student), the novis ablation drops the channels, the names parse back to the paths."""
    from relit_hands.engine import Engine
    from relit_hands.environment import EnvironmentMap
    from relit_hands.scene import scene_preset
    from relit_hands.student import FEATURE_NAMES, StudentNet, save_student, variant_feature_names
    from relit_hands.translucency import mean_free_paths_of

    transmit = [f"transmit_{m}mm_{c}" for m in (2, 6) for c in "rgb"]
    available = list(FEATURE_NAMES[:16]) + transmit + list(FEATURE_NAMES[16:])
    assert mean_free_paths_of(available) == (0.002, 0.006)
    assert not any(n.startswith("transmit_") for n in variant_feature_names("novis", available))
    net = StudentNet.for_variant("vis", resolution=128, available=available, base=4)
    path = tmp_path / "student_transmit.safetensors"
    save_student(path, net)
    engine = Engine()
    try:
        sf = engine.render_student(scene_preset("shadow"), EnvironmentMap.from_name_or_path("sky_sun").rotate(160, 0),
                                   student=str(path), inference="torch", n_lights=32, width=96, height=64)
        assert sf.image.shape == (64, 96, 3) and np.isfinite(sf.image).all()
    finally:
        engine.release()
