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
  relaxed mean: flexion 20 +- 45, abduction 0 +- 12, twist 0 +- 6 degrees; the distal joint's
  flexion about 2/3 of the middle joint's, +- 15 degrees), robust temporal smoothness of the pose
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
view (palm first, fingers weighted 0.2) wins (:func:`pnp_initialise`). Fingers start at
:data:`DEFAULT_FLEXION_DEG`.

Stages (Adam with a cosine learning-rate decay; iterations :attr:`FitSettings.iterations`, by
default 100 / 200 / 200 / 100, all scaled by ``iterations_scale``; every frame of a stage in one
batch): ``root`` (global rotation + translation, keypoints only, wide robust scale) -> ``pose``
(+ finger angles, silhouette terms on) -> ``shape`` (+ log shape) -> ``displacement`` (+
displacement coefficients). During the steps the displaced samples move along the *base* rest
normals (:meth:`HandFitModel.rest`; < 0.1 mm from the baked geometry, which uses the shaped normals).
Measured on the project's 2-core CPU machine (shared with other jobs): 38 frames at 160 px, about
28 s for all stages; 98 frames at 256 px, about 50 s; the cost grows about linearly with frames x
views (mask sizes matter little). Fitted ("training") frames share the shape. Every ``holdout_every``-th frame (default
10: 10 %) is held out: after the training frames are done, the held-out frames are fitted with the
shape and displacements frozen (stages root then pose; no temporal term, so nothing of them leaks
into the training frames) -- their 3-D keypoint error measures how well the fitted hand explains
frames it never saw.

Monocular scale and girth. From one camera the hand's absolute size is ambiguous with its distance
(a larger hand farther away projects the same): the shape prior holds the *common* scale at the base
asset's unless the silhouettes' perspective says otherwise, which they barely do. Relative bone
lengths are observable. Girth is not, reliably: the palm's width (the wrist bone's girth spreads
the MCPs) trades off against the hand's rotation about its long axis, and the per-frame poses are
ambiguous in depth, so on the 40-frame 160-px test capture the common girth came out 7 % thin --
while with the *true* poses the same terms recover it to 1 %. So from one camera the common girth's
prior is tight (:attr:`FitSettings.monocular_girth_sigma` = 2 %); calibrated views (``views.json``)
use the same 5 % as lengths.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["BASE_ASSET", "STAGES", "DEFAULT_FLEXION_DEG", "PALM_KEYPOINTS", "FitCameras", "FitData",
           "FitSettings", "GeometryFit", "HandFitModel", "laplacian_basis", "pnp_initialise", "fit_geometry",
           "bake_asset_arrays", "project"]

