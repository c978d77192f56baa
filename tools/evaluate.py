"""Evaluation harness: renderers of the engine against the path-traced frames of a capture.

    relit-hands eval --capture captures/lightstage --renderer pbr pbr_noshadow --out docs/eval_pbr

renders every held-out environment-lit frame of a light-stage capture (same poses, cameras,
environments and rotations) with each named renderer and compares it with the path-traced
reference on the hand pixels. Output folder: ``report.md`` (the exact command at the top,
settings, tables, plots, comparison grids), ``metrics.json`` (every number: per frame, per camera,
per renderer, aggregates, settings, versions, date), ``per_frame.png`` and ``grid_<renderer>.png``.

Renderers are pluggable. A *renderer* is a callable
``(frame: CaptureFrame, camera: Camera, env: EnvironmentMap) -> float32 [H, W, 3]`` linear
radiance (it may also return ``(radiance, hand_mask)`` or an engine :class:`~relit_hands.engine.Frame`;
a returned mask only feeds the silhouette IoU diagnostic, metrics always use the reference mask).
Register one with::

    from relit_hands.tools.evaluate import register_renderer
    register_renderer("student", lambda ctx: StudentRenderer(ctx.engine, ...), "neural student (UV CNN)")

The factory receives an :class:`EvalContext` (``.capture``, a lazily created shared ``.engine``)
and is called once per evaluation. Modules can also be loaded with ``--plugin MODULE`` or expose an
entry point in the group ``relit_hands.renderers`` (``name = module:factory``). Built-ins:
``pbr`` (the physically based baseline with shadow maps) and ``pbr_noshadow``.

Metric conventions (one for every renderer, frame and camera; nothing is rescaled per image):

* **Hand pixels** = the reference mask of the capture (``mask > 0``, either hand). Before SSIM
  and FLIP the pixels outside it are set to 0 in *both* images and the images are cropped to the
  mask's bounding box with a zero border, so nothing outside the hand can change a number.
* **peak** = the 99.5th percentile of the reference hand-pixel values (R, G, B pooled) over the
  *whole evaluated set* (all selected frames and cameras), fixed before any renderer runs
  (``--peak`` overrides it; the value is in the report and the JSON).
* **PSNR (linear HDR, primary)**: both images clipped to ``[0, peak]``, MSE over the hand pixels
  and the three channels, ``PSNR = 10 log10(peak^2 / MSE)``, capped at 100 dB (identical images).
* **Display transform** ``D(x) = sRGB_OETF(clip(x / peak, 0, 1))`` -- one fixed exposure for the
  whole set. **PSNR (display)** is the same formula on ``D`` (range 1); **SSIM** is scikit-image's
  ``structural_similarity`` on ``D`` (Gaussian window sigma 1.5, data range 1, K1 0.01, K2 0.03,
  per RGB channel), its full map averaged over the hand pixels. The comparison grids show ``D``.
* **FLIP**: NVIDIA HDR-FLIP (``flip-evaluator``) on the linear images, 67 pixels per degree, ACES
  tone mapper, with the exposure range fixed for the whole set by FLIP's own rule applied to the
  pooled reference hand luminance: ``start = log2(x_max / Y_hi)``, ``stop = log2(x_max / Y_median)``
  (``Y_hi`` = 99.9th percentile instead of FLIP's per-image maximum, robust to path-tracing
  fireflies), ``x_max`` the ACES input that maps to 0.85. The error map is averaged over hand pixels.
* **LPIPS**: not available -- it needs torchvision and downloaded AlexNet/VGG weights, neither
  installable on the project's machines; no look-alike is substituted.
* **Global scale (diagnostic, never applied)**: the least-squares factor ``s`` minimising
  ``|ref - s * test|^2`` over all hand pixels of the set (overall and per channel) tells whether a
  renderer is globally too bright / dark or tinted.

Frames marked for training are refused (:class:`EvaluationError`); by default every held-out
environment frame is evaluated.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from relit_hands.image_io import linear_to_srgb
from relit_hands.validation import OutputFolder, finite_float, int_range, write_atomic, write_text_atomic

__all__ = [
    "EvaluationError", "EvalContext", "MetricSettings", "RendererSpec", "register_renderer",
    "available_renderers", "get_renderer_spec", "select_frames", "reference_settings",
    "display_transform", "psnr_linear", "psnr_display", "ssim_masked", "flip_masked", "flip_available",
    "compute_metrics", "evaluate", "add_arguments", "run_from_args", "main", "LPIPS_NOTE",
]

PSNR_CAP_DB = 100.0
PEAK_PERCENTILE = 99.5
FLIP_HI_PERCENTILE = 99.9
FLIP_PPD = 67.0
FLIP_PAD = 48          # zero border around the cropped hand for FLIP (> its filter radius at 67 ppd)
SSIM_SIGMA = 1.5
SSIM_PAD = 8           # zero border for SSIM (Gaussian window radius 5)
ENGINE_KWARGS: dict = {}  # default Engine(**kwargs) of EvalContext (e.g. {"shadow_map_size": 2048})
LPIPS_NOTE = ("not available: needs torchvision + downloaded AlexNet/VGG weights, neither installable "
              "here (no CPU torchvision build, no weight downloads); no look-alike substitute is used")
REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float64)


class EvaluationError(ValueError):
    """A request the harness refuses: train-split frames, unknown renderers/frames/cameras, bad output."""


# ======================================================================================
# Renderer registry

Renderer = Callable[..., Any]


@dataclass
class RendererSpec:
    name: str
    factory: Callable[["EvalContext"], Renderer]
    description: str = ""


_REGISTRY: dict[str, RendererSpec] = {}
_ENTRY_POINTS_LOADED = False


def register_renderer(name: str, factory: Callable[["EvalContext"], Renderer], description: str = "", *,
                      overwrite: bool = False) -> None:
    """Make renderer ``name`` available to the harness. ``factory(ctx: EvalContext)`` returns the
    renderer callable ``(frame, camera, env) -> float32 [H, W, 3]`` linear radiance."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"renderer name must be a non-empty word, got {name!r}")
    if not callable(factory):
        raise ValueError(f"renderer {name!r}: factory must be callable")
    if name in _REGISTRY and not overwrite and _REGISTRY[name].factory is not factory:
        raise ValueError(f"renderer {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = RendererSpec(name, factory, description)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="relit_hands.renderers"):
            if ep.name not in _REGISTRY:
                try:
                    register_renderer(ep.name, ep.load(), f"entry point {ep.value}")
                except Exception as e:  # a broken plugin must not break the built-ins
                    print(f"relit-hands eval: warning: renderer plugin {ep.name!r} failed to load: {e}",
                          file=sys.stderr)
    except Exception:
        pass


def available_renderers() -> dict[str, str]:
    """{name: description} of every registered renderer (built-ins, plugins, entry points)."""
    _load_entry_points()
    return {n: s.description for n, s in _REGISTRY.items()}


def get_renderer_spec(name: str) -> RendererSpec:
    _load_entry_points()
    if name not in _REGISTRY:
        raise EvaluationError(f"unknown renderer {name!r}; available: {', '.join(_REGISTRY) or '(none)'}")
    return _REGISTRY[name]


class EvalContext:
    """What a renderer factory gets: the ``capture`` and one shared :class:`Engine` (``.engine``,
    created on first use with ``engine_kwargs``)."""

    def __init__(self, capture=None, **engine_kwargs):
        self.capture = capture
        self.engine_kwargs = engine_kwargs
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            from ..engine import Engine

            self._engine = Engine(**self.engine_kwargs)
        return self._engine

    def release(self):
        if self._engine is not None:
            self._engine.release()
            self._engine = None


class EngineRenderer:
    """The engine's physically based baseline as a harness renderer (hands only, no background)."""

    def __init__(self, engine, *, shading: str = "pbr", shadows: bool = True):
        self.engine, self.shading, self.shadows = engine, shading, shadows

    def __call__(self, frame, camera, env):
        return self.engine.render(frame.scene, env, camera, shading=self.shading, shadows=self.shadows,
                                  return_linear=True, background="none")


register_renderer("pbr", lambda ctx: EngineRenderer(ctx.engine, shadows=True),
                  "physically based baseline: GGX + prefiltered env + shadow-mapped dominant lights")
register_renderer("pbr_noshadow", lambda ctx: EngineRenderer(ctx.engine, shadows=False),
                  "physically based baseline without shadows")


def _as_radiance(out, shape) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise a renderer's return value to (float32 [H,W,3], optional bool mask)."""
    mask = None
    if hasattr(out, "linear"):
        mask = getattr(out, "mask", None)
        out = out.linear
        if out is None:
            raise EvaluationError("renderer returned a frame without linear radiance (return_linear=True)")
    elif isinstance(out, (tuple, list)):
        out, mask = out[0], (out[1] if len(out) > 1 else None)
    img = np.asarray(out, dtype=np.float32)
    if img.shape != tuple(shape):
        raise EvaluationError(f"renderer output has shape {img.shape}, the reference {tuple(shape)}")
    if not np.isfinite(img).all():
        raise EvaluationError("renderer output has NaN or infinite values")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != tuple(shape[:2]):
            mask = None
    return img, mask


# ======================================================================================
# Metrics


@dataclass
class MetricSettings:
    """The fixed conventions of one evaluation (see the module docstring)."""

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
    tc = (0.6 * 0.6 * 2.51, 0.6 * 0.03, 0.0, 0.6 * 0.6 * 2.43, 0.6 * 0.59, 0.14)
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


# ======================================================================================
# Frames and splits


def _subset(frame) -> str:
    return "single_hand" if len(frame.scene.hands) == 1 else "two_hands"


def guard_evaluation_maps(frames) -> None:
    """Refuse frames lit by a light-library map of the ``train`` split (a student may have seen
    it): :func:`~.light_library.require_split`. Shipped maps (named, not library ids) pass."""
    from .eval_subsets import env_family
    from .light_library import SplitError, _generated_entry, require_split

    ids = sorted({str(f.env_id) for f in frames if f.env_id is not None and env_family(f.env_id) != "shipped"})
    try:
        entries = [_generated_entry(i.split("-")[0], int(i.split("-")[1])) for i in ids]
        require_split(entries, {"val", "test"}, "evaluation")
    except (SplitError, ValueError) as e:
        raise EvaluationError(str(e)) from None


def capture_engine_kwargs(capture) -> dict:
    """The Engine settings a capture needs: its generator's hand asset (light-stage presets that
    name one, e.g. eval_v2 -> models/hand_v2), so every renderer sees the same hand."""
    from .lightstage import preset_asset_path

    gen = capture.generator if isinstance(getattr(capture, "generator", None), dict) else {}
    path = preset_asset_path(gen.get("settings", {}) or {})
    return {"asset": path} if path is not None else {}


def frame_lighting_case(engine, frame, env) -> tuple:
    """(dominant light direction [3], scene centre [3], {'family', 'interhand_shadow'}) of an
    environment frame (:mod:`.eval_subsets`); the per-camera ``backlit`` flag is added by the
    caller. Frames without an environment: no light, every flag False."""
    from .eval_subsets import SHADOW_FRACTION, dominant_direction, env_family, interhand_shadow_fraction

    posed = engine.pose(frame.scene, meshes=("proxy",))
    centre = np.concatenate([o.proxy_vertices[0].numpy() for o in posed.values()]).mean(0)
    if env is None:
        return np.zeros(3), centre, {"family": "none", "interhand_shadow": False}
    light = dominant_direction(env)
    shadow = interhand_shadow_fraction(engine.models, frame.scene, light) >= SHADOW_FRACTION
    return light, centre, {"family": env_family(frame.env_id), "interhand_shadow": bool(shadow)}


def is_backlit(camera_centre, scene_centre, light) -> bool:
    from .eval_subsets import is_backlit as backlit

    return bool(np.any(light)) and backlit(camera_centre, scene_centre, light)


def lighting_subsets(records) -> dict:
    """Per-image records grouped by lighting case: backlit / front-lit views, inter-hand shadow
    frames, and one group per environment family."""
    out = {"backlit": [], "not_backlit": [], "interhand_shadow": []}
    for r in records:
        L = r.get("lighting") or {}
        out["backlit" if L.get("backlit") else "not_backlit"].append(r)
        if L.get("interhand_shadow"):
            out["interhand_shadow"].append(r)
        out.setdefault(f"family:{L.get('family', 'none')}", []).append(r)
    return out


def _train_ids_from_splits_file(capture) -> set:
    splits = getattr(capture, "splits", None)
    if isinstance(splits, dict) and isinstance(splits.get("train"), list):
        return {str(i) for i in splits["train"]}
    root = getattr(capture, "root", None) or getattr(capture, "path", None) or getattr(capture, "dir", None)
    if root is None:
        return set()
    p = Path(root) / "splits.json"
    if not p.is_file():
        return set()
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return set()
    train = data.get("train", []) if isinstance(data, dict) else []
    if isinstance(train, dict):  # e.g. {"train": {"olat": [...], "env": [...]}}
        train = [i for v in train.values() for i in (v if isinstance(v, list) else [])]
    return {str(i) for i in train} if isinstance(train, list) else set()


def select_frames(capture, frame_ids=None, max_frames: int | None = None) -> list:
    """The environment-lit frames to evaluate: ``frame_ids`` (all must be held-out env frames) or
    every held-out env frame; ``max_frames`` keeps an evenly spaced subset. Raises
    :class:`EvaluationError` for any frame marked for training (in the frame or in splits.json)."""
    train_ids = _train_ids_from_splits_file(capture)
    by_id = {f.id: f for f in capture.frames}
    if frame_ids:
        missing = [i for i in frame_ids if i not in by_id]
        if missing:
            raise EvaluationError(f"unknown frame(s) {missing[:5]} in the capture")
        frames = [by_id[i] for i in frame_ids]
    else:
        frames = list(capture.frames_by(kind="env", split="heldout"))
    train = [f.id for f in frames if f.split != "heldout" or f.id in train_ids]
    if train:
        raise EvaluationError(f"refusing to evaluate on frames marked for training: {train[:8]}"
                              + (" ..." if len(train) > 8 else ""))
    not_env = [f.id for f in frames if f.kind != "env"]
    if not_env:
        raise EvaluationError(f"only environment-lit frames can be evaluated, not {not_env[:5]}")
    if not frames:
        raise EvaluationError("the capture has no held-out environment-lit frames")
    if max_frames is not None and 0 < max_frames < len(frames):
        idx = np.unique(np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int))
        frames = [frames[i] for i in idx]
    return frames


