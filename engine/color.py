"""Colour math, one home: Rec.709 luminance, the sRGB transfer functions and the tone curves of
the frame's tone-mapping pass.

Every function takes a numpy array (or anything ``np.asarray`` accepts) or a torch tensor and
returns the same kind, computed in the input's floating dtype (integer numpy input: float64);
this module imports only numpy (a tensor is recognised through ``sys.modules``, torch is imported
only to handle one). The numbers are the ones of ``shaders/tonemap.frag`` (``tests/test_color.py``
renders a gradient through the GL pass and compares):

* exposure: ``x = max(x, 0) * 2^exposure_ev``;
* tone curve (``TONE_CURVES``): 'none', 'aces' (Narkowicz 2015 fit of the ACES RRT+ODT,
  ``x (2.51 x + 0.03) / (x (2.43 x + 0.59) + 0.14)``, no 0.6 pre-scale) or 'filmic'
  (Hable / Uncharted 2, exposure bias 2, white point 11.2), each clamped to [0, 1];
* sRGB OETF (IEC 61966-2-1): ``12.92 x`` for ``x <= 0.0031308``, else ``1.055 x^(1/2.4) - 0.055``,
  after clamping to [0, 1] (the shader takes the power branch at exactly 0.0031308: the two
  branches meet there to 2e-8);
* 8 bits: ``floor(255 x + 0.5)`` (round half up, as a UNORM8 target).

Why a module of its own and not :mod:`.image_io`: image_io is file I/O (it imports OpenCV and
sets its OpenEXR switch at import); the per-vertex features (torch), the CUDA frame, the viewer's
worker and the evaluation metrics need these formulas, not file I/O. :mod:`.image_io` re-exports
``linear_to_srgb`` / ``srgb_to_linear`` for its callers.
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = [
    "REC709_LUMA",
    "luminance",
    "srgb_to_linear",
    "linear_to_srgb",
    "ACES_NARKOWICZ",
    "aces_narkowicz",
    "hable_filmic",
    "TONE_CURVES",
    "tone_map",
    "to_uint8",
]

#: Rec.709 / sRGB luminance weights of linear (R, G, B), float64 [3] (read-only). They sum to 1.
REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)
REC709_LUMA.flags.writeable = False
_LUMA = tuple(REC709_LUMA.tolist())

#: (a, b, c, d, e) of the Narkowicz ACES fit ``x (a x + b) / (x (c x + d) + e)``.
ACES_NARKOWICZ = (2.51, 0.03, 2.43, 0.59, 0.14)
# Hable / Uncharted 2 filmic curve: A..F, white point W, exposure bias (as in tonemap.frag)
_HABLE = (0.15, 0.50, 0.10, 0.20, 0.02, 0.30)
_HABLE_WHITE = 11.2
_HABLE_EXPOSURE_BIAS = 2.0


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _clamp01(x):
    return x.clamp(0.0, 1.0) if _is_torch(x) else np.clip(x, 0.0, 1.0)


def luminance(rgb):
    """Rec.709 luminance ``0.2126 R + 0.7152 G + 0.0722 B`` of linear ``rgb [..., 3]`` -> ``[...]``.

    numpy: computed in ``result_type(rgb.dtype, float32)`` (float32 input: the weights rounded to
    float32; float64 input: the exact weights); torch: in ``rgb``'s dtype, on its device.
    """
    if _is_torch(rgb):
        import torch

        dtype = rgb.dtype if rgb.is_floating_point() else torch.float32
        return rgb.to(dtype) @ torch.tensor(_LUMA, dtype=dtype, device=rgb.device)
    rgb = np.asarray(rgb)
    return rgb @ REC709_LUMA.astype(np.result_type(rgb.dtype, np.float32))


def srgb_to_linear(c) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear (IEC 61966-2-1), float64 (numpy)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    """Linear values -> sRGB-encoded in [0, 1] (clipped first): the sRGB OETF (module docstring).
    numpy (float64 for non-float input) or torch in, same kind out."""
    if _is_torch(c):
        import torch

        c = c.clamp(0.0, 1.0)
        return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.pow(1 / 2.4) - 0.055)
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def aces_narkowicz(x):
    """ACES filmic fit (Narkowicz 2015) of exposed linear ``x`` -> display-linear in [0, 1]
    (clamped), ``x (2.51 x + 0.03) / (x (2.43 x + 0.59) + 0.14)``; same shape and kind."""
    a, b, c, d, e = ACES_NARKOWICZ
    return _clamp01((x * (a * x + b)) / (x * (c * x + d) + e))


def _hable_partial(v):
    A, B, C, D, E, F = _HABLE
    return ((v * (A * v + C * B) + D * E) / (v * (A * v + B) + D * F)) - E / F


def hable_filmic(x):
    """Hable (Uncharted 2) filmic curve of exposed linear ``x`` -> display-linear in [0, 1]
    (clamped): ``partial(2 x) / partial(11.2)``; same shape and kind."""
    return _clamp01(_hable_partial(_HABLE_EXPOSURE_BIAS * x) / _hable_partial(_HABLE_WHITE))


#: Tone curves by the name the renderers take (``tonemap=``); None = no curve (the OETF clips).
TONE_CURVES = {"none": None, "aces": aces_narkowicz, "filmic": hable_filmic}


def tone_map(x, exposure_ev: float = 0.0, tonemap: str = "aces"):
    """Linear HDR radiance ``x [..., 3]`` -> sRGB-encoded display values in [0, 1], same shape and
    kind: ``linear_to_srgb(curve(max(x, 0) * 2^exposure_ev))`` with ``curve = TONE_CURVES[tonemap]``
    (the compositor's tone-mapping pass; :func:`to_uint8` for its 8-bit output)."""
    if tonemap not in TONE_CURVES:
        raise ValueError(f"tonemap must be one of {sorted(TONE_CURVES)}, got {tonemap!r}")
    scale = 2.0 ** exposure_ev
    x = (x.clamp_min(0) if _is_torch(x) else np.maximum(x, 0.0)) * scale
    curve = TONE_CURVES[tonemap]
    return linear_to_srgb(x if curve is None else curve(x))


def to_uint8(x):
    """Display values in [0, 1] -> uint8 ``floor(255 x + 0.5)`` (numpy or torch, same shape)."""
    y = x * 255.0 + 0.5
    if _is_torch(y):
        import torch

        return y.to(torch.uint8)
    return y.astype(np.uint8)