BASE_ASSET = "hand_v2"
STAGES = ("root", "pose", "shape", "displacement", "holdout")
DEFAULT_FLEXION_DEG = 10.0
# MediaPipe indices of the rigid palm points: wrist, thumb CMC, index / middle / ring / pinky MCP
PALM_KEYPOINTS = np.array([0, 1, 5, 9, 13, 17])
PNP_MIN_CONFIDENCE = 0.3
FINGER_SCORE_WEIGHT = 0.2        # finger keypoints' weight when scoring root candidates (the palm's: 1)
ROOT_JUMP_M = 0.08               # an initial root this far from its neighbours' median is replaced


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
    ``displacement_limit_mm`` with ``displacement_limit_sigma_mm``; ``weights``: multipliers of the
    terms (1 = as the sigmas say; coverage 3: on the make-phone-video test captures it was what kept
    the fingers from coming out thin against masks that are eroded or dilated by 1-2 px); ``basis_size`` K; ``surface_samples`` S; ``mask_samples`` M;
    ``seed`` (surface subset, mask samples)."""

    iterations: dict = field(default_factory=lambda: {"root": 100, "pose": 200, "shape": 200, "displacement": 100,
                                                      "holdout_root": 60, "holdout_pose": 120})
    iterations_scale: float = 1.0
    lr: dict = field(default_factory=lambda: {"global_orient": 0.02, "transl": 0.004, "angles": 0.02,
                                              "log_shape": 0.004, "displacement": 0.05})
    robust_scale: dict = field(default_factory=lambda: {"root": 10.0, "pose": (10.0, 3.0), "shape": 3.0,
                                                        "displacement": 3.0, "holdout_root": 10.0,
                                                        "holdout_pose": (10.0, 3.0)})
    keypoint_sigma: float = 3.0
    mask_sigma: float = 3.0
    silhouette_effective_points: float = 20.0
    limit_sigma_deg: float = 3.0
    pose_prior_mean_deg: tuple = (20.0, 0.0, 0.0)
    pose_prior_sigma_deg: tuple = (45.0, 12.0, 6.0)
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
    weights: dict = field(default_factory=lambda: {"keypoints": 1.0, "silhouette": 1.0, "coverage": 3.0,
                                                   "joint_limits": 1.0, "pose_prior": 1.0, "dip_pip": 1.0,
                                                   "temporal_pose": 1.0, "temporal_root": 1.0, "shape": 1.0,
                                                   "displacement": 1.0})
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

    def posed(self, rest: dict, angles: torch.Tensor, global_orient: torch.Tensor, transl: torch.Tensor) -> tuple:
        """Skin the rest hand for F frames: (keypoints [F, 21, 3] MediaPipe order, surface samples
        [F, S, 3]), world metres."""
        from relit_hands.hand_model import rigid_transforms, rodrigues, skin

        rot = torch.cat([rodrigues(global_orient)[:, None], self.world_rotations(angles)], 1)   # [F, 16, 3, 3]
        G, A = rigid_transforms(rot, rest["joints"], self.parents)
        joints = G[..., :3, 3]
        tips = skin(rest["tip_weights"], A, rest["tips"])
        samples = skin(rest["sample_weights"], A, rest["samples"]) + transl[:, None]
        kp = torch.cat([joints, tips], 1) + transl[:, None]
        return kp[:, self.mediapipe_order], samples

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


def _pnp_candidates(obj: np.ndarray, img: np.ndarray, K: np.ndarray) -> list:
    """(rvec, tvec) candidates of ``cv2.solvePnPGeneric``: SQPnP and both IPPE solutions."""
    import cv2

    out = []
    for flag in (cv2.SOLVEPNP_SQPNP, cv2.SOLVEPNP_IPPE):
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


def pnp_initialise(model: HandFitModel, data: FitData, cams: FitCameras,
                   flexion_deg: float = DEFAULT_FLEXION_DEG) -> tuple:
    """Per-frame root (module docstring): (global_orient [F, 3], transl [F, 3], method [F] str) in
    the fit's reference frame.

    Candidates per frame: every view with 4 or more palm keypoints of confidence >= 0.3 (else all
    its confident keypoints) proposes SQPnP + IPPE solutions; with 2 or more calibrated views the
    keypoints are also triangulated (:func:`triangulate`) and the rest palm aligned to them
    (Kabsch); finally the neighbouring frames' chosen roots. Each candidate, in the world, is scored
    by the robust reprojection of the 21 keypoints of the mildly flexed rest hand in *every* view,
    the fingers' (not rigid) weighted :data:`FINGER_SCORE_WEIGHT`; the best wins. A root more than
    :data:`ROOT_JUMP_M` from the median of its window of 5 frames' (one view's depth-ambiguous PnP)
    is replaced by the best-scoring neighbour's."""
    import cv2

    kp_rest = _rest_keypoints(model, flexion_deg)                  # [21, 3]
    J0 = model.rest_joints[0].double().cpu().numpy()
    F = data.count
    unit = max(cams.width, cams.height) / 256.0

    finger_weight = np.full(21, FINGER_SCORE_WEIGHT)
    finger_weight[PALM_KEYPOINTS] = 1.0                             # the rigid palm counts most

    def score(f, Rgo, tw):
        cost = 0.0
        conf = data.confidence[f] * finger_weight
        for c2 in range(cams.count):                              # score in every view
            m = conf[c2] > 0
            if not m.any():
                continue
            Rv = cams.R[c2] @ Rgo
            tv = cams.R[c2] @ (tw + J0 - Rgo @ J0) + cams.t[c2]
            cost += _reprojection_cost(kp_rest[m], data.keypoints[f, c2][m], conf[c2][m], cams.K[c2],
                                       cv2.Rodrigues(Rv)[0], tv, 20.0 * unit)
        return cost

    best = [None] * F
    for f in range(F):
        conf = data.confidence[f]                                   # [C, 21]
        cands = []
        for c in range(cams.count):
            sel, how = PALM_KEYPOINTS[conf[c, PALM_KEYPOINTS] >= PNP_MIN_CONFIDENCE], "palm"
            if len(sel) < 4:
                sel, how = np.flatnonzero(conf[c] >= PNP_MIN_CONFIDENCE), "all keypoints"
                if len(sel) < 4:
                    continue
            img = data.keypoints[f, c].astype(np.float64)
            for rvec, tvec in _pnp_candidates(kp_rest[sel], img[sel], cams.K[c]):
                Rgo = cams.R[c].T @ cv2.Rodrigues(rvec)[0]            # rest -> world rotation
                # x_world = Rgo (x - J0) + J0 + transl  and  x_world = Rc^T (Rpc x + tpc - tc)
                cands.append((Rgo, cams.R[c].T @ (tvec - cams.t[c]) + Rgo @ J0 - J0, f"pnp {how} ({cams.ids[c]})"))
        if cams.count >= 2:
            X, ok = triangulate(data.keypoints[f], conf, cams)
            sel = PALM_KEYPOINTS[ok[PALM_KEYPOINTS]]
            if len(sel) >= 3:
                Rgo, t = _kabsch(kp_rest[sel], X[sel])                # x_world = Rgo x + t
                cands.append((Rgo, t + Rgo @ J0 - J0, "triangulated palm"))
        for Rgo, tw, how in cands:
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


