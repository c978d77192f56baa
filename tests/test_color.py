"""relit_hands.color, the one home of the colour math: the Python tone mapping equals the
compositor's GL tone-mapping pass (shaders/tonemap.frag) for every tone curve it supports, and the
luminance / sRGB functions give the same numbers for numpy and torch."""
import numpy as np
import pytest
import torch

from relit_hands import color


@pytest.fixture(scope="module")
def comp():
    from relit_hands.compositor import Compositor
    try:
        c = Compositor(shadow_map_size=256, msaa=1)
    except RuntimeError as exc:
        pytest.skip(f"no EGL OpenGL context: {exc}")
    yield c
    c.release()


def hdr_gradient():
    """[8, 512, 3] float32: a log ramp 1e-6 .. 1e3 (R), the same ramp shifted for G and B, plus
    exact zeros, negatives and the sRGB linear-segment knee."""
    x = np.geomspace(1e-6, 1e3, 8 * 512)
    img = np.stack([x, np.roll(x, 1365), np.roll(x, 2730)], -1).reshape(8, 512, 3).astype(np.float32)
    img[0, :4] = [[0.0, -1.0, 0.0031308], [-5.0, 0.0, 1.0], [0.0031308, 0.0031, 0.0032], [1e-30, 0.5, 2.0]]
    return img


def test_tone_curves_are_the_compositors():
    from relit_hands.compositor import TONEMAPS
    from relit_hands.viewer.state import TONEMAPS as VIEWER_TONEMAPS
    assert set(color.TONE_CURVES) == set(TONEMAPS) == set(VIEWER_TONEMAPS)


@pytest.mark.parametrize("tonemap", ["none", "aces", "filmic"])
def test_python_tone_map_equals_the_shader(comp, tonemap):
    """Compositor.tone_map runs the frames' own tone-mapping pass on the GPU / llvmpipe (exposure,
    curve, sRGB OETF, UNORM8 target); color.tone_map + to_uint8 gives the same bytes within 1/255."""
    from relit_hands.compositor import TONEMAPS
    assert tonemap in TONEMAPS
    img = hdr_gradient()
    for ev in (-2.5, 0.0, 1.7):
        gl = comp.tone_map(img, exposure_ev=ev, tonemap=tonemap)
        py = color.to_uint8(color.tone_map(img, ev, tonemap))
        assert gl.shape == py.shape == img.shape and gl.dtype == py.dtype == np.uint8
        d = np.abs(gl.astype(np.int16) - py.astype(np.int16))
        assert d.max() <= 1, (tonemap, ev, int(d.max()))
        assert (d == 0).mean() > 0.95, (tonemap, ev, float((d == 0).mean()))
        # the gradient spans the whole output range, so the comparison covers every branch
        assert py.min() == 0 and py.max() == 255


def test_tone_map_numpy_and_torch_agree():
    img = hdr_gradient()
    for tm in color.TONE_CURVES:
        a = color.to_uint8(color.tone_map(img, 0.5, tm))
        b = color.to_uint8(color.tone_map(torch.from_numpy(img), 0.5, tm)).numpy()
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1  # last-bit pow differences
    with pytest.raises(ValueError, match="tonemap"):
        color.tone_map(img, 0.0, "reinhard")


def test_curves_clamp_and_fix_points():
    x = np.array([0.0, 1e-3, 0.18, 1.0, 10.0, 1e6])
    for curve in (color.aces_narkowicz, color.hable_filmic):
        y = curve(x)
        assert y.min() >= 0.0 and y.max() <= 1.0 and np.all(np.diff(y) >= 0)
    assert color.aces_narkowicz(np.array([1e6]))[0] == 1.0
    assert color.hable_filmic(np.array([color._HABLE_WHITE / color._HABLE_EXPOSURE_BIAS]))[0] == pytest.approx(1.0)


def test_srgb_transfer_functions():
    c = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(color.linear_to_srgb(color.srgb_to_linear(c)), c, atol=1e-12)
    np.testing.assert_allclose(color.linear_to_srgb(np.array([-1.0, 2.0])), [0.0, 1.0], atol=1e-15)
    t = torch.from_numpy(c.astype(np.float32))
    np.testing.assert_allclose(color.linear_to_srgb(t).numpy(), color.linear_to_srgb(c.astype(np.float32)),
                               rtol=1e-6, atol=1e-7)  # torch's and numpy's pow may differ in the last bit
    from relit_hands import image_io  # image_io re-exports the same functions
    assert image_io.linear_to_srgb is color.linear_to_srgb and image_io.srgb_to_linear is color.srgb_to_linear


def test_luminance_one_constant_numpy_and_torch():
    from relit_hands import environment, features
    assert color.REC709_LUMA.tolist() == [0.2126, 0.7152, 0.0722] and color.REC709_LUMA.sum() == 1.0
    assert environment.luminance is color.luminance and features.luminance is color.luminance
    rgb = np.random.default_rng(0).random((100, 3))
    np.testing.assert_array_equal(color.luminance(rgb), rgb @ np.array([0.2126, 0.7152, 0.0722]))
    for dt, tdt in ((np.float32, torch.float32), (np.float64, torch.float64)):
        a = color.luminance(rgb.astype(dt))
        b = color.luminance(torch.from_numpy(rgb.astype(dt)))
        assert a.dtype == dt and b.dtype == tdt
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6 if dt == np.float32 else 1e-15)
    assert color.luminance(np.array([1, 1, 1])) == pytest.approx(1.0, abs=1e-15)
