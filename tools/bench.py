"""``relit-hands bench``: the engine headless for K frames, timed stage by stage.

    relit-hands bench --hands 2 --resolution 256 --lights 64 --size 1280x720 --inference onnxruntime
    relit-hands bench --stereo --size 1832x1920 --resolution 512 --lights 256 --device cuda
    relit-hands bench --compare --frames 30 --out bench_out/

What runs: one or two hands whose fingers flex over time (anatomical angles interpolated
between the ``relaxed`` and ``fist`` presets, the two hands out of phase, the wrists turning a
little), under an environment map that rotates every frame (so its lights are re-derived every
frame: the worst case), seen by one fixed camera or a stereo pair (64 mm IPD, each eye
``--size``). Poses are computed before timing (a hand tracker supplies them); the first
``--warmup`` frames are run and discarded.

Configurations: ``--shading student`` (the neural student, ``--variant``, through
``--inference``; without a trained default model an untrained network of the default
architecture stands in -- timings do not depend on the weights) or ``--shading pbr`` (the
physically based baseline); ``--compare`` runs pbr, student (vis), student_novis and
student_bottleneck in the same process over the same frames.

Per stage (the engine's own timings, see :meth:`Engine.render_student`): skinning, lights,
raycast, features, uv_gather, student, textures, upload, composite (all views) -- for PBR:
skinning, normals_upload, composite -- plus ``other`` = the rest of the wall time of the render
call, so that for every frame the stages sum exactly to ``end_to_end`` (the wall time of the
whole frame). Printed: median and p95 per stage, end-to-end median / p95 and fps (1000 / median).

Outputs in ``--out`` (default ``bench_out``): ``bench.json`` (machine: device, GPU name, CPU model,
cores, load average before/after; versions: torch, onnxruntime, moderngl, GL renderer, ...;
settings; per configuration: per-stage stats, end-to-end stats, fps and the per-frame values)
and ``bench.png`` (stacked per-stage medians per configuration + the frame-time trace).

Every configuration is one :class:`~relit_hands.engine.Engine` on ``--device`` with the backends
``--raycast`` / ``--inference`` / ``--compositor`` (:mod:`relit_hands.backends`):
``--device cuda --compositor nvdiffrast`` keeps the whole frame on the GPU (no host round trip).
On CUDA the stage timings are CUDA events (the GPU's timeline).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..stages import PBR_STAGES
from ..validation import ArgumentError, OutputSet, finite_float, int_range
from .cli import parse_size

COMPARE = (("pbr", "pbr", None), ("student", "student", "vis"), ("student_novis", "student", "novis"),
           ("student_bottleneck", "student", "bottleneck"))
IPD_M = 0.064
JSON_VERSION = 1


# ------------------------------------------------------------------------------ arguments

def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--frames", "-k", type=int_range(1, 100_000), default=30, help="timed frames K (default 30)")
    ap.add_argument("--warmup", type=int_range(0, 10_000), default=3, help="untimed frames first (default 3)")
    ap.add_argument("--hands", type=int, choices=(1, 2), default=2)
    ap.add_argument("--resolution", "-r", type=int_range(16, 2048), default=256, help="UV resolution R of the student (default 256)")
    ap.add_argument("--lights", "-n", type=int_range(32, 1024), default=64, help="environment lights N (default 64)")
    ap.add_argument("--raycast", default="auto", choices=("auto", "embree", "grid", "torch", "triton"),
                    help="ray-casting backend (auto: triton on CUDA, else embree)")
    ap.add_argument("--inference", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"),
                    help="student inference backend")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"),
                    help="student precision (auto: fp16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--size", type=parse_size, default=(1280, 720), help="image WxH (per eye with --stereo)")
    ap.add_argument("--stereo", action="store_true", help="two eye cameras (64 mm IPD), one feature+student pass")
    ap.add_argument("--shading", choices=("student", "pbr"), default="student")
    ap.add_argument("--variant", choices=("vis", "novis", "bottleneck"), default="vis",
                    help="student variant for --shading student")
    ap.add_argument("--compare", action="store_true",
                    help="run pbr, student, student_novis and student_bottleneck side by side")
    ap.add_argument("--student", metavar="SAFETENSORS",
                    help="student weights (default: the shipped model of the asset, else an untrained stand-in)")
    ap.add_argument("--asset", metavar="NAME_OR_PATH",
                    help="hand asset: a shipped name (hand_v2), an asset folder or its npz (default: the --student's "
                         "own asset, else the shipped default)")
    ap.add_argument("--base", type=int_range(1, 256), default=None,
                    help="untrained stand-in's base width (default: StudentNet's, 32); ignored with --student")
    ap.add_argument("--levels", type=int_range(1, 8), default=None, help="untrained stand-in's levels (default 4)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where every stage of the frame runs (auto: CUDA when usable)")
    ap.add_argument("--compositor", choices=("auto", "gl", "nvdiffrast"), default="auto",
                    help="gl: OpenGL (EGL) compositor, images read back to the host; nvdiffrast: CUDA only, "
                         "the frame stays on the GPU (auto: nvdiffrast on CUDA when installed, else gl)")
    ap.add_argument("--readback", choices=("all", "rgb", "none"), default="rgb",
                    help="what the GL compositor reads back per view: all (image + mask/hand id/depth), "
                         "rgb (the image only; default), none (image left in the GL texture, as a viewer/VR "
                         "compositor would use it)")
    ap.add_argument("--threads", type=int_range(1, 1024), default=None,
                    help="CPU threads for torch and ONNX Runtime (default: torch's default, one per core; "
                         "on the 2-core CPU machine 2 threads measured 129-149 ms per frame against 151-169 "
                         "ms with 1, now that ONNX Runtime's pool does not spin)")
    ap.add_argument("--scene-layout", choices=("side", "clasp"), default="side",
                    help="side: hands side by side, flexing; clasp: the clasp preset, flexing a little")
    ap.add_argument("--env", default="sky_sun", help="environment name or .hdr/.exr path (rotates every frame)")
    ap.add_argument("--deg-per-frame", type=finite_float(-360.0, 360.0), default=3.0, help="environment rotation per frame (degrees)")
    ap.add_argument("--out", default="bench_out", help="output folder for bench.json and bench.png")
    ap.add_argument("--json-name", default="bench.json", help="name of the JSON file in --out")
    ap.add_argument("--no-chart", action="store_true", help="skip bench.png")
    ap.add_argument("--overwrite", action="store_true", help="replace existing files relit-hands did not write")
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    return ap


# ------------------------------------------------------------------------------ the workload

def pose_animation(hands: int, frames: int, layout: str = "side") -> list:
    """``frames`` :class:`Scene` s: fingers flex between 'relaxed' and 'fist' (anatomical angles,
    cosine easing, period 24 frames; the left hand half a period behind), wrists turn +-10 deg."""
    from scipy.spatial.transform import Rotation

    from ..poses import PRESET_ANGLES, anatomical_to_pose
    from ..scene import HandState, Scene, orientation, scene_preset

    a0, a1 = PRESET_ANGLES["relaxed"], PRESET_ANGLES["fist"]
    sides = ("right", "left")[:hands]
    if layout == "clasp":
        base = {h.side: h for h in scene_preset("clasp").hands}
    else:
        base = {}
        for side in sides:
            x = (-0.055 if side == "right" else 0.055) if hands == 2 else -0.01
            go = orientation((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
            base[side] = HandState(side, np.zeros(45, np.float32), go, (x, -0.09, 0.0))
    scenes = []
    for i in range(frames):
        hs = []
        for j, side in enumerate(sides):
            phase = 2 * np.pi * i / 24.0 + np.pi * j
            s = 0.5 - 0.5 * np.cos(phase)
            if layout == "clasp":
                ang = None
                pose = base[side].pose * (1.0 + 0.1 * np.sin(phase))
            else:
                ang = (1 - s) * a0 + s * a1
                pose = anatomical_to_pose(ang, side=side)
            turn = Rotation.from_rotvec([0.0, np.radians(10.0) * np.sin(phase), 0.0])
            go = (turn * Rotation.from_rotvec(base[side].global_orient)).as_rotvec()
            hs.append(HandState(side, pose, go.astype(np.float32), base[side].transl.copy()))
        scenes.append(Scene(hs, name=f"bench_{layout}_{i}",
                            view_direction=scene_preset("clasp").view_direction if layout == "clasp"
                            else (0.0, 0.25, 1.0)))
    return scenes


def cameras_for(engine, scenes, size, stereo: bool) -> list:
    """One fixed camera framing every frame of the animation (or the stereo pair around it)."""
    import torch

    from ..engine import framing_camera

    pts = []
    for sc in (scenes[0], scenes[len(scenes) // 2]):
        posed = engine.pose(sc)
        pts.append(torch.cat([o.render_vertices[0] for o in posed.values()]).cpu().numpy())
    cam = framing_camera(np.concatenate(pts), size[0], size[1], direction=scenes[0].view_direction)
    return cam.stereo_pair(IPD_M) if stereo else [cam]


# ------------------------------------------------------------------------------ machine facts

def machine_info(engine=None, device: str = "cpu") -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"device": device, "gpu": None, "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "hostname_hash": None,
            "torch_threads": torch.get_num_threads(),
            "env": {k: os.environ[k] for k in ("LP_NUM_THREADS", "OMP_NUM_THREADS", "GALLIUM_DRIVER",
                                                "CUDA_VISIBLE_DEVICES") if k in os.environ}}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1),
                       "capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
    if engine is not None:
        gl = engine.compositor.ctx.info
        info["gl_renderer"] = str(gl.get("GL_RENDERER"))
        info["gl_version"] = str(gl.get("GL_VERSION"))
    return info


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("relit-hands", "torch", "numpy", "onnxruntime", "onnxruntime-gpu", "moderngl", "embreex", "triton",
                 "tensorrt", "diffrp-nvdiffrast", "nvdiffrast", "cupy-cuda12x", "cupy-cuda13x"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------ statistics

def stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "mean_ms": float(v.mean()),
            "min_ms": float(v.min()), "max_ms": float(v.max())}


def summarise(name: str, frames: list, stage_names, meta: dict) -> dict:
    """Per-frame dicts {stage: ms, 'end_to_end': ms} -> one configuration's record."""
    stage_names = list(stage_names) + ["other"]
    e2e = [f["end_to_end"] for f in frames]
    rec = {"name": name, **meta, "stage_order": stage_names,
           "stages": {s: stats([f[s] for f in frames]) for s in stage_names},
           "end_to_end": stats(e2e)}
    rec["fps"] = 1000.0 / rec["end_to_end"]["median_ms"]
    rec["frames"] = frames
    return rec


