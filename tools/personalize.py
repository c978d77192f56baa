r"""``relit-hands personalize``: a user's own relightable hand from a phone video or a few calibrated
cameras (issue #21, step 3).

    relit-hands personalize --video clip.mp4|frames/ --keypoints keypoints.json [--masks masks/]
        [--intrinsics K.json | --fov-deg 60] [--views views.json] [--hand-length-mm 185] --out my_hand/
        [--frames-max N] [--holdout-every 10] [--resume] [--overwrite] [--device cpu|cuda|auto]
        [--no-progress]

The result is a complete hand-asset folder (the format of ``models/hand_v2``) that every part of
the project loads: ``Engine(asset="my_hand")``, ``relit-hands render --asset my_hand``, the viewer,
``HandAsset.load("my_hand")``.

Inputs (the formats ``relit-hands make-phone-video`` writes; see that module's docstring)
------------------------------------------------------------------------------------------
* ``--video``: a video file OpenCV can open (``cv2.VideoCapture``: mp4, mov, avi, mkv, ...), or a
  folder of frames (``*.png``, ``*.jpg``; sorted by name), 8-bit sRGB with a locked exposure.
  Multi-view (``--views``): a folder with one sub-folder of frames per camera id
  (``frames/cam00/000000.png`` ...) or one video per camera id (``frames/cam00.mp4``).
* ``--keypoints``: ``keypoints.json`` with ``"records": [{"frame": i, "camera": id, "keypoints":
  [[x, y] x 21], "confidence": [21]}, ...]``: 21 MediaPipe-order 2D keypoints per frame (and per
  camera), pixels (x right, y down, pixel centres at +0.5), confidence in [0, 1] (0 = not
  detected; a record without ``confidence`` counts as fully confident). ``frame`` defaults to the
  record's position among its camera's records. One record per frame and camera.
* ``--masks`` (optional): a folder of hand masks, one PNG per frame (non-zero = hand), in frame
  order (``masks/cam00/...`` for multi-view), the frames' size. Without masks the silhouette terms
  of the geometry fit are off and the albedo uses the rendered silhouette only.
* ``--intrinsics``: ``{"K": 3x3, "width", "height"}`` (OpenCV K, pixels). Without it the camera
  is *guessed*: a centred principal point and a vertical field of view ``--fov-deg`` (default
  :data:`DEFAULT_FOV_Y_DEG`, a typical phone main camera in portrait); a wrong guess scales the
  fitted hand's distance and, through perspective, a little of its proportions.
* ``--views``: ``views.json`` = ``{"cameras": {id: {"K", "R", "t", "width", "height"}}}``
  (OpenCV ``x_cam = R x_world + t``, metres): every frame seen by every camera; the fit's world is
  the calibration's.
* ``--hand-length-mm`` (optional, 100-300): the hand's length measured with a ruler, from the wrist
  crease to the tip of the middle finger, hand flat. One camera cannot tell a hand's size from its
  distance (perspective is unchanged when the scene is scaled about the camera), so without it the
  size comes from the shape prior (the base asset's 193 mm, within a few per cent); with it the fit
  is metric (:mod:`relit_hands.tools.hand_fit`, last paragraph of its method). Calibrated views
  measure the size themselves; there it is a prior like any other.

Frames whose every keypoint confidence (in every view) is below :data:`NO_HAND_CONFIDENCE` have
no hand: they are skipped with a warning (and listed in ``fit.json``); if none is left, that is an
error. ``--frames-max N`` keeps N frames evenly spaced over the clip (after that). Every
``--holdout-every``-th kept frame (default 10 = 10 %; 0 = none) is held out of the shape and
albedo fits for evaluation.

Errors. Bad input is one error each (a :class:`relit_hands.validation.InputError`, a
``ValueError``: the CLI prints it as one line and exits with status 2), raised before anything is
written: a video or folder that does not open or holds no images, frames of different sizes,
keypoints that are not 21 [x, y] per record or hold NaN / inf (JSON ``NaN`` literals too), a
confidence outside [0, 1], a frame count that does not match the keypoint records, masks missing,
unreadable or of the wrong size, intrinsics / views that are not valid cameras or do not match the
frames' size, and a clip without any hand.

Method (why it runs on a CPU: no differentiable rasterizer is needed)
---------------------------------------------------------------------
1. geometry (:mod:`relit_hands.tools.hand_fit`): per-bone shape, smooth displacements and every
   frame's pose from robust keypoint reprojection + silhouette-distance and coverage terms, joint
   limit / pose / temporal / shape priors, Adam in stages, started from several PnP / depth-mirror
   hypotheses per frame (the cheapest temporally consistent one kept: a fist seen from the back
   does not flip);
2. appearance (:mod:`relit_hands.tools.texture_fit`): the fitted hand rasterised per frame by the
   GL compositor (per-pixel UV and normal), shadows ray-cast on the proxy, and an alternation of
   two linear least-squares solves: per-frame lighting (SH order 2 + one shadowed directional
   light) given the albedo, per-texel albedo given the lighting.

``--device`` moves the geometry fit (torch) to CUDA; the appearance stage always runs on the CPU
(the GL compositor, Embree ray casting and numpy least squares). Measured on this project's 2-core
CPU machine (while another job shared it): 38 frames at 160 px in about 40 s, 98 frames at 256
px in about 100 s (63 s of it the geometry), both end to end (target: 100 frames at 256 px in 20
minutes).

Output folder (``--out``)
-------------------------
``right_hand.npz`` (the base asset ``hand_v2`` with the fitted shape and displacements baked into
the rest geometry -- exactly the base npz's keys and dtypes, only ``render_vertices``,
``proxy_vertices`` and ``joints`` differ, as in ``make-phone-video``'s person folders),
``albedo.png`` (fitted, sRGB 8-bit, the base texture resolution), ``normal.png`` and
``roughness.png`` (*copied from the base asset*: not estimated), ``coverage.png`` (8-bit grey: 255
x how well each texel was observed, 0 = filled from the base albedo), ``asset.json`` (the base's,
with a ``personalized`` entry: inputs, fitted shape, displacement statistics, settings),
``model_card.md``, ``fit.json`` (per-frame pose / root / lighting / errors, losses, timings per
stage; units in its ``units`` entry), ``loss_plot.png``, ``contact_sheet.png`` (per row: input
frame | the base asset | the personalised asset, both drawn with the frame's fitted pose and
lighting through the fit's image model; held-out frames are marked).

Writing. ``--out`` is checked first (:class:`relit_hands.validation.OutputFolder`): a non-empty
folder is refused without ``--overwrite`` (with it, same-named entries are replaced and other
files kept). All work happens in the sibling folder ``<out>.partial`` (stage checkpoints, the asset
being assembled); the finished asset is moved into ``--out`` only at the end, so nothing in
``--out`` is touched before that. ``--resume`` continues from the checkpoints in ``<out>.partial``
(the geometry stages root / pose / shape / displacement / held-out frames, then the appearance
stage) when the inputs and settings are the same (else an error says so); without ``--resume`` a
stale ``<out>.partial`` of this command is discarded.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relit_hands.validation import ArgumentError, InputFileError, OutputError, finite_float, int_range

__all__ = ["FOLDER_KIND", "DEFAULT_FOV_Y_DEG", "NO_HAND_CONFIDENCE", "CaptureInputs", "read_frames",
           "load_inputs", "personalize", "add_arguments", "run_from_args", "main"]

FORMAT_NAME = "relit-hands personalize fit"
FORMAT_VERSION = 1
FOLDER_KIND = "personalize"
PARTIAL_KIND = "personalize-partial"
PARTIAL_SUFFIX = ".partial"
DEFAULT_FOV_Y_DEG = 60.0
DEFAULT_HOLDOUT_EVERY = 10
NO_HAND_CONFIDENCE = 0.05
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CONTACT_SHEET_ROWS = 4


# ============================================================================ inputs


@dataclass
class CaptureInputs:
    """What :func:`load_inputs` read, frames without a hand already dropped.

    ``images`` [F, C, H, W, 3] uint8 sRGB; ``frame_numbers`` [F] (index in the input clip);
    ``keypoints`` [F, C, 21, 2] float64 pixels (MediaPipe order); ``confidence`` [F, C, 21];
    ``masks`` [F, C, H, W] bool or None; ``cameras``: :class:`~relit_hands.tools.hand_fit.FitCameras`;
    ``skipped`` input frame numbers without a hand; ``total_frames`` in the clip; ``camera_note``
    how the intrinsics were obtained; ``sources`` {what: path}."""

    images: np.ndarray
    frame_numbers: np.ndarray
    keypoints: np.ndarray
    confidence: np.ndarray
    masks: np.ndarray | None
    cameras: object
    skipped: list
    total_frames: int
    camera_note: str
    sources: dict = field(default_factory=dict)


def read_frames(source, what: str = "--video") -> list:
    """All frames of a video file or a folder of images, as uint8 [H, W, 3] RGB; one clear error
    (:class:`InputFileError`) when it cannot be opened, holds no frames or frames of different
    sizes."""
    import cv2

    from relit_hands.image_io import ImageReadError, read_png

    p = Path(source)
    frames = []
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputFileError(f"{what} {p}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for f in files:
            try:
                if f.suffix.lower() == ".png":
                    img = read_png(f)
                else:
                    raw = cv2.imread(str(f), cv2.IMREAD_COLOR)
                    if raw is None:
                        raise ImageReadError(f"{f}: unreadable image")
                    img = raw[..., ::-1]
            except ImageReadError as e:
                raise InputFileError(f"{what}: {e}") from None
            if img.dtype == np.uint16:
                img = (img >> 8).astype(np.uint8)
            frames.append(np.ascontiguousarray(img[..., :3]))
    elif p.is_file():
        from relit_hands.image_io import _quiet_opencv

        with _quiet_opencv():
            cap = cv2.VideoCapture(str(p))
            try:
                if not cap.isOpened():
                    raise InputFileError(f"{what} {p}: OpenCV cannot open this video")
                while True:
                    ok, img = cap.read()
                    if not ok:
                        break
                    frames.append(np.ascontiguousarray(img[..., ::-1]))
            finally:
                cap.release()
        if not frames:
            raise InputFileError(f"{what} {p}: the video holds no readable frames")
    else:
        raise InputFileError(f"{what} {p}: no such video file or folder of frames")
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise InputFileError(f"{what} {p}: frames of different sizes {sorted(sizes)}")
    return frames


def _camera_sources(video: Path, ids: list) -> dict:
    """{camera id: frames folder or video} of a multi-view ``--video`` folder."""
    if not video.is_dir():
        raise InputFileError(f"--video {video}: with --views this must be a folder with one sub-folder of frames "
                             f"(or one video) per camera id")
    out = {}
    for cid in ids:
        if (video / cid).is_dir():
            out[cid] = video / cid
            continue
        vids = [video / f"{cid}{ext}" for ext in VIDEO_EXTENSIONS if (video / f"{cid}{ext}").is_file()]
        if not vids:
            raise InputFileError(f"--video {video}: no frames for camera {cid!r} (expected the folder {video / cid} "
                                 f"or a video {cid}.mp4)")
        out[cid] = vids[0]
    return out


def _read_cameras(intrinsics, fov_deg, views, width: int, height: int, mono_id: str):
    """(FitCameras, note) from --intrinsics / --fov-deg / --views."""
    from relit_hands.camera import Camera
    from relit_hands.validation import read_json_file

    from .hand_fit import FitCameras

    def size_of(d, label):
        w, h = d.get("width", width), d.get("height", height)
        if not (isinstance(w, int) and isinstance(h, int)) or (w, h) != (width, height):
            raise InputFileError(f"{label}: camera size {w}x{h} does not match the frames' {width}x{height}")

    if views is not None:
        d = read_json_file(views, what="views file")
        cams = d.get("cameras") if isinstance(d, dict) else None
        if not isinstance(cams, dict) or not cams:
            raise InputFileError(f"{views}: expected {{\"cameras\": {{id: {{\"K\", \"R\", \"t\", \"width\", "
                                 f"\"height\"}}}}}}")
        ids = sorted(cams)
        Ks, Rs, ts = [], [], []
        for cid in ids:
            c = cams[cid]
            try:
                cam = Camera(c["K"], c["R"], c["t"], c.get("width", width), c.get("height", height))
            except (KeyError, TypeError, ValueError) as e:
                raise InputFileError(f"{views}: camera {cid!r}: {e}") from None
            size_of(c, f"{views}: camera {cid!r}")
            Ks.append(cam.K), Rs.append(cam.R), ts.append(cam.t)
        return FitCameras(ids, np.array(Ks), np.array(Rs), np.array(ts), width, height, "world"), \
            f"calibrated, {len(ids)} views ({views})"
    if intrinsics is not None:
        d = read_json_file(intrinsics, what="intrinsics file")
        if not isinstance(d, dict) or "K" not in d:
            raise InputFileError(f"{intrinsics}: expected {{\"K\": 3x3, \"width\", \"height\"}}")
        try:
            cam = Camera(d["K"], np.eye(3), np.zeros(3), width, height)
        except (TypeError, ValueError) as e:
            raise InputFileError(f"{intrinsics}: {e}") from None
        size_of(d, str(intrinsics))
        return FitCameras([mono_id], cam.K[None], np.eye(3)[None], np.zeros((1, 3)), width, height, "camera"), \
            f"intrinsics from {intrinsics}"
    K = Camera.intrinsics_from_fov(float(fov_deg), width, height)
    return FitCameras([mono_id], K[None], np.eye(3)[None], np.zeros((1, 3)), width, height, "camera"), \
        f"guessed: vertical field of view {float(fov_deg):g} degrees, centred principal point (no --intrinsics)"


def _read_keypoints(path, ids: list, counts: dict, multi: bool) -> tuple:
    """(keypoints [N, C, 21, 2], confidence [N, C, 21]) from keypoints.json, checked."""
    from relit_hands.validation import read_json_file

    d = read_json_file(path, what="keypoints file")
    recs = d.get("records") if isinstance(d, dict) else d
    if not isinstance(recs, list) or not recs:
        raise InputFileError(f"{path}: expected {{\"records\": [{{\"frame\", \"camera\", \"keypoints\": 21 x [x, y], "
                             f"\"confidence\": 21}}, ...]}}")
    n = counts[ids[0]]
    kp = np.full((n, len(ids), 21, 2), np.nan)
    cf = np.zeros((n, len(ids), 21))
    seen = np.zeros((n, len(ids)), bool)
    position = {cid: 0 for cid in ids}
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise InputFileError(f"{path}: record {i} is not an object")
        cid = r.get("camera", ids[0]) if multi else ids[0]
        if multi and cid not in ids:
            raise InputFileError(f"{path}: record {i} names camera {cid!r}, which views.json does not have "
                                 f"({', '.join(ids)})")
        c = ids.index(cid)
        f = r.get("frame", position[cid])
        position[cid] += 1
        if isinstance(f, bool) or not isinstance(f, int):
            raise InputFileError(f"{path}: record {i}: 'frame' must be an integer, got {f!r}")
        if not 0 <= f < n:
            raise InputFileError(f"{path}: record {i} is for frame {f}, but the video has {n} frames "
                                 f"(the keypoints and the video do not match)")
        if seen[f, c]:
            raise InputFileError(f"{path}: record {i}: frame {f} (camera {cid}) has more than one record")
        try:
            k = np.asarray(r.get("keypoints"), dtype=np.float64)
        except (TypeError, ValueError):
            raise InputFileError(f"{path}: record {i} (frame {f}): 'keypoints' must be 21 [x, y] numbers") from None
        if k.shape != (21, 2):
            raise InputFileError(f"{path}: record {i} (frame {f}): expected 21 keypoints [x, y] (MediaPipe order), "
                                 f"got shape {list(k.shape)}")
        if not np.isfinite(k).all():
            bad = int(np.flatnonzero(~np.isfinite(k).all(1))[0])
            raise InputFileError(f"{path}: record {i} (frame {f}): keypoint {bad} is NaN or infinite")
        conf = r.get("confidence", [1.0] * 21)
        try:
            q = np.asarray(conf, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputFileError(f"{path}: record {i} (frame {f}): 'confidence' must be 21 numbers") from None
        if q.shape != (21,):
            raise InputFileError(f"{path}: record {i} (frame {f}): expected 21 confidences, got shape {list(q.shape)}")
        if not np.isfinite(q).all() or (q < 0).any() or (q > 1).any():
            raise InputFileError(f"{path}: record {i} (frame {f}): confidences must be finite and within [0, 1]")
        kp[f, c], cf[f, c], seen[f, c] = k, q, True
    for c, cid in enumerate(ids):
        got = int(seen[:, c].sum())
        if got != counts[cid]:
            raise InputFileError(f"{path}: {got} keypoint record(s){f' for camera {cid}' if multi else ''} but the "
                                 f"video has {counts[cid]} frames: the keypoints and the video do not match")
    return kp, cf


def _read_masks(masks, ids: list, n: int, width: int, height: int, multi: bool, keep: np.ndarray) -> np.ndarray:
    from relit_hands.image_io import ImageReadError, read_png

    root = Path(masks)
    out = np.zeros((len(keep), len(ids), height, width), bool)
    for c, cid in enumerate(ids):
        folder = root / cid if multi else root
        if not folder.is_dir():
            raise InputFileError(f"--masks {root}: no folder {folder}")
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".png")
        if len(files) != n:
            raise InputFileError(f"--masks {folder}: {len(files)} mask(s) for {n} frames")
        for j, f in enumerate(keep):
            try:
                m = read_png(files[f])
            except ImageReadError as e:
                raise InputFileError(f"--masks: {e}") from None
            if m.shape[:2] != (height, width):
                raise InputFileError(f"--masks {files[f]}: size {m.shape[1]}x{m.shape[0]} does not match the frames' "
                                     f"{width}x{height}")
            out[j, c] = m[..., 0] > 0 if m.ndim == 3 else m > 0
    return out


def load_inputs(video, keypoints, *, masks=None, intrinsics=None, fov_deg: float | None = None, views=None,
                frames_max: int | None = None) -> CaptureInputs:
    """Read and check every input (module docstring); frames without a hand are dropped with a
    ``UserWarning``. Raises :class:`~relit_hands.validation.InputError` subclasses (ValueError)."""
    video = Path(video)
    multi = views is not None
    if multi:
        from relit_hands.validation import read_json_file

        vd = read_json_file(views, what="views file")
        ids = sorted(vd.get("cameras", {})) if isinstance(vd, dict) and isinstance(vd.get("cameras"), dict) else []
        if not ids:
            raise InputFileError(f"{views}: expected {{\"cameras\": {{id: {{\"K\", \"R\", \"t\", \"width\", "
                                 f"\"height\"}}}}}}")
        sources = _camera_sources(video, ids)
        per_cam = {cid: read_frames(src, f"--video ({cid})") for cid, src in sources.items()}
    else:
        ids = ["phone"]
        per_cam = {"phone": read_frames(video)}
    counts = {cid: len(v) for cid, v in per_cam.items()}
    if len(set(counts.values())) > 1:
        raise InputFileError(f"--video {video}: the cameras have different frame counts {counts}")
    sizes = {v[0].shape[:2] for v in per_cam.values()}
    if len(sizes) > 1:
        raise InputFileError(f"--video {video}: the cameras' frames differ in size {sorted(sizes)}")
    height, width = sizes.pop()
    cams, note = _read_cameras(intrinsics, DEFAULT_FOV_Y_DEG if fov_deg is None else fov_deg, views, width, height,
                               ids[0])
    kp, cf = _read_keypoints(keypoints, ids, counts, multi)
    n = counts[ids[0]]
    has_hand = (cf >= NO_HAND_CONFIDENCE).any((1, 2))
    keep = np.flatnonzero(has_hand)
    if len(keep) == 0:
        raise InputFileError(f"{keypoints}: no frame has a hand (every confidence of every frame is below "
                             f"{NO_HAND_CONFIDENCE})")
    skipped = np.flatnonzero(~has_hand).tolist()
    if skipped:
        warnings.warn(f"{len(skipped)} frame(s) without a hand (every keypoint confidence < {NO_HAND_CONFIDENCE}) "
                      f"skipped: {', '.join(map(str, skipped[:12]))}{' ...' if len(skipped) > 12 else ''}",
                      UserWarning, stacklevel=2)
    if frames_max is not None and len(keep) > frames_max:
        keep = keep[np.unique(np.round(np.linspace(0, len(keep) - 1, int(frames_max))).astype(int))]
    images = np.stack([np.stack([per_cam[cid][f] for cid in ids]) for f in keep])
    mask_arr = _read_masks(masks, ids, n, width, height, multi, keep) if masks is not None else None
    src = {"video": str(video), "keypoints": str(keypoints), "masks": None if masks is None else str(masks),
           "intrinsics": None if intrinsics is None else str(intrinsics), "views": None if views is None else str(views)}
    return CaptureInputs(images=images, frame_numbers=keep, keypoints=kp[keep], confidence=cf[keep], masks=mask_arr,
                         cameras=cams, skipped=skipped, total_frames=n, camera_note=note, sources=src)


# ============================================================================ working folder


def _identity(path) -> list:
    """What identifies an input for --resume: (name, size, mtime) of the file or of the folder's files."""
    if path is None:
        return []
    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
    return [[str(q.resolve()), q.stat().st_size, q.stat().st_mtime_ns] for q in files]


