"""Seam measure: how much a renderer's image jumps along the UV chart borders, in screen space.

    relit-hands seam-measure [--student FILE] [--asset DIR] [--scenes clasp shadow ...]
                             [--envs studio sky_sun@160 ...] [--out docs/seams.json]

A UV-space network (the student) predicts every chart on its own, so a chart border on the skin
can show as a crease or a colour step. Measured here:

* **band texture** (:func:`seam_band_texture`): the texels of the asset's atlas within
  ``band_px`` texels (at resolution R) of a chart border, i.e. of a texel of another chart or of
  no chart;
* **screen masks** (:func:`screen_band_masks`): that texture drawn on the posed hands through the
  compositor's UV-texture path gives the pixels on a seam band (value > 0.5); the interior is the
  hand pixels with value < 0.02, both kept ``edge_px`` pixels away from the silhouette (the
  silhouette's own gradient is geometry, not a seam);
* **seam ratio** (:func:`seam_ratio`): with a reference image (a path-traced frame), the mean
  absolute linear error on the band over the mean on the interior; without one, the same ratio
  of the mean squared gradient of linear luminance. 1 = seams are invisible in this measure.

The CLI renders the student and the PBR baseline (whose textures are continuous across charts by
construction) for each scene and environment and reports both gradient ratios; the student's
ratio over PBR's factors out what the band's position on the hand (finger sides, creases) does
to gradients on its own. The student is measured as ``Engine.render_student`` draws it, i.e. with
its textures seam-stitched (:mod:`relit_hands.seam_stitch`); ``--no-seam-stitch`` measures the raw
prediction.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from relit_hands.color import REC709_LUMA
from relit_hands.validation import int_range


def seam_band_texture(uvs, uv_faces, resolution: int, band_px: int = 2) -> np.ndarray:
    """[R, R] float32: 1 on texels within ``band_px`` of a chart border (rows = v, as every UV map
    here), else 0.  ``uvs`` [T, 2], ``uv_faces`` [F, 3]: the atlas (the proxy's; the render mesh
    refines the same charts)."""
    from relit_hands.uv_maps import UVRasterizer

    from .semantic_atlas import uv_charts

    uv = UVRasterizer(uvs, uv_faces, resolution, dilation=0)
    chart = np.where(uv.mask, uv_charts(np.asarray(uv_faces))[np.maximum(uv.tri, 0)], -1)
    r = int(band_px)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = xx * xx + yy * yy <= r * r
    hi = ndimage.maximum_filter(chart, footprint=disk, mode="nearest")
    lo = ndimage.minimum_filter(chart, footprint=disk, mode="nearest")
    return (uv.mask & (hi != lo)).astype(np.float32)


def screen_band_masks(engine, scene, camera, band: np.ndarray, edge_px: int = 3):
    """(band [H, W] bool, interior [H, W] bool) of ``scene`` seen by ``camera``: ``band`` [R, R]
    drawn on both hands (linear, no tone mapping), pixels kept ``edge_px`` from the silhouette."""
    tex = np.repeat(band[..., None], 3, -1).astype(np.float32)
    frame = engine.render(scene, None, camera, shading="uv_texture",
                          radiance_textures={h.side: tex for h in scene.hands}, tonemap="none",
                          background="none", return_linear=True)
    inner = ndimage.binary_erosion(frame.mask, iterations=int(edge_px))
    value = frame.linear[..., 0]
    return inner & (value > 0.5), inner & (value < 0.02)


def _gradient_energy(image: np.ndarray) -> np.ndarray:
    lum = np.asarray(image, np.float64) @ REC709_LUMA
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    gx[:, :-1] = lum[:, 1:] - lum[:, :-1]
    gy[:-1] = lum[1:] - lum[:-1]
    return gx * gx + gy * gy


def seam_ratio(image: np.ndarray, band: np.ndarray, interior: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Band over interior: mean |image - reference| (linear) with a reference, else mean squared
    luminance gradient.  ``image`` / ``reference`` [H, W, 3] linear; masks [H, W] bool."""
    if band.sum() == 0 or interior.sum() == 0:
        raise ValueError("seam_ratio: the band or the interior covers no pixel (a larger view, or a smaller edge_px)")
    if reference is not None:
        err = np.abs(np.asarray(image, np.float64) - np.asarray(reference, np.float64)).mean(-1)
    else:
        err = _gradient_energy(image)
    return float(err[band].mean() / max(err[interior].mean(), 1e-30))


