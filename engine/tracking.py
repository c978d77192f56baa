"""Hand-tracker input -> hand-model pose: OpenXR ``XR_EXT_hand_tracking`` joints and 21-keypoint
sets (MediaPipe / OpenPose order) retargeted analytically onto the MANO-compatible
:class:`~relit_hands.hand_model.HandModel`, with optional One Euro smoothing and synthetic trackers
made from the model itself (for round-trip tests and benchmarks).

Frames and units
----------------
Everything is in the application's reference space, metres.  OpenXR reference spaces are
right-handed, +Y up, -Z forward -- the same handedness and up axis as our world (metres,
right-handed, Y up), so the conversion is the identity: an OpenXR position ``(x, y, z)`` is our
world point ``(x, y, z)`` and an OpenXR quaternion ``(x, y, z, w)`` is used as is.  21-keypoint
sets must already be in that space (e.g. MediaPipe's world landmarks transformed by the camera
pose); nothing here guesses an image or camera convention.

OpenXR joint frames (``XR_EXT_hand_tracking``, "Conventions of hand joints", OpenXR 1.0/1.1
specification, registry.khronos.org/OpenXR/specs/1.1/html/xrspec.html#XR_EXT_hand_tracking; the
same text is repeated for ``XrBodyJointFB``): finger joint poses sit at the base of the named bone;
"the backward (+Z) direction is parallel to the corresponding bone and points away from the finger
tip.  The up (+Y) direction is pointing out of the back of and perpendicular to the corresponding
finger nail at the fully opened hand pose.  The X direction is perpendicular to Y and Z and
follows the right hand rule."  The wrist's +Z is "parallel to the line from wrist joint to middle
finger metacarpal joint, and points away from the finger tips", +Y "points out towards back of the
hand"; the palm sits at the centre of the middle metacarpal with the same axes.  Both hands use
right-handed joint frames (so the left hand's frames are NOT the mirror images of the right's).

Joint mapping (MANO joint / keypoint index of the model <- tracker joint)::

    model keypoint (MANO)      OpenXR XrHandJointEXT          21-keypoint (MediaPipe/OpenPose)
    0  wrist                   1  WRIST                       0  WRIST
    1  index1  (MCP)           7  INDEX_PROXIMAL              5  INDEX_FINGER_MCP
    2  index2  (PIP)           8  INDEX_INTERMEDIATE          6  INDEX_FINGER_PIP
    3  index3  (DIP)           9  INDEX_DISTAL                7  INDEX_FINGER_DIP
    4-6 middle MCP/PIP/DIP     12-14 MIDDLE_PROX/INTER/DIST   9-11
    7-9 pinky MCP/PIP/DIP      22-24 LITTLE_PROX/INTER/DIST   17-19
    10-12 ring MCP/PIP/DIP     17-19 RING_PROX/INTER/DIST     13-15
    13 thumb1  (CMC)           2  THUMB_METACARPAL            1  THUMB_CMC
    14 thumb2  (MCP)           3  THUMB_PROXIMAL              2  THUMB_MCP
    15 thumb3  (IP)            4  THUMB_DISTAL                3  THUMB_IP
    16-20 tips thumb, index,   5, 10, 15, 20, 25 (*_TIP)      4, 8, 12, 16, 20
          middle, ring, pinky
    (unused)                   0 PALM, 6/11/16/21 *_METACARPAL of index/middle/ring/little

MANO has no joints for the four finger metacarpals: they are rigid with its wrist, so OpenXR's
``*_METACARPAL`` joints of index..little (at the carpometacarpal joints, near the wrist) and the
palm are not used.  The thumb differs: OpenXR's ``THUMB_METACARPAL`` is the base of the thumb's
metacarpal, i.e. the trapeziometacarpal (CMC) joint, and its bone is the thumb metacarpal, which is
exactly MANO's thumb root ``thumb1`` (its bone thumb1 -> thumb2 is the metacarpal; MANO's thumb has
CMC, MCP, IP joints where the fingers have MCP, PIP, DIP).

Method (analytic, one pass, no iterations)
------------------------------------------
The left hand is mirrored (z -> -z) into the right hand's space, solved as a right hand, and the
result mirrored back with :func:`~relit_hands.hand_model.mirror_pose` /
:func:`~relit_hands.hand_model.mirror_translation` (the model's left-hand convention).

1. Root: weighted Kabsch fit of the rest wrist, four MCPs and thumb CMC (rigid with MANO's wrist)
   onto the tracked ones, plus, for OpenXR, the tracked wrist frame's three axes as direction
   pairs.  Weights are inverse variances (points ``1/sigma_p^2``, unit axes ``1/sigma_o^2`` with
   ``sigma_o`` in radians), from the tracker noise the retargeter is told to expect.  Gives
   ``global_orient`` and ``transl``.
2. Fingers, level by level (MCP/CMC, then PIP/MCP, then DIP/IP, five joints at once): the joint's
   world rotation ``Q_j`` maps the rest anatomical frame ``F_j = [f a t]`` of
   :func:`relit_hands.poses.joint_frames` (flexion axis, dorsal axis, bone direction) onto a
   tracked frame.  The bone direction is aimed from the model's joint (as already placed by its
   parents) at the tracked child joint; for the distal joints at the tracked fingertip, corrected
   for the fingertip's skinning weights (MANO's tips are LBS vertices, not rigid points).

   * OpenXR: ``Q_j = O_j B_j^T`` from the tracked joint frame ``O_j`` and the rest OpenXR frame
     ``B_j = [-f  a  -t]`` (-Z along the bone, +Y dorsal), then swung toward the position-based bone
     direction by the inverse-variance weight ``w = s_o^2 / (s_o^2 + s_d^2)``, ``s_d = sqrt(2)
     sigma_p / bone length`` (the tracked orientation fixes the twist).
   * 21 keypoints: the twist comes from the finger's flexion planes.  The normal ``n = d_j x d_k``
     of two consecutive tracked bones is the flexion axis of the joint between them (PIP, DIP and IP
     are hinges), so ``Q_j`` takes the rest flexion axis ``g`` of that joint to ``n``: for the
     MCP / CMC level ``g`` = its child's axis and ``n`` = both planes of the finger added, for the
     PIP / thumb MCP ``g`` = its child's axis and the plane of bones 2-3, for the distal joints
     their own axis and the same plane.  Each ``n`` is signed to agree with ``Q_parent g`` and
     blended toward it by ``|n|^2 / (|n|^2 + s_n^2)``, with ``s_n^2`` the variance of the normal
     (from ``sigma_p`` and the bone lengths) over a 0.2 rad twist prior, so a nearly straight
     finger keeps its parent's twist.

   The local rotation ``Q_parent^T Q_j`` is decomposed into the anatomical angles of
   :mod:`relit_hands.poses` (flexion, abduction, twist), clamped to ``JOINT_LIMITS`` and rebuilt, so
   the pose is always inside the limits and the children are solved relative to the clamped parent.
3. ``bone_length_scales`` [16]: tracked / rest length of each MANO joint's bone (joint -> child
   joint or fingertip; the wrist: mean over its five children), for the per-bone shape space
   (the model's fingertips are LBS vertices, so a bent distal joint of the model itself reads up to
   ~2% short).
   ``residuals`` [21]: distance between the re-posed model's keypoints and the tracked ones.

Missing data: positions (and, for OpenXR, orientations) of all 21 mapped joints are needed; a
frame with an invalid flag, a NaN / inf, a zero quaternion or a keypoint below ``min_confidence``
returns the last good result with ``held=True`` (``ValueError`` when there is none yet).  Wrong
array shapes raise ``ValueError`` naming the argument and the expected shape.

Smoothing: :class:`OneEuroFilter` (Casiez, Roussel, Vogel, "1 Euro Filter: A Simple Speed-based
Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012) on the tracked positions and
(OpenXR) quaternions before retargeting, so the smoothed input is still a consistent skeleton.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

import torch

from .hand_model import PARENTS, SHAPE_DIM, HandModel, shape_rest
from .poses import ABDUCTION_SIGN, joint_frames, limits_array

__all__ = [
    "XR_HAND_JOINT_NAMES",
    "XR_TO_KEYPOINT",
    "KP21_TO_KEYPOINT",
    "XR_SPACE_LOCATION_ORIENTATION_VALID_BIT",
    "XR_SPACE_LOCATION_POSITION_VALID_BIT",
    "XR_SPACE_LOCATION_ORIENTATION_TRACKED_BIT",
    "XR_SPACE_LOCATION_POSITION_TRACKED_BIT",
    "OneEuroFilter",
    "RetargetResult",
    "HandRetargeter",
    "shape_from_scales",
    "synthetic_openxr_joints",
    "synthetic_keypoints21",
    "quat_to_matrix",
    "matrix_to_quat",
]

XR_HAND_JOINT_NAMES = [
    "PALM", "WRIST",
    "THUMB_METACARPAL", "THUMB_PROXIMAL", "THUMB_DISTAL", "THUMB_TIP",
    "INDEX_METACARPAL", "INDEX_PROXIMAL", "INDEX_INTERMEDIATE", "INDEX_DISTAL", "INDEX_TIP",
    "MIDDLE_METACARPAL", "MIDDLE_PROXIMAL", "MIDDLE_INTERMEDIATE", "MIDDLE_DISTAL", "MIDDLE_TIP",
    "RING_METACARPAL", "RING_PROXIMAL", "RING_INTERMEDIATE", "RING_DISTAL", "RING_TIP",
    "LITTLE_METACARPAL", "LITTLE_PROXIMAL", "LITTLE_INTERMEDIATE", "LITTLE_DISTAL", "LITTLE_TIP",
]
# XrSpaceLocationFlags bits (openxr.h)
XR_SPACE_LOCATION_ORIENTATION_VALID_BIT = 0x1
XR_SPACE_LOCATION_POSITION_VALID_BIT = 0x2
XR_SPACE_LOCATION_ORIENTATION_TRACKED_BIT = 0x4
XR_SPACE_LOCATION_POSITION_TRACKED_BIT = 0x8
_XR_VALID = XR_SPACE_LOCATION_ORIENTATION_VALID_BIT | XR_SPACE_LOCATION_POSITION_VALID_BIT

# model keypoint (16 MANO joints, then tips thumb, index, middle, ring, pinky) of each tracker joint; -1 = unused
XR_TO_KEYPOINT = np.array([-1, 0, 13, 14, 15, 16, -1, 1, 2, 3, 17, -1, 4, 5, 6, 18,
                           -1, 10, 11, 12, 19, -1, 7, 8, 9, 20])
KP21_TO_KEYPOINT = np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])
_XR_OF_KEYPOINT = np.array([int(np.nonzero(XR_TO_KEYPOINT == k)[0][0]) for k in range(21)])
_KP21_OF_KEYPOINT = np.argsort(KP21_TO_KEYPOINT)
_XR_METACARPALS = {6: 1, 11: 4, 16: 10, 21: 7}  # finger metacarpal -> its finger's MCP (MANO joint)

# fingers in MANO order index, middle, pinky, ring, thumb: joints per level and tip keypoints
_LEVELS = (np.array([1, 4, 7, 10, 13]), np.array([2, 5, 8, 11, 14]), np.array([3, 6, 9, 12, 15]))
_TIP_KP = np.array([17, 18, 20, 19, 16])
_LEVEL_PARENTS = tuple(PARENTS[js] for js in _LEVELS)
_CHAINS = np.stack([*_LEVELS, _TIP_KP], 1)  # [5, 4] keypoints of each finger, root to tip
_TIP_OF_DISTAL = _TIP_KP - 16  # row of each distal joint's tip in the asset's tip arrays
_ROOT_KP = np.array([0, 1, 4, 7, 10, 13])
_MIRROR = np.diag([1.0, 1.0, -1.0])
_FLIP_X = np.diag([-1.0, 1.0, 1.0])
_ANAT_TO_XR = np.diag([-1.0, 1.0, -1.0])  # [f a t] -> OpenXR [X Y Z] = [-f a -t]


# ----------------------------------------------------------------------------------------
# Rotation helpers (numpy, batched)
# ----------------------------------------------------------------------------------------

def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions ``[..., 4]`` (x, y, z, w; normalised here) -> rotation matrices ``[..., 3, 3]``."""
    from scipy.spatial.transform import Rotation

    q = np.asarray(q, np.float64)
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` (x, y, z, w), ``w >= 0``
    (Shepperd's method: the largest of w, x, y, z decides the branch)."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = np.stack([
        np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + tr], -1),
        np.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                  m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
        np.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                  m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                  1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
    ], -2)
    diag = np.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    q = np.take_along_axis(cands, diag.argmax(-1)[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:] < 0, -q, q)


def _log(R: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3] (angle in [0, pi]).

    From the trace and the skew part (fast); through the quaternion when an angle is near pi,
    where the skew part vanishes."""
    c = (R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1.0) * 0.5
    if np.any(c < -0.9):
        q = matrix_to_quat(R)
        s = _norm(q[..., :3])
        return q[..., :3] * (2.0 * np.arctan2(s, q[..., 3:]) / np.maximum(s, 1e-12))
    v = R[..., _SKEW_A, _SKEW_B] - R[..., _SKEW_B, _SKEW_A]  # (R21 - R12, R02 - R20, R10 - R01)
    sin = 0.5 * _norm(v)
    ang = np.arctan2(sin, c[..., None])
    return v * np.where(sin < 1e-12, 0.5, ang / (2.0 * np.maximum(sin, 1e-12)))


_SKEW_A, _SKEW_B = np.array([2, 0, 1]), np.array([1, 2, 0])


def _exp(r: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3] (Rodrigues)."""
    th = _norm(r)[..., None]
    small = th < 1e-12
    k = r / np.where(small[..., 0], 1.0, th[..., 0])
    K = np.zeros(r.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    return np.eye(3) + np.sin(th) * K + (1.0 - np.cos(th)) * (K @ K)


def _norm(v: np.ndarray) -> np.ndarray:
    """Euclidean norms of the rows of v [..., 3] -> [..., 1] (faster than np.linalg.norm on tiny arrays)."""
    return np.sqrt((v * v).sum(-1, keepdims=True))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(_norm(v), 1e-12)


_C1, _C2 = np.array([1, 2, 0]), np.array([2, 0, 1])  # index arrays: faster than lists


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of [..., 3] arrays (np.cross is slow on tiny arrays)."""
    return a[..., _C1] * b[..., _C2] - a[..., _C2] * b[..., _C1]


def _mT(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _mv(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched matrix-vector products [n, 3, 3] x [n, 3] -> [n, 3] (faster than einsum here)."""
    return (M @ v[..., None])[..., 0]


def _det3(M: np.ndarray) -> float:
    """Determinant of one 3x3 matrix (plain Python: np.linalg.det is slow for a single 3x3)."""
    (a, b, c), (d, e, f), (g, h, i) = M.tolist()
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


_EYE16 = np.tile(np.eye(3), (16, 1, 1))
_MIRROR_AA3 = np.array([-1.0, -1.0, 1.0])  # mirror_pose of one axis-angle (hand_model)
_MIRROR_AA45 = np.tile(_MIRROR_AA3, 15)
_MIRROR_T = np.array([1.0, 1.0, -1.0])     # mirror_translation


# ----------------------------------------------------------------------------------------
# One Euro filter
# ----------------------------------------------------------------------------------------

class OneEuroFilter:
    """One Euro filter (Casiez et al., CHI 2012) for arrays ``[N, D]`` (N signals of D components,
    e.g. [21, 3] positions in metres or [16, 4] quaternions).

    Per frame: ``dx = (x - x_prev_hat) / dt``; ``dx_hat = lowpass(dx, alpha(d_cutoff))``;
    ``cutoff = min_cutoff + beta * |dx_hat|`` (``|.|`` = Euclidean norm of each row, so the cutoff
    is isotropic per point); ``x_hat = lowpass(x, alpha(cutoff))`` with
    ``alpha(fc) = 1 / (1 + tau / dt)``, ``tau = 1 / (2 pi fc)``.

    Parameters: ``min_cutoff`` [Hz] -- the cutoff at rest (lower = less jitter, more lag when slow);
    ``beta`` [1 / (row units)] -- how fast the cutoff rises with speed (higher = less lag when fast);
    ``d_cutoff`` [Hz] -- cutoff of the speed estimate.  ``rate_hz`` is the frame rate assumed when a
    frame comes without a timestamp (seconds).  A change of array shape restarts the filter.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0, rate_hz: float = 90.0):
        for name, v in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff), ("rate_hz", rate_hz)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"OneEuroFilter: {name} must be a positive number, got {v}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"OneEuroFilter: beta must be >= 0, got {beta}")
        self.min_cutoff, self.beta, self.d_cutoff, self.rate_hz = float(min_cutoff), float(beta), float(d_cutoff), float(rate_hz)
        self.reset()

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    @staticmethod
    def _alpha(cutoff, dt):
        return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))

    def __call__(self, x: np.ndarray, t: Optional[float] = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            self._t = 0.0 if t is None else float(t)
            return x.copy()
        t = self._t + 1.0 / self.rate_hz if t is None else float(t)
        dt = t - self._t
        if not dt > 0:
            raise ValueError(f"OneEuroFilter: timestamps must increase, got {t} after {self._t}")
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = self._dx + a_d * ((x - self._x) / dt - self._dx)
        speed = _norm(self._dx)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self._x = self._x + a * (x - self._x)
        self._t = t
        return self._x.copy()


# ----------------------------------------------------------------------------------------
# Rest skeleton of the model (right-hand canonical frame)
# ----------------------------------------------------------------------------------------

class _Rest:
    """The right hand's rest data the retargeter needs (float64, canonical frame)."""

    def __init__(self, model: HandModel, shape: Optional[np.ndarray] = None):
        asset = model.asset if model.asset.side == "right" else model.asset.mirrored()
        J0 = asset.joints.astype(np.float64)                                        # [16, 3]
        tips0 = asset.render_vertices[asset.tip_vertex_ids].astype(np.float64)      # [5, 3]
        self.child = np.array([0] + [int(c) for c in _child_keypoints()])           # keypoint of each joint's child
        # the model's own bone lengths: bone_length_scales are always relative to these
        self.length0 = np.linalg.norm(np.concatenate([J0, tips0])[self.child[1:]] - J0[1:], axis=-1)  # [15]
        self.root_length0 = np.linalg.norm(J0[_LEVELS[0]] - J0[0], axis=-1)         # [5]
        self.shape = None if shape is None else _shape_array(shape)
        if self.shape is None:
            self.J, self.tips = J0, tips0
        else:  # the shaped rest skeleton (hand_model.shape_rest; mirroring keeps per-bone scales)
            J, (tips,) = shape_rest(torch.from_numpy(self.shape)[None], torch.from_numpy(J0),
                                    torch.from_numpy(tips0), PARENTS,
                                    [(torch.from_numpy(asset.render_weights[asset.tip_vertex_ids].astype(np.float64)),
                                      torch.from_numpy(tips0))])
            self.J, self.tips = J[0].numpy(), tips[0].numpy()
        self.tip_w = asset.render_weights[asset.tip_vertex_ids].astype(np.float64)  # [5, 16]
        # fingertip weights of the distal joints (finger order of _LEVELS) and of all other joints
        tw = self.tip_w[_TIP_OF_DISTAL]
        self.tip_w_distal = tw[np.arange(5), _LEVELS[2]]                            # [5]
        self.tip_w_other = tw.copy()
        self.tip_w_other[np.arange(5), _LEVELS[2]] = 0.0                            # [5, 16]
        # anatomical frames of the model's own asset: they define the pose parameters and joint
        # limits (a length shape keeps every finger bone's direction, so they fit a shaped rest too)
        self.F = joint_frames(asset)                                                # [15, 3, 3] [f a t]
        kp = np.concatenate([self.J, self.tips])                                    # [21, 3]
        self.length = np.linalg.norm(kp[self.child[1:]] - self.J[1:], axis=-1)     # [15] rest bone lengths
        self.root_length = np.linalg.norm(self.J[_LEVELS[0]] - self.J[0], axis=-1)  # [5]
        self.lim = np.radians(limits_array())                                       # [15, 3, 2]
        # rest OpenXR frames (columns X, Y, Z) of the MANO joints; the wrist's -Z points at the
        # middle MCP (the line through the middle metacarpal), +Y to the back of the hand (+Y here)
        self.Bxr = np.empty((16, 3, 3))
        self.Bxr[1:] = self.F @ _ANAT_TO_XR
        self.Bxr[0] = _xr_frame(self.J[4] - self.J[0], np.array([0.0, 1.0, 0.0]))
        self.root_centroid = self.J[_ROOT_KP].mean(0)                               # root-fit points
        self.root_centred = self.J[_ROOT_KP] - self.root_centroid
        self.tip_offset = self.tips[:, None] - self.J[None]                        # [5, 16, 3]
        self.tip_offset_distal = self.tip_offset[_TIP_OF_DISTAL]                   # finger order of _LEVELS

    def levels(self, sigma_p: float, sigma_o: float) -> list:
        """Per-level constants of the solve (see :class:`_Level`) for the given tracker noise
        (position metres, orientation radians)."""
        out = []
        for lvl, (js, par) in enumerate(zip(_LEVELS, _LEVEL_PARENTS)):
            F = self.F[js - 1]
            sd2 = 2.0 * sigma_p ** 2 / self.length[js - 1] ** 2  # variance of a bone direction from two points
            t = F[:, :, 2]
            # rest axis aligned with the tracked flexion-plane normal (21 keypoints): the child's
            # flexion axis (the plane of bones j, child is bent by the child), the distal joints' own
            g = self.F[_LEVELS[min(lvl + 1, 2)] - 1][:, :, 0]
            g = _unit(g - (g * t).sum(-1, keepdims=True) * t)
            E = np.stack([g, _cross(t, g), t], -1)
            # variance of that normal's direction relative to a twist prior of 0.2 rad, from the two bones
            pair = (lvl, lvl + 1) if lvl < 2 else (1, 2)
            plane_noise = sum(2.0 * sigma_p ** 2 / self.length[_LEVELS[k] - 1] ** 2 for k in pair) / 0.2 ** 2
            out.append(_Level(offset=self.J[js] - self.J[par], F=F, FT=_mT(F), t=t, g=g, g_side=_cross(t, g),
                              ET=_mT(E), plane_noise=plane_noise[:, None], BxrT=_mT(self.Bxr[js]),
                              lim=self.lim[js - 1], abd_sign=ABDUCTION_SIGN[js - 1],
                              w_position=(sigma_o ** 2 / (sigma_o ** 2 + sd2))[:, None]))
        return out


@dataclass
class _Level:
    """Constants of one level of five joints (fingers in the order index, middle, pinky, ring,
    thumb): rest offsets from the parents [5, 3], anatomical frames F / F^T [5, 3, 3] and their
    axes f, a, t [5, 3], rest OpenXR frames transposed [5, 3, 3], limits [5, 3, 2] radians,
    abduction signs [5], and the weight [5, 1] of the position-based bone direction (OpenXR)."""

    offset: np.ndarray
    F: np.ndarray
    FT: np.ndarray
    t: np.ndarray
    g: np.ndarray
    g_side: np.ndarray
    ET: np.ndarray
    plane_noise: np.ndarray
    BxrT: np.ndarray
    lim: np.ndarray
    abd_sign: np.ndarray
    w_position: np.ndarray


def _child_keypoints() -> np.ndarray:
    """[15] keypoint index of the child of MANO joints 1..15 (child joint, or the fingertip 16..20)."""
    child = np.empty(15, dtype=int)
    for lvl in (0, 1):
        child[_LEVELS[lvl] - 1] = _LEVELS[lvl + 1]
    child[_LEVELS[2] - 1] = _TIP_KP
    return child


def _xr_frame(forward: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenXR joint frame [X Y Z] (columns): -Z along ``forward``, +Y toward ``up`` (orthogonalised)."""
    z = -_unit(forward)
    y = _unit(up - (up @ z) * z)
    return np.stack([_cross(y, z), y, z], -1)


# ----------------------------------------------------------------------------------------
# Retargeting
# ----------------------------------------------------------------------------------------

@dataclass
class RetargetResult:
    """One hand's retargeted parameters, for ``HandModel(side=...)`` (app reference space, metres).

    ``pose`` [45] float32 axis-angle (MANO, within ``poses.JOINT_LIMITS``); ``global_orient`` [3]
    float32; ``transl`` [3] float32 metres; ``bone_length_scales`` [16] float32 (tracked / rest bone
    length per MANO joint; 1 = the model's own); ``keypoints`` [21, 3] float32 the re-posed model's
    16 joints + 5 tips (thumb, index, middle, ring, pinky); ``residuals`` [21] float32 metres,
    ``|keypoints - tracked|`` in the same order; ``held``: True when the frame was invalid and this
    is the last good result.
    """

    pose: np.ndarray
    global_orient: np.ndarray
    transl: np.ndarray
    bone_length_scales: np.ndarray
    keypoints: np.ndarray
    residuals: np.ndarray
    held: bool = False

    def shape(self) -> np.ndarray:
        """This frame's bone lengths as a ``HandModel`` shape [16, 2] float32: column 0 (length)
        = ``bone_length_scales``, column 1 (girth) = 1 (trackers see joint centres, not the
        flesh around them).  One frame's scales carry the tracker noise (2 mm on a 2-4 cm bone is
        5-10%); for rendering, average several frames with :func:`shape_from_scales`."""
        return shape_from_scales(self.bone_length_scales)


def shape_from_scales(scales, min_scale: float = 0.5, max_scale: float = 2.0) -> np.ndarray:
    """Per-bone length scales -> a ``HandModel`` shape [16, 2] float32 (girth 1).

    ``scales``: [16] (one frame's ``RetargetResult.bone_length_scales``) or [N, 16] (N frames, e.g.
    the first second of tracking: their per-bone median is used, which drops outliers and held
    frames' repeats do no harm).  Scales are clipped to [min_scale, max_scale] so a bad frame cannot
    make a degenerate hand.  Give the result to ``HandState(shape=...)`` for rendering and to
    :meth:`HandRetargeter.set_shape` so later frames are solved on the same skeleton."""
    a = np.asarray(scales, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 16:
        a = np.median(a, axis=0)
    if a.shape != (16,):
        raise ValueError(f"scales: expected [16] or [N, 16] bone length scales, got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError("scales: contains NaN or infinite values")
    out = np.ones((16, 2), np.float32)
    out[:, 0] = np.clip(a, min_scale, max_scale)
    return out


def _shape_array(shape) -> np.ndarray:
    a = np.asarray(shape, dtype=np.float64)
    if a.shape != SHAPE_DIM:
        raise ValueError(f"shape: expected [16, 2] (length, girth scale per bone), got {list(a.shape)}")
    if not (np.isfinite(a).all() and (a > 0).all()):
        raise ValueError("shape: scales must be finite and > 0")
    return a


class HandRetargeter:
    """Retargets one tracked hand per frame onto ``model`` (a :class:`HandModel`; its ``side`` is
    the tracked hand's side).  See the module docstring for the method and joint mapping.

    ``position_noise_mm`` / ``orientation_noise_deg``: the tracker noise to expect (standard
    deviation per coordinate / per rotation-vector component), which sets the weights of positions
    vs orientations.  ``position_filter`` / ``orientation_filter``: optional :class:`OneEuroFilter`
    for the tracked positions ([21, 3], metres) and OpenXR quaternions ([16, 4], kept in one
    hemisphere and renormalised); each retargeter owns its filters (use one retargeter per hand).
    Tested settings: ``OneEuroFilter()`` for positions (min_cutoff 1 Hz, beta 5 per m/s, d_cutoff
    1 Hz: at rest the cutoff stays near 1 Hz, at a hand speed of 0.5 m/s it is 3.5 Hz) and
    ``OneEuroFilter(beta=0.5)`` for quaternions (their speed is about half the angular speed in
    rad/s).
    """

    def __init__(self, model: HandModel, position_noise_mm: float = 2.0, orientation_noise_deg: float = 2.0,
                 position_filter: Optional[OneEuroFilter] = None,
                 orientation_filter: Optional[OneEuroFilter] = None, shape=None):
        if not isinstance(model, HandModel):
            raise ValueError(f"model: expected a HandModel, got {type(model).__name__}")
        if not (position_noise_mm > 0 and orientation_noise_deg > 0):
            raise ValueError("position_noise_mm and orientation_noise_deg must be > 0")
        self.side = model.side
        self.model = model
        self.sigma_p = float(position_noise_mm) * 1e-3
        self.sigma_o = math.radians(float(orientation_noise_deg))
        self.set_shape(shape)
        self.position_filter = position_filter
        self.orientation_filter = orientation_filter
        self.last: Optional[RetargetResult] = None

    def set_shape(self, shape=None) -> None:
        """Solve later frames on the model shaped by ``shape`` [16, 2] (per-bone length, girth; see
        :func:`~relit_hands.hand_model.shape_rest`; None = the model's own proportions), e.g. the
        :func:`shape_from_scales` of the first frames' ``bone_length_scales``.  Results are then
        for ``HandModel(...)(pose, global_orient, transl, shape=shape)``: their ``keypoints`` /
        ``residuals`` are the shaped model's; ``bone_length_scales`` stay relative to the
        unshaped model.  Only the bone lengths change the solve (the girths move no joint of a
        finger; the palm's girth moves the knuckles a little)."""
        self.rest = _Rest(self.model, shape)
        self.shape = None if self.rest.shape is None else self.rest.shape.astype(np.float32)
        self.levels = self.rest.levels(self.sigma_p, self.sigma_o)

    def reset(self) -> None:
        """Forget the last good result and the filters' state."""
        self.last = None
        for f in (self.position_filter, self.orientation_filter):
            if f is not None:
                f.reset()

    # -- inputs ---------------------------------------------------------------------------
    def retarget_openxr(self, positions, orientations, location_flags=None,
                        timestamp: Optional[float] = None) -> RetargetResult:
        """``XrHandJointLocationEXT`` data of one hand: ``positions`` [26, 3] metres and
        ``orientations`` [26, 4] quaternions (x, y, z, w) in the app reference space, joints in
        ``XrHandJointEXT`` order; ``location_flags`` [26] ``XrSpaceLocationFlags`` (default: all
        valid; the 21 mapped joints need ORIENTATION_VALID and POSITION_VALID, the TRACKED bits are
        not required); ``timestamp`` seconds (for smoothing; e.g. ``XrTime * 1e-9``)."""
        pos = _shaped(positions, "positions", (26, 3))
        quat = _shaped(orientations, "orientations", (26, 4))
        ok = True
        if location_flags is not None:
            flags = np.asarray(location_flags)
            if flags.shape != (26,) or not np.issubdtype(flags.dtype, np.integer):
                raise ValueError(f"location_flags: expected integer XrSpaceLocationFlags of shape [26], "
                                 f"got {flags.dtype} {list(flags.shape)}")
            ok = bool(np.all((flags[_XR_OF_KEYPOINT] & _XR_VALID) == _XR_VALID))
        kp = pos[_XR_OF_KEYPOINT]
        q = quat[_XR_OF_KEYPOINT[:16]]
        qn = _norm(q)
        if not (ok and np.isfinite(kp).all() and np.isfinite(q).all() and (qn > 1e-6).all()):
            return self._hold("invalid or non-finite OpenXR joints")
        q = q / qn
        if self.orientation_filter is not None:
            prev = self.orientation_filter._x
            if prev is not None and prev.shape == q.shape:  # same hemisphere as the filtered state
                q = np.where((q * prev).sum(-1, keepdims=True) < 0, -q, q)
            q = _unit(self.orientation_filter(q, timestamp))
        O = quat_to_matrix(q)
        if self.side == "left":
            O = _MIRROR @ O @ _FLIP_X
        return self._finish(self._smooth_positions(kp, timestamp), O)

    def retarget_keypoints21(self, keypoints, confidences=None, min_confidence: float = 0.5,
                             timestamp: Optional[float] = None) -> RetargetResult:
        """21 keypoints [21, 3] metres in the app reference space, MediaPipe / OpenPose order;
        optional ``confidences`` [21] (a keypoint below ``min_confidence`` makes the frame invalid)."""
        kp21 = _shaped(keypoints, "keypoints", (21, 3))
        ok = True
        if confidences is not None:
            c = _shaped(confidences, "confidences", (21,))
            ok = bool(np.all(c >= min_confidence))
        if not (ok and np.isfinite(kp21).all()):
            return self._hold("invalid, low-confidence or non-finite keypoints")
        return self._finish(self._smooth_positions(kp21[_KP21_OF_KEYPOINT], timestamp), None)

    # -- internals ------------------------------------------------------------------------
    def _smooth_positions(self, kp, timestamp):
        return kp if self.position_filter is None else self.position_filter(kp, timestamp)

    def _hold(self, why: str) -> RetargetResult:
        if self.last is None:
            raise ValueError(f"{why} and no previous good pose to hold")
        return replace(self.last, held=True)

    def _finish(self, kp: np.ndarray, O: Optional[np.ndarray]) -> RetargetResult:
        if self.side == "left":
            kp = kp @ _MIRROR
        pose, go, transl, fitted = self._solve(kp, O)
        scales = np.empty(16)
        scales[1:] = _norm(kp[self.rest.child[1:]] - kp[1:16])[:, 0] / self.rest.length0
        scales[0] = (_norm(kp[_LEVELS[0]] - kp[0])[:, 0] / self.rest.root_length0).sum() / 5.0  # mean
        residuals = _norm(fitted - kp)[:, 0]
        if self.side == "left":  # mirror_pose / mirror_translation, with precomputed signs
            pose, go, transl, fitted = pose * _MIRROR_AA45, go * _MIRROR_AA3, transl * _MIRROR_T, fitted @ _MIRROR
        f32 = np.float32
        self.last = RetargetResult(pose.astype(f32), go.astype(f32), transl.astype(f32), scales.astype(f32),
                                   fitted.astype(f32), residuals.astype(f32), held=False)
        return self.last

    def _solve(self, kp: np.ndarray, O: Optional[np.ndarray]):
        """Right-hand solve: tracked keypoints [21, 3] (model order) and, for OpenXR, the tracked
        joint frames O [16, 3, 3] of the MANO joints -> (pose [45], global_orient [3], transl [3],
        re-posed keypoints [21, 3])."""
        r = self.rest
        J = r.J
        # 1. root: weighted Kabsch (points, plus the OpenXR wrist frame's axes as directions)
        Y = kp[_ROOT_KP]
        cx, cy = r.root_centroid, Y.sum(0) / len(_ROOT_KP)  # (= Y.mean(0), without its overhead)
        H = r.root_centred.T @ (Y - cy) / self.sigma_p ** 2
        if O is not None:
            H = H + r.Bxr[0] @ O[0].T / self.sigma_o ** 2
        U, _, Vt = np.linalg.svd(H)
        R0 = Vt.T @ U.T
        if _det3(R0) < 0:  # a reflection: flip the smallest singular direction
            Vt[2] = -Vt[2]
            R0 = Vt.T @ U.T
        transl = cy - J[0] - R0 @ (cx - J[0])

        Qw = _EYE16.copy()  # world rotations of the model's joints
        Qw[0] = R0
        P = np.zeros((16, 3))  # model joint positions
        P[0] = J[0] + transl
        local = np.empty((16, 3, 3))  # local rotations; 0 = global orientation
        local[0] = R0
        if O is None:  # flexion planes of the tracked fingers: normals of bones (0, 1) and (1, 2)
            b = _unit(np.diff(kp[_CHAINS], axis=1))            # [5, 3, 3] bone directions
            planes = (_cross(b[:, 0], b[:, 1]), _cross(b[:, 1], b[:, 2]))
        for lvl, (js, par, c) in enumerate(zip(_LEVELS, _LEVEL_PARENTS, self.levels)):
            Qp = Qw[par]
            P[js] = P[par] + _mv(Qp, c.offset)
            if lvl < 2:
                target = kp[js + 1]
            else:  # fingertip: remove the other joints' share of its skinning (LBS) first
                # (joints not solved yet, i.e. the distal ones, are still identity: their weight is 0 here)
                other = np.einsum("tj,jab,tjb->ta", r.tip_w_other, Qw, r.tip_offset_distal) + r.tip_w_other @ P
                target = (kp[_TIP_KP] - other) / r.tip_w_distal[:, None]
            d = _unit(target - P[js])
            if O is None:
                # twist: the rest axis g (a flexion axis, see _Level) goes to the flexion-plane normal n,
                # blended toward where the parent carries it by the plane's reliability
                ref = _mv(Qp, c.g)
                n = planes[1] * np.sign((planes[1] * ref).sum(-1, keepdims=True) + 1e-30)
                if lvl == 0:  # the MCP / CMC also sees the planes of both its child joints
                    n = n + planes[0] * np.sign((planes[0] * ref).sum(-1, keepdims=True) + 1e-30)
                s2 = (n * n).sum(-1, keepdims=True)
                conf = s2 / (s2 + c.plane_noise)
                u = n * (conf / np.sqrt(s2 + 1e-30)) + (1.0 - conf) * ref
                u = u - (u * d).sum(-1, keepdims=True) * d
                un = _norm(u)
                if np.any(un < 1e-6):  # u along the bone: take the axis from the parent's frame instead
                    u = np.where(un < 1e-6, _cross(d, _mv(Qp, c.g_side)), u)
                    un = _norm(u)
                u = u / un
                Qd = np.stack([u, _cross(d, u), d], -1) @ c.ET
            else:
                Qo = O[js] @ c.BxrT
                cur = _mv(Qo, c.t)
                axis = _cross(cur, d)
                sin = _norm(axis)
                ang = np.arctan2(sin, (cur * d).sum(-1, keepdims=True)) * c.w_position
                Qd = _exp(axis * (ang / np.maximum(sin, 1e-12))) @ Qo
            Rl = _clamp(_mT(Qp) @ Qd, c)
            local[js] = Rl
            Qw[js] = Qp @ Rl
        fitted = np.empty((21, 3))
        fitted[:16] = P
        fitted[16:] = np.einsum("tj,jab,tjb->ta", r.tip_w, Qw, r.tip_offset) + r.tip_w @ P  # LBS of the tips
        aa = _log(local)
        return aa[1:].reshape(45), aa[0], transl, fitted


def _clamp(Rl: np.ndarray, lv: "_Level") -> np.ndarray:
    """Local rotations [5, 3, 3] (rest world axes) of one level's joints -> the same, with their
    anatomical angles (flexion, abduction, twist: Euler X-Y-Z in the joint frames ``F``, see
    relit_hands.poses) clamped to the joint limits."""
    F, FT, abd_sign = lv.F, lv.FT, lv.abd_sign
    A = FT @ Rl @ F
    raw = np.empty((len(A), 3))
    raw[:, 0] = np.arctan2(-A[:, 1, 2], A[:, 2, 2])
    raw[:, 1] = np.arcsin(np.minimum(np.maximum(A[:, 0, 2], -1.0), 1.0)) * abd_sign
    raw[:, 2] = np.arctan2(-A[:, 0, 1], A[:, 0, 0])
    ang = np.minimum(np.maximum(raw, lv.lim[..., 0]), lv.lim[..., 1])
    if (ang == raw).all():
        return Rl
    a, b, c = ang[:, 0], ang[:, 1] * abd_sign, ang[:, 2]
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    # Rx(a) @ Ry(b) @ Rz(c)
    M = np.stack([cb * cc, -cb * sc, sb,
                  sa * sb * cc + ca * sc, -sa * sb * sc + ca * cc, -sa * cb,
                  -ca * sb * cc + sa * sc, ca * sb * sc + sa * cc, ca * cb], -1).reshape(-1, 3, 3)
    return F @ M @ FT


def _shaped(x, name: str, shape: tuple) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a numeric array of shape {list(shape)}") from None
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(a.shape)}")
    return a


# ----------------------------------------------------------------------------------------
# Synthetic trackers (from the hand model itself)
# ----------------------------------------------------------------------------------------

def _posed(model: HandModel, pose, global_orient, transl, shape=None):
    out = model(np.asarray(pose, np.float64), None if global_orient is None else np.asarray(global_orient, np.float64),
                None if transl is None else np.asarray(transl, np.float64),
                shape=None if shape is None else _shape_array(shape), meshes=())
    return out.keypoints[0].double().numpy(), out.joint_transforms[0].double().numpy()


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def synthetic_openxr_joints(model: HandModel, pose, global_orient=None, transl=None, noise_mm: float = 2.0,
                            noise_deg: float = 2.0, rng=None, shape=None) -> dict:
    """OpenXR hand joints of the posed ``model`` (its side), as a runtime would report them.

    Returns ``{"positions": [26, 3] float32 metres, "orientations": [26, 4] float32 (x, y, z, w),
    "location_flags": [26] int64 (all valid and tracked)}`` in XrHandJointEXT order, with Gaussian
    noise: ``noise_mm`` per position coordinate, and a rotation by a vector with ``noise_deg`` per
    component applied to each joint frame.  Mapped joints are the model's posed joints / skinned
    fingertips (see the mapping table); frames are the rest OpenXR frames (-Z along the bone, +Y
    dorsal, right-handed for both hands) carried by the joint's world rotation (tips: the distal
    joint's).  The unmapped joints are made rigid with the wrist: each finger metacarpal at 25% of
    the way from the wrist to its MCP, the palm half way along the middle metacarpal, both
    oriented along their bone like the wrist.  ``shape`` [16, 2]: the tracked hand is the model
    shaped by it (``HandModel(..., shape=shape)``; its metacarpals sit on the shaped palm).
    """
    rest = _Rest(model, shape)
    kp, G = _posed(model, pose, global_orient, transl, shape)
    Q, t0 = G[:, :3, :3], G[0, :3, 3]
    left = model.side == "left"
    M = _MIRROR if left else np.eye(3)
    pos = np.empty((26, 3))
    frames = np.empty((26, 3, 3))
    pos[_XR_OF_KEYPOINT] = kp
    owner = np.concatenate([np.arange(16), _LEVELS[2][np.argsort(_TIP_OF_DISTAL)]])  # tips 16..20 -> distal joint
    rest_frames = rest.Bxr[owner]
    up = np.array([0.0, 1.0, 0.0])
    for xr, mcp in _XR_METACARPALS.items():
        base = rest.J[0] + 0.25 * (rest.J[mcp] - rest.J[0])
        pos[xr] = Q[0] @ (M @ base - M @ rest.J[0]) + t0
        frames[xr] = Q[0] @ M @ _xr_frame(rest.J[mcp] - base, up) @ (_FLIP_X if left else np.eye(3))
    pos[0] = 0.5 * (pos[11] + kp[4])
    frames[0] = frames[11]
    side_frames = M @ rest_frames @ (_FLIP_X if left else np.eye(3))
    frames[_XR_OF_KEYPOINT] = Q[owner] @ side_frames
    g = _rng(rng)
    pos = pos + g.normal(0.0, noise_mm * 1e-3, pos.shape)
    frames = _exp(g.normal(0.0, math.radians(noise_deg), (26, 3))) @ frames
    return {"positions": pos.astype(np.float32), "orientations": matrix_to_quat(frames).astype(np.float32),
            "location_flags": np.full(26, 0xF, dtype=np.int64)}


def synthetic_keypoints21(model: HandModel, pose, global_orient=None, transl=None, noise_mm: float = 2.0,
                          rng=None, shape=None) -> np.ndarray:
    """21 keypoints [21, 3] float32 metres (MediaPipe / OpenPose order) of the posed ``model``
    (its joints and skinned fingertips; shaped by ``shape`` [16, 2] if given), with Gaussian noise
    ``noise_mm`` per coordinate."""
    kp, _ = _posed(model, pose, global_orient, transl, shape)
    out = kp[KP21_TO_KEYPOINT] + _rng(rng).normal(0.0, noise_mm * 1e-3, (21, 3))
    return out.astype(np.float32)
