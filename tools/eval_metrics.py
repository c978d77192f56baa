"""Metric definitions of the evaluation harness: PSNR (linear and display), SSIM and HDR-FLIP on the hand
pixels of one reference / test pair, under the fixed settings of one evaluation (the conventions are in
the docstring of :mod:`relit_hands.tools.evaluate`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from relit_hands.color import ACES_NARKOWICZ, REC709_LUMA, linear_to_srgb

from .eval_renderers import EvaluationError

PSNR_CAP_DB = 100.0
PEAK_PERCENTILE = 99.5
FLIP_HI_PERCENTILE = 99.9
FLIP_PPD = 67.0
FLIP_PAD = 48          # zero border around the cropped hand for FLIP (> its filter radius at 67 ppd)
SSIM_SIGMA = 1.5
SSIM_PAD = 8           # zero border for SSIM (Gaussian window radius 5)
LPIPS_NOTE = ("not available: needs torchvision + downloaded AlexNet/VGG weights, neither installable "
              "here (no CPU torchvision build, no weight downloads); no look-alike substitute is used")


# ======================================================================================
# Metrics


@dataclass
class MetricSettings:
    """The fixed conventions of one evaluation (see :mod:`relit_hands.tools.evaluate`)."""

    peak: float
    flip_start_exposure: float | None = None
    flip_stop_exposure: float | None = None
    flip_num_exposures: int | None = None
    flip_ppd: float = FLIP_PPD
    peak_source: str = "given"

    def flip_parameters(self) -> dict:
        p = {"ppd": float(self.flip_ppd), "tonemapper": "ACES"}
        if self.flip_start_exposure is not None:
            p["startExposure"] = float(self.flip_start_exposure)
            p["stopExposure"] = float(self.flip_stop_exposure)
            p["numExposures"] = int(self.flip_num_exposures)
        return p


def _aces_xmax(target: float = 0.85) -> float:
    """The (exposed) ACES input that maps to ``target``: FLIP's x_max (same coefficients as FLIP)."""
    A, B, C, D, E = ACES_NARKOWICZ
    tc = (0.6 * 0.6 * A, 0.6 * B, 0.0, 0.6 * 0.6 * C, 0.6 * D, E)
    a, b, c = tc[0] - target * tc[3], tc[1] - target * tc[4], tc[2] - target * tc[5]
    return max(0.0, (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))


def reference_settings(hand_values: np.ndarray, *, peak: float | None = None) -> MetricSettings:
    """Fixed settings from the pooled reference hand pixels ``[N, 3]`` of the whole evaluated set."""
    v = np.asarray(hand_values, np.float64).reshape(-1, 3)
    if v.size == 0:
        raise EvaluationError("the evaluated set has no hand pixels in its reference masks")
    source = "given (--peak)"
    if peak is None:
        peak = float(np.percentile(v, PEAK_PERCENTILE))
        source = f"P{PEAK_PERCENTILE} of reference hand pixel values (R,G,B pooled) over the evaluated set"
    if not (peak > 0 and math.isfinite(peak)):
        raise EvaluationError(f"peak must be a positive number, got {peak}")
    y = np.maximum(v @ REC709_LUMA, 0.0)
    y_hi = float(np.percentile(y, FLIP_HI_PERCENTILE))
    y_med = float(np.median(y))
    xmax = _aces_xmax()
    y_hi = max(y_hi, 1e-8)
    y_med = min(max(y_med, 1e-8), y_hi)
    start, stop = math.log2(xmax / y_hi), math.log2(xmax / y_med)
    n = max(2, int(math.ceil(stop - start)))
    return MetricSettings(peak=float(peak), flip_start_exposure=start, flip_stop_exposure=stop,
                          flip_num_exposures=n, peak_source=source)


def _hand(mask) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    return m > 0


def interior_hand_mask(mask) -> np.ndarray:
    """[H, W] bool: the hand pixels of a reference mask (0 background, 1 / 2 the hands) whose eight
    neighbours carry the same hand label -- the mask without its one-pixel silhouette ring.

    Why. The path tracer box-filters each pixel, so a pixel on a hand's silhouette averages the hand
    with whatever lies behind it (the environment, the other hand), while the mask marks it as hand
    when its centre ray hits one. Against a bright background (a soft box behind the hand) those
    pixels are far off for every renderer that draws the hand alone; the interior figures leave them
    out. Pixels on the image border count as silhouette."""
    from scipy.ndimage import maximum_filter, minimum_filter

    lab = np.asarray(mask)
    if lab.ndim == 3:
        lab = lab[..., 0]
    lab = lab.astype(np.int16)
    same = (minimum_filter(lab, 3, mode="constant", cval=0) == lab) & \
        (maximum_filter(lab, 3, mode="constant", cval=0) == lab)
    return same & (lab > 0)


def _check_pair(ref, test, mask):
    ref = np.asarray(ref, np.float32)
    test = np.asarray(test, np.float32)
    m = _hand(mask)
    if ref.shape != test.shape or ref.ndim != 3 or ref.shape[2] != 3 or m.shape != ref.shape[:2]:
        raise ValueError(f"metric inputs must be [H,W,3] pairs with an [H,W] mask, got {ref.shape}, "
                         f"{test.shape}, {m.shape}")
    return ref, test, m


def _psnr(mse: float, peak: float) -> float:
    if mse <= 0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * math.log10(peak * peak / mse)))


