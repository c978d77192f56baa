"""Image file I/O: HDR (.hdr Radiance RGBE, .exr OpenEXR) and PNG.

Every array crossing this module's API is **RGB(A)** (OpenCV's BGR order is converted here and
nowhere else), row 0 is the top row of the image, and HDR data is linear float32.

Readers raise :class:`ImageReadError` (a ``ValueError``) whose message names the file and the
problem: missing file, unsupported extension, unreadable / corrupt / truncated data, or a wrong
channel count.

Back ends
---------
* ``.hdr`` and ``.png``: OpenCV (``opencv-python-headless``). Before OpenCV decodes a ``.hdr``
  we parse and check the Radiance header ourselves (magic line, ``FORMAT=32-bit_rle_rgbe``,
  resolution line) and afterwards check the decoded size against it, so a file whose header is
  damaged or whose pixel data is cut short is reported, never silently returned as a partial
  image (OpenCV 4.x/5.x already fails on truncated RLE scanlines; the size check is a second
  guard).
* ``.exr``: the official OpenEXR Python bindings (PyPI package ``openexr``, module ``OpenEXR``)
  when installed -- the ``opencv-python-headless`` 5 wheels are built *without* OpenEXR. If the
  bindings are missing we fall back to OpenCV with ``OPENCV_IO_ENABLE_OPENEXR=1`` (works with
  OpenCV builds that include OpenEXR); if neither can, a clear error says what to install.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

import contextlib
import warnings
from pathlib import Path

import cv2
import numpy as np

from .color import linear_to_srgb, srgb_to_linear  # the sRGB transfer functions live in color.py

try:  # official ASWF bindings, PyPI "openexr"
    import OpenEXR as _OpenEXR  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    _OpenEXR = None

__all__ = [
    "ImageReadError",
    "HDR_EXTENSIONS",
    "read_hdr_image",
    "write_hdr_image",
    "read_png",
    "write_png",
    "exr_supported",
    "srgb_to_linear",
    "linear_to_srgb",
    "read_albedo_linear",
]

HDR_EXTENSIONS = (".hdr", ".pic", ".exr")
HALF_MAX = 65504.0
MAX_IMAGE_PIXELS = 8192 * 4096  # largest HDR image read (checked in the header, before decoding)


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the problem."""


# ----------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own error log while we decode (we raise our own, clearer errors)."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None or not hasattr(log, "getLogLevel"):
        yield
        return
    old = log.getLogLevel()
    try:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
        yield
    finally:
        log.setLogLevel(old)


def _check_readable(path: Path, allowed: tuple[str, ...], kind: str) -> str:
    ext = path.suffix.lower()
    if ext not in allowed:
        raise ImageReadError(
            f"{path}: unsupported extension {ext or '(none)'!r} for {kind} images "
            f"(supported: {', '.join(allowed)})"
        )
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    return ext


def _cv_imread(path: Path) -> np.ndarray | None:
    # np.fromfile + imdecode handles any path (non-ASCII too) the same way on every OS.
    data = np.fromfile(str(path), dtype=np.uint8)
    with _quiet_opencv():
        try:
            return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            return None


