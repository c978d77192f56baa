"""``relit-hands``: the command-line entry point.

Subcommands: see ``relit-hands --help``. User errors (a missing
file, a corrupt HDR, a pose of the wrong shape, an unknown preset) print one line naming the
problem and exit with status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from ..validation import (ArgumentError, OneLineParser, OutputSet, check_finite_image, check_number,
                          finite_float, int_range)


class UserError(Exception):
    """An error caused by the command line or the user's files; printed without a traceback."""


ANGLE = finite_float(-36000.0, 36000.0)  # degrees
EV = finite_float(-30.0, 30.0)  # exposure stops: 2^30 is far beyond any display or map


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H) for argparse, 16..8192 per side."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size {w}x{h} out of range (16..8192 per side)")
    return w, h


def _load_env(spec: str, yaw: float, pitch: float, exposure: float):
    import numpy as np

    from ..environment import EnvironmentMap

    env = EnvironmentMap.from_name_or_path(spec)
    if yaw or pitch:
        env = env.rotate(yaw, pitch)
    if exposure:
        env = env.with_exposure(exposure)
    with np.errstate(over="ignore", invalid="ignore"):
        energy = np.asarray(env.total_energy(), np.float64)
    if not np.isfinite(energy).all() or float(np.max(energy) * 1.0) > 1e30:
        raise UserError(f"environment {spec}: its radiance overflows at {exposure:+g} EV (lower --env-exposure)")
    return env


def _env_input(spec: str):
    """The environment's file when ``spec`` names one (an input a command must never overwrite)."""
    p = Path(spec)
    return p if p.is_file() else None


def _check_out(path: str, suffixes: tuple, option: str) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ArgumentError(f"{option} {path}: must end in {' or '.join(suffixes)}")
    return p


def _dump(obj) -> str:
    return json.dumps({"written_by": "relit-hands", **obj}, indent=1) + "\n"


def add_scene_options(p: argparse.ArgumentParser, what: str = "draw", *, scene: str = "clasp", env: str = "studio",
                      yaw: float = 0.0, exposure: bool = True,
                      exposure_help: str = "camera exposure (EV) before tone mapping (-30..30)") -> argparse.ArgumentParser:
    """The scene / environment options shared by ``render``, ``features`` and ``export-gltf``:
    ``--scene --pose-right --pose-left --hands --env --yaw --pitch`` and, with ``exposure``,
    ``--env-exposure --exposure --tonemap`` -- every number with its bounded type (:data:`ANGLE`,
    :data:`EV`). ``what``: the verb of ``--hands``' help ("which hands to draw")."""
    p.add_argument("--scene", default=scene, help="two-hand scene or single-hand pose preset (see `list`)")
    p.add_argument("--pose-right", metavar="FILE", help="right-hand pose file (.json/.npz), overrides the scene's")
    p.add_argument("--pose-left", metavar="FILE", help="left-hand pose file (.json/.npz), overrides the scene's")
    p.add_argument("--hands", choices=("auto", "right", "left", "both"), default="auto",
                   help=f"which hands to {what} (auto: the scene's and any given pose files)")
    p.add_argument("--env", default=env, help="shipped environment name or .hdr/.exr path")
    p.add_argument("--yaw", type=ANGLE, default=yaw, help="environment rotation about +Y (degrees)")
    p.add_argument("--pitch", type=ANGLE, default=0.0, help="environment rotation about +X (degrees)")
    if exposure:
        p.add_argument("--env-exposure", type=EV, default=0.0, help="scale the environment by 2^EV (-30..30)")
        p.add_argument("--exposure", type=EV, default=0.0, help=exposure_help)
        p.add_argument("--tonemap", choices=("aces", "filmic", "none"), default="aces")
    return p


def _build_scene(args):
    from ..scene import Scene, load_hand_file, scene_preset

    scene = scene_preset(args.scene)
    hands = {h.side: h for h in scene.hands}
    for side, path in (("right", args.pose_right), ("left", args.pose_left)):
        if path:
            hands[side] = load_hand_file(path, side=side)
    if args.hands != "auto":
        keep = ("right", "left") if args.hands == "both" else (args.hands,)
        missing = [s for s in keep if s not in hands]
        if missing:
            raise UserError(f"--hands {args.hands}: scene {args.scene!r} has no {missing[0]} hand "
                            f"(give --pose-{missing[0]} FILE)")
        hands = {s: hands[s] for s in keep}
    return Scene([hands[s] for s in ("right", "left") if s in hands], name=scene.name)


