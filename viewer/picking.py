"""What is under the cursor, and how a mouse drag maps to joint angles.

* :meth:`Picker.pick`: the mouse ray (from the displayed frame's OpenCV camera) is cast against
  the posed render meshes of that frame (trimesh's ray intersector, Embree through ``embreex``
  when installed); the hit triangle's skinning weights, interpolated with the hit's barycentric
  coordinates, name the dominant joint: 0 = wrist (palm / back: the drag moves or turns the
  hand), 1..15 = a finger segment (MANO order; the segment a joint moves).
* :meth:`Picker.drag_gains`: the screen-space motion (pixels per degree) of the dragged
  segment's far end for +1 degree of flexion and of abduction (finite differences of the
  kinematics). A drag then moves each angle by the projection of the mouse motion on that
  direction (at most 1 deg per pixel): the segment follows the cursor ("vertical bends, horizontal spreads" in the usual
  palm-to-camera view, and still intuitive from any other side). Where a direction is
  foreshortened (< 0.15 px/deg) the drag falls back to 0.5 deg/px, vertical -> flexion,
  horizontal -> abduction. Angles are clamped to ``JOINT_LIMITS`` by the state.
* :meth:`Picker.highlight`: an RGBA overlay outlining the hovered segment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..poses import FINGER_JOINT_NAMES, anatomical_to_pose

# keypoint (16 joints + tips thumb, index, middle, ring, pinky) at the far end of each joint's segment
_END = {1: 2, 2: 3, 3: 17, 4: 5, 5: 6, 6: 18, 7: 8, 8: 9, 9: 20, 10: 11, 11: 12, 12: 19, 13: 14, 14: 15, 15: 16}
FALLBACK_DEG_PER_PX = 0.5
MIN_GAIN_PX_PER_DEG = 0.15
MAX_DEG_PER_PX = 1.0


def joint_label(j: int) -> str:
    return "palm / wrist" if j == 0 else FINGER_JOINT_NAMES[j - 1]


@dataclass
class Pick:
    side: str
    hand_index: int  # position in the frame's hand list (hand_id image value)
    joint: int  # MANO joint 0..15
    point: np.ndarray  # world hit point
    distance: float


class Picker:
    """Ray picking and drag mapping on the hands of the last displayed frame."""

    def __init__(self):
        from ..hand_model import HandModel

        self.models = {s: HandModel(None, s) for s in ("right", "left")}
        self.faces, self.weights, self.face_joint = {}, {}, {}
        for s, m in self.models.items():
            f = np.asarray(m.asset.render_faces, np.int64)
            w = np.asarray(m.asset.render_weights, np.float32)
            self.faces[s], self.weights[s] = f, w
            self.face_joint[s] = (w[f[:, 0]] + w[f[:, 1]] + w[f[:, 2]]).argmax(1)
        self._key = None
        self._meshes = {}
        self.frame = None

    # ------------------------------------------------------------------ frame
    def set_frame(self, frame: dict) -> None:
        """Use a worker frame result (``camera``, ``vertices``, ``sides``, ``hand_id``)."""
        self.frame = frame
        self._key = None

    def _intersectors(self):
        key = id(self.frame)
        if self._key != key:
            import trimesh

            self._meshes = {}
            for s, v in self.frame["vertices"].items():
                mesh = trimesh.Trimesh(v, self.faces[s], process=False, validate=False)
                self._meshes[s] = mesh
            self._key = key
        return self._meshes

    def camera(self):
        from .render_worker import camera_from_dict

        return camera_from_dict(self.frame["camera"])

    def ray(self, u: float, v: float):
        cam = self.camera()
        d = cam.R.T @ np.linalg.inv(cam.K) @ np.array([u, v, 1.0])
        return cam.center, d / np.linalg.norm(d)

    # ------------------------------------------------------------------ pick
    def pick(self, u: float, v: float) -> Pick | None:
        """Hand + joint under frame pixel (u, v) (continuous coordinates, pixel centres at +0.5)."""
        if self.frame is None:
            return None
        cam = self.frame["camera"]
        if not (0 <= u < cam["width"] and 0 <= v < cam["height"]):
            return None
        o, d = self.ray(u, v)
        best = None
        for s, mesh in self._intersectors().items():
            loc, _, tri = mesh.ray.intersects_location(o[None], d[None], multiple_hits=False)
            if len(tri) == 0:
                continue
            dist = float(np.linalg.norm(loc[0] - o))
            if best is None or dist < best[0]:
                best = (dist, s, int(tri[0]), loc[0])
        if best is None:
            return None
        import trimesh

        dist, s, t, p = best
        f = self.faces[s][t]
        tri_pts = self.frame["vertices"][s][f].astype(np.float64)
        bary = trimesh.triangles.points_to_barycentric(tri_pts[None], p[None])[0]
        w = np.clip(bary, 0, 1) @ self.weights[s][f]
        sides = list(self.frame["sides"])
        return Pick(side=s, hand_index=sides.index(s), joint=int(w.argmax()), point=np.asarray(p), distance=dist)

    def joint_screen_point(self, side: str, joint: int, accept=None, radius: float = 2.0):
        """A frame pixel whose pick returns (side, joint), or None: tries the segment's vertices
        nearest its centroid, keeping one whose neighbours ``radius`` px away pick the same segment
        (used by scripted drags); ``accept(u, v)`` can veto pixels (e.g.
        under a UI window)."""
        if self.frame is None or side not in self.frame["vertices"]:
            return None
        cam = self.camera()
        vid = np.unique(self.faces[side][self.face_joint[side] == joint])
        if len(vid) == 0:
            return None
        pts = self.frame["vertices"][side][vid].astype(np.float64)
        c = pts.mean(0)
        order = np.argsort(np.linalg.norm(pts - c, axis=1))
        pix = cam.project(pts[order])
        for u, v in pix[:: max(1, len(order) // 200)]:
            if accept is not None and not accept(float(u), float(v)):
                continue
            ok = True
            for du, dv in ((0, 0), (radius, 0), (-radius, 0), (0, radius), (0, -radius)):
                pk = self.pick(float(u + du), float(v + dv))
                if pk is None or pk.side != side or pk.joint != joint:
                    ok = False
                    break
            if ok:  # well inside the segment: rounding of the mouse position cannot miss it
                return float(u), float(v)
        return None

    # ------------------------------------------------------------------ drag mapping
    def drag_gains(self, hand, angles: np.ndarray, joint: int, camera=None, eps_deg: float = 2.0):
        """Pixels per degree [2 (flexion, abduction), 2 (x, y)] for finger joint 1..15 of
        ``hand`` (a HandState with anatomical ``angles`` [15, 3]) as seen by ``camera``
        (default: the frame's)."""
        import torch

        cam = camera or self.camera()
        j = joint - 1
        batch = np.repeat(angles[None].astype(np.float64), 3, 0)
        batch[1, j, 0] += eps_deg
        batch[2, j, 1] += eps_deg
        poses = anatomical_to_pose(batch, side=hand.side)
        with torch.no_grad():
            out = self.models[hand.side](poses, hand.global_orient, hand.transl, meshes=())
        kp = out.keypoints[:, _END[joint]].numpy().astype(np.float64)
        pix = cam.project(kp)
        return np.stack([(pix[1] - pix[0]) / eps_deg, (pix[2] - pix[0]) / eps_deg])

    @staticmethod
    def drag_to_angles(gains: np.ndarray, delta_px) -> np.ndarray:
        """Mouse motion (dx, dy) pixels -> (d_flexion, d_abduction) degrees (see module doc)."""
        d = np.asarray(delta_px, np.float64)
        out = np.zeros(2)
        fallback = (d[1], d[0])
        for i in range(2):
            g = gains[i]
            n2 = float(g @ g)
            if n2 < MIN_GAIN_PX_PER_DEG ** 2:
                out[i] = FALLBACK_DEG_PER_PX * fallback[i]
            else:  # follow the cursor, at most MAX_DEG_PER_PX (small, distant segments)
                gn = math.sqrt(n2)
                out[i] = float(d @ (g / gn)) * min(1.0 / gn, MAX_DEG_PER_PX)
        return out

    # ------------------------------------------------------------------ highlight
    def highlight(self, side: str, joint: int, color=(255, 196, 64)) -> np.ndarray | None:
        """RGBA uint8 overlay (frame resolution) tinting + outlining segment ``joint`` of ``side``."""
        import cv2

        fr = self.frame
        if fr is None or side not in fr["vertices"]:
            return None
        cam = self.camera()
        H, W = fr["hand_id"].shape
        f = self.faces[side][self.face_joint[side] == joint]
        v = fr["vertices"][side].astype(np.float64)
        tri = v[f]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        front = np.einsum("ij,ij->i", n, cam.center - tri.mean(1)) > 0
        pix = cam.project(v)
        polys = (pix[f[front]] * 4).round().astype(np.int32)
        mask = np.zeros((H, W), np.uint8)
        cv2.fillPoly(mask, list(polys), 255, cv2.LINE_8, shift=2)
        hi = list(fr["sides"]).index(side)
        mask &= (fr["hand_id"] == hi).astype(np.uint8) * 255
        edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        out = np.zeros((H, W, 4), np.uint8)
        out[..., :3] = color
        out[..., 3] = np.maximum((mask > 0) * 60, (edge > 0) * 255).astype(np.uint8)
        return out
