r"""Geometry stage of ``relit-hands personalize`` (issue #21): the user's hand shape, small surface
displacements and every frame's pose, fitted to tracked 2D keypoints and (optional) hand masks.

Method, and why
---------------
There is no differentiable rasterizer on the CPU machines this must run on (nvdiffrast is CUDA
only), so the geometry is fitted *without* rendering: every term is a closed-form function of
projected 3-D points of the skinned model, differentiated by torch (CPU or CUDA, ``device``):

* **keypoints** -- the model's 21 keypoints (16 joints + 5 fingertip vertices, mapped to
  MediaPipe order by :data:`relit_hands.tracking.KP21_TO_KEYPOINT`) projected by every camera,
  against the tracked 2D keypoints: confidence-weighted Geman-McClure ``rho(r) = s^2 r^2 / (r^2 +
  s^2)`` of the pixel distance ``r`` in units of ``keypoint_sigma`` (``s`` =
  :attr:`FitSettings.robust_scale` per stage, annealed from wide to tight in the pose stages), so
  tracker outliers (a jump, a neighbouring finger's point) saturate instead of pulling;
* **silhouette distance** (masks given) -- ``S`` surface points (a fixed, area-weighted random
  subset of the render mesh's vertices) projected into each view and looked up, by bilinear
  ``grid_sample``, in the mask's *outside* Euclidean distance transform (0 inside the mask, the
  distance in pixels to the nearest mask pixel outside): every surface point -- visible or hidden --
  must project inside the silhouette (the silhouette is the projection of the whole hand); points
  projected outside the image are not judged (a wrist cut by the frame's border);
* **coverage** (masks given) -- the other direction: ``M`` mask pixels drawn afresh every
  iteration, each pulled to its nearest projected surface point (a one-sided chamfer, with a slack
  of half a pixel plus half the projected sample spacing, ``sqrt(mask area / (S / 2))``, so a
  perfectly fitted hand costs nothing), so the projected hand fills the mask (fingers cannot shrink
  inside it); the silhouette distance likewise starts half a pixel past the last mask pixel's
  centre, where the mask's edge is;
* **priors** -- joint limits (the anatomical angles of :mod:`relit_hands.poses` outside
  ``JOINT_LIMITS``, squared hinge in degrees), a weak anatomical pose prior (each angle about a
  relaxed mean: flexion 20 +- 90, abduction 0 +- 12, twist 0 +- 6 degrees; the distal joint's
  flexion about 2/3 of the middle joint's, +- 15 degrees; the flexion's range is the joint limits'
  job -- at +- 45 degrees a fist paid ~30 units, which from one camera the fit traded for a more open
  hand placed nearer: on the 40-frame test capture, started from the true poses, the pose stage
  drifted 13.7 mm from them at +- 45 and 11.3 mm at +- 90), robust temporal smoothness of the pose
  angles, the global rotation (rotation-matrix difference) and the translation between consecutive
  fitted frames (divided by the frame gap), the shape prior (common log-scale and per-bone
  deviations from it, both toward 0 = the base asset) and the displacement prior (L2 on the basis coefficients plus a
  squared hinge on any vertex moving more than :attr:`FitSettings.displacement_limit_mm`).

All pixel distances are measured in "256-pixel units" (pixels x 256 / max(width, height)), so the
weights do not depend on the image size.

Parameters (right hand, base asset ``hand_v2`` -- the personalised asset keeps its topology and
UV atlas):

* ``log_shape`` [16, 2]: natural log of the per-bone (length, girth) scales of
  :func:`relit_hands.hand_model.shape_rest` (0 = the base asset);
* ``displacement`` [K] (millimetres): coefficients of a smooth basis along the shaped rest
  normals; the basis is the K lowest-frequency eigenvectors of the proxy mesh's graph Laplacian
  (940 vertices: a dense eigen-decomposition, milliseconds), each scaled to a peak of 1, carried
  to the render mesh through ``render_proxy_face`` / ``render_proxy_bary`` (where every render
  vertex sits on the proxy) -- a field that is smooth on the surface by construction and exists on
  both meshes, like the displacement field of ``make-phone-video``'s person;
* per frame: anatomical angles [15, 3] (flexion, abduction, twist, radians, in the frames of
  :func:`relit_hands.poses.joint_frames` of the base asset, Euler order of that module; converted
  to the MANO axis-angle ``pose`` [45] for the output), ``global_orient`` [3] (axis-angle about the
  wrist joint) and ``transl`` [3] (metres) -- the parameters of
  :class:`relit_hands.hand_model.HandModel`, so ``HandModel(personalised asset)(pose,
  global_orient, transl)`` reproduces the fitted hand exactly.

Reference frame: with one camera (a phone, only intrinsics known) the camera is the world
(``R = I``, ``t = 0``): the fitted roots are camera coordinates. With calibrated cameras
(``views.json``) the world of the calibration.

Initialisation: the wrist, the thumb CMC and the four finger MCPs of the rest hand are rigid in
the palm; each frame's root comes from ``cv2.solvePnP`` of those six rest points on the tracked
ones (confidence >= 0.3; SQPnP plus both IPPE solutions, in every view; a view with fewer than 4
usable palm points uses all its confident keypoints), with calibrated views also from a 3-D
alignment (Kabsch) to the triangulated palm keypoints, and from the neighbouring frames' roots:
the candidate that best reprojects the keypoints of the hand at the default mild flexion into every
view (palm first, fingers weighted 0.2) wins (:func:`pnp_initialise`).

That single start is not enough from one camera: the palm is nearly planar, so its keypoints fit
two roots -- the hand and its depth mirror (a fist seen from the back or from the front) -- and the
six palm points are not coplanar enough for IPPE to return the pair, so the start was whichever SQPnP
found; scored with the fingers at the default flexion (a fist's fingers are ~90 degrees away) the
mirror often won, and the per-frame optimisation never left it; nor could it bend the fingers of a
fist from the mildly flexed start (seen end-on, a finger ran into hyperextension instead). On the
40-frame 160-px test capture (person 11) the first version ended with 3 of 38 frames 77-133 degrees
off and 3 more stuck above the true pose's cost; on a 98-frame 256-px one (person 4) 9 frames of a
fist stuck at 19-21 px of reprojection error. So the fit starts from several **hypotheses per frame**
(:func:`hypothesis_initialise`, :attr:`FitSettings.hypotheses`): that start, IPPE on the palm's
five coplanar points projected onto their plane, the depth mirror of every PnP solution
(:meth:`_RootCandidates.mirrored`) and the neighbouring frames' starts; each is optimised alone
(fingers first -- from an open and a curled start, the better kept per finger -- then root and
fingers; keypoints and priors), costed by the fit's per-frame terms (silhouettes included), and the
training frames' choice minimises those costs plus the temporal root term between consecutive frames
(dynamic programming: a lone flip between two consistent neighbours pays the temporal term twice).
The fingers then start from the chosen hypothesis' angles.

Stages (Adam with a cosine learning-rate decay; iterations :attr:`FitSettings.iterations`, by
default 100 / 200 / 200 / 100, all scaled by ``iterations_scale``; every frame of a stage in one
batch): ``root`` (global rotation + translation, keypoints only, wide robust scale) -> ``pose``
(+ finger angles, silhouette terms on) -> ``shape`` (+ log shape) -> ``displacement`` (+
displacement coefficients). During the steps the displaced samples move along the *base* rest
normals (:meth:`HandFitModel.rest`; < 0.1 mm from the baked geometry, which uses the shaped normals).
Measured on the project's 2-core CPU machine (shared with another job; one intra-op thread,
:attr:`FitSettings.cpu_threads`): 38 frames at 160 px, about 26 s for the whole geometry (3 s of it
the hypotheses); 98 frames at 256 px, about 63 s (5 s); the cost grows about linearly with frames x
views (mask sizes matter little). Fitted ("training") frames share the shape. Every ``holdout_every``-th frame (default
10: 10 %) is held out: after the training frames are done, the held-out frames are fitted with the
shape and displacements frozen (stages root then pose), each tied by the temporal terms to its
nearest training frames before and after it, which are *fixed* by then (nothing of a held-out frame
flows back into the training frames or the shape) -- their 3-D keypoint error measures how well the
fitted hand explains frames it never saw. Without that tie (:attr:`FitSettings.holdout_temporal`
False; the first version) a held-out frame was the only frame fitted from its own image alone, and
from one camera its depth is weakly determined: on a 40-frame 160-px capture (person 4) the held-out
frames' 3-D keypoint error was twice the fitted frames' (21 vs 10 mm), one of them 35 mm off in
depth; with the tie 8.5 mm (98 frames at 256 px: 9.1 -> 5.9 mm). The tie also carries the
neighbours' own error: on the person-11 capture, whose fist frames' fitted depth is ~20 mm short,
the held-out error rose from 10.5 to 16.9 mm -- to the fitted frames' level (16.4 mm).

Monocular scale and girth. From one camera the hand's absolute size is ambiguous with its distance
(a larger hand farther away projects the same): the shape prior holds the *common* scale at the base
asset's unless the silhouettes' perspective says otherwise, which they barely do. Relative bone
lengths are observable. Girth is not, reliably: the palm's width (the wrist bone's girth spreads
the MCPs) trades off against the hand's rotation about its long axis, and the per-frame poses are
ambiguous in depth, so on the 40-frame 160-px test capture the common girth came out 7 % thin --
while with the *true* poses the same terms recover it to 1 %. So from one camera the common girth's
prior is tight (:attr:`FitSettings.monocular_girth_sigma` = 2 %); calibrated views (``views.json``)
use the same 5 % as lengths.

A measured hand length fixes the size. Perspective projection is unchanged when the whole scene is
scaled about the camera centre, so no monocular term can tell the size; the user can:
:attr:`FitSettings.hand_length_m` (``personalize --hand-length-mm``, a ruler from the wrist crease to
the tip of the middle finger, hand flat) adds ``((L - L_user) / hand_length_sigma_m)^2`` to the shape
prior, ``L`` = :func:`rest_hand_length` of the shaped rest hand (the wrist joint to the middle
fingertip keypoint; the rest hand is flat). Left out, the monocular fits of the six synthetic people
came out 188-198 mm long for hands of 181-199 mm (-1.2 to +3.8 %); from three calibrated views
within 0.1 %.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["BASE_ASSET", "STAGES", "DEFAULT_FLEXION_DEG", "PALM_KEYPOINTS", "FitCameras", "FitData",
           "FitSettings", "GeometryFit", "HandFitModel", "laplacian_basis", "pnp_initialise", "hypothesis_initialise",
           "fit_geometry", "rest_hand_length",
           "bake_asset_arrays", "project"]

BASE_ASSET = "hand_v2"
STAGES = ("root", "pose", "shape", "displacement", "holdout")
DEFAULT_FLEXION_DEG = 10.0
# MediaPipe indices of the rigid palm points: wrist, thumb CMC, index / middle / ring / pinky MCP
PALM_KEYPOINTS = np.array([0, 1, 5, 9, 13, 17])
PNP_MIN_CONFIDENCE = 0.3
FINGER_SCORE_WEIGHT = 0.2        # finger keypoints' weight when scoring root candidates (the palm's: 1)
ROOT_JUMP_M = 0.08               # an initial root this far from its neighbours' median is replaced
# the palm's (nearly) coplanar points: wrist and the four finger MCPs (the thumb's CMC sits off the plane)
PALM_PLANE_KEYPOINTS = np.array([0, 5, 9, 13, 17])
HYPOTHESIS_DEDUP_DEG = 15.0      # hypotheses of a frame closer than this in rotation ...
HYPOTHESIS_DEDUP_M = 0.03        # ... and in translation are one
HYPOTHESIS_FINGER_LR_SCALE = 3.0  # the fingers-only phase of a hypothesis moves the angles this much faster
CURLED_FLEXION_DEG = (60.0, 75.0, 50.0)       # the curled finger start (MCP, PIP, DIP flexion) ...
CURLED_THUMB_FLEXION_DEG = (15.0, 35.0, 35.0)  # ... and the thumb's (CMC, MCP, IP)
# (finger joints [3] in the 15-joint order, MediaPipe keypoints [4]): index, middle, pinky, ring, thumb
FINGER_CHAINS = (([0, 1, 2], [5, 6, 7, 8]), ([3, 4, 5], [9, 10, 11, 12]), ([6, 7, 8], [17, 18, 19, 20]),
                 ([9, 10, 11], [13, 14, 15, 16]), ([12, 13, 14], [1, 2, 3, 4]))


# ============================================================================ data containers


@dataclass
class FitCameras:
    """The cameras every frame is seen by (fixed over the clip), OpenCV convention
    (``x_cam = R x_world + t``; :class:`relit_hands.camera.Camera`).

    ``ids`` [C] camera ids; ``K`` [C, 3, 3], ``R`` [C, 3, 3], ``t`` [C, 3] (metres) float64;
    ``width`` / ``height`` pixels (the same for every view); ``reference``: ``'camera'`` (one
    uncalibrated phone: its camera frame is the world, R = I, t = 0) or ``'world'`` (views.json)."""

    ids: list
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    reference: str = "camera"

    @property
    def count(self) -> int:
        return len(self.ids)

    def camera(self, c: int):
        from relit_hands.camera import Camera

        return Camera(self.K[c], self.R[c], self.t[c], self.width, self.height)

    def to_json(self) -> dict:
        return {"ids": list(self.ids), "reference": self.reference, "width": self.width, "height": self.height,
                "K": self.K.tolist(), "R": self.R.tolist(), "t": self.t.tolist()}


@dataclass
class FitData:
    """What the geometry stage fits, F frames x C views.

    ``frames`` [F] int: the input frame numbers; ``keypoints`` [F, C, 21, 2] float64 pixels
    (MediaPipe order, pixel centres at +0.5); ``confidence`` [F, C, 21] in [0, 1] (0 = not
    detected); ``masks`` [F, C, H, W] bool or None; ``holdout`` [F] bool (held out from the shape
    fit)."""

    frames: np.ndarray
    keypoints: np.ndarray
    confidence: np.ndarray
    masks: np.ndarray | None
    holdout: np.ndarray

    @property
    def count(self) -> int:
        return len(self.frames)


@dataclass
class FitSettings:
    """Knobs of :func:`fit_geometry` (defaults are what ``personalize`` uses).

    Every term is a negative log-likelihood in units of its own standard deviation (so the
    defaults are statements about noise levels, not arbitrary weights): per-frame terms are summed
    over the frames, the shape and displacement priors are counted once, so more frames let the
    data outweigh the priors (the optimiser sees the total divided by the number of frames).

    ``iterations``: Adam steps per stage (x ``iterations_scale``); ``lr``: learning rates per
    parameter group (radians for angles, metres for translations, log-scale for shape, mm for
    displacement coefficients); ``robust_scale``: Geman-McClure scale of the keypoint residual per
    stage, in units of ``keypoint_sigma`` (a pair: annealed geometrically from the first to the second
    over the stage, so fingers far from their start -- a fist from the mildly flexed default -- are
    still pulled before the scale tightens against outliers); sigmas: ``keypoint_sigma`` / ``mask_sigma`` (256-px
    units), ``silhouette_effective_points`` (how many independent measurements a view's silhouette
    term counts as), ``limit_sigma_deg``, ``pose_prior_mean_deg`` / ``pose_prior_sigma_deg``
    (flexion, abduction, twist), ``dip_pip_ratio`` / ``dip_pip_sigma_deg`` (the distal joint flexes
    about 2/3 of the middle one), ``temporal_sigma_deg`` (finger angles per frame),
    ``temporal_root_sigma_deg`` / ``temporal_transl_sigma_m`` per frame (Geman-McClure with scale
    ``temporal_robust_scale`` sigmas for the fingers -- jitter is smoothed, a fast real motion is
    not fought -- and ``temporal_root_robust_scale`` for the root, which must keep the whole hand from
    flipping to its monocular depth-mirror between frames),
    ``shape_common_sigma`` (length, girth) / ``shape_bone_sigma`` (log-scale; from one camera the
    common girth's sigma is ``monocular_girth_sigma``, see the module docstring), ``displacement_sigma_mm`` (per basis coefficient),
    ``displacement_limit_mm`` with ``displacement_limit_sigma_mm``; ``hand_length_m`` (None: unknown)
    with ``hand_length_sigma_m``: a measured hand length, the size prior of the module docstring's last
    paragraph; ``hypotheses``: how many root
    hypotheses per frame :func:`hypothesis_initialise` optimises and chooses from (1: the single
    :func:`pnp_initialise` start, fingers at :data:`DEFAULT_FLEXION_DEG`); ``holdout_temporal``: tie each
    held-out frame by the temporal terms to its nearest fitted frames (fixed: nothing flows back);
    ``cpu_threads``: torch's intra-op threads while fitting on the CPU (None: torch's default) -- the
    fit is thousands of steps on small tensors, and on the project's 2-core machine, shared with another
    job, torch's default 2 threads made it ~20x slower than 1 (every small op waits for the second
    thread to be scheduled: 535 s vs 26 s for the geometry of the 40-frame 160-px test capture, the same
    result); ``weights``: multipliers of the
    terms (1 = as the sigmas say; coverage 3: on the make-phone-video test captures it was what kept
    the fingers from coming out thin against masks that are eroded or dilated by 1-2 px); ``basis_size`` K; ``surface_samples`` S; ``mask_samples`` M;
    ``seed`` (surface subset, mask samples)."""

    iterations: dict = field(default_factory=lambda: {"hypotheses_fingers": 60, "hypotheses": 60, "root": 100,
                                                      "pose": 200, "shape": 200, "displacement": 100,
                                                      "holdout_root": 60, "holdout_pose": 120})
    iterations_scale: float = 1.0
    lr: dict = field(default_factory=lambda: {"global_orient": 0.02, "transl": 0.004, "angles": 0.02,
                                              "log_shape": 0.004, "displacement": 0.05})
    robust_scale: dict = field(default_factory=lambda: {"hypotheses_fingers": (30.0, 5.0), "hypotheses": (5.0, 3.0),
                                                        "root": 10.0, "pose": (10.0, 3.0), "shape": 3.0,
                                                        "displacement": 3.0, "holdout_root": 10.0,
                                                        "holdout_pose": (10.0, 3.0)})
    keypoint_sigma: float = 3.0
    mask_sigma: float = 3.0
    silhouette_effective_points: float = 20.0
    limit_sigma_deg: float = 3.0
    pose_prior_mean_deg: tuple = (20.0, 0.0, 0.0)
    pose_prior_sigma_deg: tuple = (90.0, 12.0, 6.0)
    dip_pip_ratio: float = 0.67
    dip_pip_sigma_deg: float = 15.0
    temporal_sigma_deg: float = 6.0
    temporal_root_sigma_deg: float = 4.0
    temporal_transl_sigma_m: float = 0.005
    temporal_robust_scale: float = 3.0
    temporal_root_robust_scale: float = 10.0
    shape_common_sigma: tuple = (0.05, 0.05)
    monocular_girth_sigma: float = 0.02
    shape_bone_sigma: float = 0.03
    displacement_sigma_mm: float = 0.5
    displacement_limit_mm: float = 2.0
    displacement_limit_sigma_mm: float = 0.1
    hand_length_m: float | None = None
    hand_length_sigma_m: float = 0.002
    weights: dict = field(default_factory=lambda: {"keypoints": 1.0, "silhouette": 1.0, "coverage": 3.0,
                                                   "joint_limits": 1.0, "pose_prior": 1.0, "dip_pip": 1.0,
                                                   "temporal_pose": 1.0, "temporal_root": 1.0, "shape": 1.0,
                                                   "hand_length": 1.0, "displacement": 1.0})
    hypotheses: int = 6
    holdout_temporal: bool = True
    cpu_threads: int | None = 1
    basis_size: int = 48
    surface_samples: int = 2000
    mask_samples: int = 64
    seed: int = 0

    def steps(self, stage: str) -> int:
        return max(1, int(round(self.iterations[stage] * self.iterations_scale)))

    def to_json(self) -> dict:
        out = {}
        for k, v in self.__dict__.items():
            out[k] = dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, tuple) else v)
        return out


@dataclass
class GeometryFit:
    """The result of :func:`fit_geometry` (numpy, float64 unless said).

    ``log_shape`` [16, 2]; ``displacement_coefficients`` [K] (mm); ``render_displacement_m`` [Vr]
    / ``proxy_displacement_m`` [Vp] (float32, metres along the shaped rest normals); per frame
    ``angles_deg`` [F, 15, 3], ``pose`` [F, 45], ``global_orient`` [F, 3], ``transl`` [F, 3] (the
    :class:`HandModel` parameters of the personalised asset); ``keypoint_error_px`` [F]
    (confidence-weighted mean reprojection error, pixels); ``history``: logged loss terms;
    ``seconds`` per stage; ``stages_done``."""

    log_shape: np.ndarray
    displacement_coefficients: np.ndarray
    render_displacement_m: np.ndarray
    proxy_displacement_m: np.ndarray
    angles_deg: np.ndarray
    pose: np.ndarray
    global_orient: np.ndarray
    transl: np.ndarray
    keypoint_error_px: np.ndarray
    history: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    stages_done: list = field(default_factory=list)

    @property
    def shape(self) -> np.ndarray:
        """[16, 2] per-bone (length, girth) scales."""
        return np.exp(self.log_shape)


# ============================================================================ the model


def laplacian_basis(vertices: np.ndarray, faces: np.ndarray, k: int) -> np.ndarray:
    """[V, k] float64: the k lowest-frequency eigenvectors of the uniform graph Laplacian
    ``D - A`` of a mesh (the constant vector first), each scaled to a peak magnitude of 1."""
    from scipy import sparse

    V = len(vertices)
    f = np.asarray(faces, np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    A = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(V, V)).tocsr()
    A.data[:] = 1.0
    L = (sparse.diags(np.asarray(A.sum(1)).ravel()) - A).toarray()
    k = int(min(max(k, 1), V))
    _, vec = np.linalg.eigh(L)
    B = vec[:, :k]
    B = B / np.abs(B).max(0, keepdims=True)
    B *= np.sign(B.sum(0, keepdims=True) + 1e-12)
    return B


def _axis_rotation(axis: int, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    o, one = torch.zeros_like(angle), torch.ones_like(angle)
    if axis == 0:
        m = [one, o, o, o, c, -s, o, s, c]
    elif axis == 1:
        m = [c, o, s, o, one, o, -s, o, c]
    else:
        m = [c, -s, o, s, c, o, o, o, one]
    return torch.stack(m, -1).reshape(*angle.shape, 3, 3)


class HandFitModel:
    """The differentiable hand of the fit: the base asset + log shape + displacement basis.

    ``HandFitModel(asset, device, settings)``; :meth:`rest` shapes (and displaces) the rest hand;
    :meth:`posed` skins it for a batch of frames; :meth:`pose_axis_angle` converts anatomical
    angles to MANO axis-angle. All float32 on ``device``."""

    def __init__(self, asset, device="cpu", settings: FitSettings | None = None):
        from relit_hands.hand_model import vertex_normals
        from relit_hands.poses import ABDUCTION_SIGN, joint_frames, limits_array
        from relit_hands.tracking import KP21_TO_KEYPOINT

        s = settings or FitSettings()
        self.asset = asset
        self.device = torch.device(device)
        dt = torch.float32
        kw = dict(dtype=dt, device=self.device)
        self.parents = [int(p) for p in asset.parents]
        self.rest_joints = torch.as_tensor(asset.joints, **kw)
        self.render_rest = torch.as_tensor(asset.render_vertices, **kw)
        self.render_weights = torch.as_tensor(asset.render_weights, **kw)
        self.proxy_rest = torch.as_tensor(asset.proxy_vertices, **kw)
        self.proxy_weights = torch.as_tensor(asset.proxy_weights, **kw)
        self.render_faces = torch.as_tensor(asset.render_faces.astype(np.int64), device=self.device)
        self.proxy_faces = torch.as_tensor(asset.proxy_faces.astype(np.int64), device=self.device)
        self.tip_ids = torch.as_tensor(asset.tip_vertex_ids.astype(np.int64), device=self.device)
        self.tip_rest = self.render_rest[self.tip_ids]
        self.mediapipe_order = torch.as_tensor(KP21_TO_KEYPOINT.astype(np.int64), device=self.device)
        # displacement basis: proxy Laplacian eigenvectors, carried to the render mesh
        Bp = laplacian_basis(asset.proxy_vertices, asset.proxy_faces, s.basis_size)
        corners = asset.proxy_faces[asset.render_proxy_face]                        # [Vr, 3]
        Br = np.einsum("vk,vkb->vb", asset.render_proxy_bary.astype(np.float64), Bp[corners])
        self.basis_proxy = torch.as_tensor(Bp, **kw)
        self.basis_render = torch.as_tensor(Br, **kw)
        # surface samples: area-weighted random render vertices (+ the 5 tips, always)
        rng = np.random.default_rng(s.seed)
        V = asset.render_vertices.astype(np.float64)
        F = asset.render_faces
        area = 0.5 * np.linalg.norm(np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), axis=1)
        vertex_area = np.bincount(F.ravel(), np.repeat(area / 3.0, 3), minlength=len(V))
        n = int(min(s.surface_samples, len(V)))
        self.sample_ids = torch.as_tensor(np.sort(rng.choice(len(V), n, replace=False,
                                                             p=vertex_area / vertex_area.sum())), device=self.device)
        self.base_normals = vertex_normals(self.render_rest, self.render_faces)
        # anatomical frames and limits
        self.frames = torch.as_tensor(joint_frames(asset), **kw)                   # [15, 3, 3]
        self.abduction_sign = torch.as_tensor(ABDUCTION_SIGN, **kw)
        self.limits_deg = torch.as_tensor(limits_array(), **kw)                     # [15, 3, 2]

    # ------------------------------------------------------------------ rest hand
    def rest(self, log_shape: torch.Tensor, displacement: torch.Tensor | None, full: bool = False) -> dict:
        """Shaped (and displaced) rest hand: ``{'joints' [16, 3], 'samples' [S, 3], 'tips' [5, 3],
        'sample_weights' [S, 16], 'tip_weights' [5, 16], 'render_displacement' [Vr] (metres)}``.

        ``full``: the whole meshes as the baked asset has them (``'render'`` [Vr, 3], ``'proxy'``
        [Vp, 3], ``'proxy_displacement'`` [Vp]): displacement (``displacement`` [K] mm) along the
        normals of the *shaped* rest mesh, as ``make-phone-video``'s person. Without ``full`` (every
        optimisation step) only the samples and tips are shaped and displaced along the *base* rest
        normals -- a shaping of a few per cent turns a normal by a few degrees, so the points differ
        from the baked ones by well under 0.1 mm, and the step is ~20x cheaper."""
        from relit_hands.hand_model import shape_rest, vertex_normals

        shape = torch.exp(log_shape)[None]
        out = {}
        if full:
            J, (rv, pv) = shape_rest(shape, self.rest_joints, self.tip_rest, self.parents,
                                     [(self.render_weights, self.render_rest), (self.proxy_weights, self.proxy_rest)])
            rv, pv = rv[0], pv[0]
            dr = torch.zeros(rv.shape[0], dtype=rv.dtype, device=rv.device)
            dp = torch.zeros(pv.shape[0], dtype=pv.dtype, device=pv.device)
            if displacement is not None:
                dr = self.basis_render @ displacement * 1e-3
                dp = self.basis_proxy @ displacement * 1e-3
                rv = rv + dr[:, None] * vertex_normals(rv, self.render_faces)
                pv = pv + dp[:, None] * vertex_normals(pv, self.proxy_faces)
            out.update(render=rv, proxy=pv, render_displacement=dr, proxy_displacement=dp)
            samples, tips = rv[self.sample_ids], rv[self.tip_ids]
        else:
            ids = torch.cat([self.sample_ids, self.tip_ids])
            J, (sv,) = shape_rest(shape, self.rest_joints, self.tip_rest, self.parents,
                                  [(self.render_weights[ids], self.render_rest[ids])])
            sv = sv[0]
            if displacement is not None:
                dr = self.basis_render @ displacement * 1e-3
                sv = sv + dr[ids, None] * self.base_normals[ids]
                out["render_displacement"] = dr
            samples, tips = sv[:-5], sv[-5:]
        out.update(joints=J[0], samples=samples, tips=tips, sample_weights=self.render_weights[self.sample_ids],
                   tip_weights=self.render_weights[self.tip_ids])
        return out

    # ------------------------------------------------------------------ pose
    def world_rotations(self, angles: torch.Tensor) -> torch.Tensor:
        """Anatomical angles [F, 15, 3] (radians: flexion, abduction, twist) -> per-joint rotations
        in the rest world axes [F, 15, 3, 3] (``F_j R_x(flex) R_y(sign * abd) R_z(twist) F_j^T``,
        :mod:`relit_hands.poses`)."""
        Rl = (_axis_rotation(0, angles[..., 0]) @ _axis_rotation(1, angles[..., 1] * self.abduction_sign)
              @ _axis_rotation(2, angles[..., 2]))
        return self.frames @ Rl @ self.frames.transpose(-1, -2)

    def pose_axis_angle(self, angles: torch.Tensor) -> torch.Tensor:
        """MANO pose [F, 45] (axis-angle, rest world axes) of anatomical angles [F, 15, 3] radians."""
        from relit_hands.poses import matrix_to_axis_angle

        return matrix_to_axis_angle(self.world_rotations(angles).double()).reshape(angles.shape[0], 45)

    def posed(self, rest: dict, angles: torch.Tensor, global_orient: torch.Tensor, transl: torch.Tensor,
              samples: bool = True) -> tuple:
        """Skin the rest hand for F frames: (keypoints [F, 21, 3] MediaPipe order, surface samples
        [F, S, 3] -- None with ``samples=False``), world metres."""
        from relit_hands.hand_model import rigid_transforms, rodrigues, skin

        rot = torch.cat([rodrigues(global_orient)[:, None], self.world_rotations(angles)], 1)   # [F, 16, 3, 3]
        G, A = rigid_transforms(rot, rest["joints"], self.parents)
        joints = G[..., :3, 3]
        tips = skin(rest["tip_weights"], A, rest["tips"])
        pts = skin(rest["sample_weights"], A, rest["samples"]) + transl[:, None] if samples else None
        kp = torch.cat([joints, tips], 1) + transl[:, None]
        return kp[:, self.mediapipe_order], pts

    def limit_violation_deg(self, angles: torch.Tensor) -> torch.Tensor:
        """[F, 15, 3] degrees outside the joint limits (0 inside)."""
        deg = torch.rad2deg(angles)
        return torch.relu(self.limits_deg[..., 0] - deg) + torch.relu(deg - self.limits_deg[..., 1])


def project(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> tuple:
    """World points [F, N, 3] seen by C cameras (K, R [C, 3, 3], t [C, 3]) -> (pixels [F, C, N, 2],
    depth [F, C, N]); depth is clamped to >= 1 mm before the division."""
    pc = torch.einsum("cij,fnj->fcni", R, points) + t[None, :, None, :]
    z = pc[..., 2]
    uvw = torch.einsum("cij,fcnj->fcni", K, pc)
    return uvw[..., :2] / z.clamp_min(1e-3)[..., None], z


def _geman_mcclure(r2: torch.Tensor, scale: float) -> torch.Tensor:
    s2 = scale * scale
    return s2 * r2 / (r2 + s2)


def _huber(x: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    a = x.abs()
    return torch.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta))


# ============================================================================ initialisation


def _rest_keypoints(model: HandFitModel, flexion_deg: float) -> np.ndarray:
    """[21, 3] MediaPipe-order keypoints of the base hand at the default flexion (root identity)."""
    with torch.no_grad():
        rest = model.rest(torch.zeros(16, 2, device=model.device), None)
        angles = _default_angles(1, flexion_deg, model.device)
        kp, _ = model.posed(rest, angles, torch.zeros(1, 3, device=model.device),
                            torch.zeros(1, 3, device=model.device))
    return kp[0].double().cpu().numpy()


def _default_angles(n: int, flexion_deg: float, device) -> torch.Tensor:
    a = torch.zeros(n, 15, 3, device=device)
    a[..., 0] = math.radians(flexion_deg)
    return a


def _reprojection_cost(obj: np.ndarray, img: np.ndarray, conf: np.ndarray, K: np.ndarray, rvec, tvec,
                       scale: float) -> float:
    import cv2

    R, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    pc = obj @ R.T + np.asarray(tvec, np.float64).reshape(1, 3)
    if (pc[:, 2] <= 1e-3).any():
        return float("inf")
    px = pc @ K.T
    px = px[:, :2] / px[:, 2:]
    r2 = ((px - img) ** 2).sum(1)
    return float((conf * scale ** 2 * r2 / (r2 + scale ** 2)).sum())


def _pnp_candidates(obj: np.ndarray, img: np.ndarray, K: np.ndarray, flags: tuple | None = None) -> list:
    """(rvec, tvec) candidates of ``cv2.solvePnPGeneric``: SQPnP and both IPPE solutions (``flags``:
    the solvers; IPPE answers only for coplanar object points)."""
    import cv2

    out = []
    for flag in flags or (cv2.SOLVEPNP_SQPNP, cv2.SOLVEPNP_IPPE):
        try:
            n, rvecs, tvecs, _ = cv2.solvePnPGeneric(np.ascontiguousarray(obj), np.ascontiguousarray(img), K, None,
                                                     flags=flag)
        except cv2.error:
            continue
        out += [(np.asarray(r, np.float64).reshape(3), np.asarray(t, np.float64).reshape(3))
                for r, t in zip(rvecs[:n], tvecs[:n])]
    return out


def triangulate(keypoints: np.ndarray, confidence: np.ndarray, cams: FitCameras,
                min_confidence: float = PNP_MIN_CONFIDENCE) -> tuple:
    """Confidence-weighted linear (DLT) triangulation of one frame's keypoints seen by C >= 2
    calibrated views: ``keypoints`` [C, 21, 2], ``confidence`` [C, 21] -> (points [21, 3] world,
    ok [21] bool: seen by >= 2 views with ``min_confidence`` and in front of them)."""
    P = np.einsum("cij,cjk->cik", cams.K, np.concatenate([cams.R, cams.t[:, :, None]], 2))     # [C, 3, 4]
    pts = np.zeros((keypoints.shape[1], 3))
    ok = np.zeros(keypoints.shape[1], bool)
    for k in range(keypoints.shape[1]):
        views = np.flatnonzero(confidence[:, k] >= min_confidence)
        if len(views) < 2:
            continue
        rows = []
        for c in views:
            x, y = keypoints[c, k]
            w = confidence[c, k]
            rows += [w * (x * P[c, 2] - P[c, 0]), w * (y * P[c, 2] - P[c, 1])]
        _, _, vt = np.linalg.svd(np.asarray(rows))
        X = vt[-1]
        if abs(X[3]) < 1e-12:
            continue
        X = X[:3] / X[3]
        depth = np.einsum("cij,j->ci", cams.R[views], X)[:, 2] + cams.t[views, 2]
        if (depth > 0).all():
            pts[k], ok[k] = X, True
    return pts, ok


def _kabsch(src: np.ndarray, dst: np.ndarray) -> tuple:
    """Rotation R and translation t minimising |R src + t - dst|^2 (points [N, 3], N >= 3)."""
    cs, cd = src.mean(0), dst.mean(0)
    H = (src - cs).T @ (dst - cd)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return R, cd - R @ cs


class _RootCandidates:
    """Root candidates of every frame and their score (the robust reprojection of the mildly flexed
    rest hand's keypoints in every view; :func:`pnp_initialise`)."""

    def __init__(self, model: HandFitModel, data: FitData, cams: FitCameras, flexion_deg: float):
        self.data, self.cams = data, cams
        self.kp_rest = _rest_keypoints(model, flexion_deg)                  # [21, 3]
        self.J0 = model.rest_joints[0].double().cpu().numpy()
        self.unit = max(cams.width, cams.height) / 256.0
        self.finger_weight = np.full(21, FINGER_SCORE_WEIGHT)
        self.finger_weight[PALM_KEYPOINTS] = 1.0                             # the rigid palm counts most
        # the palm's plane (wrist and the four finger MCPs) in the rest frame: centre and normal
        pts = self.kp_rest[PALM_PLANE_KEYPOINTS]
        self.palm_centre = pts.mean(0)
        self.palm_normal = np.linalg.svd(pts - self.palm_centre)[2][2]

    def score(self, f: int, Rgo: np.ndarray, tw: np.ndarray) -> float:
        import cv2

        data, cams = self.data, self.cams
        cost = 0.0
        conf = data.confidence[f] * self.finger_weight
        for c2 in range(cams.count):                              # score in every view
            m = conf[c2] > 0
            if not m.any():
                continue
            Rv = cams.R[c2] @ Rgo
            tv = cams.R[c2] @ (tw + self.J0 - Rgo @ self.J0) + cams.t[c2]
            cost += _reprojection_cost(self.kp_rest[m], data.keypoints[f, c2][m], conf[c2][m], cams.K[c2],
                                       cv2.Rodrigues(Rv)[0], tv, 20.0 * self.unit)
        return cost

    def _to_world(self, c: int, Rpc: np.ndarray, tpc: np.ndarray) -> tuple:
        """(global rotation, transl) in the world of a camera-c pose ``x_cam = Rpc x_rest + tpc``."""
        cams = self.cams
        Rgo = cams.R[c].T @ Rpc                                     # rest -> world rotation
        # x_world = Rgo (x - J0) + J0 + transl  and  x_world = Rc^T (Rpc x + tpc - tc)
        return Rgo, cams.R[c].T @ (tpc - cams.t[c]) + Rgo @ self.J0 - self.J0

    def mirrored(self, Rpc: np.ndarray, tpc: np.ndarray) -> tuple:
        """The depth mirror of a camera-frame pose of the hand: the palm reflected through the plane
        through its centre perpendicular to the viewing ray (``M = I - 2 r r^T``), made a rotation
        again by reflecting the rest hand through its own palm plane (``S = I - 2 n n^T``): the
        palm's points project (nearly) where they did, but the hand faces the other way -- the
        ambiguity of a planar palm (IPPE's second solution; a fist seen from the back)."""
        p = Rpc @ self.palm_centre + tpc
        r = p / max(np.linalg.norm(p), 1e-9)
        M = np.eye(3) - 2.0 * np.outer(r, r)
        S = np.eye(3) - 2.0 * np.outer(self.palm_normal, self.palm_normal)
        R2 = M @ Rpc @ S
        return R2, p - R2 @ self.palm_centre

    def candidates(self, f: int, extended: bool = False) -> list:
        """[(Rgo, transl, how)] of frame f: SQPnP + IPPE of each view's confident palm keypoints
        (:func:`_pnp_candidates`), the triangulated palm (2 or more calibrated views); ``extended``
        adds IPPE on the palm's five (nearly) coplanar points projected onto their plane and the depth
        mirror (:meth:`mirrored`) of every PnP solution."""
        import cv2

        data, cams = self.data, self.cams
        conf = data.confidence[f]                                   # [C, 21]
        cands = []
        for c in range(cams.count):
            sel, how = PALM_KEYPOINTS[conf[c, PALM_KEYPOINTS] >= PNP_MIN_CONFIDENCE], "palm"
            if len(sel) < 4:
                sel, how = np.flatnonzero(conf[c] >= PNP_MIN_CONFIDENCE), "all keypoints"
                if len(sel) < 4:
                    continue
            img = data.keypoints[f, c].astype(np.float64)
            sols = [(rv, tv, f"pnp {how} ({cams.ids[c]})") for rv, tv in _pnp_candidates(self.kp_rest[sel], img[sel],
                                                                                          cams.K[c])]
            if extended:
                plane = PALM_PLANE_KEYPOINTS[conf[c, PALM_PLANE_KEYPOINTS] >= PNP_MIN_CONFIDENCE]
                if len(plane) >= 4:
                    n = self.palm_normal
                    obj = self.kp_rest[plane] - np.outer((self.kp_rest[plane] - self.palm_centre) @ n, n)
                    sols += [(rv, tv, f"ippe palm plane ({cams.ids[c]})")
                             for rv, tv in _pnp_candidates(obj, img[plane], cams.K[c], (cv2.SOLVEPNP_IPPE,))]
            for rvec, tvec, label in sols:
                Rpc = cv2.Rodrigues(rvec)[0]
                cands.append((*self._to_world(c, Rpc, tvec), label))
                if extended:
                    cands.append((*self._to_world(c, *self.mirrored(Rpc, tvec)), label + " mirrored"))
        if cams.count >= 2:
            X, ok = triangulate(data.keypoints[f], conf, cams)
            sel = PALM_KEYPOINTS[ok[PALM_KEYPOINTS]]
            if len(sel) >= 3:
                Rgo, t = _kabsch(self.kp_rest[sel], X[sel])                # x_world = Rgo x + t
                cands.append((Rgo, t + Rgo @ self.J0 - self.J0, "triangulated palm"))
        return cands


def pnp_initialise(model: HandFitModel, data: FitData, cams: FitCameras,
                   flexion_deg: float = DEFAULT_FLEXION_DEG) -> tuple:
    """Per-frame root (module docstring): (global_orient [F, 3], transl [F, 3], method [F] str) in
    the fit's reference frame -- a single hypothesis per frame (:func:`hypothesis_initialise` keeps
    several).

    Candidates per frame: every view with 4 or more palm keypoints of confidence >= 0.3 (else all
    its confident keypoints) proposes SQPnP + IPPE solutions; with 2 or more calibrated views the
    keypoints are also triangulated (:func:`triangulate`) and the rest palm aligned to them
    (Kabsch); finally the neighbouring frames' chosen roots. Each candidate, in the world, is scored
    by the robust reprojection of the 21 keypoints of the mildly flexed rest hand in *every* view,
    the fingers' (not rigid) weighted :data:`FINGER_SCORE_WEIGHT`; the best wins. A root more than
    :data:`ROOT_JUMP_M` from the median of its window of 5 frames' (one view's depth-ambiguous PnP)
    is replaced by the best-scoring neighbour's."""
    import cv2

    rc = _RootCandidates(model, data, cams, flexion_deg)
    score = rc.score
    F = data.count
    best = [None] * F
    for f in range(F):
        for Rgo, tw, how in rc.candidates(f):
            cost = score(f, Rgo, tw)
            if best[f] is None or cost < best[f][3]:
                best[f] = (Rgo, tw, how, cost)
    if all(b is None for b in best):
        raise ValueError("no frame has 4 or more keypoints with confidence >= 0.3: cannot place the hand")
    # neighbours' roots as candidates (twice over: good roots spread to their neighbours)
    for _ in range(2):
        for f in range(F):
            for g in (f - 1, f + 1):
                if 0 <= g < F and best[g] is not None:
                    cost = score(f, best[g][0], best[g][1])
                    if best[f] is None or cost < best[f][3]:
                        best[f] = (best[g][0], best[g][1], f"from frame {int(data.frames[g])}", cost)
    # a root far from its neighbours' (a single view's depth-ambiguous PnP) takes the best neighbour's
    tr = np.stack([b[1] for b in best])
    for f in range(F):
        window = list(range(max(0, f - 2), min(F, f + 3)))           # itself included: a robust median
        near = [g for g in window if g != f]
        if near and np.linalg.norm(tr[f] - np.median(tr[window], 0)) > ROOT_JUMP_M:
            g = min(near, key=lambda g: score(f, best[g][0], best[g][1]))
            best[f] = (best[g][0], best[g][1], f"from frame {int(data.frames[g])} (own root {ROOT_JUMP_M} m off)",
                       score(f, best[g][0], best[g][1]))
    go = np.stack([cv2.Rodrigues(b[0])[0].reshape(3) for b in best])
    tr = np.stack([b[1] for b in best])
    return go, tr, [b[2] for b in best]


def _rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def hypothesis_initialise(model: HandFitModel, data: FitData, cams: FitCameras, settings: FitSettings | None = None,
                          history: list | None = None, progress: bool = False,
                          flexion_deg: float = DEFAULT_FLEXION_DEG) -> dict:
    """Per-frame root *and finger angles* from several hypotheses per frame (module docstring,
    "Initialisation"): ``{'global_orient' [F, 3], 'transl' [F, 3], 'angles' [F, 15, 3] radians,
    'method' [F] str, 'hypotheses' [F] int, 'unary' [F] float (the chosen hypothesis' cost)}``.

    1. Hypotheses of frame f (at most :attr:`FitSettings.hypotheses`, ranked by the
       :func:`pnp_initialise` score, none within :data:`HYPOTHESIS_DEDUP_DEG` degrees and
       :data:`HYPOTHESIS_DEDUP_M` of a better one): the single-hypothesis start of
       :func:`pnp_initialise` (always kept), every candidate of :meth:`_RootCandidates.candidates`
       with the palm-plane IPPE pair and the depth mirror of each PnP solution, and the neighbouring
       frames' starts.
    2. Every hypothesis of every frame is optimised on its own, all in one batch, on the keypoints
       (robust) and the joint-limit, pose and dip / pip priors: first the finger angles alone with the
       root held (``iterations['hypotheses_fingers']`` Adam steps at :data:`HYPOTHESIS_FINGER_LR_SCALE`
       times the angles' learning rate, robust scale ``robust_scale['hypotheses_fingers']``), from the
       mild default flexion and from a curled hand (:func:`_curled_angles`), keeping per finger the start
       whose share of the cost is lower (:func:`_finger_costs`); then root and fingers together
       (``iterations['hypotheses']``, ``robust_scale['hypotheses']``). Each is then costed by the
       fit's per-frame terms (:func:`_frame_terms`: keypoints at the final robust scale, silhouette and
       coverage when masks are given, the priors).
    3. The training frames' choice minimises the sum of those costs plus the fit's robust temporal
       root term between consecutive frames (dynamic programming over the hypotheses: an isolated flip
       pays the temporal term twice over); a held-out frame then takes the hypothesis that is cheapest
       with its fixed training neighbours' choices (nothing of it reaches the training frames).

    On the CPU torch runs with :attr:`FitSettings.cpu_threads` intra-op threads."""
    st = settings or FitSettings()
    with _intra_op_threads(st.cpu_threads if model.device.type == "cpu" else None):
        return _hypothesis_initialise(model, data, cams, st, history, progress, flexion_deg)


@contextlib.contextmanager
def _intra_op_threads(n: int | None):
    """torch's intra-op threads set to ``n`` inside the block (None: unchanged; see
    :attr:`FitSettings.cpu_threads`)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None:
            torch.set_num_threads(old)


def _hypothesis_initialise(model: HandFitModel, data: FitData, cams: FitCameras, st: FitSettings,
                           history: list | None, progress: bool, flexion_deg: float) -> dict:
    from relit_hands.hand_model import rodrigues

    dev = model.device
    F = data.count
    go0, tr0, how0 = pnp_initialise(model, data, cams, flexion_deg)
    rc = _RootCandidates(model, data, cams, flexion_deg)
    R0 = [_rodrigues_np(g) for g in go0]
    K = max(1, int(st.hypotheses))
    hyps = []                                                      # per frame: [(Rgo, tw, how)]
    for f in range(F):
        own = [(R0[f], tr0[f], "start: " + how0[f])]
        pool = rc.candidates(f, extended=True)
        pool += [(R0[g], tr0[g], f"frame {int(data.frames[g])}'s start") for g in (f - 1, f + 1) if 0 <= g < F]
        pool.sort(key=lambda c: rc.score(f, c[0], c[1]))
        kept = list(own)
        for Rgo, tw, how in pool:
            if len(kept) >= K:
                break
            if all(_rotation_angle_deg(Rgo, k[0]) > HYPOTHESIS_DEDUP_DEG
                   or np.linalg.norm(tw - k[1]) > HYPOTHESIS_DEDUP_M for k in kept):
                kept.append((Rgo, tw, how))
        hyps.append(kept)
    owner = np.concatenate([[f] * len(h) for f, h in enumerate(hyps)])          # [H] frame of each hypothesis
    flat = [h for hs in hyps for h in hs]
    H = len(flat)
    state = {"angles": _default_angles(H, flexion_deg, dev),
             "global_orient": torch.as_tensor(np.stack([_rotvec_np(h[0]) for h in flat]), dtype=torch.float32,
                                              device=dev),
             "transl": torch.as_tensor(np.stack([h[1] for h in flat]), dtype=torch.float32, device=dev),
             "log_shape": torch.zeros(16, 2, device=dev),
             "displacement": torch.zeros(model.basis_render.shape[1], device=dev)}
    kp_only = FitData(data.frames, data.keypoints, data.confidence, None, data.holdout)
    tg_h = _Targets(kp_only, owner, cams, dev)
    if K > 1:
        hist = [] if history is None else history
        gen = torch.Generator().manual_seed(st.seed)
        # the fingers first, the root held where the palm put it (a fist's fingers are ~90 degrees from the
        # start: they must get there before the root turns to explain them), each finger from two starts --
        # open and curled: seen end-on, a finger bends toward or away from the camera alike at first, and
        # the open start can run into hyperextension -- keeping, per finger, the start that explains its
        # keypoints better (the fingers are independent given the root); then everything together
        both = {"angles": torch.cat([_default_angles(H, flexion_deg, dev), _curled_angles(H, dev)]),
                "global_orient": state["global_orient"].repeat(2, 1), "transl": state["transl"].repeat(2, 1),
                "log_shape": state["log_shape"], "displacement": state["displacement"]}
        tg_2 = _Targets(kp_only, np.concatenate([owner, owner]), cams, dev)
        _run_stage("hypotheses_fingers", st.steps("hypotheses_fingers"), model, both, np.arange(2 * H), tg_2, st,
                   ("angles",), False, False, False, hist, progress, gen, lr_scale=HYPOTHESIS_FINGER_LR_SCALE)
        fscale = st.robust_scale["hypotheses_fingers"]
        with torch.no_grad():
            cost = _finger_costs(model, model.rest(state["log_shape"], None), both, tg_2,
                                 float(fscale if np.isscalar(fscale) else fscale[-1]), st)     # [2H, 5]
            curled = cost[H:] < cost[:H]                                                       # [H, 5]
            angles = both["angles"][:H].clone()
            for i, (joints, _) in enumerate(FINGER_CHAINS):
                j = torch.as_tensor(joints, device=dev)
                angles[:, j] = torch.where(curled[:, i, None, None], both["angles"][H:][:, j], angles[:, j])
            state["angles"] = angles
        _run_stage("hypotheses", st.steps("hypotheses"), model, state, np.arange(H), tg_h, st,
                   ("global_orient", "transl", "angles"), False, False, False, hist, progress, gen)
    # each hypothesis' cost: the fit's per-frame terms at the final robust scale (silhouettes too)
    scale = st.robust_scale["hypotheses"]
    final_scale = float(scale if np.isscalar(scale) else scale[-1])
    unary = np.zeros(H)
    tg_all = _Targets(data, np.arange(F), cams, dev)
    with torch.no_grad():
        rest = model.rest(state["log_shape"], None)
        rank = np.concatenate([np.arange(len(h)) for h in hyps])
        first = np.concatenate([[0], np.cumsum([len(h) for h in hyps])[:-1]])
        for k in range(max(len(h) for h in hyps)):
            pick = np.array([first[f] + min(k, len(hyps[f]) - 1) for f in range(F)])
            sel = torch.as_tensor(pick, device=dev)
            params = {n: state[n][sel] for n in ("angles", "global_orient", "transl")}
            terms = _frame_terms(model, rest, params, tg_all, final_scale, st, True,
                                 torch.Generator().manual_seed(st.seed))
            cost = sum(st.weights.get(n, 1.0) * v for n, v in terms.items()).double().cpu().numpy()
            here = rank[pick] == k
            unary[pick[here]] = cost[here]
        Rh = rodrigues(state["global_orient"]).double()
        th = state["transl"].double()

        def pair(ia: np.ndarray, ib: np.ndarray, gap: float) -> np.ndarray:
            """[len(ia), len(ib)] temporal root cost between hypotheses (indices into the flat list)."""
            ia_t, ib_t = torch.as_tensor(ia, device=dev), torch.as_tensor(ib, device=dev)
            _, root = _temporal_pair(st, torch.zeros(1, 1, 15, 3, dtype=torch.float64, device=dev),
                                     torch.zeros(1, 1, 15, 3, dtype=torch.float64, device=dev),
                                     Rh[ia_t][:, None], Rh[ib_t][None], th[ia_t][:, None], th[ib_t][None],
                                     torch.full((1, 1), float(gap), dtype=torch.float64, device=dev))
            return st.weights.get("temporal_root", 1.0) * root.cpu().numpy()

    members = [np.flatnonzero(owner == f) for f in range(F)]
    choice = np.zeros(F, int)                                      # index into the flat list
    train = np.flatnonzero(~data.holdout)
    held = np.flatnonzero(data.holdout)
    # dynamic programming (Viterbi) over the training frames
    if len(train):
        acc = unary[members[train[0]]].copy()
        back = []
        for a_, b_ in zip(train[:-1], train[1:]):
            gap = max(1.0, float(data.frames[b_] - data.frames[a_]))
            tot = acc[:, None] + pair(members[a_], members[b_], gap)
            back.append(tot.argmin(0))
            acc = tot.min(0) + unary[members[b_]]
        j = int(acc.argmin())
        for step in range(len(train) - 1, -1, -1):
            choice[train[step]] = members[train[step]][j]
            if step:
                j = int(back[step - 1][j])
    for f in held:
        cost = unary[members[f]].copy()
        for side in (-1, 1):
            nb = train[train < f] if side < 0 else train[train > f]
            if len(nb):
                g = int(nb[-1] if side < 0 else nb[0])
                gap = max(1.0, float(abs(data.frames[g] - data.frames[f])))
                cost += pair(np.array([choice[g]]), members[f], gap)[0]
        choice[f] = members[f][int(cost.argmin())]
    method = []
    for f in range(F):
        j = int(choice[f] - members[f][0])
        method.append(f"hypothesis {j + 1} of {len(members[f])}: {hyps[f][j][2]}")
    sel = torch.as_tensor(choice, device=dev)
    return {"global_orient": state["global_orient"][sel].double().cpu().numpy(),
            "transl": state["transl"][sel].double().cpu().numpy(),
            "angles": state["angles"][sel].clone(), "method": method,
            "hypotheses": np.array([len(h) for h in hyps]), "unary": unary[choice]}


def _curled_angles(n: int, device) -> torch.Tensor:
    """[n, 15, 3] radians: every finger curled (:data:`CURLED_FLEXION_DEG`), the thumb
    :data:`CURLED_THUMB_FLEXION_DEG` -- the second finger start of :func:`hypothesis_initialise`."""
    a = torch.zeros(n, 15, 3, device=device)
    for joints, _ in FINGER_CHAINS[:4]:
        a[:, joints, 0] = torch.deg2rad(torch.as_tensor(CURLED_FLEXION_DEG, dtype=a.dtype, device=device))
    a[:, FINGER_CHAINS[4][0], 0] = torch.deg2rad(torch.as_tensor(CURLED_THUMB_FLEXION_DEG, dtype=a.dtype,
                                                                 device=device))
    return a


def _finger_costs(model: HandFitModel, rest: dict, params: dict, tg: _Targets, robust_scale: float,
                  settings: FitSettings) -> torch.Tensor:
    """[F, 5] each finger's (:data:`FINGER_CHAINS`) share of the per-frame cost: its keypoints' robust
    reprojection (all views) + its joints' limit, pose-prior and dip / pip terms (weighted)."""
    st = settings
    w = st.weights
    kp, _ = model.posed(rest, params["angles"], params["global_orient"], params["transl"], samples=False)
    px, _ = project(kp, tg.K, tg.R, tg.t)
    r2 = ((px - tg.kp) ** 2).sum(-1) / (tg.unit * st.keypoint_sigma) ** 2
    per_kp = w.get("keypoints", 1.0) * (tg.conf * _geman_mcclure(r2, robust_scale)).sum(1)          # [F, 21]
    deg = torch.rad2deg(params["angles"])
    mean = torch.as_tensor(st.pose_prior_mean_deg, dtype=deg.dtype, device=deg.device)
    sig = torch.as_tensor(st.pose_prior_sigma_deg, dtype=deg.dtype, device=deg.device)
    per_joint = (w.get("pose_prior", 1.0) * (((deg - mean) / sig) ** 2).sum(-1)
                 + w.get("joint_limits", 1.0) * ((model.limit_violation_deg(params["angles"]) / st.limit_sigma_deg) ** 2
                                                 ).sum(-1))                                          # [F, 15]
    out = []
    for joints, kps in FINGER_CHAINS:
        c = per_kp[:, kps].sum(1) + per_joint[:, joints].sum(1)
        if joints[1] in _PIP_JOINTS:
            c = c + w.get("dip_pip", 1.0) * ((deg[:, joints[2], 0] - st.dip_pip_ratio * deg[:, joints[1], 0])
                                             / st.dip_pip_sigma_deg) ** 2
        out.append(c)
    return torch.stack(out, 1)


def _rodrigues_np(rotvec) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(rotvec, np.float64).reshape(3))[0]


