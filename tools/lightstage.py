"""Synthetic light stage: physically based OLAT captures of the posed hand asset with Mitsuba 3.

    relit-hands lightstage --preset tiny|medium|default|eval_v2|dev_v2 --out captures/NAME [--shard i/N]
                           [--variant auto|llvm_ad_rgb|cuda_ad_rgb] [--spp N] [--sheet-only]

Writes a capture in the documented format (docs/capture_format.md, loaded and validated by
:class:`relit_hands.tools.capture.Capture`), a summary JSON (counts, seconds per image, spp,
settings) and a contact-sheet PNG of sampled frames. Resumable: finished views (image + mask
on disk) are skipped. ``--shard i/N`` renders frames ``i, i+N, i+2N, ...`` only, so N machines
split one capture (every shard writes the same JSON files; the capture is complete when all
shards are).

Light transport (Mitsuba 3, ``volpath`` integrator)
---------------------------------------------------
* Geometry: each posed hand's watertight render mesh (skinned with :class:`HandModel`), split
  into two shapes that together close the surface: skin (all faces) and nails (faces whose
  corners are mostly ``render_region == 4``). Smooth vertex normals, the asset's UV atlas.
* Skin interior: a homogeneous participating medium -- volumetric subsurface scattering by a
  random walk, not a BSSRDF approximation. Coefficients: Jensen, Marschner, Levoy & Hanrahan,
  "A Practical Model for Subsurface Light Transport", SIGGRAPH 2001, Table 1, "Skin2":
  reduced scattering sigma_s' = (1.09, 1.59, 1.79) /mm and absorption sigma_a = (0.013, 0.070,
  0.145) /mm (R, G, B), eta = 1.3 (we use 1.4, Tuchin's "Tissue Optics" range 1.38-1.44 for the
  stratum corneum). We scatter isotropically with sigma_s' (similarity theory) and keep the
  measured single-scattering albedo sigma_s' / (sigma_s' + sigma_a) = (0.988, 0.958, 0.925) per
  channel, but use ONE extinction for all channels (the measured green one, 1.66 /mm ->
  1660 /m): chromatic extinction makes Mitsuba's volpath pick a hero channel per path and
  multiplied the colour noise several times (measured); red still diffuses ~2.5x farther
  than blue through the albedo, which is what makes backlit fingers glow red.
* Boundary: ``SkinBoundary`` (below), a rough dielectric *reflection* lobe (exact dielectric
  Fresnel, eta 1.4, GGX alpha 0.35 -- Weyrich et al. 2006 fit skin specular roughness 0.3-0.45)
  over an *index-matched* transmission weighted by (1 - F) and by the epidermis tint. We
  measured Mitsuba's ``roughdielectric`` boundary (refraction on both crossings) at 64 spp on
  the hand: 0.6-0.9 relative per-pixel noise vs 0.13 for the index-matched boundary at the
  same cost (next-event estimation from inside the medium is blocked by a refracting interface
  and must go through the rough transmission lobe at the exit point). That is ~40x the samples
  for the same noise, more than this project's CPU budget; the index-matched walk is also what
  production random-walk SSS does. ``--boundary rough_dielectric`` renders the strict version.
* Colour from the albedo texture: the epidermis (melanin) is a thin absorbing layer that light
  crosses once on the way in and once on the way out, so the boundary transmission is tinted by
  T(uv) = sqrt(clip(albedo(uv) / Rd_skin2, 0, 1)), where albedo is the asset's sRGB-decoded
  albedo texture and Rd_skin2 the measured diffuse reflectance of the bare medium under this
  boundary (``calibrate_skin``; a 5 cm cube under a uniform white environment). A flat patch
  then reflects ~albedo(uv), thin parts transmit the dermis's red.
* Nails: the same medium under a harder, shinier boundary: keratin eta 1.55, GGX alpha 0.08.
* Lights: ``point`` emitters, radiant intensity in W/sr (linear in the lights: an image with
  two lights on is the sum of the two single-light images up to Monte-Carlo noise; tested).
  Environment frames: ``envmap`` emitters from the shipped .hdr maps; our equirect convention
  (docs/conventions.md) maps to Mitsuba's with ``to_world = R_world_from_map @ diag(-1, 1, -1)``
  (verified with a single bright pixel, tests/test_lightstage.py).
* Cameras: Mitsuba ``perspective`` sensors built from the OpenCV K, R, t (square pixels,
  zero skew, centred principal point), box pixel filter (a pixel's value is the mean radiance
  over its square). Masks: exact ray casting through every pixel centre against the posed
  render meshes (Mitsuba ``ray_intersect``, the same meshes as the render), so they agree with
  OpenGL rasterisation's pixel-centre rule; 1 right hand, 2 left hand.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relit_hands.environment import fibonacci_sphere as _fibonacci_sphere
from relit_hands.image_io import linear_to_srgb
from relit_hands.validation import int_range

LLVM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1",
    "/usr/lib/x86_64-linux-gnu/libLLVM-19.so",
    "/usr/lib/llvm-19/lib/libLLVM.so.1",
    "/usr/lib/aarch64-linux-gnu/libLLVM.so.19.1",
    "/usr/lib/aarch64-linux-gnu/libLLVM-19.so",
)

# ----------------------------------------------------------------------------------------
# Skin model (see the module docstring for sources)

SKIN = {
    # Jensen et al. 2001, Table 1, "Skin2", per millimetre
    "sigma_s_prime_per_mm": (1.09, 1.59, 1.79),
    "sigma_a_per_mm": (0.013, 0.070, 0.145),
    "extinction_per_m": 1660.0,      # achromatic: the measured green sigma_t' (1.59 + 0.070) /mm
    "eta": 1.4,
    "alpha": 0.35,                   # GGX
    "nail_eta": 1.55,
    "nail_alpha": 0.08,
    "max_depth": 256,
    # Diffuse reflectance of the bare medium under the index-matched boundary (tint = 1),
    # measured with calibrate_skin() (5 cm cube, uniform white environment, 4096 spp, max_depth 256;
    # `relit-hands lightstage --calibrate [--boundary ...]`).
    "rd_index_matched": (0.683, 0.513, 0.420),
    "rd_rough_dielectric": (0.461, 0.325, 0.258),
}


def skin_albedo() -> np.ndarray:
    s = np.asarray(SKIN["sigma_s_prime_per_mm"])
    a = np.asarray(SKIN["sigma_a_per_mm"])
    return s / (s + a)


# ----------------------------------------------------------------------------------------
# Presets

PRESETS = {
    # CI: a few seconds of rendering; 96x96 images, 8 spp.
    "tiny": dict(cameras=8, lights=64, width=96, height=96, spp=8, seed=1,
                 preset_poses=["spread"], scene_poses=["shadow"], random_single=1, random_scenes=0,
                 olat_per_pose=1, groups_per_pose=1, group_size=(3, 4), linearity_pair=True,
                 env_poses=2, heldout_scenes=["clap"], heldout_presets=[]),
    # What finishes in ~30 minutes on 2 shared CPU cores.
    "medium": dict(cameras=8, lights=64, width=160, height=160, spp=64, seed=2,
                   preset_poses=["spread", "fist", "relaxed"], scene_poses=["shadow", "interlocked", "clasp"],
                   random_single=2, random_scenes=1, olat_per_pose=3, groups_per_pose=1, group_size=(3, 5),
                   linearity_pair=True, env_poses=4, heldout_scenes=["clap"], heldout_presets=["ok"]),
    # A few hours of this CPU (~4k images at 256^2, 64 spp); hours less on a GPU.
    "default": dict(cameras=16, lights=128, width=256, height=256, spp=64, seed=3,
                    preset_poses=["flat", "relaxed", "fist", "point", "pinch", "thumbs_up", "spread"],
                    scene_poses=["shadow", "interlocked", "clasp", "prayer"],
                    random_single=12, random_scenes=4, olat_per_pose=4, groups_per_pose=2, group_size=(3, 6),
                    linearity_pair=True, env_poses=12, heldout_scenes=["clap"], heldout_presets=["ok"]),
    # Teacher training capture on asset v2 (issue #17): the default preset's rig, poses and OLAT /
    # group frames on hand_v2, its own seed (the evaluation presets use 3 and 11); no environment
    # frames (evaluation lives in eval_v2). Run with --kinds olat,group.
    "train_v2": dict(cameras=16, lights=128, width=256, height=256, spp=64, seed=5, asset="hand_v2",
                     preset_poses=["flat", "relaxed", "fist", "point", "pinch", "thumbs_up", "spread"],
                     scene_poses=["shadow", "interlocked", "clasp", "prayer"],
                     random_single=12, random_scenes=4, olat_per_pose=4, groups_per_pose=2, group_size=(3, 6),
                     linearity_pair=True, env_poses=0, heldout_scenes=["clap"], heldout_presets=["ok"]),
    # train_v2's poses (same seed: the poses are drawn before the lights) with 10 OLAT frames per
    # pose instead of 4: the teacher sees ~2.5x as many light directions per pose. Made for the
    # teacher's weakest split (held-out lights); rendered with --views-per-frame 4, it costs what
    # train_v2 at 8 views does. Run with --kinds olat,group.
    "train_v2_lights": dict(cameras=16, lights=128, width=256, height=256, spp=64, seed=5, asset="hand_v2",
                            preset_poses=["flat", "relaxed", "fist", "point", "pinch", "thumbs_up", "spread"],
                            scene_poses=["shadow", "interlocked", "clasp", "prayer"],
                            random_single=12, random_scenes=4, olat_per_pose=10, groups_per_pose=2,
                            group_size=(3, 6), linearity_pair=True, env_poses=0, heldout_scenes=["clap"],
                            heldout_presets=["ok"]),
    # Evaluation set v2 (issue #17): held-out light (the light library's test split, the held-out
    # 'color' family included) on asset v2, new poses (seed 11; jittered two-hand contact scenes
    # and random single hands), environment frames only. See plan_eval_frames.
    "eval_v2": dict(cameras=16, lights=128, width=256, height=256, spp=256, seed=11, asset="hand_v2",
                    eval_frames=dict(two_hand=12, shadow=4, single=18, backlit_every=3, jitter_deg=8.0,
                                     scenes=["clasp", "interlocked", "prayer", "clap", "shadow"],
                                     library=dict(split="test", per_family=5, height=128))),
    # Development set v2: eval_v2's recipe with its own seed and the light library's *val* split
    # (maps no training step draws, the held-out family has none), for choosing models and
    # settings without looking at the evaluation set; half the samples per pixel.
    "dev_v2": dict(cameras=16, lights=128, width=256, height=256, spp=128, seed=13, asset="hand_v2",
                   eval_frames=dict(two_hand=12, shadow=4, single=18, backlit_every=3, jitter_deg=8.0,
                                    scenes=["clasp", "interlocked", "prayer", "clap", "shadow"],
                                    library=dict(split="val", per_family=5, height=128))),
}

RIG = {"camera_radius": 0.55, "light_radius": 1.1, "light_intensity": 1.5, "fov_deg": 30.0,
       "camera_elevation_deg": (-25.0, 65.0)}


# ----------------------------------------------------------------------------------------
# Mitsuba setup


def ensure_llvm_env() -> str | None:
    """Point DRJIT_LIBLLVM_PATH at Debian's libLLVM 19 when present and the variable is unset
    (Mitsuba 3.9's LLVM backend crashes with Debian 12's default LLVM 15)."""
    if os.environ.get("DRJIT_LIBLLVM_PATH"):
        return os.environ["DRJIT_LIBLLVM_PATH"]
    for p in LLVM_CANDIDATES:
        if os.path.exists(p):
            os.environ["DRJIT_LIBLLVM_PATH"] = p
            return p
    return None


_MI = None


def setup_mitsuba(variant: str = "auto"):
    """Import Mitsuba and pick a variant: 'auto' = cuda_ad_rgb when a CUDA device works, else
    llvm_ad_rgb. Registers the ``skinboundary`` BSDF. Returns the ``mitsuba`` module."""
    global _MI
    ensure_llvm_env()
    try:
        import mitsuba as mi
    except ImportError:
        raise RuntimeError("the light stage needs Mitsuba 3: pip install 'relit-hands[train]' "
                           "(or pip install 'mitsuba>=3.5,<4')") from None
    if _MI is not None and (variant == "auto" or mi.variant() == variant):
        return mi
    tried = []
    for v in (["cuda_ad_rgb", "llvm_ad_rgb"] if variant == "auto" else [variant]):
        try:
            mi.set_variant(v)
            if v.startswith("cuda"):
                import drjit as dr
                dr.eval(mi.Float(1.0) + 1.0)  # fails without a usable device
            break
        except Exception as e:  # no CUDA / no LLVM: try the next one
            tried.append(f"{v}: {e}")
    else:
        raise RuntimeError("no usable Mitsuba variant (" + "; ".join(tried) + "). On Debian 12 install "
                           "libllvm19 (apt) so the LLVM backend can run.")
    if not mi.variant().startswith(("llvm", "cuda")):
        raise RuntimeError(f"the light stage needs a JIT variant (llvm_ad_rgb / cuda_ad_rgb), got {mi.variant()}")
    _register_plugins(mi)
    _MI = mi
    return mi


def _register_plugins(mi):
    import drjit as dr

    class SkinBoundary(mi.BSDF):
        """Index-matched skin boundary with a rough dielectric reflection lobe.

        Reflection: ``specular`` (a two-sided rough conductor with eta = the dielectric's
        index and k = 0, i.e. exact dielectric Fresnel on each microfacet). Transmission:
        straight through (index matched, a Null event for the integrator, so next-event
        estimation from inside the medium reaches the lights) with weight (1 - F(cos)) T(uv),
        F the dielectric Fresnel at the macro-surface angle, T the epidermis tint texture.
        """

        def __init__(self, props):
            mi.BSDF.__init__(self, props)
            self.eta = float(props.get("eta", 1.4))
            self.tint = props.get("tint")
            self.spec = props.get("specular")
            refl = mi.BSDFFlags.GlossyReflection | mi.BSDFFlags.FrontSide | mi.BSDFFlags.BackSide
            null = mi.BSDFFlags.Null | mi.BSDFFlags.FrontSide | mi.BSDFFlags.BackSide
            self.m_components = [refl, null]
            self.m_flags = refl | null

        def _F(self, si):
            return mi.fresnel(dr.abs(mi.Frame3f.cos_theta(si.wi)), mi.Float(self.eta))[0]

        def sample(self, ctx, si, s1, s2, active):
            F = self._F(si)
            refl = active & (s1 < F)
            bs, w = self.spec.sample(ctx, si, dr.select(F > 0, s1 / dr.maximum(F, 1e-8), 0.0), s2, refl)
            w = dr.select(refl, w / dr.maximum(F, 1e-8), 0.0)
            nul = active & ~refl
            bs.wo = dr.select(nul, -si.wi, bs.wo)
            bs.pdf = dr.select(nul, 1.0 - F, bs.pdf * F)
            bs.eta = dr.select(nul, 1.0, bs.eta)
            bs.sampled_type = dr.select(nul, mi.UInt32(+mi.BSDFFlags.Null), bs.sampled_type)
            bs.sampled_component = dr.select(nul, mi.UInt32(1), mi.UInt32(0))
            w = dr.select(nul, self.tint.eval(si, nul), w)
            return bs, w

        def eval(self, ctx, si, wo, active):
            return self.spec.eval(ctx, si, wo, active)

        def pdf(self, ctx, si, wo, active):
            return self.spec.pdf(ctx, si, wo, active) * self._F(si)

        def eval_pdf(self, ctx, si, wo, active):
            return self.eval(ctx, si, wo, active), self.pdf(ctx, si, wo, active)

        def eval_null_transmission(self, si, active):
            return (1.0 - self._F(si)) * self.tint.eval(si, active)

        def traverse(self, callback):
            pass

        def to_string(self):
            return f"SkinBoundary[eta={self.eta}]"

    mi.register_bsdf("skinboundary", lambda props: SkinBoundary(props))


# ----------------------------------------------------------------------------------------
# Rig


def fibonacci_sphere(n: int) -> np.ndarray:
    """The rig's ``n`` light directions ``[n, 3]`` float64: the engine's Fibonacci sphere with
    phase 0.5 (point i at azimuth golden_angle * (i + 0.5))."""
    return np.array(_fibonacci_sphere(n, phase=0.5))


def build_rig(n_cameras: int, n_lights: int, width: int, height: int, rig: dict = RIG):
    """Cameras on a dome (golden-angle spiral over the elevation band, all looking at the
    origin) and point lights on a sphere (Fibonacci). Returns ({cam_id: Camera}, positions
    [L, 3], intensities [L, 3])."""
    from relit_hands.camera import Camera

    lo, hi = np.radians(rig["camera_elevation_deg"])
    cams = {}
    for k in range(n_cameras):
        el = lo + (hi - lo) * (k + 0.5) / n_cameras
        az = k * np.pi * (3.0 - np.sqrt(5.0))
        d = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
        cams[f"cam{k:02d}"] = Camera.look_at(d * rig["camera_radius"], np.zeros(3), up=(0.0, 1.0, 0.0),
                                             fov_y_deg=rig["fov_deg"], width=width, height=height)
    pos = fibonacci_sphere(n_lights) * rig["light_radius"]
    inten = np.full((n_lights, 3), rig["light_intensity"])
    return cams, pos, inten


# ----------------------------------------------------------------------------------------
# Frame planning


@dataclass
class FrameSpec:
    id: str
    kind: str
    split: str
    scene: object
    lights_on: list = field(default_factory=list)
    env: dict | None = None
    tag: str = ""          # for the contact sheet: what this frame shows


def rotate_scene(scene, Q, center, models):
    """Rotate every hand of ``scene`` rigidly by Q (3x3) about ``center`` (world)."""
    from scipy.spatial.transform import Rotation

    from relit_hands.scene import HandState, Scene

    hands = []
    for h in scene.hands:
        J0 = models[h.side].rest_joints[0].numpy().astype(np.float64)
        R = Rotation.from_rotvec(h.global_orient.astype(np.float64)).as_matrix()
        go = Rotation.from_matrix(Q @ R).as_rotvec()
        tr = Q @ (J0 + h.transl - center) + center - J0
        hands.append(HandState(h.side, h.pose, go, tr))
    return Scene(hands, name=scene.name)


def posed_vertices(scene, models) -> dict:
    import torch

    out = {}
    with torch.no_grad():
        for h in scene.hands:
            o = models[h.side](h.pose, h.global_orient, h.transl, meshes=("render",))
            out[h.side] = o
    return out


def _recenter(scene, models):
    """Translate all hands so the bounding box of the posed meshes is centred at the origin."""
    from relit_hands.scene import HandState, Scene

    posed = posed_vertices(scene, models)
    v = np.concatenate([o.render_vertices[0].numpy() for o in posed.values()])
    c = (v.min(0) + v.max(0)) / 2
    return Scene([HandState(h.side, h.pose, h.global_orient, h.transl - c) for h in scene.hands], name=scene.name)


def random_rotation(rng) -> np.ndarray:
    """A uniformly random rotation matrix [3, 3] (one draw from ``rng``)."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()


