r"""``relit-hands personalize-relight``: a personalised hand relit by the student, against path-traced
images of the true person under lighting and views the fitter never saw.

    relit-hands personalize-relight --fit my_hand/ --reference capture_b/ [--student W] [--out DIR]
    relit-hands personalize-relight --fit my_hand/ --reference capture_a/ --held-out   # novel views

``--reference`` is a ``make-phone-video`` capture of the *same person* (same ``--person-seed`` and
``--tone``) under another environment and another motion, typically with ``--views N`` calibrated
cameras: its ``frames_linear/`` are the references, ``ground_truth/frames.json`` gives every
frame's true pose and cameras, ``ground_truth/environment.json`` (+ ``environment.exr``) the map
and its rotation, ``ground_truth/masks`` the true hand masks.

Every reference image is rendered three times (``--renderer student``, the default) by the shipped
student of the asset's layout
(:func:`relit_hands.student.default_student_path`, or ``--student``) through
:meth:`Engine.render_student` at the true pose and camera, under the true (rotated) map:

* ``fit``: the personalised asset (``Engine(asset=--fit)``: its shape, displacements and albedo;
  the student's albedo prior swapped for the person's, see :meth:`Engine.student_backend`);
* ``base``: the un-personalised asset it was fitted from (``hand_v2``), what a user gets without
  personalisation;
* ``true``: the true person's asset (``ground_truth/asset``) -- the ceiling of this student: what
  is left between ``true`` and the reference is the student's own error, not the fit's.

With ``--renderer pathtrace`` the three assets are rendered instead by the references' own path tracer
(:class:`~relit_hands.tools.lightstage.LightStageRenderer`, ``--spp`` samples, seeds other than the
capture's, the map as background): then only the assets differ from the reference, and ``true`` is
the ceiling set by the noise. Every asset is traced with the same seeds per image, so two assets'
images differ only where the assets do. ``--reference-spp N`` re-renders the references themselves:
the true asset, path traced with N samples and seeds of their own, in place of the capture's frames
(a phone capture at 16 spp is grainy, and its noise caps every PSNR).

Metrics over the reference's true hand mask (``ground_truth/masks``): linear HDR PSNR with one fixed
peak for the whole reference (the evaluation harness's rule,
:func:`~relit_hands.tools.eval_metrics.reference_settings`) and SSIM
(:func:`~relit_hands.tools.eval_metrics.ssim_masked`), per image, mean and pooled. A pixel the
rendered hand does not cover counts with the renderer's value there (black): a wrong silhouette
costs what it costs in a composite.

A monocular fit cannot tell a dark hand under bright light from a light hand under dim light (the
lighting / albedo scale ambiguity, which ``personalize-eval`` also removes with one global RGB
scale), so every renderer is also scored after one global RGB scale of its images (least squares
over all hand pixels of the reference): ``psnr_*_scaled`` and ``global_scale_rgb`` (1: the right
absolute level). The unscaled numbers are what a user sees; the scaled ones what the fit got right
beyond that one ambiguity.

**Novel views** (``--held-out``): ``--reference`` is then the capture the hand was fitted on, and only
the frames ``fit.json`` held out of the fit are scored, each under its own lighting (the capture's
true map): the issue's "novel views" measure. The personalised, base and true assets are all posed
with the *true* pose and camera of the frame, so the numbers compare assets (shape and appearance),
not the tracker (whose error ``personalize-eval`` reports as held-out keypoint error). Novel views are
path traced by default (``--renderer pathtrace``): the question is how close the personalised asset
is to the person, not how good the student is. Default ``--out``: ``<fit>/novel_views``.

Writes ``report.json`` (every number), ``report.md`` and ``relit_grid.png`` (per image: reference |
fit | base | true, tone-mapped with the same exposure) into ``--out`` (default
``<fit>/relight_<reference name>``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

from relit_hands.validation import int_range

__all__ = ["relight_evaluation"]

RENDERERS = ("fit", "base", "true")


class _StudentRenderers:
    """The assets rendered by a student (the layout's shipped one, or ``student``) through
    :meth:`Engine.render_student`, linear, no background."""

    def __init__(self, assets: dict, student, n_lights: int):
        from relit_hands.engine import Engine

        self.engines = {k: Engine(asset=a, compositor="gl") for k, a in assets.items()}
        self.student, self.n_lights = student, n_lights
        for e in self.engines.values():   # resolve (and check) the student before rendering anything
            e.student_backend(student)
        be = self.engines["fit"].student_backend(student)
        self.info = {"renderer": "student", "n_lights": n_lights,
                     "student": {"path": str(student) if student else "shipped default of the layout",
                                 "backend": be.name, "albedo_of": be.meta.get("albedo_of"),
                                 "key_lights": be.key_lights}}

    def render(self, k: str, scene, env, item) -> np.ndarray:
        f = self.engines[k].render_student(scene, env, item["cam"], student=self.student, n_lights=self.n_lights,
                                           background="none", return_linear=True)
        return np.asarray(f.frames[0].linear, np.float32)[..., :3]

    def release(self) -> None:
        for e in self.engines.values():
            e.release()


class _PathTracedRenderers:
    """The assets rendered by the light stage's path tracer (:class:`~.lightstage.LightStageRenderer`, the
    renderer of the references) with ``spp`` samples under the map, background included: what is left
    between the personalised asset and the reference is the asset's (shape, albedo, normals) and the
    reference's own noise, which the ``true`` asset, rendered with other seeds, measures."""

    def __init__(self, assets: dict, spp: int):
        from . import lightstage as ls

        self.ls, self.spp = ls, int(spp)
        self.tracers = {k: ls.LightStageRenderer(Path(a) / "right_hand.npz" if Path(a).is_dir() else a)
                        for k, a in assets.items()}
        self.info = {"renderer": "pathtrace", "spp": self.spp, "variant": self.tracers["true"].mi.variant()}

    def render(self, k: str, scene, env, item, spp: int | None = None, stream: str = "assets") -> np.ndarray:
        """Asset ``k`` at the item's pose and camera. Every asset is traced with the same seeds (common
        random numbers: two assets' images differ where the assets do), other than the capture's;
        ``stream`` picks another seed set (the re-rendered reference)."""
        tracer = self.tracers[k]
        ms = tracer.build(scene, {item["camera"]: item["cam"]}, env=env)
        seed = self.ls.view_seed(f"personalize-relight-{stream}", item["frame"], item["view_index"])
        return tracer.render(ms, 0, self.spp if spp is None else int(spp), seed)[0]

    def release(self) -> None:
        self.tracers.clear()