def _rotvec_np(R) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(R, np.float64))[0].reshape(3)


# ============================================================================ the fit


class _Targets:
    """Per-group tensors of the observations (keypoints, confidences, masks' distance transforms
    and pixel lists) on the fit's device."""

    def __init__(self, data: FitData, idx: np.ndarray, cams: FitCameras, device):
        from scipy import ndimage

        dev = torch.device(device)
        self.unit = max(cams.width, cams.height) / 256.0
        self.kp = torch.as_tensor(data.keypoints[idx], dtype=torch.float32, device=dev)
        self.conf = torch.as_tensor(data.confidence[idx], dtype=torch.float32, device=dev)
        self.K = torch.as_tensor(cams.K, dtype=torch.float32, device=dev)
        self.R = torch.as_tensor(cams.R, dtype=torch.float32, device=dev)
        self.t = torch.as_tensor(cams.t, dtype=torch.float32, device=dev)
        self.W, self.H = cams.width, cams.height
        fr = data.frames[idx].astype(np.float64)
        gaps = np.diff(fr) if len(fr) > 1 else np.zeros(0)
        self.gap = torch.as_tensor(np.maximum(gaps, 1.0), dtype=torch.float32, device=dev)
        self.has_masks = data.masks is not None
        if not self.has_masks:
            return
        masks = data.masks[idx]                                        # [F, C, H, W]
        Fn, C = masks.shape[:2]
        dts, pix, counts = [], [], []
        for f in range(Fn):
            for c in range(C):
                m = masks[f, c]
                dts.append(ndimage.distance_transform_edt(~m) if m.any() else np.zeros(m.shape))
                rows, cols = np.nonzero(m)
                pix.append(np.stack([cols + 0.5, rows + 0.5], 1))
                counts.append(len(rows))
        self.dt = torch.as_tensor(np.stack(dts)[:, None], dtype=torch.float32, device=dev)     # [F*C, 1, H, W]
        self.mask_pixels = torch.as_tensor(np.concatenate(pix) if pix else np.zeros((0, 2)), dtype=torch.float32,
                                           device=dev)
        counts = np.asarray(counts)
        self.mask_count = torch.as_tensor(counts, dtype=torch.float32, device=dev)
        self.mask_offset = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=torch.long, device=dev)
        self.mask_valid = torch.as_tensor(counts > 0, dtype=torch.float32, device=dev)

    def sample_mask_pixels(self, m: int, gen: torch.Generator) -> torch.Tensor:
        """[F*C, m, 2] mask pixel centres drawn uniformly (with replacement) from each mask."""
        n = self.mask_count.shape[0]
        u = torch.rand(n, m, generator=gen, device="cpu").to(self.mask_count.device)
        idx = (u * self.mask_count[:, None]).long().clamp_max((self.mask_count[:, None] - 1).clamp_min(0).long())
        idx = idx + self.mask_offset[:, None]
        if self.mask_pixels.shape[0] == 0:
            return torch.zeros(n, m, 2, device=self.mask_count.device)
        return self.mask_pixels[idx.clamp_max(self.mask_pixels.shape[0] - 1)]


