"""The student's training set: the on-disk format the teacher writes, a torch Dataset that reads
it, the per-vertex feature pass both share, and a *stand-in* generator for tests.

Format (full description: docs/student_dataset.md), one folder::

    manifest.json     {"format": "relit_hands.student_set", "version": 1, "resolution": R,
                       "n_lights": N, "feature_names": [C names], "feature_kwargs": {...},
                       "generator": "...", "asset": {"sha1": ...},
                       "samples": [{"id", "split": "train"|"val"|"test", "scene": Scene.to_dict(),
                                    "env": {"id", "yaw_deg", "pitch_deg"}, "view_origin": [3],
                                    "file": "samples/000000.npz"}, ...]}
    samples/*.npz     vertex_features        float16 [H, Vp, C]  per proxy vertex, ray-cast visibility
                      vertex_features_novis  float16 [H, Vp, C]  same, every ray visible (V = 1)
                      energy                 float32 [3]         what the features were divided by
                      env_sh                 float32 [9, 3]      env SH, WORLD frame (rotation applied)
                      target                 float16 [H, 3, R, R] linear HDR radiance textures
                                                                 (float32 accepted too)
                    with ``"key_lights": K > 0`` in the manifest (:mod:`relit_hands.key_lights`),
                    vertex_features leaves the K brightest lights out of diffuse_vis / spec_*, and:
                      key_visibility         uint8 [H, K, ceil(R*R/8)] per-texel visibility bits
                      key_partial_index      int32 [M]  texels of fractional visibility along shadow
                      key_partial_coverage   uint8 [M]  edges (flat [H, K, R*R]; coverage x 255);
                                                        absent in sets written before them
                      key_dirs, key_rgb_n    float32 [K, 3]  directions; RGB / energy
                      proxy_vertices, proxy_normals  float32 [H, Vp, 3]  world, metres
                    the dataset adds the key lights' per-texel part back after the gather.

Hands are in the order of the sample's ``scene.hands``. Per-vertex features (Vp ~ 1k) instead of
maps ([C, R, R] = 19 x 65k) keep a sample ~40x smaller; the :class:`StudentDataset` gathers them
to UV maps on the fly with the same :class:`~relit_hands.uv_maps.UVRasterizer` the engine uses.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..hand_model import HandAsset, asset_path, asset_reference
from ..student import (environment_code, scene_centre, select_channels, variant_feature_names,
                      variant_feature_source)
from ..uv_maps import UVRasterizer

__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "StudentDatasetError", "proxy_vertex_features",
           "StudentDataset", "write_manifest", "write_sample", "read_manifest", "make_synthetic_student_set",
           "asset_uv_rasterizer", "asset_sha1", "synthetic_teacher_target"]

DATASET_FORMAT = "relit_hands.student_set"
DATASET_VERSION = 1
SPLITS = ("train", "val", "test")


class StudentDatasetError(ValueError):
    """A student training set that is missing, malformed, or does not fit the asset/model."""


# ----------------------------------------------------------------------- feature pass

def proxy_vertex_features(engine, scene, env, view_origin, *, n_lights: int = 64, sources=("vis",),
                          posed: Optional[dict] = None, **feature_kw) -> dict:
    """Per-vertex lighting features of ``scene``'s proxies: :meth:`Engine.vertex_features` (the
    part of :meth:`Engine.lighting_features` before the UV gather), for one or both sources."""
    return engine.vertex_features(scene, env, view_origin, n_lights=n_lights, sources=sources, posed=posed,
                                  **feature_kw)


def asset_sha1(asset: HandAsset) -> str:
    """Identity of the proxy UV layout a set was made for (its features are per proxy vertex)."""
    h = hashlib.sha1()
    for a in (asset.proxy_uvs, asset.proxy_uv_faces, asset.proxy_faces):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def asset_uv_rasterizer(asset: HandAsset, resolution: int) -> UVRasterizer:
    return UVRasterizer(asset.proxy_uvs, asset.proxy_uv_faces, resolution, faces=asset.proxy_faces)


# ----------------------------------------------------------------------- writing

def key_light_arrays(key: dict) -> dict:
    """The sample arrays of the key lights (module docstring) from ``Engine.vertex_features``' ``out['key']``."""
    from ..key_lights import pack_coverage

    def f32(x):
        return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, np.float32)

    return {**pack_coverage(key["visibility"]), "key_dirs": f32(key["dirs"]),
            "key_rgb_n": f32(key["rgb_n"]), "proxy_vertices": f32(key["proxy_vertices"]),
            "proxy_normals": f32(key["proxy_normals"])}


