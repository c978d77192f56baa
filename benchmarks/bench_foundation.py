"""Foundation benchmark: skinning both hands and one PBR frame through the OpenGL compositor.

    python benchmarks/bench_foundation.py [--frames 30] [--size 1280x720] [--out benchmarks/results/foundation_cpu.json]

Skinning = both hands' render + proxy meshes (LBS, batch 1 each, torch, no grad). Frame = the
Engine's full PBR path (skinning, normals, vertex upload, shadow maps, hands, background, tone
mapping, read-back) for the two-hand 'clasp' preset under 'studio', the environment rotating
every frame so its light conversion is redone (the worst case).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def stats(ms):
    ms = np.asarray(ms)
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "min_ms": float(ms.min()), "n": int(len(ms))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="benchmarks/results/foundation_cpu.json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.size.split("x"))

    from relit_hands.engine import Engine
    from relit_hands.environment import EnvironmentMap
    from relit_hands.scene import scene_preset

    engine = Engine()
    scene = scene_preset("clasp")
    env = EnvironmentMap.from_name_or_path("studio")
    cam = engine.default_camera(scene, w, h)

    # skinning both hands (render + proxy meshes)
    skin = []
    with torch.no_grad():
        for i in range(a.frames + 5):
            t0 = time.perf_counter()
            for hand in scene.hands:
                engine.models[hand.side](hand.pose, hand.global_orient, hand.transl, meshes=("render", "proxy"))
            if i >= 5:
                skin.append((time.perf_counter() - t0) * 1e3)

    frames, stages = [], {}
    for i in range(a.frames + 3):
        frame = engine.render(scene, env.rotate(7.0 * i), cam, shading="pbr")
        if i >= 3:
            frames.append(frame.timings_ms["total"])
            for k, v in {**frame.timings_ms, **{f"gl_{k}": v for k, v in
                                                  frame.composite_ms.items()}}.items():
                stages.setdefault(k, []).append(v)
    import moderngl

    result = {
        "benchmark": "foundation", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor(),
                    "gl_renderer": engine.compositor.ctx.info["GL_RENDERER"], "torch_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "moderngl": moderngl.__version__},
        "settings": {"scene": "clasp", "env": "studio (rotating)", "size": [w, h], "frames": a.frames,
                     "render_vertices_per_hand": int(len(engine.asset.render_vertices)),
                     "proxy_vertices_per_hand": int(len(engine.asset.proxy_vertices))},
        "skinning_both_hands": stats(skin),
        "pbr_frame": stats(frames),
        "pbr_frame_stages": {k: stats(v) for k, v in stages.items()},
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"skinning both hands (render+proxy): median {result['skinning_both_hands']['median_ms']:.2f} ms")
    print(f"PBR frame {w}x{h}: median {result['pbr_frame']['median_ms']:.1f} ms, "
          f"p95 {result['pbr_frame']['p95_ms']:.1f} ms")
    for k, v in result["pbr_frame_stages"].items():
        print(f"  {k:>22}: {v['median_ms']:8.2f} ms")
    print(f"wrote {out}")
    engine.release()


if __name__ == "__main__":
    main()