def _signature(sources: dict, settings: dict) -> str:
    blob = json.dumps({"inputs": {k: _identity(v) for k, v in sources.items()}, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Partial:
    """The ``<out>.partial`` working folder: ``progress.json`` (kind, signature, stages done),
    ``checkpoints/`` (``geometry.npz`` + ``geometry.json``, ``appearance.npz`` + ``appearance.json``),
    ``work/`` (flat-normal asset copies for the GL renders), ``asset/`` (the output being assembled)."""

    def __init__(self, out: Path, signature: str, resume: bool):
        self.path = out.parent / (out.name + PARTIAL_SUFFIX)
        self.signature = signature
        self.resumed = False
        prog = self.path / "progress.json"
        if self.path.exists():
            info = None
            try:
                info = json.loads(prog.read_text()) if prog.is_file() else None
            except (OSError, ValueError):
                info = None
            if not isinstance(info, dict) or info.get("kind") != PARTIAL_KIND:
                raise OutputError(f"{self.path}: exists and is not a relit-hands personalize working folder; move it "
                                  f"away (personalize works in <out>{PARTIAL_SUFFIX})")
            if resume:
                if info.get("signature") != signature:
                    raise OutputError(f"--resume: {self.path} was made from other inputs or settings; drop --resume to "
                                      f"start over (the folder is then replaced)")
                self.resumed = True
            else:
                shutil.rmtree(self.path)
        elif resume:
            warnings.warn(f"--resume: no {self.path} to resume from; starting afresh", UserWarning, stacklevel=3)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        if not self.resumed:
            self._write_progress([])

    def _write_progress(self, done: list) -> None:
        from relit_hands.validation import SUMMARY_MARKER, write_text_atomic

        write_text_atomic(self.path / "progress.json", json.dumps(
            {"written_by": SUMMARY_MARKER, "kind": PARTIAL_KIND, "signature": self.signature, "done": done},
            indent=1) + "\n")

    def done(self) -> list:
        try:
            return list(json.loads((self.path / "progress.json").read_text()).get("done", []))
        except (OSError, ValueError):
            return []

    def save(self, name: str, arrays: dict, meta: dict, stage: str) -> None:
        from relit_hands.validation import write_atomic, write_text_atomic

        write_atomic(self.path / "checkpoints" / f"{name}.npz", lambda p: np.savez(p, **arrays))
        write_text_atomic(self.path / "checkpoints" / f"{name}.json", json.dumps(meta) + "\n")
        done = self.done()
        if stage not in done:
            done.append(stage)
        self._write_progress(done)

    def load(self, name: str):
        npz, js = self.path / "checkpoints" / f"{name}.npz", self.path / "checkpoints" / f"{name}.json"
        if not (npz.is_file() and js.is_file()):
            return None
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return arrays, json.loads(js.read_text())


# ============================================================================ the command


def personalize(out, *, video, keypoints, masks=None, intrinsics=None, fov_deg: float | None = None, views=None,
                frames_max: int | None = None, holdout_every: int = DEFAULT_HOLDOUT_EVERY, resume: bool = False,
                overwrite: bool = False, device="auto", progress: bool = True, command: str | None = None,
                geometry_settings=None, appearance_settings=None, hand_length_mm: float | None = None) -> dict:
    """Fit the personalised asset into ``out`` (module docstring); returns the ``fit.json`` dict.

    ``geometry_settings`` / ``appearance_settings``: :class:`~relit_hands.tools.hand_fit.FitSettings`
    / :class:`~relit_hands.tools.texture_fit.AppearanceSettings` (defaults: the command's);
    ``hand_length_mm``: ``--hand-length-mm`` (sets ``FitSettings.hand_length_m``)."""
    from relit_hands import backends
    from relit_hands.validation import OutputFolder, check_number

    from .hand_fit import FitData, FitSettings
    from .texture_fit import AppearanceSettings

    t_start = time.perf_counter()
    out = Path(out)
    if intrinsics is not None and views is not None:
        raise ArgumentError("--intrinsics and --views: give one (views.json holds every camera's K)")
    if fov_deg is not None:
        fov_deg = check_number(fov_deg, "--fov-deg", 1.0, 170.0)
    if frames_max is not None:
        frames_max = check_number(frames_max, "--frames-max", 1, 1_000_000, integer=True)
    holdout_every = check_number(holdout_every, "--holdout-every", 0, 1_000_000, integer=True)
    if hand_length_mm is not None:
        hand_length_mm = check_number(hand_length_mm, "--hand-length-mm", 100.0, 300.0)
    if holdout_every == 1:
        raise ArgumentError("--holdout-every 1 would hold out every frame; use 0 (none) or >= 2")
    dev = backends.resolve_device(device)
    inputs = [video, keypoints, masks, intrinsics, views]
    OutputFolder(out, FOLDER_KIND, overwrite=overwrite, inputs=inputs)
    if out.is_dir() and not overwrite:
        entries = [e for e in os.listdir(out) if not (e.startswith(".") and ".tmp" in e)]
        if entries:
            raise OutputError(f"--out {out}: the folder is not empty (it holds {entries[0]!r}"
                              f"{' ...' if len(entries) > 1 else ''}); choose a new or empty folder, or pass "
                              f"--overwrite to replace the personalised asset's files in it")
    for p in inputs:
        if p is not None and out.resolve() in Path(p).resolve().parents:
            raise OutputError(f"--out {out}: holds the input {p}; choose another output folder")
    cap = load_inputs(video, keypoints, masks=masks, intrinsics=intrinsics, fov_deg=fov_deg, views=views,
                      frames_max=frames_max)
    gset = geometry_settings or FitSettings()
    if hand_length_mm is not None:
        gset = dataclasses.replace(gset, hand_length_m=float(hand_length_mm) * 1e-3)
    aset = appearance_settings or AppearanceSettings()
    F = len(cap.frame_numbers)
    holdout = np.zeros(F, bool)
    if holdout_every and F >= 3:
        holdout[np.arange(F) % holdout_every == holdout_every // 2] = True
    settings_json = {"geometry": gset.to_json(), "appearance": aset.to_json(), "frames_max": frames_max,
                     "holdout_every": holdout_every, "fov_deg": fov_deg}
    part = _Partial(out, _signature(cap.sources, settings_json), resume)
    data = FitData(frames=cap.frame_numbers, keypoints=cap.keypoints, confidence=cap.confidence, masks=cap.masks,
                   holdout=holdout)
    geometry = _geometry_stage(part, data, cap.cameras, gset, dev, progress)
    return _finish(part, out, cap, data, geometry, gset, aset, progress, command, settings_json, t_start)


def _geometry_stage(part: _Partial, data, cams, gset, dev, progress):
    """fit_geometry with a checkpoint after every stage (and resumed from the last one)."""
    from .hand_fit import STAGES, GeometryFit, fit_geometry

    resume = None
    got = part.load("geometry")
    if got is not None:
        arrays, meta = got
        resume = {"stages_done": meta["stages_done"], "state": arrays, "history": meta["history"],
                  "seconds": meta["seconds"], "init_method": meta.get("init_method", [])}
        if set(STAGES) <= set(meta["stages_done"]) and "result" in meta:
            fit = GeometryFit(**{k: arrays["result_" + k] for k in meta["result"]}, history=meta["history"],
                              seconds=meta["seconds"], stages_done=meta["stages_done"])
            fit.init_method = meta.get("init_method", [])
            fit.resumed = True
            return fit

    def checkpoint(stage, payload):
        part.save("geometry", payload["state"], {k: payload[k] for k in ("stages_done", "history", "seconds",
                                                                          "init_method")}, f"geometry:{stage}")

    fit = fit_geometry(data, cams, settings=gset, device=dev, progress=progress, resume=resume, checkpoint=checkpoint)
    got = part.load("geometry")
    arrays = dict(got[0]) if got else {}
    names = ["log_shape", "displacement_coefficients", "render_displacement_m", "proxy_displacement_m", "angles_deg",
             "pose", "global_orient", "transl", "keypoint_error_px"]
    arrays.update({"result_" + k: getattr(fit, k) for k in names})
    part.save("geometry", arrays, {"stages_done": fit.stages_done, "history": fit.history, "seconds": fit.seconds,
                                   "init_method": fit.init_method, "result": names}, "geometry")
    fit.resumed = resume is not None
    return fit


# ============================================================================ outputs


def _hand_state(geometry, i: int):
    from relit_hands.scene import HandState

    return HandState("right", geometry.pose[i].astype(np.float32), geometry.global_orient[i].astype(np.float32),
                     geometry.transl[i].astype(np.float32))


def _write_asset(folder: Path, arrays: dict, albedo_linear: np.ndarray, info: dict, base_dir: Path) -> None:
    """The asset folder through make-phone-video's writer (npz with the base's keys and dtypes,
    albedo, the base's normal and roughness textures copied, the base asset.json with updated
    geometry measures); its ``person`` entry becomes ``personalized``."""
    from relit_hands.image_io import linear_to_srgb

    from . import phone_video as pv

    srgb8 = np.rint(np.clip(linear_to_srgb(albedo_linear), 0.0, 1.0) * 255.0).astype(np.uint8)

    @dataclass
    class _Fitted(pv.Person):
        info: dict = field(default_factory=dict)

        def to_json(self) -> dict:
            return self.info

    person = _Fitted(seed=-1, tone="n/a", base_name=pv.BASE_ASSET, base_dir=base_dir,
                     shape=np.asarray(info["shape"], np.float32), displacement_amplitude_m=float("nan"),
                     render_displacement_m=np.zeros(0, np.float32), proxy_displacement_m=np.zeros(0, np.float32),
                     arrays=arrays, albedo_srgb8=srgb8, info=info)
    pv.write_person_asset(person, folder)
    asset_json = json.loads((folder / "asset.json").read_text())
    asset_json["personalized"] = asset_json.pop("person")
    (folder / "asset.json").write_text(json.dumps(asset_json, indent=2) + "\n")
    (folder / "person.json").unlink()


def _finish(part: _Partial, out: Path, cap: CaptureInputs, data, geometry, gset, aset, progress, command,
            settings_json, t_start) -> dict:
    from relit_hands.hand_model import HandAsset, asset_path
    from relit_hands.image_io import read_albedo_linear, write_png
    from relit_hands.validation import FOLDER_MARKER, SUMMARY_MARKER

    from . import phone_video as pv
    from .hand_fit import bake_asset_arrays

    base_npz = asset_path(pv.BASE_ASSET)
    base_dir = base_npz.parent
    with np.load(base_npz, allow_pickle=False) as z:
        base_arrays = {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    arrays, disp_r, disp_p = bake_asset_arrays(base_arrays, geometry.log_shape, geometry.displacement_coefficients,
                                               gset)
    asset_dir = part.path / "asset"
    if asset_dir.exists():
        shutil.rmtree(asset_dir)
    work = part.path / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    base_albedo = read_albedo_linear(base_dir / "albedo.png")
    # a first asset folder (base albedo) for the GL renders
    info = _personalized_info(cap, geometry, gset, aset, disp_r, settings_json, None)
    _write_asset(asset_dir, arrays, base_albedo, info, base_dir)
    bake_s = time.perf_counter() - t0

    appearance, appearance_resumed = _appearance_stage(part, cap, data, geometry, asset_dir, aset, base_albedo,
                                                       progress)
    t0 = time.perf_counter()
    info = _personalized_info(cap, geometry, gset, aset, disp_r, settings_json, appearance)
    _write_asset(asset_dir, arrays, appearance.albedo, info, base_dir)
    write_png(asset_dir / "coverage.png", np.rint(appearance.coverage * 255.0).astype(np.uint8))
    # figures
    sheet = _contact_sheet(part, cap, data, geometry, appearance, asset_dir, base_dir, base_albedo)
    write_png(asset_dir / "contact_sheet.png", sheet)
    _loss_plot(asset_dir / "loss_plot.png", geometry, appearance, data)
    figures_s = time.perf_counter() - t0
    seconds = dict(geometry.seconds)
    seconds.update({"bake": round(bake_s, 3), **{f"appearance_{k}": v for k, v in appearance.seconds.items()},
                    "figures": round(figures_s, 3)})
    summary = _fit_json(cap, data, geometry, appearance, gset, aset, settings_json, command, seconds, disp_r, disp_p)
    summary["seconds"]["total_this_run"] = round(time.perf_counter() - t_start, 3)
    summary["resumed"] = {"geometry": bool(getattr(geometry, "resumed", False)), "appearance": appearance_resumed}
    (asset_dir / "fit.json").write_text(json.dumps(summary, indent=1) + "\n")
    (asset_dir / "model_card.md").write_text(_model_card(summary, info))
    (asset_dir / FOLDER_MARKER).write_text(json.dumps({"written_by": SUMMARY_MARKER, "kind": FOLDER_KIND}) + "\n")
    # a final check that the folder loads as an asset
    HandAsset.load(asset_dir)
    pv.move_into_place(asset_dir, out)
    shutil.rmtree(part.path, ignore_errors=True)
    return summary


def _appearance_stage(part: _Partial, cap, data, geometry, asset_dir: Path, aset, base_albedo, progress) -> tuple:
    """Observations of every frame (GL renders), then :func:`texture_fit.fit_appearance`; resumed
    from ``checkpoints/appearance`` when present."""
    from tqdm import tqdm

    from relit_hands.engine import Engine
    from relit_hands.hand_model import vertex_normals
    from relit_hands.image_io import srgb_to_linear
    from relit_hands.scene import Scene

    from . import texture_fit as tf

    got = part.load("appearance")
    if got is not None:
        arrays, meta = got
        lights = {int(k): tf.FrameLighting(np.asarray(v["sh_irradiance"]), np.asarray(v["direction"]),
                                           np.asarray(v["colour"]), float(v["rms"]) if v["rms"] is not None else
                                           float("nan")) for k, v in meta["lighting"].items()}
        fit = tf.AppearanceFit(albedo=arrays["albedo"], coverage=arrays["coverage"], albedo_work=arrays["albedo_work"],
                               weight_work=arrays["weight_work"], working_resolution=int(meta["working_resolution"]),
                               gauge=np.asarray(meta["gauge"]), lighting=lights, rounds=meta["rounds"],
                               seconds=meta["seconds"], observations=int(meta["observations"]),
                               mark_threshold=float(meta.get("mark_threshold", 0.0)),
                               whole_texels=int(meta.get("whole_texels", 0)))
        return fit, True
    t0 = time.perf_counter()
    flat = tf.flat_normal_asset(asset_dir, part.path / "work" / "fitted_flat")
    engine = Engine(asset=flat, device="cpu", compositor="gl")
    caster = engine.raycaster                  # the CPU engine's: Embree when installed
    cams = cap.cameras
    F, C = len(cap.frame_numbers), cams.count
    tex_res = base_albedo.shape[0]
    # working resolution from the footprint of a few frames
    uv_images = []
    for i in np.linspace(0, F - 1, min(3, F)).round().astype(int):
        fr = engine.render(Scene([_hand_state(geometry, i)]), None, cams.camera(0), shading="uv", background="none",
                           shadows=False, return_linear=True)
        uv = fr.linear[..., :2].astype(np.float64)
        uv[~fr.mask] = np.nan
        uv_images.append(uv)
    Rw = aset.working_resolution or tf.working_resolution(uv_images, tex_res, pixels_per_texel=aset.pixels_per_texel)
    lookup = engine.uv_rasterizer(Rw)
    frames = {}
    faces = engine.asset.proxy_faces
    for i in tqdm(range(F), desc="appearance: observations", unit="frame", disable=not progress, leave=False,
                  dynamic_ncols=True):
        state = _hand_state(geometry, i)
        views = []
        for c in range(C):
            img8 = cap.images[i, c]
            lin = srgb_to_linear(img8 / 255.0)
            sat = (img8 >= 254).any(-1)
            m = cap.masks[i, c] if cap.masks is not None else None
            obs, _ = tf.observe_view(engine, state, cams.camera(c), lin, m, sat, lookup, Rw, aset.edge_px)
            views.append(obs)
        posed = engine.pose(Scene([state]), meshes=("proxy",))["right"].proxy_vertices[0].detach().cpu()
        pn = vertex_normals(posed, faces)
        frames[i] = tf.FrameObservations(views, posed.double().numpy(), pn.double().numpy())
    observe_s = time.perf_counter() - t0
    train = [i for i in range(F) if not data.holdout[i] and frames[i].count > 0]
    if not train:
        raise InputFileError("no training frame has usable hand pixels (the fitted hand misses the masks?)")
    nails = tf.region_fraction(engine.asset, tf.NAIL_REGION, Rw)
    fit = tf.fit_appearance(frames, train, base_albedo, faces, caster, aset, progress, resolution=Rw,
                            nail_fraction=nails)
    fit.seconds["observations"] = round(observe_s, 3)
    engine.release()
    part.save("appearance", {"albedo": fit.albedo, "coverage": fit.coverage, "albedo_work": fit.albedo_work,
                             "weight_work": fit.weight_work},
              {"working_resolution": fit.working_resolution, "gauge": fit.gauge.tolist(),
               "lighting": {str(k): v.to_json() for k, v in fit.lighting.items()}, "rounds": fit.rounds,
               "seconds": fit.seconds, "observations": fit.observations, "mark_threshold": fit.mark_threshold,
               "whole_texels": fit.whole_texels},
              "appearance")
    return fit, False


def _personalized_info(cap, geometry, gset, aset, disp_r, settings_json, appearance) -> dict:
    from relit_hands.tools.cli import _versions

    d = np.asarray(disp_r, np.float64)
    info = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "base_asset": "hand_v2",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "inputs": dict(cap.sources), "camera": cap.camera_note, "reference_frame": cap.cameras.reference,
            "frames": {"in_clip": cap.total_frames, "used": int(len(cap.frame_numbers)),
                       "skipped_without_hand": cap.skipped},
            "shape": np.round(geometry.shape, 5).tolist(),
            "shape_meaning": "per-bone (length, girth) scales relative to hand_v2 (relit_hands.hand_model.shape_rest), "
                             "MANO joint order; baked into the rest geometry (use shape=None with this asset)",
            "displacement": {"basis": f"{len(geometry.displacement_coefficients)} lowest graph-Laplacian eigenvectors "
                                      f"of the proxy, along the shaped rest normals",
                             "max_abs_mm": round(float(np.abs(d).max() * 1e3), 4),
                             "rms_mm": round(float(np.sqrt((d ** 2).mean()) * 1e3), 4),
                             "mean_mm": round(float(d.mean() * 1e3), 4)},
            "textures": {"albedo.png": "fitted (texture_fit), unobserved texels filled from hand_v2's albedo",
                         "normal.png": "copied from hand_v2 (not estimated)",
                         "roughness.png": "copied from hand_v2 (not estimated)",
                         "coverage.png": "255 x observation confidence per texel"},
            "settings": settings_json, "versions": _versions()}
    if appearance is not None:
        info["appearance"] = {"working_resolution": appearance.working_resolution,
                              "covered_texels_fraction": round(float((appearance.coverage >= 0.5).mean()), 5),
                              "gauge": np.round(appearance.gauge, 5).tolist()}
    return info


def _fit_json(cap, data, geometry, appearance, gset, aset, settings_json, command, seconds, disp_r, disp_p) -> dict:
    from relit_hands.tools.cli import _versions
    from relit_hands.validation import SUMMARY_MARKER

    frames = []
    for i, n in enumerate(cap.frame_numbers):
        light = appearance.lighting.get(i)
        frames.append({"frame": int(n), "held_out": bool(data.holdout[i]),
                       "pose": np.round(geometry.pose[i], 6).tolist(),
                       "global_orient": np.round(geometry.global_orient[i], 6).tolist(),
                       "transl": np.round(geometry.transl[i], 6).tolist(),
                       "angles_deg": np.round(geometry.angles_deg[i], 3).tolist(),
                       "keypoint_error_px": round(float(geometry.keypoint_error_px[i]), 4),
                       "init": geometry.init_method[i] if i < len(geometry.init_method) else None,
                       "lighting": None if light is None else light.to_json()})
    return {"written_by": SUMMARY_MARKER, "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "command": command or "relit-hands personalize (Python API)",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(), "inputs": dict(cap.sources), "camera": cap.camera_note,
            "cameras": cap.cameras.to_json(), "reference_frame": cap.cameras.reference,
            "units": {"pose": "MANO axis-angle, radians (rest world axes), HandModel(this asset)",
                      "global_orient": "axis-angle about the wrist joint, radians", "transl": "metres",
                      "reference_frame": "'camera': the phone's camera frame (OpenCV, R = I, t = 0); 'world': "
                                         "views.json's world",
                      "keypoint_error_px": "confidence-weighted mean 2D reprojection error, pixels",
                      "lighting": "sh_irradiance [9][3]: E(n) = Y(n) @ e (environment.sh_basis); sh_radiance = "
                                  "e / SH_COSINE_BAND; direction: world unit vector towards the light; colour: "
                                  "its RGB irradiance; all in the albedo gauge (texture_fit docstring), linear"},
            "frames_in_clip": cap.total_frames, "skipped_frames": cap.skipped,
            "settings": settings_json,
            "shape": np.round(geometry.shape, 6).tolist(), "log_shape": np.round(geometry.log_shape, 6).tolist(),
            "displacement": {"coefficients_mm": np.round(geometry.displacement_coefficients, 5).tolist(),
                             "render_max_abs_mm": round(float(np.abs(disp_r).max() * 1e3), 4),
                             "render_rms_mm": round(float(np.sqrt((np.asarray(disp_r) ** 2).mean()) * 1e3), 4),
                             "proxy_max_abs_mm": round(float(np.abs(disp_p).max() * 1e3), 4)},
            "appearance": {"working_resolution": appearance.working_resolution,
                           "texture_resolution": int(appearance.albedo.shape[0]),
                           "observations": appearance.observations, "rounds": appearance.rounds,
                           "gauge_of_base": np.round(appearance.gauge, 6).tolist(),
                           "mark_threshold": appearance.mark_threshold,
                           "nail_texels_kept_whole": appearance.whole_texels,
                           "covered_texels_fraction": round(float((appearance.coverage >= 0.5).mean()), 6)},
            "frames": frames,
            "keypoint_error_px": {"fitted": _mean(geometry.keypoint_error_px[~data.holdout]),
                                  "held_out": _mean(geometry.keypoint_error_px[data.holdout])},
            "losses": geometry.history, "seconds": seconds,
            "outputs": ["right_hand.npz", "albedo.png", "normal.png", "roughness.png", "coverage.png", "asset.json",
                        "model_card.md", "fit.json", "loss_plot.png", "contact_sheet.png"]}


def _mean(x) -> float | None:
    x = np.asarray(x, np.float64)
    return round(float(x.mean()), 4) if x.size else None


def _model_card(summary: dict, info: dict) -> str:
    v = summary["versions"]
    kp = summary["keypoint_error_px"]
    sh = np.asarray(summary["shape"])
    lines = [
        "# Personalised hand asset (relit-hands personalize)", "",
        f"Fitted {summary['date']} by `{summary['command']}`.", "",
        "## What was fitted, from what", "",
        f"- Inputs: video `{summary['inputs']['video']}`, keypoints `{summary['inputs']['keypoints']}`, masks "
        f"`{summary['inputs']['masks']}`; camera: {summary['camera']}.",
        f"- Frames: {len(summary['frames'])} used of {summary['frames_in_clip']} "
        f"({len(summary['skipped_frames'])} without a hand skipped); "
        f"{sum(f['held_out'] for f in summary['frames'])} held out of the shape and albedo fits.",
        "- Geometry: per-bone length / girth scales of hand_v2 (range of the fit: length "
        f"{sh[:, 0].min():.3f}-{sh[:, 0].max():.3f}, girth {sh[:, 1].min():.3f}-{sh[:, 1].max():.3f}) and a smooth "
        f"displacement field along the normals (max {summary['displacement']['render_max_abs_mm']:.2f} mm), baked "
        "into the rest meshes; topology, UV atlas, skinning weights are hand_v2's.",
        "- Method: keypoint reprojection (robust), silhouette distance and coverage, joint-limit / pose / temporal / "
        "shape priors, Adam in stages (tools/hand_fit.py); albedo and per-frame lighting (SH order 2 + one shadowed "
        "directional light) by alternating linear least squares on GL-rasterised correspondences "
        "(tools/texture_fit.py).",
        f"- Keypoint reprojection error: {kp['fitted']} px on fitted frames, {kp['held_out']} px on held-out frames.",
        f"- Albedo: solved at {summary['appearance']['working_resolution']}^2, written at "
        f"{summary['appearance']['texture_resolution']}^2; {100 * summary['appearance']['covered_texels_fraction']:.1f} "
        "% of the texture's texels are covered (coverage.png). The albedo is hand_v2's in the fitted gauge times "
        "the person's marks: departures from hand_v2 larger than "
        f"{summary['appearance']['mark_threshold']} (log, after a soft threshold) are kept; smaller, "
        "blotch-like ones are not told apart from lighting-model error and are dropped. The nail plates keep "
        f"their departure whole ({summary['appearance']['nail_texels_kept_whole']} working texels): nail polish.",
        "",
        "## Limits", "",
        "- **normal.png and roughness.png are hand_v2's, copied: not estimated.**",
        "- The albedo is known only up to one scale per colour channel (light and skin trade off); the gauge matches "
        "hand_v2's mean albedo over the observed texels, so a skin-tone difference from hand_v2 is not recovered "
        "in absolute terms, only the pattern.",
        "- The image model is Lambertian (no specular, no subsurface scattering, unshadowed SH ambient); highlights "
        "are down-weighted, not modelled; texels seen only at grazing angles or in few frames are less reliable.",
        ("- Size: from the measured hand length given "
         f"({1e3 * summary['settings']['geometry']['hand_length_m']:.1f} mm, wrist crease to middle fingertip); "
         "proportions are fitted." if summary["settings"]["geometry"].get("hand_length_m") is not None else
         "- From one uncalibrated camera the hand's absolute size is ambiguous with its distance: the shape prior "
         "keeps the common scale near hand_v2's; proportions are fitted. Calibrated views resolve it, and so does "
         "`--hand-length-mm`."),
        "- Displacements are limited to a smooth low-frequency basis (<= ~2 mm): wrinkles and nails' relief are not "
        "recovered.", "",
        "## Versions", "",
        f"relit-hands {v.get('relit-hands')}, torch {v.get('torch')}, numpy {v.get('numpy')}, moderngl "
        f"{v.get('moderngl')}, opencv {v.get('opencv-python-headless')}, python {v.get('python')}.", "",
        "## Timings (seconds)", "",
        ", ".join(f"{k} {v}" for k, v in summary["seconds"].items()), "",
    ]
    return "\n".join(lines)


def _contact_sheet(part, cap, data, geometry, appearance, asset_dir: Path, base_dir: Path, base_albedo):
    """Rows of (input | base asset | personalised asset) for a few training and held-out frames."""
    from relit_hands.engine import Engine
    from relit_hands.image_io import linear_to_srgb, srgb_to_linear

    from . import texture_fit as tf
    from .contact_sheet import grid, label_tile

    train = np.flatnonzero(~data.holdout)
    held = np.flatnonzero(data.holdout)
    n_held = min(len(held), CONTACT_SHEET_ROWS // 2)
    picks = list(held[np.linspace(0, len(held) - 1, n_held).round().astype(int)]) if n_held else []
    n_train = min(len(train), CONTACT_SHEET_ROWS - len(picks))
    picks = sorted(set(picks) | set(train[np.linspace(0, len(train) - 1, n_train).round().astype(int)].tolist()))
    fitted_flat = part.path / "work" / "fitted_flat_final"
    tf.flat_normal_asset(asset_dir, fitted_flat)
    base_flat = tf.flat_normal_asset(base_dir, part.path / "work" / "base_flat")
    eng_fit = Engine(asset=fitted_flat, device="cpu", compositor="gl")
    eng_base = Engine(asset=base_flat, device="cpu", compositor="gl")
    caster = eng_fit.raycaster
    cams = cap.cameras
    size = int(min(max(cap.images.shape[2], 192), 320))
    tiles = []
    for i in picks:
        light = appearance.lighting.get(int(i))
        state = _hand_state(geometry, int(i))
        cam = cams.camera(0)
        img = cap.images[i, 0]
        bg = srgb_to_linear(img / 255.0)
        row = [img]
        for eng, alb in ((eng_base, base_albedo), (eng_fit, appearance.albedo)):
            if light is None:
                row.append(np.zeros_like(img))
                continue
            lin = tf.render_model_image(eng, state, cam, alb, light, caster, eng.uv_rasterizer(256), background=bg)
            row.append(np.rint(np.clip(linear_to_srgb(lin), 0, 1) * 255).astype(np.uint8))
        tag = "held-out " if data.holdout[i] else ""
        labels = [f"{tag}frame {int(cap.frame_numbers[i])}", "base asset", "personalised"]
        for im, lab in zip(row, labels):
            from PIL import Image

            im = np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
            tiles.append(label_tile(im, lab, size=11))
    eng_fit.release()
    eng_base.release()
    return grid(tiles, 3)


def _loss_plot(path: Path, geometry, appearance, data) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = geometry.history
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    offset, x0 = 0, {}
    stages = []
    for rec in hist:
        if rec["stage"] not in x0:
            x0[rec["stage"]] = offset
            stages.append(rec["stage"])
        offset = max(offset, x0[rec["stage"]] + rec["iteration"] + 1)
    terms = sorted({k for r in hist for k in r if k not in ("stage", "iteration")})
    colours = dict(zip(terms, plt.cm.tab10(np.linspace(0, 1, max(len(terms), 1)))))
    for stage in stages:
        recs = [r for r in hist if r["stage"] == stage]
        xs = [x0[stage] + r["iteration"] for r in recs]
        for t in terms:
            ys = [r.get(t) for r in recs]
            if any(y is None for y in ys):
                continue
            y = np.asarray(ys, float)
            y[y <= 0] = np.nan                          # a term that is exactly 0 (inside the limits) is not drawn
            ax.plot(xs, y, color=colours[t], lw=1.6 if t == "total" else 0.9,
                    label=t if t not in [line.get_label() for line in ax.lines] else None)
        ax.axvline(x0[stage], color="grey", lw=0.5, ls=":")
        ax.text(x0[stage], 1.0, stage, transform=ax.get_xaxis_transform(), fontsize=7, va="bottom", rotation=20)
    ax.set_yscale("log")
    ax.set_xlabel("Adam step (stages one after another)")
    ax.set_title("geometry loss terms (summed over frames)", fontsize=9, pad=18)
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1]
    rounds = appearance.rounds
    ax.plot([r["round"] for r in rounds], [r["rms_linear"] for r in rounds], "o-")
    ax.set_xlabel("alternation round")
    ax.set_ylabel("weighted RMS residual (linear)")
    ax.set_title("appearance: lighting <-> albedo", fontsize=9)
    ax = axes[2]
    err = geometry.keypoint_error_px
    idx = np.arange(len(err))
    ax.bar(idx[~data.holdout], err[~data.holdout], color="tab:blue", label="fitted")
    ax.bar(idx[data.holdout], err[data.holdout], color="tab:orange", label="held out")
    ax.set_xlabel("frame (kept order)")
    ax.set_ylabel("keypoint reprojection error (px)")
    ax.legend(fontsize=7)
    ax.set_title("per-frame keypoint error", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ============================================================================ CLI


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``personalize`` options."""
    ap.add_argument("--video", required=True, metavar="VIDEO_OR_FOLDER",
                    help="video file (mp4 ...) or folder of frames; with --views a folder with one sub-folder per camera")
    ap.add_argument("--keypoints", required=True, metavar="JSON", help="2D keypoints (make-phone-video's keypoints.json)")
    ap.add_argument("--masks", metavar="FOLDER", help="hand masks, one PNG per frame (optional: silhouette terms)")
    ap.add_argument("--intrinsics", metavar="JSON", help="camera intrinsics {K, width, height}")
    ap.add_argument("--fov-deg", type=finite_float(1.0, 170.0), default=None,
                    help=f"vertical field of view when no --intrinsics are given (default {DEFAULT_FOV_Y_DEG:g})")
    ap.add_argument("--views", metavar="JSON", help="calibrated cameras (views.json) for a multi-view capture")
    ap.add_argument("--hand-length-mm", type=finite_float(100.0, 300.0), default=None, metavar="MM",
                    help="the hand's length, wrist crease to middle fingertip, hand flat (a ruler): makes a "
                         "one-camera fit metric; without it the size is the base asset's, give or take a few %%")
    ap.add_argument("--out", required=True, help="the personalised asset folder (new or empty unless --overwrite)")
    ap.add_argument("--frames-max", type=int_range(1, 1_000_000), default=None,
                    help="use at most N frames, evenly spaced over the clip")
    ap.add_argument("--holdout-every", type=int_range(0, 1_000_000), default=DEFAULT_HOLDOUT_EVERY,
                    help="hold every k-th frame out of the shape / albedo fit for evaluation (default 10; 0 = none)")
    ap.add_argument("--resume", action="store_true", help=f"continue from <out>{PARTIAL_SUFFIX}")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (same-named files replaced)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where the geometry fit runs (auto: CUDA when usable)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args, command: str | None = None) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            s = personalize(args.out, video=args.video, keypoints=args.keypoints, masks=args.masks,
                            intrinsics=args.intrinsics, fov_deg=args.fov_deg, views=args.views,
                            frames_max=args.frames_max, holdout_every=args.holdout_every, resume=args.resume,
                            overwrite=args.overwrite, device=args.device, progress=not args.no_progress,
                            command=command, hand_length_mm=args.hand_length_mm)
        finally:
            for w in caught:
                print(f"relit-hands personalize: warning: {w.message}", file=sys.stderr)
    kp = s["keypoint_error_px"]
    print(f"personalize: {len(s['frames'])} frames -> {args.out}; keypoint error {kp['fitted']} px fitted, "
          f"{kp['held_out']} px held out; albedo {100 * s['appearance']['covered_texels_fraction']:.1f} % of texels "
          f"covered; {s['seconds']['total_this_run']:.0f} s")
    return 0


def main(argv=None) -> int:
    from relit_hands.validation import OneLineParser

    ap = OneLineParser(prog="relit-hands personalize", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run_from_args(args, "relit-hands personalize " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
