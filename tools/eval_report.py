"""Report writing of the evaluation harness: ``metrics.json`` (JSON-safe numbers), ``report.md`` with its
tables, the per-frame plot and the comparison grids of :func:`relit_hands.tools.evaluate.evaluate`."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from relit_hands.validation import write_atomic, write_text_atomic

from .eval_metrics import (FLIP_HI_PERCENTILE, FLIP_PPD, LPIPS_NOTE, PSNR_CAP_DB, MetricSettings, _mean,
                           display_transform)


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
    lines = [f"| renderer | {what} | images | PSNR lin (dB) mean ± std | PSNR lin pooled (dB) "
             "| interior mean / pooled (dB) | PSNR disp (dB) | SSIM | FLIP | LPIPS |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, subset, a in rows:
        lines.append(f"| {name} | {subset} | {a['n_images']} | {_fmt(a['psnr_linear'], 2)} ± "
                     f"{_fmt(a['psnr_linear_std'], 2)} | {_fmt(a['psnr_linear_pooled'], 2)} "
                     f"| {_fmt(a.get('psnr_linear_interior'), 2)} / {_fmt(a.get('psnr_linear_interior_pooled'), 2)} "
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
         "- Interior: the same PSNR on the hand pixels minus their one-pixel silhouette ring (pixels with a "
         "neighbour of another label), where the path tracer's pixel mixes the hand with what lies behind it "
         "(the environment, the other hand) and every renderer that draws the hand alone is off.",
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
    if "seam_band" in data:
        L += _seam_section(data, names)
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


def _seam_section(data: dict, names) -> list[str]:
    sb = data["seam_band"]
    L = ["", "### Error along the UV chart borders (seams)", "",
         f"Band: screen pixels whose UV lies within {sb['band_px']} texels (at R = {sb['resolution']}) of a chart "
         f"border of the asset's atlas; interior: pixels farther from every border; both at least "
         f"{sb['edge_px']} px inside the hand's silhouette. MSE as for the linear PSNR, pixel-weighted over the "
         "images; ratio = band / interior (1: no extra error where charts meet; the reference's own error "
         "structure, e.g. finger sides, is in every renderer's ratio alike).", "",
         "| renderer | images | band MSE | interior MSE | ratio |", "|---|---:|---:|---:|---:|"]
    for n in names:
        s = data["results"][n].get("seam_band") or {}
        g = (lambda v: "n/a" if v is None else f"{v:.4g}")
        L.append(f"| {n} | {s.get('n_images', 0)} | {g(s.get('band_mse'))} | {g(s.get('interior_mse'))} | "
                 f"{_fmt(s.get('ratio'), 3)} |")
    return L


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
         "noise-corrected pooled | interior: pooled / ceiling / noise-corrected |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        for g, e in rn["groups"].items():
            r = e["renderers"][n]
            L.append(f"| {n} | {g} | {e['n_images']} | {_fmt(r['psnr_linear'], 2)} | {_fmt(e['ceiling_psnr'], 2)} | "
                     f"{_fmt(r['psnr_linear_pooled'], 2)} | {_fmt(e['ceiling_psnr_pooled'], 2)} | "
                     f"{_fmt(r['psnr_noise_corrected_pooled'], 2)} | "
                     f"{_fmt(r.get('psnr_linear_interior_pooled'), 2)} / {_fmt(e.get('ceiling_psnr_interior_pooled'), 2)}"
                     f" / {_fmt(r.get('psnr_noise_corrected_interior_pooled'), 2)} |")
    return L
