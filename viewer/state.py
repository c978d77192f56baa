"""The viewer's document: what is shown, editable, undoable. Pure Python + numpy (no GL).

:class:`ViewerState` holds the scene (one or two :class:`~relit_hands.scene.HandState`), the
environment (spec + yaw / pitch / exposure), display settings (shading mode, split-screen
comparison, tone mapper, background, overlays) and an undo / redo stack of snapshots. The
camera (:class:`OrbitCamera`) is part of the state but not of the undo history (view changes
are not edits).

Every mutation goes through a method that bumps :attr:`ViewerState.version`; the app sends a
render request whenever the version (or the camera) changed. Edits are grouped for undo by
a key: ``state.begin_edit("slider:index_mcp")`` pushes one snapshot, further edits with the same
key (a slider being dragged, a mouse drag) do not, ``state.end_edit()`` closes the group.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from ..camera import Camera
from ..poses import FINGER_JOINT_NAMES, JOINT_LIMITS, POSE_PRESETS, anatomical_to_pose, pose_preset, pose_to_anatomical
from ..scene import SCENE_PRESETS, Scene, load_scene_file, save_scene_file, scene_preset, single_hand_scene

BACKGROUNDS = ("env", "blurred", "none")
TONEMAPS = ("aces", "filmic", "none")
# Aliases accepted wherever a joint is named: MANO-style "index1..3", "thumb1..3" (1 = proximal).
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")


def joint_index(name) -> int:
    """Finger joint name -> index 0..14 into FINGER_JOINT_NAMES (MANO joint = index + 1).

    Accepts 'index_pip', 'index2' (1 = proximal, 2 = middle, 3 = distal), or an int 0..14."""
    if isinstance(name, (int, np.integer)):
        if not 0 <= int(name) < 15:
            raise ValueError(f"joint index must be 0..14, got {name}")
        return int(name)
    s = str(name).strip().lower()
    if s in FINGER_JOINT_NAMES:
        return FINGER_JOINT_NAMES.index(s)
    for k, f in enumerate(_FINGERS):
        if s.startswith(f) and s[len(f):] in ("1", "2", "3"):
            return 3 * k + int(s[len(f):]) - 1
    raise ValueError(f"unknown joint {name!r}; use one of {FINGER_JOINT_NAMES} or e.g. 'index2'")


@dataclass
class OrbitCamera:
    """Turntable camera around ``target``: ``yaw`` about +Y (0 = looking from +Z), ``pitch``
    (positive = from above), ``distance`` (metres), vertical field of view ``fov_y`` (degrees),
    and a screen-space ``pan`` already folded into ``target``."""

    target: np.ndarray = field(default_factory=lambda: np.zeros(3))
    yaw: float = 0.0
    pitch: float = 14.0
    distance: float = 0.6
    fov_y: float = 30.0

    def eye(self) -> np.ndarray:
        y, p = math.radians(self.yaw), math.radians(self.pitch)
        d = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
        return np.asarray(self.target, np.float64) + self.distance * d

    def camera(self, width: int, height: int) -> Camera:
        return Camera.look_at(self.eye(), self.target, up=(0.0, 1.0, 0.0), fov_y_deg=self.fov_y,
                              width=max(16, int(width)), height=max(16, int(height)))

    def frame(self, points, aspect: float = 16 / 9, margin: float = 1.15) -> None:
        """Aim at the bounding sphere of ``points`` [N, 3] and back off until it fills the view."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        lo, hi = p.min(0), p.max(0)
        c = (lo + hi) / 2
        r = float(np.linalg.norm(p - c, axis=1).max())
        fy = math.radians(self.fov_y)
        fx = 2 * math.atan(math.tan(fy / 2) * aspect)
        self.target = c
        self.distance = max(r * margin / math.sin(min(fx, fy) / 2), 0.05)

    def orbit(self, dyaw: float, dpitch: float) -> None:
        self.yaw = (self.yaw + dyaw + 180.0) % 360.0 - 180.0
        self.pitch = float(np.clip(self.pitch + dpitch, -89.0, 89.0))

    def pan(self, dx_px: float, dy_px: float, height_px: float) -> None:
        """Move the target with the image: a drag of (dx, dy) pixels keeps the point under the cursor."""
        cam = self.camera(16, 16)
        m_per_px = 2 * self.distance * math.tan(math.radians(self.fov_y) / 2) / max(height_px, 1)
        right, down = cam.R[0], cam.R[1]
        self.target = np.asarray(self.target, np.float64) - (dx_px * right + dy_px * down) * m_per_px

    def zoom(self, factor: float) -> None:
        self.distance = float(np.clip(self.distance * factor, 0.05, 20.0))

    def copy(self) -> "OrbitCamera":
        return OrbitCamera(np.array(self.target, np.float64), self.yaw, self.pitch, self.distance, self.fov_y)


