r"""Environment relighting by linearity with the OLAT teacher, and the student-set writer.

    tex = teacher_env_texture(teacher, cond, scene, env, view_origin, n_lights=512)   # [H,3,R,R]
    relit-hands make-student-set --teacher runs/teacher --out data/student --poses 200 \
        --envs studio sky_sun sunset --rotations 8

Light transport is linear in the light, and the teacher's output is linear in each light's
intensity with no interaction between lights (:mod:`.teacher`), so an environment converted into
N directional lights (N >= 256) gives its texture as ``sum_l E_l * T(w_l)`` with ``T(w)`` the
teacher's texture for a directional light of unit irradiance from ``w``.

Two ways to choose the lights:

* per environment (:func:`teacher_env_texture`, used by the evaluation renderer):
  ``EnvironmentMap.directional_lights(n)`` -- region centroids of that map (a sun becomes one light
  at its true direction). Best accuracy for one environment; the basis is not shared.
* shared basis (:class:`SharedBasisRelighter`, used for the student set): a FIXED world direction
  set (Fibonacci sphere, ``n`` points) and each (environment, rotation)'s energy projected onto it
  (every env pixel's radiance x solid angle goes to its nearest fixed direction, so energy is
  conserved exactly). The OLAT basis of a pose ``[L, H, 3, R, R]`` is computed once, in chunks of
  lights, and contracted with the light weights of EVERY environment and rotation of that pose in
  the same pass (``einsum('ehlc,lhcxy->ehcxy')`` per chunk), so the teacher cost is per pose, not
  per (pose, environment, rotation). The price: a light can be off its true direction by up to
  half the spacing (~4.5 deg at n = 512, ~6.5 deg at 256): shadows of a sharp sun move by that
  much; use n = 1024 for sunny maps if needed.

Student set (:func:`make_student_set`): exactly the format of :mod:`relit_hands.tools.student_data`
(``write_sample`` / ``write_manifest``); features from
:func:`relit_hands.tools.student_data.proxy_vertex_features` (the engine's proxy feature pass, with and
without visibility) lit by :func:`basis_environment` (the map as the shared basis sees it, so the
features' lights and shadows are the targets'), targets = the teacher's env-lit textures. Poses: the
shipped pose / scene presets and the capture's TRAIN poses, every finger parameter jittered by up to
0.15 radians, in the presets' orientation; with ``--contact-fraction F`` a fraction F of
the poses are instead two-hand contact scenes built the way the evaluation sets build theirs
(:func:`contact_scene`: a two-hand scene preset, every anatomical angle moved by up to
``--contact-jitter-deg`` degrees within the joint limits, the whole scene turned by a uniformly random
rotation), so the student sees contact poses and turned scenes like the ones it is scored on. Any
candidate with a hand closer than ``--exclude-radius`` (RMS over the 45 finger parameters, radians)
to the same-side hand of a held-out pose of the evaluation capture(s) (``--capture``, one or more)
is rejected and redrawn, so the student never trains on the evaluation poses. Splits per pose: ``val`` for ``--val-fraction`` of the poses, else ``train``.
Environments (:class:`StudentEnvironments`): every pose is lit by each of ``--envs`` (default: the
six shipped maps), or with ``--light-library DIR|gen:COUNT`` by ``--envs-per-pose`` maps drawn per
pose from the ``train`` split of a :mod:`.light_library` (a folder written by
``make-light-library``, a folder of user maps, or COUNT generated train maps per training family);
every drawn map passes :func:`~.light_library.require_split` (``train`` only), and a sample's
``env.id`` is the library entry's id (``"<family>-<seed:06d>"`` or ``"file-<stem>"``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relit_hands.translucency import DEFAULT_MEAN_FREE_PATHS
from relit_hands.validation import finite_float, int_range

__all__ = ["teacher_env_texture", "SharedBasisRelighter", "env_light_weights", "fixed_light_directions",
           "basis_environment", "StudentEnvironments", "make_student_set", "main", "build_parser", "load_teacher_run"]


def load_teacher_run(path, resolution=None):
    """(teacher, meta, TexelConditioning) from a run folder or a weights file."""
    from relit_hands.engine import Engine  # noqa: F401  (conditioning reuses an engine when given)
    from .teacher import load_teacher
    from .teacher_inputs import TexelConditioning

    model, meta = load_teacher(path)
    R = int(resolution or model.resolution)
    if R != model.resolution:
        raise ValueError(f"{path}: teacher resolution is {model.resolution}, asked for {R}")
    cond = TexelConditioning.for_teacher(None, model, R)
    return model, meta, cond


def _chunks(n, k):
    for i in range(0, n, k):
        yield slice(i, min(n, i + k))


@torch.no_grad()
def directional_response(teacher, geo, directions, view_origin, chunk: int = 32, feats=None):
    """Yield (slice, response [H, l, 3, R, R]) for unit-irradiance directional lights, chunked."""
    if feats is None:
        feats = teacher.trunk_features(geo.pose)
    dirs = np.asarray(directions, np.float32)
    for sl in _chunks(len(dirs), chunk):
        cond, fall = geo.directional_lights(dirs[sl], view_origin)
        resp = teacher.light_response(feats, cond, geo.valid)
        yield sl, resp


@torch.no_grad()
def teacher_env_texture(teacher, conditioning, scene, env, view_origin, n_lights: int = 512,
                        chunk: int = 32, geo=None) -> torch.Tensor:
    """[H, 3, R, R] linear radiance of ``scene`` under ``env`` seen from ``view_origin`` (the env's
    own ``directional_lights(n_lights)``)."""
    if n_lights < 256:
        raise ValueError(f"n_lights must be >= 256 for environment relighting, got {n_lights}")
    geo = geo if geo is not None else conditioning.geometry(scene)
    dirs, rgb = env.directional_lights(n_lights)
    keep = (rgb.max(1) > 0)
    dirs, rgb = dirs[keep], torch.as_tensor(rgb[keep])
    out = None
    for sl, resp in directional_response(teacher, geo, dirs, view_origin, chunk):
        part = torch.einsum("hlcxy,lc->hcxy", resp, rgb[sl])
        out = part if out is None else out + part
    return out


def fixed_light_directions(n: int) -> np.ndarray:
    """The shared basis's world directions [n, 3] (Fibonacci sphere)."""
    from relit_hands.environment import fibonacci_sphere

    return np.asarray(fibonacci_sphere(n), np.float32)