def _yaw(deg) -> np.ndarray:
    from relit_hands.environment import rotation_yaw_pitch

    return rotation_yaw_pitch(deg, 0.0)


def random_pose(rng, side: str) -> np.ndarray:
    """A random pose within the joint limits: a random blend of two presets plus Gaussian noise
    (10 deg flexion, 5 deg abduction, 2 deg twist), clamped to ``JOINT_LIMITS``."""
    from relit_hands.poses import PRESET_ANGLES, anatomical_to_pose, limits_array

    names = sorted(PRESET_ANGLES)
    a, b = rng.choice(len(names), 2, replace=False)
    w = rng.uniform()
    ang = (1 - w) * PRESET_ANGLES[names[a]] + w * PRESET_ANGLES[names[b]]
    ang = ang + rng.normal(size=(15, 3)) * np.array([10.0, 5.0, 2.0])
    lim = limits_array()
    ang = np.clip(ang, lim[..., 0], lim[..., 1])
    return np.asarray(anatomical_to_pose(ang, side=side), np.float32)


def plan_frames(preset: dict, cameras: dict, light_pos: np.ndarray, models, env_names: list) -> list:
    """The deterministic frame list of a preset (same on every shard and every resume)."""
    from relit_hands.scene import HandState, Scene, scene_preset, single_hand_scene

    rng = np.random.default_rng(preset["seed"])
    L = len(light_pos)
    ldir = light_pos / np.linalg.norm(light_pos, axis=1, keepdims=True)
    cam0 = next(iter(cameras.values()))
    c0 = cam0.center / np.linalg.norm(cam0.center)
    back_light = int(np.argmin(ldir @ c0))               # behind the hand as seen from cam00
    front_light = int(np.argmax(ldir @ (c0 + np.array([0.0, 0.6, 0.0]))))   # key light above cam00
    top_light = int(np.argmax(ldir[:, 1]))

    def group_around(center_light, k):
        order = np.argsort(-(ldir @ ldir[center_light]))
        return sorted(int(i) for i in order[:k])

    # ---- training poses
    poses = []  # (scene, tags)
    for name in preset["preset_poses"]:
        side = "right" if len(poses) % 2 == 0 else "left"
        s = single_hand_scene(name, side)
        s = rotate_scene(s, _yaw(rng.uniform(-40, 40)), np.zeros(3), models)
        poses.append((s, "single"))
    for name in preset["scene_poses"]:
        poses.append((scene_preset(name), "two"))
    for k in range(preset["random_single"]):
        side = ("right", "left")[k % 2]
        s = Scene([HandState(side, random_pose(rng, side))], name=f"random{k}")
        poses.append((rotate_scene(s, random_rotation(rng), np.zeros(3), models), "single"))
    for k in range(preset["random_scenes"]):
        name = preset["scene_poses"][k % len(preset["scene_poses"])]
        s = scene_preset(name)
        s = Scene(s.hands, name=f"{name}_rot{k}")
        poses.append((rotate_scene(s, random_rotation(rng), np.zeros(3), models), "two"))

    frames: list[FrameSpec] = []

    def add(kind, split, scene, lights=None, env=None, tag=""):
        frames.append(FrameSpec(f"f{len(frames):06d}", kind, split, scene, list(lights or []), env, tag))

    for pi, (scene, what) in enumerate(poses):
        scene = _recenter(scene, models)
        chosen = set()
        olat = []
        if pi == 0:
            olat.append((back_light, f"{scene.name}: OLAT backlit (light behind, cam00)"))
            olat.append((front_light, f"{scene.name}: OLAT key light"))
        if scene.name == "shadow":
            olat.append((top_light, "shadow: OLAT from above (hand on hand shadow)"))
        while len(olat) < max(preset["olat_per_pose"], len(olat)) or len(olat) < preset["olat_per_pose"]:
            olat.append((int(rng.integers(L)), f"{scene.name}: OLAT"))
        for li, tag in olat[:max(preset["olat_per_pose"], 2 if pi == 0 else 1)]:
            if li in chosen:
                continue
            chosen.add(li)
            add("olat", "train", scene, [li], tag=tag)
        if pi == 0 and preset.get("linearity_pair"):
            pair = sorted(list(chosen)[:2])
            if len(pair) == 2:
                add("group", "train", scene, pair, tag=f"{scene.name}: group = the two OLAT lights")
        for _ in range(preset["groups_per_pose"]):
            k = int(rng.integers(preset["group_size"][0], preset["group_size"][1] + 1))
            add("group", "train", scene, group_around(int(rng.integers(L)), k),
                tag=f"{scene.name}: group of {k}")

    # ---- held-out, environment-lit frames (poses never used for training)
    held = []
    for name in preset["heldout_scenes"]:
        s = scene_preset(name)
        held.append(rotate_scene(s, _yaw(rng.uniform(-30, 30)), np.zeros(3), models))
    for name in preset["heldout_presets"]:
        held.append(single_hand_scene(name, "right"))
    k = 0
    while len(held) < preset["env_poses"]:
        side = ("right", "left")[k % 2]
        s = Scene([HandState(side, random_pose(rng, side))], name=f"heldout_random{k}")
        held.append(rotate_scene(s, random_rotation(rng), np.zeros(3), models))
        k += 1
    for i, scene in enumerate(held[:max(preset["env_poses"], 1)]):
        scene = _recenter(scene, models)
        env = {"id": env_names[i % len(env_names)], "yaw_deg": float(np.round(rng.uniform(0, 360), 2)),
               "pitch_deg": float(np.round(rng.uniform(-15, 15), 2))}
        add("env", "heldout", scene, env=env, tag=f"{scene.name}: {env['id']} yaw {env['yaw_deg']:.0f}")
    return frames


