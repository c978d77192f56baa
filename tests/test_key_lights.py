"""Key lights (relit_hands.key_lights): per-texel visibility against an analytic shadow, the texel
shading against the per-vertex feature formulas, the engine's split of the light sum, and the
student set that stores them (recompute-features -> StudentDataset == the engine's maps)."""
import json

import numpy as np
import pytest
import torch

from relit_hands.features import lighting_features
from relit_hands.key_lights import (add_key_light_maps, key_light_indices, key_light_maps, key_shadow_coverage,
                                    pack_coverage, pack_visibility, texel_key_visibility, texel_steps,
                                    texel_surface, unpack_coverage, unpack_visibility)
from relit_hands.raycast import get_backend
from relit_hands.uv_maps import UVRasterizer

torch.set_num_threads(1)

# a 10 cm floor quad in the xz plane (normal +y), uv = (x, z) / 10 cm, and a triangle 5 cm above it
QUAD = np.array([[0, 0, 0], [0.1, 0, 0], [0.1, 0, 0.1], [0, 0, 0.1]], np.float32)
QUAD_FACES = np.array([[0, 2, 1], [0, 3, 2]], np.int64)   # counter-clockwise seen from +y
OCC = np.array([[0.02, 0.05, 0.02], [0.07, 0.05, 0.03], [0.04, 0.05, 0.08]], np.float32)


def _floor(R=48):
    uv = UVRasterizer(QUAD[:, [0, 2]] / 0.1, QUAD_FACES, R, faces=QUAD_FACES, dilation=0)
    verts = torch.from_numpy(QUAD)[None]
    normals = torch.tensor([[0.0, 1.0, 0.0]]).expand(1, 4, 3).contiguous()
    pts, nrm = texel_surface(uv, verts, normals, QUAD_FACES)
    return uv, pts, nrm


def _floor_scene(backend, device="cpu"):
    """A ray caster built on the floor quad and the occluder triangle above it."""
    caster = get_backend(backend)
    caster.build(torch.from_numpy(np.concatenate([QUAD, OCC])).to(device),
                 torch.from_numpy(np.concatenate([QUAD_FACES, np.array([[4, 5, 6]])])).to(device))
    return caster


