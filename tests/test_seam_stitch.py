"""Seam stitching (engine/seam_stitch.py): a texture continuous across the UV seams stays as it
is, a texture that jumps at chart borders becomes continuous (the two UV copies of a seam point
read the same value), chart means stay put, and the torch apply matches the numpy reference in
every layout and precision."""
import numpy as np
import pytest
import torch

from relit_hands import seam_stitch as ss
from relit_hands.hand_model import HandAsset, asset_path
from relit_hands.uv_maps import UVRasterizer

R = 256


@pytest.fixture(scope="module", params=["hand", "hand_v2"])
def asset(request):
    return HandAsset.load(asset_path(request.param))   # a shipped asset (its render mesh's atlas)


@pytest.fixture(scope="module")
def stitcher(asset):
    return ss.seam_stitcher(asset, R)


def bilerp(tex, xy):
    """[C, R, R] numpy texture read bilinearly (clamp to edge) at texel coordinates xy [N, 2] -> [C, N]."""
    idx, w = ss.bilinear_footprint(xy, tex.shape[-1])
    return (tex.reshape(tex.shape[0], -1)[:, idx] * w).sum(-1)


def seam_mismatch(tex, op):
    """|value at the side-A copy - value at the side-B copy| of every seam sample, max over channels."""
    sm = op.samples
    return np.abs(bilerp(tex, sm["xy_a"]) - bilerp(tex, sm["xy_b"])).max(0)


def chart_texture(op, values):
    """[C, R, R]: chart c's texels (and the dilation margin nearest to it) = values[c]."""
    from scipy.ndimage import distance_transform_edt

    dist, (ir, ic) = distance_transform_edt(~op.inside, return_indices=True)
    chart = np.where(dist <= 8, op.chart[ir, ic], -1)
    tex = np.zeros((values.shape[1], R, R))
    tex[:, chart >= 0] = values[chart[chart >= 0]].T
    return tex