def preset_asset_path(preset: dict):
    """The hand asset a preset renders: ``models/<preset['asset']>/right_hand.npz``, or None (the
    shipped default asset)."""
    if not preset.get("asset"):
        return None
    from relit_hands.hand_model import asset_path

    return asset_path(preset["asset"])


def _align(a, b, rng) -> np.ndarray:
    """A rotation taking unit vector ``a`` to ``b``, with a random twist about ``b``."""
    from scipy.spatial.transform import Rotation

    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    R = np.eye(3) if s < 1e-9 and c > 0 else Rotation.from_rotvec(
        (axis / s if s > 1e-9 else np.cross(a, [1.0, 0.0, 0.0]) / max(np.linalg.norm(np.cross(a, [1.0, 0.0, 0.0])), 1e-9))
        * np.arctan2(s, c)).as_matrix()
    return Rotation.from_rotvec(b * rng.uniform(0, 2 * np.pi)).as_matrix() @ R


def jitter_anatomical(rng, pose, side: str, deg: float) -> np.ndarray:
    """``pose`` with every anatomical angle moved by up to ``deg`` degrees, within the limits."""
    from relit_hands.poses import anatomical_to_pose, limits_array, pose_to_anatomical

    ang = np.asarray(pose_to_anatomical(pose, side=side), np.float64)
    ang = ang + rng.uniform(-deg, deg, ang.shape)
    lim = limits_array()
    return np.asarray(anatomical_to_pose(np.clip(ang, lim[..., 0], lim[..., 1]), side=side), np.float32)


