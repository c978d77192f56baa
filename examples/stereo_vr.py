"""Stereo for VR: one feature + student pass, two eye views, written side by side.

    python examples/stereo_vr.py --scene interlocked --env window --ipd 0.063 --out stereo.png

A VR runtime gives a head pose and per-eye offsets; here a head camera frames the hands and the
eyes sit -/+ IPD/2 along its x axis. ``Engine.render_student`` computes the lighting features
once, from the midpoint of the eyes, runs the student once, and composites each eye with the same
UV textures (the shipped default student, or ``--model``).
"""
import argparse

import numpy as np
import torch

from relit_hands import Engine, EnvironmentMap, scene_preset
from relit_hands.image_io import write_png


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="interlocked")
    ap.add_argument("--env", default="window")
    ap.add_argument("--yaw", type=float, default=0.0)
    ap.add_argument("--ipd", type=float, default=0.064, help="interpupillary distance (metres)")
    ap.add_argument("--eye-size", default="960x1080", help="per-eye WxH")
    ap.add_argument("--model", help="student weights (.safetensors); default: the shipped model")
    ap.add_argument("--inference", default="auto", help="student inference backend: auto | torch | onnxruntime | tensorrt")
    ap.add_argument("--out", default="stereo.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    w, h = (int(v) for v in args.eye_size.split("x"))

    engine = Engine()
    scene = scene_preset(args.scene)
    env = EnvironmentMap.from_name_or_path(args.env).rotate(args.yaw)
    head = engine.default_camera(scene, w, h, fov_y_deg=60.0)
    left, right = head.stereo_pair(args.ipd)
    frame = engine.render_student(scene, env, [left, right], student=args.model, inference=args.inference)
    sbs = frame.side_by_side()                                  # [h, 2w, 3]: left eye | right eye
    write_png(args.out, sbs)
    diff = np.abs(frame.frames[0].image.astype(int) - frame.frames[1].image.astype(int)).mean()
    t = frame.timings_ms
    print(f"wrote {args.out} ({sbs.shape[1]}x{sbs.shape[0]}), backend {frame.backend}; one feature + student "
          f"pass ({t['raycast'] + t['features'] + t['uv_gather']:.1f} + {t['student']:.1f} ms), two composites "
          f"({', '.join(f'{c:.1f}' for c in t['composite_per_view'])} ms); total {t['total']:.1f} ms; "
          f"mean |left - right| = {diff:.2f} (8-bit)")
    engine.release()


if __name__ == "__main__":
    main()
