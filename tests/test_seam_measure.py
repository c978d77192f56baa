"""Seam measure (tools/seam_measure.py): the UV band around chart borders, its screen-space
masks, and the ratio detecting a texture that jumps at chart borders."""
import numpy as np
import pytest
import torch

from relit_hands.tools.seam_measure import screen_band_masks, seam_band_texture, seam_ratio


def two_square_charts():
    """Chart A: u, v in [0.125, 0.375]; chart B: u in [0.625, 0.875], same v (two quads)."""
    uvs = np.array([[0.125, 0.125], [0.375, 0.125], [0.375, 0.375], [0.125, 0.375],
                    [0.625, 0.125], [0.875, 0.125], [0.875, 0.375], [0.625, 0.375]], np.float32)
    uv_faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], np.int64)
    return uvs, uv_faces


def test_band_texture_marks_texels_near_chart_borders():
    uvs, uvf = two_square_charts()
    band = seam_band_texture(uvs, uvf, 64, band_px=2)
    # chart A covers texels 8..23 in u and v: its outer 2-texel ring is the band, the 12x12 core not
    assert band[8:24, 8:24].sum() == 16 * 16 - 12 * 12
    assert band[10:22, 10:22].sum() == 0
    assert band[:, 26:38].sum() == 0 and band[30:, :].sum() == 0   # no chart there
    assert band.sum() == 2 * (16 * 16 - 12 * 12)


def test_seam_ratio_on_synthetic_images():
    H, W = 40, 60
    yy, xx = np.mgrid[:H, :W]
    band = np.abs(xx - 30) <= 1
    interior = np.abs(xx - 30) > 4
    smooth = np.repeat((0.2 + 0.005 * xx + 0.003 * yy)[..., None], 3, -1)
    stepped = smooth + 0.2 * (xx >= 30)[..., None]
    assert seam_ratio(smooth, band, interior) == pytest.approx(1.0, rel=0.05)
    assert seam_ratio(stepped, band, interior) > 50
    ref = smooth.copy()
    noisy = smooth + np.where(band[..., None], 0.05, 0.01)
    assert seam_ratio(noisy, band, interior, reference=ref) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="no pixel"):
        seam_ratio(smooth, np.zeros_like(band), interior)


def test_measure_sees_a_texture_that_jumps_at_chart_borders():
    """A texture constant inside each chart but different between charts (what a UV network
    that ignores its neighbours would predict) scores far above the same texture without jumps."""
    from relit_hands.engine import Engine
    from relit_hands.scene import scene_preset
    from relit_hands.tools.semantic_atlas import uv_charts
    from relit_hands.uv_maps import UVRasterizer

    engine = Engine()
    try:
        a = engine.asset
        R = 256
        band_tex = seam_band_texture(a.proxy_uvs, a.proxy_uv_faces, R, 2)
        scene = scene_preset("spread")
        cam = engine.default_camera(scene, 320, 240)
        band, interior = screen_band_masks(engine, scene, cam, band_tex)
        assert band.sum() > 200 and interior.sum() > 2000
        uv = UVRasterizer(a.proxy_uvs, a.proxy_uv_faces, R)
        chart = uv_charts(a.proxy_uv_faces)[np.maximum(uv.tri, 0)]
        # a smooth field of the surface point (continuous across chart borders), and the same
        # with a different offset per chart
        pos = uv.gather(torch.as_tensor(a.proxy_vertices)[None], a.proxy_faces)[0].numpy()   # [3, R, R]
        smooth = 0.5 + 0.2 * np.sin(60.0 * pos[0]) * np.cos(45.0 * pos[2])
        offset = np.random.default_rng(0).uniform(-0.15, 0.15, chart.max() + 1)[chart]
        imgs = {}
        for name, field in (("jumpy", smooth + offset), ("smooth", smooth)):
            tex = np.repeat(field[..., None], 3, -1).astype(np.float32)
            imgs[name] = engine.render(scene, None, cam, shading="uv_texture", radiance_textures={"right": tex},
                                       tonemap="none", background="none", return_linear=True).linear
        smooth_ratio = seam_ratio(imgs["smooth"], band, interior)
        assert 0.3 < smooth_ratio < 3.0
        assert seam_ratio(imgs["jumpy"], band, interior) > 3 * smooth_ratio
    finally:
        engine.release()