def env_light_weights(env, directions) -> np.ndarray:
    """[n, 3] RGB irradiance of ``env`` (rotation and exposure applied) projected onto the fixed
    world ``directions`` [n, 3] (nearest direction per pixel; energy conserved exactly)."""
    from scipy.spatial import cKDTree

    d = np.asarray(env.pixel_directions(), np.float64).reshape(-1, 3)
    omega = np.repeat(env.pixel_solid_angles(), env.width)
    rad = env.image.reshape(-1, 3).astype(np.float64) * omega[:, None] * env.scale
    _, idx = cKDTree(np.asarray(directions, np.float64)).query(d)
    return np.stack([np.bincount(idx, weights=rad[:, c], minlength=len(directions)) for c in range(3)], 1)


def basis_environment(env, directions):
    """``env`` as the shared basis sees it: an :class:`~relit_hands.environment.EnvironmentMap` of
    the same size, rotation and exposure that is black except for one pixel per basis direction,
    which holds that direction's projected energy (:func:`env_light_weights`) as radiance
    ``W / (solid angle x 2**exposure)``.

    Why. The student set's targets light the teacher from the basis directions, so a sun there
    sits at its nearest basis direction (up to half the spacing off, ~6.5 deg at n = 256), while
    the features, computed from ``env`` itself, cast its shadows from the true direction: the
    student would be taught shadows that do not follow its visibility inputs. Features computed
    from this map (``directional_lights``, key lights) see the very light set of the targets.
    Energy is conserved exactly (``total_energy`` equals ``env``'s)."""
    from relit_hands.environment import EnvironmentMap

    dirs = np.asarray(directions, np.float64).reshape(-1, 3)
    W = env_light_weights(env, dirs)
    H, Wd = env.height, env.width
    uv = env.direction_to_uv(dirs)
    col = np.clip((uv[:, 0] % 1.0 * Wd).astype(np.int64), 0, Wd - 1)
    row = np.clip((uv[:, 1] * H).astype(np.int64), 0, H - 1)
    omega = env.pixel_solid_angles()[row]
    img = np.zeros((H, Wd, 3), np.float64)
    np.add.at(img, (row, col), W / (omega[:, None] * env.scale))
    return EnvironmentMap(img.astype(np.float32), name=f"{env.name} (basis {len(dirs)})", rotation=env.rotation,
                          exposure=env.exposure)