# Fields of the document that undo / redo restore (everything but the camera and the stack).
_DOC_FIELDS = ("scene", "env_spec", "env_yaw", "env_pitch", "env_exposure", "exposure_ev", "tonemap",
               "background", "shading", "split", "split_modes", "split_pos", "shadows", "wireframe")


class ViewerState:
    """The viewer document with undo / redo (see module docstring)."""

    def __init__(self, scene: Scene | str = "clasp", env: str = "studio", *, max_undo: int = 200):
        self.scene: Scene = scene_preset(scene) if isinstance(scene, str) else scene.copy()
        self.env_spec: str = str(env)
        self.env_yaw = 0.0
        self.env_pitch = 0.0
        self.env_exposure = 0.0
        self.exposure_ev = 0.0
        self.tonemap = "aces"
        self.background = "env"
        self.shading = "pbr"
        self.split = False
        self.split_modes = ("pbr", "albedo")
        self.split_pos = 0.5
        self.shadows = True
        self.wireframe = False
        self.camera = OrbitCamera()
        self.version = 0
        self.camera_version = 0
        self.max_undo = int(max_undo)
        self._undo: list[tuple[str, dict]] = []
        self._redo: list[tuple[str, dict]] = []
        self._edit_key = None
        self._initial = self.snapshot()

    # ------------------------------------------------------------------ undo / redo
    def snapshot(self) -> dict:
        return {k: (getattr(self, k).copy() if k == "scene" else copy.deepcopy(getattr(self, k))) for k in _DOC_FIELDS}

    def restore(self, snap: dict) -> None:
        for k in _DOC_FIELDS:
            v = snap[k]
            setattr(self, k, v.copy() if k == "scene" else copy.deepcopy(v))
        self.touch()

    def touch(self) -> None:
        self.version += 1

    def begin_edit(self, key: str) -> None:
        """Open (or continue) an undo group; the snapshot before the first edit is kept."""
        if key != self._edit_key:
            self._undo.append((key, self.snapshot()))
            del self._undo[:-self.max_undo]
            self._redo.clear()
            self._edit_key = key

    def end_edit(self) -> None:
        self._edit_key = None

    def _edit(self, key: str | None) -> None:
        self.begin_edit(key or f"op{len(self._undo)}:{self.version}")
        if key is None:
            self.end_edit()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        key, snap = self._undo.pop()
        self._redo.append((key, self.snapshot()))
        self.restore(snap)
        self._edit_key = None
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        key, snap = self._redo.pop()
        self._undo.append((key, self.snapshot()))
        self.restore(snap)
        self._edit_key = None
        return True

    def drop_last_undo(self) -> None:
        """Forget the newest undo entry (an edit that failed, e.g. an unreadable environment)."""
        if self._undo:
            self._undo.pop()
        self._edit_key = None

    # ------------------------------------------------------------------ generic settings
    def set(self, name: str, value, key: str | None = None) -> None:
        """Set a document field (``exposure_ev``, ``tonemap``, ``background`` ...) as one edit."""
        if name not in _DOC_FIELDS or name == "scene":
            raise ValueError(f"unknown viewer setting {name!r}; settable: {[f for f in _DOC_FIELDS if f != 'scene']}")
        if name == "tonemap" and value not in TONEMAPS:
            raise ValueError(f"tonemap must be one of {TONEMAPS}, got {value!r}")
        if name == "background" and value not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {value!r}")
        if name == "split_modes":
            value = tuple(value)
        if getattr(self, name) == value:
            return
        self._edit(key)
        setattr(self, name, value)
        self.touch()

    def set_env(self, spec: str) -> None:
        self.set("env_spec", str(spec))

    def rotate_env(self, dyaw: float = 0.0, dpitch: float = 0.0, key: str | None = None) -> None:
        self._edit(key)
        self.env_yaw = (self.env_yaw + dyaw + 180.0) % 360.0 - 180.0
        self.env_pitch = float(np.clip(self.env_pitch + dpitch, -90.0, 90.0))
        self.touch()

    # ------------------------------------------------------------------ hands
    def hand(self, side: str):
        return self.scene.hand(side)

    def sides(self) -> list:
        return [h.side for h in self.scene.hands]

    def angles(self, side: str) -> np.ndarray:
        """[15, 3] anatomical degrees (flexion, abduction, twist) of one hand."""
        h = self._need(side)
        key = (side, h.pose.tobytes())
        cache = self.__dict__.setdefault("_angles_cache", {})
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = pose_to_anatomical(h.pose.astype(np.float64), side=side)
        return cache[key].copy()

    def _need(self, side):
        h = self.scene.hand(side)
        if h is None:
            raise ValueError(f"the scene has no {side} hand (sides: {self.sides()})")
        return h

    def set_joint(self, side: str, joint, flexion=None, abduction=None, twist=None, key: str | None = None) -> np.ndarray:
        """Set one joint's anatomical angles (degrees; None keeps), clamped to JOINT_LIMITS.
        Only that joint's three pose parameters change. Returns the clamped angles [3]."""
        j = joint_index(joint)
        h = self._need(side)
        ang = self.angles(side)
        a = ang[j].copy()
        for i, v in enumerate((flexion, abduction, twist)):
            if v is not None:
                a[i] = float(v)
        lim = np.asarray(JOINT_LIMITS[FINGER_JOINT_NAMES[j]], np.float64)
        a = np.clip(a, lim[:, 0], lim[:, 1])
        ang[j] = a
        new = anatomical_to_pose(ang, side=side)
        self._edit(key)
        h.pose = h.pose.copy()
        h.pose[3 * j:3 * j + 3] = new[3 * j:3 * j + 3]
        self.touch()
        return a

    def move_hand(self, side: str, transl, key: str | None = None) -> None:
        h = self._need(side)
        self._edit(key)
        h.transl = np.asarray(transl, np.float32).reshape(3).copy()
        self.touch()

    def orient_hand(self, side: str, global_orient, key: str | None = None) -> None:
        h = self._need(side)
        self._edit(key)
        h.global_orient = np.asarray(global_orient, np.float32).reshape(3).copy()
        self.touch()

    @staticmethod
    def turned(global_orient, axis, degrees) -> np.ndarray:
        """``global_orient`` turned by ``degrees`` about a world ``axis`` (about the wrist)."""
        ax = np.asarray(axis, np.float64)
        ax = ax / (np.linalg.norm(ax) + 1e-12)
        r = Rotation.from_rotvec(ax * math.radians(degrees)) * Rotation.from_rotvec(np.asarray(global_orient, np.float64))
        return r.as_rotvec().astype(np.float32)

    def preset(self, name: str, side: str | None = None) -> None:
        """Two-hand scene preset (replaces the scene), or a single-hand pose preset: with
        ``side`` ('right' / 'left' / 'both') applied to those hands in place, else a one-hand scene."""
        if name in SCENE_PRESETS and side is None:
            scene = scene_preset(name)
        elif name in POSE_PRESETS:
            if side is None:
                scene = single_hand_scene(name)
            else:
                scene = self.scene.copy()
                targets = self.sides() if side == "both" else [side]
                for s in targets:
                    h = scene.hand(s)
                    if h is None:
                        raise ValueError(f"the scene has no {s} hand")
                    h.pose = pose_preset(name, s)
        else:
            raise ValueError(f"unknown preset {name!r}; two-hand: {list(SCENE_PRESETS)}; "
                             f"one-hand poses: {list(POSE_PRESETS)}")
        self._edit(None)
        self.scene = scene
        self.touch()

    def open_with(self, **fields) -> bool:
        """Change the state the viewer opens with (e.g. ``shading`` once the worker reports a
        trained student): applied only if none of ``fields`` was changed since the start; not an
        undoable edit, and :meth:`reset` returns to it. Returns whether it was applied."""
        if any(getattr(self, k) != self._initial[k] for k in fields):
            return False
        for k, v in fields.items():
            setattr(self, k, v)
            self._initial[k] = copy.deepcopy(v)
        self.touch()
        return True

    def reset(self) -> None:
        """Back to the state the viewer opened with (undoable)."""
        self._edit(None)
        self.restore(self._initial)

    # ------------------------------------------------------------------ files
    def load_pose(self, path) -> None:
        """Load a pose / scene file (.json / .npz); raises PoseFileError (ValueError) on bad files."""
        scene = load_scene_file(path)
        self._edit(None)
        self.scene = scene
        self.touch()

    def save_pose(self, path) -> None:
        save_scene_file(self.scene, path)

    # ------------------------------------------------------------------ camera
    def camera_changed(self) -> None:
        self.camera_version += 1

    def frame_hands(self, points, aspect: float) -> None:
        self.camera.frame(points, aspect)
        self.camera_changed()
