"""CPU (or CUDA) end-to-end frame time through the student, per stage, per inference backend.

    python -m relit_hands.tools.bench_student --resolution 256 --lights 64 --size 1280x720 \\
        --backends torch onnxruntime --threads 1 --out docs/bench_student.json

Two hands (``clasp``), skinning -> lights -> ray casting -> features -> UV gather -> student ->
textures -> upload -> composite, with a student of the default architecture (base 32, levels 4;
random weights: the cost does not depend on the values). Median over ``--reps`` frames after
``--warmup``. Writes a JSON summary (``--out``) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="clasp")
    ap.add_argument("--env", default="sky_sun")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--lights", type=int, default=64)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    import torch

    from ..engine import Engine
    from ..environment import EnvironmentMap
    from ..inference import make_backend
    from ..scene import scene_preset
    from ..student import StudentNet

    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    engine = Engine()
    scene = scene_preset(args.scene)
    env = EnvironmentMap.from_name_or_path(args.env).rotate(160.0)
    cam = engine.default_camera(scene, w, h)
    torch.manual_seed(0)
    model = StudentNet.for_variant("vis", resolution=args.resolution, base=args.base, levels=args.levels)
    results = {}
    for kind in args.backends:
        be = make_backend(kind, model=model, threads=args.threads)
        runs = []
        for i in range(args.warmup + args.reps):
            t0 = time.perf_counter()
            f = engine.render_student(scene, env, cam, student=be, n_lights=args.lights)
            wall = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                runs.append(dict(f.timings_ms, wall=wall))
        keys = [k for k in runs[0] if k != "composite_per_view"]
        results[be.name] = {k: statistics.median(r[k] for r in runs) for k in keys}
    engine.release()
    stages = list(next(iter(results.values())))
    print(f"{'stage (ms, median)':<20}" + "".join(f"{n:>18}" for n in results))
    for s in stages:
        print(f"{s:<20}" + "".join(f"{results[n][s]:>18.1f}" for n in results))
    summary = {"settings": {**vars(args), "parameters": sum(p.numel() for p in model.parameters())},
               "machine": {"platform": platform.platform(), "torch": torch.__version__,
                           "cpu_threads": args.threads, "cuda": torch.cuda.is_available()},
               "median_ms": results}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(summary, fh, indent=1)
    print(json.dumps(summary["settings"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