def _frame_terms(model: HandFitModel, rest: dict, params: dict, tg: _Targets, robust_scale: float,
                 settings: FitSettings, silhouettes: bool, gen: torch.Generator) -> dict:
    """The per-frame loss terms (module docstring), each [F] (summed over the frame's views, keypoints
    and joints): keypoints, silhouette and coverage (``silhouettes`` and masks), joint limits, pose prior,
    dip / pip."""
    st = settings
    angles, go, transl = params["angles"], params["global_orient"], params["transl"]
    Fn = angles.shape[0]
    use_sil = silhouettes and tg.has_masks
    kp, samples = model.posed(rest, angles, go, transl, samples=use_sil)
    px, _ = project(kp, tg.K, tg.R, tg.t)                             # [F, C, 21, 2]
    r2 = ((px - tg.kp) ** 2).sum(-1) / (tg.unit * st.keypoint_sigma) ** 2
    terms = {"keypoints": (tg.conf * _geman_mcclure(r2, robust_scale)).sum((1, 2))}
    if use_sil:
        sp, _ = project(samples, tg.K, tg.R, tg.t)                    # [F, C, S, 2]
        C, S = sp.shape[1], sp.shape[2]
        flat = sp.reshape(-1, S, 2)
        grid = torch.stack([flat[..., 0] / tg.W * 2 - 1, flat[..., 1] / tg.H * 2 - 1], -1)[:, None]
        d = torch.nn.functional.grid_sample(tg.dt, grid, mode="bilinear", padding_mode="border",
                                            align_corners=False)[:, 0, 0]          # [F*C, S] pixels
        # a point projected outside the image is not judged: the mask says nothing there (a wrist cut
        # by the frame's border)
        inside = ((flat[..., 0] >= 0) & (flat[..., 0] <= tg.W) & (flat[..., 1] >= 0) & (flat[..., 1] <= tg.H)).float()
        scale = tg.unit * st.mask_sigma
        n_eff = st.silhouette_effective_points
        # the mask's edge lies half a pixel beyond its last pixel centre (where the bilinear distance is 0.5)
        terms["silhouette"] = n_eff * ((_huber(torch.relu(d - 0.5) / scale) * inside).mean(1)
                                       * tg.mask_valid).reshape(Fn, C).sum(1)
        mp = tg.sample_mask_pixels(st.mask_samples, gen)                             # [F*C, M, 2]
        with torch.no_grad():                                                          # the nearest point's index
            nn_idx = torch.cdist(mp, flat.detach()).argmin(-1)                         # [F*C, M]
        nearest_pt = torch.gather(flat, 1, nn_idx[..., None].expand(-1, -1, 2))        # with gradient
        nearest = ((mp - nearest_pt) ** 2).sum(-1).add(1e-12).sqrt()                  # [F*C, M] pixels
        # a covered mask pixel is still up to half the projected sample spacing (about sqrt(mask area /
        # (S / 2)): half the samples face the camera) plus half a pixel from its nearest sample
        slack = 0.5 + 0.5 * torch.sqrt(tg.mask_count / (0.5 * S))                    # [F*C] pixels
        terms["coverage"] = n_eff * (_huber(torch.relu(nearest - slack[:, None]) / scale).mean(1)
                                     * tg.mask_valid).reshape(Fn, C).sum(1)
    deg = torch.rad2deg(angles)
    terms["joint_limits"] = ((model.limit_violation_deg(angles) / st.limit_sigma_deg) ** 2).sum((1, 2))
    mean = torch.as_tensor(st.pose_prior_mean_deg, dtype=deg.dtype, device=deg.device)
    sig = torch.as_tensor(st.pose_prior_sigma_deg, dtype=deg.dtype, device=deg.device)
    terms["pose_prior"] = (((deg - mean) / sig) ** 2).sum((1, 2))
    pip, dip = deg[:, _PIP_JOINTS, 0], deg[:, _PIP_JOINTS + 1, 0]
    terms["dip_pip"] = (((dip - st.dip_pip_ratio * pip) / st.dip_pip_sigma_deg) ** 2).sum(1)
    return terms


