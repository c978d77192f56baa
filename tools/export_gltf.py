"""``relit-hands export-gltf``: one frame's posed, relit hands as a glTF 2.0 binary (.glb).

The scene and environment options are ``relit-hands render``'s. The neural student relights the
hands as seen from ``render``'s default camera (the framing camera of a 1280x720 image: the
specular features are view dependent), and :func:`relit_hands.gltf_export.export_gltf` writes the
skinned render meshes with the tone-mapped radiance textures. A JSON summary (scene, environment,
camera, student, per-hand vertex / face counts, texture size, timings) is written beside the .glb.
Bad input (unknown preset, unreadable pose / environment / student file, an output that is not
.glb or would overwrite an input file, a --resolution the student was not trained at) prints one
line and exits with status 2; so does an output that exists and was not written by relit-hands
(unless ``--overwrite``). Both files are written under temporary names and moved into place
together; a texture with NaN / inf values is an error, not a black texture.
"""
from __future__ import annotations

import argparse
import time

CAMERA_SIZE = (1280, 720)  # render's default image: its framing camera is the view the textures are for


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..validation import int_range
    from .cli import add_scene_options

    add_scene_options(ap, "export", exposure_help="exposure (EV) applied before tone mapping the textures (-30..30)")
    ap.add_argument("--student", metavar="FILE", help="student weights (.safetensors); default: the shipped model")
    ap.add_argument("--inference", default="auto", help="student inference backend: auto | torch | onnxruntime | tensorrt")
    ap.add_argument("--lights", type=int_range(32, 1024), default=64,
                    help="directional lights of the student's features (N, 32..1024)")
    ap.add_argument("--resolution", type=int_range(16, 4096),
                    help="UV texture size R (must be the student's; default: the student's)")
    ap.add_argument("--no-unlit", action="store_true",
                    help="omit KHR_materials_unlit (viewers then light the already lit texture again)")
    ap.add_argument("--out", default="hands.glb", help="output .glb (a .json summary is written beside it)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace existing output files that relit-hands did not write (never an input)")
    return ap


def run_from_args(args, command: str | None = None) -> int:
    from ..engine import Engine
    from ..gltf_export import build_glb
    from ..student import default_student_path
    from ..validation import OutputSet
    from .cli import _build_scene, _check_out, _dump, _env_input, _load_env

    out = _check_out(args.out, (".glb",), "--out")
    summary_path = out.with_suffix(".json")
    outputs = OutputSet(inputs=[args.pose_right, args.pose_left, args.student, _env_input(args.env)],
                        overwrite=args.overwrite)
    outputs.check(out, "--out")
    outputs.check(summary_path, "summary")
    scene = _build_scene(args)
    env = _load_env(args.env, args.yaw, args.pitch, args.env_exposure)
    t0 = time.perf_counter()
    engine = Engine()
    t_init = (time.perf_counter() - t0) * 1e3
    try:
        camera = engine.default_camera(scene, *CAMERA_SIZE)
        sf = engine.render_student(scene, env, camera, student=args.student, inference=args.inference,
                                   n_lights=args.lights, resolution=args.resolution, readback="none")
        t1 = time.perf_counter()
        data, info = build_glb(engine, scene, sf, exposure_ev=args.exposure, tonemap=args.tonemap,
                               unlit=not args.no_unlit, label=f"export-gltf --out {out}")
        t_export = (time.perf_counter() - t1) * 1e3
    finally:
        engine.release()
    summary = {
        "command": command,
        "scene": scene.to_dict(), "env": env.name, "yaw_deg": args.yaw, "pitch_deg": args.pitch,
        "student": {"path": str(args.student or default_student_path(asset=engine.asset)), "backend": sf.backend,
                    "variant": sf.variant, "resolution": sf.resolution, "lights": args.lights},
        "camera": {"K": camera.K.tolist(), "R": camera.R.tolist(), "t": camera.t.tolist(),
                   "size": list(CAMERA_SIZE)},
        **{k: info[k] for k in ("hands", "unlit", "exposure_ev", "tonemap", "bytes")},
        "output": str(out),
        "timings_ms": {"engine_init": t_init, **{k: v for k, v in sf.timings_ms.items() if not isinstance(v, list)},
                       "export": t_export},
    }
    outputs.add(out, lambda p: p.write_bytes(data), "--out")
    outputs.add(summary_path, lambda p: p.write_text(_dump(summary)), "summary")
    outputs.commit()
    hands = ", ".join(f"{s} {h['vertices']} vertices / {h['faces']} faces" for s, h in info["hands"].items())
    print(f"wrote {out} ({hands}; textures {sf.resolution}x{sf.resolution}, {sf.variant} via {sf.backend}, "
          f"{'unlit' if info['unlit'] else 'PBR'} material); summary {summary_path}")
    return 0