def held_out_frames(fit_dir, reference) -> set:
    """The frame numbers ``fit.json`` held out of the fit; raises ``InputFileError`` when the fit has none
    or was not fitted on ``reference`` (its ``inputs.video`` lies outside that capture)."""
    from relit_hands.validation import InputFileError, read_json_file

    fit = read_json_file(Path(fit_dir) / "fit.json", what="--fit: fit summary")
    video = (fit.get("inputs") or {}).get("video")
    if video is None or Path(reference).resolve() not in Path(video).resolve().parents:
        raise InputFileError(f"--held-out: the fit was made from {video}, not from the capture {reference} "
                             "(novel views score the frames of the fitting capture that the fit held out)")
    frames = {int(f["frame"]) for f in fit.get("frames", []) if f.get("held_out")}
    if not frames:
        raise InputFileError(f"--held-out: {Path(fit_dir) / 'fit.json'} holds no frame out of the fit")
    return frames


def _reference_items(ref: Path, max_images: int | None, frames: set | None = None):
    from relit_hands.camera import Camera
    from relit_hands.validation import InputFileError, read_json_file

    gt = read_json_file(ref / "ground_truth" / "frames.json", what="--reference ground-truth frames")
    if frames is not None and not frames <= {int(f["frame"]) for f in gt["frames"]}:
        raise InputFileError(f"--reference {ref}: ground truth lacks frames {sorted(frames)} of the fit")
    items = []
    for fr in gt["frames"]:
        if frames is not None and int(fr["frame"]) not in frames:
            continue
        for vi, v in enumerate(fr["views"]):
            stem = Path(v["image"]).with_suffix("")            # frames/[cam/]000000
            rel = Path(*stem.parts[1:])
            items.append({"frame": int(fr["frame"]), "camera": v["camera"], "view_index": vi,
                          "pose": fr["pose"], "global_orient": fr["global_orient"], "transl": fr["transl"],
                          "cam": Camera(K=np.array(v["K"]), R=np.array(v["R"]), t=np.array(v["t"]),
                                        width=int(v["width"]), height=int(v["height"])),
                          "linear": ref / "frames_linear" / rel.with_suffix(".exr"),
                          "mask": ref / "ground_truth" / "masks" / rel.with_suffix(".png")})
    if max_images is not None and len(items) > max_images:
        keep = np.linspace(0, len(items) - 1, max_images).round().astype(int)
        items = [items[i] for i in sorted(set(keep))]
    return gt, items