def _temporal_pair(settings: FitSettings, deg_a, deg_b, Ra, Rb, ta, tb, gap) -> tuple:
    """Robust temporal costs between two (batches of) frames ``gap`` frames apart: (finger angles
    [...], root [...]) -- the terms of :func:`_losses` (``deg_*`` [..., 15, 3] degrees, ``R*`` [..., 3,
    3], ``t*`` [..., 3], ``gap`` [...])."""
    st = settings
    g2 = gap ** 2
    da2 = ((deg_b - deg_a) / st.temporal_sigma_deg) ** 2 / g2[..., None, None]
    pose = _geman_mcclure(da2, st.temporal_robust_scale).sum((-1, -2))
    rot_deg2 = ((Rb - Ra) ** 2).sum((-1, -2)) * 0.5 * (180.0 / math.pi) ** 2            # ~ angle^2
    dtr = ((tb - ta) ** 2).sum(-1) / st.temporal_transl_sigma_m ** 2
    cr = st.temporal_root_robust_scale
    root = _geman_mcclure(rot_deg2 / st.temporal_root_sigma_deg ** 2 / g2, cr) + _geman_mcclure(dtr / g2, cr)
    return pose, root


def _losses(model: HandFitModel, rest: dict, params: dict, tg: _Targets, robust_scale: float, settings: FitSettings,
            silhouettes: bool, temporal: bool, gen: torch.Generator, displacement=None, log_shape=None,
            anchors: dict | None = None) -> dict:
    """The loss terms (module docstring), each already summed over the frames (per-frame terms) or
    counted once (shape, displacement); ``'total'`` = their weighted sum / number of frames.

    ``anchors`` (the held-out frames): fixed neighbouring frames each frame is tied to by the temporal
    terms, ``{'angles' [F, 2, 15, 3] radians, 'global_orient' [F, 2, 3], 'transl' [F, 2, 3], 'gap' [F, 2],
    'valid' [F, 2]}`` (previous, next)."""
    from relit_hands.hand_model import rodrigues

    st = settings
    w = st.weights
    angles, go, transl = params["angles"], params["global_orient"], params["transl"]
    Fn = angles.shape[0]
    terms = {k: v.sum() for k, v in _frame_terms(model, rest, params, tg, robust_scale, st, silhouettes, gen).items()}
    deg = torch.rad2deg(angles)
    if temporal and Fn > 1:
        Rg = rodrigues(go)
        pose, root = _temporal_pair(st, deg[:-1], deg[1:], Rg[:-1], Rg[1:], transl[:-1], transl[1:], tg.gap)
        terms["temporal_pose"] = pose.sum()
        terms["temporal_root"] = root.sum()
    if anchors is not None:
        Rg = rodrigues(go)[:, None]
        pose, root = _temporal_pair(st, torch.rad2deg(anchors["angles"]), deg[:, None],
                                    rodrigues(anchors["global_orient"]), Rg, anchors["transl"], transl[:, None],
                                    anchors["gap"])
        terms["temporal_pose"] = (pose * anchors["valid"]).sum()
        terms["temporal_root"] = (root * anchors["valid"]).sum()
    if log_shape is not None:
        common = log_shape.mean(0)
        sig = torch.as_tensor(st.shape_common_sigma, dtype=log_shape.dtype, device=log_shape.device)
        if tg.K.shape[0] == 1:                      # one camera: the palm's width is ambiguous (module docstring)
            sig = torch.stack([sig[0], sig.new_tensor(st.monocular_girth_sigma)])
        terms["shape"] = ((common / sig) ** 2).sum() + (((log_shape - common) / st.shape_bone_sigma) ** 2).sum()
        if st.hand_length_m is not None:
            terms["hand_length"] = ((rest_hand_length(model, rest) - st.hand_length_m) / st.hand_length_sigma_m) ** 2
    if displacement is not None:
        over = torch.relu(rest["render_displacement"].abs() * 1e3 - st.displacement_limit_mm)
        terms["displacement"] = ((displacement / st.displacement_sigma_mm) ** 2).sum() + \
            ((over / st.displacement_limit_sigma_mm) ** 2).mean() * displacement.numel()
    terms["total"] = sum(w.get(k, 1.0) * v for k, v in terms.items()) / Fn
    return terms