def _render_asset(args):
    """The hand asset of ``render``: ``--asset``, else the one the ``--student`` was trained on (when
    shading with the student), else the shipped default (:func:`~relit_hands.student.render_asset_path`)."""
    from ..student import render_asset_path

    return render_asset_path(args.asset, args.student if args.shading == "student" else None)


def cmd_render(args) -> int:
    from ..engine import Engine
    from ..hand_model import asset_reference
    from ..image_io import write_hdr_image, write_png

    out = _check_out(args.out, (".png",), "--out")
    outputs = OutputSet(inputs=[args.pose_right, args.pose_left, _env_input(args.env), args.student],
                        overwrite=args.overwrite)
    outputs.check(out, "--out")
    outputs.check(out.with_suffix(".json"), "summary")
    if args.exr:
        outputs.check(_check_out(args.exr, (".exr", ".hdr"), "--exr"), "--exr")
    scene = _build_scene(args)
    env = _load_env(args.env, args.yaw, args.pitch, args.env_exposure)
    t0 = time.perf_counter()
    engine = Engine(asset=_render_asset(args), device=args.device, raycast=args.raycast, compositor=args.compositor)
    t_init = (time.perf_counter() - t0) * 1e3
    w, h = args.size
    extra = {}
    if args.shading == "student":
        from ..student import StudentLoadError, default_student_path

        try:
            sf = engine.render_student(scene, env, student=args.student, inference=args.inference,
                                       n_lights=args.lights, exposure_ev=args.exposure, tonemap=args.tonemap,
                                       background=args.background, return_linear=True, width=w, height=h)
        except StudentLoadError as e:
            raise UserError(str(e)) from None
        for side, tex in sf.textures.items():
            check_finite_image(tex, f"render (student {side}-hand texture)")
        frame = sf.as_frame()
        extra = {"student": {"path": str(args.student or default_student_path(asset=engine.asset)), "backend": sf.backend,
                             "variant": sf.variant, "resolution": sf.resolution, "lights": args.lights}}
    else:
        frame = engine.render(scene, env, shading=args.shading, exposure_ev=args.exposure, tonemap=args.tonemap,
                              background=args.background, shadows=not args.no_shadows,
                              return_linear=True, width=w, height=h)
    check_finite_image(frame.linear, f"render --out {out}")
    check_finite_image(frame.image, f"render --out {out}")
    summary = {
        "command": args.argv,
        "scene": scene.to_dict(), "env": env.name, "yaw_deg": args.yaw, "pitch_deg": args.pitch,
        "asset": asset_reference(engine.asset.source or None),
        "size": [w, h], "shading": args.shading, "shadows": not args.no_shadows,
        "hand_coverage": float(frame.mask.mean()), "output": str(out), "exr": args.exr,
        "timings_ms": {"engine_init": t_init, **frame.timings_ms},
        "camera": {"K": frame.camera.K.tolist(), "R": frame.camera.R.tolist(), "t": frame.camera.t.tolist()},
        **extra,
    }
    outputs.add(out, lambda p: write_png(p, frame.image), "--out")
    if args.exr:
        outputs.add(args.exr, lambda p: write_hdr_image(p, frame.linear), "--exr")
    outputs.add(out.with_suffix(".json"), lambda p: p.write_text(_dump(summary)), "summary")
    outputs.commit()
    ms = frame.timings_ms
    stages = ("skinning", "raycast", "features", "student", "composite") if args.shading == "student" \
        else ("skinning", "composite")
    print(f"wrote {out} ({w}x{h}, scene {scene.name}, env {env.name}, {args.shading}"
          + (f" {extra['student']['variant']} via {extra['student']['backend']}" if extra else "") + "); "
          + ", ".join(f"{k} {ms[k]:.1f} ms" for k in stages)
          + (f"; linear EXR {args.exr}" if args.exr else ""))
    engine.release()
    return 0