# ------------------------------------------------------------------------------ running

class _Runner:
    """Holds the engine and per-configuration backends; ``frame(i)`` renders frame ``i``."""

    def __init__(self, args):
        import torch

        if args.threads:
            torch.set_num_threads(int(args.threads))
        self.args = args
        from ..engine import Engine
        from ..environment import EnvironmentMap

        from ..student import render_asset_path

        asset = render_asset_path(args.asset, args.student if args.shading == "student" else None)
        self.engine = Engine(asset=asset, device=args.device, raycast=args.raycast, compositor=args.compositor)
        self.device = self.engine.device.type
        total = args.warmup + args.frames
        self.scenes = pose_animation(args.hands, total, args.scene_layout)
        env0 = EnvironmentMap.from_name_or_path(args.env)
        self.envs = [env0.rotate(args.deg_per_frame * i) for i in range(total)]
        self.cameras = cameras_for(self.engine, self.scenes, args.size, args.stereo)

    # -- students
    def student_backend(self, variant: str):
        import torch

        from ..inference import make_backend
        from ..student import StudentNet, default_student_path, load_student

        a = self.args
        path = Path(a.student) if a.student else default_student_path(variant, asset=self.engine.asset)
        untrained, note = True, None
        kw = {k: v for k, v in (("base", a.base), ("levels", a.levels)) if v is not None}
        if path.is_file():
            model, meta = load_student(path)
            if model.variant != variant:
                raise ValueError(f"{path}: a {model.variant!r} student, but the {variant!r} variant was asked for")
            untrained = False
            if int(model.resolution) != int(a.resolution):
                if a.student:
                    raise ValueError(f"{path}: the student works at R={model.resolution}, not --resolution {a.resolution}")
                # the shipped model is trained at one R; time its architecture at the asked R
                # (the cost does not depend on the weights), and say so
                kw = {"base": model.base, "levels": model.levels, "static_channels": model.static_channels,
                      "albedo_prior": model.albedo_prior, **kw}
                note = (f"{path.name} is trained at R={model.resolution}; timing an untrained network of the same "
                        f"architecture at R={a.resolution}")
                untrained = True
        if untrained:
            torch.manual_seed(0)
            model = StudentNet.for_variant(variant, resolution=a.resolution, **kw)
            meta = None
            if note:
                print(f"relit-hands bench: {note}", file=sys.stderr)
        kind = a.inference
        be = make_backend(kind, model=model, meta=meta, device=self.device, precision=a.precision,
                          threads=a.threads)
        params = sum(p.numel() for p in model.parameters())
        return be, {"untrained": untrained, "student_parameters": int(params), "student_base": int(model.base),
                    "student_levels": int(model.levels), "inference_backend": be.name,
                    "student_weights": None if untrained else str(path), "note": note}

    # -- one configuration
    def run_config(self, name: str, shading: str, variant, progress=None) -> dict:
        a = self.args
        meta = {"shading": shading, "variant": variant, "views": len(self.cameras), "device": self.device,
                "raycast_backend": self.engine.raycast_backend if shading == "student" else None,
                "compositor": self.engine.compositor_backend if shading == "student" else "gl"}
        be = None
        if shading == "student":
            be, info = self.student_backend(variant)
            meta.update(info)
        frames, gl = [], []
        total = a.warmup + a.frames
        for i in range(total):
            scene, env = self.scenes[i], self.envs[i]
            t0 = time.perf_counter()
            if shading == "student":
                f = self.engine.render_student(scene, env, self.cameras, student=be, n_lights=a.lights,
                                               readback=a.readback)
                t, views = f.timings_ms, f.frames
                stage_names = self.engine.hand_compositor.student_stages
            else:
                t, views = self._pbr(scene, env)
                stage_names = PBR_STAGES
            wall = (time.perf_counter() - t0) * 1e3
            if i >= a.warmup:
                rec = {s: float(t.get(s, 0.0)) for s in stage_names}
                rec["other"] = max(0.0, wall - sum(rec.values()))
                rec["end_to_end"] = sum(rec.values())  # == wall unless a clock quirk made 'other' negative
                frames.append(rec)
                if meta["compositor"] == "gl":
                    gl.append(dict(views[-1].composite_ms))
            if progress:
                progress(name, i, total)
        rec = summarise(name, frames, stage_names, meta)
        if gl:
            rec["gl_last_view_ms"] = {k: stats([g[k] for g in gl]) for k in gl[0]}
        return rec

    def _pbr(self, scene, env) -> dict:
        """The PBR baseline for every camera: skinning + upload once, one composite per view."""
        eng = self.engine
        f = eng.render(scene, env, self.cameras[0], shading="pbr", readback=self.args.readback)
        t, views = dict(f.timings_ms), [f]
        for cam in self.cameras[1:]:
            tc = time.perf_counter()
            o = eng.compositor.render([eng.drawables[h.side] for h in scene.hands], env, cam, shading="pbr",
                                      readback=self.args.readback)
            t["composite"] += (time.perf_counter() - tc) * 1e3
            views.append(replace(f, composite_ms=o["timings_ms"]))
        return t, views

    def close(self):
        self.engine.release()