def rest_hand_length(model: HandFitModel, rest: dict) -> torch.Tensor:
    """Scalar, metres: the wrist joint to the middle fingertip (MediaPipe keypoints 0 and 12) of the
    rest hand ``rest`` (:meth:`HandFitModel.rest`; flat, so this is the hand's length)."""
    kp = torch.cat([rest["joints"], rest["tips"]], 0)[model.mediapipe_order]
    return (kp[12] - kp[0]).norm()


# joints (index into the 15 finger joints) whose child is the distal joint: index, middle, pinky, ring PIP
_PIP_JOINTS = np.array([1, 4, 7, 10])


def _reprojection_px(model, rest, params, tg) -> np.ndarray:
    """[F] confidence-weighted mean keypoint reprojection error in pixels."""
    with torch.no_grad():
        kp, _ = model.posed(rest, params["angles"], params["global_orient"], params["transl"])
        px, _ = project(kp, tg.K, tg.R, tg.t)
        err = ((px - tg.kp) ** 2).sum(-1).sqrt()
        return ((err * tg.conf).sum((1, 2)) / tg.conf.sum((1, 2)).clamp_min(1e-6)).cpu().numpy().astype(np.float64)


def _holdout_anchors(state: dict, data: FitData, train: np.ndarray, held: np.ndarray) -> dict:
    """The fixed neighbours of the held-out frames for the temporal terms (:func:`_losses`'s
    ``anchors``): each held-out frame's nearest training frame before and after it (``valid`` 0 where
    there is none), their current parameters (detached copies) and the frame gaps."""
    dev = state["transl"].device
    nb = np.zeros((len(held), 2), int)
    valid = np.zeros((len(held), 2))
    gap = np.ones((len(held), 2))
    for i, f in enumerate(held):
        before, after = train[train < f], train[train > f]
        for side, cand in ((0, before[-1:]), (1, after[:1])):
            if len(cand):
                g = int(cand[0])
                nb[i, side], valid[i, side] = g, 1.0
                gap[i, side] = max(1.0, float(abs(data.frames[g] - data.frames[f])))
    sel = torch.as_tensor(nb, device=dev)
    out = {k: state[k][sel].detach().clone() for k in ("angles", "global_orient", "transl")}
    out["gap"] = torch.as_tensor(gap, dtype=torch.float32, device=dev)
    out["valid"] = torch.as_tensor(valid, dtype=torch.float32, device=dev)
    return out