def _inside_triangle(p, tri, margin):
    """p [T,2], tri [3,2]: inside with every barycentric >= margin (False: outside by >= margin)."""
    a, b, c = tri
    d = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
    b1 = ((p[:, 0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (p[:, 1] - a[1])) / d
    b2 = ((b[0] - a[0]) * (p[:, 1] - a[1]) - (p[:, 0] - a[0]) * (b[1] - a[1])) / d
    b0 = 1 - b1 - b2
    return np.minimum(np.minimum(b0, b1), b2)


@pytest.mark.parametrize("backend", ["torch", "embree"])
def test_texel_visibility_is_the_analytic_shadow(backend):
    uv, pts, nrm = _floor()
    caster = _floor_scene(backend)
    dirs = torch.nn.functional.normalize(torch.tensor([[0.0, 1.0, 0.0], [0.3, 1.0, -0.2], [0.0, -1.0, 0.0]]), dim=-1)
    vis = texel_key_visibility(caster, pts, nrm, uv.valid, dirs)
    assert vis.shape == (1, 3, 48, 48) and vis.dtype == torch.bool
    p = pts[0].permute(1, 2, 0).reshape(-1, 3).numpy()
    valid = uv.valid.reshape(-1)
    for li in range(2):
        d = dirs[li].numpy()
        t = 0.05 / d[1]
        hit = p[:, [0, 2]] + t * d[[0, 2]]                     # where the ray crosses the occluder's plane
        m = _inside_triangle(hit, OCC[:, [0, 2]], 0)
        v = vis[0, li].reshape(-1).numpy()
        sure_in, sure_out = valid & (m > 0.02), valid & (m < -0.02)
        assert sure_in.sum() > 50 and sure_out.sum() > 500
        assert not v[sure_in].any() and v[sure_out].all()
    assert not vis[0, 2].any()                                  # a light below the floor: cos <= 0
    assert not vis[0][:, ~uv.valid].any()                       # texels without a lookup stay False


def test_texel_steps_are_the_texel_spacing_on_the_floor():
    uv, pts, _ = _floor(40)
    dx, dy = texel_steps(pts, uv.valid)
    valid = torch.from_numpy(uv.valid)
    step = 0.1 / 40                                              # metres per texel
    for d in (dx, dy):
        length = d[0].norm(dim=0)[valid]
        assert torch.allclose(length, torch.full_like(length, step), rtol=1e-3)   # one-sided at the borders too
    assert float((dx[0, :, valid] * dy[0, :, valid]).sum(0).abs().max()) < 1e-9   # orthogonal on a square chart
    assert float(dx[0, 1, valid].abs().max()) < 1e-9 and float(dy[0, 1, valid].abs().max()) < 1e-9  # in the plane
    assert dx[0][:, ~valid].abs().sum() == 0


@pytest.mark.parametrize("backend", ["torch", "embree"])
def test_shadow_coverage_is_the_shadowed_fraction_of_each_texel(backend):
    """Coverage against the analytic shadow of the occluder: the fraction of a 16 x 16 grid over
    each texel's footprint whose ray (from 1 mm above) misses the triangle, computed analytically.
    One ray per texel misses it by up to a whole texel along the edge; 3 x 3 edge rays by much less."""
    R = 48
    uv, pts, nrm = _floor(R)
    caster = _floor_scene(backend)
    dirs = torch.nn.functional.normalize(torch.tensor([[0.3, 1.0, -0.2], [-0.5, 1.0, 0.4]]), dim=-1)
    vis = texel_key_visibility(caster, pts, nrm, uv.valid, dirs)
    cov = key_shadow_coverage(caster, pts, nrm, uv.valid, dirs, vis, samples=3)
    assert cov.dtype == torch.float32 and cov.shape == vis.shape
    assert torch.equal(key_shadow_coverage(caster, pts, nrm, uv.valid, dirs, vis, samples=1), vis.float())
    dx, dy = texel_steps(pts, uv.valid)
    o = (np.arange(16) + 0.5) / 16 - 0.5
    valid = uv.valid.reshape(-1)
    P = pts[0].permute(1, 2, 0).reshape(-1, 3).numpy()[valid]
    DX = dx[0].permute(1, 2, 0).reshape(-1, 3).numpy()[valid]
    DY = dy[0].permute(1, 2, 0).reshape(-1, 3).numpy()[valid]
    for li in range(2):
        d = dirs[li].numpy()
        lit = np.zeros(len(P))
        for ox in o:
            for oy in o:
                q = P + ox * DX + oy * DY                        # the ray starts 1 mm above it (epsilon)
                hit = q[:, [0, 2]] + ((0.05 - 1e-3) / d[1]) * d[[0, 2]]
                lit += _inside_triangle(hit, OCC[:, [0, 2]], 0) < 0
        ref = lit / 256.0
        c = cov[0, li].reshape(-1).numpy()[valid]
        v = vis[0, li].reshape(-1).numpy()[valid].astype(np.float64)
        edge = (ref > 0) & (ref < 1)
        assert edge.sum() > 20
        err_ray, err_cov = np.abs(v - ref)[edge].mean(), np.abs(c - ref)[edge].mean()
        assert err_cov < 0.45 * err_ray, (err_cov, err_ray)
        assert np.abs(c - ref).max() < 0.45                      # 9 rays: never a whole texel off
        inner = np.abs(ref - 0.5) == 0.5                         # fully lit or shadowed texels ...
        assert np.mean(c[inner] == ref[inner]) > 0.98            # ... keep their verdict
        assert ((c > 0) & (c < 1)).sum() > 0.5 * edge.sum()
    with pytest.raises(ValueError, match="samples"):
        key_shadow_coverage(caster, pts, nrm, uv.valid, dirs, vis, samples=0)


def test_coverage_packing_round_trips_per_hand():
    rng = np.random.default_rng(3)
    cov = torch.from_numpy((rng.random((2, 3, 20, 20)) > 0.5).astype(np.float32))
    cov[0, 1, 4, 5], cov[1, 2, 19, 19], cov[1, 0, 0, 0] = 0.25, 0.6, 1.0 / 9
    arrays = pack_coverage(cov)
    assert arrays["key_partial_index"].dtype == np.int32 and arrays["key_partial_index"].size == 3
    back = unpack_coverage(arrays, 20)
    assert torch.allclose(back, cov, atol=0.5 / 255)
    for h in range(2):
        assert torch.allclose(unpack_coverage(arrays, 20, hand=h), cov[h:h + 1], atol=0.5 / 255)
    old = {"key_visibility": arrays["key_visibility"]}           # a set written before coverage: the bits
    assert torch.equal(unpack_coverage(old, 20), (cov >= 0.5).float())


def test_key_light_maps_equal_the_feature_formulas_at_the_texels():
    uv, pts, nrm = _floor(32)
    rng = np.random.default_rng(0)
    K = 5
    dirs = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(K, 3)).astype(np.float32)), dim=-1)
    dirs[:, 1] = dirs[:, 1].abs()
    rgb = torch.from_numpy(rng.uniform(0.1, 2.0, (K, 3)).astype(np.float32))
    vis = torch.from_numpy(rng.random((1, K, 32, 32)) > 0.3)
    origin = np.array([0.03, 0.4, 0.25])
    got = key_light_maps(pts, nrm, vis, dirs, rgb / rgb.sum(0), origin)
    sel = uv.valid.reshape(-1)
    P = pts[0].permute(1, 2, 0).reshape(-1, 3)[torch.from_numpy(sel)]
    N = nrm[0].permute(1, 2, 0).reshape(-1, 3)[torch.from_numpy(sel)]
    V = vis[0].reshape(K, -1)[:, torch.from_numpy(sel)].T
    ref, _, names = lighting_features(P, N, V, dirs, rgb, origin)
    want = torch.cat([ref[0, :, 0:3], ref[0, :, 6:15]], 1)      # diffuse_vis, spec x 3
    g = got[0].permute(1, 2, 0).reshape(-1, 12)[torch.from_numpy(sel)]
    assert torch.allclose(g, want, rtol=1e-4, atol=1e-6)


