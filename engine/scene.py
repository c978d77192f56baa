"""Scenes: one or two posed hands placed in the world, presets, and pose files.

A :class:`HandState` is what a hand tracker (or the viewer) gives for one hand: MANO pose
parameters plus the root transform. World frame: metres, right-handed, Y up; the default
camera looks from +Z towards the origin (see :func:`default_camera`).

Pose files (``.json`` or ``.npz``) hold either one hand::

    {"side": "right", "pose": [45 floats], "global_orient": [3], "transl": [3],
     "shape": [[length, girth] x 16]}

(``global_orient``/``transl`` optional, radians axis-angle / metres; ``shape`` optional, per-bone
scales of :meth:`HandModel.forward`, e.g. from a tracker's bone lengths), or a whole scene::

    {"hands": [{...right...}, {...left...}]}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from .poses import POSE_PRESETS, anatomical_to_pose, pose_preset
from .validation import MAX_JSON_BYTES, InputFileError, read_json_file

SIDES = ("right", "left")


class PoseFileError(InputFileError):
    """A pose / scene file that is missing, unreadable or holds wrongly shaped values."""


MAX_ANGLE = 4 * np.pi  # |axis-angle| entries, radians
MAX_TRANSL = 100.0  # |transl| entries, metres
SHAPE_RANGE = (0.2, 5.0)  # per-bone length / girth scales


def _vector(value, n, what, bound=None):
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what}: expected {n} numbers, got {_short(value)}") from None
    if a.shape != (n,):
        raise ValueError(f"{what}: expected {n} numbers, got an array of shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    if bound is not None and np.abs(a).max() > bound:
        raise ValueError(f"{what}: values must lie within +-{bound:g}, got {np.abs(a).max():g}")
    return a.astype(np.float32)


def _shape(value, what):
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what}: expected [16, 2] numbers (length, girth scale per bone), got {_short(value)}") from None
    if a.shape != (16, 2):
        raise ValueError(f"{what}: expected [16, 2] numbers (length, girth scale per bone), got an array of shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    lo, hi = SHAPE_RANGE
    if a.min() < lo or a.max() > hi:
        raise ValueError(f"{what}: scales must lie within [{lo:g}, {hi:g}], got {a.min():g}..{a.max():g}")
    return a.astype(np.float32)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class HandState:
    """One hand: ``side``, MANO ``pose`` [45] (radians, axis-angle per finger joint in the rest
    world axes), ``global_orient`` [3] (axis-angle about the wrist joint) and ``transl`` [3]
    (metres, world position of the wrist joint); ``shape``: optional [16, 2] per-bone (length, girth)
    scales of the hand model (:func:`~relit_hands.hand_model.shape_rest`; None = the asset's own
    proportions), e.g. ``relit_hands.tracking.shape_from_scales`` of tracked bone lengths."""

    side: str
    pose: np.ndarray
    global_orient: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    transl: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    shape: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.side, str) or self.side not in SIDES:
            raise ValueError(f"side must be 'right' or 'left', got {self.side!r}")
        self.pose = _vector(self.pose, 45, f"{self.side} hand pose", MAX_ANGLE)
        self.global_orient = _vector(self.global_orient, 3, f"{self.side} hand global_orient", MAX_ANGLE)
        self.transl = _vector(self.transl, 3, f"{self.side} hand transl", MAX_TRANSL)
        if self.shape is not None:
            self.shape = _shape(self.shape, f"{self.side} hand shape")

    def to_dict(self) -> dict:
        d = {"side": self.side, "pose": self.pose.tolist(), "global_orient": self.global_orient.tolist(),
             "transl": self.transl.tolist()}
        if self.shape is not None:
            d["shape"] = self.shape.tolist()
        return d

    def copy(self) -> "HandState":
        return HandState(self.side, self.pose.copy(), self.global_orient.copy(), self.transl.copy(),
                         None if self.shape is None else self.shape.copy())


@dataclass
class Scene:
    """One or two hands (at most one per side), with a name for captions."""

    hands: list
    name: str = "custom"
    view_direction: tuple = (0.0, 0.25, 1.0)  # world, towards the default camera

    def __post_init__(self):
        sides = [h.side for h in self.hands]
        if not 1 <= len(sides) <= 2 or len(set(sides)) != len(sides):
            raise ValueError(f"a scene has one or two hands, one per side; got sides {sides}")

    def hand(self, side: str):
        return next((h for h in self.hands if h.side == side), None)

    def to_dict(self) -> dict:
        return {"name": self.name, "hands": [h.to_dict() for h in self.hands],
                "view_direction": list(self.view_direction)}

    def copy(self) -> "Scene":
        return Scene([h.copy() for h in self.hands], self.name, tuple(self.view_direction))


# ----------------------------------------------------------------------------------------
# Placement helpers


def orientation(fingers, palm_normal) -> np.ndarray:
    """Axis-angle [3] turning the rest hand (fingers +X, palm normal -Y) so that its fingers
    point along ``fingers`` and its palm faces ``palm_normal`` (world vectors)."""
    f = np.asarray(fingers, np.float64)
    f = f / np.linalg.norm(f)
    n = np.asarray(palm_normal, np.float64)
    n = n - f * (n @ f)
    n = n / np.linalg.norm(n)
    # columns: images of +X (fingers), +Y (= -palm normal) and +Z
    R = np.stack([f, -n, np.cross(f, -n)], 1)
    return Rotation.from_matrix(R).as_rotvec().astype(np.float32)


def _hand(side, pose, fingers, palm, transl, twist_deg=0.0):
    go = orientation(fingers, palm)
    if twist_deg:
        axis = np.asarray(fingers, np.float64) / np.linalg.norm(fingers)
        go = (Rotation.from_rotvec(axis * np.radians(twist_deg)) * Rotation.from_rotvec(go)).as_rotvec()
    return HandState(side, pose, go, transl)


def _angles(mcp=0.0, pip=0.0, dip=0.0, abd=None, thumb=((0, 0, 0), (0, 0, 0), (0, 0, 0))):
    """[15,3] anatomical angles: the same flexion for the four fingers, optional abductions."""
    a = np.zeros((15, 3))
    abd = abd or {}
    for k, (j0, name) in enumerate(((0, "index"), (3, "middle"), (6, "pinky"), (9, "ring"))):
        a[j0] = (mcp, abd.get(name, 0.0), 0.0)
        a[j0 + 1] = (pip, 0.0, 0.0)
        a[j0 + 2] = (dip, 0.0, 0.0)
    a[12:15] = np.asarray(thumb, np.float64)
    return a


def _posed(side, angles):
    return anatomical_to_pose(angles, side=side)


# ----------------------------------------------------------------------------------------
# Presets


def single_hand_scene(pose_name: str, side: str = "right") -> Scene:
    """One hand in a named pose preset, raised with the palm towards the default camera."""
    pose = pose_preset(pose_name, side)
    x = -0.01 if side == "right" else 0.01
    hand = _hand(side, pose, fingers=(0, 1, 0), palm=(0, 0, 1), transl=(x, -0.09, 0.0))
    return Scene([hand], name=pose_name)


def _prayer():
    pose = _angles(5, 5, 3)
    r = _hand("right", _posed("right", pose), (0, 1, 0), (1, 0, 0), (-0.0135, -0.09, 0.0))
    l_ = _hand("left", _posed("left", pose), (0, 1, 0), (-1, 0, 0), (0.0135, -0.09, 0.0))
    return [r, l_]


def _clap():
    pose = _angles(12, 15, 8, thumb=((5, 10, 0), (5, 0, 0), (5, 0, 0)))
    r = _hand("right", _posed("right", pose), (0.15, 1, -0.1), (1, 0, 0.35), (-0.045, -0.09, 0.0))
    l_ = _hand("left", _posed("left", pose), (-0.15, 1, -0.1), (-1, 0, 0.35), (0.045, -0.09, 0.0))
    return [r, l_]


def _shadow():
    # The right hand hovers palm-down above the left hand, which lies palm-up: under light
    # from above, the upper hand casts its shadow on the lower one.
    r = _hand("right", _posed("right", _angles(10, 12, 6)), (0, 0, -1), (0, -1, 0), (0.01, 0.075, 0.07))
    l_ = _hand("left", _posed("left", _angles(8, 10, 5)), (0, 0, -1), (0, 1, 0), (-0.005, 0.0, 0.08))
    return [r, l_]


def _clasp():
    # Palms together at right angles; each hand's fingers wrap around the other's back.
    grip = _angles(70, 75, 40, thumb=((20, 10, 0), (20, 0, 0), (15, 0, 0)))
    r = _hand("right", _posed("right", grip), (1, 0.25, 0), (0, 0, -1), (-0.075, -0.03, 0.013))
    l_ = _hand("left", _posed("left", grip), (0, 1, 0.15), (0, 0, 1), (0.0, -0.1, -0.013))
    return [r, l_]


def _interlocked():
    # Fingers interlaced in front of the chest, thumbs up: palms face each other along X,
    # knuckles point at the camera, each finger flexes ~80 deg at the knuckle and wraps the
    # other hand's back between two of its fingers (the hands are offset by half a finger).
    inter = _angles(80, 35, 15, thumb=((10, 15, 0), (10, 0, 0), (5, 0, 0)))
    r = _hand("right", _posed("right", inter), (0, 0, 1), (1, 0, 0), (-0.0135, 0.005, -0.095))
    l_ = _hand("left", _posed("left", inter), (0, 0, 1), (-1, 0, 0), (0.0135, -0.005, -0.095))
    return [r, l_]


_SCENES = {  # name: (hands, default view direction)
    "clasp": (_clasp, (0.0, 0.25, 1.0)),
    "interlocked": (_interlocked, (0.45, 0.35, 1.0)),
    "shadow": (_shadow, (1.0, 0.7, 0.4)),
    "prayer": (_prayer, (0.6, 0.2, 1.0)),
    "clap": (_clap, (0.0, 0.25, 1.0)),
}
SCENE_PRESETS = tuple(_SCENES)


def scene_preset(name: str) -> Scene:
    """A two-hand scene preset (``SCENE_PRESETS``) or a single-hand pose preset (``POSE_PRESETS``,
    right hand)."""
    if name in _SCENES:
        make, view = _SCENES[name]
        return Scene(make(), name=name, view_direction=view)
    if name in POSE_PRESETS:
        return single_hand_scene(name)
    raise ValueError(f"unknown scene {name!r}; two-hand scenes: {list(SCENE_PRESETS)}; "
                     f"single-hand poses: {list(POSE_PRESETS)}")


# ----------------------------------------------------------------------------------------
# Files


def _load_raw(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PoseFileError(f"{path}: pose file not found" if not path.exists() else f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            raw = read_json_file(path, what="pose file")
        except InputFileError as e:
            raise PoseFileError(str(e)) from None
    elif suffix == ".npz":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:  # uncompressed sizes, before anything is inflated
                total = sum(i.file_size for i in z.infolist())
            if total > MAX_JSON_BYTES:
                raise PoseFileError(f"{path}: pose file holds {total} bytes of arrays; the limit is {MAX_JSON_BYTES}")
            with np.load(path, allow_pickle=False) as d:
                raw = {k: (d[k].item() if d[k].dtype.kind == "U" and d[k].ndim == 0 else d[k]) for k in d.files}
        except PoseFileError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise PoseFileError(f"{path}: cannot read pose file ({e})") from None
    else:
        raise PoseFileError(f"{path}: unsupported pose file type {path.suffix!r} (use .json or .npz)")
    if not isinstance(raw, dict):
        raise PoseFileError(f"{path}: expected a JSON object with 'pose' (one hand) or 'hands' (a scene), "
                            f"got {type(raw).__name__}")
    if "hands" in raw:
        hands = raw["hands"]
        if not isinstance(hands, (list, tuple)) or not 1 <= len(hands) <= 2:
            raise PoseFileError(f"{path}: 'hands' must be a list of one or two hands, got {_short(hands)}")
    return raw


def _hand_from_dict(d: dict, side: str | None, path) -> HandState:
    if not isinstance(d, dict) or "pose" not in d:
        raise PoseFileError(f"{path}: expected a 'pose' entry of 45 numbers")
    file_side = d.get("side", "right")
    if not isinstance(file_side, str):
        raise PoseFileError(f"{path}: 'side' must be 'right' or 'left', got {_short(file_side)}")
    try:
        return HandState(side or file_side, d["pose"], d.get("global_orient", np.zeros(3)),
                         d.get("transl", np.zeros(3)), d.get("shape"))
    except ValueError as e:
        raise PoseFileError(f"{path}: {e}") from None


def load_hand_file(path, side: str | None = None) -> HandState:
    """One hand from a pose file; ``side`` overrides the file's ``side`` entry."""
    raw = _load_raw(path)
    if "hands" in raw:
        hands = [_hand_from_dict(h, None, path) for h in raw["hands"]]
        match = [h for h in hands if side is None or h.side == side]
        if not match:
            raise PoseFileError(f"{path}: no {side} hand in this scene file")
        return match[0]
    return _hand_from_dict(raw, side, path)


