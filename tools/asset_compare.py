"""Compare two hand assets' UV layouts and looks: one figure and one JSON.

    relit-hands compare-assets [--assets models/hand models/hand_v2] [--pose flat] [--env studio]
                               [--out docs/hand_asset_v2.png]

For each asset: its UV charts (each chart one colour, seams drawn), the albedo texture, and the
PBR baseline render of the palm and the back of the hand; the JSON beside the figure holds each
layout's chart count, seam length, texel utilisation, area stretch and charts per finger
(:func:`relit_hands.tools.semantic_atlas.atlas_report`, measured on the proxy) and the render
settings.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from relit_hands.validation import check_finite_image, int_range

from .semantic_atlas import atlas_report, finger_of_faces, uv_charts


def _asset_report(asset_dir: Path) -> dict:
    from relit_hands.hand_model import HandAsset
    from relit_hands.image_io import read_png

    from .hand_shape import HandSDF, build_skeleton

    asset = HandAsset.load(asset_dir / "right_hand.npz")
    meta = json.loads((asset_dir / "asset.json").read_text()) if (asset_dir / "asset.json").exists() else {}
    params = meta.get("params", {})
    skeleton = build_skeleton(float(params.get("scale", 1.0)))
    sdf = HandSDF(skeleton, forearm=int(params.get("version", 1)) >= 2)
    v, f = asset.proxy_vertices.astype(np.float64), asset.proxy_faces
    coverage = float(meta.get("uv_coverage", np.nan))
    report = atlas_report(v, f, asset.proxy_uvs.astype(np.float64), asset.proxy_uv_faces, coverage,
                          finger_of_faces(v, f, skeleton, sdf))
    return {"asset": asset, "albedo": read_png(asset_dir / "albedo.png")[..., :3], "report": report,
            "version": int(params.get("version", 1))}


def _draw_layout(ax, asset, title):
    from matplotlib import cm
    from matplotlib.collections import PolyCollection

    charts = uv_charts(asset.proxy_uv_faces)
    tri = asset.proxy_uvs[asset.proxy_uv_faces]
    colours = cm.tab20(charts % 20)
    ax.add_collection(PolyCollection(tri, facecolors=colours, edgecolors=(0, 0, 0, 0.15), linewidths=0.2))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _renders(asset_dir: Path, pose_name: str, env_name: str, size: int) -> list:
    """PBR renders of the right hand in pose preset ``pose_name`` (no global rotation, so the
    rest frame's palm normal -Y faces the 'palm' camera) from the palm and from the back."""
    from relit_hands.engine import Engine
    from relit_hands.environment import EnvironmentMap
    from relit_hands.poses import pose_preset
    from relit_hands.scene import HandState, Scene

    engine = Engine(asset=asset_dir / "right_hand.npz")
    try:
        env = EnvironmentMap.from_name_or_path(env_name)
        out = []
        for label, direction in (("palm", (0.15, -1.0, 0.2)), ("back", (0.15, 1.0, 0.2))):
            scene = Scene([HandState("right", np.asarray(pose_preset(pose_name, "right", engine.asset), np.float32))], view_direction=direction)
            frame = engine.render(scene, env, shading="pbr", width=size, height=size, return_linear=True)
            check_finite_image(frame.linear, f"compare-assets ({asset_dir} {label} render)")
            out.append((label, frame.image))
        return out
    finally:
        engine.release()


def compare(asset_dirs, out: Path, pose: str = "flat", env: str = "studio", size: int = 384, *,
            overwrite: bool = False, command: str | None = None) -> dict:
    """Write the figure ``out`` (.png) and its summary ``out.with_suffix('.json')``: both under
    temporary names, moved into place together; an existing file relit-hands did not write, or an
    input of the command, is refused (:class:`~relit_hands.validation.OutputSet`)."""
    from relit_hands.validation import ArgumentError, OutputSet, check_number

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ArgumentError(f"--out {out}: must end in .png")
    size = check_number(size, "--size", 32, 4096, integer=True)
    env_file = Path(env) if Path(env).is_file() else None
    inputs = [env_file] + [p for d in asset_dirs for p in Path(d).glob("*") if p.is_file()]
    outputs = OutputSet(inputs=inputs, overwrite=overwrite)
    outputs.check(out, "--out")
    outputs.check(out.with_suffix(".json"), "summary")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for d in asset_dirs:
        d = Path(d)
        if not (d / "right_hand.npz").is_file():
            raise FileNotFoundError(f"{d}: no right_hand.npz (an asset folder written by `relit-hands build-asset`)")
        r = _asset_report(d)
        r["renders"] = _renders(d, pose, env, size)
        r["dir"] = d
        rows.append(r)
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.9 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        rep = r["report"]
        _draw_layout(ax_row[0], r["asset"],
                     f"{r['dir'].name} (v{r['version']}): {rep['charts']} charts, seams {rep['seam_length_m']:.2f} m,\n"
                     f"utilisation {rep['texel_utilisation']:.0%}, |log2 area ratio| {rep['area_stretch']['mean_abs_log2']:.3f}")
        ax_row[1].imshow(r["albedo"], origin="lower")
        ax_row[1].set_title("albedo (v up)", fontsize=9)
        for ax, (label, img) in zip(ax_row[2:], r["renders"]):
            ax.imshow(img)
            ax.set_title(f"PBR, {env}: {label}", fontsize=9)
        for ax in ax_row[1:]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    summary = {"written_by": "relit-hands", "command": command, "figure": str(out), "output": str(out),
               "pose": pose, "env": env, "render_size": size,
               "assets": {str(r["dir"]): {"version": r["version"], **r["report"]} for r in rows}}
    try:
        outputs.add(out, lambda p: fig.savefig(p, dpi=90, format="png"), "--out")
        outputs.add(out.with_suffix(".json"), lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"), "summary")
        outputs.commit()
    finally:
        plt.close(fig)
    return summary


def build_parser(prog="relit-hands compare-assets"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_arguments(p)
    return p


def add_arguments(p):
    p.add_argument("--assets", nargs="+", default=["models/hand", "models/hand_v2"], help="asset folders")
    p.add_argument("--pose", default="flat", help="pose preset of the rendered right hand (see `relit-hands list`)")
    p.add_argument("--env", default="studio")
    p.add_argument("--size", type=int_range(32, 4096), default=384, help="render size (pixels, square, 32..4096)")
    p.add_argument("--out", type=Path, default=Path("docs/hand_asset_v2.png"))
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files that relit-hands did not write (never an input)")


def run_from_args(args, command: str | None = None) -> int:
    summary = compare(args.assets, args.out, args.pose, args.env, args.size,
                      overwrite=getattr(args, "overwrite", False), command=command)
    for name, rep in summary["assets"].items():
        print(f"{name}: v{rep['version']}, {rep['charts']} charts, seams {rep['seam_length_m']:.3f} m, "
              f"utilisation {rep['texel_utilisation']:.3f}, area stretch |log2| {rep['area_stretch']['mean_abs_log2']:.3f} "
              f"(p05 {rep['area_stretch']['p05']:.2f}, p95 {rep['area_stretch']['p95']:.2f}), "
              f"charts per finger {rep['charts_per_finger']}")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


def main(argv=None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
