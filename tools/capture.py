"""Light-stage captures on disk: the documented format (docs/capture_format.md), a validating
loader and the writer the synthetic light stage uses.

A capture is a folder::

    capture.json    format / version, cameras (K, R, t OpenCV convention, image size), light rig
                    (point-light positions, radiant intensities), environment maps used
    frames.json     frames: both hands' pose parameters and root transforms, which lights are on
                    (OLAT / light group) or which environment and rotation, image and mask paths
    splits.json     {"train": [...frame ids], "heldout": [...]} (agrees with each frame's split)
    images/<frame>/<camera>.exr   linear Rec.709 HDR RGB
    masks/<frame>/<camera>.png    uint8: 0 background, 1 right hand, 2 left hand
    environments/<name>.hdr       copies of the environment maps used by env-lit frames

Real light-stage data converted to this layout loads with the same :meth:`Capture.load`.
Every validation problem raises :class:`CaptureFormatError` (a ``ValueError``) whose message
names the file, the frame / camera / light / environment id and what is wrong.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..camera import Camera
from ..scene import HandState, Scene

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FRAME_KINDS",
    "SPLITS",
    "MASK_VALUES",
    "CaptureFormatError",
    "CaptureIncompleteError",
    "CaptureFrame",
    "CaptureLights",
    "Capture",
    "CaptureWriter",
]

FORMAT_NAME = "relit-hands-capture"
FORMAT_VERSION = 1
FRAME_KINDS = ("olat", "group", "env")
SPLITS = ("train", "heldout")
MASK_VALUES = {"background": 0, "right": 1, "left": 2}


class CaptureFormatError(ValueError):
    """A capture folder that does not follow docs/capture_format.md (the message names the
    file and the offending frame / camera / light / environment id)."""


class CaptureIncompleteError(CaptureFormatError):
    """A file that capture.json / frames.json list (an image, a mask, an environment map) is not
    on disk, e.g. a capture still being rendered (``train-teacher --allow-partial`` trains on it)."""


# ----------------------------------------------------------------------------------------
# Data classes


@dataclass
class CaptureLights:
    """The light rig: ``ids`` [L] (int), ``positions`` [L, 3] metres (world), ``intensities``
    [L, 3] radiant intensity (W/sr, linear Rec.709 RGB)."""

    ids: np.ndarray
    positions: np.ndarray
    intensities: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, light_id: int) -> int:
        """Row of ``light_id`` in ``positions`` / ``intensities``."""
        hits = np.nonzero(self.ids == int(light_id))[0]
        if not len(hits):
            raise KeyError(f"unknown light id {light_id!r}")
        return int(hits[0])


@dataclass
class CaptureFrame:
    """One frame: all cameras see the same posed hands under the same lighting.

    ``kind``: 'olat' (one light), 'group' (a few lights) or 'env' (environment map ``env_id``
    rotated by ``yaw_deg`` / ``pitch_deg`` as :meth:`EnvironmentMap.rotate` does).
    ``images`` / ``masks``: camera id -> absolute path.
    """

    id: str
    kind: str
    split: str
    scene: Scene
    lights_on: list = field(default_factory=list)
    env_id: str | None = None
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    images: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)

    def to_dict(self, root: Path) -> dict:
        """The frames.json entry (paths relative to ``root``)."""
        d = {"id": self.id, "kind": self.kind, "split": self.split,
             "hands": [h.to_dict() for h in self.scene.hands]}
        for h in d["hands"]:
            h.pop("name", None)
        if self.kind == "env":
            d["env"] = {"id": self.env_id, "yaw_deg": float(self.yaw_deg), "pitch_deg": float(self.pitch_deg)}
        else:
            d["lights_on"] = [int(i) for i in self.lights_on]
        d["images"] = {c: _rel(p, root) for c, p in self.images.items()}
        d["masks"] = {c: _rel(p, root) for c, p in self.masks.items()}
        return d


def _rel(p, root: Path) -> str:
    p = Path(p)
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


# ----------------------------------------------------------------------------------------
# Validation helpers


def _err(where: str, msg: str) -> CaptureFormatError:
    return CaptureFormatError(f"{where}: {msg}")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CaptureFormatError(f"{path}: missing file (a capture needs capture.json, frames.json and "
                                 f"splits.json; see docs/capture_format.md)")
    from ..validation import InputFileError, read_json_file

    try:
        data = read_json_file(path, what="capture file", max_bytes=256 * 1024 * 1024)
    except InputFileError as e:
        raise CaptureFormatError(str(e)) from None
    if not isinstance(data, dict):
        raise CaptureFormatError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    return data


def _array(value, shape, where: str, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _err(where, f"'{what}' must be numeric with shape {list(shape)}, got {value!r:.80}") from None
    if a.shape != tuple(shape):
        raise _err(where, f"'{what}' has shape {list(a.shape)}, expected {list(shape)}")
    if not np.isfinite(a).all():
        raise _err(where, f"'{what}' contains NaN or infinite values")
    return a


def _need(d: dict, key: str, where: str):
    if not isinstance(d, dict):
        raise _err(where, f"expected a JSON object, got {type(d).__name__}")
    if key not in d:
        raise _err(where, f"missing entry '{key}'")
    return d[key]


def _id_entries(raw, where0: str, kind: str, *, int_ids: bool = False, required: bool = False):
    """Yield ``(where, id, entry)`` for a capture.json list of ``{"id": ...}`` entries ("camera",
    "light", "environment"), checking the list, each id's type (non-empty string, or integer with
    ``int_ids``) and that ids are unique. ``where`` names the entry for error messages."""
    plural = kind + "s"
    if not isinstance(raw, list) or (required and not raw):
        raise _err(where0, f"'{plural}' must be a {'non-empty ' if required else ''}list")
    seen = set()
    for i, entry in enumerate(raw):
        where = f"{where0} {kind} #{i}"
        eid = _need(entry, "id", where)
        if int_ids and (isinstance(eid, bool) or not isinstance(eid, int)):
            raise _err(where, f"{kind} 'id' must be an integer, got {eid!r}")
        if not int_ids and (not isinstance(eid, str) or not eid):
            raise _err(where, f"{kind} 'id' must be a non-empty string, got {eid!r}")
        where = f"{where0} {kind} {eid!r}"
        if eid in seen:
            raise _err(where, f"duplicate {kind} id")
        seen.add(eid)
        yield where, eid, entry


def _check_rel_path(rel, root: Path, where: str, check_files: bool) -> Path:
    if not isinstance(rel, str) or not rel:
        raise _err(where, f"file entry must be a relative path string, got {rel!r}")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise _err(where, f"file path {rel!r} must be relative to the capture folder (no '..')")
    from ..validation import InputError, resolve_inside

    try:  # symlinks included: a link inside the folder must not point out of it
        full = resolve_inside(root, p, what="file path")
    except InputError as e:
        raise _err(where, str(e)) from None
    if check_files and not full.is_file():
        raise CaptureIncompleteError(f"{where}: missing file {full}")
    return full


# ----------------------------------------------------------------------------------------
# Loader


class Capture:
    """A validated capture folder (see the module docstring and docs/capture_format.md).

    ``Capture.load(dir, check_files=True)``; attributes ``root``, ``meta`` (capture.json),
    ``name``, ``generator``, ``cameras`` {id: :class:`Camera`}, ``lights``
    (:class:`CaptureLights`), ``environments`` {id: absolute path}, ``frames``
    [:class:`CaptureFrame`], ``splits`` {"train": [...], "heldout": [...]}.
    """

    def __init__(self, root, meta, cameras, lights, environments, frames, splits):
        self.root = Path(root)
        self.meta = meta
        self.cameras: dict[str, Camera] = cameras
        self.lights: CaptureLights = lights
        self.environments: dict[str, Path] = environments
        self.frames: list[CaptureFrame] = frames
        self.splits: dict[str, list] = splits
        self._by_id = {f.id: f for f in frames}

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.root.name))

    @property
    def generator(self) -> dict:
        return dict(self.meta.get("generator", {}))

    def __repr__(self) -> str:
        kinds = {k: len(self.frames_by(kind=k)) for k in FRAME_KINDS}
        return (f"Capture({str(self.root)!r}, {len(self.cameras)} cameras, {len(self.lights)} lights, "
                f"{len(self.frames)} frames {kinds})")

    # ---------------------------------------------------------------------------- load
    @classmethod
    def load(cls, root, *, check_files: bool = True) -> "Capture":
        """Read and validate a capture folder. ``check_files``: also check that every image,
        mask and environment file exists (image shapes are checked when read)."""
        root = Path(root)
        if not root.is_dir():
            raise CaptureFormatError(f"{root}: capture folder not found")
        cpath = root / "capture.json"
        meta = _read_json(cpath)
        fmt = meta.get("format")
        if fmt != FORMAT_NAME:
            raise _err(str(cpath), f"'format' is {fmt!r}, expected {FORMAT_NAME!r}")
        ver = meta.get("version")
        if ver != FORMAT_VERSION:
            raise _err(str(cpath), f"unsupported version {ver!r} (this loader reads version {FORMAT_VERSION})")
        units = meta.get("units", "metres")
        if units not in ("metres", "meters", "m"):
            raise _err(str(cpath), f"'units' is {units!r}; only metres are supported")

        # cameras
        cameras: dict[str, Camera] = {}
        for where, cid, c in _id_entries(_need(meta, "cameras", str(cpath)), str(cpath), "camera", required=True):
            K = _array(_need(c, "K", where), (3, 3), where, "K")
            R = _array(_need(c, "R", where), (3, 3), where, "R")
            t = _array(_need(c, "t", where), (3,), where, "t")
            w, h = _need(c, "width", where), _need(c, "height", where)
            if not (isinstance(w, int) and isinstance(h, int)) or w <= 0 or h <= 0:
                raise _err(where, f"'width'/'height' must be positive integers, got {w!r}, {h!r}")
            try:
                cameras[cid] = Camera(K=K, R=R, t=t, width=w, height=h)
            except ValueError as e:
                raise _err(where, str(e)) from None

        # lights
        ids, pos, inten = [], [], []
        for where, lid, L in _id_entries(meta.get("lights", []), str(cpath), "light", int_ids=True):
            ids.append(lid)
            pos.append(_array(_need(L, "position", where), (3,), where, "position"))
            I = _array(_need(L, "intensity", where), (3,), where, "intensity")
            if (I < 0).any():
                raise _err(where, f"'intensity' must be non-negative, got {I.tolist()}")
            inten.append(I)
        lights = CaptureLights(np.asarray(ids, np.int64), np.asarray(pos, np.float64).reshape(-1, 3),
                               np.asarray(inten, np.float64).reshape(-1, 3))

        # environments
        environments: dict[str, Path] = {}
        for where, eid, e in _id_entries(meta.get("environments", []), str(cpath), "environment"):
            environments[eid] = _check_rel_path(_need(e, "file", where), root, where, check_files)

        # frames
        fpath = root / "frames.json"
        fdata = _read_json(fpath)
        frames_raw = _need(fdata, "frames", str(fpath))
        if not isinstance(frames_raw, list):
            raise _err(str(fpath), "'frames' must be a list")
        frames: list[CaptureFrame] = []
        seen: set = set()
        light_set = set(ids)
        for i, f in enumerate(frames_raw):
            frames.append(cls._parse_frame(f, i, fpath, root, seen, cameras, light_set, environments, check_files))

        # splits
        spath = root / "splits.json"
        sdata = _read_json(spath)
        splits: dict[str, list] = {}
        for name in SPLITS:
            lst = sdata.get(name, [])
            if not isinstance(lst, list) or not all(isinstance(x, str) for x in lst):
                raise _err(str(spath), f"'{name}' must be a list of frame ids")
            splits[name] = list(lst)
        extra = set(sdata) - set(SPLITS)
        if extra:
            raise _err(str(spath), f"unknown split name(s) {sorted(extra)}; expected {list(SPLITS)}")
        by_id = {f.id: f for f in frames}
        listed: dict[str, str] = {}
        for name, lst in splits.items():
            for fid in lst:
                if fid not in by_id:
                    raise _err(str(spath), f"split '{name}' lists unknown frame id {fid!r}")
                if fid in listed:
                    raise _err(str(spath), f"frame {fid!r} is listed twice (in '{listed[fid]}' and '{name}')")
                listed[fid] = name
        for f in frames:
            if f.id not in listed:
                raise _err(str(spath), f"frame {f.id!r} (split '{f.split}' in frames.json) is in no split")
            if listed[f.id] != f.split:
                raise _err(str(spath), f"frame {f.id!r} is in split '{listed[f.id]}' here but "
                                       f"'{f.split}' in frames.json")
        return cls(root, meta, cameras, lights, environments, frames, splits)

    @staticmethod
    def _parse_frame(f, i, fpath, root, seen, cameras, light_set, environments, check_files) -> CaptureFrame:
        where = f"{fpath} frame #{i}"
        fid = _need(f, "id", where)
        if not isinstance(fid, str) or not fid:
            raise _err(where, f"frame 'id' must be a non-empty string, got {fid!r}")
        where = f"{fpath} frame {fid!r}"
        if fid in seen:
            raise _err(where, "duplicate frame id")
        seen.add(fid)
        kind = _need(f, "kind", where)
        if kind not in FRAME_KINDS:
            raise _err(where, f"unknown kind {kind!r}; expected one of {list(FRAME_KINDS)}")
        split = _need(f, "split", where)
        if split not in SPLITS:
            raise _err(where, f"unknown split {split!r}; expected one of {list(SPLITS)}")
        hands_raw = _need(f, "hands", where)
        if not isinstance(hands_raw, list) or not hands_raw:
            raise _err(where, "'hands' must be a non-empty list")
        hands = []
        for k, h in enumerate(hands_raw):
            hw = f"{where} hand #{k}"
            side = _need(h, "side", hw)
            pose = _array(_need(h, "pose", hw), (45,), hw, "pose")
            go = _array(h.get("global_orient", [0.0, 0.0, 0.0]), (3,), hw, "global_orient")
            tr = _array(h.get("transl", [0.0, 0.0, 0.0]), (3,), hw, "transl")
            try:
                hands.append(HandState(side, pose, go, tr))
            except ValueError as e:
                raise _err(hw, str(e)) from None
        try:
            scene = Scene(hands, name=fid)
        except ValueError as e:
            raise _err(where, str(e)) from None
        lights_on, env_id, yaw, pitch = [], None, 0.0, 0.0
        if kind in ("olat", "group"):
            lights_on = _need(f, "lights_on", where)
            if not isinstance(lights_on, list) or not lights_on:
                raise _err(where, "'lights_on' must be a non-empty list of light ids")
            for lid in lights_on:
                if isinstance(lid, bool) or not isinstance(lid, int) or lid not in light_set:
                    raise _err(where, f"unknown light id {lid!r} in 'lights_on'")
            if len(set(lights_on)) != len(lights_on):
                raise _err(where, f"'lights_on' repeats a light id: {lights_on}")
            if kind == "olat" and len(lights_on) != 1:
                raise _err(where, f"an 'olat' frame has exactly one light on, got {len(lights_on)}")
            if "env" in f:
                raise _err(where, f"a '{kind}' frame must not have an 'env' entry")
        else:
            env = _need(f, "env", where)
            env_id = _need(env, "id", f"{where} env")
            if env_id not in environments:
                raise _err(where, f"unknown environment id {env_id!r} (capture.json lists "
                                  f"{sorted(environments)})")
            yaw = float(_array(env.get("yaw_deg", 0.0), (), where, "env.yaw_deg"))
            pitch = float(_array(env.get("pitch_deg", 0.0), (), where, "env.pitch_deg"))
            if "lights_on" in f:
                raise _err(where, "an 'env' frame must not have 'lights_on'")
        images_raw = _need(f, "images", where)
        if not isinstance(images_raw, dict) or not images_raw:
            raise _err(where, "'images' must be a non-empty object {camera id: path}")
        masks_raw = f.get("masks", {})
        if not isinstance(masks_raw, dict):
            raise _err(where, "'masks' must be an object {camera id: path}")
        images, masks = {}, {}
        for table, raw, what in ((images, images_raw, "image"), (masks, masks_raw, "mask")):
            for cid, rel in raw.items():
                if cid not in cameras:
                    raise _err(where, f"{what} for unknown camera id {cid!r} (capture.json lists "
                                      f"{sorted(cameras)})")
                table[cid] = _check_rel_path(rel, root, f"{where} {what} {cid!r}", check_files)
        for cid in masks:
            if cid not in images:
                raise _err(where, f"mask for camera {cid!r} has no image")
        return CaptureFrame(id=fid, kind=kind, split=split, scene=scene, lights_on=list(lights_on),
                            env_id=env_id, yaw_deg=yaw, pitch_deg=pitch, images=images, masks=masks)

    # ---------------------------------------------------------------------------- access
    def frame(self, frame_id: str) -> CaptureFrame:
        try:
            return self._by_id[frame_id]
        except KeyError:
            raise KeyError(f"{self.root}: unknown frame id {frame_id!r}") from None

    def frames_by(self, kind: str | None = None, split: str | None = None) -> list[CaptureFrame]:
        """Frames of a kind ('olat' / 'group' / 'env') and / or split ('train' / 'heldout')."""
        if kind is not None and kind not in FRAME_KINDS:
            raise ValueError(f"kind must be one of {FRAME_KINDS}, got {kind!r}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [f for f in self.frames if (kind is None or f.kind == kind) and (split is None or f.split == split)]

    def _frame(self, frame) -> CaptureFrame:
        return frame if isinstance(frame, CaptureFrame) else self.frame(frame)

    def light_intensities(self, frame) -> tuple[np.ndarray, np.ndarray]:
        """(positions [k, 3], intensities [k, 3]) of the lights on in an OLAT / group frame."""
        f = self._frame(frame)
        rows = [self.lights.index(i) for i in f.lights_on]
        return self.lights.positions[rows], self.lights.intensities[rows]

    def environment(self, frame):
        """The frame's environment map (the capture's copy) rotated by its yaw / pitch."""
        from ..environment import EnvironmentMap

        f = self._frame(frame)
        if f.kind != "env":
            raise ValueError(f"frame {f.id!r} is a '{f.kind}' frame, not environment-lit")
        env = EnvironmentMap.load(self.environments[f.env_id], name=f.env_id)
        return env.rotate(f.yaw_deg, f.pitch_deg)

    def _read_view(self, frame, cam_id: str, table: str, reader):
        """(frame, path, data) of ``frame``'s ``table`` ('images' / 'masks') file for ``cam_id``."""
        from ..image_io import ImageReadError

        f = self._frame(frame)
        files = getattr(f, table)
        if cam_id not in files:
            what = "image" if table == "images" else "mask"
            raise KeyError(f"frame {f.id!r} has no {what} for camera {cam_id!r} (has {sorted(files)})")
        path = files[cam_id]
        try:
            return f, path, reader(path)
        except ImageReadError as e:
            raise CaptureFormatError(f"frame {f.id!r} camera {cam_id!r}: {e}") from None

    def image(self, frame, cam_id: str) -> np.ndarray:
        """Linear HDR RGB float32 [H, W, 3] of ``frame`` seen by camera ``cam_id``."""
        from ..image_io import read_hdr_image

        f, path, img = self._read_view(frame, cam_id, "images", read_hdr_image)
        cam = self.cameras[cam_id]
        if img.shape != (cam.height, cam.width, 3):
            raise CaptureFormatError(f"{path}: frame {f.id!r} camera {cam_id!r}: image has shape "
                                     f"{list(img.shape)}, expected [{cam.height}, {cam.width}, 3]")
        return img

    def mask(self, frame, cam_id: str) -> np.ndarray:
        """uint8 [H, W]: 0 background, 1 right hand, 2 left hand (foreground = mask > 0)."""
        from ..image_io import read_png

        f, path, m = self._read_view(frame, cam_id, "masks", read_png)
        if m.ndim == 3:
            m = m[..., 0]
        cam = self.cameras[cam_id]
        if m.shape != (cam.height, cam.width):
            raise CaptureFormatError(f"{path}: frame {f.id!r} camera {cam_id!r}: mask has shape "
                                     f"{list(m.shape)}, expected [{cam.height}, {cam.width}]")
        if m.dtype != np.uint8 or m.max(initial=0) > 2:
            raise CaptureFormatError(f"{path}: frame {f.id!r} camera {cam_id!r}: mask values must be "
                                     f"uint8 0 (background), 1 (right), 2 (left); max is {int(m.max())}")
        return m

    def verify_images(self, progress=None) -> None:
        """Read every image and mask once (shape / value checks); slow for big captures."""
        for f in self.frames:
            for cid in f.images:
                self.image(f, cid)
                if cid in f.masks:
                    self.mask(f, cid)
                if progress is not None:
                    progress.update(1)