# ======================================================================================
# The evaluation


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("relit-hands", "numpy", "scikit-image", "flip-evaluator", "matplotlib", "torch", "moderngl",
                "mitsuba"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else None


def _std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.std(xs)) if xs else None


METRIC_KEYS = ("psnr_linear", "psnr_display", "ssim", "flip")


def _aggregate(records: list[dict], peak: float) -> dict:
    """Means (and standard deviations) over images; ``psnr_linear_pooled`` = PSNR of the mean MSE."""
    out = {"n_images": len(records), "n_frames": len({r["frame"] for r in records})}
    for k in METRIC_KEYS:
        vals = [r[k] for r in records]
        out[k] = _mean(vals)
        out[k + "_std"] = _std(vals)
    mse = _mean([r.get("mse_linear") for r in records])
    out["psnr_linear_pooled"] = None if mse is None else _psnr(mse, peak)
    ious = [r.get("silhouette_iou") for r in records]
    out["silhouette_iou"] = _mean(ious)
    return out


@dataclass
class _ScaleAcc:
    rt: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tt: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rr: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def add(self, ref, test):
        ref, test = ref.astype(np.float64), test.astype(np.float64)
        self.rt += (ref * test).sum(0)
        self.tt += (test * test).sum(0)
        self.rr += (ref * ref).sum(0)

    def result(self):
        def s(a, b):
            return float(a / b) if b > 0 else None
        return {"scale": s(self.rt.sum(), self.tt.sum()),
                "scale_rgb": [s(self.rt[i], self.tt[i]) for i in range(3)]}


