"""UV feature maps: convention, exact linear reproduction, coverage, seam dilation, cache."""
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from relit_hands import uv_maps as um
from synthetic import synthetic_uv_sphere


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mesh():
    return synthetic_uv_sphere(16, 28)


def test_synthetic_sphere_is_watertight_with_seams(mesh):
    import trimesh
    v, f, uv, uvf = mesh
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight and m.is_winding_consistent and m.volume > 0
    assert uvf.shape == f.shape and uv.shape[0] > v.shape[0]  # separate UV topology


def test_texel_centre_convention_quad():
    # one quad over [0,1]^2 whose "position" is its uv: gathered value = texel centre uv
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    R = 16
    r = um.UVRasterizer(uv, f, R, dilation=0)
    assert r.mask.all()
    feat = torch.from_numpy(np.concatenate([uv, np.ones((4, 1), np.float32)], 1))
    out = r.gather(feat, f)[0]
    col = (np.arange(R) + 0.5) / R
    np.testing.assert_allclose(out[0].numpy(), np.tile(col, (R, 1)), atol=1e-6)        # u: col
    np.testing.assert_allclose(out[1].numpy(), np.tile(col[:, None], (1, R)), atol=1e-6)  # v: row
    np.testing.assert_allclose(out[2].numpy(), 1.0, atol=1e-6)                      # partition


def test_single_triangle_coverage_matches_brute_force():
    uv = np.array([[0.1, 0.2], [0.85, 0.3], [0.4, 0.9]], np.float32)
    R = 64
    r = um.UVRasterizer(uv, np.array([[0, 1, 2]]), R, dilation=0, use_cache=False)
    c = (np.arange(R) + 0.5) / R
    U, Vv = np.meshgrid(c, c)  # rows = v
    a, b, cc = uv.astype(np.float64)

    def side(p, q):
        return (q[0] - p[0]) * (Vv - p[1]) - (q[1] - p[1]) * (U - p[0])
    s = [side(a, b), side(b, cc), side(cc, a)]
    inside = ((s[0] >= 0) & (s[1] >= 0) & (s[2] >= 0)) | ((s[0] <= 0) & (s[1] <= 0) & (s[2] <= 0))
    assert np.array_equal(r.mask, inside)


@pytest.mark.parametrize("R", [128, 256])
def test_linear_function_reproduced_exactly(mesh, R):
    v, f, uv, uvf = mesh
    r = um.UVRasterizer(uv, uvf, R)
    coef = np.array([0.7, -1.3, 2.1], np.float32)
    d0 = 0.25
    lin = v @ coef + d0                                      # per-vertex linear function
    feats = torch.from_numpy(np.concatenate([lin[:, None], v], 1)).float()[None]  # [1,V,4]
    feats = torch.cat([feats, 2 * feats])                     # two "hands"
    maps = r.gather(feats, f)
    assert maps.shape == (2, 4, R, R)
    cov = r.mask
    tri, bary = r.tri[cov], r.bary[cov]
    pos = (v[f[tri]] * bary[..., None]).sum(1)                # 3-D position, same barycentrics
    got_pos = maps[0, 1:, cov].T.numpy()
    np.testing.assert_allclose(got_pos, pos, atol=1e-6)
    np.testing.assert_allclose(maps[0, 0, cov].numpy(), pos @ coef + d0, atol=1e-5)
    np.testing.assert_allclose(maps[1].numpy(), 2 * maps[0].numpy(), atol=1e-6)
    # barycentrics are a partition of unity, inside [0,1]
    assert np.allclose(r.bary[r.valid].sum(-1), 1, atol=1e-6) and r.bary.min() >= 0
    # on the sphere every texel point lies at radius <= 0.05 and >= inscribed radius
    rad = np.linalg.norm(pos, axis=1)
    assert rad.max() <= 0.05 + 1e-6 and rad.min() > 0.05 * 0.97


def test_dilation_fills_every_texel_within_radius(mesh):
    v, f, uv, uvf = mesh
    R, D = 256, 8
    r = um.UVRasterizer(uv, uvf, R, dilation=D)
    dist = distance_transform_edt(~r.mask)
    assert np.array_equal(r.valid, dist <= D)                 # no hole within D, none beyond
    assert r.mask.sum() > 0.5 * R * R and (~r.valid).any()   # the atlas has margins & a gap
    # the seam gap between the two charts (u ~ 0.5) is filled
    assert r.valid[24:R - 24, R // 2].all() and not r.mask[:, R // 2].any()
    # a dilated texel carries the lookup of its nearest covered texel
    _, (ir, ic) = distance_transform_edt(~r.mask, return_indices=True)
    ring = r.valid & ~r.mask
    assert np.array_equal(r.tri[ring], r.tri[ir[ring], ic[ring]])
    feats = torch.rand(1, v.shape[0], 2)
    maps = r.gather(feats, f)
    assert (maps[0][:, ~r.valid] == 0).all()
    assert torch.equal(maps[0][:, torch.from_numpy(ring)],
                       maps[0][:, torch.from_numpy(ir[ring]), torch.from_numpy(ic[ring])])


def test_disk_cache_and_convenience(mesh, tmp_path):
    v, f, uv, uvf = mesh
    r1 = um.UVRasterizer(uv, uvf, 128)
    assert not r1.loaded_from_cache and r1.cache_path.is_file()
    assert str(r1.cache_path).startswith(str(tmp_path / "cache"))
    r2 = um.UVRasterizer(uv, uvf, 128)
    assert r2.loaded_from_cache
    assert np.array_equal(r1.tri, r2.tri) and np.array_equal(r1.bary, r2.bary)
    assert np.array_equal(r1.mask, r2.mask)
    r3 = um.UVRasterizer(uv, uvf, 64)
    assert r3.cache_path != r1.cache_path
    feats = torch.rand(2, v.shape[0], 5)
    maps, mask = um.uv_feature_maps(feats, f, uv, uvf, 128)
    assert torch.equal(maps, r1.gather(feats, f)) and torch.equal(mask, torch.from_numpy(r1.mask))
    c = r1.gather(feats, f, contiguous=True)
    assert c.is_contiguous() and torch.equal(c, maps)
    with pytest.raises(ValueError):
        r1.gather(feats, f[:-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gather_cuda_matches_cpu(mesh):  # pragma: no cover - GPU machines only
    v, f, uv, uvf = mesh
    r = um.UVRasterizer(uv, uvf, 256)
    feats = torch.rand(2, v.shape[0], 7)
    torch.testing.assert_close(r.gather(feats.cuda(), torch.as_tensor(f).cuda()).cpu(),
                               r.gather(feats, f))
