"""Procedural hand shape: skeleton, signed distance field and anatomical landmarks.

Everything here is in the canonical rest frame of the RIGHT hand (docs/conventions.md):
metres, wrist joint at the origin, fingers along +X, palm normal -Y, thumb on the -Z side,
rest pose = flat hand with the fingers slightly spread.

Proportions follow adult anthropometry (hand length wrist crease -> middle fingertip about
18.5 cm, palm breadth about 8.5 cm; phalanx length ratios close to the published
proximal : middle : distal ~ 1 : 0.6 : 0.45 for the long fingers). ``scale`` multiplies all
lengths. The field is a smooth union of tapered, elliptical capsules (phalanges, metacarpals,
forearm stub) and ellipsoids (thenar and hypothenar eminences, finger pads, knuckles, nails),
evaluated vectorised on numpy arrays of points ``[..., 3]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hand_model import JOINT_NAMES, PARENTS, TIP_ORDER  # noqa: F401  (re-exported: MANO order, one definition)

# First joint of each finger chain, in MANO order.
FINGER_CHAINS = {"index": 1, "middle": 4, "pinky": 7, "ring": 10, "thumb": 13}


@dataclass(frozen=True)
class Skeleton:
    """Rest skeleton of the right hand.

    joints: [16, 3] metres, MANO order.  tips: [5, 3] fingertip ends, TIP_ORDER.
    radius: [16] skin radius (half width) at each joint; tip_radius: [5].
    """

    joints: np.ndarray
    tips: np.ndarray
    radius: np.ndarray
    tip_radius: np.ndarray

    def chain(self, finger: str) -> list[int]:
        j0 = FINGER_CHAINS[finger]
        return [j0, j0 + 1, j0 + 2]

    def tip(self, finger: str) -> np.ndarray:
        return self.tips[TIP_ORDER.index(finger)]

    def tip_radius_of(self, finger: str) -> float:
        return float(self.tip_radius[TIP_ORDER.index(finger)])

    def bone_end(self, j: int) -> np.ndarray:
        """End point of the bone that joint ``j`` drives (its child joint, or the tip)."""
        for finger, j0 in FINGER_CHAINS.items():
            if j == j0 + 2:
                return self.tip(finger)
            if j in (j0, j0 + 1):
                return self.joints[j + 1]
        return self.joints[4]  # wrist: the palm, towards the middle knuckle


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _dir_xz(angle_deg: float, dip: float = 0.0) -> np.ndarray:
    """Unit vector in the palm plane at ``angle_deg`` from +X towards +Z, tilted by ``dip`` in y."""
    a = np.radians(angle_deg)
    return _unit([np.cos(a), dip, np.sin(a)])


def build_skeleton(scale: float = 1.0) -> Skeleton:
    """The rest skeleton; ``scale`` = 1 is an average adult hand (18.5 cm long)."""
    joints = np.zeros((16, 3))
    radius = np.zeros(16)
    tips = np.zeros((5, 3))
    tip_r = np.zeros(5)
    # (knuckle position, splay angle from +X towards +Z (deg), phalanx lengths, radii at MCP/PIP/DIP/tip)
    fingers = {
        "index": ((0.0935, 0.0, -0.0255), -7.0, (0.041, 0.0245, 0.0205), (0.0098, 0.0088, 0.0079, 0.0070)),
        "middle": ((0.0960, 0.0, -0.0045), -1.0, (0.0455, 0.0285, 0.0215), (0.0100, 0.0090, 0.0081, 0.0072)),
        "ring": ((0.0905, 0.0, 0.0160), 6.0, (0.0425, 0.0275, 0.0210), (0.0094, 0.0085, 0.0076, 0.0068)),
        "pinky": ((0.0810, 0.0, 0.0350), 14.0, (0.0335, 0.0195, 0.0190), (0.0083, 0.0074, 0.0067, 0.0060)),
    }
    for name, (mcp, splay, lengths, radii) in fingers.items():
        j0 = FINGER_CHAINS[name]
        d = _dir_xz(splay)
        p = np.array(mcp, dtype=np.float64)
        for k in range(3):
            joints[j0 + k] = p
            radius[j0 + k] = radii[k]
            p = p + lengths[k] * d
        tips[TIP_ORDER.index(name)] = p
        tip_r[TIP_ORDER.index(name)] = radii[3]
    # Thumb: CMC deep in the thenar region, pointing forward and out at ~40 degrees, slightly
    # below the palm plane (MANO's thumb1 sits at the carpometacarpal region).
    p = np.array([0.0215, -0.0070, -0.0215])
    thumb = [(_dir_xz(-42.0, -0.10), 0.046), (_dir_xz(-30.0, -0.05), 0.032), (_dir_xz(-22.0, -0.02), 0.0265)]
    thumb_r = (0.0120, 0.0108, 0.0096, 0.0084)
    for k, (d, length) in enumerate(thumb):
        joints[13 + k] = p
        radius[13 + k] = thumb_r[k]
        p = p + length * d
    tips[0] = p
    tip_r[0] = thumb_r[3]
    radius[0] = 0.026
    return Skeleton(joints * scale, tips * scale, radius * scale, tip_r * scale)


# ----------------------------------------------------------------------------------------
# Signed distance primitives (vectorised, approximate-distance but Lipschitz-friendly).


def smin(a, b, k):
    """Polynomial smooth minimum with blend width ``k`` (metres)."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def smax(a, b, k):
    return -smin(-a, -b, k)