def _pick_grid_pairs(frames, cam_ids, rows: int, present=None) -> list[tuple]:
    """Up to ``rows`` (frame, camera) pairs, round-robin over (subset, environment) groups; with
    ``present`` (a set of (frame id, camera id)) only pairs in it, the frame's first such camera."""
    groups: dict[tuple, list] = {}
    for f in frames:
        groups.setdefault((_subset(f), str(f.env_id)), []).append(f)
    keys = sorted(groups)
    picks, i = [], 0
    while len(picks) < rows and any(groups[k] for k in keys):
        k = keys[i % len(keys)]
        if groups[k]:
            f = groups[k].pop(0)
            cams = cam_ids if present is None else [c for c in cam_ids if (f.id, c) in present]
            if cams:
                picks.append((f.id, cams[len(picks) % len(cams)]))
        i += 1
    return picks


def _reference(capture, frame, cam_id) -> np.ndarray:
    """The reference image; non-finite path-tracer pixels are set to 0 (counted in a warning)."""
    ref = np.asarray(capture.image(frame, cam_id), np.float32)
    bad = ~np.isfinite(ref)
    if bad.any():
        print(f"relit-hands eval: warning: {int(bad.any(-1).sum())} non-finite reference pixel(s) in "
              f"{frame.id}/{cam_id} set to 0", file=sys.stderr)
        ref = np.where(bad, 0.0, ref).astype(np.float32)
    return ref


def load_capture(path):
    """``relit_hands.capture.Capture.load(path, check_files=False)``: the one loader of the on-disk
    format, everything validated but the presence of image files -- the harness needs only the
    held-out environment frames' images, which :func:`evaluate` checks itself, so a capture whose
    training frames are still being rendered (other shards, ``lightstage --kinds``) can be evaluated."""
    try:
        from ..capture import Capture
    except ImportError as e:  # pragma: no cover - the loader ships with the package
        raise EvaluationError(f"the capture loader (relit_hands.capture) is not available: {e}") from None
    return Capture.load(path, check_files=False)


