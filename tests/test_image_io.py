"""Tests for relit_hands.image_io: round trips (values, channel order) and clear read errors."""
import os

import numpy as np
import pytest

from relit_hands.image_io import (
    ImageReadError,
    exr_supported,
    read_hdr_image,
    read_png,
    write_hdr_image,
    write_png,
)

needs_exr = pytest.mark.skipif(not exr_supported(), reason="no OpenEXR support (pip install openexr)")


def _ramp(h=32, w=64):
    rng = np.random.default_rng(0)
    img = rng.uniform(0.01, 50.0, (h, w, 3)).astype(np.float32)
    img[0, 0] = [10.0, 1.0, 0.1]  # distinct channels: catches BGR/RGB mix-ups
    return img


def test_hdr_roundtrip_rgb_order_and_precision(tmp_path):
    img = _ramp()
    p = tmp_path / "a.hdr"
    write_hdr_image(p, img)
    back = read_hdr_image(p)
    assert back.dtype == np.float32 and back.shape == img.shape
    # RGBE: 8-bit mantissas sharing the exponent of the pixel's largest channel -> one step is
    # at most 1/128 of that channel (OpenCV truncates instead of rounding).
    step = img.max(axis=-1, keepdims=True) / 128.0
    assert np.all(np.abs(back - img) <= step * 1.001)
    assert back[0, 0, 0] > back[0, 0, 1] > back[0, 0, 2]


def test_hdr_negative_written_as_zero_and_nonfinite_rejected(tmp_path):
    img = _ramp()
    img[1, 1] = -5
    write_hdr_image(tmp_path / "n.hdr", img)
    assert (read_hdr_image(tmp_path / "n.hdr")[1, 1] == 0).all()
    img[2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_hdr_image(tmp_path / "nan.hdr", img)


@needs_exr
def test_exr_roundtrip_float_and_half(tmp_path):
    img = _ramp()
    write_hdr_image(tmp_path / "f.exr", img)
    np.testing.assert_array_equal(read_hdr_image(tmp_path / "f.exr"), img)
    write_hdr_image(tmp_path / "h.exr", img, half=True)
    back = read_hdr_image(tmp_path / "h.exr")
    np.testing.assert_allclose(back, img, rtol=1e-3)
    assert back[0, 0, 0] > back[0, 0, 1] > back[0, 0, 2]


@needs_exr
def test_exr_half_clamps_with_warning(tmp_path):
    img = _ramp()
    img[3, 3] = 1e6
    with pytest.warns(UserWarning, match="float16"):
        write_hdr_image(tmp_path / "c.exr", img, half=True)
    assert read_hdr_image(tmp_path / "c.exr")[3, 3].max() == pytest.approx(65504.0)


def test_png_roundtrip_rgb_rgba_float(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (8, 12, 4), dtype=np.uint8)
    write_png(tmp_path / "rgb.png", rgb)
    write_png(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_png(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(read_png(tmp_path / "rgba.png"), rgba)
    f = np.zeros((4, 4, 3), np.float32)
    f[..., 0] = 1.0
    f[..., 1] = 0.5
    f[..., 2] = 2.0  # clipped
    write_png(tmp_path / "f.png", f)
    np.testing.assert_array_equal(read_png(tmp_path / "f.png")[0, 0], [255, 128, 255])
    with pytest.raises(ValueError):
        write_png(tmp_path / "x.jpg", rgb)


@pytest.mark.parametrize("name", ["missing.hdr", "missing.exr", "missing.png"])
def test_missing_file(tmp_path, name):
    reader = read_png if name.endswith(".png") else read_hdr_image
    with pytest.raises(ImageReadError, match="not found") as ei:
        reader(tmp_path / name)
    assert name in str(ei.value)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "env.jpg"
    p.write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ImageReadError, match="unsupported extension") as ei:
        read_hdr_image(p)
    assert "env.jpg" in str(ei.value)
    assert issubclass(ImageReadError, ValueError)


@pytest.mark.parametrize("frac", [0.5, 0.9, 0.999])
def test_truncated_hdr(tmp_path, frac):
    p = tmp_path / "full.hdr"
    write_hdr_image(p, _ramp(64, 128))
    data = p.read_bytes()
    t = tmp_path / "cut.hdr"
    t.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(ImageReadError, match="truncated") as ei:
        read_hdr_image(t)
    assert "cut.hdr" in str(ei.value)


def test_hdr_broken_header(tmp_path):
    p = tmp_path / "full.hdr"
    write_hdr_image(p, _ramp())
    data = p.read_bytes()
    (tmp_path / "head.hdr").write_bytes(data[:30])  # cut inside the header
    with pytest.raises(ImageReadError, match="head.hdr"):
        read_hdr_image(tmp_path / "head.hdr")
    (tmp_path / "res.hdr").write_bytes(data.replace(b"-Y 32 +X 64", b"-Y 3x +X 64"))
    with pytest.raises(ImageReadError, match="resolution"):
        read_hdr_image(tmp_path / "res.hdr")
    (tmp_path / "size.hdr").write_bytes(data.replace(b"-Y 32 +X 64", b"-Y 40 +X 64"))
    with pytest.raises(ImageReadError, match="size.hdr"):
        read_hdr_image(tmp_path / "size.hdr")


def test_garbage_hdr_and_empty(tmp_path):
    (tmp_path / "g.hdr").write_bytes(os.urandom(2000))
    with pytest.raises(ImageReadError, match="g.hdr"):
        read_hdr_image(tmp_path / "g.hdr")
    (tmp_path / "e.hdr").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_hdr_image(tmp_path / "e.hdr")


def test_garbage_exr(tmp_path):
    p = tmp_path / "garbage.exr"
    p.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ImageReadError, match="garbage.exr"):
        read_hdr_image(p)
    q = tmp_path / "magic.exr"  # right magic number, garbage after it
    q.write_bytes(b"\x76\x2f\x31\x01" + bytes(range(256)) * 8)
    with pytest.raises(ImageReadError, match="magic.exr"):
        read_hdr_image(q)


@needs_exr
def test_truncated_exr(tmp_path):
    p = tmp_path / "full.exr"
    write_hdr_image(p, _ramp(64, 128))
    data = p.read_bytes()
    (tmp_path / "cut.exr").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.exr"):
        read_hdr_image(tmp_path / "cut.exr")


@needs_exr
def test_exr_wrong_channels(tmp_path):
    import OpenEXR

    p = tmp_path / "grey.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Y": np.ones((4, 8), np.float32)}) as f:
        f.write(str(p))
    with pytest.raises(ImageReadError, match="channel") as ei:
        read_hdr_image(p)
    assert "grey.exr" in str(ei.value)


def test_truncated_and_garbage_png(tmp_path):
    p = tmp_path / "ok.png"
    write_png(p, np.full((16, 16, 3), 7, np.uint8))
    data = p.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_png(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="signature"):
        read_png(tmp_path / "junk.png")


def test_write_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        write_hdr_image(tmp_path / "x.hdr", np.zeros((4, 8), np.float32))
    with pytest.raises(ValueError, match="unsupported"):
        write_hdr_image(tmp_path / "x.tif", np.zeros((4, 8, 3), np.float32))
