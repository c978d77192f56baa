"""Lighting-feature benchmark on the real hand asset: the four stages of the student's input.

    python benchmarks/bench_lighting.py [--device cpu|cuda] [--raycast auto] [--frames 20]
                                        [--out benchmarks/results/lighting_cpu.json]

Two hands ('clasp' preset, the fingers animated every frame), the 'sky_sun' environment rotating
every frame; per (N lights, R) the median and p95 milliseconds of: proxy skinning, ray casting
(visibility of N lights from both proxies against both proxies), per-vertex features, UV gather
into [2, C, R, R]. Light extraction from the environment is reported separately (it is cached per
environment image and only rotated).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--raycast", default="auto", help="ray casting backend")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--lights", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on 2 shared cores)")
    ap.add_argument("--out", default="benchmarks/results/lighting_cpu.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from relit_hands.engine import Engine
    from relit_hands.environment import EnvironmentMap
    from relit_hands.scene import scene_preset

    engine = Engine(device=a.device, raycast=a.raycast)
    env = EnvironmentMap.from_name_or_path("sky_sun")
    base = scene_preset("clasp")
    view = np.array([0.0, 0.1, 0.5])
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    results = []
    for n in a.lights:
        for R in a.resolutions:
            stages = {}
            for i in range(a.frames + 3):
                scene = base.copy()
                for h in scene.hands:  # animate: flex every finger a little, differently per frame
                    h.pose = h.pose * (1.0 + 0.1 * np.sin(0.7 * i))
                ff = engine.lighting_features(scene, env.rotate(9.0 * i), view, n_lights=n, resolution=R)
                sync()
                if i >= 3:
                    for k, v in ff.timings_ms.items():
                        stages.setdefault(k, []).append(v)
            four = np.array(stages["skinning"]) + np.array(stages["raycast"]) + \
                np.array(stages["features"]) + np.array(stages["uv_gather"])
            row = {"lights": n, "resolution": R, "rays": int(2 * len(engine.asset.proxy_vertices) * n),
                   "stages_ms": {k: {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}
                                 for k, v in stages.items()},
                   "four_stages_ms": {"median": float(np.median(four)), "p95": float(np.percentile(four, 95))}}
            results.append(row)
            s = row["stages_ms"]
            print(f"N={n:4d} R={R:4d}: skin {s['skinning']['median']:6.2f}  ray {s['raycast']['median']:7.2f}  "
                  f"feat {s['features']['median']:6.2f}  gather {s['uv_gather']['median']:6.2f}  "
                  f"= {row['four_stages_ms']['median']:7.2f} ms (p95 {row['four_stages_ms']['p95']:.2f})")
    out = {
        "benchmark": "lighting_features", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor(),
                    "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu",
                    "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "settings": {"scene": "clasp (animated)", "env": "sky_sun (rotating)", "backend": engine.raycast_backend,
                     "frames": a.frames, "proxy_vertices_per_hand": int(len(engine.asset.proxy_vertices))},
        "results": results,
    }
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"backend {engine.raycast_backend}; wrote {path}")


if __name__ == "__main__":
    main()
