"""``relit-hands export-gltf``: one frame's posed, relit hands as a glTF 2.0 binary (.glb).

The scene and environment options are ``relit-hands render``'s. The neural student relights the
hands as seen from ``render``'s default camera (the framing camera of a 1280x720 image: the
specular features are view dependent), and :func:`relit_hands.gltf_export.export_gltf` writes the
skinned render meshes with the tone-mapped radiance textures. A JSON summary (scene, environment,
camera, student, per-hand vertex / face counts, texture size, timings) is written beside the .glb.
Bad input (unknown preset, unreadable pose / environment / student file, an output that is not
.glb or would overwrite an input file, a --resolution the student was not trained at) prints one
line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

CAMERA_SIZE = (1280, 720)  # render's default image: its framing camera is the view the textures are for


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--scene", default="clasp", help="two-hand scene or single-hand pose preset (see `list`)")
    ap.add_argument("--pose-right", metavar="FILE", help="right-hand pose file (.json/.npz), overrides the scene's")
    ap.add_argument("--pose-left", metavar="FILE", help="left-hand pose file (.json/.npz), overrides the scene's")
    ap.add_argument("--hands", choices=("auto", "right", "left", "both"), default="auto",
                    help="which hands to export (auto: the scene's and any given pose files)")
    ap.add_argument("--env", default="studio", help="shipped environment name or .hdr/.exr path")
    ap.add_argument("--yaw", type=float, default=0.0, help="environment rotation about +Y (degrees)")
    ap.add_argument("--pitch", type=float, default=0.0, help="environment rotation about +X (degrees)")
    ap.add_argument("--env-exposure", type=float, default=0.0, help="scale the environment by 2^EV")
    ap.add_argument("--exposure", type=float, default=0.0, help="exposure (EV) applied before tone mapping the textures")
    ap.add_argument("--tonemap", choices=("aces", "filmic", "none"), default="aces")
    ap.add_argument("--student", metavar="FILE", help="student weights (.safetensors); default: the shipped model")
    ap.add_argument("--backend", default="auto", help="student inference backend: auto | torch | onnxruntime | tensorrt")
    ap.add_argument("--lights", type=int, default=64, help="directional lights of the student's features (N)")
    ap.add_argument("--resolution", type=int, help="UV texture size R (must be the student's; default: the student's)")
    ap.add_argument("--no-unlit", action="store_true",
                    help="omit KHR_materials_unlit (viewers then light the already lit texture again)")
    ap.add_argument("--out", default="hands.glb", help="output .glb (a .json summary is written beside it)")
    return ap


def _refuse_overwriting_inputs(outputs, args) -> None:
    """UserError if an output path is one of the command's input files."""
    from .cli import UserError

    inputs = [p for p in (args.pose_right, args.pose_left, args.student, args.env) if p and Path(p).is_file()]
    for out in outputs:
        for inp in inputs:
            if out.exists() and os.path.samefile(out, inp):
                raise UserError(f"--out {args.out}: writing {out} would overwrite the input file {inp}")


def run_from_args(args, command: str | None = None) -> int:
    from ..engine import Engine
    from ..gltf_export import export_gltf
    from ..student import default_student_path
    from .cli import UserError, _build_scene, _load_env

    out = Path(args.out)
    if out.suffix.lower() != ".glb":
        raise UserError(f"--out {args.out}: the output must be a .glb file")
    summary_path = out.with_suffix(".json")
    _refuse_overwriting_inputs((out, summary_path), args)
    scene = _build_scene(args)
    env = _load_env(args.env, args.yaw, args.pitch, args.env_exposure)
    t0 = time.perf_counter()
    engine = Engine()
    t_init = (time.perf_counter() - t0) * 1e3
    try:
        camera = engine.default_camera(scene, *CAMERA_SIZE)
        sf = engine.render_student(scene, env, camera, student=args.student, backend=args.backend,
                                   n_lights=args.lights, resolution=args.resolution, readback="none")
        t1 = time.perf_counter()
        info = export_gltf(out, engine, scene, sf, exposure_ev=args.exposure, tonemap=args.tonemap,
                           unlit=not args.no_unlit)
        t_export = (time.perf_counter() - t1) * 1e3
    finally:
        engine.release()
    summary = {
        "command": command,
        "scene": scene.to_dict(), "env": env.name, "yaw_deg": args.yaw, "pitch_deg": args.pitch,
        "student": {"path": str(args.student or default_student_path()), "backend": sf.backend,
                    "variant": sf.variant, "resolution": sf.resolution, "lights": args.lights},
        "camera": {"K": camera.K.tolist(), "R": camera.R.tolist(), "t": camera.t.tolist(),
                   "size": list(CAMERA_SIZE)},
        **{k: info[k] for k in ("hands", "unlit", "exposure_ev", "tonemap", "bytes")},
        "output": str(out),
        "timings_ms": {"engine_init": t_init, **{k: v for k, v in sf.timings_ms.items() if not isinstance(v, list)},
                       "export": t_export},
    }
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    hands = ", ".join(f"{s} {h['vertices']} vertices / {h['faces']} faces" for s, h in info["hands"].items())
    print(f"wrote {out} ({hands}; textures {sf.resolution}x{sf.resolution}, {sf.variant} via {sf.backend}, "
          f"{'unlit' if info['unlit'] else 'PBR'} material); summary {summary_path}")
    return 0
