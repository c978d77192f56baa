"""``relit-hands recompute-features``: a student set's feature arrays again, with new feature
options, without re-running the teacher.

A student set (:mod:`.student_data`) stores per sample the scene, the environment (light-library
id + rotation) and the view origin, so the features can be recomputed from them; the teacher's
target textures -- the expensive part -- are copied as they are. Use it when the feature
computation gains an option (``--key-lights``, the brightest lights cast per UV texel,
:mod:`relit_hands.key_lights`; ``--lit-by basis``, the features lit by the teacher's shared light
basis, the light set of the targets, :func:`.relight.basis_environment`), to train a student on it
from the same teacher targets.

The environments come from ``--light-library`` (the spec or folder the set was made with; every
sample's id must be in it) or, for sets lit by fixed maps, the shipped / named maps. Writes a new
set folder (never the input); resumes: samples already written with the same options are kept.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relit_hands.validation import int_range

__all__ = ["recompute_features"]


def _environment_loader(light_library):
    from relit_hands.environment import EnvironmentMap

    if light_library is None:
        return lambda env_id: EnvironmentMap.from_name_or_path(env_id)
    from .light_library import LightLibrary

    lib = LightLibrary.from_spec(light_library) if isinstance(light_library, str) else light_library
    by_id = {e.id: e for e in lib.entries()}
    cache = {}

    def load(env_id):
        if env_id not in by_id:
            raise ValueError(f"light library {lib.source}: no map {env_id!r} (give the --light-library the set was made with)")
        if env_id not in cache:
            cache.clear()  # samples of one pose share maps; keep one
            cache[env_id] = lib.load(by_id[env_id])
        return cache[env_id]

    return load


def recompute_features(src, out, *, key_lights: int = 0, light_library=None, lit_by: str | None = None,
                       progress: bool = True, command: str | None = None, overwrite: bool = False) -> dict:
    """Write set ``out``: ``src``'s samples with features recomputed (module docstring); returns the summary.
    ``lit_by``: 'basis' (the teacher's shared light basis, :func:`.relight.basis_environment`; the
    default for sets that name their teacher's basis) or 'map' (the map itself)."""
    from tqdm import tqdm

    from relit_hands.engine import Engine
    from relit_hands.hand_model import asset_path
    from relit_hands.scene import scene_from_dict
    from relit_hands.translucency import mean_free_paths_of
    from relit_hands.validation import OutputFolder, json_file_says, write_atomic, write_text_atomic

    from .student_data import StudentDatasetError, read_manifest, write_manifest, write_sample

    t0 = time.time()
    src, out = Path(src), Path(out)
    man = read_manifest(src)
    folder = OutputFolder(out, "recompute-features", overwrite=overwrite, inputs=[src],
                          recognise=lambda p: json_file_says(p / "summary.json", tool="relit-hands recompute-features"))
    load_env = _environment_loader(light_library)
    load_env(man["samples"][0]["env"]["id"])  # fail fast on a library that does not hold the set's maps
    ref = man.get("asset", {}).get("ref")
    engine = Engine(asset=asset_path(ref))
    mfp = mean_free_paths_of(man["feature_names"])
    kw = dict(man.get("feature_kwargs") or {})
    R, N = int(man["resolution"]), int(man["n_lights"])
    n_basis = int((man.get("teacher") or {}).get("n_lights") or 0)
    lit_by = lit_by or ("basis" if n_basis else "map")
    if lit_by == "basis":
        if not n_basis:
            raise StudentDatasetError(f"{src}: the manifest names no teacher light basis (teacher.n_lights); "
                                      "use lit_by='map'")
        from .relight import basis_environment, fixed_light_directions
        basis = fixed_light_directions(n_basis)
    elif lit_by != "map":
        raise ValueError(f"lit_by must be 'basis' or 'map', got {lit_by!r}")
    options = {"key_lights": int(key_lights), "lit_by": lit_by}
    folder.create()
    done_path = out / "progress.json"
    done = json.loads(done_path.read_text()) if done_path.is_file() else {}
    if {k: done.get(k) for k in options} != options:
        done = {**options, "written": []}
    written = set(done["written"])
    names = None
    samples = []
    bar = tqdm(man["samples"], desc="recompute features", unit="sample", disable=not progress)
    for s in bar:
        samples.append(dict(s))
        if s["id"] in written:
            continue
        e = s["env"]
        env = load_env(e["id"]).rotate(float(e.get("yaw_deg", 0.0)), float(e.get("pitch_deg", 0.0)))
        if lit_by == "basis":
            env = basis_environment(env, basis)
        scene = scene_from_dict(s["scene"], f"{src}/manifest.json sample {s['id']}")
        vf = engine.vertex_features(scene, env, np.asarray(s["view_origin"], np.float64), n_lights=N,
                                    sources=("vis", "novis"), translucency=mfp, key_lights=key_lights,
                                    key_resolution=R, **kw)
        names = vf["names"]
        if names != list(man["feature_names"]):
            raise StudentDatasetError(f"{src}: recomputed channels {names} differ from the set's {man['feature_names']}")
        p = src / s["file"]
        with np.load(p, allow_pickle=False) as z:
            target, env_sh = z["target"], z["env_sh"]
        write_atomic(out / s["file"], lambda q: write_sample(
            q, vertex_features=vf["vis"], vertex_features_novis=vf["novis"], energy=vf["energy"], env_sh=env_sh,
            target=target, key=vf.get("key")))
        written.add(s["id"])
        if len(written) % 20 == 0:
            write_text_atomic(done_path, json.dumps({**options, "written": sorted(written)}))
    bar.close()
    extra = {k: v for k, v in man.items() if k not in ("format", "version", "resolution", "n_lights", "feature_names",
                                                       "feature_kwargs", "generator", "asset", "samples")}
    extra["key_lights"] = int(key_lights)
    extra["features_lit_by"] = lit_by
    extra["recomputed_from"] = str(src)
    write_manifest(out, resolution=R, n_lights=N, feature_names=man["feature_names"], samples=samples,
                   generator=man.get("generator", "")
                   + f"; features recomputed (key_lights={key_lights}, lit by the {lit_by})",
                   asset=engine.asset, feature_kwargs=man.get("feature_kwargs"), extra=extra)
    done_path.unlink(missing_ok=True)
    summary = {"tool": "relit-hands recompute-features", "command": command, "src": str(src), "out": str(out),
               "samples": len(samples), "key_lights": int(key_lights), "features_lit_by": lit_by,
               "wall_seconds": time.time() - t0}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def add_arguments(p):
    p.add_argument("--data", required=True, help="the student set to recompute the features of")
    p.add_argument("--out", required=True, help="new set folder (the targets are copied)")
    p.add_argument("--key-lights", type=int_range(0, 64), default=0,
                   help="cast the K brightest feature lights per UV texel (relit_hands.key_lights)")
    p.add_argument("--light-library", metavar="DIR_OR_SPEC", default=None,
                   help="the light library the set was made with (gen:COUNT or a folder); "
                        "omit for sets lit by shipped / named maps")
    p.add_argument("--lit-by", choices=("basis", "map"), default=None,
                   help="light the features by the teacher's shared light basis, the light set of the targets "
                        "(default when the set names it), or by the map itself (sets made before the basis "
                        "was used for features)")
    p.add_argument("--threads", type=int_range(1, 1024), default=1)
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder that relit-hands did not write (never an input)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_from_args(args, command: str | None = None) -> int:
    torch.set_num_threads(max(1, args.threads))
    s = recompute_features(args.data, args.out, key_lights=args.key_lights, light_library=args.light_library,
                           lit_by=args.lit_by,
                           progress=not args.no_progress, command=command, overwrite=args.overwrite)
    print(json.dumps(s, indent=1))
    return 0


def main(argv=None) -> int:
    return run_from_args(add_arguments(argparse.ArgumentParser(
        prog="relit-hands recompute-features", description=__doc__.splitlines()[0])).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