def measure(scenes, envs, *, student=None, asset=None, resolution: int | None = None, band_px: int = 2,
            size=(640, 480), n_lights: int = 64, seam_stitch: bool = True) -> dict:
    """Gradient seam ratios of the student and of PBR for every (scene, environment).
    ``seam_stitch``: as in :meth:`Engine.render_student` (False: the student's raw textures)."""
    from relit_hands.engine import Engine
    from relit_hands.environment import EnvironmentMap
    from relit_hands.scene import scene_preset

    engine = Engine(asset=asset)
    try:
        rows = []
        for scene_name in scenes:
            scene = scene_preset(scene_name)
            camera = engine.default_camera(scene, *size)
            for spec in envs:
                name, _, yaw = spec.partition("@")
                env = EnvironmentMap.from_name_or_path(name).rotate(float(yaw or 0.0), 0.0)
                sf = engine.render_student(scene, env, camera, student=student, n_lights=n_lights,
                                           resolution=resolution, return_linear=True, seam_stitch=seam_stitch)
                R = sf.resolution
                band_tex = seam_band_texture(engine.asset.proxy_uvs, engine.asset.proxy_uv_faces, R, band_px)
                band, interior = screen_band_masks(engine, scene, camera, band_tex)
                pbr = engine.render(scene, env, camera, shading="pbr", return_linear=True)
                rows.append({"scene": scene_name, "env": spec, "band_pixels": int(band.sum()),
                             "interior_pixels": int(interior.sum()),
                             "student": seam_ratio(sf.as_frame().linear, band, interior),
                             "pbr": seam_ratio(pbr.linear, band, interior)})
        st = np.array([r["student"] for r in rows])
        pb = np.array([r["pbr"] for r in rows])
        return {"rows": rows, "student_mean": float(st.mean()), "pbr_mean": float(pb.mean()),
                "student_over_pbr_geomean": float(np.exp(np.mean(np.log(st / pb)))),
                "asset": str(engine.asset.source), "band_px": band_px, "resolution": R, "size": list(size),
                "seam_stitch": bool(seam_stitch)}
    finally:
        engine.release()


def add_arguments(p):
    p.add_argument("--student", metavar="FILE", help="student weights (default: the shipped model)")
    p.add_argument("--asset", metavar="NPZ", help="hand asset (default: the shipped one)")
    p.add_argument("--scenes", nargs="+", default=["clasp", "shadow", "spread", "fist"])
    p.add_argument("--envs", nargs="+", default=["studio", "sky_sun@160", "window", "sunset@90"],
                   help="NAME or NAME@YAW_DEGREES")
    p.add_argument("--band-px", type=int_range(1, 64), default=2,
                   help="band half-width in texels at the student's resolution (1..64)")
    p.add_argument("--no-seam-stitch", dest="seam_stitch", action="store_false",
                   help="measure the student's raw textures (render_student(seam_stitch=False))")
    p.add_argument("--out", type=Path, default=Path("seams.json"))
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file that relit-hands did not write (never an input)")


def build_parser(prog="relit-hands seam-measure"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_arguments(p)
    return p


def run_from_args(args, command: str | None = None) -> int:
    from relit_hands.validation import ArgumentError, OutputSet, check_number

    if args.band_px < 1:
        raise ValueError(f"--band-px must be >= 1, got {args.band_px}")
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise ArgumentError(f"--out {out}: must end in .json")
    for spec in args.envs:  # NAME@YAW: the yaw is checked before anything is rendered
        _, _, yaw = spec.partition("@")
        if yaw:
            check_number(yaw, f"--envs {spec}: yaw", -36000, 36000)
    env_files = [Path(s.partition("@")[0]) for s in args.envs]
    outputs = OutputSet(inputs=[args.student, args.asset, *[p for p in env_files if p.is_file()]],
                        overwrite=getattr(args, "overwrite", False))
    outputs.check(out, "--out")
    res = measure(args.scenes, args.envs, student=args.student, asset=args.asset, band_px=args.band_px,
                  seam_stitch=getattr(args, "seam_stitch", True))
    res = {"written_by": "relit-hands", "command": command, "output": str(out), **res}
    if not all(np.isfinite(v) for v in (res["student_mean"], res["pbr_mean"], res["student_over_pbr_geomean"])):
        from relit_hands.validation import NonFiniteError

        raise NonFiniteError(f"seam-measure --out {out}: the measured ratios are not finite; nothing was written")
    outputs.add(out, lambda p: p.write_text(json.dumps(res, indent=1) + "\n"), "--out")
    outputs.commit()
    for r in res["rows"]:
        print(f"{r['scene']:>10s} {r['env']:>12s}: student {r['student']:.2f}, pbr {r['pbr']:.2f} "
              f"({r['band_pixels']} band / {r['interior_pixels']} interior pixels)")
    print(f"mean gradient ratio (band / interior): student {res['student_mean']:.2f}, pbr {res['pbr_mean']:.2f}; "
          f"student / pbr (geometric mean) {res['student_over_pbr_geomean']:.2f}; wrote {args.out}")
    return 0


def main(argv=None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