def _reference_env(ref: Path):
    from relit_hands.environment import EnvironmentMap
    from relit_hands.validation import read_json_file

    info = read_json_file(ref / "ground_truth" / "environment.json", what="--reference environment")
    env = EnvironmentMap.load(ref / "ground_truth" / info.get("file", "environment.exr"), strict=True)
    env = env.with_exposure(float(info.get("exposure_ev", 0.0)))
    return env.rotate(float(info.get("yaw_deg", 0.0))), info


def relight_evaluation(fit_dir, reference, *, student=None, n_lights: int = 64, max_images: int | None = None,
                       held_out: bool = False, renderer: str | None = None, spp: int = 64,
                       reference_spp: int | None = None,
                       progress: bool = True) -> tuple[dict, np.ndarray]:
    """``(report dict, grid image uint8)``: see the module docstring (``held_out``: the novel-view mode;
    ``renderer``: 'student' or 'pathtrace' (``spp`` samples), default 'pathtrace' for novel views and
    'student' otherwise; ``reference_spp``: re-render the references from the true asset with that many
    samples instead of reading the capture's frames)."""
    from tqdm import tqdm

    from relit_hands.color import tone_map, to_uint8
    from relit_hands.hand_model import asset_path
    from relit_hands.image_io import read_hdr_image, read_png
    from relit_hands.scene import HandState, Scene

    from .eval_metrics import psnr_linear, reference_settings, ssim_masked
    from .evaluate import GlobalScaleFit

    fit_dir, ref = Path(fit_dir), Path(reference)
    for p, what in ((fit_dir / "right_hand.npz", "--fit: the personalised asset"),
                    (ref / "ground_truth" / "frames.json", "--reference: a make-phone-video capture")):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found ({what})")
    frames = held_out_frames(fit_dir, ref) if held_out else None
    gt, items = _reference_items(ref, max_images, frames)
    env, env_info = _reference_env(ref)
    assets = {"fit": fit_dir, "base": asset_path(gt.get("base_asset") or "hand_v2"),
              "true": ref / "ground_truth" / (gt.get("asset") or "asset")}
    renderer = renderer or ("pathtrace" if held_out else "student")
    if renderer == "student":
        renderers = _StudentRenderers(assets, student, n_lights)
    elif renderer == "pathtrace":
        renderers = _PathTracedRenderers(assets, spp)
    else:
        raise ValueError(f"renderer {renderer!r}: expected 'student' or 'pathtrace'")
    reference_tracer = None
    if reference_spp:
        reference_tracer = (renderers if isinstance(renderers, _PathTracedRenderers)
                            else _PathTracedRenderers({"true": assets["true"]}, reference_spp))
    t0 = time.time()
    refs, masks, outs = [], [], {k: [] for k in RENDERERS}
    try:
        for it in tqdm(items, desc="personalize-relight", unit="img", disable=not progress):
            scene = Scene([HandState("right", it["pose"], it["global_orient"], it["transl"])], name="relight")
            refs.append(read_hdr_image(it["linear"]) if reference_tracer is None else
                        reference_tracer.render("true", scene, env, it, reference_spp, stream="reference"))
            m = read_png(it["mask"])
            masks.append((m[..., 0] if m.ndim == 3 else m) > 127)
            for k in RENDERERS:
                outs[k].append(renderers.render(k, scene, env, it))
    finally:
        renderers.release()
        if reference_tracer is not None:
            reference_tracer.release()
    hand = np.concatenate([r[m] for r, m in zip(refs, masks)])
    settings = reference_settings(hand)
    rows = []
    for i, it in enumerate(items):
        row = {"frame": it["frame"], "camera": it["camera"], "hand_pixels": int(masks[i].sum())}
        for k in RENDERERS:
            row[k] = {"psnr": psnr_linear(refs[i], outs[k][i], masks[i], settings.peak),
                      "ssim": ssim_masked(refs[i], outs[k][i], masks[i], settings.peak)}
        rows.append(row)
    summary = {}
    w = np.array([m.sum() for m in masks], np.float64)

    def pooled(images) -> float:
        mse = [np.mean(((images[i] - refs[i])[masks[i]] / settings.peak) ** 2) for i in range(len(items))]
        return float(-10 * np.log10(max(np.sum(np.array(mse) * w) / w.sum(), 1e-20)))

    for k in RENDERERS:
        fit = GlobalScaleFit()
        for o, r, m in zip(outs[k], refs, masks):
            fit.add(r[m], o[m])
        scale = np.array([1.0 if x is None else x for x in fit.result()["scale_rgb"]])
        scaled = [(o * scale).astype(np.float32) for o in outs[k]]
        summary[k] = {"psnr_mean": float(np.mean([r[k]["psnr"] for r in rows])), "psnr_pooled": pooled(outs[k]),
                      "ssim_mean": float(np.mean([r[k]["ssim"] for r in rows])),
                      "global_scale_rgb": [float(x) for x in scale],
                      "psnr_mean_scaled": float(np.mean([psnr_linear(refs[i], scaled[i], masks[i], settings.peak)
                                                         for i in range(len(items))])),
                      "psnr_pooled_scaled": pooled(scaled)}
    summary["fit_minus_base_db"] = {
        m: summary["fit"][f"psnr_{m}"] - summary["base"][f"psnr_{m}"]
        for m in ("mean", "pooled", "mean_scaled", "pooled_scaled")}
    report = {"written_by": "relit-hands", "tool": "relit-hands personalize-relight",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "fit": str(fit_dir), "reference": str(ref),
              "mode": "novel views: held-out frames of the fitting capture" if held_out else "relight",
              "frames": sorted({it["frame"] for it in items}), "assets": {k: str(v) for k, v in assets.items()},
              **renderers.info,
              "environment": {k: env_info.get(k) for k in ("spec", "kind", "family", "seed", "split", "yaw_deg")},
              "images": len(items), "peak": settings.peak,
              "references": (f"re-rendered: the true asset path traced with {reference_spp} spp (other seeds)"
                             if reference_spp else "the capture's frames_linear"),
              "summary": summary, "rows": rows,
              "wall_seconds": time.time() - t0}
    # grid: reference | fit | base | true, one row per image (at most 6 rows)
    pick = np.linspace(0, len(items) - 1, min(6, len(items))).round().astype(int)
    ev = -np.log2(max(settings.peak, 1e-12)) - 0.5
    tiles = []
    for i in sorted(set(pick.tolist())):
        row = [refs[i]] + [outs[k][i] for k in RENDERERS]
        tiles.append(np.concatenate([to_uint8(tone_map(x, ev, "aces")) for x in row], 1))
    return report, np.concatenate(tiles, 0)