def _run_stage(name: str, steps: int, model: HandFitModel, state: dict, idx: np.ndarray, tg: _Targets,
               settings: FitSettings, trainable: tuple, silhouettes: bool, temporal: bool, use_disp: bool,
               history: list, progress: bool, gen: torch.Generator, anchors: dict | None = None,
               lr_scale: float = 1.0) -> None:
    """Adam on ``trainable`` for ``steps``; the frame parameters of the frames ``idx`` and the shared
    shape / displacement live in ``state`` (tensors on the device) and are updated in place.
    ``anchors``: fixed temporal neighbours (:func:`_holdout_anchors`); ``lr_scale`` multiplies the
    learning rates."""
    from tqdm import tqdm

    dev = model.device
    sel = torch.as_tensor(idx, dtype=torch.long, device=dev)
    params = {k: state[k][sel].clone().requires_grad_(k in trainable) for k in ("angles", "global_orient", "transl")}
    log_shape = state["log_shape"].clone().requires_grad_("log_shape" in trainable)
    disp = state["displacement"].clone().requires_grad_("displacement" in trainable)
    groups = [{"params": [params[k]], "lr": settings.lr[k] * lr_scale} for k in params if k in trainable]
    if "log_shape" in trainable:
        groups.append({"params": [log_shape], "lr": settings.lr["log_shape"] * lr_scale})
    if "displacement" in trainable:
        groups.append({"params": [disp], "lr": settings.lr["displacement"] * lr_scale})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.1 * min(g["lr"] for g in groups))
    shape_term = "log_shape" in trainable
    every = max(1, steps // 40)
    bar = tqdm(range(steps), desc=f"geometry: {name}", unit="it", disable=not progress, dynamic_ncols=True,
               leave=False)
    scale = settings.robust_scale[name]
    s0, s1 = (scale, scale) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    fixed_rest = None
    if not (shape_term or "displacement" in trainable):                 # the rest hand is constant: once
        with torch.no_grad():
            fixed_rest = model.rest(log_shape, disp if use_disp else None)
    for it in bar:
        opt.zero_grad(set_to_none=True)
        rest = fixed_rest if fixed_rest is not None else model.rest(log_shape, disp if use_disp else None)
        robust = s0 * (s1 / s0) ** (min(1.0, it / max(1, int(0.7 * steps))))   # annealed over 70 % of the steps
        terms = _losses(model, rest, params, tg, robust, settings, silhouettes, temporal, gen,
                        displacement=disp if use_disp else None, log_shape=log_shape if shape_term else None,
                        anchors=anchors)
        terms["total"].backward()
        opt.step()
        sched.step()
        if it % every == 0 or it == steps - 1:
            rec = {"stage": name, "iteration": it, **{k: float(v.detach()) for k, v in terms.items()}}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['total']:.3g}")
    bar.close()
    with torch.no_grad():
        for k in params:
            state[k][sel] = params[k].detach()
        state["log_shape"] = log_shape.detach()
        state["displacement"] = disp.detach()


