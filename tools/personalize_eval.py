r"""``relit-hands personalize-eval``: how close a personalised hand (``relit-hands personalize``) is to the
truth of a synthetic capture (``relit-hands make-phone-video``'s ``ground_truth/``).

    relit-hands personalize-eval --fit my_hand/ --capture capture_dir/ [--out report_dir] [--overwrite]

Measures (each also for the un-personalised base asset ``hand_v2`` where it makes sense):

(a) **albedo PSNR** over the covered texels: the fitted ``albedo.png`` (decoded to linear) against
    ``ground_truth/albedo.exr`` (the person's true linear albedo, same atlas) after ONE
    least-squares scale per RGB channel (``k_c = sum f t / sum f^2`` over the texels): lighting and
    albedo are only known up to that scale from uncalibrated images. ``PSNR = 10 log10(1 / MSE)``
    (linear reflectance, peak 1), MSE over the covered texels and channels. Covered texels:
    ``coverage.png >= 128`` (observed with confidence >= 0.5) and inside the UV charts. The base
    asset's albedo is scored on the *same* texels with its own per-channel scale. An sRGB-encoded PSNR
    (after the same scales) is reported beside it, since linear PSNR weights bright texels most.
(b) **rest-pose vertex error**: mean (and 95th percentile) Euclidean distance in millimetres between
    the fitted and the true person asset's ``render_vertices`` (same topology, vertex to vertex, both
    in the canonical rest frame); also for the base asset, and -- because one camera cannot tell a
    larger hand farther away from a smaller one nearer -- after the best uniform scale about the
    wrist (``s = sum f.t / sum f.f``), for both.
(c) **3-D keypoint error** in millimetres: the fitted asset's 21 keypoints
    (``HandModel(fitted)(pose, global_orient, transl)`` of ``fit.json``, MediaPipe order) against
    ``ground_truth/frames.json``'s ``keypoints_3d``, mean per frame and over frames, separately for
    the held-out and the fitted frames. A monocular fit lives in the phone's camera frame
    (``fit.json`` ``reference_frame = 'camera'``): the true keypoints are moved into each frame's
    true camera frame (``R x + t``) first; a multi-view fit is compared in the world. Reported both
    absolute and root-relative (both skeletons translated so their wrists coincide: the usual
    "MPJPE after root alignment", which takes out the monocular depth ambiguity of the root).
    A monocular fit is also scored **size-aligned**: perspective projection is unchanged when the
    whole scene is scaled about the camera centre, so from one camera a hand s times larger and s
    times farther is the same video, and the fit's absolute size comes only from its shape prior.
    One scale about the camera centre, ``s = sum f.t / sum f.f`` over the keypoints of the *fitted*
    frames, is applied to every frame's fitted keypoints (``size_scale``; the held-out frames do not
    choose it), like the one RGB scale of (a): ``size_aligned_mm`` is what is left once the size
    is right.

Writes ``report.json`` (machine-readable, every number), ``report.md`` (a small table) and
``albedo_comparison.png`` (true | fitted | base, each with its least-squares scale, sRGB, and the
absolute error of the fitted albedo x4; uncovered texels dimmed) into ``--out`` (default:
``<fit>/eval``), atomically (:class:`relit_hands.validation.OutputSet`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from relit_hands.validation import InputFileError

__all__ = ["albedo_psnr", "vertex_error_mm", "camera_centre_scale", "keypoint_errors_mm", "evaluate_personalization",
           "add_arguments", "run_from_args", "main"]

COVERED = 128


def _scale_fit(fitted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """[3] per-channel least-squares scale k minimising |k f - t|^2 (fitted, true: [N, 3])."""
    return (fitted * true).sum(0) / np.maximum((fitted * fitted).sum(0), 1e-12)


def albedo_psnr(fitted: np.ndarray, true: np.ndarray, mask: np.ndarray) -> dict:
    """PSNR (dB) of ``fitted`` vs ``true`` (both [R, R, 3] linear) over ``mask`` [R, R] after one
    least-squares scale per channel: ``{'psnr_db', 'psnr_srgb_db', 'scale' [3], 'rmse', 'texels'}``."""
    from relit_hands.image_io import linear_to_srgb

    f, t = fitted[mask].astype(np.float64), true[mask].astype(np.float64)
    if not len(f):
        return {"psnr_db": None, "psnr_srgb_db": None, "scale": None, "rmse": None, "texels": 0}
    k = _scale_fit(f, t)
    fs = f * k
    mse = float(((fs - t) ** 2).mean())
    mse_s = float(((linear_to_srgb(np.clip(fs, 0, 1)) - linear_to_srgb(np.clip(t, 0, 1))) ** 2).mean())
    return {"psnr_db": round(10 * np.log10(1.0 / max(mse, 1e-20)), 3),
            "psnr_srgb_db": round(10 * np.log10(1.0 / max(mse_s, 1e-20)), 3),
            "scale": np.round(k, 5).tolist(), "rmse": round(float(np.sqrt(mse)), 6), "texels": int(mask.sum())}


def vertex_error_mm(vertices: np.ndarray, true: np.ndarray, origin: np.ndarray) -> dict:
    """Vertex-to-vertex error (mm) of rest meshes [V, 3]: mean, p95, max, and the mean after the
    best uniform scale about ``origin`` (the wrist joint)."""
    v, t = vertices.astype(np.float64) - origin, true.astype(np.float64) - origin
    d = np.linalg.norm(v - t, axis=1) * 1e3
    s = float((v * t).sum() / max((v * v).sum(), 1e-20))
    ds = np.linalg.norm(s * v - t, axis=1) * 1e3
    return {"mean_mm": round(float(d.mean()), 4), "p95_mm": round(float(np.percentile(d, 95)), 4),
            "max_mm": round(float(d.max()), 4), "scale_aligned_mean_mm": round(float(ds.mean()), 4),
            "best_scale": round(s, 5)}


def camera_centre_scale(fitted: np.ndarray, true: np.ndarray) -> float:
    """The least-squares ``s`` of ``s * fitted ~ true`` (points [N, 3] in the camera frame, the
    camera at the origin): the one size / distance of a monocular fit that the video cannot fix."""
    fitted, true = np.asarray(fitted, np.float64), np.asarray(true, np.float64)
    return float((fitted * true).sum() / max((fitted * fitted).sum(), 1e-30))


def keypoint_errors_mm(fit: dict, asset_dir: Path, gt: dict) -> dict:
    """Per-frame 3-D keypoint errors (mm) of ``fit.json``'s frames against ``frames.json``."""
    from relit_hands.hand_model import HandModel
    from relit_hands.tracking import KP21_TO_KEYPOINT

    model = HandModel(asset_dir)
    gt_frames = {int(g["frame"]): g for g in gt["frames"]}
    rows, fitted_kp = [], []
    for fr in fit["frames"]:
        n = int(fr["frame"])
        if n not in gt_frames:
            raise InputFileError(f"ground truth has no frame {n} (the fit and the capture do not match)")
        g = gt_frames[n]
        out = model(np.asarray(fr["pose"]), np.asarray(fr["global_orient"]), np.asarray(fr["transl"]), meshes=())
        kp = out.keypoints[0].double().numpy()[KP21_TO_KEYPOINT]
        true = np.asarray(g["keypoints_3d"], np.float64)
        if fit.get("reference_frame") == "camera":
            v = g["views"][0]
            true = true @ np.asarray(v["R"]).T + np.asarray(v["t"])
        d = np.linalg.norm(kp - true, axis=1) * 1e3
        dr = np.linalg.norm((kp - kp[0]) - (true - true[0]), axis=1) * 1e3
        rows.append({"frame": n, "held_out": bool(fr["held_out"]), "mean_mm": float(d.mean()),
                     "root_relative_mm": float(dr.mean())})
        fitted_kp.append((kp, true))
    monocular = fit.get("reference_frame") == "camera"
    train = [kt for kt, r in zip(fitted_kp, rows) if not r["held_out"]]
    size = None
    if monocular and train:
        size = camera_centre_scale(np.concatenate([k for k, _ in train]), np.concatenate([t for _, t in train]))
        for (kp, true), r in zip(fitted_kp, rows):
            r["size_aligned_mm"] = float(np.linalg.norm(size * kp - true, axis=1).mean() * 1e3)

    def agg(sel):
        out = {"frames": len(sel), "mean_mm": None, "root_relative_mm": None}
        if sel:
            out.update(mean_mm=round(float(np.mean([r["mean_mm"] for r in sel])), 3),
                       root_relative_mm=round(float(np.mean([r["root_relative_mm"] for r in sel])), 3))
        if size is not None:
            out["size_aligned_mm"] = round(float(np.mean([r["size_aligned_mm"] for r in sel])), 3) if sel else None
        return out

    return {"held_out": agg([r for r in rows if r["held_out"]]), "fitted": agg([r for r in rows if not r["held_out"]]),
            "size_scale": None if size is None else round(size, 5),
            "per_frame": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}


