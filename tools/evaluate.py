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
  **Interior** figures (``psnr_linear_interior``, ``..._interior_pooled``) use the same formula on the
  hand pixels minus their one-pixel silhouette ring (:func:`.eval_metrics.interior_hand_mask`), where
  the reference pixel mixes the hand with what lies behind it.
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

The harness is split in four modules (this one re-exports the names of the other three):

* :mod:`.evaluate` (this module): frame selection and the split guards, lighting subsets, the noise
  reference, the aggregation, :func:`evaluate` and the ``relit-hands eval`` command line;
* :mod:`.eval_metrics`: the metrics and their fixed settings (:class:`MetricSettings`,
  :func:`compute_metrics` and the PSNR / SSIM / FLIP functions);
* :mod:`.eval_renderers`: the renderer registry (:func:`register_renderer`, built-ins, plugins, entry
  points), :class:`EvalContext` and :class:`EvaluationError`;
* :mod:`.eval_report`: ``metrics.json``, ``report.md``, plots and comparison grids.
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

import numpy as np

from relit_hands.validation import OutputFolder, finite_float, int_range

from . import eval_metrics as _eval_metrics
from . import eval_renderers as _eval_renderers
from .eval_metrics import (FLIP_HI_PERCENTILE, LPIPS_NOTE, PEAK_PERCENTILE, PSNR_CAP_DB, SSIM_SIGMA, MetricSettings,
                           _hand, _mean, _mse_linear, _psnr, compute_metrics, display_transform, flip_available,
                           flip_masked, interior_hand_mask, psnr_display, psnr_linear, reference_settings, ssim_masked)
from .eval_renderers import (ENGINE_KWARGS, EvalContext, EvaluationError, RendererSpec, _as_radiance,
                             available_renderers, get_renderer_spec, register_renderer)
from .eval_report import _fmt, _jsonable, _write_grids, _write_plots, _write_report

__all__ = [
    "EvaluationError", "EvalContext", "MetricSettings", "RendererSpec", "register_renderer",
    "available_renderers", "get_renderer_spec", "select_frames", "reference_settings",
    "display_transform", "psnr_linear", "psnr_display", "ssim_masked", "flip_masked", "flip_available",
    "compute_metrics", "interior_hand_mask", "evaluate", "add_arguments", "run_from_args", "main", "LPIPS_NOTE",
]

# Re-exported for callers of this module, unused here (same objects; assigned, not imported, so pyflakes
# does not take them for unused imports). evaluate() reads ENGINE_KWARGS from this module: patch it here.
Renderer, EngineRenderer = _eval_renderers.Renderer, _eval_renderers.EngineRenderer
FLIP_PPD, FLIP_PAD, SSIM_PAD = _eval_metrics.FLIP_PPD, _eval_metrics.FLIP_PAD, _eval_metrics.SSIM_PAD
REC709_LUMA, _aces_xmax = _eval_metrics.REC709_LUMA, _eval_metrics._aces_xmax


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
    inner = [r.get("mse_linear_interior") for r in records]
    inner = [v for v in inner if v is not None]
    out["psnr_linear_interior"] = _mean([_psnr(v, peak) for v in inner]) if inner else None
    out["psnr_linear_interior_pooled"] = _psnr(float(np.mean(inner)), peak) if inner else None
    ious = [r.get("silhouette_iou") for r in records]
    out["silhouette_iou"] = _mean(ious)
    return out


@dataclass
class GlobalScaleFit:
    """Least-squares global scale s (and one per channel) minimising |ref - s test|^2 over every
    pixel passed to :meth:`add` (``ref``, ``test`` [P, 3] linear): ``result()`` -> {'scale',
    'scale_rgb'} (None where ``test`` is all zero)."""
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
    """``relit_hands.tools.capture.Capture.load(path, check_files=False)``: the one loader of the on-disk
    format, everything validated but the presence of image files -- the harness needs only the
    held-out environment frames' images, which :func:`evaluate` checks itself, so a capture whose
    training frames are still being rendered (other shards, ``lightstage --kinds``) can be evaluated."""
    try:
        from .capture import Capture
    except ImportError as e:  # pragma: no cover - the loader ships with the package
        raise EvaluationError(f"the capture loader (relit_hands.tools.capture) is not available: {e}") from None
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


def _pooled_with_noise(recs: list, peak: float, which: str) -> dict:
    """``psnr_linear{which}_pooled`` and ``psnr_noise_corrected{which}_pooled`` of records that have
    ``mse_linear{which}`` and ``ref_noise_mse{which}`` (``which``: '' or '_interior'; None without any)."""
    if not recs:
        return {f"psnr_linear{which}_pooled": None, f"psnr_noise_corrected{which}_pooled": None}
    mse = float(np.mean([r[f"mse_linear{which}"] for r in recs]))
    bias = mse - float(np.mean([r[f"ref_noise_mse{which}"] for r in recs]))
    return {f"psnr_linear{which}_pooled": _psnr(mse, peak),
            f"psnr_noise_corrected{which}_pooled": _psnr(bias, peak) if bias > 0 else None}