class SharedBasisRelighter:
    """Per pose: one pass over a fixed light set, contracted with many environments at once."""

    def __init__(self, teacher, conditioning, n_lights: int = 512, chunk: int = 32):
        if n_lights < 256:
            raise ValueError(f"n_lights must be >= 256, got {n_lights}")
        self.teacher, self.cond = teacher, conditioning
        self.dirs = fixed_light_directions(n_lights)
        self.chunk = chunk

    def weights(self, envs) -> torch.Tensor:
        return torch.as_tensor(np.stack([env_light_weights(e, self.dirs) for e in envs]), dtype=torch.float32)

    @torch.no_grad()
    def textures(self, scene, view_origin, envs=None, weights=None, geo=None) -> torch.Tensor:
        """[E, H, 3, R, R] for environments ``envs`` (or precomputed ``weights`` [E, n, 3])."""
        W = self.weights(envs) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        geo = geo if geo is not None else self.cond.geometry(scene)
        active = np.nonzero((W.amax(dim=(0, 2)) > 0).numpy())[0]
        out = None
        for sl, resp in directional_response(self.teacher, geo, self.dirs[active], view_origin, self.chunk):
            part = torch.einsum("elc,hlcxy->ehcxy", W[:, active[sl]], resp)
            out = part if out is None else out + part
        return out


# ----------------------------------------------------------------------------- student set

def _pose_distance(a, b) -> float:
    """RMS difference of two hands' 45-D finger poses (radians)."""
    return float(np.sqrt(np.mean((np.asarray(a.pose, np.float64) - np.asarray(b.pose, np.float64)) ** 2)))


def is_near_heldout(scene, heldout_scenes, radius: float) -> bool:
    """True when any hand of ``scene`` is within ``radius`` (RMS over the 45 finger parameters,
    radians) of the same-side hand of a held-out scene."""
    for hs in heldout_scenes:
        for h in scene.hands:
            o = hs.hand(h.side)
            if o is not None and _pose_distance(h, o) <= radius:
                return True
    return False


def contact_scene(rng, models, jitter_deg: float = 8.0):
    """A two-hand contact scene as the evaluation sets draw them: a random two-hand scene preset
    (``scene.SCENE_PRESETS``), every anatomical finger angle of both hands moved by up to
    ``jitter_deg`` degrees (within the joint limits; small enough that the hands stay in or near
    contact), the scene
    turned rigidly by a uniformly random rotation about the origin. ``models``: {side: HandModel}."""
    from relit_hands.scene import SCENE_PRESETS, HandState, Scene, scene_preset

    from .lightstage import jitter_anatomical, random_rotation, rotate_scene

    base = scene_preset(list(SCENE_PRESETS)[int(rng.integers(len(SCENE_PRESETS)))])
    hands = [HandState(h.side, jitter_anatomical(rng, h.pose, h.side, jitter_deg), h.global_orient, h.transl)
             for h in base.hands]
    return rotate_scene(Scene(hands, name=base.name), random_rotation(rng), np.zeros(3), models)


def candidate_scenes(rng, captures=()):
    """Base scenes: pose presets, scene presets and the train-split poses of ``captures`` (loaded
    :class:`~relit_hands.tools.capture.Capture` objects)."""
    from relit_hands.poses import POSE_PRESETS
    from relit_hands.scene import SCENE_PRESETS, scene_preset

    base = [scene_preset(n) for n in list(SCENE_PRESETS) + list(POSE_PRESETS)]
    if captures:
        seen = set()
        from .teacher_training import pose_key

        for f in (f for cap in captures for f in cap.frames):
            if f.split == "train" and pose_key(f.scene) not in seen:
                seen.add(pose_key(f.scene))
                base.append(f.scene)
    return base