def _losses(model: HandFitModel, rest: dict, params: dict, tg: _Targets, robust_scale: float, settings: FitSettings,
            silhouettes: bool, temporal: bool, gen: torch.Generator, displacement=None, log_shape=None) -> dict:
    """The loss terms (module docstring), each already summed over the frames (per-frame terms) or
    counted once (shape, displacement); ``'total'`` = their weighted sum / number of frames."""
    st = settings
    w = st.weights
    angles, go, transl = params["angles"], params["global_orient"], params["transl"]
    Fn = angles.shape[0]
    kp, samples = model.posed(rest, angles, go, transl)
    px, _ = project(kp, tg.K, tg.R, tg.t)                             # [F, C, 21, 2]
    r2 = ((px - tg.kp) ** 2).sum(-1) / (tg.unit * st.keypoint_sigma) ** 2
    terms = {"keypoints": (tg.conf * _geman_mcclure(r2, robust_scale)).sum()}
    if silhouettes and tg.has_masks:
        sp, _ = project(samples, tg.K, tg.R, tg.t)                    # [F, C, S, 2]
        S = sp.shape[2]
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
        terms["silhouette"] = n_eff * ((_huber(torch.relu(d - 0.5) / scale) * inside).mean(1) * tg.mask_valid).sum()
        mp = tg.sample_mask_pixels(st.mask_samples, gen)                             # [F*C, M, 2]
        with torch.no_grad():                                                          # the nearest point's index
            nn_idx = torch.cdist(mp, flat.detach()).argmin(-1)                         # [F*C, M]
        nearest_pt = torch.gather(flat, 1, nn_idx[..., None].expand(-1, -1, 2))        # with gradient
        nearest = ((mp - nearest_pt) ** 2).sum(-1).add(1e-12).sqrt()                  # [F*C, M] pixels
        # a covered mask pixel is still up to half the projected sample spacing (about sqrt(mask area /
        # (S / 2)): half the samples face the camera) plus half a pixel from its nearest sample
        slack = 0.5 + 0.5 * torch.sqrt(tg.mask_count / (0.5 * S))                    # [F*C] pixels
        terms["coverage"] = n_eff * (_huber(torch.relu(nearest - slack[:, None]) / scale).mean(1)
                                     * tg.mask_valid).sum()
    deg = torch.rad2deg(angles)
    terms["joint_limits"] = ((model.limit_violation_deg(angles) / st.limit_sigma_deg) ** 2).sum()
    mean = torch.as_tensor(st.pose_prior_mean_deg, dtype=deg.dtype, device=deg.device)
    sig = torch.as_tensor(st.pose_prior_sigma_deg, dtype=deg.dtype, device=deg.device)
    terms["pose_prior"] = (((deg - mean) / sig) ** 2).sum()
    pip, dip = deg[:, _PIP_JOINTS, 0], deg[:, _PIP_JOINTS + 1, 0]
    terms["dip_pip"] = (((dip - st.dip_pip_ratio * pip) / st.dip_pip_sigma_deg) ** 2).sum()
    if temporal and Fn > 1:
        from relit_hands.hand_model import rodrigues

        g2 = tg.gap[:, None, None] ** 2
        da2 = ((deg[1:] - deg[:-1]) / st.temporal_sigma_deg) ** 2 / g2
        c = st.temporal_robust_scale
        terms["temporal_pose"] = _geman_mcclure(da2, c).sum()
        Rg = rodrigues(go)
        rot_deg2 = ((Rg[1:] - Rg[:-1]) ** 2).sum((1, 2)) * 0.5 * (180.0 / math.pi) ** 2    # ~ angle^2
        dtr = ((transl[1:] - transl[:-1]) ** 2).sum(1) / st.temporal_transl_sigma_m ** 2
        cr = st.temporal_root_robust_scale
        terms["temporal_root"] = (_geman_mcclure(rot_deg2 / st.temporal_root_sigma_deg ** 2 / tg.gap ** 2, cr)
                                  + _geman_mcclure(dtr / tg.gap ** 2, cr)).sum()
    if log_shape is not None:
        common = log_shape.mean(0)
        sig = torch.as_tensor(st.shape_common_sigma, dtype=log_shape.dtype, device=log_shape.device)
        if tg.K.shape[0] == 1:                      # one camera: the palm's width is ambiguous (module docstring)
            sig = torch.stack([sig[0], sig.new_tensor(st.monocular_girth_sigma)])
        terms["shape"] = ((common / sig) ** 2).sum() + (((log_shape - common) / st.shape_bone_sigma) ** 2).sum()
    if displacement is not None:
        over = torch.relu(rest["render_displacement"].abs() * 1e3 - st.displacement_limit_mm)
        terms["displacement"] = ((displacement / st.displacement_sigma_mm) ** 2).sum() + \
            ((over / st.displacement_limit_sigma_mm) ** 2).mean() * displacement.numel()
    terms["total"] = sum(w.get(k, 1.0) * v for k, v in terms.items()) / Fn
    return terms