# ----------------------------------------------------------------------------------------
# Writer


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CaptureWriter:
    """Builds a capture folder: cameras, lights, environments and frames, then :meth:`write`
    (capture.json, frames.json, splits.json, each written atomically). Images and masks go
    through :meth:`write_view` (atomic: a half-written file never has its final name), so a
    generator can resume by skipping views where :meth:`has_view` is True.
    """

    def __init__(self, root, name: str, generator: dict | None = None):
        self.root = Path(root)
        self.name = str(name)
        self.generator = dict(generator or {})
        self.cameras: dict[str, Camera] = {}
        self.lights: dict[int, tuple] = {}
        self.environments: dict[str, str] = {}
        self.frames: list[CaptureFrame] = []
        self._frame_ids: set = set()

    # -------------------------------------------------------------------- building
    def add_camera(self, cam_id: str, camera: Camera) -> None:
        if cam_id in self.cameras:
            raise ValueError(f"duplicate camera id {cam_id!r}")
        self.cameras[cam_id] = camera

    def add_light(self, light_id: int, position, intensity) -> None:
        light_id = int(light_id)
        if light_id in self.lights:
            raise ValueError(f"duplicate light id {light_id}")
        p = np.asarray(position, np.float64).reshape(3)
        i = np.asarray(intensity, np.float64).reshape(3)
        self.lights[light_id] = (p, i)

    def add_environment(self, env_id: str, source) -> Path:
        """Copy an environment map into ``environments/`` (once) and register it."""
        source = Path(source)
        dest = self.root / "environments" / f"{env_id}{source.suffix.lower()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_file():
            shutil.copyfile(source, dest)
        self.environments[env_id] = dest.relative_to(self.root).as_posix()
        return dest

    def image_path(self, frame_id: str, cam_id: str) -> Path:
        return self.root / "images" / frame_id / f"{cam_id}.exr"

    def mask_path(self, frame_id: str, cam_id: str) -> Path:
        return self.root / "masks" / frame_id / f"{cam_id}.png"

    def add_frame(self, frame_id: str, kind: str, split: str, scene: Scene, *, lights_on=None,
                  env: dict | None = None, cameras=None) -> CaptureFrame:
        """Register a frame seen by ``cameras`` (default: all added so far)."""
        if frame_id in self._frame_ids:
            raise ValueError(f"duplicate frame id {frame_id!r}")
        if kind not in FRAME_KINDS or split not in SPLITS:
            raise ValueError(f"bad kind / split {kind!r} / {split!r}")
        cams = list(self.cameras) if cameras is None else list(cameras)
        env = env or {}
        fr = CaptureFrame(id=frame_id, kind=kind, split=split, scene=scene,
                          lights_on=[int(i) for i in (lights_on or [])], env_id=env.get("id"),
                          yaw_deg=float(env.get("yaw_deg", 0.0)), pitch_deg=float(env.get("pitch_deg", 0.0)),
                          images={c: self.image_path(frame_id, c) for c in cams},
                          masks={c: self.mask_path(frame_id, c) for c in cams})
        self.frames.append(fr)
        self._frame_ids.add(frame_id)
        return fr

    # -------------------------------------------------------------------- output
    def capture_dict(self) -> dict:
        cams = [{"id": cid, "K": c.K.tolist(), "R": c.R.tolist(), "t": c.t.tolist(), "width": c.width,
                 "height": c.height} for cid, c in self.cameras.items()]
        lights = [{"id": lid, "position": p.tolist(), "intensity": i.tolist()} for lid, (p, i) in self.lights.items()]
        envs = [{"id": eid, "file": f} for eid, f in self.environments.items()]
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": self.name,
                "created": _dt.date.today().isoformat(), "generator": self.generator, "units": "metres",
                "color": "linear Rec.709", "cameras": cams, "lights": lights, "environments": envs}

    def write(self) -> None:
        """Write the three JSON files atomically (re-writing them is harmless: resume)."""
        self.root.mkdir(parents=True, exist_ok=True)
        cap = self.capture_dict()
        old = self.root / "capture.json"
        if old.is_file():  # keep the original creation date on resume
            try:
                cap["created"] = json.loads(old.read_text()).get("created", cap["created"])
            except ValueError:
                pass
        _atomic_write_text(old, json.dumps(cap, indent=1) + "\n")
        frames = {"frames": [f.to_dict(self.root) for f in self.frames]}
        _atomic_write_text(self.root / "frames.json", json.dumps(frames, indent=1) + "\n")
        splits = {s: [f.id for f in self.frames if f.split == s] for s in SPLITS}
        _atomic_write_text(self.root / "splits.json", json.dumps(splits, indent=1) + "\n")

    def has_view(self, frame_id: str, cam_id: str) -> bool:
        """True when both the image and the mask of this view are on disk (resume)."""
        return self.image_path(frame_id, cam_id).is_file() and self.mask_path(frame_id, cam_id).is_file()

    def write_view(self, frame_id: str, cam_id: str, image, mask, *, half: bool = True) -> None:
        """Write one view's linear RGB image (EXR, float16 by default) and uint8 mask (PNG)."""
        from ..image_io import write_hdr_image, write_png

        cam = self.cameras[cam_id]
        image = np.asarray(image, np.float32)
        mask = np.asarray(mask)
        if image.shape != (cam.height, cam.width, 3):
            raise ValueError(f"view {frame_id}/{cam_id}: image shape {image.shape}, expected "
                             f"{(cam.height, cam.width, 3)}")
        if mask.shape != (cam.height, cam.width) or mask.dtype != np.uint8:
            raise ValueError(f"view {frame_id}/{cam_id}: mask must be uint8 {(cam.height, cam.width)}, got "
                             f"{mask.dtype} {mask.shape}")
        ip, mp = self.image_path(frame_id, cam_id), self.mask_path(frame_id, cam_id)
        ip.parent.mkdir(parents=True, exist_ok=True)
        mp.parent.mkdir(parents=True, exist_ok=True)
        itmp = ip.with_name(f".{ip.stem}.partial.exr")
        mtmp = mp.with_name(f".{mp.stem}.partial.png")
        write_png(mtmp, mask)
        write_hdr_image(itmp, image, half=half)
        os.replace(mtmp, mp)
        os.replace(itmp, ip)  # the image last: has_view needs both