def bone_frame(a, b, palm_normal=(0.0, -1.0, 0.0)):
    """Orthonormal frame of a bone a->b: (axis, lateral, dorsal), dorsal = away from the palm."""
    axis = _unit(np.asarray(b) - np.asarray(a))
    dorsal = -np.asarray(palm_normal, dtype=np.float64)
    dorsal = _unit(dorsal - axis * np.dot(dorsal, axis))
    lateral = np.cross(dorsal, axis)
    return axis, lateral, dorsal


def sd_tapered_capsule(p, a, b, ra, rb, squash=1.0, frame=None):
    """Capsule from a to b with radius ra -> rb; cross-section squashed by ``squash`` dorsally."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ab = b - a
    L2 = float(ab @ ab)
    t = np.clip(((p - a) @ ab) / L2, 0.0, 1.0)
    q = p - (a + t[..., None] * ab)
    if squash != 1.0:
        axis, lateral, dorsal = frame if frame is not None else bone_frame(a, b)
        qd = q @ dorsal
        q = q + ((1.0 / squash) - 1.0) * qd[..., None] * dorsal
    r = ra + (rb - ra) * t
    return np.linalg.norm(q, axis=-1) - r


def sd_ellipsoid(p, c, radii, axes=None):
    """Approximate ellipsoid distance (exact on the axes); ``axes`` = rows of a rotation."""
    q = p - np.asarray(c, dtype=np.float64)
    if axes is not None:
        q = q @ np.asarray(axes, dtype=np.float64).T
    r = np.asarray(radii, dtype=np.float64)
    k = np.linalg.norm(q / r, axis=-1)
    return (k - 1.0) * np.min(r)


def sd_round_box(p, c, half, rounding, axes):
    q = (p - np.asarray(c)) @ np.asarray(axes).T
    d = np.abs(q) - (np.asarray(half) - rounding)
    outside = np.linalg.norm(np.maximum(d, 0.0), axis=-1)
    inside = np.minimum(np.max(d, axis=-1), 0.0)
    return outside + inside - rounding


# ----------------------------------------------------------------------------------------


FOREARM_CUT_X = -0.085  # nominal hand: the v2 asset's forearm section ends in a flat cut at x = -8.5 cm


class HandSDF:
    """Signed distance field of the rest-pose right hand (negative inside).

    ``forearm=False`` (asset v1): the wrist ends in a rounded stub about 3 cm behind the wrist
    joint.  ``forearm=True`` (asset v2): the wrist continues into a forearm section, slightly
    wider towards the elbow, that ends in a flat cut at ``x = FOREARM_CUT_X * scale`` (edge
    rounded over 2 mm) -- a clean end instead of a mitten-like stub.
    """

    def __init__(self, skeleton: Skeleton, forearm: bool = False):
        self.sk = skeleton
        self.s = float(skeleton.radius[4] / 0.0100)  # scale relative to the nominal hand
        self.forearm = forearm

    @property
    def forearm_cut_x(self) -> float | None:
        """x of the forearm's flat cut (metres), None without a forearm."""
        return FOREARM_CUT_X * self.s if self.forearm else None

    def nail_frame(self, finger: str):
        """(origin, axis, lateral, dorsal, length, radius) of the distal phalanx."""
        sk = self.sk
        j = sk.chain(finger)[2]
        a, b = sk.joints[j], sk.tip(finger)
        axis, lateral, dorsal = self._frame(finger, a, b)
        return a, axis, lateral, dorsal, float(np.linalg.norm(b - a)), float(sk.radius[j])

    def _frame(self, finger, a, b):
        if finger == "thumb":
            # The thumb is pronated: its nail faces about 60 degrees away from the palm's back.
            axis = _unit(b - a)
            up = _unit(np.array([0.0, 1.0, 0.0]) * 0.55 + np.array([0.0, 0.0, -1.0]) * 0.85)
            dorsal = _unit(up - axis * np.dot(up, axis))
            return axis, np.cross(dorsal, axis), dorsal
        return bone_frame(a, b)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        sk, s = self.sk, self.s
        J = sk.joints
        # Palm: four flattened metacarpal capsules merged into a slab, plus the forearm stub.
        d = None
        base_z = {1: -0.0195, 4: -0.0035, 10: 0.0115, 7: 0.0255}
        for j, bz in base_z.items():
            a = np.array([0.012, 0.0, bz]) * s
            di = sd_tapered_capsule(p, a, J[j] - np.array([0.004, 0, 0]) * s, 0.0125 * s, 0.0113 * s,
                                    squash=0.82)
            d = di if d is None else smin(d, di, 0.016 * s)
        if self.forearm:
            # the capsule runs past the cut so the cut plane meets a straight, slowly widening section
            wrist = sd_tapered_capsule(p, np.array([0.010, 0.0, 0.003]) * s, np.array([-0.120, 0.0, 0.003]) * s,
                                       0.0265 * s, 0.0300 * s, squash=0.70)
        else:
            wrist = sd_tapered_capsule(p, np.array([0.010, 0.0, 0.003]) * s, np.array([-0.028, 0.0, 0.003]) * s,
                                       0.0265 * s, 0.0255 * s, squash=0.68)
        d = smin(d, wrist, 0.022 * s)
        # Thenar eminence (thumb ball), hypothenar (pinky side), distal palm pads.
        d = smin(d, sd_ellipsoid(p, np.array([0.034, -0.0105, -0.023]) * s, np.array([0.030, 0.0115, 0.017]) * s,
                                 axes=_rot_y(-25.0)), 0.010 * s)
        d = smin(d, sd_ellipsoid(p, np.array([0.040, -0.0075, 0.030]) * s, np.array([0.034, 0.0085, 0.012]) * s),
                 0.010 * s)
        d = smin(d, sd_ellipsoid(p, np.array([0.080, -0.0085, 0.004]) * s, np.array([0.013, 0.0065, 0.036]) * s,
                                 axes=_rot_y(8.0)), 0.010 * s)
        # Fingers.
        for finger in ("index", "middle", "ring", "pinky", "thumb"):
            chain = sk.chain(finger)
            pts = [J[c] for c in chain] + [sk.tip(finger)]
            radii = [sk.radius[c] for c in chain] + [sk.tip_radius_of(finger)]
            squash = 0.92 if finger == "thumb" else 0.86
            fd = None
            for k in range(3):
                a, b = pts[k], pts[k + 1]
                frame = self._frame(finger, a, b)
                end = b if k < 2 else b - frame[0] * radii[3] * 0.9
                seg = sd_tapered_capsule(p, a, end, radii[k], radii[k + 1] * (0.97 if k < 2 else 1.0),
                                         squash=squash, frame=frame)
                fd = seg if fd is None else smin(fd, seg, 0.004 * s)
                if k > 0:
                    # subtle knuckle bulge at the interphalangeal joint, dorsal side
                    c = a + frame[2] * radii[k] * 0.35
                    fd = smin(fd, sd_ellipsoid(p, c, np.array([0.45, 0.62, 0.50]) * radii[k],
                                               axes=np.stack(frame)), 0.004 * s)
                # fleshy pad on the palmar side of each phalanx, fullest on the distal one
                L = np.linalg.norm(b - a)
                pad_r = np.array([0.42 * L, 0.78 * radii[k + 1], 0.55 * radii[k + 1]])
                c = a + frame[0] * (0.55 * L) - frame[2] * radii[k + 1] * (0.42 if k == 2 else 0.30)
                fd = smin(fd, sd_ellipsoid(p, c, pad_r, axes=np.stack(frame)), 0.004 * s)
            # Nail plate: a shell 0.35 mm proud of the distal phalanx's dorsal skin, bounded by
            # a rounded region (the nail fold), so it follows the finger's curvature.
            o, axis, lateral, dorsal, L, r = self.nail_frame(finger)
            end = o + axis * (L - 0.9 * sk.tip_radius_of(finger))
            shell = sd_tapered_capsule(p, o, end, r + 0.00035 * s, sk.tip_radius_of(finger) + 0.00035 * s,
                                       squash=squash, frame=(axis, lateral, dorsal))
            region = sd_round_box(p, o + axis * (0.60 * L) + dorsal * (1.1 * r),
                                  np.array([0.36 * L, 0.68 * r, 0.75 * r]), 0.3 * r,
                                  np.stack([axis, lateral, dorsal]))
            fd = smin(fd, smax(shell, region, 0.0004 * s), 0.0003 * s)
            k_join = 0.012 * s if finger == "thumb" else 0.007 * s
            d = smin(d, fd, k_join)
        # Metacarpal heads (dorsal knuckles of the fist).
        for j in (1, 4, 10, 7):
            d = smin(d, sd_ellipsoid(p, J[j] + np.array([-0.002, 0.0068, 0.0]) * s,
                                     np.array([0.0080, 0.0050, 0.0075]) * s), 0.005 * s)
        if self.forearm:
            d = smax(d, self.forearm_cut_x - p[..., 0], 0.002 * s)
        return d

    def gradient(self, p, h=1e-5):
        g = np.zeros_like(p)
        for i in range(3):
            e = np.zeros(3)
            e[i] = h
            g[..., i] = (self(p + e) - self(p - e)) / (2 * h)
        return g

    def project(self, p, iterations=4):
        """Move points onto the zero level set along the field's gradient (Newton steps)."""
        p = np.array(p, dtype=np.float64)
        for _ in range(iterations):
            d = self(p)
            g = self.gradient(p)
            g2 = np.maximum((g * g).sum(-1), 1e-12)
            p = p - (d / g2)[:, None] * g
        return p


def _rot_y(deg):
    """Rows of a rotation about +Y (used as ellipsoid axes)."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