# joints (index into the 15 finger joints) whose child is the distal joint: index, middle, pinky, ring PIP
_PIP_JOINTS = np.array([1, 4, 7, 10])


def _reprojection_px(model, rest, params, tg) -> np.ndarray:
    """[F] confidence-weighted mean keypoint reprojection error in pixels."""
    with torch.no_grad():
        kp, _ = model.posed(rest, params["angles"], params["global_orient"], params["transl"])
        px, _ = project(kp, tg.K, tg.R, tg.t)
        err = ((px - tg.kp) ** 2).sum(-1).sqrt()
        return ((err * tg.conf).sum((1, 2)) / tg.conf.sum((1, 2)).clamp_min(1e-6)).cpu().numpy().astype(np.float64)


def _run_stage(name: str, steps: int, model: HandFitModel, state: dict, idx: np.ndarray, tg: _Targets,
               settings: FitSettings, trainable: tuple, silhouettes: bool, temporal: bool, use_disp: bool,
               history: list, progress: bool, gen: torch.Generator) -> None:
    """Adam on ``trainable`` for ``steps``; the frame parameters of the frames ``idx`` and the shared
    shape / displacement live in ``state`` (tensors on the device) and are updated in place."""
    from tqdm import tqdm

    dev = model.device
    sel = torch.as_tensor(idx, dtype=torch.long, device=dev)
    params = {k: state[k][sel].clone().requires_grad_(k in trainable) for k in ("angles", "global_orient", "transl")}
    log_shape = state["log_shape"].clone().requires_grad_("log_shape" in trainable)
    disp = state["displacement"].clone().requires_grad_("displacement" in trainable)
    groups = [{"params": [params[k]], "lr": settings.lr[k]} for k in params if k in trainable]
    if "log_shape" in trainable:
        groups.append({"params": [log_shape], "lr": settings.lr["log_shape"]})
    if "displacement" in trainable:
        groups.append({"params": [disp], "lr": settings.lr["displacement"]})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.1 * min(g["lr"] for g in groups))
    shape_term = "log_shape" in trainable
    every = max(1, steps // 40)
    bar = tqdm(range(steps), desc=f"geometry: {name}", unit="it", disable=not progress, dynamic_ncols=True,
               leave=False)
    scale = settings.robust_scale[name]
    s0, s1 = (scale, scale) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    for it in bar:
        opt.zero_grad(set_to_none=True)
        rest = model.rest(log_shape, disp if use_disp else None)
        robust = s0 * (s1 / s0) ** (min(1.0, it / max(1, int(0.7 * steps))))   # annealed over 70 % of the steps
        terms = _losses(model, rest, params, tg, robust, settings, silhouettes, temporal, gen,
                        displacement=disp if use_disp else None, log_shape=log_shape if shape_term else None)
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
    Returns a :class:`GeometryFit`."""
    from relit_hands.hand_model import HandAsset, asset_path

    settings = settings or FitSettings()
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
        go, tr, init_method = pnp_initialise(model, data, cams)
        state = {"angles": _default_angles(data.count, DEFAULT_FLEXION_DEG, dev),
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
            _run_stage("holdout_root", settings.steps("holdout_root"), model, state, held, tg_held, settings,
                       ("global_orient", "transl"), False, False, True, history, progress, gen)
            _run_stage("holdout_pose", settings.steps("holdout_pose"), model, state, held, tg_held, settings,
                       ("global_orient", "transl", "angles"), True, False, True, history, progress, gen)
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