def _check_reference_files(capture, pairs) -> None:
    """The loaded frames' image / mask entries are paths resolved against the capture folder."""
    root = getattr(capture, "root", None)
    if root is None:
        return
    missing = [f"{f.id}/{c}" for f, c in pairs if not Path(f.images[c]).is_file() or not Path(f.masks[c]).is_file()]
    if missing:
        raise EvaluationError(f"{root}: {len(missing)} reference image(s) or mask(s) of the evaluated frames are "
                              f"missing (e.g. {missing[:3]}); finish the capture, e.g. "
                              f"`relit-hands lightstage --preset ... --out {root} --kinds env`")


def _noise_reference_pairs(capture, noise_reference, frames, cam_ids) -> dict:
    """{(frame id, camera id): (second capture, its frame)} for the evaluated images that the noise
    reference also has. It must be the same capture (frames, environments and rotations, cameras,
    generator settings) rendered with another sampler seed; anything else is an error."""
    cap2 = noise_reference
    if isinstance(cap2, (str, Path)):
        if not Path(cap2).is_dir():
            raise EvaluationError(f"{cap2}: noise reference capture folder not found")
        cap2 = load_capture(cap2)
    where = getattr(cap2, "root", "the noise reference")
    from .lightstage import frame_settings_differ

    g1, g2 = dict(getattr(capture, "generator", {}) or {}), dict(getattr(cap2, "generator", {}) or {})
    if g1 or g2:
        diff = sorted(frame_settings_differ(g1, g2))
        if diff:
            raise EvaluationError(f"{where}: not a second render of the evaluated capture (generator settings "
                                  f"differ: {', '.join(diff)})")
        if g1.get("noise_seed", 0) == g2.get("noise_seed", 0):
            raise EvaluationError(f"{where}: rendered with the same sampler seed as the evaluated capture (noise "
                                  f"seed {g1.get('noise_seed', 0)}); render it with `relit-hands lightstage "
                                  f"--noise-seed K` (K != {g1.get('noise_seed', 0)})")
    by_id = {f.id: f for f in cap2.frames}
    root = getattr(cap2, "root", None)
    pairs = {}
    for f in frames:
        f2 = by_id.get(f.id)
        same = f2 is not None and f2.kind == f.kind and str(f2.env_id) == str(f.env_id) and all(
            abs(float(getattr(f2, a, 0.0) or 0.0) - float(getattr(f, a, 0.0) or 0.0)) < 1e-6
            for a in ("yaw_deg", "pitch_deg"))
        if not same:
            raise EvaluationError(f"{where}: frame {f.id} is missing or differs (environment / rotation) from "
                                  f"the evaluated capture's")
        for c in cam_ids:
            if c not in f.images or c not in f2.images or c not in cap2.cameras:
                continue
            a, b = capture.cameras[c], cap2.cameras[c]
            if not (np.allclose(a.K, b.K) and np.allclose(a.R, b.R) and np.allclose(a.t, b.t)
                    and (a.width, a.height) == (b.width, b.height)):
                raise EvaluationError(f"{where}: camera {c} differs from the evaluated capture's")
            if root is None or Path(f2.images[c]).is_file():
                pairs[f.id, c] = (cap2, f2)
    if not pairs:
        raise EvaluationError(f"{where}: has none of the evaluated images (frames x cameras)")
    return pairs


def _noise_summary(records: dict, peak: float, source) -> dict:
    """Reference noise (``ref_noise_mse`` = sigma^2 of each image with a second render) overall and
    per environment: the ceiling -- the PSNR of a noise-free exact renderer against these references,
    10 log10(peak^2 / sigma^2) -- as a mean over images and pooled, and per renderer on the same
    images: mean / pooled PSNR and the noise-corrected pooled PSNR 10 log10(peak^2 / (mean MSE - mean
    sigma^2)), its error against the converged image (None where the MSE is within the noise)."""
    first = next(iter(records.values()))
    groups = {"all": lambda r: True}
    for e in sorted({r["env_id"] for r in first if "ref_noise_mse" in r}):
        groups[e] = (lambda e: lambda r: r["env_id"] == e)(e)
    out = {"source": str(getattr(source, "root", source)), "groups": {}}
    for g, keep in groups.items():
        base = [r for r in first if "ref_noise_mse" in r and keep(r)]
        s2 = [r["ref_noise_mse"] for r in base]
        entry = {"n_images": len(base), "ceiling_psnr": _mean([_psnr(v, peak) for v in s2]),
                 "ceiling_psnr_pooled": _psnr(float(np.mean(s2)), peak), "renderers": {}}
        for name, recs in records.items():
            rr = [r for r in recs if "ref_noise_mse" in r and keep(r)]
            mse = float(np.mean([r["mse_linear"] for r in rr]))
            bias = mse - float(np.mean([r["ref_noise_mse"] for r in rr]))
            entry["renderers"][name] = {"psnr_linear": _mean([r["psnr_linear"] for r in rr]),
                                        "psnr_linear_pooled": _psnr(mse, peak),
                                        "psnr_noise_corrected_pooled": _psnr(bias, peak) if bias > 0 else None}
        out["groups"][g] = entry
    return out