def cmd_list(args) -> int:
    from ..environment import EnvironmentMap
    from ..poses import POSE_PRESETS
    from ..scene import SCENE_PRESETS

    data = {"pose_presets": list(POSE_PRESETS), "scene_presets": list(SCENE_PRESETS),
            "environments": EnvironmentMap.list_shipped()}
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print("single-hand pose presets:", ", ".join(data["pose_presets"]))
        print("two-hand scene presets:  ", ", ".join(data["scene_presets"]))
        print("shipped environments:    ", ", ".join(data["environments"]))
    return 0


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("relit-hands", "numpy", "torch", "moderngl", "opencv-python-headless", "openexr", "trimesh",
                "embreex", "triton", "onnxruntime", "imgui-bundle", "glfw", "mitsuba", "smplx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def cmd_info(args) -> int:
    import os

    import torch

    info = {"versions": _versions(), "cpu_count": os.cpu_count()}
    info["cuda"] = {"available": torch.cuda.is_available(),
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        from ..compositor import create_headless_context

        ctx = create_headless_context()
        info["opengl"] = {"renderer": ctx.info["GL_RENDERER"], "version": ctx.info["GL_VERSION"]}
        ctx.release()
    except Exception as e:  # report, do not fail: info is a diagnostic tool
        info["opengl"] = {"error": str(e)}
    from .. import backends as registry
    from ..student import default_student_path

    dev = registry.resolve_device("auto")
    backends = {"device": str(dev)}
    for kind in registry.KINDS:  # the engine's device, every backend kind resolved for it, with reasons
        try:
            avail = registry.availability(kind, dev)
            backends[kind] = {"available": [k for k, v in avail.items() if v is True],
                              "unavailable": {k: v for k, v in avail.items() if v is not True},
                              "auto": registry.resolve(kind, "auto", dev)}
        except Exception as e:  # noqa: BLE001 - report, do not fail: info is a diagnostic tool
            backends[kind] = f"unavailable: {e}"
    path = default_student_path()
    info["default_student"] = str(path) if path.is_file() else None
    info["backends"] = backends
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        v = info["versions"]
        print(f"relit-hands {v['relit-hands']}  python {v['python']}  ({v['platform']})")
        print("packages:  " + ", ".join(f"{k} {val}" for k, val in v.items()
                                        if k not in ("relit-hands", "python", "platform") and val))
        missing = [k for k, val in v.items() if val is None]
        if missing:
            print("optional, not installed:  " + ", ".join(missing))
        print(f"CPU cores: {info['cpu_count']}   CUDA: "
              + (info["cuda"]["device"] if info["cuda"]["available"] else "not available"))
        gl = info["opengl"]
        print("OpenGL:    " + (f"{gl['renderer']} ({gl['version']})" if "renderer" in gl else gl["error"]))
        print(f"engine device (auto): {backends['device']}")
        for kind, label in (("raycast", "ray casting"), ("inference", "inference"), ("compositor", "compositor")):
            b = backends.get(kind)
            if isinstance(b, dict):
                print(f"{label + ':':<13}{', '.join(b['available'])} (auto: {b['auto']})"
                      + "".join(f"; {k}: {v}" for k, v in b["unavailable"].items()))
            else:
                print(f"{label + ':':<13}{b}")
        print("student:     " + (info.get("default_student") or
                                  "no trained default model installed (PBR baseline; see README: train-student)"))
    return 0


def cmd_contact_sheet(args) -> int:
    from tqdm import tqdm

    from ..engine import Engine
    from ..image_io import write_png
    from ..poses import POSE_PRESETS
    from ..scene import SCENE_PRESETS, scene_preset
    from .contact_sheet import preset_contact_sheet

    out = _check_out(args.out, (".png",), "--out")
    outputs = OutputSet(inputs=[_env_input(s.partition("@")[0]) for s in args.envs], overwrite=args.overwrite)
    outputs.check(out, "--out")
    outputs.check(out.with_suffix(".json"), "summary")
    names = args.scenes or list(POSE_PRESETS) + list(SCENE_PRESETS)
    scenes = [scene_preset(n) for n in names]
    envs = []
    for spec in args.envs:  # NAME or NAME@YAW
        name, _, yaw = spec.partition("@")
        try:
            yaw_deg = check_number(yaw, "yaw", -36000, 36000) if yaw else args.yaw
            envs.append(_load_env(name, yaw_deg, 0.0, 0.0))
        except ValueError as e:
            raise UserError(f"--envs {spec}: {e}") from None
    engine = Engine()
    with tqdm(total=len(scenes) * len(envs), desc="contact sheet", unit="tile") as bar:
        sheet, records = preset_contact_sheet(engine, scenes, envs, tile=args.tile, columns=args.columns,
                                              progress=bar, env_labels=[e.replace("@", " yaw ") for e in args.envs])
    check_finite_image(sheet, f"contact-sheet --out {out}")
    outputs.add(out, lambda p: write_png(p, sheet), "--out")
    outputs.add(out.with_suffix(".json"), lambda p: p.write_text(_dump({
        "command": args.argv, "output": str(out), "tiles": records, "size": list(sheet.shape[:2][::-1])})), "summary")
    outputs.commit()
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {len(records)} tiles)")
    return 0


def cmd_features(args) -> int:
    from ..engine import Engine
    from ..image_io import write_png
    from .feature_views import feature_sheet

    out = _check_out(args.out, (".png",), "--out")
    outputs = OutputSet(inputs=[args.pose_right, args.pose_left, _env_input(args.env)], overwrite=args.overwrite)
    outputs.check(out, "--out")
    outputs.check(out.with_suffix(".json"), "summary")
    scene = _build_scene(args)
    env = _load_env(args.env, args.yaw, args.pitch, 0.0)
    engine = Engine(device=args.device, raycast=args.raycast)
    w, h = args.size
    camera = engine.default_camera(scene, w, h)
    sheet, ff = feature_sheet(engine, scene, env, camera, n_lights=args.lights, resolution=args.resolution,
                              tile=args.tile)
    check_finite_image(sheet, f"features --out {out}")
    maps = ff.maps.float()
    summary = {"scene": scene.to_dict(), "env": env.name, "yaw_deg": args.yaw, "lights": args.lights,
               "resolution": args.resolution, "raycast_backend": engine.raycast_backend, "channels": ff.names,
               "energy_rgb": ff.energy.tolist(), "visible_fraction": float(ff.visibility.float().mean()),
               "channel_ranges": {n: [float(maps[:, i].min()), float(maps[:, i].max())]
                                  for i, n in enumerate(ff.names)},
               "timings_ms": ff.timings_ms, "command": args.argv, "output": str(out)}
    outputs.add(out, lambda p: write_png(p, sheet), "--out")
    outputs.add(out.with_suffix(".json"), lambda p: p.write_text(_dump(summary)), "summary")
    outputs.commit()
    t = ff.timings_ms
    print(f"wrote {out} ({len(ff.names)} channels, {args.lights} lights, R={args.resolution}, "
          f"{engine.raycast_backend}); skinning {t['skinning']:.1f} ms, ray casting {t['raycast']:.1f} ms, "
          f"features {t['features']:.1f} ms, UV gather {t['uv_gather']:.1f} ms")
    return 0


def _view_asset(args):
    """The viewer's hand asset, checked before the window opens: ``--asset``, else the ``--student``'s
    own (its metadata), else None (the shipped default). A missing or unreadable one is a user error."""
    from ..hand_model import HandAsset
    from ..student import read_student_meta, render_asset_path

    if args.student:
        read_student_meta(args.student)  # StudentLoadError (a ValueError) naming the file
    path = render_asset_path(args.asset, args.student)
    if path is not None:
        HandAsset.load(path)
    return path


def cmd_view(args) -> int:
    """The desktop viewer (``relit_hands.viewer``); headless without a display or with --headless."""
    from ..environment import EnvironmentMap
    from ..scene import scene_preset
    from ..viewer.app import ViewerApp, display_available
    from ..viewer.script import ScriptPlayer, load_script

    # every option is checked before the viewer starts (an unknown environment used to spin in
    # the render worker and screenshot another one)
    scene_preset(args.scene)
    EnvironmentMap.from_name_or_path(args.env)
    asset = _view_asset(args)
    headless = args.headless or not display_available()
    if headless and not args.headless:
        print("relit-hands view: no display found (DISPLAY unset): running headless", file=sys.stderr)
    actions = load_script(args.script) if args.script else None
    shot = args.screenshot or ("relit_hands_viewer.png" if headless else None)
    summary = args.summary or (str(Path(shot).with_suffix(".json")) if shot else None)
    outputs = OutputSet(inputs=[args.script, _env_input(args.env)], overwrite=args.overwrite)
    if shot:
        outputs.check(_check_out(shot, (".png",), "--screenshot"), "--screenshot")
    if args.exr:
        outputs.check(_check_out(args.exr, (".exr", ".hdr"), "--exr"), "--exr")
    if summary:
        outputs.check(_check_out(summary, (".json",), "--summary"), "--summary")
    frames = args.frames
    if headless and frames is None and actions is None:
        frames = 60
    try:
        app = ViewerApp(headless=headless, size=args.size, scene=args.scene, env=args.env,
                        render_scale=args.render_scale, max_fps=args.max_fps, asset=asset, student=args.student)
    except RuntimeError as e:
        if headless:
            raise
        print(f"relit-hands view: {e}; running headless instead", file=sys.stderr)
        app = ViewerApp(headless=True, size=args.size, scene=args.scene, env=args.env,
                        render_scale=args.render_scale, max_fps=args.max_fps, asset=asset, student=args.student)
        headless = True
    try:
        script = ScriptPlayer(app, actions, Path(args.script).parent, confine=True) if actions is not None else None
        rc = app.run(frames=frames, script=script, screenshot=shot, exr=args.exr, summary=summary)
        s = app.summary()
        print(f"viewer: {s['frames']} UI frames (median {s['ui_ms_median'] or 0:.1f} ms), "
              f"{s['frames_rendered']} engine frames (median {s['engine_ms_median'] or 0:.0f} ms at "
              f"{'x'.join(map(str, s['render_size'] or []))}) on {s['renderer']}"
              + (f"; screenshot {shot}" if shot else ""))
        if script is not None:
            bad = [r for r in script.results if r["status"] != "ok"]
            for r in bad:
                print(f"relit-hands view: error: script {args.script}: action {r['index']} ({r['action']}): "
                      f"{' '.join(str(r.get('message')).split())}", file=sys.stderr)
            if bad and rc == 0:
                rc = 2
        if rc and not (script is not None and bad):
            print(f"relit-hands view: error: the viewer failed (exit {rc}); see the messages above", file=sys.stderr)
        return rc
    finally:
        app.close()


# Commands implemented by a tool module with ``add_arguments(parser)`` and
# ``run_from_args(args, command) -> exit status`` (``command``: the command line, for summaries).
TOOL_COMMANDS = {
    "lightstage": ("lightstage", "synthetic light stage: OLAT captures with Mitsuba 3 (train extra)"),
    "eval": ("evaluate", "compare renderers with the path-traced held-out frames of a capture"),
    "train-teacher": ("train_teacher", "train the OLAT teacher on a light-stage capture"),
    "make-student-set": ("relight", "write the student's training set with the OLAT teacher"),
    "recompute-features": ("student_features", "a student set's features again with new options (e.g. --key-lights), the teacher's targets kept"),
    "train-student": ("train_student", "train the UV student (vis | novis | bottleneck) on a teacher-made set"),
    "bench": ("bench", "headless benchmark: per-stage ms, end-to-end fps, JSON + PNG chart"),
    "compare-assets": ("asset_compare", "hand assets side by side: UV charts, seams, stretch, PBR renders"),
    "seam-measure": ("seam_measure", "how much a renderer's image jumps along UV chart borders (student vs PBR)"),
    "export-gltf": ("export_gltf", "one frame's posed, relit hands as glTF 2.0 (.glb): meshes + tone-mapped textures"),
    "make-light-library": ("light_library", "seeded library of HDR training environments with train/val/test splits"),
    "make-phone-video": ("phone_video", "synthetic phone video of a new person's hand (frames, 2D keypoints, masks, ground truth)"),
    "personalize": ("personalize", "your own relightable hand from a phone video / calibrated views (shape, pose, albedo)"),
    "personalize-relight": ("personalize_relight", "a personalised hand relit by the student vs path-traced images of the true person (fit / base / true)"),
    "personalize-eval": ("personalize_eval", "a personalised hand against make-phone-video's ground truth (albedo, vertices, keypoints)"),
}


def _tool_module(name: str):
    import importlib

    return importlib.import_module(f"{__package__}.{name}")


def cmd_tool(args) -> int:
    return _tool_module(args.tool_module).run_from_args(args, args.argv)


def add_backend_options(p, *, inference: bool = False, compositor: bool = False) -> None:
    """The engine's device and backend flags, named the same in every command (relit_hands.backends)."""
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where every stage runs (auto: CUDA when usable, else the CPU)")
    p.add_argument("--raycast", default="auto", choices=("auto", "embree", "grid", "torch", "triton"),
                   help="ray-casting backend (auto: triton on CUDA, embree on the CPU)")
    if inference:
        p.add_argument("--inference", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"),
                       help="student inference backend (auto: tensorrt, else torch on CUDA; onnxruntime on the CPU)")
    if compositor:
        p.add_argument("--compositor", default="auto", choices=("auto", "gl", "nvdiffrast"),
                       help="last stage of a student frame (auto: nvdiffrast on CUDA when installed, else gl)")


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="relit-hands", description="Real-time relightable two-hand renderer.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="render one frame headless to PNG (and EXR)")
    add_scene_options(r)
    r.add_argument("--background", choices=("env", "none", "transparent"), default="env")
    r.add_argument("--shading", choices=("student", "pbr", "albedo", "normal", "uv"), default="student",
                   help="student: the neural relighting (default model in models/student); pbr: the "
                        "physically based baseline; albedo / normal / uv: debug views")
    r.add_argument("--student", metavar="FILE", help="student weights (.safetensors); default: the shipped model")
    r.add_argument("--asset", metavar="NAME_OR_DIR",
                   help="hand asset: a shipped name (hand, hand_v2), an asset folder or its right_hand.npz; "
                        "default: the --student's own asset, else the shipped default")
    add_backend_options(r, inference=True, compositor=True)
    r.add_argument("--lights", type=int_range(32, 1024), default=64,
                   help="directional lights of the student's features (N, 32..1024)")
    r.add_argument("--no-shadows", action="store_true", help="disable the dominant-light shadow maps")
    r.add_argument("--size", type=parse_size, default=(1280, 720), help="WxH pixels (default 1280x720)")
    r.add_argument("--out", default="relit_hands.png", help="output PNG (a .json summary is written beside it)")
    r.add_argument("--exr", metavar="FILE", help="also write the linear HDR image (.exr)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace existing output files that relit-hands did not write (never an input)")
    r.set_defaults(func=cmd_render)

    ls = sub.add_parser("list", help="pose presets, two-hand scenes and shipped environments")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    inf = sub.add_parser("info", help="versions, devices and available backends")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=cmd_info)

    cs = sub.add_parser("contact-sheet", help="render every preset under some environments into one PNG")
    cs.add_argument("--envs", nargs="+", default=["studio", "sky_sun@160"],
                    help="environments as NAME or NAME@YAW_DEGREES")
    cs.add_argument("--scenes", nargs="+", help="default: every pose and scene preset")
    cs.add_argument("--yaw", type=ANGLE, default=0.0)
    cs.add_argument("--tile", type=parse_size, default=(256, 256))
    cs.add_argument("--columns", type=int_range(1, 64), default=7)
    cs.add_argument("--out", default="docs/contact_sheet.png")
    cs.add_argument("--overwrite", action="store_true", help="replace existing files relit-hands did not write")
    cs.set_defaults(func=cmd_contact_sheet)

    fe = sub.add_parser("features", help="picture of every lighting-feature channel, in UV space and on the hands")
    add_scene_options(fe, scene="shadow", env="sky_sun", yaw=160.0, exposure=False)
    fe.add_argument("--lights", type=int_range(32, 1024), default=256, help="environment lights N (32..1024)")
    fe.add_argument("--resolution", type=int, default=256, choices=(128, 256, 512, 1024), help="UV map size R")
    add_backend_options(fe)
    fe.add_argument("--size", type=parse_size, default=(512, 512), help="camera image size for the view direction")
    fe.add_argument("--tile", type=int_range(16, 2048), default=256)
    fe.add_argument("--out", default="features.png")
    fe.add_argument("--overwrite", action="store_true", help="replace existing files relit-hands did not write")
    fe.set_defaults(func=cmd_features)

    v = sub.add_parser("view", help="desktop viewer: pose hands, rotate environments, compare shading modes")
    v.add_argument("--scene", default="clasp", help="two-hand scene or single-hand pose preset to open with")
    v.add_argument("--env", default="studio", help="shipped environment name or .hdr/.exr path")
    v.add_argument("--asset", metavar="NAME_OR_DIR",
                   help="hand asset: a shipped name (hand, hand_v2), an asset folder (e.g. from relit-hands "
                        "personalize) or its right_hand.npz; default: the --student's own asset, else the shipped one")
    v.add_argument("--student", metavar="FILE",
                   help="student weights for the 'student' shading mode (default: the shipped model); a student "
                        "of the asset's UV layout relights a personalised asset with its own albedo")
    v.add_argument("--size", type=parse_size, default=(1600, 900), help="window size WxH (logical pixels)")
    v.add_argument("--headless", action="store_true",
                   help="no window: the UI renders offscreen (EGL); implied when there is no display")
    v.add_argument("--script", metavar="JSON", help="play a JSON list of UI actions (see relit_hands.viewer.script)")
    v.add_argument("--frames", type=int_range(0, 1_000_000),
                   help="run at least N UI frames (and until the script ends), then exit")
    v.add_argument("--screenshot", metavar="PNG", help="write a screenshot (with the UI) at the end")
    v.add_argument("--exr", metavar="EXR", help="also write the view's linear HDR image at the end")
    v.add_argument("--summary", metavar="JSON", help="run summary (default: next to the screenshot)")
    v.add_argument("--render-scale", type=finite_float(0.25, 1.0), default=1.0,
                   help="engine resolution / view resolution (0.25..1)")
    v.add_argument("--max-fps", type=finite_float(0.0, 1000.0), default=60.0, help="UI frame-rate cap (0: none)")
    v.add_argument("--overwrite", action="store_true", help="replace existing files relit-hands did not write")
    v.set_defaults(func=cmd_view)

    for name, helptext in (("build-asset", "rebuild the procedural hand asset (see: relit-hands build-asset --help)"),
                           ("make-envs", "regenerate the shipped environment maps (see: relit-hands make-envs --help)")):
        sub.add_parser(name, help=helptext, add_help=False)  # listed for --help; main() forwards them

    for name, (module, helptext) in TOOL_COMMANDS.items():
        tp = sub.add_parser(name, help=helptext)
        _tool_module(module).add_arguments(tp)
        tp.set_defaults(func=cmd_tool, tool_module=module)
    return ap