def _noise_summary(records: dict, peak: float, source) -> dict:
    """Reference noise (``ref_noise_mse`` = sigma^2 of each image with a second render) overall and
    per environment: the ceiling -- the PSNR of a noise-free exact renderer against these references,
    10 log10(peak^2 / sigma^2) -- as a mean over images and pooled, and per renderer on the same
    images: mean / pooled PSNR and the noise-corrected pooled PSNR 10 log10(peak^2 / (mean MSE - mean
    sigma^2)), its error against the converged image (None where the MSE is within the noise); the same
    pooled figures on the interior hand pixels (``*_interior_pooled``)."""
    first = next(iter(records.values()))
    groups = {"all": lambda r: True}
    for e in sorted({r["env_id"] for r in first if "ref_noise_mse" in r}):
        groups[e] = (lambda e: lambda r: r["env_id"] == e)(e)
    out = {"source": str(getattr(source, "root", source)), "groups": {}}
    for g, keep in groups.items():
        base = [r for r in first if "ref_noise_mse" in r and keep(r)]
        s2 = [r["ref_noise_mse"] for r in base]
        s2i = [r["ref_noise_mse_interior"] for r in base if "ref_noise_mse_interior" in r]
        entry = {"n_images": len(base), "ceiling_psnr": _mean([_psnr(v, peak) for v in s2]),
                 "ceiling_psnr_pooled": _psnr(float(np.mean(s2)), peak),
                 "ceiling_psnr_interior_pooled": _psnr(float(np.mean(s2i)), peak) if s2i else None, "renderers": {}}
        for name, recs in records.items():
            rr = [r for r in recs if "ref_noise_mse" in r and keep(r)]
            entry["renderers"][name] = {"psnr_linear": _mean([r["psnr_linear"] for r in rr]),
                                        **_pooled_with_noise(rr, peak, ""),
                                        **_pooled_with_noise([r for r in rr if "ref_noise_mse_interior" in r],
                                                             peak, "_interior")}
        out["groups"][g] = entry
    return out


SEAM_BAND_RESOLUTION = 256   # texels of the band texture (the students' R); --seam-band counts in these
SEAM_EDGE_PX = 3              # band / interior pixels kept this far inside the hand's silhouette


def _screen_seam_bands(engine, scene, camera, band_texture, hand_mask):
    """(band, interior) [H, W] bool of one view (:func:`.seam_measure.screen_band_masks`) within the
    reference's hand pixels."""
    from .seam_measure import screen_band_masks

    band, interior = screen_band_masks(engine, scene, camera, band_texture, edge_px=SEAM_EDGE_PX)
    return band & hand_mask, interior & hand_mask


def seam_band_errors(ref, img, band, interior, peak: float) -> dict:
    """Squared error (linear, both clipped to [0, peak], x RGB) of one image in the band along the UV
    chart borders and in the interior away from them, plus their pixel counts; a region with no
    pixel gives None."""
    out = {"seam_band_pixels": int(band.sum()), "seam_interior_pixels": int(interior.sum())}
    out["seam_band_mse"] = _mse_linear(ref, img, band, peak) if band.any() else None
    out["seam_interior_mse"] = _mse_linear(ref, img, interior, peak) if interior.any() else None
    return out


def _seam_summary(records: list[dict]) -> dict:
    """Pixel-weighted band and interior MSE over the images that have both regions; ``ratio`` =
    band / interior (1: no extra error at the seams)."""
    use = [r for r in records if r.get("seam_band_mse") is not None and r.get("seam_interior_mse") is not None]
    if not use:
        return {"n_images": 0, "band_mse": None, "interior_mse": None, "ratio": None}
    nb = np.array([r["seam_band_pixels"] for r in use], np.float64)
    ni = np.array([r["seam_interior_pixels"] for r in use], np.float64)
    band = float(np.dot(nb, [r["seam_band_mse"] for r in use]) / nb.sum())
    inner = float(np.dot(ni, [r["seam_interior_mse"] for r in use]) / ni.sum())
    return {"n_images": len(use), "band_pixels": int(nb.sum()), "interior_pixels": int(ni.sum()),
            "band_mse": band, "interior_mse": inner, "ratio": band / inner if inner > 0 else None}