def test_exclude_lights_removes_only_their_shadowed_part():
    rng = np.random.default_rng(1)
    V, N = 30, 16
    x = torch.from_numpy(rng.normal(size=(1, V, 3)).astype(np.float32)) * 0.05
    n = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(1, V, 3)).astype(np.float32)), dim=-1)
    d = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(N, 3)).astype(np.float32)), dim=-1)
    E = torch.from_numpy(rng.uniform(0.1, 1.0, (N, 3)).astype(np.float32))
    vis = torch.from_numpy(rng.random((1, V, N)) > 0.4)
    full, e1, names = lighting_features(x, n, vis, d, E, [0, 0, 1])
    idx = torch.tensor([2, 7, 11])
    part, e2, _ = lighting_features(x, n, vis, d, E, [0, 0, 1], exclude_lights=idx)
    only, _, _ = lighting_features(x, n, vis & torch.isin(torch.arange(N), idx), d, E, [0, 0, 1])
    assert torch.equal(e1, e2)
    shadowed = [i for i, nm in enumerate(names) if nm.startswith(("diffuse_vis", "spec_"))]
    rest = [i for i in range(len(names)) if i not in shadowed]
    assert torch.allclose(part[..., shadowed] + only[..., shadowed], full[..., shadowed], atol=1e-6)
    assert torch.equal(part[..., rest], full[..., rest])       # ao, novis, normals: every light


