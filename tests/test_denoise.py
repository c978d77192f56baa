"""Training-image denoiser (tools/denoise.py): OIDN with noise-free guides lowers the error of a
noisy HDR render against its clean image, guides come from the engine's own rasterisation, and
bad input is refused with a clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pyoidn")

from relit_hands.tools.denoise import denoise_image, view_guides  # noqa: E402


def _clean_image(n=96):
    """A shaded, textured disc (HDR: a highlight above 1) on black, with its albedo and normal."""
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n * 2 - 1
    r2 = x * x + y * y
    inside = r2 < 0.8
    nz = np.sqrt(np.clip(1 - r2 / 0.8, 0, 1))
    normal = np.stack([x / 0.9, -y / 0.9, nz], -1) * inside[..., None]
    albedo = np.where(((x * 6).astype(int) + (y * 6).astype(int)) % 2 == 0, 0.6, 0.3)
    albedo = np.stack([albedo, albedo * 0.8, albedo * 0.6], -1) * inside[..., None]
    shade = np.clip(normal @ np.array([0.3, 0.5, 0.8]), 0, None)
    img = albedo * shade[..., None] + 3.0 * (shade[..., None] ** 60) * inside[..., None]
    return img.astype(np.float32), albedo.astype(np.float32), normal.astype(np.float32), inside


def test_denoise_lowers_the_error_of_a_noisy_render():
    img, alb, nrm, inside = _clean_image()
    rng = np.random.default_rng(0)
    noisy = (img * rng.gamma(4.0, 0.25, size=img.shape)).astype(np.float32)   # mean-preserving, 50 % noise
    e_raw = float(((noisy - img)[inside] ** 2).mean())
    e_plain = float(((denoise_image(noisy) - img)[inside] ** 2).mean())
    e_guided = float(((denoise_image(noisy, alb, nrm) - img)[inside] ** 2).mean())
    assert e_plain < 0.5 * e_raw and e_guided < 0.5 * e_raw, (e_raw, e_plain, e_guided)
    out = denoise_image(noisy, alb, nrm)
    assert out.dtype == np.float32 and out.shape == img.shape and (out >= 0).all()
    # the mean radiance is kept (no darkening / brightening bias beyond a few per cent)
    assert abs(out[inside].mean() / img[inside].mean() - 1) < 0.05


def test_denoise_refuses_bad_input():
    img, alb, nrm, _ = _clean_image(32)
    bad = img.copy()
    bad[3, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        denoise_image(bad)
    with pytest.raises(ValueError, match="does not match"):
        denoise_image(img, alb[:16])
    with pytest.raises(ValueError, match="albedo"):
        denoise_image(img, None, nrm)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        denoise_image(img[..., 0])


def test_view_guides_are_the_asset_albedo_and_unit_normals_on_hand_pixels():
    from relit_hands.engine import Engine
    from relit_hands.scene import scene_preset
    from relit_hands.tools.teacher_inputs import TexelConditioning
    from relit_hands.tools.teacher_training import view_lookup

    eng = Engine()
    scene = scene_preset("clasp")
    cam = eng.default_camera(scene, 64, 64)
    lk = view_lookup(eng, scene, cam)
    geo = TexelConditioning(eng, 64).geometry(scene)
    albedo = eng.asset.albedo_map(64)
    a, n = view_guides(lk, albedo, geo.normal)
    assert a.shape == n.shape == (64, 64, 3)
    hand = np.zeros(64 * 64, bool)
    hand[lk.pix.numpy()] = True
    hand = hand.reshape(64, 64)
    assert (a[~hand] == 0).all() and (n[~hand] == 0).all()
    assert (a[hand] >= 0).all() and (a[hand] <= 1).all() and a[hand].mean() > 0.05
    assert np.allclose(np.linalg.norm(n[hand], axis=-1), 1, atol=1e-3)