class StudentEnvironments:
    """The environments of the student set (module docstring): fixed maps that light every pose,
    or ``per_pose`` maps drawn per pose from a light library's ``train`` split."""

    PURPOSE = "make-student-set (training)"

    def __init__(self, envs=None, light_library=None, per_pose: int = 6):
        from relit_hands.environment import EnvironmentMap

        from .light_library import LightLibrary, require_split

        self.library, self.per_pose, self.used = None, int(per_pose), []
        if light_library is None:
            names = list(envs) if envs else EnvironmentMap.list_shipped()
            self._fixed = [(n, EnvironmentMap.from_name_or_path(n)) for n in names]
            self.used = names
            return
        if envs:
            raise ValueError("give either --envs or --light-library, not both")
        if self.per_pose < 1:
            raise ValueError(f"--envs-per-pose must be >= 1, got {per_pose}")
        lib = light_library if isinstance(light_library, LightLibrary) else LightLibrary.from_spec(light_library)
        pool = lib.entries("train")
        if not pool:
            raise ValueError(f"light library {lib.source}: no train maps")
        require_split(pool, {"train"}, self.PURPOSE)
        self.library = lib

    def for_pose(self, rng) -> list:
        """``[(id, EnvironmentMap)]`` lighting one pose (draws from ``rng`` only with a library)."""
        if self.library is None:
            return list(self._fixed)
        from .light_library import require_split

        picked = self.library.sample(rng, self.per_pose, "train")
        require_split(picked, {"train"}, self.PURPOSE)
        self.used += [e.id for e in picked if e.id not in self.used]
        return [(e.id, self.library.load(e)) for e in picked]

    def describe(self) -> dict:
        """The summary's record of the environments used."""
        if self.library is None:
            return {"environments": self.used}
        return {"environments": sorted(self.used),
                "light_library": {"source": self.library.source, "train_maps": len(self.library.entries("train")),
                                  "envs_per_pose": self.per_pose}}