def _renderer_text(r: dict) -> str:
    if r.get("renderer") == "pathtrace":
        return f"assets rendered by the references' path tracer ({r['spp']} spp, other seeds)"
    return f"student {r['student']['path']} ({r['student']['backend']})"


def _markdown(r: dict) -> str:
    s = r["summary"]
    title = ("Novel views (held-out frames, their own lighting)" if r.get("mode", "").startswith("novel")
             else "Personalised hand relit by the student")
    lines = [f"# {title}: {Path(r['fit']).name} vs {Path(r['reference']).name}", "",
             f"{r['images']} reference images (path-traced, the true person; {r['references']}), environment "
             f"{r['environment'].get('spec')}; {_renderer_text(r)}; "
             f"hand pixels of the true masks, linear PSNR with one peak ({r['peak']:.4g}).", "",
             "| asset rendered | PSNR mean (dB) | PSNR pooled (dB) | SSIM | after one global RGB scale: mean / pooled (dB) | that scale (R, G, B) |",
             "|---|---:|---:|---:|---:|---|"]
    names = {"fit": "personalised (--fit)", "base": "un-personalised base", "true": "true person (ceiling)"}
    for k in RENDERERS:
        lines.append(f"| {names[k]} | {s[k]['psnr_mean']:.2f} | {s[k]['psnr_pooled']:.2f} | {s[k]['ssim_mean']:.4f} | "
                     f"{s[k]['psnr_mean_scaled']:.2f} / {s[k]['psnr_pooled_scaled']:.2f} | "
                     f"{', '.join(f'{x:.3f}' for x in s[k]['global_scale_rgb'])} |")
    d = s["fit_minus_base_db"]
    lines += ["", f"Personalised minus base: {d['mean']:+.2f} dB mean, {d['pooled']:+.2f} dB pooled; after the "
              f"global scale {d['mean_scaled']:+.2f} dB mean, {d['pooled_scaled']:+.2f} dB pooled.", ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fit", required=True, metavar="FOLDER", help="a personalised asset folder (relit-hands personalize)")
    p.add_argument("--reference", required=True, metavar="FOLDER",
                   help="a make-phone-video capture of the same person under other light (e.g. --views 4)")
    p.add_argument("--student", metavar="FILE", help="student weights (default: the shipped student of the layout)")
    p.add_argument("--lights", type=int_range(32, 1024), default=64, help="feature lights N")
    p.add_argument("--held-out", action="store_true",
                   help="novel views: --reference is the capture the hand was fitted on; score only the frames "
                        "fit.json held out, under their own lighting")
    p.add_argument("--renderer", choices=("student", "pathtrace"), default=None,
                   help="who renders the assets: the student (default) or, the default with --held-out, the "
                        "references' path tracer (then --spp)")
    p.add_argument("--spp", type=int_range(1, 65536), default=64, help="path tracer samples per pixel")
    p.add_argument("--reference-spp", type=int_range(1, 65536), default=None, metavar="SPP",
                   help="re-render the references: the true asset path traced with SPP samples (other seeds than "
                        "the capture's) instead of the capture's frames, whose noise otherwise caps every PSNR")
    p.add_argument("--max-images", type=int_range(1, 100000), default=None, help="evaluate at most this many images")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default: <fit>/relight_<reference name>)")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files relit-hands did not write")
    p.add_argument("--no-progress", action="store_true")


def run_from_args(args, command: str | None = None) -> int:
    from relit_hands.image_io import write_png
    from relit_hands.validation import OutputSet, write_text_atomic

    default = "novel_views" if args.held_out else f"relight_{Path(args.reference).resolve().name}"
    out = Path(args.out) if args.out else Path(args.fit) / default
    outputs = OutputSet(inputs=[args.fit, args.reference, args.student], overwrite=args.overwrite)
    files = {n: out / n for n in ("report.json", "report.md", "relit_grid.png")}
    for n, p in files.items():
        outputs.check(p, f"--out {n}")
    report, grid = relight_evaluation(args.fit, args.reference, student=args.student, n_lights=args.lights,
                                      max_images=args.max_images, held_out=args.held_out, renderer=args.renderer,
                                      spp=args.spp, reference_spp=args.reference_spp,
                                      progress=not args.no_progress)
    report["command"] = command
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(files["report.json"], json.dumps(report, indent=1) + "\n")
    write_text_atomic(files["report.md"], _markdown(report))
    write_png(files["relit_grid.png"], grid)
    print(_markdown(report))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="relit-hands personalize-relight", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