def evaluate(capture, renderers, out_dir, *, frames=None, cameras=None, max_frames: int | None = None,
             peak: float | None = None, grid_rows: int = 6, command: str | None = None, plugins=(),
             progress: bool = True, engine_kwargs: dict | None = None, noise_reference=None,
             overwrite: bool = False, allow_partial: bool = False) -> dict:
    """Run the evaluation and write ``report.md``, ``metrics.json`` and the PNGs to ``out_dir``.

    ``capture``: a capture folder or an already loaded capture (anything with the
    :class:`~relit_hands.capture.Capture` interface). ``noise_reference``: optional second render of
    the same frames with independent sampling noise (``relit-hands lightstage --noise-seed``; a folder
    or a loaded capture): images present in both get a reference-noise estimate, and the results a
    ``reference_noise`` section (:func:`_noise_summary`). Returns the metrics dictionary (also
    written as metrics.json).

    ``out_dir`` is checked before anything is loaded
    (:class:`~relit_hands.validation.OutputFolder`): the capture's own folder, a relit-hands folder
    of another kind, or a non-empty folder that holds no earlier evaluation report is refused
    unless ``overwrite``; every file is written under a temporary name and moved into place.
    """
    from tqdm import tqdm

    for mod in plugins or ():
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise EvaluationError(f"cannot import renderer plugin {mod!r}: {e}") from None
    if not renderers:
        raise EvaluationError("name at least one renderer (--renderer)")
    specs = [get_renderer_spec(n) for n in renderers]
    if len(set(renderers)) != len(renderers):
        raise EvaluationError(f"renderer listed twice: {renderers}")
    folder = OutputFolder(out_dir, "eval", overwrite=overwrite,
                          inputs=[c for c in (capture, noise_reference) if isinstance(c, (str, Path))],
                          recognise=lambda p: (p / "metrics.json").is_file() and (p / "report.md").is_file())
    if isinstance(capture, (str, Path)):
        capture_dir = Path(capture)
        if not capture_dir.is_dir():
            raise EvaluationError(f"{capture_dir}: capture folder not found")
        capture = load_capture(capture_dir)
    else:
        capture_dir = getattr(capture, "root", None) or getattr(capture, "path", None) or "(in-memory capture)"
    sel = select_frames(capture, frames, max_frames)
    cam_ids = list(cameras) if cameras else list(capture.cameras)
    missing = [c for c in cam_ids if c not in capture.cameras]
    if missing:
        raise EvaluationError(f"unknown camera(s) {missing}; the capture has {list(capture.cameras)}")
    guard_evaluation_maps(sel)
    noise_pairs = _noise_reference_pairs(capture, noise_reference, sel, cam_ids) if noise_reference is not None else {}
    use_flip = flip_available() is not None
    out_dir = folder.create()

    # ---- pass 1: fixed conventions from the references of the whole evaluated set
    pooled, budget = [], 4_000_000
    pairs = [(f, c) for f in sel for c in cam_ids if c in f.images]
    if allow_partial:  # the views rendered so far (e.g. a capture made with lightstage --views-per-frame)
        pairs = [(f, c) for f, c in pairs if Path(f.images[c]).is_file() and Path(f.masks[c]).is_file()]
    present = {(f.id, c) for f, c in pairs}
    if not pairs:
        raise EvaluationError("no reference images for the selected frames and cameras")
    _check_reference_files(capture, pairs)
    step = 1
    for f, c in tqdm(pairs, desc="reference statistics", unit="img", disable=not progress):
        ref = _reference(capture, f, c)
        m = _hand(capture.mask(f, c))
        pooled.append(ref[m])
    total = sum(len(p) for p in pooled)
    step = max(1, total // budget)
    settings = reference_settings(np.concatenate([p[::step] for p in pooled]), peak=peak)
    del pooled

    # ---- pass 2: render and compare
    ctx = EvalContext(capture, **{**ENGINE_KWARGS, **capture_engine_kwargs(capture), **(engine_kwargs or {})})
    grid_pairs = set(_pick_grid_pairs(sel, cam_ids, grid_rows, present))
    grid_data: dict[tuple, dict] = {}
    records: dict[str, list] = {s.name: [] for s in specs}
    scales = {s.name: _ScaleAcc() for s in specs}
    try:
        instances = {}
        for s in specs:
            try:
                instances[s.name] = s.factory(ctx)
            except EvaluationError:
                raise
            except Exception as e:
                raise EvaluationError(f"renderer {s.name!r} could not be created: {e}") from e
        bar = tqdm(total=len(pairs) * len(specs), desc="evaluating", unit="img", disable=not progress)
        for f in sel:
            env = capture.environment(f)
            light, centre, frame_lighting = frame_lighting_case(ctx.engine, f, env)
            for c in cam_ids:
                if (f.id, c) not in present:
                    continue
                cam = capture.cameras[c]
                lighting = dict(frame_lighting, backlit=is_backlit(cam.center, centre, light))
                ref = _reference(capture, f, c)
                m = _hand(capture.mask(f, c))
                noise_mse = None
                if (f.id, c) in noise_pairs:  # two independent estimates: E|a - b|^2 = 2 sigma^2
                    cap2, f2 = noise_pairs[f.id, c]
                    ref2 = _reference(cap2, f2, c)
                    noise_mse = _mse_linear(ref, ref2, m, settings.peak) / 2
                want_grid = (f.id, c) in grid_pairs
                if want_grid:
                    grid_data[(f.id, c)] = {"ref": ref, "mask": m, "renders": {}}
                for s in specs:
                    bar.set_postfix_str(f"{s.name} {f.id}/{c}")
                    try:
                        out = instances[s.name](f, cam, env)
                    except EvaluationError:
                        raise
                    except Exception as e:
                        raise EvaluationError(f"renderer {s.name!r} failed on frame {f.id} camera {c}: {e}") from e
                    img, rmask = _as_radiance(out, ref.shape)
                    if not np.isfinite(img).all():
                        raise EvaluationError(f"renderer {s.name!r} returned NaN/inf pixels on frame {f.id} "
                                              f"camera {c} ({int((~np.isfinite(img)).sum())} values)")
                    res = compute_metrics(ref, img, m, settings, flip=use_flip, return_flip_map=want_grid)
                    if want_grid:
                        res, fmap = res
                        grid_data[(f.id, c)]["renders"][s.name] = (img, fmap)
                    rec = {"frame": f.id, "camera": c, "subset": _subset(f), "env_id": str(f.env_id),
                           "yaw_deg": float(getattr(f, "yaw_deg", 0.0) or 0.0),
                           "pitch_deg": float(getattr(f, "pitch_deg", 0.0) or 0.0), "lighting": lighting, **res}
                    if noise_mse is not None:
                        rec["ref_noise_mse"] = noise_mse
                    if rmask is not None:
                        inter = np.logical_and(rmask, m).sum()
                        union = np.logical_or(rmask, m).sum()
                        rec["silhouette_iou"] = float(inter / union) if union else None
                    records[s.name].append(rec)
                    scales[s.name].add(ref[m], img[m])
                    bar.update(1)
        bar.close()
    finally:
        ctx.release()

    # ---- aggregates
    results = {}
    for s in specs:
        recs = records[s.name]
        pk = settings.peak
        by_subset = {k: _aggregate([r for r in recs if r["subset"] == k], pk)
                     for k in sorted({r["subset"] for r in recs})}
        by_env = {k: _aggregate([r for r in recs if r["env_id"] == k], pk)
                  for k in sorted({r["env_id"] for r in recs})}
        by_cam = {k: _aggregate([r for r in recs if r["camera"] == k], pk) for k in cam_ids}
        by_lighting = {name: _aggregate(sub, pk) for name, sub in lighting_subsets(recs).items() if sub}
        results[s.name] = {"description": s.description, "overall": _aggregate(recs, pk), "by_subset": by_subset,
                           "by_environment": by_env, "by_camera": by_cam, "by_lighting": by_lighting,
                           "global_scale_fit_not_applied": scales[s.name].result(), "per_image": recs}
    if command is None:
        command = "relit-hands eval " + shlex.join(sys.argv[1:])
    data = {
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "capture": str(capture_dir),
        "renderers": list(renderers),
        "frames": [f.id for f in sel],
        "cameras": cam_ids,
        "settings": {
            **asdict(settings),
            "psnr_cap_db": PSNR_CAP_DB, "peak_percentile": PEAK_PERCENTILE, "flip_hi_percentile": FLIP_HI_PERCENTILE,
            "flip_tonemapper": "ACES", "ssim": {"space": "display D(x)=sRGB(clip(x/peak,0,1))",
                                               "gaussian_sigma": SSIM_SIGMA, "data_range": 1.0,
                                               "K1": 0.01, "K2": 0.03},
            "hand_pixels": "reference mask > 0; outside pixels zeroed in both images for SSIM/FLIP",
            "flip": "HDR-FLIP on linear radiance" if use_flip else "not available: flip-evaluator not installed",
            "lpips": LPIPS_NOTE,
        },
        "lpips": LPIPS_NOTE,
        "versions": _versions(),
        "results": results,
    }
    if noise_pairs:
        data["reference_noise"] = _noise_summary(records, settings.peak, noise_reference)
    folder.write_text("metrics.json", json.dumps(_jsonable(data), indent=1) + "\n")
    plots = _write_plots(out_dir, data, specs)
    grids = _write_grids(out_dir, grid_data, specs, settings, use_flip)
    _write_report(out_dir, data, plots, grids, settings, use_flip)
    return data


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ======================================================================================
# Outputs


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _write_plots(out_dir: Path, data: dict, specs) -> list[str]:
    plt = _mpl()
    names = [s.name for s in specs]
    frame_ids = data["frames"]
    metrics = [("psnr_linear", "PSNR linear HDR (dB), higher is better"),
               ("ssim", "SSIM (display), higher is better")]
    if data["results"][names[0]]["per_image"] and data["results"][names[0]]["per_image"][0].get("flip") is not None:
        metrics.append(("flip", "HDR-FLIP, lower is better"))
    width = min(18.0, max(7.0, 0.28 * len(frame_ids) * len(names) + 2))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width, 2.3 * len(metrics) + 1.0), sharex=True, squeeze=False)
    x = np.arange(len(frame_ids))
    bw = 0.8 / len(names)
    subset_of = {}
    for k, name in enumerate(names):
        recs = data["results"][name]["per_image"]
        for r in recs:
            subset_of[r["frame"]] = r["subset"]
        for ax, (key, label) in zip(axes[:, 0], metrics):
            vals = [_mean([r[key] for r in recs if r["frame"] == fid]) for fid in frame_ids]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(x + (k - (len(names) - 1) / 2) * bw, vals, bw, label=name)
            ax.set_ylabel(label.split(",")[0], fontsize=8)
            ax.set_title(label, fontsize=8, loc="left")
            ax.tick_params(labelsize=7)
            ax.grid(axis="y", alpha=0.3)
    labels = [f"{fid}\n{'2h' if subset_of.get(fid) == 'two_hands' else '1h'}" for fid in frame_ids]
    axes[-1, 0].set_xticks(x)
    axes[-1, 0].set_xticklabels(labels, rotation=90 if len(frame_ids) > 12 else 0, fontsize=6)
    axes[0, 0].legend(fontsize=7, ncol=len(names))
    fig.suptitle("Per-frame metrics (mean over cameras; 1h = single hand, 2h = two hands)", fontsize=9)
    fig.tight_layout()
    path = out_dir / "per_frame.png"
    write_atomic(path, lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)
    return [path.name]