def make_student_set(teacher_path, out, *, poses: int = 16, envs=None, rotations: int = 4,
                     n_lights: int = 512, feature_lights: int = 64, capture=None, exclude_radius: float = 0.1,
                     val_fraction: float = 0.1, jitter: float = 0.15, seed: int = 0, chunk: int = 32,
                     light_library=None, envs_per_pose: int = 6, translucency=(), key_lights: int = 0,
                     contact_fraction: float = 0.0, contact_jitter_deg: float = 8.0,
                     progress: bool = True, command: str | None = None, overwrite: bool = False) -> dict:
    """Write the student set (module docstring); returns the summary dict (also summary.json).
    ``out`` must be new, empty or an earlier student set (re-running replaces its files; a
    non-empty folder relit-hands did not write needs ``overwrite``; an input folder never):
    :class:`~relit_hands.validation.OutputFolder`.
    ``light_library``: a :class:`~.light_library.LightLibrary`, a folder or ``"gen:COUNT"``;
    ``translucency``: mean free paths (metres) of the ``transmit_*`` feature channels
    (:mod:`relit_hands.translucency`; empty: none); ``key_lights``: the K brightest feature lights
    cast per texel (:mod:`relit_hands.key_lights`; 0: none); ``capture``: one evaluation capture
    folder or a list of them (their held-out poses are kept out); ``contact_fraction``: the share of
    poses drawn by :func:`contact_scene` (with ``contact_jitter_deg``; module docstring)."""
    from tqdm import tqdm

    from relit_hands.tools.capture import Capture
    from relit_hands.engine import Engine
    from relit_hands.tools.student_data import proxy_vertex_features, write_manifest, write_sample

    from relit_hands.validation import OutputFolder, json_file_says, write_atomic, write_text_atomic

    t0 = time.time()
    out = Path(out)
    captures = [] if not capture else list(capture) if isinstance(capture, (list, tuple)) else [capture]
    if not 0.0 <= contact_fraction <= 1.0:
        raise ValueError(f"contact_fraction must be in [0, 1], got {contact_fraction}")
    lib_dir = light_library if isinstance(light_library, (str, Path)) and Path(light_library).is_dir() else None
    folder = OutputFolder(out, "make-student-set", overwrite=overwrite,
                          inputs=[teacher_path, *captures, lib_dir, *[e for e in (envs or ()) if Path(e).is_file()]],
                          recognise=lambda p: json_file_says(p / "summary.json", tool="relit-hands make-student-set"))
    rng = np.random.default_rng(seed)
    environments = StudentEnvironments(envs, light_library, envs_per_pose)  # before the teacher: fail fast
    teacher, meta, cond = load_teacher_run(teacher_path)
    folder.create()
    engine = Engine(asset=cond.asset.source)   # the teacher's hand asset
    cond = type(cond).for_teacher(engine, teacher, cond.resolution)
    relighter = SharedBasisRelighter(teacher, cond, n_lights, chunk)
    caps = [Capture.load(c, check_files=False) for c in captures]  # poses only
    heldout = [f.scene for cap in caps for f in cap.frames if f.split == "heldout"]
    base = candidate_scenes(rng, caps)
    samples, rejected, n_contact = [], 0, 0
    n_val = int(round(poses * val_fraction)) if poses > 1 else 0
    bar = tqdm(total=poses, desc="student set", unit="pose", disable=not progress)
    feature_names = None
    for pi in range(poses):
        # the kind of pose is drawn once, so that redraws away from the held-out poses keep the mix
        contact = bool(contact_fraction) and rng.random() < contact_fraction
        for _ in range(200):
            if contact:
                scene = contact_scene(rng, engine.models, contact_jitter_deg)
            else:
                scene = base[int(rng.integers(len(base)))].copy()
                for h in scene.hands:
                    h.pose = (h.pose + rng.uniform(-jitter, jitter, 45)).astype(np.float32)
            if not is_near_heldout(scene, heldout, exclude_radius):
                break
            rejected += 1
        else:
            raise ValueError("could not draw a pose away from the held-out poses; lower --exclude-radius")
        n_contact += contact
        az = rng.uniform(0, 2 * np.pi)
        el = rng.uniform(-0.2, 1.0)
        direction = (np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el))
        cam = engine.default_camera(scene, 512, 512, direction=direction)
        origin = np.asarray(cam.center, np.float64)
        rot_envs, tags = [], []
        for en, env_map in environments.for_pose(rng):
            for r in range(rotations):
                yaw = float(rng.uniform(0, 360))
                pitch = float(rng.uniform(-20, 20)) if r else 0.0
                rot_envs.append(env_map.rotate(yaw, pitch))
                tags.append((en, yaw, pitch))
        tex = relighter.textures(scene, origin, rot_envs)                        # [E,H,3,R,R]
        split = "val" if pi >= poses - n_val else "train"
        for e, (env, (en, yaw, pitch)) in enumerate(zip(rot_envs, tags)):
            # features lit by the light set of the targets (basis_environment), not by the map itself
            vf = proxy_vertex_features(engine, scene, basis_environment(env, relighter.dirs), origin,
                                       n_lights=feature_lights, sources=("vis", "novis"),
                                       translucency=translucency, key_lights=key_lights,
                                       key_resolution=cond.resolution)
            feature_names = vf["names"]
            sid = f"{len(samples):06d}"
            f = f"samples/{sid}.npz"
            write_atomic(out / f, lambda p: write_sample(
                p, vertex_features=vf["vis"], vertex_features_novis=vf["novis"], energy=vf["energy"],
                env_sh=env.sh_coefficients(), target=tex[e], key=vf.get("key")))
            samples.append({"id": sid, "split": split, "scene": scene.to_dict(),
                            "env": {"id": en, "yaw_deg": yaw, "pitch_deg": pitch},
                            "view_origin": [float(x) for x in origin], "file": f, "pose_index": pi,
                            **({"pose_source": "contact"} if contact else {})})
        bar.update(1)
    bar.close()
    write_manifest(out, resolution=cond.resolution, n_lights=feature_lights, feature_names=feature_names,
                   samples=samples, asset=engine.asset,
                   generator=f"relit-hands make-student-set (OLAT teacher {teacher_path}, shared basis of "
                             f"{n_lights} Fibonacci directional lights)",
                   feature_kwargs={"roughness": [0.2, 0.4, 0.7], "include_normal": True, "normalize": "rgb"},
                   extra={"key_lights": int(key_lights), "features_lit_by": "basis",
                          "teacher": {"path": str(teacher_path), "n_lights": n_lights,
                                      "step": meta.get("step"), "capture": meta.get("capture")},
                          "excluded": {"capture": [str(c) for c in captures] or None,
                                       "heldout_scenes": len(heldout), "radius_rad_rms": exclude_radius,
                                       "rejected_draws": rejected}})
    summary = {"tool": "relit-hands make-student-set", "command": command, "out": str(out), "samples": len(samples),
               "poses": poses, **environments.describe(), "rotations": rotations, "n_lights_teacher": n_lights,
               "feature_lights": feature_lights, "features_lit_by": "basis", "translucency_mfp_m": list(translucency),
               "key_lights": int(key_lights),
               "resolution": cond.resolution,
               "splits": {s: sum(1 for x in samples if x["split"] == s) for s in ("train", "val")},
               "heldout_poses_excluded_from": [str(c) for c in captures] or None, "rejected_draws": rejected,
               "contact": {"fraction": contact_fraction, "jitter_deg": contact_jitter_deg, "poses": n_contact},
               "wall_seconds": time.time() - t0}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def build_parser(prog="relit-hands make-student-set"):
    return add_arguments(argparse.ArgumentParser(prog=prog, description="Write the student's training set with the OLAT teacher."))


