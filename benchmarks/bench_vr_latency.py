"""VR latency benchmark: tracker joints in -> both eye images ready in the host's textures.

    python benchmarks/bench_vr_latency.py                        # 2 x 1832x1920 (a Quest 2 eye), 10 frames
    python benchmarks/bench_vr_latency.py --size 184x192 --frames 30
    python benchmarks/bench_vr_latency.py --out benchmarks/results/vr_latency_cpu.json

The loop is the VR example's (``examples/openxr_hands.py``, :class:`VRHands.step`, loaded from the
file), on its synthetic OpenXR stream: both hands' 26 joints (+ noise, bones longer than the model's,
shape calibrated after ``--calibrate`` frames), two OpenXR eye views (Quest-2-like asymmetric fields
of view, 64 mm IPD) -> ``Camera.from_openxr``, and both eyes drawn with the student into two RGBA8
textures of the Engine's GL context standing in for swapchain images (``targets=``: no read-back).
Joint streams are made before timing.  A frame's clock starts when its joints are handed over and
stops after ``ctx.finish()`` (every GL command of both eyes done) -- what a runtime would wait for
before ``xrReleaseSwapchainImage``.

Stages per frame (milliseconds): retarget (both hands, One Euro smoothing on), skinning, lights,
raycast, features, uv_gather, student, textures (student output -> radiance textures), upload,
composite (both eyes into the host targets), gl_finish, other (the rest, so the stages sum to
end_to_end).  Reported: median and p95 per stage over ``--frames`` frames after ``--warmup``.
JSON: machine (platform, CPU model, cores, load average before / after, GL renderer), versions,
settings, date, per-stage stats and per-frame values.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("openxr_hands", ROOT / "examples" / "openxr_hands.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["openxr_hands"] = mod
    spec.loader.exec_module(mod)
    return mod


def stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "min_ms": float(v.min()),
            "max_ms": float(v.max())}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", "moderngl", "onnxruntime", "embreex"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # not installed / no __version__
            out[name] = None
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1832x1920", help="per-eye WxH (default 1832x1920: a Quest 2 eye)")
    ap.add_argument("--frames", type=int, default=10, help="timed frames")
    ap.add_argument("--warmup", type=int, default=2, help="untimed frames first")
    ap.add_argument("--lights", type=int, default=64)
    ap.add_argument("--env", default="studio")
    ap.add_argument("--model", help="student weights (default: the shipped model)")
    ap.add_argument("--inference", default="auto", help="student inference backend")
    ap.add_argument("--calibrate", type=int, default=1, help="good frames before the hands are shaped (1: at once)")
    ap.add_argument("--noise", type=float, default=1.5)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/vr_latency_cpu_<W>x<H>.json)")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"vr_latency_cpu_{w}x{h}.json"

    import torch

    from relit_hands import Engine, EnvironmentMap
    from relit_hands.compositor import create_headless_context
    from relit_hands.stages import STUDENT_STAGES

    # the engine's student stages, with the VR example's retargeting before and the GL finish after
    stages = ("retarget", *STUDENT_STAGES, "gl_finish", "other")

    vrx = load_example()
    load_before = os.getloadavg()
    ctx = create_headless_context()  # the VR application's context: the Engine draws into its textures
    engine = Engine(ctx=ctx, shadow_map_size=256)
    env = EnvironmentMap.from_name_or_path(a.env)
    vr = vrx.VRHands(engine, env, student=a.model, inference=a.inference, n_lights=a.lights, calibrate=a.calibrate)
    n = a.warmup + a.frames
    src = vrx.SyntheticXR(engine, frames=max(n, 2), noise=a.noise, drop_frame=None)
    stream = [(src.joints(i), vrx.eye_cameras(src.views(i), w, h)) for i in range(n)]  # made before timing
    eyes = [ctx.texture((w, h), 4) for _ in range(2)]  # the host's swapchain images
    rows = []
    for i, (joints, cams) in enumerate(stream):
        t0 = time.perf_counter()
        r = vr.step(joints, cams, targets=eyes, timestamp=i / src.rate_hz)
        t1 = time.perf_counter()
        ctx.finish()
        t2 = time.perf_counter()
        t = {k: float(r.timings_ms.get(k, 0.0)) for k in stages if k not in ("gl_finish", "other")}
        t["gl_finish"] = (t2 - t1) * 1e3
        t["end_to_end"] = (t2 - t0) * 1e3
        t["other"] = t["end_to_end"] - sum(t[k] for k in stages if k != "other")
        if i >= a.warmup:
            rows.append(t)
    be = engine.student_backend(a.model, inference=a.inference)
    renderer = ctx.info.get("GL_RENDERER")
    for tex in eyes:
        tex.release()
    engine.release()
    with ctx:  # released after making it not current (leaving `with` does)
        pass
    ctx.release()
    load_after = os.getloadavg()
    per_stage = {k: stats([r[k] for r in rows]) for k in (*stages, "end_to_end")}
    result = {
        "benchmark": "vr_latency",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                    "load_average_before": list(load_before), "load_average_after": list(load_after),
                    "gl_renderer": renderer, "cuda": bool(torch.cuda.is_available())},
        "versions": versions(),
        "settings": {"eye_size": [w, h], "eyes": 2, "frames": a.frames, "warmup": a.warmup, "lights": a.lights,
                     "uv_resolution": be.resolution, "student_backend": be.name, "student_variant": be.variant,
                     "raycast_backend": engine.raycast_backend, "env": a.env, "tracker_noise": a.noise,
                     "smoothing": "OneEuroFilter on positions and quaternions", "hands": 2,
                     "targets": "two RGBA8 textures of the engine's context (swapchain stand-ins), no read-back",
                     "fov_rad": vrx.QUEST_LIKE_FOV, "ipd_m": vrx.IPD},
        "per_stage": per_stage,
        "frames_ms": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"VR latency, 2 x {w}x{h}, {a.frames} frames ({be.name}, raycast {engine.raycast_backend}, {renderer}); "
          f"load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'stage':<12}{'median ms':>11}{'p95 ms':>10}")
    for k in (*stages, "end_to_end"):
        print(f"{k:<12}{per_stage[k]['median_ms']:>11.2f}{per_stage[k]['p95_ms']:>10.2f}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