def _write_grids(out_dir: Path, grid_data: dict, specs, settings: MetricSettings, use_flip: bool,
                 tile: int = 200) -> list[tuple[str, str]]:
    """One PNG per renderer: rows = selected (frame, camera); columns reference | renderer | error."""
    if not grid_data:
        return []
    plt = _mpl()
    keys = list(grid_data)
    out = []
    for s in specs:
        fig, axes = plt.subplots(len(keys), 3, figsize=(3 * tile / 80 + 0.9, len(keys) * tile / 80 + 0.5),
                                 squeeze=False)
        im = None
        for row, key in enumerate(keys):
            g = grid_data[key]
            m = g["mask"]
            img, fmap = g["renders"][s.name]
            rows, cols = np.nonzero(m) if m.any() else (np.array([0, m.shape[0] - 1]), np.array([0, m.shape[1] - 1]))
            pad = 8
            r0, r1 = max(0, rows.min() - pad), min(m.shape[0], rows.max() + pad + 1)
            c0, c1 = max(0, cols.min() - pad), min(m.shape[1], cols.max() + pad + 1)
            ref_d = display_transform(g["ref"][r0:r1, c0:c1], settings.peak)
            tst_d = display_transform(img[r0:r1, c0:c1], settings.peak)
            if use_flip and fmap is not None:
                err, label, vmax = fmap[r0:r1, c0:c1], "HDR-FLIP error", 1.0
            else:
                err = np.abs(np.clip(g["ref"], 0, settings.peak) - np.clip(img, 0, settings.peak)).mean(-1)
                err = np.where(m, err / settings.peak, 0.0)[r0:r1, c0:c1]
                label, vmax = "|ref - test| / peak", 0.5
            err = np.ma.masked_where(~m[r0:r1, c0:c1], err)
            axes[row, 0].imshow(ref_d)
            axes[row, 1].imshow(tst_d)
            cmap = plt.get_cmap("magma").with_extremes(bad=(0.35, 0.35, 0.35))
            im = axes[row, 2].imshow(err, cmap=cmap, vmin=0.0, vmax=vmax)
            axes[row, 0].set_ylabel(f"{key[0]}\n{key[1]}", fontsize=7)
            for ax in axes[row]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0, 0].set_title("reference (path traced)", fontsize=8)
        axes[0, 1].set_title(s.name, fontsize=8)
        axes[0, 2].set_title(label, fontsize=8)
        fig.subplots_adjust(left=0.08, right=0.86, top=0.96, bottom=0.02, wspace=0.04, hspace=0.06)
        cax = fig.add_axes([0.88, 0.1, 0.025, 0.8])
        cb = fig.colorbar(im, cax=cax)
        cb.ax.tick_params(labelsize=7)
        cb.set_label(label + " (grey: outside hand)", fontsize=7)
        path = out_dir / f"grid_{s.name}.png"
        write_atomic(path, lambda p: fig.savefig(p, dpi=80, format="png"))
        plt.close(fig)
        out.append((s.name, path.name))
    return out