# ------------------------------------------------------------------------------ output

STAGE_ORDER = ("skinning", "normals_upload", "lights", "raycast", "features", "uv_gather", "student", "textures",
               "upload", "composite")


def stage_union(configs: list) -> list:
    """Every stage of ``configs`` in pipeline order, 'other' last."""
    seen = {s for c in configs for s in c["stage_order"]}
    order = [s for s in STAGE_ORDER if s in seen]
    order += sorted(seen - set(order) - {"other"})
    return order + ["other"]


def format_table(configs: list) -> str:
    """Per-stage median / p95 (ms) per configuration, then end-to-end and fps."""
    order = stage_union(configs)
    colw = 19
    lines = ["stage (ms)".ljust(16) + "".join(c["name"][:colw - 1].rjust(colw) for c in configs),
             "".ljust(16) + "".join("median     p95".rjust(colw) for _ in configs)]
    for s in order:
        row = s.ljust(16)
        for c in configs:
            st = c["stages"].get(s)
            row += (f"{st['median_ms']:9.2f}{st['p95_ms']:9.2f}" if st else "        -        -").rjust(colw)
        lines.append(row)
    lines.append("-" * (16 + colw * len(configs)))
    row = "end-to-end".ljust(16)
    for c in configs:
        e = c["end_to_end"]
        row += f"{e['median_ms']:9.2f}{e['p95_ms']:9.2f}".rjust(colw)
    lines.append(row)
    lines.append("fps (median)".ljust(16) + "".join(f"{c['fps']:9.2f}".ljust(colw - 9).rjust(colw)
                                                    for c in configs))
    return "\n".join(lines)


