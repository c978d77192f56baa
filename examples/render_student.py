"""Render two hands with the neural student (one camera) and print the per-stage timings.

    python examples/render_student.py --scene clasp --env sky_sun --yaw 160 --out student.png
    python examples/render_student.py --model runs/student_vis/student.safetensors --inference onnxruntime

Without ``--model`` the engine uses the shipped default student
(``relit_hands/models/student/student.safetensors``); until one has been trained it runs a
randomly initialised student and says so (the image then shows the pipeline, not a relit hand).
"""
import argparse
import json

import torch

from relit_hands import Engine, EnvironmentMap, scene_preset
from relit_hands.image_io import write_png


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="clasp")
    ap.add_argument("--env", default="sky_sun")
    ap.add_argument("--yaw", type=float, default=160.0)
    ap.add_argument("--model", help="student weights (.safetensors); default: the shipped model")
    ap.add_argument("--inference", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"))
    ap.add_argument("--lights", type=int, default=64)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--out", default="student.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    w, h = (int(v) for v in args.size.split("x"))

    engine = Engine()
    scene = scene_preset(args.scene)                                    # two posed hands (+ root transforms)
    env = EnvironmentMap.from_name_or_path(args.env).rotate(args.yaw)   # environment + rotation
    camera = engine.default_camera(scene, w, h)
    frame = engine.render_student(scene, env, camera, student=args.model, inference=args.inference,
                                  n_lights=args.lights)
    write_png(args.out, frame.image)
    print(f"wrote {args.out}  backend {frame.backend}, variant {frame.variant}, UV {frame.resolution}^2, "
          f"textures {sorted(frame.textures)}")
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in frame.timings_ms.items()
                      if k != "composite_per_view"}, indent=1))
    engine.release()


if __name__ == "__main__":
    main()