# Commands whose options belong to another tool's own parser: everything after the command name
# goes to that tool unparsed (argparse's REMAINDER would reject a leading option such as --help).
_FORWARDED = {"build-asset": "build_hand_asset", "make-envs": "make_environments"}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def _run_guarded(command: str, debug: bool, fn) -> int:
    """Run ``fn()``; user errors -> one line + exit 2, anything else -> one line + exit 1."""
    try:
        return fn()
    except KeyboardInterrupt:
        print("relit-hands: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except (UserError, ValueError, FileNotFoundError, OSError) as e:
        if debug:
            raise
        print(f"relit-hands {command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print(f"relit-hands {command}: error: out of memory (the inputs ask for more than this machine has)",
              file=sys.stderr)
        return 2
    except RecursionError:
        if debug:
            raise
        print(f"relit-hands {command}: error: input nested too deeply", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug, not a user error: still one line, exit 1
        if debug:
            raise
        print(f"relit-hands {command}: internal error: {type(e).__name__}: {_one_line(e)} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"
    if argv and argv[0] in _FORWARDED:
        import importlib

        def forwarded():
            rc = importlib.import_module(f"{__package__}.{_FORWARDED[argv[0]]}").main(argv[1:])
            return rc if isinstance(rc, int) else 0

        return _run_guarded(argv[0], debug, forwarded)
    ap = build_parser()
    args = ap.parse_args(argv)
    args.argv = "relit-hands " + " ".join(argv)
    return _run_guarded(args.command, args.debug, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