def write_sample(path, *, vertex_features, vertex_features_novis, energy, env_sh, target, key=None) -> None:
    """One sample npz in the documented dtypes (see the module docstring). Raises if the target
    does not fit float16 (radiance > 65504 or non-finite) -- then store it as float32. ``key``:
    ``Engine.vertex_features``' ``out['key']`` for a set with key lights."""
    tgt = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target, np.float32)
    if not np.isfinite(tgt).all():
        raise StudentDatasetError(f"{path}: target contains NaN/inf")
    tgt_store = tgt.astype(np.float16) if np.abs(tgt).max() < 6e4 else tgt

    def f16(x):
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, np.float32)
        return x.astype(np.float16)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, vertex_features=f16(vertex_features),
                        vertex_features_novis=f16(vertex_features_novis),
                        energy=np.asarray(energy, np.float32).reshape(3),
                        env_sh=np.asarray(env_sh, np.float32).reshape(9, 3), target=tgt_store,
                        **(key_light_arrays(key) if key is not None else {}))


def write_manifest(root, *, resolution: int, n_lights: int, feature_names, samples: list, generator: str,
                   asset: HandAsset, feature_kwargs: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    root = Path(root)
    man = {"format": DATASET_FORMAT, "version": DATASET_VERSION, "resolution": int(resolution),
           "n_lights": int(n_lights), "feature_names": list(feature_names),
           "feature_kwargs": feature_kwargs or {}, "generator": generator,
           "asset": {"sha1": asset_sha1(asset), "ref": asset_reference(asset.source or None)}, "samples": samples, **(extra or {})}
    root.mkdir(parents=True, exist_ok=True)
    p = root / "manifest.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(man, indent=1) + "\n")
    tmp.replace(p)
    return p


def read_manifest(root) -> dict:
    root = Path(root)
    p = root / "manifest.json"
    if not p.is_file():
        raise StudentDatasetError(f"{root}: not a student training set (no manifest.json)")
    try:
        man = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StudentDatasetError(f"{p}: cannot read the manifest ({e})") from None
    if man.get("format") != DATASET_FORMAT:
        raise StudentDatasetError(f"{p}: format {man.get('format')!r} is not {DATASET_FORMAT!r}")
    if int(man.get("version", -1)) > DATASET_VERSION:
        raise StudentDatasetError(f"{p}: version {man.get('version')} is newer than this reader ({DATASET_VERSION})")
    for k in ("resolution", "n_lights", "feature_names", "samples"):
        if k not in man:
            raise StudentDatasetError(f"{p}: manifest lacks {k!r}")
    return man


# ----------------------------------------------------------------------- reading

class StudentDataset(torch.utils.data.Dataset):
    """Items are single hand textures (both hands of a sample are two items; the network sees
    hands independently, so one- and two-hand samples mix in a batch).

    ``StudentDataset(root, split='train', variant=None, asset=None, translucency=True, turn=False)``;
    ``root`` is one set folder or a list of them (their samples are pooled; the sets must agree in
    resolution, feature channels, key lights, feature roughness and hand asset, else
    :class:`StudentDatasetError` names the odd one; ``manifest`` is the first set's);
    ``translucency=False`` leaves the set's ``transmit_*`` channels out of ``inputs`` (a student
    that does not pay for the second ray cast at run time); ``turn=True`` turns each item's
    world-frame normal channels by a random rotation (:func:`turn_normals`; training augmentation,
    vis / novis variants). Item ``i`` is a dict:

    * ``maps`` float32 [C, R, R]: features with ray-cast visibility, gathered to UV
      (``variant`` None only);
    * ``maps_novis`` float32 [C, R, R]: the same with every ray visible (``variant`` None only);
    * ``inputs`` float32 [Cv, R, R]: the channels ``variant`` consumes, from its source (when a
      ``variant`` is given);
    * ``env_code`` float32 [30]: :func:`~relit_hands.student.environment_code`;
    * ``target`` float32 [3, R, R]: target radiance / energy (what the student predicts);
    * ``energy`` float32 [3]; ``mask`` bool [R, R]: texels covered by the atlas (the loss
      region); ``sample`` int, ``hand`` int (index in the sample's scene), ``side`` str.
    """

    def __init__(self, root, split: Optional[str] = "train", variant: Optional[str] = None,
                 asset: Optional[HandAsset] = None, cache_samples: int = 4, translucency: bool = True,
                 turn: bool = False):
        self.roots = [Path(r) for r in root] if isinstance(root, (list, tuple)) else [Path(root)]
        if not self.roots:
            raise StudentDatasetError("no student set folder given")
        self.root = self.roots[0]
        manifests = [read_manifest(r) for r in self.roots]
        self.manifest = manifests[0]
        self.resolution = int(self.manifest["resolution"])
        self.feature_names = list(self.manifest["feature_names"])
        self.variant = variant
        self.input_names = variant_feature_names(variant, self.feature_names) if variant else None
        if self.input_names is not None and not translucency:
            self.input_names = [n for n in self.input_names if not n.startswith("transmit_")]
        self.turn = bool(turn)
        if self.turn:
            if variant is None or variant == "bottleneck":
                raise StudentDatasetError("turn: only for the vis / novis inputs (the bottleneck code is a world-frame SH)")
            self._normal_idx = [self.input_names.index(f"normal_{c}") for c in "xyz"] if "normal_x" in self.input_names else []
            self.reseed(None)
        if asset is None:  # the set's own asset (sets made before references were recorded: the default)
            ref = self.manifest.get("asset", {}).get("ref") if isinstance(self.manifest.get("asset"), dict) else None
            asset = HandAsset.load(asset_path(ref))
        self.asset = asset
        for r, man in zip(self.roots, manifests):
            want = man.get("asset", {}).get("sha1")
            if want and want != asset_sha1(self.asset):
                raise StudentDatasetError(f"{r}: made for a different hand asset (proxy layout {want}, "
                                          f"this asset {asset_sha1(self.asset)})")
            for what, get in (("resolution", lambda m: int(m["resolution"])), ("feature channels", lambda m: list(m["feature_names"])),
                              ("key lights", lambda m: int(m.get("key_lights", 0) or 0)),
                              ("feature roughness", lambda m: tuple(m.get("feature_kwargs", {}).get("roughness", (0.2, 0.4, 0.7))))):
                if get(man) != get(self.manifest):
                    raise StudentDatasetError(f"{r}: {what} {get(man)}, but {self.root} has {get(self.manifest)}; "
                                              "sets trained together must be made with the same options")
        # each sample remembers its set (``_set``: index in ``roots``; its file is relative to that folder)
        self.samples = [dict(s, _set=k) for k, man in enumerate(manifests) for s in man["samples"]
                        if split is None or s.get("split") == split]
        self.items = []
        for si, s in enumerate(self.samples):
            for hi, h in enumerate(s["scene"]["hands"]):
                self.items.append((si, hi, h["side"]))
        self._uv = None
        self._cache: "OrderedDict[int, dict]" = OrderedDict()
        self._cache_n = int(cache_samples)
        self.key_lights = int(self.manifest.get("key_lights", 0) or 0)
        self.roughness = tuple(self.manifest.get("feature_kwargs", {}).get("roughness", (0.2, 0.4, 0.7)))

    @property
    def uv(self) -> UVRasterizer:
        if self._uv is None:
            self._uv = asset_uv_rasterizer(self.asset, self.resolution)
        return self._uv

    @property
    def mask(self) -> torch.Tensor:
        return torch.from_numpy(self.uv.mask.copy())

    def __len__(self):
        return len(self.items)

    def _load(self, si: int) -> dict:
        hit = self._cache.get(si)
        if hit is not None:
            self._cache.move_to_end(si)
            return hit
        s = self.samples[si]
        p = self.roots[s["_set"]] / s["file"]
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = ["vertex_features", "vertex_features_novis", "energy", "env_sh", "target"]
                if self.key_lights:
                    keys += ["key_visibility", "key_dirs", "key_rgb_n", "proxy_vertices", "proxy_normals"]
                d = {k: z[k] for k in keys}
                if self.key_lights and "key_partial_index" in z.files:  # fractional shadow edges
                    d.update(key_partial_index=z["key_partial_index"], key_partial_coverage=z["key_partial_coverage"])
        except FileNotFoundError:
            raise StudentDatasetError(f"{p}: sample file not found") from None
        except (OSError, ValueError, KeyError) as e:
            raise StudentDatasetError(f"{p}: cannot read sample ({e})") from None
        H = len(s["scene"]["hands"])
        C, R = len(self.feature_names), self.resolution
        for k, shape in (("vertex_features", (H, None, C)), ("vertex_features_novis", (H, None, C)),
                         ("target", (H, 3, R, R))):
            a = d[k]
            if a.ndim != len(shape) or any(w is not None and w != g for w, g in zip(shape, a.shape)):
                raise StudentDatasetError(f"{p}: {k} has shape {a.shape}, expected {shape}")
        d["env_code"] = environment_code(d["env_sh"], d["energy"], s["view_origin"],
                                         scene_centre(_SceneLike(s["scene"])))
        self._cache[si] = d
        if len(self._cache) > self._cache_n:
            self._cache.popitem(last=False)
        return d

    def _gather(self, vf: np.ndarray) -> torch.Tensor:
        return self.uv.gather(torch.from_numpy(vf.astype(np.float32)), self.asset.proxy_faces, contiguous=True)[0]

    def _key_maps(self, d: dict, si: int, hi: int) -> torch.Tensor:
        """The key lights' per-texel part [3 + 3 len(roughness), R, R] of hand ``hi`` of sample ``si``."""
        from ..key_lights import key_light_maps, texel_surface, unpack_coverage

        pts, nrm = texel_surface(self.uv, torch.from_numpy(d["proxy_vertices"][hi:hi + 1]),
                                 torch.from_numpy(d["proxy_normals"][hi:hi + 1]), self.asset.proxy_faces)
        vis = unpack_coverage(d, self.resolution, hand=hi)
        return key_light_maps(pts, nrm, vis, torch.from_numpy(d["key_dirs"]), torch.from_numpy(d["key_rgb_n"]),
                              self.samples[si]["view_origin"], self.roughness)[0]

    def _vis_maps(self, d: dict, si: int, hi: int) -> torch.Tensor:
        m = self._gather(d["vertex_features"][hi:hi + 1])
        if self.key_lights:
            from ..key_lights import add_key_light_maps

            m = add_key_light_maps(m[None], self.feature_names, self._key_maps(d, si, hi)[None], self.roughness)[0]
        return m

    def __getitem__(self, i: int) -> dict:
        si, hi, side = self.items[i]
        d = self._load(si)
        energy = torch.from_numpy(d["energy"].astype(np.float32))
        tgt = torch.from_numpy(d["target"][hi].astype(np.float32)) / energy.clamp_min(1e-12)[:, None, None]
        item = {"env_code": torch.from_numpy(d["env_code"]), "target": tgt, "energy": energy,
                "mask": self.mask, "sample": si, "hand": hi, "side": side}
        if self.variant is None:
            item["maps"] = self._vis_maps(d, si, hi)
            item["maps_novis"] = self._gather(d["vertex_features_novis"][hi:hi + 1])
        else:
            if variant_feature_source(self.variant) == "vis":
                m = self._vis_maps(d, si, hi)
            else:
                m = self._gather(d["vertex_features_novis"][hi:hi + 1])
            item["inputs"] = select_channels(m[None], self.feature_names, self.input_names)[0]
            if self.turn and self._normal_idx:
                w = torch.utils.data.get_worker_info()
                if w is not None and self._turn_worker != w.id:  # each DataLoader worker its own stream
                    self._turn_rng, self._turn_worker = np.random.default_rng([self._turn_seed or 0, w.id]), w.id
                item["inputs"] = turn_normals(item["inputs"], self._normal_idx, self._turn_rng)
        return item

    def reseed(self, seed: Optional[int]) -> None:
        """Seed the random turns (``turn=True``; None: from the OS) -- the trainer calls it so a run
        is repeatable."""
        self._turn_seed, self._turn_worker = seed, None
        self._turn_rng = np.random.default_rng(seed)


def turn_normals(inputs: torch.Tensor, idx: Sequence[int], rng) -> torch.Tensor:
    """``inputs`` [C, R, R] with the world-frame normal channels ``idx`` (x, y, z) turned by one
    uniformly random rotation: the inputs of the same hands, light and camera turned rigidly
    together. Every other channel (light sums, visibility, ao, transmittance, the view-dependent
    specular lobes) and the target do not change under such a turn, so this teaches the student
    that the world's orientation does not matter (a student set has each pose in its preset orientation and turns only the light;
    measured: turning a set's two-hand samples, its own training data, darkened the shipped
    student by ~2 %)."""
    from scipy.spatial.transform import Rotation

    Q = torch.as_tensor(Rotation.random(random_state=rng).as_matrix(), dtype=inputs.dtype)
    out = inputs.clone()
    n = inputs[list(idx)]                                                        # [3, R, R]
    out[list(idx)] = torch.einsum("ij,jhw->ihw", Q, n)
    return out


class _SceneLike:
    """Just enough of a Scene (``hands[*].transl``) from its dict, for :func:`scene_centre`."""

    def __init__(self, d):
        self.hands = [type("H", (), {"transl": np.asarray(h.get("transl", (0, 0, 0)), np.float64)})()
                      for h in d["hands"]]


# ----------------------------------------------------------------------- stand-in teacher

def synthetic_teacher_target(maps: torch.Tensor, names: Sequence[str], albedo: torch.Tensor,
                             energy: torch.Tensor) -> torch.Tensor:
    """STAND-IN TEACHER FOR TESTS ONLY (no learned light transport, no subsurface scattering):
    ``radiance = energy * (albedo / pi * diffuse_vis + 0.04 * spec_a0.40)`` per texel and colour,
    i.e. a Lambertian albedo-textured surface plus a Fresnel-0.04 GGX lobe, shadowed by the
    proxy's visibility. A known function of the features and the asset's albedo, so a student
    that works must be able to fit it (the albedo must be learned by its static UV input).
    ``maps [H, C, R, R]`` -> ``[H, 3, R, R]`` linear HDR."""
    names = list(names)
    dv = select_channels(maps, names, ["diffuse_vis_r", "diffuse_vis_g", "diffuse_vis_b"])
    sp = select_channels(maps, names, ["spec_a0.40_r", "spec_a0.40_g", "spec_a0.40_b"])
    e = energy.reshape(1, 3, 1, 1).to(maps)
    return e * (albedo[None].to(maps) / np.pi * dv + 0.04 * sp)


def make_synthetic_student_set(root, engine, n: int = 8, resolution: int = 128, *, n_lights: int = 32,
                               val_fraction: float = 0.25, seed: int = 0, envs: Optional[Sequence[str]] = None,
                               progress: bool = False) -> Path:
    """Write a small student set in the documented format whose targets come from
    :func:`synthetic_teacher_target` -- a STAND-IN TEACHER FOR TESTS ONLY (the real targets come from
    the issue-6 teacher). Scenes: the presets, finger poses jittered (+-0.15 rad), random shipped
    environment and yaw, view origin = the framing camera's centre. Returns the manifest path."""
    from ..environment import EnvironmentMap
    from ..poses import POSE_PRESETS
    from ..scene import SCENE_PRESETS, scene_preset

    root = Path(root)
    rng = np.random.default_rng(seed)
    names_pool = list(SCENE_PRESETS) + list(POSE_PRESETS)
    envs = list(envs) if envs else EnvironmentMap.list_shipped()
    env_cache = {}
    albedo = engine.asset.albedo_map(resolution)
    uv = engine.uv_rasterizer(resolution)
    samples = []
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synthetic student set", unit="sample")
    for i in it:
        scene = scene_preset(names_pool[i % len(names_pool)]).copy()
        for h in scene.hands:
            h.pose = (h.pose + rng.uniform(-0.15, 0.15, 45)).astype(np.float32)
        env_id = envs[int(rng.integers(len(envs)))]
        if env_id not in env_cache:
            env_cache[env_id] = EnvironmentMap.from_name_or_path(env_id)
        yaw = float(rng.uniform(0, 360))
        env = env_cache[env_id].rotate(yaw)
        cam = engine.default_camera(scene, 512, 512)
        origin = cam.center
        vf = proxy_vertex_features(engine, scene, env, origin, n_lights=n_lights, sources=("vis", "novis"))
        maps = uv.gather(vf["vis"], engine.asset.proxy_faces, contiguous=True)
        target = synthetic_teacher_target(maps, vf["names"], albedo, vf["energy"])
        f = f"samples/{i:06d}.npz"
        write_sample(root / f, vertex_features=vf["vis"], vertex_features_novis=vf["novis"], energy=vf["energy"],
                     env_sh=env.sh_coefficients(), target=target)
        samples.append({"id": f"{i:06d}", "split": "val" if i >= n - n_val else "train", "scene": scene.to_dict(),
                        "env": {"id": env_id, "yaw_deg": yaw, "pitch_deg": 0.0},
                        "view_origin": [float(x) for x in origin], "file": f})
    return write_manifest(root, resolution=resolution, n_lights=n_lights, feature_names=vf["names"],
                          samples=samples, asset=engine.asset,
                          generator="relit_hands.tools.student_data.make_synthetic_student_set "
                                    "(STAND-IN teacher for tests only: albedo/pi*diffuse_vis + 0.04*spec_a0.40)",
                          feature_kwargs={"roughness": [0.2, 0.4, 0.7], "include_normal": True,
                                          "normalize": "rgb"})
