r"""Synthetic phone video of a *new person's* hand: test data for personalization (issue #21, step 2).

    relit-hands make-phone-video --out DIR [--person-seed S] [--tone light|medium|dark]
        [--frames 100] [--resolution 256] [--spp 64] [--env SPEC] [--views 1|N] [--seed S]
        [--keypoint-noise-px 1.5] [--variant auto] [--overwrite] [--no-progress]

It renders, with the project's light-stage path tracer (Mitsuba 3 ``volpath``, volumetric
subsurface scattering: :class:`~relit_hands.tools.lightstage.LightStageRenderer`), the right hand
of a seeded *person* who is not the shipped asset, under an environment map the fitter has not
trained on, seen by a hand-held camera (or by N static calibrated cameras), and writes what a
phone plus a hand tracker would give -- 8-bit frames, 21 noisy 2D keypoints with confidences,
imperfect masks, the intrinsics -- and, beside it, the ground truth.

The person (:func:`make_person`)
--------------------------------
Built on asset v2 (``models/hand_v2``; note that the engine's *default* asset is v1,
``models/hand``; v2 is the one with the semantic UV atlas and the nail region this tool paints):

* shape: per-bone (length, girth) scales ``[16, 2]`` of the asset's shape space
  (:func:`relit_hands.hand_model.shape_rest`): a common length factor within +-5 % and girth
  factor within +-8 %, plus per-bone variation, clipped to +-8 % (length) and +-12 % (girth);
* displacements along the shaped rest normals: a smooth random field of the *base* rest position
  (6 low-frequency plane waves, wavelengths 25-70 mm, and 3 signed Gaussian bumps, sigma 6-12 mm),
  made zero-mean over the render vertices and scaled so its largest magnitude is the drawn
  amplitude (0.8-1.5 mm); the proxy gets the same field (clipped to the amplitude);
* albedo: the base albedo texture in linear Rec.709 with (1) a skin-tone change -- each texel
  multiplied by the ratio of the asset generator's skin anchors
  (:func:`relit_hands.tools.build_hand_asset.skin_base`) at the target tone (light 0.12, medium
  0.5, dark 0.85 on its 0 = lightest .. 1 = darkest scale) to the base asset's own tone, the
  palmar skin getting that ratio to the power 0.45 (palms carry less melanin; the palmar weight
  is smoothed over ~3 mm of the mesh, so the change along the sides is gradual); (2) 150-350
  freckles (brown spots of radius 0.45-1.2 mm, mostly on the dorsal side); (3) one irregular
  birthmark (radius 3.5-6 mm, dark brown, on the back of the hand or the wrist) and, for 60 % of
  the seeds, a pale scar (a 12-25 mm segment); (4) painted nails (a polish colour from
  :data:`NAIL_POLISH`). Every mark is placed in 3-D on the rest surface (a texel's rest position
  is interpolated through its render-mesh UV triangle), so marks are round on the skin and
  continuous across UV seams. Nail texels are those whose interpolated ``render_region == 4``
  (the asset's nail label, docs/conventions.md) is >= 0.5 -- no separate nail mask exists.

:func:`write_person_asset` writes it as a complete asset folder in the format of
``models/hand_v2`` (``right_hand.npz`` with exactly the base npz's keys and dtypes, ``albedo.png``,
``normal.png`` and ``roughness.png`` copied, ``asset.json`` with a ``person`` entry) plus
``person.json``. Only ``render_vertices``, ``proxy_vertices`` and ``joints`` change (shaped,
then displaced; the joints are shaped only); faces, UVs, weights, regions, tips,
``render_proxy_face/bary`` and ``render_face_parent`` are topology and are kept. Load it with
``HandAsset.load(folder)`` or ``Engine(asset=folder)`` (either also takes the npz inside it).

Output folder (``--out``)
-------------------------
Monocular (``--views 1``, camera id ``phone``)::

    frames/000000.png            8-bit sRGB frame (what the phone saved)
    frames_linear/000000.exr     linear HDR radiance, float32 RGB, no exposure applied
    masks/000000.png             imperfect hand mask (uint8 0 / 255): what a segmenter gives
    keypoints.json               the simulated 2D hand tracker (below)
    intrinsics.json              {"K": 3x3, "width", "height", "distortion": [0, 0, 0, 0, 0], ...}
    ground_truth/                (below)
    capture.json                 command, versions, seeds, settings, date, counts, exposure, timing
    contact_sheet.png            a few frames with the tracked keypoints drawn

Multi-view (``--views N``, N >= 2, camera ids ``cam00`` ...): the same with one sub-folder per
camera (``frames/cam00/000000.png`` ...) and ``views.json`` = ``{"cameras": {id: {"K", "R", "t",
"width", "height"}}}`` instead of ``intrinsics.json``; every frame is seen by every camera.

Conventions. Metres; world right-handed, Y up. Cameras are OpenCV pinholes
(:class:`relit_hands.camera.Camera`): ``x_cam = R x_world + t`` (R, t: world to camera), camera
x right, y down, z forward, ``(u, v) = (K x_cam)[:2] / z``. Pixel coordinates: x right, y down,
origin at the top-left *corner* of the top-left pixel, so that pixel (row r, column c) covers
``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)``. Square pixels, zero skew.
Images are ``resolution x resolution``.

Frames. ``png = round(255 * srgb_encode(clip(exposure * linear, 0, 1)))``: a phone whose auto
exposure metered the first frame and was then locked -- ``exposure`` is set from frame 0's hand
pixels (median luminance -> 0.35, capped so the 95th percentile of the brightest channel stays
below 0.95) and kept for the whole clip (all cameras); it is in ``capture.json``. The background
is the environment itself (seen through the camera).

``keypoints.json``::

    {"format": "relit-hands phone keypoints", "version": 1, "order": "mediapipe",
     "names": [21 MediaPipe names], "side": "right", "pixel_convention": "...",
     "records": [{"frame": i, "camera": id, "image": "frames/000000.png",
                  "keypoints": [[x, y] x 21] (pixels), "confidence": [21] in [0, 1]}, ...]}

Records are ordered by frame, then camera. 21 keypoints in MediaPipe / OpenPose order (mapped
from the model's 16 joints + 5 fingertips by :data:`relit_hands.tracking.KP21_TO_KEYPOINT`).
The simulated tracker (:func:`simulate_tracker`): Gaussian pixel noise (sigma
``--keypoint-noise-px``, 2.5x for keypoints hidden behind the hand), confidence U(0.8, 1) for
visible and U(0.4, 0.75) for hidden keypoints; 3 % dropouts per keypoint and 2 % lost frames
(confidence 0, coordinates = the keypoint's last reported position, else the image centre --
never NaN); 2 % outliers (a neighbouring finger's keypoint or a 12-40 px jump, confidence
0.05-0.35). No value is ever NaN or infinite.

Masks. The true mask (pixel-centre ray casting, :meth:`LightStageRenderer.masks`) moved by a
per-frame erosion / dilation of 1-2 px plus a smooth random threshold field (ragged boundary).

``ground_truth/``::

    asset/                the person's asset folder (above), which is what was rendered
    frames.json           per frame: pose [45], global_orient [3], transl [3] (for the person asset,
                          shape None), shape [16, 2] (the person's per-bone scales relative to
                          the base asset hand_v2: that asset with this shape, and these pose
                          parameters, is the person up to the <= 1.5 mm displacements),
                          keypoints_3d [21, 3] world metres (MediaPipe order), and per view:
                          camera id, K, R, t, width, height, keypoints_2d [21, 2] (pixels,
                          convention above), depth [21] (camera z, m), visible [21] (an
                          approximate ray-cast occlusion test), tracker [21] (ok | occluded |
                          dropout | outlier | lost)
    environment.json      the map: kind (library | file | shipped), family / seed / split or file,
                          file (the map as rendered, float32 EXR, beside it), rotation
                          (world_from_map, 3x3) and yaw (degrees)
    environment.exr       the map's pixels (equirectangular, docs/conventions.md), before rotation
    albedo.exr            the person's true albedo, linear float32 [R, R, 3], UV atlas layout
                          (row = v * R), exactly the decoded asset/albedo.png the renderer used
    masks/000000.png      true masks (uint8 0 / 255)

Environment (``--env``). ``FAMILY:SEED`` = a map of the light library
(:mod:`relit_hands.tools.light_library`), generated at 256 x 512; it must be in the library's
``test`` split (the held-out family ``color`` always is), else :class:`SplitError`. The default is
:data:`DEFAULT_ENV`, a map of the held-out family the student / fitter never trained on. A path
to a ``.hdr`` / ``.exr`` file or a shipped map name is also accepted (a missing or corrupt file is
one error naming it). The map is turned by a seeded yaw.

Writing. ``--out`` is checked first (:class:`relit_hands.validation.OutputFolder`): a
non-empty folder is refused without ``--overwrite`` (a relit-hands folder of another kind is
always refused). Everything is written into a hidden temporary folder next to ``--out`` and moved
into place only when complete, so a crash never leaves half a capture and never touches ``--out``.
With ``--overwrite`` the capture's entries replace same-named entries of ``--out`` (other files
stay; outputs of an earlier phone capture that this one does not write are removed).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relit_hands.validation import finite_float, int_range

__all__ = ["FORMAT_NAME", "KEYPOINT_NAMES", "HAND_CONNECTIONS", "NAIL_POLISH", "TONE_LEVELS", "DEFAULT_ENV",
           "BASE_ASSET", "Person", "make_person", "write_person_asset", "TrackerNoise", "simulate_tracker",
           "imperfect_mask", "make_phone_video", "add_arguments", "run_from_args", "main"]

FORMAT_NAME = "relit-hands phone video"
FORMAT_VERSION = 1
FOLDER_KIND = "make-phone-video"
BASE_ASSET = "hand_v2"
DEFAULT_ENV = "color:6"          # the light library's held-out family, a fixed seed
ENV_HEIGHT = 256                 # generated library maps: 256 x 512
PHONE_FOV_Y_DEG = 40.0           # a phone's main camera held close (a little zoomed in)
MONO_CAMERA = "phone"
TONE_LEVELS = {"light": 0.12, "medium": 0.5, "dark": 0.85}   # build_hand_asset.skin_base's scale
PALM_MELANIN_POWER = 0.45
# nail polish colours, sRGB 0..255
NAIL_POLISH = {"red": (178, 18, 34), "burgundy": (104, 14, 34), "pink": (226, 104, 150),
               "coral": (238, 104, 78), "plum": (104, 38, 120), "navy": (28, 38, 104),
               "teal": (18, 116, 118), "black": (24, 22, 26)}
FRECKLE_TINT = np.array([0.55, 0.42, 0.33])      # linear multiplier at full strength
BIRTHMARK_TINT = np.array([0.30, 0.21, 0.15])
SCAR_COLOUR_SRGB = (226, 178, 172)

# MediaPipe hand landmark names, in MediaPipe order (KP21_TO_KEYPOINT maps them to the model)
KEYPOINT_NAMES = ["WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP",
                  "INDEX_FINGER_MCP", "INDEX_FINGER_PIP", "INDEX_FINGER_DIP", "INDEX_FINGER_TIP",
                  "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP", "MIDDLE_FINGER_TIP",
                  "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP",
                  "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP"]
# MediaPipe's HAND_CONNECTIONS (for drawing)
HAND_CONNECTIONS = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
                    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19),
                    (19, 20)]
PIXEL_CONVENTION = ("x right, y down, origin at the top-left corner of the top-left pixel: pixel (row r, "
                    "column c) covers [c, c+1) x [r, r+1), its centre is (c + 0.5, r + 0.5)")
CAMERA_CONVENTION = ("OpenCV: x_cam = R @ x_world + t (world to camera); camera x right, y down, z forward; "
                     "(u, v) = (K @ x_cam)[:2] / z; world metres, right-handed, Y up")
CAMERA_RESPONSE = "png = round(255 * srgb_encode(clip(exposure * linear, 0, 1)))"
OUTPUT_NAMES = ("frames", "frames_linear", "masks", "keypoints.json", "intrinsics.json", "views.json",
                "ground_truth", "capture.json", "contact_sheet.png")


# =============================================================================== the person


@dataclass
class Person:
    """A seeded person on a base asset (all arrays numpy).

    ``shape`` [16, 2] float32 per-bone (length, girth) scales relative to the base asset;
    ``render_displacement_m`` [Vr] / ``proxy_displacement_m`` [Vp] float32 signed offsets (metres)
    along the shaped rest normals; ``arrays``: the person's npz arrays (the base npz's keys, order
    and dtypes); ``albedo_srgb8`` [R, R, 3] uint8 the albedo texture as written; ``marks``: what
    was painted (JSON-ready)."""

    seed: int
    tone: str
    base_name: str
    base_dir: Path
    shape: np.ndarray
    displacement_amplitude_m: float
    render_displacement_m: np.ndarray
    proxy_displacement_m: np.ndarray
    arrays: dict
    albedo_srgb8: np.ndarray
    marks: dict = field(default_factory=dict)

    def asset(self):
        """The person as a :class:`~relit_hands.hand_model.HandAsset` (in memory)."""
        from relit_hands.hand_model import HandAsset

        return HandAsset.from_arrays(dict(self.arrays), source=f"<person {self.seed}>")

    def albedo_linear(self) -> np.ndarray:
        """[R, R, 3] float32 linear albedo, the decoded 8-bit texture (what the renderer uses)."""
        from relit_hands.image_io import srgb_to_linear

        return srgb_to_linear(self.albedo_srgb8 / 255.0).astype(np.float32)

    def to_json(self) -> dict:
        return {"seed": int(self.seed), "tone": self.tone, "tone_level": TONE_LEVELS[self.tone],
                "base_asset": self.base_name, "shape": self.shape.astype(np.float64).tolist(),
                "shape_meaning": "per-bone (length, girth) scales relative to the base asset "
                                 "(relit_hands.hand_model.shape_rest), MANO joint order",
                "displacement_amplitude_m": float(self.displacement_amplitude_m),
                "displacement_max_abs_m": float(np.abs(self.render_displacement_m).max()),
                "displacement_mean_m": float(self.render_displacement_m.mean()),
                "marks": self.marks}


@dataclass(frozen=True)
class _TexelLookup:
    """Covered texels of an asset's render-mesh UV layout, [Nc] each: flat index into the
    [R, R] texture, rest position (m) and normal, interpolated region weights [Nc, 6], smoothed
    palmar-skin weight [Nc] in [0, 1]; plus
    ``fill`` (row, col) index arrays [R, R] of the nearest covered texel (for uncovered ones)."""

    resolution: int
    flat: np.ndarray
    position: np.ndarray
    normal: np.ndarray
    region: np.ndarray
    palmar: np.ndarray
    fill: tuple


@functools.lru_cache(maxsize=2)
def _texel_lookup(npz_path: str, resolution: int) -> _TexelLookup:
    import torch
    from scipy import ndimage, sparse

    from relit_hands.hand_model import HandAsset, vertex_normals
    from relit_hands.uv_maps import rasterize_uv

    a = HandAsset.load(npz_path)
    tri, bary = rasterize_uv(a.render_uvs, a.render_uv_faces, resolution)
    covered = tri >= 0
    flat = np.flatnonzero(covered.ravel())
    faces = a.render_faces[tri.ravel()[flat]]                      # [Nc, 3]
    b = bary.reshape(-1, 3)[flat].astype(np.float64)                # [Nc, 3]
    V = a.render_vertices.astype(np.float64)
    N = vertex_normals(torch.from_numpy(V), a.render_faces).numpy()
    pos = np.einsum("nk,nkd->nd", b, V[faces])
    nrm = np.einsum("nk,nkd->nd", b, N[faces])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    region = np.einsum("nk,nkr->nr", b, np.eye(6)[a.render_region[faces]])
    # palmar skin (regions 0, 2; the forearm's palmar side 0.4), smoothed over the mesh (~3 mm), so
    # the palm-to-back colour change is gradual along the sides of the hand and fingers
    reg = a.render_region
    palm_v = np.where(np.isin(reg, (0, 2)), 1.0, np.where((reg == 5) & (N[:, 1] < 0), 0.4, 0.0))
    F = a.render_faces
    rows = np.concatenate([F[:, 0], F[:, 1], F[:, 2], F[:, 1], F[:, 2], F[:, 0]])
    cols = np.concatenate([F[:, 1], F[:, 2], F[:, 0], F[:, 0], F[:, 1], F[:, 2]])
    adj = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(V), len(V))).tocsr()
    adj.data[:] = 1.0
    adj = adj + sparse.identity(len(V), format="csr")
    adj = sparse.diags(1.0 / np.asarray(adj.sum(1)).ravel()) @ adj
    for _ in range(20):
        palm_v = adj @ palm_v
    palmar = np.einsum("nk,nk->n", b, palm_v[faces])
    fill = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    return _TexelLookup(int(resolution), flat, pos.astype(np.float32), nrm.astype(np.float32),
                        region.astype(np.float32), palmar.astype(np.float32), (fill[0], fill[1]))


def _base_dir(base) -> Path:
    from relit_hands.hand_model import asset_path

    return asset_path(base or BASE_ASSET).parent


def _sample_shape(rng) -> np.ndarray:
    length = 1.0 + np.clip(rng.uniform(-0.05, 0.05) + rng.normal(0.0, 0.02, 16), -0.08, 0.08)
    girth = 1.0 + np.clip(rng.uniform(-0.08, 0.08) + rng.normal(0.0, 0.03, 16), -0.12, 0.12)
    return np.stack([length, girth], 1).astype(np.float32)


def _displacement_field(rng, rest_points: np.ndarray):
    """A smooth random scalar field of rest positions: returns f(points [n, 3]) -> [n] (unscaled)."""
    k = 6
    dirs = rng.normal(size=(k, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    wavenumber = 2.0 * np.pi / rng.uniform(0.025, 0.07, k)
    phase = rng.uniform(0.0, 2.0 * np.pi, k)
    weight = rng.uniform(0.5, 1.0, k)
    centres = rest_points[rng.choice(len(rest_points), 3, replace=False)]
    sigma = rng.uniform(0.006, 0.012, 3)
    bump = rng.choice([-1.0, 1.0], 3) * rng.uniform(1.0, 2.0, 3)

    def f(p):
        p = np.asarray(p, np.float64)
        waves = (weight * np.sin(p @ dirs.T * wavenumber + phase)).sum(1)
        d2 = ((p[:, None, :] - centres[None]) ** 2).sum(-1)
        return waves + (bump * np.exp(-0.5 * d2 / sigma ** 2)).sum(1)

    return f


def _skin_ratio(tone: str, base_tone: float) -> np.ndarray:
    from .build_hand_asset import skin_base

    return skin_base(TONE_LEVELS[tone]) / skin_base(base_tone)


def _paint_albedo(base_linear: np.ndarray, look: _TexelLookup, rng, tone: str, base_tone: float):
    """The person's linear albedo [R, R, 3] from the base's, and a JSON description of the marks."""
    from scipy.spatial import cKDTree

    from relit_hands.image_io import srgb_to_linear

    from .build_hand_asset import fbm

    P = look.position.astype(np.float64)
    w = look.region.astype(np.float64)                      # 0 palm 1 back 2 finger palmar 3 dorsal 4 nail 5 wrist
    flat_img = base_linear.reshape(-1, 3).astype(np.float64)
    col = flat_img[look.flat].copy()
    palmar, nail = look.palmar.astype(np.float64), w[:, 4]
    dorsal = w[:, 1] + w[:, 3] + 0.5 * w[:, 5]
    # 1. skin tone: melanin-like tint, weaker on the palms
    ratio = _skin_ratio(tone, base_tone)
    col *= ratio[None, :] ** (1.0 - (1.0 - PALM_MELANIN_POWER) * palmar[:, None])
    tree = cKDTree(P)
    # 2. freckles
    n_freckles = int(rng.integers(150, 351))
    p_centre = (0.08 + dorsal) * (nail < 0.05)
    centres = rng.choice(len(P), n_freckles, replace=False, p=p_centre / p_centre.sum())
    radii = rng.uniform(0.45e-3, 1.2e-3, n_freckles)
    strength = rng.uniform(0.3, 0.75, n_freckles)
    dark = np.zeros(len(P))
    for c, r, s in zip(centres, radii, strength):
        idx = np.asarray(tree.query_ball_point(P[c], 1.6 * r), np.int64)
        if idx.size:
            d = np.linalg.norm(P[idx] - P[c], axis=1)
            dark[idx] = np.maximum(dark[idx], s * np.exp(-(d / r) ** 2))
    col *= 1.0 - dark[:, None] * (1.0 - FRECKLE_TINT)
    # 3a. birthmark: irregular dark-brown patch on the back of the hand or the wrist
    back = np.flatnonzero((w[:, 1] + w[:, 5] > 0.9) & (nail < 0.05))
    bc = int(back[rng.integers(len(back))])
    b_radius = float(rng.uniform(3.5e-3, 6e-3))
    b_seed = int(rng.integers(1 << 30))
    idx = np.asarray(tree.query_ball_point(P[bc], 1.6 * b_radius), np.int64)
    d = np.linalg.norm(P[idx] - P[bc], axis=1)
    r_eff = b_radius * (1.0 + 0.35 * fbm(P[idx], 350.0, b_seed, octaves=3))
    m = np.clip((r_eff - d) / 0.5e-3, 0.0, 1.0) * (0.8 + 0.15 * fbm(P[idx], 1500.0, b_seed + 7, octaves=2))
    col[idx] *= 1.0 - np.clip(m, 0, 1)[:, None] * (1.0 - BIRTHMARK_TINT)
    marks = {"freckles": n_freckles,
             "birthmark": {"centre_rest_m": np.round(P[bc], 5).tolist(), "radius_m": round(b_radius, 5)}}
    # 3b. scar (60 % of the seeds): a pale, slightly pink segment
    if rng.random() < 0.6:
        sc = int(np.flatnonzero(nail < 0.05)[rng.integers(int((nail < 0.05).sum()))])
        n = look.normal[sc].astype(np.float64)
        t = rng.normal(size=3)
        t -= n * (t @ n)
        t /= np.linalg.norm(t)
        half = float(rng.uniform(6e-3, 12.5e-3))
        width = float(rng.uniform(0.7e-3, 1.4e-3))
        idx = np.asarray(tree.query_ball_point(P[sc], half + 2 * width), np.int64)
        q = P[idx] - P[sc]
        along = np.clip(q @ t, -half, half)
        dist = np.linalg.norm(q - along[:, None] * t, axis=1)
        taper = np.clip((half - np.abs(q @ t)) / (0.3 * half), 0, 1)
        m = np.clip(1.0 - dist / width, 0.0, 1.0) * taper * (nail[idx] < 0.5) * 0.65
        pale = srgb_to_linear(np.array(SCAR_COLOUR_SRGB) / 255.0)
        target = 0.5 * col[idx] + 0.5 * pale * (col[idx].mean(1, keepdims=True) / pale.mean()) ** 0.5
        col[idx] = col[idx] * (1 - m[:, None]) + target * m[:, None]
        marks["scar"] = {"centre_rest_m": np.round(P[sc], 5).tolist(), "length_m": round(2 * half, 5),
                         "width_m": round(width, 5)}
    # 4. nail polish
    names = sorted(NAIL_POLISH)
    polish_name = names[int(rng.integers(len(names)))]
    polish = srgb_to_linear(np.array(NAIL_POLISH[polish_name]) / 255.0)
    on_nail = nail >= 0.5
    sheen = 1.0 + 0.04 * fbm(P[on_nail], 2000.0, int(rng.integers(1 << 30)), octaves=2)
    col[on_nail] = polish[None, :] * sheen[:, None]
    marks["nail_polish"] = {"name": polish_name, "srgb": list(NAIL_POLISH[polish_name]),
                            "nail_texels": int(on_nail.sum())}
    out = flat_img.copy()
    out[look.flat] = np.clip(col, 0.0, 0.95)
    out = out.reshape(base_linear.shape)
    out = out[look.fill[0], look.fill[1]]                   # uncovered texels: nearest covered one
    return out.astype(np.float32), marks


def make_person(seed: int, tone: str = "medium", base=None) -> Person:
    """The person of ``seed`` (deterministic: same seed, tone and base -> identical arrays).

    ``tone``: ``light`` | ``medium`` | ``dark`` (:data:`TONE_LEVELS`); ``base``: the base asset (a
    shipped name, an asset folder or its npz; default :data:`BASE_ASSET`). See the module
    docstring for what is drawn."""
    import torch

    from relit_hands.hand_model import HandAsset, asset_reference, shape_rest, vertex_normals
    from relit_hands.image_io import linear_to_srgb, read_albedo_linear

    if tone not in TONE_LEVELS:
        raise ValueError(f"tone must be one of {', '.join(TONE_LEVELS)}, got {tone!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"person seed must be a non-negative integer, got {seed!r}")
    base_dir = _base_dir(base)
    npz = base_dir / "right_hand.npz"
    with np.load(npz, allow_pickle=False) as z:
        base_arrays = {k: z[k] for k in z.files}
    asset = HandAsset.load(npz)
    base_info = json.loads((base_dir / "asset.json").read_text()) if (base_dir / "asset.json").is_file() else {}
    base_tone = float(base_info.get("params", {}).get("skin_tone", 0.35))
    rng = np.random.default_rng([int(seed), 0x9E3779B1])

    # geometry: shape, then displacement along the shaped normals
    shape = _sample_shape(rng)
    amplitude = float(rng.uniform(0.8e-3, 1.5e-3))
    field_fn = _displacement_field(rng, asset.render_vertices.astype(np.float64))
    f_render = field_fn(asset.render_vertices)
    mean = f_render.mean()
    scale = amplitude / np.abs(f_render - mean).max()
    disp_render = (f_render - mean) * scale
    disp_proxy = np.clip((field_fn(asset.proxy_vertices) - mean) * scale, -amplitude, amplitude)
    dt = torch.float64
    tips = torch.as_tensor(asset.tip_points(), dtype=dt)
    joints, (rv, pv) = shape_rest(
        torch.as_tensor(shape, dtype=dt)[None], torch.as_tensor(asset.joints, dtype=dt), tips,
        [int(p) for p in asset.parents],
        [(torch.as_tensor(asset.render_weights, dtype=dt), torch.as_tensor(asset.render_vertices, dtype=dt)),
         (torch.as_tensor(asset.proxy_weights, dtype=dt), torch.as_tensor(asset.proxy_vertices, dtype=dt))])
    rv, pv = rv[0], pv[0]
    rv = rv + torch.as_tensor(disp_render, dtype=dt)[:, None] * vertex_normals(rv, asset.render_faces)
    pv = pv + torch.as_tensor(disp_proxy, dtype=dt)[:, None] * vertex_normals(pv, asset.proxy_faces)
    arrays = dict(base_arrays)  # same keys, same order
    for key, value in (("render_vertices", rv), ("proxy_vertices", pv), ("joints", joints[0])):
        arrays[key] = value.numpy().astype(base_arrays[key].dtype)

    # albedo
    base_linear = read_albedo_linear(base_dir / "albedo.png")
    look = _texel_lookup(str(npz.resolve()), int(base_linear.shape[0]))
    albedo, marks = _paint_albedo(base_linear, look, rng, tone, base_tone)
    srgb8 = np.rint(np.clip(linear_to_srgb(albedo), 0.0, 1.0) * 255.0).astype(np.uint8)
    return Person(seed=int(seed), tone=tone, base_name=asset_reference(npz), base_dir=base_dir, shape=shape,
                  displacement_amplitude_m=amplitude, render_displacement_m=disp_render.astype(np.float32),
                  proxy_displacement_m=disp_proxy.astype(np.float32), arrays=arrays, albedo_srgb8=srgb8,
                  marks=marks)


def write_person_asset(person: Person, folder) -> Path:
    """Write ``person`` as an asset folder (format of ``models/hand_v2``, module docstring):
    ``right_hand.npz``, ``albedo.png``, ``normal.png``, ``roughness.png`` (copied),
    ``asset.json`` (the base's, with ``person`` and ``base_asset`` entries and the geometry
    measures updated) and ``person.json``. Returns the folder."""
    from relit_hands.image_io import write_png
    from relit_hands.validation import SUMMARY_MARKER

    from .semantic_atlas import area_stretch, seam_length

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "right_hand.npz", **person.arrays)
    write_png(folder / "albedo.png", person.albedo_srgb8)
    for name in ("normal.png", "roughness.png"):
        shutil.copy2(person.base_dir / name, folder / name)
    info_path = person.base_dir / "asset.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    a = person.arrays
    with np.load(person.base_dir / "right_hand.npz", allow_pickle=False) as z:
        base_tip, base_j0 = z["render_vertices"][z["tip_vertex_ids"][2]], z["joints"][0]
    tip, j0 = a["render_vertices"][a["tip_vertex_ids"][2]], a["joints"][0]
    if "hand_length_m" in info:
        info["hand_length_m"] = float(info["hand_length_m"] * np.linalg.norm(tip - j0)
                                      / np.linalg.norm(base_tip - base_j0))
    if isinstance(info.get("atlas"), dict):
        pv, pf = a["proxy_vertices"].astype(np.float64), a["proxy_faces"]
        info["atlas"]["seam_length_m"] = round(seam_length(pv, pf, a["proxy_uv_faces"]), 4)
        info["atlas"]["area_stretch"] = {k: round(v, 4) for k, v in
                                         area_stretch(pv, pf, a["proxy_uvs"].astype(np.float64),
                                                      a["proxy_uv_faces"]).items()}
    info["base_asset"] = person.base_name
    info["person"] = person.to_json()
    (folder / "asset.json").write_text(json.dumps(info, indent=2) + "\n")
    (folder / "person.json").write_text(json.dumps({"written_by": SUMMARY_MARKER, **person.to_json()}, indent=2)
                                        + "\n")
    return folder


# ============================================================================ motion and cameras


def _smooth_noise(rng, n: int, dims: int, sigma_frames: float) -> np.ndarray:
    """[n, dims] Gaussian-filtered white noise (a stationary process of unit standard deviation:
    normalised by the filter's gain, not by the sample, so short clips stay small)."""
    from scipy.ndimage import gaussian_filter1d

    pad = 4 * int(sigma_frames + 1)
    x = gaussian_filter1d(rng.normal(size=(n + 2 * pad, dims)), sigma_frames, axis=0)[pad: pad + n]
    impulse = np.zeros(2 * pad + 1)
    impulse[pad] = 1.0
    gain = float(np.sqrt((gaussian_filter1d(impulse, sigma_frames) ** 2).sum()))
    return x / gain


def _hand_states(models, n: int, rng) -> list:
    """Per frame HandState of the right hand: pose interpolated (PCHIP in anatomical angles, so it
    stays within the joint limits) between seeded keyframe poses (``lightstage.random_pose``), a
    global orientation facing +Z (palm or back) turning and tilting smoothly (yaw +-20..35 deg,
    pitch / roll +-8..15 deg), the keypoints' centroid at the origin with a small drift."""
    import torch
    from scipy.interpolate import PchipInterpolator
    from scipy.spatial.transform import Rotation

    from relit_hands.poses import anatomical_to_pose, pose_to_anatomical
    from relit_hands.scene import HandState, orientation

    from .lightstage import random_pose

    n_keys = int(max(2, min(6, 1 + n // 20)))
    keys = np.stack([pose_to_anatomical(random_pose(rng, "right"), side="right") for _ in range(n_keys)])
    times = np.linspace(0.0, 1.0, n_keys)
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    angles = PchipInterpolator(times, keys, axis=0)(t)                       # [n, 15, 3]
    poses = np.asarray(anatomical_to_pose(angles, side="right"), np.float32)  # [n, 45]
    palm_to_camera = bool(rng.random() < 0.5)
    base = Rotation.from_rotvec(orientation((0.0, 1.0, 0.0), (0.0, 0.0, 1.0 if palm_to_camera else -1.0)))
    amp = np.array([rng.uniform(20, 35), rng.uniform(8, 15), rng.uniform(8, 15)])
    freq = rng.uniform(0.6, 1.4, 3)
    ph = rng.uniform(0, 2 * np.pi, 3)
    ypr = amp * np.sin(2 * np.pi * freq * t[:, None] + ph)                    # [n, 3] degrees
    drift = 0.006 * np.sin(2 * np.pi * rng.uniform(0.3, 0.9, 3) * t[:, None] + rng.uniform(0, 2 * np.pi, 3))
    model = models["right"]
    states = []
    for i in range(n):
        turn = Rotation.from_euler("YXZ", ypr[i], degrees=True)
        go = (turn * base).as_rotvec().astype(np.float32)
        with torch.no_grad():
            kp = model(poses[i], go, None, meshes=()).keypoints[0].double().numpy()
        states.append(HandState("right", poses[i], go, (-kp.mean(0) + drift[i]).astype(np.float32)))
    return states, {"keyframes": n_keys, "palm_to_camera": palm_to_camera,
                    "turn_amplitude_deg": np.round(amp, 2).tolist()}


def _phone_cameras(n: int, resolution: int, rng) -> tuple:
    """Per frame Camera of a hand-held phone: an orbit of 60-120 degrees about the vertical axis
    through the hand (eased in and out) at 0.35-0.5 m, elevation 5-25 degrees, looking at the hand
    with a small roll; hand shake = smoothed noise on the position (~2 mm), aim (~4 mm) and
    rotation (~0.4 deg). Intrinsics: fov_y :data:`PHONE_FOV_Y_DEG`, principal point within 1 % of
    the centre."""
    from scipy.spatial.transform import Rotation

    from relit_hands.camera import Camera

    K = Camera.intrinsics_from_fov(PHONE_FOV_Y_DEG, resolution, resolution)
    K[0, 2] += rng.uniform(-0.01, 0.01) * resolution
    K[1, 2] += rng.uniform(-0.01, 0.01) * resolution
    sweep = rng.uniform(60.0, 120.0) * rng.choice([-1.0, 1.0])
    az0 = -0.5 * sweep + rng.uniform(-15.0, 15.0)
    el0, r0 = rng.uniform(5.0, 25.0), rng.uniform(0.38, 0.47)
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    ease = 0.5 - 0.5 * np.cos(np.pi * t)
    slow = _smooth_noise(rng, n, 3, max(n / 6.0, 1.0))
    shake = _smooth_noise(rng, n, 9, 1.5)
    cams = []
    for i in range(n):
        az = math.radians(az0 + sweep * ease[i])
        el = math.radians(el0 + 4.0 * slow[i, 0])
        r = float(np.clip(r0 + 0.02 * slow[i, 1], 0.35, 0.5))
        eye = r * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
        eye = eye + 0.002 * shake[i, 0:3]
        target = 0.004 * shake[i, 3:6]
        c = Camera.look_at(eye, target, up=(0.0, 1.0, 0.0), width=resolution, height=resolution)
        roll = 2.0 * slow[i, 2]
        jitter = Rotation.from_euler("xyz", 0.4 * shake[i, 6:9] + np.array([0.0, 0.0, roll]), degrees=True)
        R = jitter.as_matrix() @ c.R                  # rotate about the camera centre
        cams.append(Camera(K, R, -R @ eye, resolution, resolution))
    return cams, {"fov_y_deg": PHONE_FOV_Y_DEG, "orbit_deg": round(float(sweep), 2),
                  "radius_m": round(float(r0), 4), "elevation_deg": round(float(el0), 2)}


# ================================================================================== tracker


@dataclass(frozen=True)
class TrackerNoise:
    """The simulated 2D tracker's error model (module docstring)."""

    sigma_px: float = 1.5
    hidden_sigma_factor: float = 2.5
    dropout_rate: float = 0.03
    lost_frame_rate: float = 0.02
    outlier_rate: float = 0.02
    outlier_px: tuple = (12.0, 40.0)


def simulate_tracker(true_px: np.ndarray, visible: np.ndarray, width: int, height: int, rng,
                     previous: np.ndarray | None, noise: TrackerNoise = TrackerNoise()):
    """One frame of a 2D hand tracker.

    ``true_px`` [21, 2] true pixel positions (MediaPipe order); ``visible`` [21] bool; ``previous``
    [21, 2] the last reported positions (None at the start). Returns (reported [21, 2] float64,
    confidence [21] in [0, 1], status [21] str: ok | occluded | dropout | outlier | lost); every
    value finite."""
    true_px = np.asarray(true_px, np.float64)
    hold = np.array(previous, np.float64) if previous is not None else np.tile([width / 2.0, height / 2.0], (21, 1))
    if rng.random() < noise.lost_frame_rate:
        return hold, np.zeros(21), ["lost"] * 21
    out = np.empty((21, 2))
    conf = np.empty(21)
    status = []
    u = rng.random(21)
    for k in range(21):
        if u[k] < noise.dropout_rate:
            out[k], conf[k] = hold[k], 0.0
            status.append("dropout")
        elif u[k] < noise.dropout_rate + noise.outlier_rate:
            finger, level = (k - 1) // 4, (k - 1) % 4
            if k > 0 and rng.random() < 0.5:             # a neighbouring finger's keypoint
                other = finger + (1 if finger == 0 or (finger < 4 and rng.random() < 0.5) else -1)
                out[k] = true_px[1 + 4 * other + level] + rng.normal(0.0, noise.sigma_px, 2)
            else:                                         # a jump
                ang = rng.uniform(0, 2 * np.pi)
                out[k] = true_px[k] + rng.uniform(*noise.outlier_px) * np.array([math.cos(ang), math.sin(ang)])
            conf[k] = rng.uniform(0.05, 0.35)
            status.append("outlier")
        elif visible[k]:
            out[k], conf[k] = true_px[k] + rng.normal(0.0, noise.sigma_px, 2), rng.uniform(0.8, 1.0)
            status.append("ok")
        else:
            out[k] = true_px[k] + rng.normal(0.0, noise.sigma_px * noise.hidden_sigma_factor, 2)
            conf[k] = rng.uniform(0.4, 0.75)
            status.append("occluded")
    bad = ~np.isfinite(out).all(1)                          # a keypoint behind the camera: hold it
    out[bad], conf[bad] = hold[bad], 0.0
    return out, conf, status


def imperfect_mask(true_mask: np.ndarray, rng) -> tuple:
    """What a segmenter gives: ``true_mask`` [H, W] bool moved by an erosion / dilation of 1-2 px
    (drawn per call) with a ragged boundary (a smooth random threshold field, std ~0.7 px).
    Returns (mask [H, W] bool, offset_px: + dilation / - erosion)."""
    from scipy import ndimage

    m = np.asarray(true_mask, bool)
    if not m.any():
        return m.copy(), 0
    outside = ndimage.distance_transform_edt(~m)      # > 0 outside the hand
    inside = ndimage.distance_transform_edt(m)        # > 0 inside
    signed = outside - inside                         # boundary pixels: -1 inside, +1 outside
    offset = int(rng.choice([-2, -1, 1, 2]))
    ragged = ndimage.gaussian_filter(rng.normal(size=m.shape), 1.2)
    ragged *= 0.7 / max(float(ragged.std()), 1e-9)
    threshold = offset + (0.5 if offset > 0 else -0.5) + ragged   # dilate k: d_out <= k; erode k: d_in > k
    return signed < threshold, offset


# ============================================================================== environment


def _resolve_env(spec: str | None):
    """(EnvironmentMap before rotation, description dict, input file or None) of ``--env``.

    ``FAMILY:SEED`` (light library, test split only), a .hdr / .exr path, or a shipped name."""
    from relit_hands.environment import EnvironmentMap

    from .light_library import FAMILIES, LightLibrary, _generated_entry, require_split

    spec = DEFAULT_ENV if spec is None else str(spec)
    m = re.fullmatch(r"([a-z_]+):(\d+)", spec)
    if m and m.group(1) in FAMILIES and not Path(spec).exists():
        family, s = m.group(1), int(m.group(2))
        entry = _generated_entry(family, s)
        require_split(entry, {"test"}, "make-phone-video --env")
        env = LightLibrary([entry]).load(entry, ENV_HEIGHT)
        return env, {"kind": "library", "spec": spec, "id": entry.id, "family": family, "seed": s,
                     "split": entry.split, "height": ENV_HEIGHT}, None
    path = Path(spec)
    if path.suffix.lower() in (".hdr", ".exr", ".pic") or len(path.parts) > 1 or path.exists():
        if not path.is_file():
            from relit_hands.image_io import ImageReadError

            raise ImageReadError(f"--env {spec}: environment map file not found")
        env = EnvironmentMap.load(path)
        return env, {"kind": "file", "spec": spec, "source": str(path.resolve())}, path
    env = EnvironmentMap.from_name_or_path(spec)        # a shipped name; errors list the names
    return env, {"kind": "shipped", "spec": spec, "name": env.name,
                 "note": "a shipped map: it may have been used in training"}, None


# ================================================================================== capture


def _exposure(linear_images: list, masks: list) -> float:
    """Auto exposure of the first frame (the hand pixels of every view): median luminance -> 0.35,
    capped so the 95th percentile of the brightest channel stays <= 0.95 (a percentile that
    path-tracing fireflies and small highlights do not reach)."""
    from relit_hands.environment import luminance

    pix = [img[m] for img, m in zip(linear_images, masks) if m.any()]
    pix = np.concatenate(pix) if pix else np.concatenate([img.reshape(-1, 3) for img in linear_images])
    lum = luminance(pix.astype(np.float64))
    med, p95 = float(np.median(lum)), float(np.percentile(pix.max(1), 95))
    k = 0.35 / max(med, 1e-8)
    if p95 * k > 0.95:
        k = 0.95 / max(p95, 1e-8)
    return float(k)


def _to_srgb8(linear: np.ndarray, exposure: float) -> np.ndarray:
    from relit_hands.image_io import linear_to_srgb

    return np.rint(linear_to_srgb(np.clip(linear * exposure, 0.0, 1.0)) * 255.0).astype(np.uint8)


def _keypoint_tolerance(asset) -> np.ndarray:
    """[21] (MediaPipe order) how far in front of a keypoint the first surface hit may lie for it
    to count as visible: 1.3 x the local radius (joint to nearest rest vertex) + 3 mm; a fingertip
    (a surface vertex at the finger's end, seen past the pad or nail) takes its distal joint's."""
    from scipy.spatial import cKDTree

    from relit_hands.tracking import KP21_TO_KEYPOINT

    r, _ = cKDTree(asset.render_vertices.astype(np.float64)).query(asset.joints.astype(np.float64))
    distal = [15, 3, 6, 12, 9]                          # of the tips thumb, index, middle, ring, pinky
    tol = 1.3 * np.concatenate([r, r[distal]]) + 0.003
    return tol[KP21_TO_KEYPOINT]


def _visible(renderer, mscene, cam, points: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """[21] bool: the first surface along the ray from the camera to each point lies no more than
    ``tolerance`` in front of it (ray casting in the Mitsuba scene)."""
    mi = renderer.mi
    o = cam.center.astype(np.float64)
    d = points - o
    dist = np.linalg.norm(d, axis=1)
    d = (d / dist[:, None]).astype(np.float32)
    ray = mi.Ray3f(mi.Point3f(*[np.full(len(d), o[k], np.float32) for k in range(3)]),
                   mi.Vector3f(*[np.ascontiguousarray(d[:, k]) for k in range(3)]))
    si = mscene.ray_intersect(ray)
    hit = np.asarray(si.is_valid())
    t = np.asarray(si.t)
    return ~hit | (t >= dist - tolerance)


def _contact_sheet(folder: Path, records: list, resolution: int, max_tiles: int = 8):
    """Up to ``max_tiles`` views, evenly spaced over the records (frame-major, so a multi-view
    capture shows several cameras), with the tracked keypoints drawn: bones of MediaPipe's hand
    graph, a dot per keypoint coloured by finger, hollow when confidence < 0.5, none when 0."""
    from PIL import Image, ImageDraw

    from relit_hands.image_io import read_png

    from .contact_sheet import grid, label_tile

    picks = [records[i] for i in sorted(set(np.linspace(0, len(records) - 1, min(max_tiles, len(records)))
                                            .round().astype(int).tolist()))]
    tile = int(min(max(resolution, 192), 320))
    s = tile / resolution
    colours = [(255, 255, 255), (255, 140, 40), (80, 220, 80), (60, 170, 255), (230, 80, 230), (250, 230, 60)]

    def finger(k):
        return 0 if k == 0 else 1 + (k - 1) // 4

    tiles = []
    for r in picks:
        im = Image.fromarray(read_png(folder / r["image"])[..., :3]).resize((tile, tile), Image.BILINEAR)
        dr = ImageDraw.Draw(im)
        kp, cf = np.asarray(r["keypoints"]) * s, np.asarray(r["confidence"])
        for a, b in HAND_CONNECTIONS:
            if cf[a] > 0 and cf[b] > 0:
                dr.line([tuple(kp[a]), tuple(kp[b])], fill=colours[finger(b)], width=1)
        for k in range(21):
            if cf[k] <= 0:
                continue
            x, y = kp[k]
            rad = 2.5
            dr.ellipse((x - rad, y - rad, x + rad, y + rad), outline=colours[finger(k)],
                       fill=colours[finger(k)] if cf[k] >= 0.5 else None)
        tiles.append(label_tile(np.asarray(im), f"{r['frame']:06d} {r['camera']}", size=11))
    return grid(tiles, min(4, len(tiles)))


def _json(obj, compact: bool = False) -> str:
    """JSON text: indented; with ``compact`` (the big per-frame files) the head indented and each
    entry of the ``records`` / ``frames`` list on one line."""
    if not compact:
        return json.dumps(obj, indent=1) + "\n"
    key = "records" if "records" in obj else "frames"
    head = json.dumps({k: v for k, v in obj.items() if k != key}, indent=1)
    rows = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in obj[key])
    lead = head[:-2] + ",\n" if len(head) > 2 else "{\n"
    return lead + f' "{key}": [\n{rows}\n ]\n}}\n'


def _rounded(a, digits: int) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


def move_into_place(tmp: Path, out: Path) -> None:
    """Move the finished capture ``tmp`` to ``out``: a rename when ``out`` is missing or empty,
    else entry by entry (same-named entries replaced; outputs of an earlier phone capture that
    this one lacks removed; other files kept)."""
    from relit_hands.validation import read_folder_marker

    if not out.exists():
        os.replace(tmp, out)
        return
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        os.replace(tmp, out)
        return
    was_ours = (read_folder_marker(out) or {}).get("kind") == FOLDER_KIND
    backup = out / f".{FOLDER_KIND}.old{os.getpid()}"
    backup.mkdir()
    moved = []
    try:
        names = [e.name for e in tmp.iterdir()]
        stale = [n for n in OUTPUT_NAMES if was_ours and n not in names and (out / n).exists()]
        for name in names + stale:
            if (out / name).exists() or (out / name).is_symlink():
                os.replace(out / name, backup / name)
                moved.append(name)
        for name in names:
            os.replace(tmp / name, out / name)
    except BaseException:
        for name in moved:  # put the old entries back
            try:
                if (out / name).exists() and not (backup / name).exists():
                    continue
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
                elif (out / name).exists():
                    (out / name).unlink()
                os.replace(backup / name, out / name)
            except OSError:
                pass
        raise
    shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def make_phone_video(out, *, frames: int = 100, resolution: int = 256, spp: int = 64, person_seed: int = 1,
                     tone: str = "medium", env: str | None = None, views: int = 1, seed: int = 0,
                     keypoint_noise_px: float = 1.5, variant: str = "auto", overwrite: bool = False,
                     progress: bool = True, command: str | None = None) -> dict:
    """Render the capture into ``out`` (module docstring); returns the ``capture.json`` dict.

    ``frames`` >= 1, ``resolution`` px (square), ``spp`` samples per pixel, ``views`` 1
    (hand-held phone) or N >= 2 (static rig), ``seed``: motion, cameras, environment rotation,
    tracker and render noise; ``person_seed`` / ``tone``: :func:`make_person`."""
    from relit_hands.validation import FOLDER_MARKER, SUMMARY_MARKER, OutputError, OutputFolder, check_number

    t_start = time.perf_counter()
    frames = check_number(frames, "--frames", 1, 100_000, integer=True)
    resolution = check_number(resolution, "--resolution", 16, 4096, integer=True)
    spp = check_number(spp, "--spp", 1, 1 << 16, integer=True)
    views = check_number(views, "--views", 1, 64, integer=True)
    seed = check_number(seed, "--seed", 0, 2 ** 31 - 1, integer=True)
    person_seed = check_number(person_seed, "--person-seed", 0, 2 ** 31 - 1, integer=True)
    keypoint_noise_px = check_number(keypoint_noise_px, "--keypoint-noise-px", 0.0, 100.0)
    if tone not in TONE_LEVELS:
        raise ValueError(f"--tone must be one of {', '.join(TONE_LEVELS)}, got {tone!r}")
    out = Path(out)
    env_map, env_info, env_file = _resolve_env(env)           # bad --env: one error naming it
    OutputFolder(out, FOLDER_KIND, overwrite=overwrite, inputs=[env_file])
    if out.is_dir() and not overwrite:
        entries = [e for e in os.listdir(out) if not (e.startswith(".") and ".tmp" in e)]
        if entries:
            raise OutputError(f"--out {out}: the folder is not empty (it holds {entries[0]!r}"
                              f"{' ...' if len(entries) > 1 else ''}); choose a new or empty folder, or pass "
                              f"--overwrite to replace the capture's files in it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        summary = _render_capture(tmp, frames=frames, resolution=resolution, spp=spp, person_seed=person_seed,
                                  tone=tone, env_map=env_map, env_info=env_info, env_file=env_file, views=views,
                                  seed=seed, noise=TrackerNoise(sigma_px=float(keypoint_noise_px)),
                                  variant=variant, progress=progress, command=command, t_start=t_start,
                                  out_name=str(out))
        (tmp / FOLDER_MARKER).write_text(json.dumps({"written_by": SUMMARY_MARKER, "kind": FOLDER_KIND}) + "\n")
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _render_capture(folder: Path, *, frames, resolution, spp, person_seed, tone, env_map, env_info, env_file,
                    views, seed, noise, variant, progress, command, t_start, out_name) -> dict:
    """Everything of :func:`make_phone_video` once the arguments are checked, written into ``folder``."""
    from tqdm import tqdm

    from relit_hands.image_io import read_albedo_linear, write_hdr_image, write_png
    from relit_hands.scene import Scene
    from relit_hands.tracking import KP21_TO_KEYPOINT
    from relit_hands.validation import SUMMARY_MARKER, check_finite_image

    from . import lightstage as ls

    gt = folder / "ground_truth"
    # the person
    t0 = time.perf_counter()
    person = make_person(person_seed, tone)
    asset_dir = write_person_asset(person, gt / "asset")
    person_s = time.perf_counter() - t0
    renderer = ls.LightStageRenderer(asset_dir / "right_hand.npz", variant=variant)
    models = renderer.models
    # environment, turned by a seeded yaw
    rng_plan = np.random.default_rng([seed, 1])
    yaw = float(rng_plan.uniform(0.0, 360.0))
    env_rot = env_map.rotate(yaw)
    # motion and cameras
    states, motion_info = _hand_states(models, frames, rng_plan)
    if views == 1:
        per_frame_cams, cam_info = _phone_cameras(frames, resolution, rng_plan)
        cam_ids = [MONO_CAMERA]
        frame_cams = [{MONO_CAMERA: c} for c in per_frame_cams]
    else:
        rig, _, _ = ls.build_rig(views, 1, resolution, resolution)
        cam_ids = list(rig)
        frame_cams = [rig] * frames
        cam_info = {"rig": "lightstage.build_rig dome", "radius_m": ls.RIG["camera_radius"],
                    "fov_y_deg": ls.RIG["fov_deg"], "elevation_deg": list(ls.RIG["camera_elevation_deg"])}

    def sub(kind: str, cid: str, i: int, ext: str) -> str:
        return f"{kind}/{i:06d}{ext}" if views == 1 else f"{kind}/{cid}/{i:06d}{ext}"

    rng_tracker = np.random.default_rng([seed, 2])
    rng_masks = np.random.default_rng([seed, 3])
    tolerance = _keypoint_tolerance(renderer.asset)
    exposure = None
    pending = []                    # frame 0's views until the exposure is known
    records, gt_frames = [], []
    previous = {cid: None for cid in cam_ids}
    counts = {"ok": 0, "occluded": 0, "dropout": 0, "outlier": 0, "lost": 0}
    mask_offsets = []
    render_s = 0.0
    bar = tqdm(total=frames * len(cam_ids), desc="make-phone-video", unit="img", disable=not progress,
               dynamic_ncols=True)
    for i, (state, cams) in enumerate(zip(states, frame_cams)):
        scene = Scene([state], name=f"phone{i:06d}")
        ms = renderer.build(scene, cams, env=env_rot)
        true_masks = renderer.masks(ms, cams)
        with_kp = models["right"](state.pose, state.global_orient, state.transl, meshes=())
        kp3d = with_kp.keypoints[0].detach().double().numpy()[KP21_TO_KEYPOINT]      # [21, 3] MediaPipe order
        frame_views = []
        for ci, (cid, cam) in enumerate(cams.items()):
            t1 = time.perf_counter()
            rgb, _alpha = renderer.render(ms, ci, spp, ls.view_seed(f"phone{seed}", i, ci))
            render_s += time.perf_counter() - t1
            check_finite_image(rgb, f"frame {i} camera {cid}")
            true_mask = true_masks[cid] > 0
            px, depth = cam.project(kp3d, return_depth=True)
            vis = _visible(renderer, ms, cam, kp3d, tolerance) & (depth > 0)
            reported, conf, status = simulate_tracker(px, vis, cam.width, cam.height, rng_tracker, previous[cid],
                                                      noise)
            previous[cid] = reported
            for st in status:
                counts[st] += 1
            mask, offset = imperfect_mask(true_mask, rng_masks)
            mask_offsets.append(offset)
            pending.append((i, cid, rgb, true_mask, mask))
            records.append({"frame": i, "camera": cid, "image": sub("frames", cid, i, ".png"),
                            "keypoints": _rounded(reported, 3), "confidence": _rounded(conf, 4)})
            frame_views.append({"camera": cid, "K": cam.K.tolist(), "R": cam.R.tolist(), "t": cam.t.tolist(),
                                "width": cam.width, "height": cam.height, "keypoints_2d": _rounded(px, 4),
                                "depth": _rounded(depth, 6), "visible": [bool(v) for v in vis],
                                "tracker": status, "mask_offset_px": offset,
                                "image": sub("frames", cid, i, ".png")})
            bar.update(1)
        gt_frames.append({"frame": i, "pose": state.pose.tolist(), "global_orient": state.global_orient.tolist(),
                          "transl": state.transl.tolist(), "shape": person.shape.tolist(),
                          "keypoints_3d": _rounded(kp3d, 6), "views": frame_views})
        if exposure is None:
            exposure = _exposure([p[2] for p in pending], [p[3] for p in pending])
        for fi, cid, rgb, true_mask, mask in pending:
            write_png(_parent_made(folder / sub("frames", cid, fi, ".png")), _to_srgb8(rgb, exposure))
            write_hdr_image(_parent_made(folder / sub("frames_linear", cid, fi, ".exr")), rgb)
            write_png(_parent_made(folder / sub("masks", cid, fi, ".png")), mask.astype(np.uint8) * 255)
            write_png(_parent_made(gt / sub("masks", cid, fi, ".png")), true_mask.astype(np.uint8) * 255)
        pending = []
    bar.close()

    # keypoints, cameras, ground truth
    (folder / "keypoints.json").write_text(_json({
        "written_by": SUMMARY_MARKER, "format": "relit-hands phone keypoints", "version": 1, "order": "mediapipe",
        "names": KEYPOINT_NAMES, "side": "right", "pixel_convention": PIXEL_CONVENTION,
        "confidence": "0 = not detected (coordinates then hold the last reported value, else the image centre)",
        "records": records}, compact=True))
    if views == 1:
        cam = frame_cams[0][MONO_CAMERA]
        (folder / "intrinsics.json").write_text(_json({
            "written_by": SUMMARY_MARKER, "camera": MONO_CAMERA, "K": cam.K.tolist(), "width": cam.width,
            "height": cam.height, "distortion": [0.0] * 5, "convention": CAMERA_CONVENTION,
            "pixel_convention": PIXEL_CONVENTION}))
    else:
        (folder / "views.json").write_text(_json({
            "written_by": SUMMARY_MARKER, "convention": CAMERA_CONVENTION, "pixel_convention": PIXEL_CONVENTION,
            "cameras": {cid: {"K": c.K.tolist(), "R": c.R.tolist(), "t": c.t.tolist(), "width": c.width,
                              "height": c.height} for cid, c in frame_cams[0].items()}}))
    (gt / "frames.json").write_text(_json({
        "written_by": SUMMARY_MARKER, "side": "right", "asset": "asset", "base_asset": person.base_name,
        "shape": person.shape.tolist(), "keypoint_order": "mediapipe", "keypoint_names": KEYPOINT_NAMES,
        "camera_convention": CAMERA_CONVENTION, "pixel_convention": PIXEL_CONVENTION, "exposure": exposure,
        "camera_response": CAMERA_RESPONSE,
        "notes": "pose / global_orient / transl drive HandModel(ground_truth/asset) with shape None; the base "
                 "asset with 'shape' and the same parameters is the person without the <= 1.5 mm displacements. "
                 "'visible' is an approximate ray-cast occlusion test.",
        "frames": gt_frames}, compact=True))
    write_hdr_image(gt / "environment.exr", env_map.image)
    env_info = dict(env_info, file="environment.exr", yaw_deg=round(yaw, 4),
                    rotation_world_from_map=env_rot.rotation.tolist(), exposure_ev=env_map.exposure,
                    total_energy_rgb=np.asarray(env_rot.total_energy(), np.float64).tolist())
    if env_file is not None:
        shutil.copy2(env_file, gt / f"environment_source{Path(env_file).suffix.lower()}")
        env_info["source_copy"] = f"environment_source{Path(env_file).suffix.lower()}"
    (gt / "environment.json").write_text(_json({"written_by": SUMMARY_MARKER, **env_info}))
    write_hdr_image(gt / "albedo.exr", read_albedo_linear(asset_dir / "albedo.png"))
    sheet = _contact_sheet(folder, records, resolution)
    write_png(folder / "contact_sheet.png", sheet)

    n_images = frames * len(cam_ids)
    summary = {
        "written_by": SUMMARY_MARKER, "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "command": command or "relit-hands make-phone-video (Python API)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(renderer),
        "seeds": {"seed": seed, "person_seed": person_seed, "render_noise": f"lightstage.view_seed('phone{seed}', "
                                                                              "frame, camera)"},
        "settings": {"frames": frames, "resolution": resolution, "spp": spp, "views": len(cam_ids),
                     "mode": "monocular" if views == 1 else "multi-view", "cameras": cam_ids, "tone": tone,
                     "env": env_info["spec"], "keypoint_noise": {k: (list(v) if isinstance(v, tuple) else v)
                                                                 for k, v in noise.__dict__.items()},
                     "camera": cam_info, "motion": motion_info, "renderer": "mitsuba3 volpath (lightstage)",
                     "max_depth": renderer.max_depth, "boundary": renderer.boundary},
        "exposure": exposure, "camera_response": CAMERA_RESPONSE,
        "person": person.to_json(),
        "counts": {"frames": frames, "cameras": len(cam_ids), "images": n_images, "keypoints": counts,
                   "mask_offsets_px": {str(k): mask_offsets.count(k) for k in sorted(set(mask_offsets))}},
        "files": {"frames": "frames/", "frames_linear": "frames_linear/", "masks": "masks/",
                  "keypoints": "keypoints.json", "cameras": "intrinsics.json" if views == 1 else "views.json",
                  "ground_truth": "ground_truth/", "contact_sheet": "contact_sheet.png"},
        "seconds": {"person": round(person_s, 2), "render": round(render_s, 2),
                    "per_image": round(render_s / n_images, 3),
                    "total": round(time.perf_counter() - t_start, 2)},
        "out": out_name,
    }
    (folder / "capture.json").write_text(_json(summary))
    return summary


def _parent_made(path: Path) -> Path:
    """``path``, its folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _versions(renderer) -> dict:
    from .cli import _versions as cli_versions

    v = cli_versions()
    v["mitsuba_variant"] = renderer.mi.variant()
    return v


# ====================================================================================== CLI


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``make-phone-video`` options."""
    ap.add_argument("--out", required=True, help="capture folder (must be new or empty unless --overwrite)")
    ap.add_argument("--person-seed", type=int_range(0, 2 ** 31 - 1), default=1,
                    help="seed of the person (shape, displacements, skin marks, nail polish); default 1")
    ap.add_argument("--tone", choices=list(TONE_LEVELS), default="medium", help="skin tone of the person")
    ap.add_argument("--frames", type=int_range(1, 100_000), default=100, help="number of frames (default 100)")
    ap.add_argument("--resolution", type=int_range(16, 4096), default=256, help="square image size in pixels")
    ap.add_argument("--spp", type=int_range(1, 1 << 16), default=64, help="path-tracing samples per pixel")
    ap.add_argument("--env", default=None, metavar="SPEC",
                    help=f"environment: FAMILY:SEED of the light library's test split, a .hdr/.exr file or a "
                         f"shipped name (default {DEFAULT_ENV}: the held-out family)")
    ap.add_argument("--views", type=int_range(1, 64), default=1,
                    help="1: hand-held phone (monocular); N >= 2: N static calibrated cameras")
    ap.add_argument("--seed", type=int_range(0, 2 ** 31 - 1), default=0,
                    help="seed of the motion, cameras, environment rotation, tracker and render noise")
    ap.add_argument("--keypoint-noise-px", type=finite_float(0.0, 100.0), default=1.5,
                    help="Gaussian pixel noise of the simulated tracker (default 1.5)")
    ap.add_argument("--variant", default="auto", help="Mitsuba variant: auto, llvm_ad_rgb, cuda_ad_rgb")
    ap.add_argument("--overwrite", action="store_true",
                    help="write into a non-empty --out (the capture's entries replace same-named ones)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args, command: str | None = None) -> int:
    s = make_phone_video(args.out, frames=args.frames, resolution=args.resolution, spp=args.spp,
                         person_seed=args.person_seed, tone=args.tone, env=args.env, views=args.views, seed=args.seed,
                         keypoint_noise_px=args.keypoint_noise_px, variant=args.variant, overwrite=args.overwrite,
                         progress=not args.no_progress, command=command)
    print(f"make-phone-video: {s['counts']['images']} images ({s['settings']['mode']}, "
          f"{s['settings']['resolution']}px, {s['settings']['spp']} spp) in {args.out}; "
          f"{s['seconds']['per_image']:.2f} s/image, {s['seconds']['total']:.1f} s in all")
    return 0


def main(argv=None) -> int:
    from relit_hands.validation import OneLineParser

    ap = OneLineParser(prog="relit-hands make-phone-video", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run_from_args(args, "relit-hands make-phone-video " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