def write_chart(path, result: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = result["configs"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1, 1.4]})
    stages = stage_union(configs)
    cmap = plt.get_cmap("tab20")
    x = np.arange(len(configs))
    bottom = np.zeros(len(configs))
    for k, s in enumerate(stages):
        vals = np.array([c["stages"][s]["median_ms"] if s in c["stages"] else 0.0 for c in configs])
        ax0.bar(x, vals, bottom=bottom, color=cmap(k % 20), label=s, width=0.6)
        bottom += vals
    for xi, c in zip(x, configs):
        ax0.text(xi, bottom[xi], f"{c['end_to_end']['median_ms']:.1f} ms\n{c['fps']:.1f} fps", ha="center",
                 va="bottom", fontsize=8)
    ax0.set_xticks(x, [c["name"] for c in configs], rotation=15, fontsize=8)
    ax0.set_ylabel("median ms per frame (stacked stages)")
    ax0.set_ylim(0, bottom.max() * 1.18 if len(bottom) else 1)
    ax0.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    for c in configs:
        ax1.plot([f["end_to_end"] for f in c["frames"]], label=c["name"], lw=1.2)
    ax1.set_xlabel("frame (after warm-up)")
    ax1.set_ylabel("end-to-end ms")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    s, m = result["settings"], result["machine"]
    dev = m["gpu"]["name"] if m.get("gpu") else f"{m['cpu_model']} ({m['cpu_count']} cores)"
    fig.suptitle(f"relit-hands bench: {s['hands']} hand(s), R={s['resolution']}, N={s['lights']}, "
                 f"{'2 x ' if s['stereo'] else ''}{s['size'][0]}x{s['size'][1]}, {dev}, "
                 f"load {m['load_average_start'][0]:.1f}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ entry

def run(args, command: str | None = None) -> dict:
    load0 = list(os.getloadavg())
    t_start = time.perf_counter()
    runner = _Runner(args)
    try:
        todo = list(COMPARE) if args.compare else [
            ((args.shading if args.shading == "pbr" else ("student" if args.variant == "vis"
                                                           else f"student_{args.variant}")),
             args.shading, None if args.shading == "pbr" else args.variant)]

        def progress(name, i, total):
            if not args.quiet and (i + 1) % max(1, total // 4) == 0:
                print(f"  {name}: {i + 1}/{total} frames", file=sys.stderr, flush=True)

        configs = [runner.run_config(n, sh, v, progress) for n, sh, v in todo]
        machine = machine_info(runner.engine, runner.device)
        from ..hand_model import asset_reference

        asset = asset_reference(runner.engine.asset.source or None)
    finally:
        runner.close()
    machine["load_average_start"] = load0
    machine["load_average_end"] = list(os.getloadavg())
    settings = {"frames": args.frames, "warmup": args.warmup, "hands": args.hands, "resolution": args.resolution,
                "lights": args.lights, "raycast": args.raycast, "inference": args.inference,
                "precision": args.precision, "size": list(args.size), "stereo": bool(args.stereo),
                "views": 2 if args.stereo else 1, "shading": args.shading, "variant": args.variant,
                "compare": bool(args.compare), "device": args.device, "compositor": args.compositor,
                "readback": args.readback, "threads": args.threads, "scene_layout": args.scene_layout,
                "env": args.env, "deg_per_frame": args.deg_per_frame, "base": args.base, "levels": args.levels,
                "student": args.student, "asset": asset}
    result = {"tool": "relit-hands bench", "json_version": JSON_VERSION,
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": command or "relit-hands bench " + " ".join(sys.argv[2:]),
              "machine": machine, "versions": versions(), "settings": settings, "configs": configs,
              "run_seconds": time.perf_counter() - t_start}
    return result


def run_from_args(args, command: str | None = None) -> int:
    out = Path(args.out)
    name = Path(args.json_name)
    if name.suffix.lower() != ".json" or name.name != args.json_name:
        raise ArgumentError(f"--json-name {args.json_name}: must be a plain file name ending in .json")
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out {out}: exists and is not a folder")
    env_file = Path(args.env) if Path(args.env).is_file() else None
    outputs = OutputSet(inputs=[args.student, env_file], overwrite=args.overwrite)
    chart = out / (name.stem + ".png")
    outputs.check(out / name, "--json-name")
    if not args.no_chart:
        outputs.check(chart, "chart")
    result = run(args, command)
    table = format_table(result["configs"])
    result["table"] = table
    result["outputs"] = [str(out / name)] + ([] if args.no_chart else [str(chart)])
    outputs.add(out / name, lambda p: p.write_text(json.dumps(result, indent=1) + "\n"), "--json-name")
    if not args.no_chart:
        outputs.add(chart, lambda p: write_chart(p, result), "chart")
    outputs.commit()
    m = result["machine"]
    dev = (m["gpu"]["name"] if m.get("gpu") else f"CPU {m['cpu_model']} x{m['cpu_count']}")
    print(table)
    if not args.quiet:
        untrained = [c["name"] for c in result["configs"] if c.get("untrained")]
        print(f"device: {dev}; GL: {m.get('gl_renderer', '-')}; load average {m['load_average_start'][0]:.2f} -> "
              f"{m['load_average_end'][0]:.2f}; torch threads {m['torch_threads']}")
        for c in result["configs"]:
            if c["shading"] == "student":
                print(f"  {c['name']}: {c['inference_backend']}, raycast {c['raycast_backend']}, "
                      f"{c['student_parameters']:,} parameters (base {c['student_base']}, levels {c['student_levels']})")
        if untrained:
            print(f"  (untrained stand-in students for {', '.join(untrained)}: timings only, images not meaningful)")
        print(f"wrote {out / args.json_name}" + ("" if args.no_chart else " and the chart beside it"))
    return 0


def main(argv=None) -> int:
    ap = add_arguments(argparse.ArgumentParser(prog="relit-hands bench", description=__doc__.split("\n")[0]))
    args = ap.parse_args(argv)
    return run_from_args(args, None if argv is None else "relit-hands bench " + " ".join(argv))


if __name__ == "__main__":
    raise SystemExit(main())