def test_key_light_indices_and_bit_packing():
    rgb = np.array([[1, 1, 1], [5, 0, 0], [0, 2, 0], [1, 1, 1], [0, 0, 9]], np.float32)
    # luminance: 1, 1.06, 1.43, 1, 0.65
    assert key_light_indices(rgb, 3).tolist() == [2, 1, 0]
    assert key_light_indices(rgb, 9).tolist() == [2, 1, 0, 3, 4]
    assert key_light_indices(rgb, 0).numel() == 0
    v = torch.from_numpy(np.random.default_rng(2).random((2, 3, 20, 20)) > 0.5)
    assert torch.equal(unpack_visibility(pack_visibility(v), 20), v)


def test_add_key_light_maps_targets_the_named_channels():
    names = ["diffuse_vis_r", "diffuse_vis_g", "diffuse_vis_b", "diffuse_novis_r", "diffuse_novis_g",
             "diffuse_novis_b", "spec_a0.20_r", "spec_a0.20_g", "spec_a0.20_b", "ao"]
    maps = torch.zeros(1, len(names), 4, 4)
    km = torch.arange(1, 7, dtype=torch.float32).reshape(1, 6, 1, 1).expand(1, 6, 4, 4)
    out = add_key_light_maps(maps, names, km, roughness=(0.2,))
    assert out[0, :, 0, 0].tolist() == [1, 2, 3, 0, 0, 0, 4, 5, 6, 0]
    assert maps.abs().sum() == 0                                # a new tensor


def test_engine_key_lights_split_the_light_sum(engine, env):
    from relit_hands.scene import scene_preset

    scene = scene_preset("shadow")
    origin = engine.default_camera(scene, 256, 256).center
    base = engine.lighting_features(scene, env, origin, n_lights=32, resolution=64)
    key = engine.lighting_features(scene, env, origin, n_lights=32, resolution=64, key_lights=4)
    names = base.names
    shadowed = [i for i, nm in enumerate(names) if nm.startswith(("diffuse_vis", "spec_"))]
    rest = [i for i in range(len(names)) if i not in shadowed]
    assert torch.equal(base.maps[:, rest], key.maps[:, rest])
    valid = torch.from_numpy(engine.uv_rasterizer(64).valid)
    d = (key.maps[:, 0:3] - base.maps[:, 0:3]).abs()[:, :, valid]
    # the same quantity (the shadowed diffuse sum) evaluated per texel instead of per vertex for
    # the sun and the 3 next lights: mostly the same, different along shadow edges
    assert 0 < float(d.mean()) < 0.05 * float(base.maps[:, 0:3][:, :, valid].mean())
    assert float((d > 0.05).float().mean()) < 0.05 and float(d.max()) > 0.05
    with pytest.raises(ValueError, match="key_resolution"):
        engine.vertex_features(scene, env, origin, n_lights=32, key_lights=4)


