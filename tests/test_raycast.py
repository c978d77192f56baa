"""Proxy visibility: embree / triton vs the brute-force torch reference, analytic cases."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import trimesh

from relit_hands import raycast as rc
from relit_hands.features import vertex_normals


def fibonacci_dirs(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.cos(phi), np.sin(th) * np.sin(phi)], 1
                    ).astype(np.float32)


def two_bumpy_spheres(subdiv=2, gap=0.005):
    """Two deformed spheres (r ~ 4-5 cm) nearly touching: like two interacting hands."""
    base = trimesh.creation.icosphere(subdiv, radius=0.045)
    u = base.vertices / 0.045
    va = base.vertices * (1 + 0.12 * np.sin(5 * u[:, :1]) * np.cos(3 * u[:, 1:2]))
    vb = base.vertices * (1 + 0.10 * np.cos(4 * u[:, 2:3] + 1.0)) * [1.0, 0.6, 1.0]
    shift = va[:, 0].max() - vb[:, 0].min() + gap
    vb = vb + [shift, 0.01, 0.0]
    V = np.stack([va, vb]).astype(np.float32)
    F = np.asarray(base.faces, np.int64)
    N = vertex_normals(V, F).numpy()
    return V, N, F


def slab(n=12, size=0.2, thick=0.02):
    """Closed box slab, top face at y = 0, subdivided so its top has interior vertices."""
    m = trimesh.creation.box(extents=[size, thick, size])
    m.apply_translation([0, -thick / 2, 0])
    for _ in range(3):
        m = m.subdivide()
    return np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64)


def test_registry_and_auto():
    assert {"torch", "embree", "triton"} <= set(rc._REGISTRY)
    assert "torch" in rc.available_backends()
    name = rc.resolve_backend("auto")
    if torch.cuda.is_available() and rc._triton_importable():
        assert name == "triton"
    elif rc.EmbreeRayCaster.is_available():
        assert name == "embree"
    else:
        assert name == "torch"
    assert rc.get_backend("torch").name == "torch"
    with pytest.raises(KeyError):
        rc.get_backend("nope")


@pytest.mark.parametrize("cull", [True, False])
def test_embree_matches_torch_two_meshes(cull):
    pytest.importorskip("embreex")
    V, N, F = two_bumpy_spheres()
    d = fibonacci_dirs(64)
    vt, it = rc.proxy_visibility(V, N, F, d, backend="torch", cull_backfacing=cull,
                                 return_info=True)
    ve, ie = rc.proxy_visibility(V, N, F, d, backend="embree", cull_backfacing=cull,
                                 return_info=True)
    assert vt.shape == ve.shape == (2, V.shape[1], 64) and vt.dtype == torch.bool
    agree = (vt == ve).float().mean().item()
    assert agree >= 0.995, agree
    assert ie["backend"] == "embree" and it["backend"] == "torch"
    # the second sphere does shadow the first: compare with the first sphere alone
    alone = rc.proxy_visibility(V[:1], N[:1], F, d, backend="embree", cull_backfacing=cull)
    assert alone[0].sum() > ve[0].sum()
    assert not (ve[0] & ~alone[0]).any()  # adding geometry never adds visibility


def test_embree_threaded_queries_equal_one_thread(monkeypatch):
    """Large queries are split into contiguous chunks queried on a thread pool: the same answer
    as one thread, in the same order."""
    pytest.importorskip("embreex")
    monkeypatch.setattr(rc.EmbreeRayCaster, "_MIN_RAYS_PER_THREAD", 100)
    V, N, F = two_bumpy_spheres()
    d = fibonacci_dirs(64)
    one, many = rc.EmbreeRayCaster(threads=1), rc.EmbreeRayCaster(threads=3)
    a = rc.proxy_visibility(V, N, F, d, backend=one)
    b = rc.proxy_visibility(V, N, F, d, backend=many)
    assert many._pool is not None and one._pool is None  # the chunked path did run
    assert torch.equal(a, b) and 0.05 < a.float().mean() < 0.95


def test_convex_sphere_exact_all_backends_agree():
    m = trimesh.creation.icosphere(2, radius=0.05)
    V = np.asarray(m.vertices, np.float32)
    N = V / np.linalg.norm(V, axis=1, keepdims=True)
    d = fibonacci_dirs(48)
    names = ["torch"] + (["embree"] if rc.EmbreeRayCaster.is_available() else [])
    res = [rc.proxy_visibility(V, N, m.faces, d, backend=b, cull_backfacing=False)[0]
           for b in names]
    cos = torch.from_numpy(N @ d.T)
    for r in res:
        assert r[cos > 0.2].all()          # convex: everything clearly above the horizon
        assert not r[cos < -0.5].any()     # clearly below: the ray crosses the sphere
        assert torch.equal(r, res[0])      # exact agreement on a clean case
        # with culling: exactly (n.d > 0) & visible
    rc_cull = rc.proxy_visibility(V, N, m.faces, d, backend=names[-1])[0]
    assert torch.equal(rc_cull, res[-1] & (cos > 0))


@pytest.mark.parametrize("backend", ["torch", "embree"])
def test_open_sky_and_sphere_above_slab(backend):
    if backend == "embree":
        pytest.importorskip("embreex")
    sv, sf = slab()
    top = np.abs(sv[:, 1]) < 1e-6
    inner = top & (np.abs(sv[:, 0]) < 0.095) & (np.abs(sv[:, 2]) < 0.095)
    vtx = sv[inner]
    nrm = np.tile(np.array([[0, 1, 0]], np.float32), (len(vtx), 1))
    d = fibonacci_dirs(128 if backend == "torch" else 256)
    d = d[d[:, 1] > 1e-3]
    # the slab alone: nothing above -> every upper-hemisphere direction visible
    vis_slab = rc.proxy_visibility([vtx], [nrm], [np.zeros((0, 3), np.int64)], d,
                                   backend=backend)
    # (no triangles for the query hand: the slab itself must be in the scene -> use 2 hands)
    sphere = trimesh.creation.icosphere(2, radius=0.03)
    sp_v = np.asarray(sphere.vertices, np.float32) + [0, 0.05, 0]
    sp_n = vertex_normals(sp_v, sphere.faces).numpy()
    alone = rc.proxy_visibility([sv, np.zeros((0, 3), np.float32) + 100],
                                [vertex_normals(sv, sf).numpy(), np.zeros((0, 3), np.float32)],
                                [sf, np.zeros((0, 3), np.int64)], d, backend=backend)[0]
    both = rc.proxy_visibility([sv, sp_v], [vertex_normals(sv, sf).numpy(), sp_n],
                               [sf, sphere.faces], d, backend=backend)[0]
    assert vis_slab[0].all()
    assert alone[torch.from_numpy(inner)].all()
    up = int(np.argmax(d[:, 1]))
    under = torch.from_numpy(inner & (np.hypot(sv[:, 0], sv[:, 2]) < 0.025))
    assert under.sum() > 0
    assert not both[under, up].any()               # straight up is blocked under the sphere
    assert both[inner].sum() < alone[inner].sum()  # slab vertices lose visibility
    assert not (both & ~alone).any()
    far = torch.from_numpy(inner & (np.hypot(sv[:, 0], sv[:, 2]) > 0.06))
    assert both[far, up].all()


@pytest.mark.parametrize("grid", [None, 5, 40])
def test_grid_backend_matches_torch(grid):
    V, N, F = two_bumpy_spheres(2)
    d = fibonacci_dirs(32)
    ref = rc.proxy_visibility(V, N, F, d, backend="torch")
    c = rc.GridRayCaster(grid=grid)
    got = rc.proxy_visibility(V, N, F, d, backend=c)
    assert torch.equal(ref, got)
    fr = rc.visibility_rays(V, N, F, d)
    assert c.last_candidates < 0.5 * fr["origins"].shape[0] * 2 * F.shape[0]
    bins = rc.bin_triangles_per_light(fr["scene_vertices"], fr["scene_faces"],
                                      fr["directions"], 8)
    assert int(bins["cell_count"].sum()) == bins["entries"] == bins["tri_list"].numel()


def test_cluster_cull_stats_runs():
    V, N, F = two_bumpy_spheres(2)
    fr = rc.visibility_rays(V, N, F, fibonacci_dirs(16))
    st = rc.cluster_cull_stats(fr["scene_vertices"], fr["scene_faces"], fr["origins"],
                               fr["dirs"], 32, 32)
    assert 0 < st["tiles_tested_fraction"] <= 1 and st["ray_triangle_tests"] > 0


def test_list_inputs_and_device():
    V, N, F = two_bumpy_spheres(1)
    d = fibonacci_dirs(16)
    a = rc.proxy_visibility(V, N, F, d, backend="torch")
    b = rc.proxy_visibility(torch.from_numpy(V), torch.from_numpy(N), [F, F], d,
                            backend="torch")
    assert torch.equal(a, b)
    c = rc.proxy_visibility([V[0], V[1][:-1]], [N[0], N[1][:-1]],
                            [F, F[(F < V.shape[1] - 1).all(1)]], d, backend="torch")
    assert isinstance(c, list) and c[0].shape == (V.shape[1], 16)


TRITON_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import numpy as np, torch, trimesh
    sys.path.insert(0, {tests!r})
    from test_raycast import two_bumpy_spheres, fibonacci_dirs
    from relit_hands import raycast as rc
    V, N, F = two_bumpy_spheres(1)
    d = fibonacci_dirs(12)
    for cull in (True, False):
        ref = rc.proxy_visibility(V, N, F, d, backend="torch", cull_backfacing=cull)
        # per-light grid kernel (the visibility path)
        caster = rc.TritonRayCaster(block_r=16, block_t=16, grid_block_r=32, device="cpu")
        got, info = rc.proxy_visibility(V, N, F, d, backend=caster, cull_backfacing=cull,
                                        return_info=True)
        assert info["backend"] == "triton"
        assert torch.equal(ref, got), (ref != got).sum()
    # mixed-direction rays (no coherent bundles) through the raw interface
    g = torch.Generator().manual_seed(0)
    o = torch.randn(40, 3, generator=g) * 0.08
    dd = torch.nn.functional.normalize(torch.randn(40, 3, generator=g), dim=1)
    allv = np.concatenate([V[0], V[1]]); allf = np.concatenate([F, F + V.shape[1]])
    t = rc.TorchRayCaster(); t.build(allv, allf)
    caster.build(allv, allf)
    ref_o = t.occluded(o, dd)
    assert ref_o.any() and not ref_o.all()
    assert torch.equal(ref_o, caster.occluded(o, dd))          # clustered kernel
    # shared-direction rays through the clustered kernel (coherent bundles, culling active)
    fr = rc.visibility_rays(V, N, F, d)
    assert torch.equal(t.occluded(fr["origins"], fr["dirs"]),
                       caster.occluded(fr["origins"], fr["dirs"]))
    print("TRITON_OK")
""")