def evaluate(capture, renderers, out_dir, *, frames=None, cameras=None, max_frames: int | None = None,
             peak: float | None = None, grid_rows: int = 6, command: str | None = None, plugins=(),
             progress: bool = True, engine_kwargs: dict | None = None, noise_reference=None,
             overwrite: bool = False, allow_partial: bool = False, noise_views_only: bool = False,
             seam_band_px: int | None = None) -> dict:
    """Run the evaluation and write ``report.md``, ``metrics.json`` and the PNGs to ``out_dir``.

    ``capture``: a capture folder or an already loaded capture (anything with the
    :class:`~relit_hands.tools.capture.Capture` interface). ``noise_reference``: optional second render of
    the same frames with independent sampling noise (``relit-hands lightstage --noise-seed``; a folder
    or a loaded capture): images present in both get a reference-noise estimate, and the results a
    ``reference_noise`` section (:func:`_noise_summary`). ``seam_band_px``: also measure the error
    along the asset's UV chart borders (:func:`seam_band_errors`): every renderer's ``seam_band``
    section. Returns the metrics dictionary (also written as metrics.json).

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
    if noise_views_only:  # exactly the images whose second render exists: the ceiling covers every one
        if not noise_pairs:
            raise EvaluationError("--noise-views-only needs --noise-reference")
        pairs = [(f, c) for f, c in pairs if (f.id, c) in noise_pairs]
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
    seam_tex = None
    if seam_band_px:
        from .seam_measure import seam_band_texture

        a = ctx.engine.asset
        seam_tex = seam_band_texture(a.proxy_uvs, a.proxy_uv_faces, SEAM_BAND_RESOLUTION, int(seam_band_px))
    grid_pairs = set(_pick_grid_pairs(sel, cam_ids, grid_rows, present))
    grid_data: dict[tuple, dict] = {}
    records: dict[str, list] = {s.name: [] for s in specs}
    scales = {s.name: GlobalScaleFit() for s in specs}
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
                labels = capture.mask(f, c)
                m, inner = _hand(labels), interior_hand_mask(labels)
                noise = {}
                if (f.id, c) in noise_pairs:  # two independent estimates: E|a - b|^2 = 2 sigma^2
                    cap2, f2 = noise_pairs[f.id, c]
                    ref2 = _reference(cap2, f2, c)
                    noise["ref_noise_mse"] = _mse_linear(ref, ref2, m, settings.peak) / 2
                    if inner.any():
                        noise["ref_noise_mse_interior"] = _mse_linear(ref, ref2, inner, settings.peak) / 2
                bands = (_screen_seam_bands(ctx.engine, f.scene, cam, seam_tex, m)
                         if seam_tex is not None else None)
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
                           "pitch_deg": float(getattr(f, "pitch_deg", 0.0) or 0.0), "lighting": lighting, **res,
                           "interior_pixels": int(inner.sum()),
                           "mse_linear_interior": _mse_linear(ref, img, inner, settings.peak) if inner.any() else None,
                           **noise}
                    if bands is not None:
                        rec.update(seam_band_errors(ref, img, *bands, settings.peak))
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
        if seam_tex is not None:
            results[s.name]["seam_band"] = _seam_summary(recs)
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
            "interior_hand_pixels": "hand pixels whose 8 neighbours have the same hand label (silhouette ring out)",
            "flip": "HDR-FLIP on linear radiance" if use_flip else "not available: flip-evaluator not installed",
            "lpips": LPIPS_NOTE,
        },
        "lpips": LPIPS_NOTE,
        **({"seam_band": {"band_px": int(seam_band_px), "resolution": SEAM_BAND_RESOLUTION,
                          "edge_px": SEAM_EDGE_PX}} if seam_tex is not None else {}),
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
    p.add_argument("--noise-views-only", action="store_true",
                   help="evaluate only the images the --noise-reference also has (a subset whose noise ceiling "
                        "covers every image; e.g. a noise stream rendered with --views-per-frame)")
    p.add_argument("--seam-band", type=int_range(1, 64), metavar="PX",
                   help="also measure the error in a band of PX texels (at R = 256) along the asset's UV chart "
                        "borders against the interior (the seam measure of the report)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder that relit-hands did not write (never an input)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def run_from_args(args, command: str | None = None) -> int:
    data = evaluate(args.capture, _csv_or_list(args.renderer), args.out, frames=_csv_or_list(args.frames),
                    cameras=_csv_or_list(args.cameras), max_frames=args.max_frames, peak=args.peak,
                    allow_partial=args.allow_partial, noise_views_only=args.noise_views_only,
                    grid_rows=args.grid_rows, command=command, plugins=args.plugin,
                    progress=not args.no_progress, noise_reference=args.noise_reference,
                    overwrite=getattr(args, "overwrite", False), seam_band_px=getattr(args, "seam_band", None))
    out = Path(args.out)
    for n in data["renderers"]:
        a = data["results"][n]["overall"]
        print(f"{n:>14}: PSNR {_fmt(a['psnr_linear'], 2)} dB (linear), SSIM {_fmt(a['ssim'], 4)}, "
              f"FLIP {_fmt(a['flip'], 4)} over {a['n_images']} images")
    for n in data["renderers"]:
        sb = data["results"][n].get("seam_band")
        if sb and sb["ratio"] is not None:
            print(f"{n:>14}: seam band / interior error {sb['ratio']:.3f} ({sb['n_images']} images)")
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