def scene_from_dict(raw: dict, where="scene", name: str = "custom") -> Scene:
    """A :class:`Scene` from :meth:`Scene.to_dict`'s form (or one hand's dict); errors name ``where``."""
    if "hands" in raw:
        try:
            view = tuple(_vector(raw.get("view_direction", (0.0, 0.25, 1.0)), 3, "view_direction"))
            return Scene([_hand_from_dict(h, None, where) for h in raw["hands"]],
                         name=str(raw.get("name", name))[:200], view_direction=view)
        except ValueError as e:
            raise PoseFileError(f"{where}: {e}") from None
    return Scene([_hand_from_dict(raw, None, where)], name=name)


def load_scene_file(path) -> Scene:
    return scene_from_dict(_load_raw(path), path, Path(path).stem)


def save_scene_file(scene: Scene, path) -> None:
    """Write a scene as JSON (``.json``) or npz (``.npz``, one hand per side key prefix)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(scene.to_dict(), indent=1) + "\n")
    elif path.suffix.lower() == ".npz" and len(scene.hands) == 1:
        h = scene.hands[0]
        extra = {} if h.shape is None else {"shape": h.shape}
        np.savez(path, side=np.array(h.side), pose=h.pose, global_orient=h.global_orient, transl=h.transl, **extra)
    else:
        raise PoseFileError(f"{path}: save scenes as .json (npz holds a single hand)")