def test_triton_interpreter_matches_torch():
    # Only look for triton here: importing it into a process that already runs Mesa's llvmpipe
    # (other tests' OpenGL contexts) crashes (two LLVMs in one process), so it runs in a subprocess.
    assert importlib.util.find_spec("triton") is not None, "triton is a test dependency (install.sh --dev)"
    script = TRITON_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1")
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0 and "TRITON_OK" in p.stdout, p.stdout + p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_cuda_matches_torch():  # pragma: no cover - GPU machines only
    pytest.importorskip("triton")
    V, N, F = two_bumpy_spheres(3)
    d = fibonacci_dirs(128)
    Vc, Nc = torch.from_numpy(V).cuda(), torch.from_numpy(N).cuda()
    ref = rc.proxy_visibility(Vc, Nc, F, d, backend="torch")
    assert ref.is_cuda
    for b in ("triton", "grid"):
        got = rc.proxy_visibility(Vc, Nc, F, d, backend=b)
        assert (ref == got).float().mean().item() >= 0.9999, b
    caster = rc.TritonRayCaster()
    fr = rc.visibility_rays(Vc, Nc, F, d)
    t = rc.TorchRayCaster()
    t.build(fr["scene_vertices"], fr["scene_faces"])
    caster.build(fr["scene_vertices"], fr["scene_faces"])
    a = t.occluded(fr["origins"], fr["dirs"])
    assert (a == caster.occluded(fr["origins"], fr["dirs"])).float().mean().item() >= 0.9999