def eval_environments(spec: dict):
    """The light-library entries of an evaluation preset: the first ``per_family`` maps of
    ``split`` in every family (``LightLibrary.generated``), checked by the split guard."""
    from .light_library import LightLibrary, require_split

    lib = LightLibrary.generated(count=spec["per_family"], split=spec["split"])
    entries = lib.entries(spec["split"])
    require_split(entries, {spec["split"]}, "the evaluation set")
    return lib, entries


def plan_eval_frames(preset: dict, cameras: dict, models, envs: dict) -> list:
    """The frames of an evaluation preset (``preset['eval_frames']``), deterministic in its seed.

    ``envs``: {library id: EnvironmentMap}, each map used in turn in a seeded order (so every
    family lights single and two-hand frames). Frames, all ``env`` / ``heldout``:

    * ``two_hand`` two-hand contact scenes (the preset's scene list, finger angles jittered by up
      to ``jitter_deg``). The first ``shadow`` of them are turned (up to 64 tries of scene and
      rotation) until the map's dominant light casts one hand's shadow on the other
      (:func:`~.eval_subsets.interhand_shadow_fraction` >= ``SHADOW_FRACTION``; tag
      ``interhand_shadow``), the others get a random rotation;
    * ``single`` random single hands (random pose, random rotation).

    Every ``backlit_every``-th frame that is not a shadow frame is yawed so the dominant light's
    azimuth is opposite camera 0's (tag ``backlit``); the others get a random yaw and a pitch
    within +-15 degrees. Tags also name the hands and the map's family.
    """
    from relit_hands.scene import HandState, Scene, scene_preset

    from .eval_subsets import SHADOW_FRACTION, dominant_direction, env_family, interhand_shadow_fraction

    spec = preset["eval_frames"]
    rng = np.random.default_rng(preset["seed"])
    cam0 = next(iter(cameras.values()))
    c0 = cam0.center / np.linalg.norm(cam0.center)
    ids = [list(envs)[k] for k in rng.permutation(len(envs))]

    def contact_scene(k):
        base = scene_preset(spec["scenes"][k % len(spec["scenes"])])
        hands = [HandState(h.side, jitter_anatomical(rng, h.pose, h.side, spec["jitter_deg"]), h.global_orient, h.transl)
                 for h in base.hands]
        return Scene(hands, name=f"{base.name}_eval{k}")

    plan = [("two_hand", k) for k in range(spec["two_hand"])] + [("single", k) for k in range(spec["single"])]
    frames: list[FrameSpec] = []
    for i, (what, k) in enumerate(plan):
        eid = ids[i % len(ids)]
        d = dominant_direction(envs[eid])
        tags = [what, env_family(eid)]
        yaw, pitch = float(rng.uniform(0, 360)), float(rng.uniform(-15, 15))
        if what == "two_hand" and k < spec["shadow"]:
            for attempt in range(64):
                scene = contact_scene(k + attempt)
                scene = rotate_scene(scene, _align(np.array([0.0, 1.0, 0.0]), d, rng), np.zeros(3), models)
                if interhand_shadow_fraction(models, scene, d) >= SHADOW_FRACTION:
                    break
            else:
                raise RuntimeError(f"eval plan: no inter-hand shadow found for {eid}")
            yaw, pitch = 0.0, 0.0  # the scene was turned to the map's light
            tags.append("interhand_shadow")
        else:
            scene = contact_scene(k) if what == "two_hand" else \
                Scene([HandState(("right", "left")[k % 2], random_pose(rng, ("right", "left")[k % 2]))],
                      name=f"single_eval{k}")
            scene = rotate_scene(scene, random_rotation(rng), np.zeros(3), models)
            if i % spec["backlit_every"] == spec["backlit_every"] - 1:
                # Ry(yaw) adds yaw to the azimuth atan2(x, z): take the light's to camera 0's + 180
                yaw = float(np.degrees(np.arctan2(c0[0], c0[2]) + np.pi - np.arctan2(d[0], d[2]))) % 360.0
                pitch = 0.0
                tags.append("backlit")
        scene = _recenter(scene, models)
        env = {"id": eid, "yaw_deg": round(yaw, 2), "pitch_deg": round(pitch, 2)}
        frames.append(FrameSpec(f"f{len(frames):06d}", "env", "heldout", scene, [], env, " ".join(tags)))
    return frames