def _fmt(v, nd=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def _table(rows: list[tuple[str, str, dict]], what: str = "subset") -> list[str]:
    lines = [f"| renderer | {what} | images | PSNR lin (dB) mean ± std | PSNR lin pooled (dB) | PSNR disp (dB) "
             "| SSIM | FLIP | LPIPS |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, subset, a in rows:
        lines.append(f"| {name} | {subset} | {a['n_images']} | {_fmt(a['psnr_linear'], 2)} ± "
                     f"{_fmt(a['psnr_linear_std'], 2)} | {_fmt(a['psnr_linear_pooled'], 2)} "
                     f"| {_fmt(a['psnr_display'], 2)} | {_fmt(a['ssim'], 4)} | {_fmt(a['flip'], 4)} | n/a |")
    return lines


def _write_report(out_dir: Path, data: dict, plots, grids, settings: MetricSettings, use_flip: bool) -> None:
    R = data["results"]
    names = data["renderers"]
    L = [f"# Evaluation: {', '.join(names)} vs path-traced references", "",
         "Exact command:", "", "```", data["command"], "```", "",
         f"Date {data['date']}; capture `{data['capture']}`; {len(data['frames'])} held-out environment "
         f"frames x {len(data['cameras'])} cameras ({', '.join(data['cameras'])}).", "",
         "## Conventions", "",
         "- Hand pixels: the reference mask of the capture (either hand). Pixels outside it are set to 0 in "
         "both images before SSIM/FLIP and images are cropped to the hand with a zero border: nothing outside "
         "the hand can change a number. The renderer's own silhouette is not used (a silhouette error shows as "
         "a radiance error inside the reference mask).",
         f"- peak = **{settings.peak:.5g}** ({settings.peak_source}); fixed for every renderer and image; "
         "no per-image rescaling.",
         f"- PSNR (linear HDR, primary): both images clipped to [0, peak], MSE over hand pixels x RGB, "
         f"10 log10(peak^2 / MSE), capped at {PSNR_CAP_DB:.0f} dB; tables give the mean ± std over images "
         "and the pooled PSNR (of the mean MSE over images).",
         "- PSNR (display) and SSIM on D(x) = sRGB_OETF(clip(x / peak, 0, 1)) (one fixed exposure); SSIM: "
         "scikit-image `structural_similarity`, Gaussian window sigma 1.5, data range 1, map averaged over "
         "hand pixels and RGB.",
         (f"- FLIP: NVIDIA HDR-FLIP (`flip-evaluator` {data['versions'].get('flip-evaluator')}) on linear radiance, "
          f"{FLIP_PPD:.0f} ppd, ACES, fixed exposure range [{settings.flip_start_exposure:.3f}, "
          f"{settings.flip_stop_exposure:.3f}] stops ({settings.flip_num_exposures} exposures) from FLIP's rule "
          f"on the pooled reference hand luminance (P{FLIP_HI_PERCENTILE} and median); mean over hand pixels."
          if use_flip else "- FLIP: not available (flip-evaluator is not installed)."),
         f"- LPIPS: {LPIPS_NOTE}.",
         "- Global scale: least-squares s minimising |ref - s test|^2 over all hand pixels of the set; "
         "reported as a diagnostic (s > 1: the renderer is too dark), **never applied**.", "",
         "## Results", ""]
    rows = []
    for n in names:
        rows.append((n, "all", R[n]["overall"]))
    L += _table(rows) + [""]
    L += ["### Per subset (single hand vs two hands in contact)", ""]
    L += _table([(n, k, a) for n in names for k, a in R[n]["by_subset"].items()]) + [""]
    L += ["### Per lighting case (backlit views, inter-hand shadow frames, environment family)", ""]
    L += _table([(n, k, a) for n in names for k, a in R[n].get("by_lighting", {}).items()], "lighting") + [""]
    L += ["### Per environment", ""]
    L += _table([(n, k, a) for n in names for k, a in R[n]["by_environment"].items()], "environment") + [""]
    L += ["### Per camera", ""]
    L += _table([(n, k, a) for n in names for k, a in R[n]["by_camera"].items()], "camera") + [""]
    L += ["### Global scale fit (not applied)", "", "| renderer | s | s (R, G, B) | silhouette IoU |",
          "|---|---:|---|---:|"]
    for n in names:
        g = R[n]["global_scale_fit_not_applied"]
        L.append(f"| {n} | {_fmt(g['scale'])} | {', '.join(_fmt(v) for v in g['scale_rgb'])} | "
                 f"{_fmt(R[n]['overall'].get('silhouette_iou'), 4)} |")
    if "reference_noise" in data:
        L += _noise_section(data["reference_noise"], names)
    L += ["", "## Per-frame metrics", ""] + [f"![per-frame metrics]({p})" for p in plots] + [""]
    if grids:
        L += ["## Comparison grids", "",
              "Columns: reference | renderer | error map; rows: frame / camera. Images shown with the fixed "
              "display transform D (same exposure for all)."
              + (" Error: per-pixel HDR-FLIP (magma, 0 to 1)." if use_flip else ""), ""]
        for n, p in grids:
            L += [f"### {n}", "", f"![{n} grid]({p})", ""]
    L += ["## Files", "", "- `metrics.json`: every number (per image, per subset, per environment, per camera), "
          "settings, versions, date.", ""]
    L += ["Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items() if v), ""]
    write_text_atomic(out_dir / "report.md", "\n".join(L))


def _noise_section(rn: dict, names) -> list[str]:
    allg = rn["groups"]["all"]
    L = ["", "### Reference noise", "",
         f"A second render of {allg['n_images']} of the evaluated images with another sampler seed (`{rn['source']}`, "
         "made with `relit-hands lightstage --noise-seed`) measures each reference's Monte Carlo noise: sigma^2 = "
         "MSE(ref, ref2) / 2. **Ceiling**: the PSNR a noise-free, exact renderer would score against these "
         "references, 10 log10(peak^2 / sigma^2); no renderer can be expected above it, and a difference "
         "between renderers close to it is mostly noise. **Noise-corrected** (pooled): 10 log10(peak^2 / "
         "(mean MSE - mean sigma^2)), an estimate of the renderer's error against the converged image "
         "(n/a where the MSE is within the noise). Columns on these images only.", "",
         "| renderer | environment | images | PSNR lin mean | ceiling mean | PSNR lin pooled | ceiling pooled | "
         "noise-corrected pooled |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        for g, e in rn["groups"].items():
            r = e["renderers"][n]
            L.append(f"| {n} | {g} | {e['n_images']} | {_fmt(r['psnr_linear'], 2)} | {_fmt(e['ceiling_psnr'], 2)} | "
                     f"{_fmt(r['psnr_linear_pooled'], 2)} | {_fmt(e['ceiling_psnr_pooled'], 2)} | "
                     f"{_fmt(r['psnr_noise_corrected_pooled'], 2)} |")
    return L


# ======================================================================================
# Command line


def _csv_or_list(values):
    if values is None:
        return None
    out = []
    for v in values:
        out += [s for s in v.split(",") if s]
    return out


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--capture", required=True, metavar="DIR", help="light-stage capture folder")
    p.add_argument("--renderer", nargs="+", required=True, metavar="NAME",
                   help="renderer name(s): built-ins pbr, pbr_noshadow; plugins register more")
    p.add_argument("--out", default="eval_out", metavar="DIR", help="output folder (report.md, metrics.json, PNGs)")
    p.add_argument("--frames", nargs="+", metavar="ID", help="frame ids (held-out env frames only; default all)")
    p.add_argument("--cameras", nargs="+", metavar="ID", help="camera ids (default all)")
    p.add_argument("--max-frames", type=int_range(1, 1_000_000), metavar="N", help="evenly spaced subset of N frames")
    p.add_argument("--allow-partial", action="store_true",
                   help="evaluate the views rendered so far (a capture made with lightstage --views-per-frame); "
                        "without it a missing reference is an error")
    p.add_argument("--peak", type=finite_float(1e-12, 1e12),
                   help="fixed linear peak (default: P99.5 of the reference hand pixels)")
    p.add_argument("--grid-rows", type=int_range(1, 256), default=6, help="rows in the comparison grids (default 6)")
    p.add_argument("--plugin", nargs="+", default=[], metavar="MODULE", help="import modules that register renderers")
    p.add_argument("--noise-reference", metavar="DIR",
                   help="the same capture rendered again with `relit-hands lightstage --noise-seed K`: adds the "
                        "references' noise ceiling and noise-corrected PSNRs to the report")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder that relit-hands did not write (never an input)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def run_from_args(args, command: str | None = None) -> int:
    data = evaluate(args.capture, _csv_or_list(args.renderer), args.out, frames=_csv_or_list(args.frames),
                    cameras=_csv_or_list(args.cameras), max_frames=args.max_frames, peak=args.peak,
                    allow_partial=args.allow_partial,
                    grid_rows=args.grid_rows, command=command, plugins=args.plugin,
                    progress=not args.no_progress, noise_reference=args.noise_reference,
                    overwrite=getattr(args, "overwrite", False))
    out = Path(args.out)
    for n in data["renderers"]:
        a = data["results"][n]["overall"]
        print(f"{n:>14}: PSNR {_fmt(a['psnr_linear'], 2)} dB (linear), SSIM {_fmt(a['ssim'], 4)}, "
              f"FLIP {_fmt(a['flip'], 4)} over {a['n_images']} images")
    if "reference_noise" in data:
        g = data["reference_noise"]["groups"]["all"]
        print(f"{'ceiling':>14}: PSNR {_fmt(g['ceiling_psnr'], 2)} dB (a noise-free exact renderer, "
              f"{g['n_images']} images with a second reference)")
    print(f"wrote {out / 'report.md'} and {out / 'metrics.json'}")
    return 0


def main(argv=None) -> int:
    p = add_arguments(argparse.ArgumentParser(prog="relit-hands eval", description=__doc__.split("\n")[0]))
    args = p.parse_args(argv)
    cmd = "relit-hands eval " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        return run_from_args(args, cmd)
    except EvaluationError as e:
        print(f"relit-hands eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