def _parse_radiance_header(path: Path) -> tuple[int, int, int]:
    """Validate a Radiance (.hdr) header; return (height, width, byte offset of pixel data)."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if not head.startswith(b"#?"):
        raise ImageReadError(f"{path}: not a Radiance HDR file (missing '#?' magic line)")
    # Header: lines until an empty line, then one resolution line.
    end = head.find(b"\n\n")
    if end < 0:
        raise ImageReadError(f"{path}: corrupt or truncated Radiance header (no end of header)")
    fmt = None
    for line in head[:end].split(b"\n")[1:]:
        if line.startswith(b"FORMAT="):
            fmt = line[7:].strip()
    if fmt is not None and fmt != b"32-bit_rle_rgbe":
        raise ImageReadError(
            f"{path}: unsupported Radiance pixel format {fmt.decode(errors='replace')!r} "
            "(only 32-bit_rle_rgbe is supported)"
        )
    res_end = head.find(b"\n", end + 2)
    if res_end < 0:
        raise ImageReadError(f"{path}: corrupt or truncated Radiance header (no resolution line)")
    parts = head[end + 2 : res_end].split()
    try:
        if len(parts) != 4 or parts[0] not in (b"-Y", b"+Y") or parts[2] not in (b"+X", b"-X"):
            raise ValueError
        height, width = int(parts[1]), int(parts[3])
        if height <= 0 or width <= 0:
            raise ValueError
    except ValueError:
        raise ImageReadError(
            f"{path}: corrupt Radiance resolution line {head[end + 2:res_end][:40]!r} "
            "(expected e.g. '-Y 256 +X 512')"
        ) from None
    if height * width > MAX_IMAGE_PIXELS:
        raise ImageReadError(f"{path}: {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels")
    return height, width, res_end + 1


def _read_radiance(path: Path) -> np.ndarray:
    height, width, data_offset = _parse_radiance_header(path)
    size = path.stat().st_size
    # Smallest possible RLE encoding is ~2 bytes per 128-pixel run per channel; any real file
    # needs at least one 4-byte record per scanline.
    if size - data_offset < 4 * height:
        raise ImageReadError(
            f"{path}: truncated Radiance HDR file ({size - data_offset} bytes of pixel data for "
            f"{width}x{height} pixels)"
        )
    img = _cv_imread(path)
    if img is None:
        raise ImageReadError(
            f"{path}: unreadable, corrupt or truncated Radiance HDR pixel data "
            f"(header says {width}x{height})"
        )
    if img.shape[:2] != (height, width):
        raise ImageReadError(
            f"{path}: decoded size {img.shape[1]}x{img.shape[0]} does not match the header's "
            f"{width}x{height} (corrupt or truncated file)"
        )
    if img.ndim != 3 or img.shape[2] != 3:
        raise ImageReadError(f"{path}: expected 3 colour channels, got shape {img.shape}")
    return np.ascontiguousarray(img[..., ::-1], dtype=np.float32)


def _read_exr(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"\x76\x2f\x31\x01":
        raise ImageReadError(f"{path}: not an OpenEXR file (bad magic number)")
    if _OpenEXR is not None:
        try:
            with _OpenEXR.File(str(path), header_only=True) as exr:
                (x0, y0), (x1, y1) = exr.header()["dataWindow"]
        except Exception as e:  # noqa: BLE001 - OpenEXR raises several types on corrupt headers
            raise ImageReadError(f"{path}: unreadable, corrupt or truncated OpenEXR header ({e})") from None
        npx = (int(x1) - int(x0) + 1) * (int(y1) - int(y0) + 1)
        if npx <= 0 or npx > MAX_IMAGE_PIXELS:
            raise ImageReadError(f"{path}: data window of {npx} pixels is outside 1 .. {MAX_IMAGE_PIXELS}")
        try:
            with _OpenEXR.File(str(path), separate_channels=True) as exr:
                channels = exr.channels()
                names = sorted(channels)
                if all(c in channels for c in "RGB"):
                    rgb = [np.asarray(channels[c].pixels, dtype=np.float32) for c in "RGB"]
                else:
                    raise ImageReadError(
                        f"{path}: expected R, G, B channels, found {names} "
                        f"({len(names)} channel(s))"
                    )
        except ImageReadError:
            raise
        except Exception as e:  # OpenEXR raises RuntimeError / ValueError on corrupt data
            raise ImageReadError(f"{path}: unreadable, corrupt or truncated OpenEXR file ({e})") from None
        img = np.stack(rgb, axis=-1)
        if img.ndim != 3:
            raise ImageReadError(f"{path}: unexpected OpenEXR pixel layout {img.shape}")
        return np.ascontiguousarray(img, dtype=np.float32)
    # Fallback: OpenCV (only when its build has OpenEXR).
    img = _cv_imread(path)
    if img is None:
        raise ImageReadError(
            f"{path}: unreadable, corrupt or truncated OpenEXR file (or no OpenEXR reader: "
            "`pip install openexr`)"
        )
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ImageReadError(f"{path}: expected 3 colour channels, got shape {img.shape}")
    return np.ascontiguousarray(img[..., 2::-1], dtype=np.float32)


def exr_supported() -> bool:
    """True when OpenEXR files can be read and written in this environment."""
    if _OpenEXR is not None:
        return True
    return "OpenEXR:                     YES" in cv2.getBuildInformation()


# -------------------------------------------------------------------------------- public API


def read_hdr_image(path) -> np.ndarray:
    """Read a ``.hdr`` (Radiance RGBE) or ``.exr`` (OpenEXR) file.

    Returns linear RGB, float32, shape ``[H, W, 3]``, row 0 = top of the image.
    Raises :class:`ImageReadError` for a missing file, an unsupported extension, corrupt /
    truncated data, or a file without exactly R, G, B colour channels (an alpha channel in an
    EXR is ignored).
    """
    path = Path(path)
    ext = _check_readable(path, HDR_EXTENSIONS, "HDR")
    if ext == ".exr":
        return _read_exr(path)
    return _read_radiance(path)


def _as_rgb_float(img, path, what) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{path}: {what} needs an [H, W, 3] RGB image, got shape {img.shape}")
    return np.asarray(img, dtype=np.float32)


def write_hdr_image(path, img, *, half: bool = False) -> None:
    """Write a linear RGB ``[H, W, 3]`` image as ``.exr`` or ``.hdr``.

    ``.exr``: float32 channels R, G, B (ZIP compression), or float16 when ``half=True`` (values
    beyond the float16 range +-65504 are clamped, with a warning). ``.hdr``: Radiance RGBE with
    run-length encoding; RGBE stores non-negative values only, so negatives are written as 0.
    Non-finite values are rejected for ``.hdr`` (RGBE cannot store them).
    """
    path = Path(path)
    ext = path.suffix.lower()
    img = _as_rgb_float(img, path, "write_hdr_image")
    if ext == ".exr":
        if half:
            big = np.abs(img) > HALF_MAX
            if big.any():
                warnings.warn(
                    f"{path}: {int(big.sum())} values exceed the float16 range; clamped to "
                    f"+-{HALF_MAX}",
                    stacklevel=2,
                )
                img = np.clip(img, -HALF_MAX, HALF_MAX)
            data = img.astype(np.float16)
        else:
            data = img
        if _OpenEXR is not None:
            header = {"compression": _OpenEXR.ZIP_COMPRESSION, "type": _OpenEXR.scanlineimage}
            chans = {c: np.ascontiguousarray(data[..., i]) for i, c in enumerate("RGB")}
            with _OpenEXR.File(header, chans) as exr:
                exr.write(str(path))
            return
        params = [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_HALF if half else cv2.IMWRITE_EXR_TYPE_FLOAT]
        try:
            ok = cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]), params)
        except cv2.error as e:
            raise RuntimeError(
                f"{path}: cannot write OpenEXR (install the `openexr` package): {e}"
            ) from None
        if not ok:
            raise OSError(f"{path}: OpenCV failed to write the OpenEXR file")
        return
    if ext in (".hdr", ".pic"):
        if not np.isfinite(img).all():
            raise ValueError(f"{path}: image has non-finite values; Radiance HDR cannot store them")
        bgr = np.ascontiguousarray(np.maximum(img, 0.0)[..., ::-1])
        ok = cv2.imwrite(str(path), bgr)
        if not ok:
            raise OSError(f"{path}: OpenCV failed to write the Radiance HDR file")
        return
    raise ValueError(f"{path}: unsupported HDR extension {ext or '(none)'!r} (use .exr or .hdr)")


def write_png(path, img) -> None:
    """Write an 8-bit PNG from an RGB / RGBA (or single-channel) image.

    ``img``: ``[H, W, 3]``, ``[H, W, 4]`` or ``[H, W]``; uint8 (written as-is), uint16
    (written as a 16-bit PNG), or float in [0, 1] (clipped, scaled by 255 and rounded; this
    function does no tone mapping or sRGB encoding -- do that before).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: write_png needs a .png file name")
    img = np.asarray(img)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))):
        raise ValueError(f"{path}: write_png needs [H,W], [H,W,3] or [H,W,4], got {img.shape}")
    if img.dtype == np.uint8 or img.dtype == np.uint16:
        data = img
    elif np.issubdtype(img.dtype, np.floating) or img.dtype == bool:
        data = np.rint(np.clip(np.nan_to_num(img.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"{path}: write_png needs uint8, uint16 or float [0,1] data, got {img.dtype}")
    if data.ndim == 3 and data.shape[2] == 3:
        data = data[..., ::-1]
    elif data.ndim == 3 and data.shape[2] == 4:
        data = data[..., [2, 1, 0, 3]]
    ok = cv2.imwrite(str(path), np.ascontiguousarray(data))
    if not ok:
        raise OSError(f"{path}: could not write PNG (does the folder exist?)")


def read_png(path) -> np.ndarray:
    """Read a PNG as RGB ``[H, W, 3]`` or RGBA ``[H, W, 4]`` (uint8, or uint16 for 16-bit files).

    Grey images are expanded to RGB (grey + alpha to RGBA). Raises :class:`ImageReadError`.
    """
    path = Path(path)
    _check_readable(path, (".png",), "PNG")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic != b"\x89PNG\r\n\x1a\n":
        raise ImageReadError(f"{path}: not a PNG file (bad signature)")
    img = _cv_imread(path)
    if img is None:
        raise ImageReadError(f"{path}: unreadable, corrupt or truncated PNG file")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2))
    if img.shape[2] == 2:  # grey + alpha (rare in OpenCV, kept for completeness)
        return np.ascontiguousarray(np.concatenate([img[..., :1]] * 3 + [img[..., 1:]], axis=2))
    if img.shape[2] == 3:
        return np.ascontiguousarray(img[..., ::-1])
    if img.shape[2] == 4:
        return np.ascontiguousarray(img[..., [2, 1, 0, 3]])
    raise ImageReadError(f"{path}: unexpected channel count {img.shape[2]}")


def read_albedo_linear(path) -> np.ndarray:
    """An 8-bit sRGB albedo texture (PNG) -> linear reflectance float32 [H, W, 3] (decoded once)."""
    return srgb_to_linear(read_png(path)[..., :3] / 255.0).astype(np.float32)