def test_seam_edges_of_a_cube_with_one_chart_per_face():
    """A cube (8 vertices, 12 triangles) whose 6 faces are separate UV squares: its 12 edges are
    all seams, and the two UV copies of each edge's vertices are found in the two faces."""
    V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces, uvf, uvs = [], [], []
    for q, (a, b, c, d) in enumerate(quads):
        u0, v0 = 0.05 + 0.3 * (q % 3), 0.1 + 0.45 * (q // 3)
        base = len(uvs)
        uvs += [[u0, v0], [u0 + 0.25, v0], [u0 + 0.25, v0 + 0.25], [u0, v0 + 0.25]]
        faces += [[a, b, c], [a, c, d]]
        uvf += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
    faces, uvf, uvs = np.array(faces), np.array(uvf), np.array(uvs)
    se = ss.seam_edges(faces, uvf)
    assert len(se["vertices"]) == 12                      # the 6 quad diagonals are not cut
    assert (se["vertices"][:, 0] < se["vertices"][:, 1]).all()
    for (v0, v1), ua, ub, fa, fb in zip(se["vertices"], se["uv_a"], se["uv_b"], se["face_a"], se["face_b"]):
        assert fa // 2 != fb // 2
        for v, ia, ib in ((v0, ua[0], ub[0]), (v1, ua[1], ub[1])):
            assert v in faces[fa] and v in faces[fb] and ia != ib
            assert uvf[fa][list(faces[fa]).index(v)] == ia and uvf[fb][list(faces[fb]).index(v)] == ib
    assert len(np.unique(ss.uv_face_charts(uvf))) == 6
    # a constant per face becomes continuous along the edges (away from the 8 corners)
    op = ss.build_stitch_operator(uvs, faces, uvf, 64)
    sm = op.samples
    vals = np.arange(1.0, 7.0)[:, None]
    tex = np.zeros((1, 64, 64))
    tex[:, op.chart >= 0] = vals[op.chart[op.chart >= 0]].T
    out = ss.SeamStitcher(op)(torch.from_numpy(tex)).numpy()
    before, after = seam_mismatch(tex, op), seam_mismatch(out, op)
    mid = np.abs(sm["t"] - 0.5) < 0.3
    assert before[mid].min() >= 1.0 - 1e-9
    assert after[mid].max() < 0.02 * before[mid].min()


def test_a_texture_continuous_across_seams_is_left_nearly_unchanged(asset, stitcher):
    """A smooth function of the rest-pose position baked into UV (the render mesh's barycentric
    interpolation, the dilation margin copies the nearest texel): the stitch moves it by less than
    its variation over one texel. (It is continuous only up to that: a bilinear read at a chart
    border mixes in margin texels, which copy their nearest texel instead of extrapolating.)"""
    op = stitcher.op
    uvr = UVRasterizer(asset.render_uvs, asset.render_uv_faces, R, dilation=8, use_cache=False)
    P = (uvr.bary[..., None] * asset.render_vertices[asset.render_faces[np.maximum(uvr.tri, 0)]]).sum(-2)
    x, y, z = (P[..., i] / 0.1 for i in range(3))                  # ~ unit per 10 cm
    tex = np.stack([1.0 + 0.3 * np.sin(2 * x) * np.cos(y), 1.0 + 0.2 * z + 0.1 * x * x, 0.5 + 0.2 * y], 0)
    tex[:, ~uvr.valid] = 0.0
    out = stitcher(torch.from_numpy(tex)).numpy()
    change = np.abs(out - tex)
    gy, gx = np.gradient(tex, axis=(1, 2))
    per_texel = np.median(np.hypot(gx, gy)[:, op.inside])           # typical change over one texel
    assert change[:, op.inside].mean() < 0.5 * per_texel
    assert np.percentile(change[:, op.inside], 99) < 2.0 * per_texel
    assert change.max() < 2.0 * np.percentile(np.hypot(gx, gy)[:, op.inside], 99)
    assert change.max() < 0.02 * (tex[:, op.inside].max() - tex[:, op.inside].min())
    before, after = seam_mismatch(tex, op), seam_mismatch(out, op)
    assert after.mean() <= before.mean()                             # what little jump there was shrinks


def test_a_texture_constant_per_chart_becomes_continuous(stitcher):
    op = stitcher.op
    rng = np.random.default_rng(0)
    values = rng.uniform(0.5, 1.5, size=(op.chart.max() + 1, 3))
    tex = chart_texture(op, values)
    out = stitcher(torch.from_numpy(tex)).numpy()
    before, after = seam_mismatch(tex, op), seam_mismatch(out, op)
    assert np.median(before) > 0.2                                   # it did jump
    assert np.median(after) < 1e-3 and np.percentile(after, 90) < 0.05
    assert after.mean() < 0.05 * before.mean()
    # the correction dies out inside the charts: far from the seams nothing changes
    far = op.inside & (op.phi == 0)
    assert far.sum() > 0.2 * op.inside.sum()
    np.testing.assert_array_equal(out[:, far], tex[:, far])


def test_chart_means_stay_within_a_few_percent(stitcher):
    """Each side of a seam moves half-way to the other, over a band of a few texels: a chart's mean
    moves by at most half its largest jump times the band's share of its area (a few percent for
    the big charts, more for small ones such as a nail), and the total stays put (the two halves
    of every jump cancel)."""
    op = stitcher.op
    rng = np.random.default_rng(1)
    values = rng.uniform(0.95, 1.05, size=(op.chart.max() + 1, 3))   # jumps of a few percent
    tex = chart_texture(op, values)
    out = stitcher(torch.from_numpy(tex)).numpy()
    for c in range(op.chart.max() + 1):
        sel = op.inside & (op.chart == c)
        moved = np.abs(out[:, sel].mean(1) - tex[:, sel].mean(1))
        nb = np.unique(np.r_[op.samples["chart_b"][op.samples["chart_a"] == c],
                             op.samples["chart_a"][op.samples["chart_b"] == c]])
        jump = np.abs(values[nb] - values[c]).max(0)
        share = (sel & (op.phi > 0)).sum() / sel.sum()
        assert (moved <= 1.1 * 0.5 * jump * share + 1e-9).all(), (c, moved, jump, share)
        if share < 0.75:   # a chart with an interior (hand_v2: all; the old atlas has many slivers)
            np.testing.assert_allclose(out[:, sel].mean(1), tex[:, sel].mean(1), rtol=0.02)
    np.testing.assert_allclose(out[:, op.inside].mean(1), tex[:, op.inside].mean(1), rtol=2e-3)


def test_layouts_precisions_and_batches_agree_with_the_reference(stitcher):
    op = stitcher.op
    g = torch.Generator().manual_seed(0)
    x64 = torch.rand(2, 3, R, R, generator=g, dtype=torch.float64)
    ref = op.apply_numpy(x64.numpy().reshape(6, -1)).reshape(2, 3, R, R)
    x_in = x64.clone()
    out64 = stitcher(x64)
    assert torch.equal(x64, x_in)                                    # the input is not modified
    np.testing.assert_allclose(out64.numpy(), ref, rtol=0, atol=1e-12)
    out32 = stitcher(x64.float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=0, atol=2e-6)
    last = stitcher(x64.float().permute(0, 2, 3, 1).contiguous())    # [H, R, R, 3]
    np.testing.assert_allclose(last.permute(0, 3, 1, 2).numpy(), out32.numpy(), rtol=0, atol=1e-6)
    one = stitcher(x64[1].float())                                    # one hand, [3, R, R]
    np.testing.assert_allclose(one.numpy(), out32[1].numpy(), rtol=0, atol=1e-6)
    one_last = stitcher(x64[0].float().permute(1, 2, 0), channels_last=True)
    np.testing.assert_allclose(one_last.permute(2, 0, 1).numpy(), out32[0].numpy(), rtol=0, atol=1e-6)
    half = stitcher(x64.half())
    assert half.dtype == torch.float16
    np.testing.assert_allclose(half.float().numpy(), ref, rtol=0, atol=3e-3)
    assert (stitcher(x64 - 0.5, clamp_min=0.0) >= 0).all()


def test_shading_space_stitch_with_an_albedo(asset, stitcher):
    """With ``albedo``: the seam target is the average radiance / albedo; a texture = albedo x a
    per-chart shading becomes continuous, and two albedos with the same shading keep their ratio
    exactly (a personalised asset's textures change by its albedo ratio, stitched or not)."""
    op = stitcher.op
    A = asset.albedo_map(R).double()                                  # [3, R, R], continuous across seams
    rng = np.random.default_rng(2)
    shading = chart_texture(op, rng.uniform(0.5, 1.5, size=(op.chart.max() + 1, 3)))
    tex = torch.from_numpy(shading) * A
    out = stitcher(tex, albedo=A)
    ref = tex.numpy() + A.numpy() * (op.apply_numpy((tex / A).numpy().reshape(3, -1)).reshape(3, R, R) - shading)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    last = stitcher(tex.permute(1, 2, 0)[None].float(), albedo=A.permute(1, 2, 0).float())
    np.testing.assert_allclose(last[0].permute(2, 0, 1).numpy(), ref, rtol=0, atol=1e-5)
    both = stitcher(torch.stack([tex, tex]).float(), albedo=A.float())   # [H, 3, R, R], shared albedo
    np.testing.assert_allclose(both[1].numpy(), ref, rtol=0, atol=1e-5)
    before, after = seam_mismatch(tex.numpy(), op), seam_mismatch(out.numpy(), op)
    assert np.median(after) < 0.02 * np.median(before) and after.mean() < 0.1 * before.mean()
    A2 = A * torch.tensor([0.5, 1.0, 0.8], dtype=A.dtype)[:, None, None] * (1 + 0.1 * torch.rand(1, R, R, dtype=A.dtype))
    out2 = stitcher(torch.from_numpy(shading) * A2, albedo=A2)
    np.testing.assert_allclose((out2 / A2).numpy(), (out / A).numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="albedo must be"):
        stitcher(tex, albedo=A[:, :, : R // 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(asset, stitcher):
    x = torch.rand(2, R, R, 3)
    A = asset.albedo_map(R).permute(1, 2, 0).contiguous()
    for kw in ({}, {"albedo": A, "clamp_min": 0.0}):
        cpu = stitcher(x, **kw)
        kw_dev = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        dev = stitcher(x.cuda(), **kw_dev)
        assert dev.device.type == "cuda"
        torch.testing.assert_close(dev.cpu(), cpu, rtol=1e-5, atol=1e-6)


def test_linear_and_cached(asset, stitcher):
    a, b = torch.rand(1, 3, R, R, dtype=torch.float64), torch.rand(1, 3, R, R, dtype=torch.float64)
    torch.testing.assert_close(stitcher(2 * a + b), 2 * stitcher(a) + stitcher(b))
    assert ss.seam_stitcher(asset, R) is stitcher                     # once per layout and R
    assert ss.seam_stitcher(asset.mirrored(), R).op.texel_idx.shape == stitcher.op.texel_idx.shape
    torch.testing.assert_close(ss.stitch_seams(a, asset), stitcher(a))


def test_bad_inputs(stitcher):
    with pytest.raises(ValueError, match="must be"):
        stitcher(torch.zeros(2, 3, R, R // 2))
    with pytest.raises(TypeError, match="floating point"):
        stitcher(torch.zeros(2, 3, R, R, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch tensor"):
        stitcher(np.zeros((2, 3, R, R)))
    with pytest.raises(ValueError, match="channels_first"):
        stitcher(torch.zeros(2, R, R, 3), channels_last=False)
