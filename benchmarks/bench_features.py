"""Per-stage timing of the lighting-feature pipeline (ray casting build/query, features, UV
gather) for two ~1000-vertex proxies, N in {64,128,256} lights, R in {256,512}.

    python benchmarks/bench_features.py [--asset models/hand/right_hand.npz] [--repeats 5]
        [--backends auto,embree,torch] [--out benchmarks/results/features_cpu.json]

Mesh source: synthetic by default (two deformed lat-long spheres with a two-chart UV
atlas, 968 vertices / 1932 triangles each, placed like two nearly touching hands); with
``--asset`` a npz holding proxy_vertices / proxy_faces / proxy_uvs / proxy_uv_faces (the hand
asset format of docs/conventions.md): the right hand and its z-mirror (the left hand, winding
flipped, same UVs) placed side by side. Writes JSON with machine info.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relit_hands import raycast as rc
from relit_hands.features import lighting_features, vertex_normals
from relit_hands.uv_maps import UVRasterizer, synthetic_uv_sphere


def fibonacci_dirs(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.cos(phi), np.sin(th) * np.sin(phi)], 1
                    ).astype(np.float32)


def load_meshes(asset: str | None):
    """-> vertices [2,V,3], faces [F,3] per hand (list), uvs, uv_faces, description."""
    if asset:
        z = np.load(asset, allow_pickle=False)
        v = z["proxy_vertices"].astype(np.float32)
        f = z["proxy_faces"].astype(np.int64)
        uv, uvf = z["proxy_uvs"].astype(np.float32), z["proxy_uv_faces"].astype(np.int64)
        left = v * np.array([1, 1, -1], np.float32)          # mirror z -> -z
        left = left + np.array([0, 0, -0.06], np.float32) - [0, 0, left[:, 2].max()]
        right = v + np.array([0, 0, 0.0], np.float32) - [0, 0, v[:, 2].min()]
        return np.stack([right, left]), [f, f[:, ::-1].copy()], uv, uvf, f"asset {asset}"
    v, f, uv, uvf = synthetic_uv_sphere(24, 42, radius=0.045)
    u = v / 0.045
    va = v * (1 + 0.12 * np.sin(5 * u[:, :1]) * np.cos(3 * u[:, 1:2])) * [1.6, 0.6, 1.0]
    vb = v * (1 + 0.10 * np.cos(4 * u[:, 2:3] + 1.0)) * [1.6, 0.6, 1.0]
    vb = vb + [0.02, 0.035, 0.03]
    f = f.astype(np.int64)
    return (np.stack([va, vb]).astype(np.float32), [f, f], uv, uvf.astype(np.int64),
            "synthetic: two deformed lat-long spheres, 968 vertices / 1932 triangles each")


def timed(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return out, ts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asset", default=None)
    ap.add_argument("--lights", default="64,128,256")
    ap.add_argument("--resolutions", default="256,512")
    ap.add_argument("--backends", default="auto,embree,grid,torch")
    ap.add_argument("--slow-max-lights", type=int, default=64,
                    help="on CPU run the brute-force 'torch' and the torch 'grid' backends "
                         "only up to this N (they are slow there)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "features_cpu.json"))
    a = ap.parse_args(argv)

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    load_before = _loadavg()
    dev = torch.device(a.device)
    V, Fs, uv, uvf, desc = load_meshes(a.asset)
    Vt = torch.from_numpy(V).to(dev)
    Nt = torch.stack([vertex_normals(Vt[h], torch.from_numpy(Fs[h]).to(dev)) for h in range(2)])
    Ft = [torch.from_numpy(f).to(dev) for f in Fs]
    backends = []
    for b in a.backends.split(","):
        b = b.strip()
        name = rc.resolve_backend(b)
        if name == "triton" and dev.type != "cuda":
            continue
        if name in rc.available_backends() and name not in backends:
            backends.append(name)
    print(f"mesh: {desc}; backends {backends}; auto -> {rc.resolve_backend('auto')}; "
          f"device {dev}", flush=True)
    results = []
    cam = torch.tensor([0.0, 0.1, 0.5], device=dev)
    rasters = {}
    for R in [int(r) for r in a.resolutions.split(",")]:
        t0 = time.perf_counter()
        rasters[R] = UVRasterizer(uv, uvf, R)
        rasters[R].gather(torch.zeros(2, V.shape[1], 1, device=dev), Ft[0])  # index upload
        print(f"UV precompute R={R}: {(time.perf_counter() - t0) * 1e3:.1f} ms "
              f"(cache {'hit' if rasters[R].loaded_from_cache else 'miss'})", flush=True)
    for N in [int(n) for n in a.lights.split(",")]:
        d = torch.from_numpy(fibonacci_dirs(N)).to(dev)
        E = torch.rand(N, 3, generator=torch.Generator().manual_seed(N)).to(dev) ** 4
        for b in backends:
            if b in ("torch", "grid") and dev.type == "cpu" and N > a.slow_max_lights:
                continue
            caster = rc.get_backend(b)
            infos = []

            def run_vis():
                vis, info = rc.proxy_visibility(Vt, Nt, Ft, d, backend=caster, return_info=True)
                infos.append(info)
                return vis
            reps = 1 if (b in ("torch", "grid") and dev.type == "cpu") else a.repeats
            vis, ts = timed(run_vis, reps)
            infos = infos[1:]
            feats_out, tf = timed(lambda: lighting_features(Vt, Nt, vis, d, E, cam), a.repeats)
            feats = feats_out[0]
            row = {"backend": b, "lights": N, "rays_cast": infos[-1]["rays"],
                   "visibility_total_ms": statistics.median(ts),
                   "raycast_build_ms": statistics.median(i["build_ms"] for i in infos),
                   "raycast_query_ms": statistics.median(i["query_ms"] for i in infos),
                   "features_ms": statistics.median(tf), "channels": feats.shape[-1],
                   "visible_fraction": float(vis.float().mean())}
            if hasattr(caster, "last_bin_ms"):
                row["grid_binning_ms"] = caster.last_bin_ms
                row["grid_candidates_per_ray"] = caster.last_candidates / max(1, row["rays_cast"])
            for R, r in rasters.items():
                _, tg = timed(lambda: r.gather(feats, Ft[0]), a.repeats)
                row[f"uv_gather_R{R}_ms"] = statistics.median(tg)
                row[f"total_R{R}_ms"] = (row["visibility_total_ms"] + row["features_ms"]
                                         + row[f"uv_gather_R{R}_ms"])
            results.append(row)
            print(json.dumps(row), flush=True)
    # work estimates for the GPU kernels (device independent)
    work = []
    for N in [int(n) for n in a.lights.split(",")]:
        d = torch.from_numpy(fibonacci_dirs(N))
        fr = rc.visibility_rays(Vt.cpu(), Nt.cpu(), [f.cpu() for f in Ft], d)
        K = int(fr["scene_faces"].shape[0])
        G = rc.default_grid_size(K)
        bins = rc.bin_triangles_per_light(fr["scene_vertices"], fr["scene_faces"],
                                          fr["directions"], G)
        li = fr["light_index"]
        _, cnt = rc._ray_cells(bins, fr["origins"], li)
        cl = rc.cluster_cull_stats(fr["scene_vertices"], fr["scene_faces"], fr["origins"],
                                   fr["dirs"], 64, 64)
        work.append({"lights": N, "rays": int(li.numel()), "triangles": K, "grid": G,
                     "grid_bin_entries": bins["entries"],
                     "grid_candidates_per_ray": float(cnt.float().mean()),
                     "grid_max_candidates": int(cnt.max()),
                     "cluster64_tiles_tested_fraction": cl["tiles_tested_fraction"],
                     "brute_force_tests": cl["brute_force_tests"]})
        print(json.dumps(work[-1]), flush=True)
    info = {
        "benchmark": "bench_features", "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "mesh": desc, "vertices_per_hand": int(V.shape[1]),
        "triangles_per_hand": int(Fs[0].shape[0]), "device": str(dev),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": sys.version.split()[0], "numpy": np.__version__,
                    "torch": torch.__version__,
                    "cuda_device": torch.cuda.get_device_name() if dev.type == "cuda" else None,
                    "embreex": _ver("embreex"), "triton": _ver("triton")},
        "load_average_before_after": [load_before, _loadavg()],
        "auto_backend": rc.resolve_backend("auto"), "repeats": a.repeats,
        "kernel_work": work,
        "notes": "median ms; visibility_total_ms includes ray setup (Morton sort, back-face "
                 "cull, compaction) + build + query; 'torch' = brute force and 'grid' on CPU: "
                 "1 repeat; grid query_ms includes its per-light binning. The dev machine is "
                 "shared (see load_average): CPU numbers are noisy.",
        "results": results,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2))
    print(f"wrote {out}")
    return info


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _ver(pkg):
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:
        return None


if __name__ == "__main__":
    main()