# ----------------------------------------------------------------------------------------
# Rendering


class LightStageRenderer:
    """Builds Mitsuba scenes of posed hands under point lights or an environment map and
    renders them from capture cameras; ray-casts exact per-hand masks."""

    def __init__(self, asset_path=None, *, variant: str = "auto", boundary: str = "index_matched",
                 max_depth: int | None = None):
        from relit_hands.hand_model import HandAsset, HandModel, default_asset_path
        from relit_hands.image_io import read_albedo_linear

        self.mi = mi = setup_mitsuba(variant)
        path = Path(asset_path) if asset_path is not None else default_asset_path()
        self.asset = HandAsset.load(path)
        self.models = {s: HandModel(self.asset, s) for s in ("right", "left")}
        self.boundary = boundary
        self.max_depth = int(max_depth or SKIN["max_depth"])
        albedo = read_albedo_linear(path.parent / "albedo.png")
        rd = np.asarray(SKIN["rd_index_matched" if boundary == "index_matched" else "rd_rough_dielectric"])
        self.tint_image = np.sqrt(np.clip(albedo / rd, 0.0, 1.0)).astype(np.float32)
        self._tint = mi.load_dict({"type": "bitmap", "bitmap": mi.Bitmap(self.tint_image), "raw": True,
                                   "filter_type": "bilinear"})
        self._medium = self.make_medium()
        self._skin_bsdf = self.make_boundary(SKIN["eta"], SKIN["alpha"], self._tint)
        self._nail_bsdf = self.make_boundary(SKIN["nail_eta"], SKIN["nail_alpha"], self._tint)
        F = self.asset.render_faces
        self._nail_faces = (self.asset.render_region[F] == 4).sum(1) >= 2

    # -- materials --------------------------------------------------------------------
    def make_medium(self):
        mi = self.mi
        return mi.load_dict({"type": "homogeneous", "albedo": {"type": "rgb", "value": skin_albedo().tolist()},
                             "sigma_t": 1.0, "scale": float(SKIN["extinction_per_m"]),
                             "phase": {"type": "isotropic"}})

    def make_boundary(self, eta, alpha, tint):
        mi = self.mi
        if self.boundary == "rough_dielectric":
            return mi.load_dict({"type": "roughdielectric", "int_ior": float(eta), "ext_ior": 1.0,
                                 "distribution": "ggx", "alpha": float(alpha), "specular_transmittance": tint})
        if self.boundary != "index_matched":
            raise ValueError(f"boundary must be 'index_matched' or 'rough_dielectric', got {self.boundary!r}")
        return mi.load_dict({"type": "skinboundary", "eta": float(eta), "tint": tint,
                             "specular": {"type": "twosided", "material": {
                                 "type": "roughconductor", "distribution": "ggx", "alpha": float(alpha),
                                 "eta": float(eta), "k": 0.0}}})

    # -- geometry ---------------------------------------------------------------------
    def _mesh(self, name, V, N, faces, uv_faces, bsdf):
        mi = self.mi
        a = self.asset
        pairs, inv = np.unique(np.stack([faces.ravel(), uv_faces.ravel()], 1), axis=0, return_inverse=True)
        props = mi.Properties()
        props["bsdf"] = bsdf
        props["interior"] = self._medium
        m = mi.Mesh(name, len(pairs), len(faces), has_vertex_normals=True, has_vertex_texcoords=True, props=props)
        p = mi.traverse(m)
        p["vertex_positions"] = np.ascontiguousarray(V[pairs[:, 0]], np.float32).ravel()
        p["vertex_normals"] = np.ascontiguousarray(N[pairs[:, 0]], np.float32).ravel()
        p["vertex_texcoords"] = np.ascontiguousarray(a.render_uvs[pairs[:, 1]], np.float32).ravel()
        p["faces"] = np.ascontiguousarray(inv.reshape(-1), np.uint32)
        p.update()
        return m

    def hand_shapes(self, scene) -> dict:
        """{shape id: mi.Mesh}: '<side>_skin' and '<side>_nail' per hand (closed together)."""
        from relit_hands.hand_model import vertex_normals

        posed = posed_vertices(scene, self.models)
        shapes = {}
        for side, out in posed.items():
            m = self.models[side]
            V = out.render_vertices[0].numpy()
            N = vertex_normals(out.render_vertices, m.render_faces)[0].numpy()
            F, FU = m.asset.render_faces, m.asset.render_uv_faces
            nail = self._nail_faces
            shapes[f"{side}_skin"] = self._mesh(f"{side}_skin", V, N, F[~nail], FU[~nail], self._skin_bsdf)
            shapes[f"{side}_nail"] = self._mesh(f"{side}_nail", V, N, F[nail], FU[nail], self._nail_bsdf)
        return shapes

    # -- cameras and emitters -----------------------------------------------------------
    def sensor_dict(self, cam) -> dict:
        mi = self.mi
        K = cam.K
        if abs(K[0, 0] - K[1, 1]) > 1e-6 * K[0, 0] or abs(K[0, 1]) > 1e-9:
            raise ValueError("Mitsuba's perspective sensor needs square pixels and zero skew")
        M = np.eye(4)
        # Mitsuba camera space: x left, y up, z forward; OpenCV: x right, y down, z forward.
        M[:3, :3] = cam.R.T @ np.diag([-1.0, -1.0, 1.0])
        M[:3, 3] = cam.center
        fov = math.degrees(2.0 * math.atan(0.5 * cam.height / K[1, 1]))
        return {"type": "perspective", "fov": fov, "fov_axis": "y", "to_world": mi.ScalarTransform4f(M),
                "principal_point_offset_x": float((K[0, 2] - cam.width / 2) / cam.width),
                "principal_point_offset_y": float((K[1, 2] - cam.height / 2) / cam.height),
                "near_clip": 0.01, "far_clip": 100.0,
                "film": {"type": "hdrfilm", "width": cam.width, "height": cam.height, "pixel_format": "rgba",
                         "rfilter": {"type": "box"}},
                "sampler": {"type": "independent"}}

    def env_emitter(self, env) -> dict:
        """Mitsuba envmap for an EnvironmentMap (its rotation and exposure applied)."""
        mi = self.mi
        M = np.eye(4)
        M[:3, :3] = np.asarray(env.rotation) @ np.diag([-1.0, 1.0, -1.0])
        return {"type": "envmap", "bitmap": mi.Bitmap(np.array(env.image, np.float32, copy=True, order="C")),
                "to_world": mi.ScalarTransform4f(M), "scale": float(env.scale)}

    def build(self, scene=None, cameras: dict | None = None, *, lights=None, env=None, shapes=None):
        """A Mitsuba scene: hands of ``scene`` (or prebuilt ``shapes``), one sensor per camera
        (in order), point ``lights`` = (positions [k, 3], intensities [k, 3]) and / or ``env``."""
        mi = self.mi
        d = {"type": "scene", "integrator": {"type": "volpath", "max_depth": self.max_depth}}
        if shapes is None and scene is not None:
            shapes = self.hand_shapes(scene)
        d.update(shapes or {})
        for i, cam in enumerate((cameras or {}).values()):
            d[f"sensor{i:03d}"] = self.sensor_dict(cam)
        if lights is not None:
            pos, inten = lights
            for i, (p, I) in enumerate(zip(np.asarray(pos), np.asarray(inten))):
                d[f"light{i:03d}"] = {"type": "point", "position": [float(x) for x in p],
                                      "intensity": {"type": "rgb", "value": [float(x) for x in I]}}
        if env is not None:
            d["env"] = self.env_emitter(env)
        return mi.load_dict(d)

    def render(self, mscene, sensor_index: int, spp: int, seed: int):
        """(rgb float32 [H, W, 3] linear, alpha float32 [H, W])."""
        img = np.asarray(self.mi.render(mscene, sensor=int(sensor_index), spp=int(spp), seed=int(seed)))
        return np.ascontiguousarray(img[..., :3], np.float32), np.ascontiguousarray(img[..., 3], np.float32)

    def masks(self, mscene, cameras: dict) -> dict:
        """{cam id: uint8 [H, W]} by ray casting each pixel centre: 0 none, 1 right, 2 left."""
        mi = self.mi
        import drjit as dr

        ids = {}
        for s in mscene.shapes():
            sid = int(np.asarray(dr.reinterpret_array(mi.UInt32, mi.ShapePtr(s)))[0])
            ids[sid] = 1 if s.id().startswith("right") else 2
        out = {}
        for cid, cam in cameras.items():
            d = cam.pixel_rays().reshape(-1, 3).astype(np.float32)
            o = np.broadcast_to(cam.center.astype(np.float32), d.shape)
            ray = mi.Ray3f(mi.Point3f(*[np.ascontiguousarray(o[:, k]) for k in range(3)]),
                           mi.Vector3f(*[np.ascontiguousarray(d[:, k]) for k in range(3)]))
            si = mscene.ray_intersect(ray)
            valid = np.asarray(si.is_valid())
            sp = np.asarray(dr.reinterpret_array(mi.UInt32, si.shape))
            m = np.zeros(len(d), np.uint8)
            for sid, val in ids.items():
                m[valid & (sp == sid)] = val
            out[cid] = m.reshape(cam.height, cam.width)
        return out