def add_arguments(p):
    p.add_argument("--teacher", required=True, help="teacher run folder or weights file")
    p.add_argument("--out", required=True)
    p.add_argument("--poses", type=int_range(1, 1_000_000), default=16)
    p.add_argument("--envs", nargs="+", default=None, help="environment names / paths (default: all shipped)")
    p.add_argument("--light-library", metavar="DIR_OR_SPEC", default=None,
                   help="draw environments from the train split of a light library instead: a folder "
                        "(make-light-library output or user .hdr/.exr maps) or gen:COUNT (COUNT generated "
                        "train maps per training family)")
    p.add_argument("--envs-per-pose", type=int_range(1, 1024), default=6, help="library maps drawn per pose (with --light-library)")
    p.add_argument("--translucency", action="store_true",
                   help="add the transmit_* feature channels (light crossing the hand from behind; "
                        "a second ray cast): students trained on the set then compute them at run time")
    p.add_argument("--key-lights", type=int_range(0, 64), default=0,
                   help="cast the K brightest feature lights per UV texel (sharp shadows of a sun or a window; "
                        "relit_hands.key_lights); students trained on the set do the same at run time")
    p.add_argument("--rotations", type=int_range(1, 1024), default=4, help="random rotations per environment and pose")
    p.add_argument("--n-lights", type=int_range(256, 16384), default=512, help="teacher directional lights (256..16384)")
    p.add_argument("--feature-lights", type=int_range(32, 1024), default=64,
                   help="lights of the student's features (32..1024)")
    p.add_argument("--capture", nargs="+", default=None,
                   help="evaluation capture(s) whose held-out poses are kept out (e.g. the evaluation and the development set)")
    p.add_argument("--contact-fraction", type=finite_float(0.0, 1.0), default=0.0,
                   help="share of poses that are two-hand contact scenes drawn as the evaluation sets draw them "
                        "(scene preset, anatomical jitter, random turn); default 0")
    p.add_argument("--contact-jitter-deg", type=finite_float(0.0, 90.0), default=8.0,
                   help="anatomical jitter of those contact scenes (degrees; the evaluation sets use 8)")
    p.add_argument("--exclude-radius", type=finite_float(0.0, 100.0), default=0.1)
    p.add_argument("--val-fraction", type=finite_float(0.0, 0.9), default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int_range(1, 1024), default=1)
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder that relit-hands did not write (never an input)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args, command: str | None = None) -> int:
    torch.set_num_threads(max(1, args.threads))
    s = make_student_set(args.teacher, args.out, poses=args.poses, envs=args.envs, rotations=args.rotations,
                         n_lights=args.n_lights, feature_lights=args.feature_lights, capture=args.capture,
                         exclude_radius=args.exclude_radius, val_fraction=args.val_fraction, seed=args.seed,
                         light_library=args.light_library, envs_per_pose=args.envs_per_pose,
                         translucency=DEFAULT_MEAN_FREE_PATHS if args.translucency else (),
                         key_lights=args.key_lights, contact_fraction=args.contact_fraction,
                         contact_jitter_deg=args.contact_jitter_deg, progress=not args.no_progress, command=command,
                         overwrite=getattr(args, "overwrite", False))
    print(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