def _tile(img_linear: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    from relit_hands.image_io import linear_to_srgb

    s = np.clip(linear_to_srgb(np.clip(img_linear, 0, 1)), 0, 1)
    s = np.where(mask[..., None], s, 0.25 * s + 0.1)
    im = Image.fromarray(np.rint(s * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(im)


def evaluate_personalization(fit_dir, capture_dir) -> tuple:
    """(report dict, albedo comparison image uint8 [H, W, 3]) of a personalised asset folder against a
    make-phone-video capture (module docstring)."""
    from relit_hands.hand_model import HandAsset, asset_path
    from relit_hands.image_io import ImageReadError, read_albedo_linear, read_hdr_image, read_png
    from relit_hands.uv_maps import rasterize_uv
    from relit_hands.validation import read_json_file

    from .contact_sheet import grid, label_tile

    fit_dir, capture_dir = Path(fit_dir), Path(capture_dir)
    gt_dir = capture_dir / "ground_truth"
    for p, what in ((fit_dir / "fit.json", "--fit: fit.json"), (fit_dir / "right_hand.npz", "--fit: right_hand.npz"),
                    (fit_dir / "albedo.png", "--fit: albedo.png"), (fit_dir / "coverage.png", "--fit: coverage.png"),
                    (gt_dir / "frames.json", "--capture: ground_truth/frames.json"),
                    (gt_dir / "albedo.exr", "--capture: ground_truth/albedo.exr"),
                    (gt_dir / "asset" / "right_hand.npz", "--capture: ground_truth/asset/right_hand.npz")):
        if not p.is_file():
            raise InputFileError(f"{what} not found ({p})")
    fit = read_json_file(fit_dir / "fit.json", what="fit summary")
    gt = read_json_file(gt_dir / "frames.json", what="ground-truth frames")
    try:
        fitted_albedo = read_albedo_linear(fit_dir / "albedo.png")
        coverage = read_png(fit_dir / "coverage.png")[..., 0]
        true_albedo = read_hdr_image(gt_dir / "albedo.exr")[..., :3]
    except ImageReadError as e:
        raise InputFileError(str(e)) from None
    base_npz = asset_path(gt.get("base_asset") or "hand_v2")
    base_albedo = read_albedo_linear(base_npz.parent / "albedo.png")
    if not (fitted_albedo.shape == true_albedo.shape == base_albedo.shape and coverage.shape == fitted_albedo.shape[:2]):
        raise InputFileError(f"albedo sizes differ: fitted {fitted_albedo.shape}, true {true_albedo.shape}, base "
                             f"{base_albedo.shape}, coverage {coverage.shape}")
    fitted = HandAsset.load(fit_dir)
    true = HandAsset.load(gt_dir / "asset")
    base = HandAsset.load(base_npz)
    if fitted.render_vertices.shape != true.render_vertices.shape:
        raise InputFileError("the fitted and the true asset have different topologies")
    R = fitted_albedo.shape[0]
    tri, _ = rasterize_uv(true.render_uvs, true.render_uv_faces, R)
    charts = tri >= 0
    covered = charts & (coverage >= COVERED)
    origin = true.joints[0].astype(np.float64)
    report = {
        "written_by": "relit-hands", "format": "relit-hands personalize-eval", "version": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fit": str(fit_dir), "capture": str(capture_dir),
        "albedo": {"covered_fraction_of_charts": round(float(covered.sum() / max(charts.sum(), 1)), 5),
                   "fitted": albedo_psnr(fitted_albedo, true_albedo, covered),
                   "base": albedo_psnr(base_albedo, true_albedo, covered),
                   "fitted_all_chart_texels": albedo_psnr(fitted_albedo, true_albedo, charts),
                   "base_all_chart_texels": albedo_psnr(base_albedo, true_albedo, charts)},
        "rest_vertices": {"fitted": vertex_error_mm(fitted.render_vertices, true.render_vertices, origin),
                          "base": vertex_error_mm(base.render_vertices, true.render_vertices, origin)},
        "keypoints_3d": keypoint_errors_mm(fit, fit_dir, gt),
        "reference_frame": fit.get("reference_frame"),
        "shape": {"fitted": fit.get("shape"), "true": gt.get("shape")},
    }
    # image: true | fitted | base | |fitted - true| x 4
    kf = np.asarray(report["albedo"]["fitted"]["scale"] or [1, 1, 1])
    kb = np.asarray(report["albedo"]["base"]["scale"] or [1, 1, 1])
    size = min(R, 512)
    err = np.abs(fitted_albedo * kf - true_albedo) * 4.0
    tiles = [label_tile(_tile(true_albedo, charts, size), "true (ground_truth/albedo.exr)", size=13),
             label_tile(_tile(fitted_albedo * kf, covered, size), "fitted x per-channel LS scale (dim: uncovered)",
                        size=13),
             label_tile(_tile(base_albedo * kb, covered, size), "base hand_v2 x its LS scale", size=13),
             label_tile(_tile(err, covered, size), "|fitted - true| x 4 (linear)", size=13)]
    return report, grid(tiles, 4)


def _markdown(r: dict) -> str:
    a, v, k = r["albedo"], r["rest_vertices"], r["keypoints_3d"]

    def f(x, nd=2):
        return "n/a" if x is None else f"{x:.{nd}f}"

    lines = [
        "# Personalisation against the ground truth", "",
        f"Fit `{r['fit']}` against capture `{r['capture']}` ({r['date']}); reference frame: {r['reference_frame']}.",
        "",
        "| measure | personalised | base hand_v2 |", "|---|---|---|",
        f"| albedo PSNR, covered texels (linear, dB) | {f(a['fitted']['psnr_db'])} | {f(a['base']['psnr_db'])} |",
        f"| albedo PSNR, covered texels (sRGB, dB) | {f(a['fitted']['psnr_srgb_db'])} | {f(a['base']['psnr_srgb_db'])} |",
        f"| albedo PSNR, all chart texels (linear, dB) | {f(a['fitted_all_chart_texels']['psnr_db'])} | "
        f"{f(a['base_all_chart_texels']['psnr_db'])} |",
        f"| rest-pose vertex error, mean (mm) | {f(v['fitted']['mean_mm'])} | {f(v['base']['mean_mm'])} |",
        f"| rest-pose vertex error, p95 (mm) | {f(v['fitted']['p95_mm'])} | {f(v['base']['p95_mm'])} |",
        f"| vertex error after best uniform scale (mm) | {f(v['fitted']['scale_aligned_mean_mm'])} | "
        f"{f(v['base']['scale_aligned_mean_mm'])} |",
        "", f"Covered texels: {100 * a['covered_fraction_of_charts']:.1f} % of the UV charts "
            f"({a['fitted']['texels']} texels); per-channel scales: fitted {a['fitted']['scale']}, base "
            f"{a['base']['scale']}.", "",
        "| 3-D keypoints (mm) | frames | mean | root-relative | size-aligned (monocular) |", "|---|---|---|---|---|",
        f"| held-out frames | {k['held_out']['frames']} | {f(k['held_out']['mean_mm'])} | "
        f"{f(k['held_out']['root_relative_mm'])} | {f(k['held_out'].get('size_aligned_mm'))} |",
        f"| fitted frames | {k['fitted']['frames']} | {f(k['fitted']['mean_mm'])} | "
        f"{f(k['fitted']['root_relative_mm'])} | {f(k['fitted'].get('size_aligned_mm'))} |",
        "", "![albedo comparison](albedo_comparison.png)", "",
        "Albedo PSNR is after one least-squares scale per channel (the lighting / albedo ambiguity); vertex errors "
        "are vertex-to-vertex in the canonical rest frame; keypoint errors compare the fitted model's keypoints "
        "with frames.json's keypoints_3d. Size-aligned: after one scale about the camera centre fitted on the fitted "
        f"frames (s = {f(k.get('size_scale'), 4)}): one camera cannot tell a hand's size from its distance.", ""]
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--fit", required=True, metavar="FOLDER", help="a personalised asset folder (relit-hands personalize)")
    ap.add_argument("--capture", required=True, metavar="FOLDER", help="the make-phone-video capture it was fitted on")
    ap.add_argument("--out", metavar="FOLDER", help="report folder (default: <fit>/eval)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing report files relit-hands did not write")


def run_from_args(args, command: str | None = None) -> int:
    from relit_hands.image_io import write_png
    from relit_hands.validation import OutputSet

    out = Path(args.out) if args.out else Path(args.fit) / "eval"
    outputs = OutputSet(inputs=[Path(args.fit) / "fit.json", Path(args.fit) / "albedo.png"], overwrite=args.overwrite)
    for name in ("report.json", "report.md", "albedo_comparison.png"):
        outputs.check(out / name, name)
    report, image = evaluate_personalization(args.fit, args.capture)
    report["command"] = command or "relit-hands personalize-eval (Python API)"
    report["outputs"] = ["report.json", "report.md", "albedo_comparison.png"]
    outputs.add(out / "report.json", lambda p: p.write_text(json.dumps(report, indent=1) + "\n"), "report.json")
    outputs.add(out / "report.md", lambda p: p.write_text(_markdown(report)), "report.md")
    outputs.add(out / "albedo_comparison.png", lambda p: write_png(p, image), "albedo_comparison.png")
    outputs.commit()
    a, v, k = report["albedo"], report["rest_vertices"], report["keypoints_3d"]
    print(f"personalize-eval: albedo PSNR {a['fitted']['psnr_db']} dB (base {a['base']['psnr_db']}) on "
          f"{100 * a['covered_fraction_of_charts']:.0f} % of the charts; vertex error {v['fitted']['mean_mm']} mm "
          f"(base {v['base']['mean_mm']}); keypoints held-out {k['held_out']['mean_mm']} mm "
          f"(root-relative {k['held_out']['root_relative_mm']}); report in {out}")
    return 0


def main(argv=None) -> int:
    from relit_hands.validation import OneLineParser

    ap = OneLineParser(prog="relit-hands personalize-eval", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run_from_args(args, "relit-hands personalize-eval " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