def calibrate_skin(boundary: str = "index_matched", spp: int = 4096, variant: str = "auto") -> np.ndarray:
    """Diffuse reflectance of the bare skin medium (tint 1) under ``boundary``: a 5 cm cube lit
    by a uniform white environment, seen face-on (the numbers in ``SKIN['rd_*']``)."""
    r = LightStageRenderer(variant=variant, boundary=boundary)
    mi = r.mi
    one = mi.load_dict({"type": "bitmap", "bitmap": mi.Bitmap(np.ones((2, 2, 3), np.float32)), "raw": True})
    cube = {"type": "cube", "to_world": mi.ScalarTransform4f().scale([0.05, 0.05, 0.05]),
            "interior": r._medium, "bsdf": r.make_boundary(SKIN["eta"], SKIN["alpha"], one)}
    sc = mi.load_dict({"type": "scene", "integrator": {"type": "volpath", "max_depth": r.max_depth},
                       "env": {"type": "constant", "radiance": {"type": "rgb", "value": [1.0, 1.0, 1.0]}},
                       "cube": cube,
                       "sensor": {"type": "perspective", "fov": 5.0,
                                  "to_world": mi.ScalarTransform4f().look_at(origin=[0, 0, 1], target=[0, 0, 0],
                                                                             up=[0, 1, 0]),
                                  "film": {"type": "hdrfilm", "width": 8, "height": 8, "rfilter": {"type": "box"}}}})
    img = np.asarray(mi.render(sc, spp=spp))
    return img[..., :3].reshape(-1, 3).mean(0)


# ----------------------------------------------------------------------------------------
# Display (contact sheet): tone mapping for display only


def display(rgb: np.ndarray, mask: np.ndarray | None = None, white: float | None = None) -> np.ndarray:
    """Linear RGB -> uint8 sRGB for looking at: the 99.5th percentile of the hand pixels maps to
    ~1 (per image), then a soft shoulder and the sRGB curve."""
    x = np.asarray(rgb, np.float32)
    if white is None:
        sel = x[mask > 0] if mask is not None and (mask > 0).any() else x.reshape(-1, 3)
        lum = sel.max(-1)
        white = float(np.percentile(lum, 99.5)) if lum.size else 1.0
    x = x / max(white, 1e-8)
    x = x * (1.0 + x / 4.0) / (1.0 + x)  # Reinhard with white point 2
    return np.rint(linear_to_srgb(x * 1.6) * 255).astype(np.uint8)


def contact_sheet(capture_dir, frames: list, tile: int = 256, columns: int = 4, max_tiles: int = 16):
    """Labelled tiles of sampled frames (tone mapped for display only). ``frames`` are
    FrameSpecs (their tags label the tiles). Returns (uint8 sheet, records)."""
    from PIL import Image

    from relit_hands.tools.capture import Capture
    from relit_hands.tools.contact_sheet import grid, label_tile

    cap = Capture.load(capture_dir, check_files=False)
    picks = _sheet_picks(frames, max_tiles)
    tiles, records = [], []
    for spec, cam_pref in picks:
        f = cap.frame(spec.id)
        cam_ids = [c for c in f.images if f.images[c].is_file() and c in f.masks and f.masks[c].is_file()]
        if not cam_ids:
            continue
        if cam_pref in cam_ids:
            cid = cam_pref
        else:  # the view that shows the most of the smaller hand (two hands) / of the hand
            areas = {}
            for c in cam_ids:
                m = cap.mask(f, c)
                vals = [(m == v).sum() for v in sorted({1 if h.side == 'right' else 2 for h in f.scene.hands})]
                areas[c] = min(vals)
            cid = max(areas, key=areas.get)
        img, m = cap.image(f, cid), cap.mask(f, cid)
        t = display(img, m)
        if t.shape[0] != tile:
            t = np.asarray(Image.fromarray(t).resize((tile, tile), Image.LANCZOS))
        tiles.append(label_tile(t, f"{f.id} {cid} | {spec.tag}"[:48], size=11))
        records.append({"frame": f.id, "camera": cid, "kind": f.kind, "tag": spec.tag})
    if not tiles:
        raise RuntimeError(f"{capture_dir}: no finished images to put on a contact sheet")
    return grid(tiles, min(columns, len(tiles))), records


def _sheet_picks(frames: list, max_tiles: int):
    """Frames worth seeing: backlit / key OLAT, hand-on-hand shadow, groups, two-hand OLAT,
    env frames (two hands first)."""
    picks, used = [], set()

    def take(pred, cam=None, n=1):
        for s in frames:
            if len([p for p in picks if p[0].id == s.id]) or s.id in used:
                continue
            if pred(s):
                picks.append((s, cam))
                used.add(s.id)
                n -= 1
                if n == 0:
                    return

    take(lambda s: "backlit" in s.tag, "cam00")
    take(lambda s: "key light" in s.tag, "cam00")
    take(lambda s: "from above" in s.tag)
    take(lambda s: s.kind == "group" and "two OLAT" in s.tag, "cam00")
    take(lambda s: s.kind == "olat" and len(s.scene.hands) == 2 and s.scene.name in ("interlocked", "clasp"), n=2)
    take(lambda s: s.kind == "group" and len(s.scene.hands) == 2)
    take(lambda s: s.kind == "olat" and s.scene.name.startswith("random"), n=2)
    take(lambda s: s.kind == "env" and len(s.scene.hands) == 2)
    take(lambda s: s.kind == "env", n=4)
    take(lambda s: True, n=max_tiles)
    return picks[:max_tiles]