def psnr_linear(ref, test, mask, peak: float) -> float:
    """PSNR in linear HDR on hand pixels: both clipped to [0, peak], ``10 log10(peak^2/MSE)``, capped
    at 100 dB."""
    ref, test, m = _check_pair(ref, test, mask)
    if not m.any():
        return float("nan")
    return _psnr(_mse_linear(ref, test, m, peak), peak)


def _mse_linear(ref, test, m, peak: float) -> float:
    """MSE over the hand pixels ``m`` x RGB of both images clipped to [0, peak] (float64)."""
    a = np.clip(ref[m], 0, peak).astype(np.float64)
    b = np.clip(test[m], 0, peak).astype(np.float64)
    return float(np.mean((a - b) ** 2))


def display_transform(x, peak: float) -> np.ndarray:
    """``D(x) = sRGB_OETF(clip(x / peak, 0, 1))``: one fixed exposure, float32 in [0, 1]."""
    return linear_to_srgb(np.asarray(x, np.float32) / np.float32(peak)).astype(np.float32)


def psnr_display(ref, test, mask, peak: float) -> float:
    """PSNR of the display-transformed images on hand pixels (range 1), capped at 100 dB."""
    ref, test, m = _check_pair(ref, test, mask)
    if not m.any():
        return float("nan")
    a = display_transform(ref[m], peak).astype(np.float64)
    b = display_transform(test[m], peak).astype(np.float64)
    return _psnr(float(np.mean((a - b) ** 2)), 1.0)


def _crop_zero(images, m: np.ndarray, pad: int):
    """Crop images to the mask's bounding box, zero outside the mask, add a zero border of ``pad``."""
    rows, cols = np.nonzero(m)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    mc = m[r0:r1, c0:c1]
    out = []
    for im in images:
        c = np.where(mc[..., None], im[r0:r1, c0:c1], 0.0).astype(np.float32)
        out.append(np.pad(c, ((pad, pad), (pad, pad), (0, 0))))
    return out, np.pad(mc, pad), (r0, r1, c0, c1)


def ssim_masked(ref, test, mask, peak: float, *, return_map: bool = False):
    """SSIM (scikit-image) on the display-transformed images, outside-hand pixels zeroed in both,
    cropped to the hand with a zero border; the SSIM map averaged over hand pixels."""
    from skimage.metrics import structural_similarity

    ref, test, m = _check_pair(ref, test, mask)
    if not m.any():
        return (float("nan"), None) if return_map else float("nan")
    (a, b), mc, box = _crop_zero([display_transform(ref, peak), display_transform(test, peak)], m, SSIM_PAD)
    _, smap = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                    sigma=SSIM_SIGMA, use_sample_covariance=False, full=True)
    smap = smap.mean(axis=-1)
    val = float(np.mean(smap[mc]))
    if return_map:
        return val, (smap[SSIM_PAD:-SSIM_PAD, SSIM_PAD:-SSIM_PAD], box)
    return val


def flip_available() -> str | None:
    """The flip-evaluator version, or None when it is not installed."""
    try:
        import importlib.metadata as md

        import flip_evaluator  # noqa: F401

        return md.version("flip-evaluator")
    except Exception:
        return None


def flip_masked(ref, test, mask, settings: MetricSettings, *, return_map: bool = False):
    """Mean HDR-FLIP error over hand pixels (fixed exposure range from ``settings``).

    Returns the mean (and, with ``return_map``, the full-size float32 error map, 0 outside the hand).
    """
    import flip_evaluator as flip

    ref, test, m = _check_pair(ref, test, mask)
    if not m.any():
        return (float("nan"), None) if return_map else float("nan")
    (a, b), mc, (r0, r1, c0, c1) = _crop_zero([np.maximum(ref, 0), np.maximum(test, 0)], m, FLIP_PAD)
    emap, _, _ = flip.evaluate(np.ascontiguousarray(a), np.ascontiguousarray(b), "HDR", applyMagma=False,
                               computeMeanError=False, parameters=settings.flip_parameters())
    emap = np.asarray(emap, np.float32).reshape(mc.shape)
    val = float(np.mean(emap[mc]))
    if not return_map:
        return val
    full = np.zeros(m.shape, np.float32)
    inner = emap[FLIP_PAD:-FLIP_PAD, FLIP_PAD:-FLIP_PAD]
    full[r0:r1, c0:c1] = np.where(m[r0:r1, c0:c1], inner, 0.0)
    return val, full


def compute_metrics(ref, test, mask, settings: MetricSettings, *, flip: bool | None = None,
                    return_flip_map: bool = False) -> dict:
    """Every metric of one reference / test pair (hand pixels only)."""
    ref, test, m = _check_pair(ref, test, mask)
    mse = _mse_linear(ref, test, m, settings.peak) if m.any() else float("nan")
    out = {
        "hand_pixels": int(m.sum()),
        "mse_linear": mse,
        "psnr_linear": _psnr(mse, settings.peak) if m.any() else float("nan"),
        "psnr_display": psnr_display(ref, test, m, settings.peak),
        "ssim": ssim_masked(ref, test, m, settings.peak),
    }
    use_flip = flip_available() is not None if flip is None else flip
    fmap = None
    if use_flip:
        if return_flip_map:
            out["flip"], fmap = flip_masked(ref, test, m, settings, return_map=True)
        else:
            out["flip"] = flip_masked(ref, test, m, settings)
    else:
        out["flip"] = None
    out["lpips"] = None
    if return_flip_map:
        return out, fmap
    return out


# nan- and None-skipping mean of metric values (aggregates in evaluate, plots in eval_report)
def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else None
