"""Tracking benchmark: milliseconds per hand to retarget tracker input onto the hand model, and the
round-trip accuracy on synthetic trackers made from the model.

    python benchmarks/bench_tracking.py [--frames 2000] [--accuracy-frames 200] [--noise 2]
                                        [--out benchmarks/results/tracking_cpu.json]

Inputs: OpenXR XR_EXT_hand_tracking joints (26 positions + quaternions + flags) and 21 keypoints
(MediaPipe order), from random poses (every anatomical angle uniform within its joint limits),
random global orientations and positions, both hands, Gaussian noise (``--noise`` mm per
coordinate and degrees per rotation-vector component).  The synthetic data are made before
timing; a timed call is one ``HandRetargeter.retarget_*`` (validation, mapping, solve, clamping,
forward kinematics, residuals), without and with One Euro smoothing.  Accuracy: the model re-posed
with the retargeted parameters vs the noise-free truth (16 joints + 5 fingertips, mm) and the
geodesic error of the 15 local joint rotations (degrees).
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
    ap.add_argument("--frames", type=int, default=2000, help="timed frames per hand and input kind")
    ap.add_argument("--accuracy-frames", type=int, default=200, help="frames per hand for the accuracy figures")
    ap.add_argument("--noise", type=float, default=2.0, help="tracker noise, mm per coordinate / deg per component")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/tracking_cpu.json")
    a = ap.parse_args(argv)

    from relit_hands.hand_model import HandModel, rodrigues
    from relit_hands.poses import anatomical_to_pose, limits_array
    from relit_hands.tracking import (HandRetargeter, OneEuroFilter, synthetic_keypoints21,
                                      synthetic_openxr_joints)

    rng = np.random.default_rng(a.seed)
    lim = limits_array()
    models = {side: HandModel(side=side) for side in ("right", "left")}
    n_data = max(a.accuracy_frames, min(a.frames, 500))  # distinct synthetic frames, cycled when timing
    data = {}
    for side, model in models.items():
        frames = []
        for _ in range(n_data):
            pose = anatomical_to_pose(rng.uniform(lim[..., 0], lim[..., 1]), side=side)
            go, tr = rng.normal(0.0, 1.0, 3), rng.normal(0.0, 0.3, 3)
            frames.append({"pose": pose, "go": go, "tr": tr,
                           "xr": synthetic_openxr_joints(model, pose, go, tr, a.noise, a.noise, rng),
                           "kp": synthetic_keypoints21(model, pose, go, tr, a.noise, rng)})
        data[side] = frames

    def call(rt, kind, f, t):
        if kind == "openxr":
            x = f["xr"]
            return rt.retarget_openxr(x["positions"], x["orientations"], x["location_flags"], timestamp=t)
        return rt.retarget_keypoints21(f["kp"], timestamp=t)

    timing, accuracy = {}, {}
    for kind in ("openxr", "keypoints21"):
        for smoothing in (False, True):
            ms = []
            for side, model in models.items():
                filters = dict(position_filter=OneEuroFilter(), orientation_filter=OneEuroFilter(beta=0.5)) if smoothing else {}
                rt = HandRetargeter(model, position_noise_mm=max(a.noise, 0.1), orientation_noise_deg=max(a.noise, 0.1),
                                    **filters)
                for i in range(a.frames + 20):
                    f = data[side][i % n_data]
                    t0 = time.perf_counter()
                    call(rt, kind, f, i / 90.0)
                    if i >= 20:
                        ms.append((time.perf_counter() - t0) * 1e3)
            timing[f"{kind}{'_smoothed' if smoothing else ''}"] = stats(ms)
        errs, angs = [], []
        for side, model in models.items():
            rt = HandRetargeter(model, position_noise_mm=max(a.noise, 0.1), orientation_noise_deg=max(a.noise, 0.1))
            for f in data[side][:a.accuracy_frames]:
                r = call(rt, kind, f, None)
                with torch.no_grad():
                    truth = model(f["pose"], f["go"], f["tr"], meshes=()).keypoints[0].double().numpy()
                    got = model(r.pose, r.global_orient, r.transl, meshes=()).keypoints[0].double().numpy()
                errs.append(np.linalg.norm(got - truth, axis=-1) * 1e3)
                Ra = rodrigues(torch.as_tensor(np.asarray(f["pose"], np.float64).reshape(15, 3)))
                Rb = rodrigues(torch.as_tensor(r.pose.astype(np.float64).reshape(15, 3)))
                c = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
                angs.append(np.degrees(np.arccos(np.clip(c.numpy(), -1.0, 1.0))))
        errs, angs = np.array(errs), np.array(angs)
        accuracy[kind] = {"keypoint_mean_mm": float(errs.mean()), "keypoint_max_mm": float(errs.max()),
                          "keypoint_per_frame_max_p95_mm": float(np.percentile(errs.max(1), 95)),
                          "joint_angle_mean_deg": float(angs.mean()), "joint_angle_p95_deg": float(np.percentile(angs, 95)),
                          "frames": int(len(errs))}

    result = {
        "benchmark": "tracking", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor(),
                    "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]},
        "versions": {"numpy": np.__version__, "torch": torch.__version__},
        "settings": {"frames_per_hand": a.frames, "accuracy_frames_per_hand": a.accuracy_frames,
                     "noise_mm_per_coordinate": a.noise, "noise_deg_per_component": a.noise, "seed": a.seed,
                     "hands": list(models), "poses": "anatomical angles uniform within poses.JOINT_LIMITS",
                     "smoothing": "OneEuroFilter() on positions, OneEuroFilter(beta=0.5) on quaternions"},
        "ms_per_hand": timing,
        "accuracy": accuracy,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'input':>22} | {'median ms':>9} | {'p95 ms':>7} | {'min ms':>7}")
    for k, v in timing.items():
        print(f"{k:>22} | {v['median_ms']:9.3f} | {v['p95_ms']:7.3f} | {v['min_ms']:7.3f}")
    print(f"{'input':>22} | {'kp mean mm':>10} | {'kp max mm':>9} | {'angle mean deg':>14}")
    for k, v in accuracy.items():
        print(f"{k:>22} | {v['keypoint_mean_mm']:10.2f} | {v['keypoint_max_mm']:9.2f} | {v['joint_angle_mean_deg']:14.2f}")
    print(f"(noise {a.noise} mm / {a.noise} deg per component; load average {result['machine']['load_average_1min']:.2f} "
          f"on {os.cpu_count()} CPUs)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