def test_recomputed_set_gives_the_engines_maps(engine, tmp_path):
    from relit_hands.scene import scene_from_dict
    from relit_hands.environment import EnvironmentMap
    from relit_hands.tools.student_data import StudentDataset, make_synthetic_student_set
    from relit_hands.tools.student_features import recompute_features

    src, out = tmp_path / "set", tmp_path / "set_k3"
    make_synthetic_student_set(src, engine, n=2, resolution=64, n_lights=32, seed=5)
    s = recompute_features(src, out, key_lights=3, progress=False)
    assert s["samples"] == 2 and s["key_lights"] == 3
    man = json.loads((out / "manifest.json").read_text())
    assert man["key_lights"] == 3 and man["recomputed_from"] == str(src)
    src_ds, ds = StudentDataset(src, split=None), StudentDataset(out, split=None)
    for i in range(len(ds)):
        si, hi, _ = ds.items[i]
        smp = man["samples"][si]
        assert torch.equal(ds[i]["target"], src_ds[i]["target"])          # the teacher's targets are kept
        assert torch.equal(ds[i]["maps_novis"], src_ds[i]["maps_novis"])
        env = EnvironmentMap.from_name_or_path(smp["env"]["id"]).rotate(smp["env"]["yaw_deg"])
        ref = engine.lighting_features(scene_from_dict(smp["scene"]), env, np.asarray(smp["view_origin"]),
                                       n_lights=32, resolution=64, key_lights=3)
        # float16 per-vertex storage is the only difference
        assert torch.allclose(ds[i]["maps"], ref.maps[hi], atol=2e-3, rtol=2e-3)
    with pytest.raises(Exception, match="input|same"):
        recompute_features(src, src, key_lights=3, progress=False)


def test_recomputed_features_lit_by_the_teachers_basis(engine, tmp_path):
    """A set that names its teacher's light basis gets features lit by that basis (the light set of
    its targets) unless told otherwise; the maps are the engine's under basis_environment."""
    from relit_hands.environment import EnvironmentMap
    from relit_hands.scene import scene_from_dict
    from relit_hands.tools.relight import basis_environment, fixed_light_directions
    from relit_hands.tools.student_data import StudentDataset, StudentDatasetError, make_synthetic_student_set
    from relit_hands.tools.student_features import recompute_features

    src = tmp_path / "set"
    make_synthetic_student_set(src, engine, n=1, resolution=64, n_lights=32, seed=6)
    with pytest.raises(StudentDatasetError, match="basis"):
        recompute_features(src, tmp_path / "no", key_lights=2, lit_by="basis", progress=False)
    man = json.loads((src / "manifest.json").read_text())
    man["teacher"] = {"n_lights": 256}
    (src / "manifest.json").write_text(json.dumps(man))
    s = recompute_features(src, tmp_path / "out", key_lights=2, progress=False)
    assert s["features_lit_by"] == "basis"
    ds = StudentDataset(tmp_path / "out", split=None)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["features_lit_by"] == "basis"
    smp = man["samples"][0]
    env = EnvironmentMap.from_name_or_path(smp["env"]["id"]).rotate(smp["env"]["yaw_deg"])
    scene, origin = scene_from_dict(smp["scene"]), np.asarray(smp["view_origin"])
    ref = engine.lighting_features(scene, basis_environment(env, fixed_light_directions(256)), origin,
                                   n_lights=32, resolution=64, key_lights=2)
    assert torch.allclose(ds[0]["maps"], ref.maps[0], atol=2e-3, rtol=2e-3)
    by_map = engine.lighting_features(scene, env, origin, n_lights=32, resolution=64, key_lights=2)
    assert not torch.allclose(ds[0]["maps"], by_map.maps[0], atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shadow_coverage_cuda_matches_cpu():  # pragma: no cover - GPU machines only (benchmarks/gpu_suite.sh)
    pytest.importorskip("triton")
    uv, pts, nrm = _floor(48)
    dirs = torch.nn.functional.normalize(torch.tensor([[0.3, 1.0, -0.2], [-0.5, 1.0, 0.4]]), dim=-1)
    cpu = _floor_scene("torch")
    want = key_shadow_coverage(cpu, pts, nrm, uv.valid, dirs, texel_key_visibility(cpu, pts, nrm, uv.valid, dirs))
    gpu = _floor_scene("triton", "cuda")
    p, n = pts.cuda(), nrm.cuda()
    got = key_shadow_coverage(gpu, p, n, uv.valid, dirs.cuda(), texel_key_visibility(gpu, p, n, uv.valid, dirs.cuda()))
    assert got.is_cuda
    assert float((got.cpu() - want).abs().mean()) < 1e-3          # rays that graze the occluder's edge may differ