# ----------------------------------------------------------------------------------------
# Driver


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < N")
    return i, n


def view_seed(base: int, frame_index: int, cam_index: int) -> int:
    h = hashlib.sha256(f"{base}/{frame_index}/{cam_index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def frame_cameras(cam_ids: list, frame_index: int, views_per_frame: int | None) -> list:
    """The cameras to render for one frame in this run: all of them, or ``views_per_frame`` of
    them spread over the rig (every ``n // k``-th camera of the elevation-ordered spiral) with an
    offset that rotates with the frame index, so a first pass sees every frame from every part of
    the dome across frames; a later run without the limit fills in the rest."""
    n = len(cam_ids)
    if not views_per_frame or views_per_frame >= n:
        return list(cam_ids)
    if views_per_frame < 1:
        raise ValueError(f"--views-per-frame must be >= 1, got {views_per_frame}")
    stride = n // views_per_frame
    off = frame_index % stride
    return [cam_ids[off + j * stride] for j in range(views_per_frame)]


def render_seed_base(preset: dict, noise_seed: int = 0):
    """Base of the per-view sampler seeds (:func:`view_seed`): the preset's seed, or for
    ``noise_seed`` K != 0 a different stream -- the same frames (poses, lights, environments come
    from the preset's seed alone) rendered with independent Monte Carlo noise."""
    return preset["seed"] if not noise_seed else f"{preset['seed']}/noise{int(noise_seed)}"


def generator_settings(preset_name: str, preset: dict, renderer: "LightStageRenderer | None", spp: int,
                       noise_seed: int = 0) -> dict:
    return {"tool": "relit-hands lightstage", "preset": preset_name, "renderer": "mitsuba3 volpath",
            "mitsuba": _mitsuba_version(), "variant": renderer.mi.variant() if renderer else None,
            "spp": int(spp), "max_depth": renderer.max_depth if renderer else SKIN["max_depth"],
            "boundary": renderer.boundary if renderer else "index_matched",
            "skin": {k: (list(v) if isinstance(v, tuple) else v) for k, v in SKIN.items()},
            "rig": dict(RIG), "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in preset.items()},
            "pixel_filter": "box", "mask": "ray cast through pixel centres (Mitsuba ray_intersect)",
            "noise_seed": int(noise_seed)}


# The generator settings that decide what a capture's frames show (not how noisy they are): a
# capture resumes only with the same ones, and a noise reference (--noise-seed) must share them.
SAME_FRAMES_KEYS = ("preset", "spp", "boundary", "settings", "max_depth", "skin", "rig")


def frame_settings_differ(a: dict, b: dict) -> list:
    """The :data:`SAME_FRAMES_KEYS` on which two captures' generator settings (as stored in
    capture.json) differ."""
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))  # tuples -> lists, as stored
    return [k for k in SAME_FRAMES_KEYS if a.get(k) != b.get(k)]


def _mitsuba_version():
    try:
        import importlib.metadata as md
        return md.version("mitsuba")
    except Exception:
        return None


