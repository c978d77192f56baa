"""Anatomical joint frames, joint limits and pose presets for the MANO-compatible hand.

Anatomical angles
-----------------
Each of the 15 finger joints (MANO joints 1..15, in MANO order) gets three angles in degrees,
``(flexion, abduction, twist)``, defined in a local frame built from the asset's REST joints
(right hand, canonical frame: fingers +X, palm normal -Y, thumb -Z):

* twist axis ``t`` = bone direction: this joint -> its child joint, or -> the fingertip vertex
  (``tip_vertex_ids``) for the distal joints;
* flexion axis ``f`` = ``normalize(t x n)`` with ``n`` the palmar normal: perpendicular to the
  bone and to the palm normal.  POSITIVE flexion curls the finger toward the palm (-Y);
* abduction axis ``a = t x f`` (so ``(f, a, t)`` is a right-handed frame; ``a`` points to the
  back of the hand).  A positive rotation about ``a`` swings the bone toward the radial (thumb,
  -Z) side.  Anatomical ABDUCTION is "away from the middle finger", so the stored abduction
  angle is ``ABDUCTION_SIGN * (rotation about a)``: +1 for index and middle (for the middle
  finger, positive = radial deviation, by convention), -1 for ring and pinky (they abduct toward
  the ulnar side, +Z).  For the thumb, positive abduction = palmar abduction (away from the palm).
* twist: right-hand rule about ``t`` (distal direction).

Thumb (oblique frame).  The thumb column is pronated: its pad does not face the palm normal but
is rotated about the thumb's axis toward the fingers.  For the thumb joints ``n`` is
``THUMB_PALMAR_NORMAL`` = normalize(0, -0.55, +0.85) (the pad faces ~57 degrees away from -Y
toward +Z, i.e. toward the palm's ulnar side; the procedural asset's thumb nail is built with
the same ~57 degree pronation).  Thumb flexion (CMC, MCP, IP) therefore moves the thumb across
the palm toward the little finger (the anatomical flexion direction of the thumb, which for the
CMC joint lies close to the palm plane), and CMC abduction (about ``a``) lifts it away from
the palm (palmar abduction).  Opposition = CMC flexion + abduction + pronation (positive twist).

Euler order.  The joint's rotation in its frame is decomposed as
``R_local = R_f(flexion) @ R_a(abduction) @ R_t(twist)`` (intrinsic flexion -> abduction ->
twist, i.e. Cardan X-Y-Z with x = f, y = a, z = t), the joint coordinate system of Grood &
Suntay (1983) that the ISB recommends for the hand (Wu et al., J Biomech 38:981, 2005):
flexion about the proximal segment's axis, twist about the distal bone, abduction floating.
The world rotation (MANO axis-angle, rest world axes) is ``R = F R_local F^T`` with
``F = [f a t]`` (columns).  The decomposition is unique for |abduction| < 90 degrees, which all
limits respect.

Left hand: frames and presets are defined on the right hand; the left hand's parameters for
the same anatomical angles are ``mirror_pose(right)`` (see ``relit_hands.hand_model``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .hand_model import HandAsset, mirror_pose, rodrigues

__all__ = [
    "FINGER_JOINT_NAMES",
    "ABDUCTION_SIGN",
    "THUMB_PALMAR_NORMAL",
    "JOINT_LIMITS",
    "POSE_PRESETS",
    "PRESET_ANGLES",
    "joint_frames",
    "anatomical_to_pose",
    "pose_to_anatomical",
    "clamp_pose",
    "is_within_limits",
    "limits_array",
    "pose_preset",
    "matrix_to_axis_angle",
]

FINGER_JOINT_NAMES = [
    "index_mcp", "index_pip", "index_dip",
    "middle_mcp", "middle_pip", "middle_dip",
    "pinky_mcp", "pinky_pip", "pinky_dip",
    "ring_mcp", "ring_pip", "ring_dip",
    "thumb_cmc", "thumb_mcp", "thumb_ip",
]
# child of each MANO joint 1..15 (None = distal joint -> fingertip, index into tip_vertex_ids)
_CHILD = {1: 2, 2: 3, 4: 5, 5: 6, 7: 8, 8: 9, 10: 11, 11: 12, 13: 14, 14: 15}
_TIP = {3: 1, 6: 2, 9: 4, 12: 3, 15: 0}  # tip order thumb, index, middle, ring, pinky

ABDUCTION_SIGN = np.array([1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, 1, 1, 1], dtype=np.float64)
PALM_NORMAL = np.array([0.0, -1.0, 0.0])
THUMB_PALMAR_NORMAL = np.array([0.0, -0.55, 0.85]) / np.linalg.norm([0.0, -0.55, 0.85])

# Joint limits, degrees, (min, max) for (flexion, abduction, twist).
# Sources: active range-of-motion tables -- AAOS, "Joint Motion: Method of Measuring and
# Recording" (1965; finger MCP 0-90 flexion with hyperextension, PIP 0-100, DIP 0-90, thumb
# MCP 0-50, IP 0-80 with ~20 hyperextension, CMC palmar abduction ~70) and Hume et al.,
# "Functional range of motion of the joints of the hand", J Hand Surg Am 15(2):240-243 (1990;
# active MCP ~100, PIP ~105, DIP ~85, thumb MCP ~56, IP ~73).  Rounded; hyperextension kept
# modest (MCP -20, DIP -10, thumb IP -15).  Lateral deviation of the hinge joints (PIP, DIP,
# IP) and axial twist are not voluntary motions; they get small ranges (+-5..15 degrees) so
# that soft-tissue play and tracker noise stay representable.  The thumb CMC is a saddle joint:
# flexion across the palm ~-20..50, palmar abduction ~-10..70, pronation during opposition up
# to ~40 (Cooney et al., J Bone Joint Surg Am 63:1371, 1981, report ~50 flexion-extension and
# ~40 abduction-adduction arcs; rounded up to include opposition).
_MCP = ((-20.0, 90.0), (-20.0, 20.0), (-10.0, 10.0))
_MCP_MIDDLE = ((-20.0, 90.0), (-10.0, 10.0), (-10.0, 10.0))
_PIP = ((0.0, 110.0), (-5.0, 5.0), (-5.0, 5.0))
_DIP = ((-10.0, 80.0), (-5.0, 5.0), (-5.0, 5.0))
JOINT_LIMITS = {
    "index_mcp": _MCP, "index_pip": _PIP, "index_dip": _DIP,
    "middle_mcp": _MCP_MIDDLE, "middle_pip": _PIP, "middle_dip": _DIP,
    "pinky_mcp": ((-20.0, 90.0), (-20.0, 25.0), (-10.0, 10.0)), "pinky_pip": _PIP, "pinky_dip": _DIP,
    "ring_mcp": _MCP, "ring_pip": _PIP, "ring_dip": _DIP,
    "thumb_cmc": ((-20.0, 50.0), (-10.0, 70.0), (-15.0, 40.0)),
    "thumb_mcp": ((-10.0, 60.0), (-10.0, 10.0), (-10.0, 15.0)),
    "thumb_ip": ((-15.0, 80.0), (-5.0, 5.0), (-5.0, 5.0)),
}


def limits_array(limits: Optional[dict] = None) -> np.ndarray:
    """[15, 3, 2] (min, max) degrees in MANO joint order 1..15."""
    limits = JOINT_LIMITS if limits is None else limits
    return np.array([limits[n] for n in FINGER_JOINT_NAMES], dtype=np.float64)


# ----------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------

_FRAME_CACHE: dict = {}


def _resolve_asset(asset) -> HandAsset:
    if asset is None:
        key = "__default__"
        if key not in _FRAME_CACHE:
            _FRAME_CACHE[key] = HandAsset.load()
        return _FRAME_CACHE[key]
    if isinstance(asset, HandAsset) or (hasattr(asset, "joints") and hasattr(asset, "tip_vertex_ids")):
        return asset
    return HandAsset.load(asset)


def joint_frames(asset=None) -> np.ndarray:
    """[15, 3, 3] float64 anatomical frames of the RIGHT hand; columns (flexion, abduction,
    twist) in canonical world axes, for MANO joints 1..15.  ``asset``: HandAsset, npz path, or
    None (shipped asset).  A left asset is mirrored back to the right hand first."""
    if isinstance(asset, np.ndarray) and asset.shape == (15, 3, 3):
        return asset
    asset = _resolve_asset(asset)
    if getattr(asset, "side", "right") == "left":
        asset = asset.mirrored()
    J = asset.joints.astype(np.float64)
    tips = asset.render_vertices[asset.tip_vertex_ids].astype(np.float64)
    F = np.zeros((15, 3, 3))
    for j in range(1, 16):
        end = J[_CHILD[j]] if j in _CHILD else tips[_TIP[j]]
        t = end - J[j]
        nt = np.linalg.norm(t)
        if nt < 1e-9:
            raise ValueError(f"hand asset {getattr(asset, 'source', '?')}: joint {j} has a zero-length bone")
        t = t / nt
        n = THUMB_PALMAR_NORMAL if j >= 13 else PALM_NORMAL
        f = np.cross(t, n)
        nf = np.linalg.norm(f)
        if nf < 1e-6:
            raise ValueError(f"hand asset {getattr(asset, 'source', '?')}: joint {j}'s bone is parallel to the palm normal")
        f = f / nf
        a = np.cross(t, f)
        F[j - 1] = np.stack([f, a, t], axis=1)
    return F


def _frames_tensor(asset, dtype, device):
    return torch.as_tensor(joint_frames(asset), dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------
# Rotation helpers
# ----------------------------------------------------------------------------------------

def _rx(a):
    c, s, o, l = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([l, o, o, o, c, -s, o, s, c], -1).reshape(*a.shape, 3, 3)


def _ry(a):
    c, s, o, l = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, o, s, o, l, o, -s, o, c], -1).reshape(*a.shape, 3, 3)


def _rz(a):
    c, s, o, l = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, -s, o, s, c, o, o, o, l], -1).reshape(*a.shape, 3, 3)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3] (angle in [0, pi]).

    Via a unit quaternion (Shepperd's branch choice: the largest of w, x, y, z), robust for all
    angles including pi."""
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    tr = m00 + m11 + m22
    # candidate quaternions (w, x, y, z), each scaled by 4 * its dominant component
    q_w = torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    q_x = torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1)
    q_y = torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1)
    q_z = torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1)
    cands = torch.stack([q_w, q_x, q_y, q_z], -2)  # [..., 4, 4]
    diag = torch.stack([1 + tr, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    idx = diag.argmax(-1)
    q = torch.gather(cands, -2, idx[..., None, None].expand(*idx.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)  # w >= 0 -> angle in [0, pi]
    w, v = q[..., 0], q[..., 1:]
    s = v.norm(dim=-1)
    angle = 2 * torch.atan2(s, w)
    small = s < 1e-7
    s_safe = torch.where(small, torch.ones_like(s), s)
    scale = torch.where(small, 2.0 / w.clamp_min(1e-12), angle / s_safe)
    return v * scale[..., None]


def _euler_from_local(Rl: torch.Tensor) -> torch.Tensor:
    """R = Rx(a) Ry(b) Rz(c) -> (a, b, c) radians."""
    b = torch.asin(Rl[..., 0, 2].clamp(-1.0, 1.0))
    a = torch.atan2(-Rl[..., 1, 2], Rl[..., 2, 2])
    c = torch.atan2(-Rl[..., 0, 1], Rl[..., 0, 0])
    return torch.stack([a, b, c], -1)


def _to_tensor(x, name):
    if torch.is_tensor(x):
        return x, True
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), False


# ----------------------------------------------------------------------------------------
# Conversions
# ----------------------------------------------------------------------------------------

def anatomical_to_pose(angles, asset=None, side: str = "right"):
    """Anatomical angles [..., 15, 3] degrees (flexion, abduction, twist) -> MANO pose [..., 45].

    ``asset``: HandAsset / npz path / precomputed ``joint_frames`` array / None (shipped).
    Torch in -> torch out (differentiable); numpy in -> numpy float32 out.
    """
    x, is_t = _to_tensor(angles, "angles")
    if x.shape[-2:] != (15, 3):
        raise ValueError(f"angles: expected shape [..., 15, 3], got {list(x.shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.float64
    x = x.to(dtype)
    F = _frames_tensor(asset, dtype, x.device)
    sign = torch.as_tensor(ABDUCTION_SIGN, dtype=dtype, device=x.device)
    r = torch.deg2rad(x)
    Rl = _rx(r[..., 0]) @ _ry(r[..., 1] * sign) @ _rz(r[..., 2])
    Rw = F @ Rl @ F.transpose(-1, -2)
    pose = matrix_to_axis_angle(Rw).reshape(*x.shape[:-2], 45)
    if side == "left":
        pose = mirror_pose(pose)
    elif side != "right":
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return pose if is_t else pose.numpy().astype(np.float32)


def pose_to_anatomical(pose, asset=None, side: str = "right"):
    """MANO pose [..., 45] -> anatomical angles [..., 15, 3] degrees (inverse of
    :func:`anatomical_to_pose`; Euler order flexion -> abduction -> twist, see module doc)."""
    p, is_t = _to_tensor(pose, "pose")
    if p.shape[-1] != 45:
        raise ValueError(f"pose: expected shape [..., 45], got {list(p.shape)}")
    dtype = p.dtype if p.is_floating_point() else torch.float64
    p = p.to(dtype)
    if side == "left":
        p = mirror_pose(p)
    elif side != "right":
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    F = _frames_tensor(asset, dtype, p.device)
    Rw = rodrigues(p.reshape(*p.shape[:-1], 15, 3))
    Rl = F.transpose(-1, -2) @ Rw @ F
    e = torch.rad2deg(_euler_from_local(Rl))
    sign = torch.as_tensor(ABDUCTION_SIGN, dtype=dtype, device=p.device)
    e = torch.stack([e[..., 0], e[..., 1] * sign, e[..., 2]], -1)
    return e if is_t else e.numpy()


def clamp_pose(pose, asset=None, side: str = "right", limits: Optional[dict] = None):
    """Project a pose onto the joint limits (clamping each anatomical angle)."""
    p, is_t = _to_tensor(pose, "pose")
    dtype = p.dtype if p.is_floating_point() else torch.float64
    work = p.to(torch.float64)
    ang = pose_to_anatomical(work, asset, side)
    lim = torch.as_tensor(limits_array(limits), dtype=torch.float64, device=p.device)
    inside = ((ang >= lim[..., 0]) & (ang <= lim[..., 1])).all(-1)  # [..., 15]
    clamped = torch.maximum(torch.minimum(ang, lim[..., 1]), lim[..., 0])
    new = anatomical_to_pose(clamped, asset, side)
    # joints already inside their limits keep their exact parameters
    old = work.reshape(*work.shape[:-1], 15, 3)
    out = torch.where(inside[..., None], old, new.reshape(old.shape)).reshape(work.shape).to(dtype)
    return out if is_t else out.numpy().astype(np.asarray(pose).dtype if np.issubdtype(np.asarray(pose).dtype, np.floating) else np.float32)


def is_within_limits(pose, asset=None, side: str = "right", limits: Optional[dict] = None,
                     tol_deg: float = 1e-3):
    """True where every joint angle of ``pose`` [..., 45] lies inside its limits (+- tol)."""
    p, _ = _to_tensor(pose, "pose")
    ang = pose_to_anatomical(p.to(torch.float64), asset, side)
    lim = torch.as_tensor(limits_array(limits), dtype=torch.float64, device=p.device)
    ok = ((ang >= lim[..., 0] - tol_deg) & (ang <= lim[..., 1] + tol_deg)).all(-1).all(-1)
    return ok.cpu().numpy() if ok.dim() else bool(ok)


# ----------------------------------------------------------------------------------------
# Presets (right hand, anatomical degrees; rows = MANO joints 1..15)
# ----------------------------------------------------------------------------------------

def _hand(index, middle, pinky, ring, thumb):
    """Each argument: 3 joints x (flexion, abduction, twist)."""
    return np.array([*index, *middle, *pinky, *ring, *thumb], dtype=np.float64)


def _f(mcp, pip, dip, abd=0.0):
    return ((mcp, abd, 0.0), (pip, 0.0, 0.0), (dip, 0.0, 0.0))


# Thumb angles of fist / point / pinch / ok were fitted (then rounded) with the differentiable
# kinematics on the procedural skeleton (tools/hand_shape.py) and the shipped asset (seed 7):
# fist / point put the thumb tip
# over the middle phalanges of index and middle; pinch / ok bring the thumb tip ~1 cm from the
# index tip (tests check < 1.5 cm on the shipped asset).
_FIST_FINGERS = dict(index=_f(85, 100, 65), middle=_f(88, 100, 65), pinky=_f(90, 100, 65),
                     ring=_f(90, 100, 65))
PRESET_ANGLES = {
    "flat": np.zeros((15, 3)),
    "relaxed": _hand(_f(15, 20, 10, 3), _f(20, 28, 12), _f(30, 38, 16, 4), _f(25, 33, 14, 2),
                     ((10.0, 15.0, 5.0), (10.0, 0.0, 0.0), (10.0, 0.0, 0.0))),
    "fist": _hand(**_FIST_FINGERS, thumb=((15.0, 0.0, 14.0), (41.0, 0.0, 0.0), (46.0, 0.0, 0.0))),
    "point": _hand(_f(0, 0, 0), *list(_FIST_FINGERS.values())[1:],
                   ((22.0, -4.0, 0.0), (24.0, 0.0, 0.0), (4.0, 0.0, 0.0))),
    "pinch": _hand(((60.0, 10.0, 5.0), (52.0, 0.0, 0.0), (27.0, 0.0, 0.0)),
                   _f(20, 25, 10), _f(25, 30, 12), _f(22, 28, 10),
                   ((30.0, 22.0, 14.0), (8.0, 0.0, 0.0), (4.0, 0.0, 0.0))),
    "ok": _hand(_f(45, 50, 20), _f(5, 5, 2), _f(5, 5, 2, 12), _f(5, 5, 2, 5),
                ((40.0, 6.0, 5.0), (0.0, 0.0, 0.0), (-5.0, 0.0, 0.0))),
    "thumbs_up": _hand(**_FIST_FINGERS, thumb=((-10.0, 0.0, 0.0), (0.0, 0.0, 0.0), (-10.0, 0.0, 0.0))),
    "spread": _hand(_f(0, 0, 0, 15), _f(0, 0, 0, 0), _f(0, 0, 0, 22), _f(0, 0, 0, 12),
                    ((-15.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))),
}
POSE_PRESETS = tuple(PRESET_ANGLES)


def pose_preset(name: str, side: str = "right", asset=None) -> np.ndarray:
    """MANO pose [45] (float32) of a named preset for ``side``; the left hand's is the mirror."""
    if name not in PRESET_ANGLES:
        raise ValueError(f"unknown pose preset {name!r}; available: {list(POSE_PRESETS)}")
    return anatomical_to_pose(PRESET_ANGLES[name], asset, side)