def _state_to_numpy(state: dict) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def fit_geometry(data: FitData, cams: FitCameras, *, settings: FitSettings | None = None, device="cpu",
                 progress: bool = True, resume: dict | None = None, checkpoint=None, asset=None) -> GeometryFit:
    """Fit shape, displacements and per-frame poses (module docstring).

    ``resume``: ``{'stages_done': [...], 'state': {name: array}, 'history': [...], 'seconds': {...}}``
    of an earlier run (what ``checkpoint(stage, payload)`` was called with after each stage), whose
    stages are skipped. ``asset``: the base :class:`HandAsset` (default :data:`BASE_ASSET`).
    Returns a :class:`GeometryFit`. On the CPU torch runs with :attr:`FitSettings.cpu_threads`
    intra-op threads."""
    settings = settings or FitSettings()
    threads = settings.cpu_threads if torch.device(device).type == "cpu" else None
    with _intra_op_threads(threads):
        return _fit_geometry(data, cams, settings, device, progress, resume, checkpoint, asset)


def _fit_geometry(data: FitData, cams: FitCameras, settings: FitSettings, device, progress: bool, resume, checkpoint,
                  asset) -> GeometryFit:
    from relit_hands.hand_model import HandAsset, asset_path

    asset = asset or HandAsset.load(asset_path(BASE_ASSET))
    model = HandFitModel(asset, device, settings)
    dev = model.device
    gen = torch.Generator().manual_seed(settings.seed)
    train = np.flatnonzero(~data.holdout)
    held = np.flatnonzero(data.holdout)
    if len(train) == 0:
        raise ValueError("no frame is left to fit the shape on (every frame is held out)")
    history = list(resume["history"]) if resume else []
    seconds = dict(resume["seconds"]) if resume else {}
    done = list(resume["stages_done"]) if resume else []
    if resume:
        state = {k: torch.as_tensor(v, dtype=torch.float32, device=dev) for k, v in resume["state"].items()
                 if k in ("angles", "global_orient", "transl", "log_shape", "displacement")}
        init_method = list(resume.get("init_method", []))
    else:
        t0 = time.perf_counter()
        if settings.hypotheses > 1:
            init = hypothesis_initialise(model, data, cams, settings, history=history, progress=progress)
            go, tr, init_method, angles = init["global_orient"], init["transl"], init["method"], init["angles"]
        else:
            go, tr, init_method = pnp_initialise(model, data, cams)
            angles = _default_angles(data.count, DEFAULT_FLEXION_DEG, dev)
        state = {"angles": angles.to(dev),
                 "global_orient": torch.as_tensor(go, dtype=torch.float32, device=dev),
                 "transl": torch.as_tensor(tr, dtype=torch.float32, device=dev),
                 "log_shape": torch.zeros(16, 2, device=dev),
                 "displacement": torch.zeros(model.basis_render.shape[1], device=dev)}
        seconds["initialise"] = round(time.perf_counter() - t0, 3)
    tg_train = _Targets(data, train, cams, dev)
    tg_held = _Targets(data, held, cams, dev) if len(held) else None
    plan = [("root", ("global_orient", "transl"), False, True, False),
            ("pose", ("global_orient", "transl", "angles"), True, True, False),
            ("shape", ("global_orient", "transl", "angles", "log_shape"), True, True, False),
            ("displacement", ("global_orient", "transl", "angles", "log_shape", "displacement"), True, True, True)]
    use_disp_any = False
    for name, trainable, sil, temporal, use_disp in plan:
        use_disp_any = use_disp_any or use_disp
        if name in done:
            continue
        t0 = time.perf_counter()
        _run_stage(name, settings.steps(name), model, state, train, tg_train, settings, trainable, sil, temporal,
                   use_disp, history, progress, gen)
        seconds[name] = round(time.perf_counter() - t0, 3)
        done.append(name)
        if checkpoint is not None:
            checkpoint(name, {"stages_done": list(done), "state": _state_to_numpy(state), "history": history,
                              "seconds": seconds, "init_method": init_method})
    if "holdout" not in done:
        t0 = time.perf_counter()
        if tg_held is not None:
            anchors = _holdout_anchors(state, data, train, held) if settings.holdout_temporal else None
            _run_stage("holdout_root", settings.steps("holdout_root"), model, state, held, tg_held, settings,
                       ("global_orient", "transl"), False, False, True, history, progress, gen, anchors=anchors)
            _run_stage("holdout_pose", settings.steps("holdout_pose"), model, state, held, tg_held, settings,
                       ("global_orient", "transl", "angles"), True, False, True, history, progress, gen,
                       anchors=anchors)
        seconds["holdout"] = round(time.perf_counter() - t0, 3)
        done.append("holdout")
        if checkpoint is not None:
            checkpoint("holdout", {"stages_done": list(done), "state": _state_to_numpy(state), "history": history,
                                   "seconds": seconds, "init_method": init_method})
    with torch.no_grad():
        rest = model.rest(state["log_shape"], state["displacement"], full=True)
        err = np.zeros(data.count)
        err[train] = _reprojection_px(model, rest, {k: state[k][torch.as_tensor(train, device=dev)]
                                                    for k in ("angles", "global_orient", "transl")}, tg_train)
        if tg_held is not None:
            err[held] = _reprojection_px(model, rest, {k: state[k][torch.as_tensor(held, device=dev)]
                                                       for k in ("angles", "global_orient", "transl")}, tg_held)
        pose = model.pose_axis_angle(state["angles"]).cpu().numpy()
    fit = GeometryFit(log_shape=state["log_shape"].double().cpu().numpy(),
                      displacement_coefficients=state["displacement"].double().cpu().numpy(),
                      render_displacement_m=rest["render_displacement"].float().cpu().numpy(),
                      proxy_displacement_m=rest["proxy_displacement"].float().cpu().numpy(),
                      angles_deg=np.rad2deg(state["angles"].double().cpu().numpy()), pose=pose,
                      global_orient=state["global_orient"].double().cpu().numpy(),
                      transl=state["transl"].double().cpu().numpy(), keypoint_error_px=err, history=history,
                      seconds=seconds, stages_done=done)
    fit.init_method = init_method
    return fit