def _previous_sheet(out: Path):
    """The contact sheet this capture's summary says it wrote (None if there is none)."""
    try:
        return json.loads((out / "summary.json").read_text())["contact_sheet"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(preset_name: str, out, *, shard=(0, 1), variant="auto", spp=None, boundary="index_matched",
        sheet_only=False, sheet_path=None, quiet=False, frame_limit=None, kinds=None,
        views_per_frame=None, noise_seed: int = 0, overwrite: bool = False) -> dict:
    """Render (or resume) the capture ``out`` of preset ``preset_name``; returns the summary.

    ``out`` is checked first (:class:`~relit_hands.validation.OutputFolder`): new, empty or a
    relit-hands light-stage capture (re-running resumes it); any other non-empty folder needs
    ``overwrite``, and a relit-hands folder of another kind is refused."""
    from tqdm import tqdm

    from relit_hands.tools.capture import FORMAT_NAME
    from relit_hands.validation import OutputFolder, OutputSet, json_file_says, write_atomic, write_text_atomic

    from relit_hands.tools.capture import CaptureWriter
    from relit_hands.environment import EnvironmentMap
    from relit_hands.image_io import write_hdr_image, write_png

    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {list(PRESETS)}")
    preset = dict(PRESETS[preset_name])
    spp = int(spp or preset["spp"])
    out = Path(out)
    folder = OutputFolder(out, "lightstage", overwrite=overwrite,
                          recognise=lambda p: json_file_says(p / "capture.json", format=FORMAT_NAME))
    sheet = Path(sheet_path) if sheet_path else out / "contact_sheet.png"
    if sheet_path and not sheet.resolve().is_relative_to(out.resolve()):
        # a sheet outside the capture: never over a file relit-hands did not write (this capture's
        # summary lists the sheet it wrote), unless overwrite
        OutputSet(overwrite=overwrite, owned=[_previous_sheet(out)]).check(sheet, "--sheet")
    t_start = time.perf_counter()
    renderer = LightStageRenderer(preset_asset_path(preset), variant=variant, boundary=boundary)
    cams, lpos, linten = build_rig(preset["cameras"], preset["lights"], preset["width"], preset["height"])
    library_maps = {}
    if "eval_frames" in preset:
        lib_spec = preset["eval_frames"]["library"]
        lib, entries = eval_environments(lib_spec)
        library_maps = {e.id: lib.load(e, lib_spec["height"]) for e in entries}
        frames = plan_eval_frames(preset, cams, renderer.models, library_maps)
    else:
        env_names = EnvironmentMap.list_shipped()
        if not env_names:
            raise RuntimeError("no shipped environment maps found (relit_hands/models/environments)")
        frames = plan_frames(preset, cams, lpos, renderer.models, env_names)
    if frame_limit:
        frames = frames[:frame_limit]
    settings = generator_settings(preset_name, preset, renderer, spp, noise_seed)

    old = out / "capture.json"
    if old.is_file():
        prev = json.loads(old.read_text()).get("generator", {})
        if frame_settings_differ(prev, settings) or prev.get("noise_seed", 0) != noise_seed:
            raise ValueError(f"{out}: holds a capture made with different settings "
                             f"(preset {prev.get('preset')!r}, spp {prev.get('spp')}, noise seed "
                             f"{prev.get('noise_seed', 0)}); use another --out or delete it")
    folder.create()
    writer = CaptureWriter(out, name=f"lightstage-{preset_name}", generator=settings)
    for cid, cam in cams.items():
        writer.add_camera(cid, cam)
    for i in range(len(lpos)):
        writer.add_light(i, lpos[i], linten[i])
    used_envs = sorted({f.env["id"] for f in frames if f.kind == "env"})
    env_maps = {}
    for eid in used_envs:
        if eid in library_maps:  # generated: written into the capture, then registered
            dest = out / "environments" / f"{eid}.hdr"
            if not dest.is_file():
                write_atomic(dest, lambda p: write_hdr_image(p, library_maps[eid].image))
            src = EnvironmentMap.load(dest)
        else:
            src = EnvironmentMap.from_name_or_path(eid)
        writer.add_environment(eid, src.source)
        env_maps[eid] = src
    for f in frames:
        writer.add_frame(f.id, f.kind, f.split, f.scene, lights_on=f.lights_on, env=f.env)
    writer.write()

    si, sn = shard
    mine = [(k, f) for k, f in enumerate(frames) if k % sn == si and (not kinds or f.kind in kinds)]
    wanted = {f.id: frame_cameras(list(cams), k, views_per_frame) for k, f in mine}
    todo = [(k, f) for k, f in mine if not all(writer.has_view(f.id, c) for c in wanted[f.id])]
    n_views_todo = sum(sum(1 for c in wanted[f.id] if not writer.has_view(f.id, c)) for _, f in todo)
    render_s, n_rendered, build_s = 0.0, 0, 0.0
    if not sheet_only and n_views_todo:
        bar = tqdm(total=n_views_todo, desc=f"lightstage {preset_name}" + (f" shard {si}/{sn}" if sn > 1 else ""),
                   unit="img", disable=quiet, dynamic_ncols=True)
        cam_list = list(cams)
        for k, f in todo:
            t0 = time.perf_counter()
            if f.kind == "env":
                env = env_maps[f.env["id"]].rotate(f.env["yaw_deg"], f.env["pitch_deg"])
                ms = renderer.build(f.scene, cams, env=env)
            else:
                ms = renderer.build(f.scene, cams, lights=(lpos[f.lights_on], linten[f.lights_on]))
            masks = renderer.masks(ms, cams)
            build_s += time.perf_counter() - t0
            for ci, cid in enumerate(cam_list):
                if cid not in wanted[f.id] or writer.has_view(f.id, cid):
                    continue
                t1 = time.perf_counter()
                rgb, _alpha = renderer.render(ms, ci, spp, view_seed(render_seed_base(preset, noise_seed), k, ci))
                dt = time.perf_counter() - t1
                render_s += dt
                n_rendered += 1
                writer.write_view(f.id, cid, rgb, masks[cid])
                bar.set_postfix_str(f"{f.id} {f.kind} {dt:.1f}s/img")
                bar.update(1)
        bar.close()

    done_views = sum(1 for f in frames for c in cams if writer.has_view(f.id, c))
    total_views = len(frames) * len(cams)
    summary = {
        "capture": str(out), "preset": preset_name, "shard": f"{si}/{sn}",
        "frames": len(frames), "cameras": len(cams), "lights": len(lpos),
        "frames_by_kind": {k: sum(f.kind == k for f in frames) for k in ("olat", "group", "env")},
        "frames_by_split": {s: sum(f.split == s for f in frames) for s in ("train", "heldout")},
        "two_hand_frames": sum(len(f.scene.hands) == 2 for f in frames),
        "views_total": total_views, "views_done": done_views, "complete": done_views == total_views,
        "rendered_this_run": n_rendered,
        "seconds_per_image": (render_s / n_rendered) if n_rendered else None,
        "scene_build_and_mask_seconds": build_s,
        "wall_seconds": time.perf_counter() - t_start,
        "image_size": [preset["width"], preset["height"]], "spp": spp,
        "variant": renderer.mi.variant(), "cpu_count": os.cpu_count(),
        "settings": settings,
    }
    summary_path = out / ("summary.json" if sn == 1 else f"summary_shard{si}of{sn}.json")
    prev_summary = None
    if summary_path.is_file():
        try:
            prev_summary = json.loads(summary_path.read_text())
        except ValueError:
            prev_summary = None
    if n_rendered == 0 and prev_summary and prev_summary.get("seconds_per_image"):
        summary["seconds_per_image"] = prev_summary["seconds_per_image"]  # keep the measured timing
        summary["seconds_per_image_note"] = "from the run that rendered the images"
    try:
        img, recs = contact_sheet(out, frames)
        write_atomic(sheet, lambda p: write_png(p, img))
        summary["contact_sheet"] = {"path": str(sheet), "tiles": recs, "size": [img.shape[1], img.shape[0]]}
    except RuntimeError as e:
        summary["contact_sheet"] = {"error": str(e)}
    summary["plan"] = [{"id": f.id, "kind": f.kind, "split": f.split, "scene": f.scene.name,
                        "hands": [h.side for h in f.scene.hands], "lights_on": f.lights_on, "env": f.env,
                        "tag": f.tag} for f in frames]
    write_text_atomic(summary_path, json.dumps(summary, indent=1) + "\n")
    if not quiet:
        spi = summary["seconds_per_image"]
        print(f"lightstage {preset_name}: {done_views}/{total_views} views in {out}"
              + (f"; {spi:.2f} s/image ({preset['width']}x{preset['height']}, {spp} spp, {summary['variant']})"
                 if spi else "") + f"; summary {summary_path}")
    return summary


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``lightstage`` options (shared by ``relit-hands lightstage`` and ``python -m``)."""
    ap.add_argument("--preset", default="tiny", choices=list(PRESETS))
    ap.add_argument("--out", help="capture folder (created; re-running resumes); required unless --calibrate")
    ap.add_argument("--shard", type=_parse_shard, default=(0, 1), metavar="i/N",
                    help="render only frames i, i+N, ... (split one capture over N machines)")
    ap.add_argument("--variant", default="auto", help="Mitsuba variant: auto (CUDA if present, else LLVM), "
                                                      "llvm_ad_rgb, cuda_ad_rgb")
    ap.add_argument("--spp", type=int_range(1, 1 << 20), help="samples per pixel (default: the preset's)")
    ap.add_argument("--boundary", choices=("index_matched", "rough_dielectric"), default="index_matched",
                    help="skin boundary model (see the module docstring)")
    ap.add_argument("--kinds", type=lambda t: [k.strip() for k in t.split(",") if k.strip()], metavar="K[,K]",
                    help="render only frames of these kinds (olat, group, env) now; the rest on a later run "
                         "(e.g. --kinds env renders the evaluation frames first)")
    ap.add_argument("--views-per-frame", type=int_range(1, 4096), metavar="K",
                    help="render only K of the rig's cameras per frame now (spread over the dome, rotating "
                         "with the frame); run again without it to fill in the rest")
    ap.add_argument("--noise-seed", type=int_range(0, 2 ** 31 - 1), default=0, metavar="K",
                    help="render the same frames with another Monte Carlo sample stream (K != 0), into its own "
                         "--out: a second reference whose difference to the first measures the reference noise "
                         "(relit-hands eval --noise-reference); default 0")
    ap.add_argument("--sheet", help="contact sheet PNG path (default OUT/contact_sheet.png)")
    ap.add_argument("--sheet-only", action="store_true", help="render nothing, rebuild the sheet and summary")
    ap.add_argument("--calibrate", action="store_true", help="measure the bare skin reflectance and exit")
    ap.add_argument("--overwrite", action="store_true",
                    help="render into a non-empty --out folder that is not a relit-hands capture")
    ap.add_argument("--quiet", action="store_true")


def run_from_args(args, command: str | None = None) -> int:
    """``command`` is not recorded: the capture's generator settings describe the run."""
    if args.calibrate:
        rd = calibrate_skin(args.boundary, variant=args.variant)
        print(json.dumps({"boundary": args.boundary, "rd": [round(float(x), 4) for x in rd]}))
        return 0
    if not args.out:
        raise ValueError("lightstage: --out DIR is required")
    run(args.preset, args.out, shard=args.shard, variant=args.variant, spp=args.spp, boundary=args.boundary,
        sheet_only=args.sheet_only, sheet_path=args.sheet, quiet=args.quiet, kinds=args.kinds,
        views_per_frame=args.views_per_frame, noise_seed=args.noise_seed,
        overwrite=getattr(args, "overwrite", False))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="relit-hands lightstage",
                                 description="Synthetic light stage: OLAT / light-group / environment captures "
                                             "of the hand asset rendered with Mitsuba 3.")
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