def bake_asset_arrays(base_arrays: dict, log_shape: np.ndarray, displacement_coefficients: np.ndarray,
                      settings: FitSettings | None = None, asset=None) -> tuple:
    """The personalised asset's npz arrays: ``base_arrays`` (the base npz: same keys, order and
    dtypes) with ``render_vertices``, ``proxy_vertices`` and ``joints`` replaced by the shaped and
    displaced rest geometry (float64 arithmetic, stored in the base dtypes). Returns (arrays,
    render displacement [Vr] m, proxy displacement [Vp] m)."""
    from relit_hands.hand_model import HandAsset

    settings = settings or FitSettings()
    asset = asset or HandAsset.from_arrays(dict(base_arrays))
    model = HandFitModel(asset, "cpu", settings)
    with torch.no_grad():
        rest = model.rest(torch.as_tensor(log_shape, dtype=torch.float32),
                          torch.as_tensor(displacement_coefficients, dtype=torch.float32), full=True)
    arrays = dict(base_arrays)
    for key, value in (("render_vertices", rest["render"]), ("proxy_vertices", rest["proxy"]),
                       ("joints", rest["joints"])):
        arrays[key] = value.cpu().numpy().astype(base_arrays[key].dtype)
    return arrays, rest["render_displacement"].cpu().numpy(), rest["proxy_displacement"].cpu().numpy()
