"""The engine runs in a worker *process*; the UI never waits for it.

Responsiveness strategy (issue 8): on Mesa llvmpipe a 1280x720 engine frame takes 0.3-0.9 s,
far slower than the display. So:

* **Worker process, not thread.** A worker thread was measured first: moderngl / numpy hold
  the GIL for long stretches of a frame (readback, scatter-adds), and the UI thread stalled for
  up to 300 ms. A separate process (``multiprocessing`` spawn, its own headless EGL context via
  ``Engine()``) leaves the UI process's interpreter free; frames come back through a queue.
* **Frame skipping (latest wins).** The UI sends a :class:`RenderRequest` whenever the document
  or the camera changed; the worker drains its queue and renders only the newest request.
  The UI keeps drawing the last finished frame at display rate.
* **Progressive quality.** While the user drags (camera, joints, environment), requests carry
  ``scale < 1`` (default 0.5: a quarter of the pixels); when input stops the app re-requests
  the same state at full resolution.

A frame result is a plain dict (pickled through the queue): ``image`` uint8 [H, W, 3] (split
screen, blurred background and proxy wireframe already composed), ``hand_id`` int8 [H, W],
``camera`` (K, R, t, width, height of the render), ``vertices`` {side: posed render vertices}
for picking, ``timings_ms`` (the engine's stages plus the worker's), optional ``linear``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from relit_hands.color import REC709_LUMA, to_uint8, tone_map
from relit_hands.stages import COMPOSITE_STAGES

DEBUG_LIGHTS = 64       # environment lights behind the feature / visibility debug views
DEBUG_RESOLUTION = 256  # their UV map size


@dataclass
class RenderRequest:
    id: int
    state_version: int
    scene: dict
    camera: dict  # K, R, t (lists), width, height  (full view resolution)
    env_spec: str = "studio"
    env_yaw: float = 0.0
    env_pitch: float = 0.0
    env_exposure: float = 0.0
    exposure_ev: float = 0.0
    tonemap: str = "aces"
    background: str = "env"  # env | blurred | none
    shading: str = "pbr"
    split: tuple | None = None  # (left_mode, right_mode, position 0..1)
    shadows: bool = True
    wireframe: bool = False
    scale: float = 1.0
    want_linear: bool = False
    tag: str = ""  # e.g. 'screenshot', 'turntable:3' (echoed back)
    extra: dict = field(default_factory=dict)


def camera_to_dict(cam) -> dict:
    return {"K": np.asarray(cam.K).tolist(), "R": np.asarray(cam.R).tolist(), "t": np.asarray(cam.t).tolist(),
            "width": int(cam.width), "height": int(cam.height)}


def camera_from_dict(d, scale: float = 1.0):
    from ..camera import Camera

    K = np.array(d["K"], np.float64)
    w, h = int(d["width"]), int(d["height"])
    if scale != 1.0:
        w2, h2 = max(16, int(round(w * scale))), max(16, int(round(h * scale)))
        K = K.copy()
        K[0] *= w2 / w
        K[1] *= h2 / h
        w, h = w2, h2
    return Camera(K=K, R=np.array(d["R"], np.float64), t=np.array(d["t"], np.float64), width=w, height=h)


# ------------------------------------------------------------------------------ worker side
class _Renderer:
    """Lives in the worker process: owns the Engine and caches environments."""

    def __init__(self, asset=None, student=None):
        import torch

        torch.set_num_threads(1)  # 2-core machines: leave a core to the UI and to llvmpipe
        from ..engine import SHADINGS, Engine

        t0 = time.perf_counter()
        # the viewer reads hand ids (picking, wireframe) and masks: the GL compositor
        self.engine = Engine(asset=asset, compositor="gl")
        self.student_path = student
        self.init_ms = (time.perf_counter() - t0) * 1e3
        self.shadings = SHADINGS
        self.student, self.student_error = self._load_student()
        self.envs: dict = {}
        self.blurred: dict = {}
        self.good_env = None
        a = {s: m.asset for s, m in self.engine.models.items()}
        self.proxy_faces = {s: np.asarray(a[s].proxy_faces, np.int64) for s in a}
        self.debug_modes = self._debug_modes()
        self._features = None  # (request id, FeatureFrame, proxy normals) of the last debug view
        ctx = self.engine.compositor.ctx
        from ..hand_model import asset_reference

        self.info = {"renderer": ctx.info.get("GL_RENDERER", "?"), "gl_version": ctx.info.get("GL_VERSION", "?"),
                     "asset": asset_reference(self.engine.asset.source or None),
                     # a student of another asset on this layout relights it with this asset's albedo
                     "student_albedo_of": self.student.meta.get("albedo_of") if self.student is not None else None,
                     "torch_device": str(self.engine.device), "engine_init_ms": self.init_ms,
                     "capabilities": self.capabilities()}

    def capabilities(self) -> dict:
        """Shading modes and debug views the engine offers now (the UI's lists are built from
        this, so new engine modes appear without viewer changes)."""
        modes = {}
        modes["student"] = self.student_error
        for m in ("pbr", "albedo", "normal", "uv"):
            modes[m] = None if m in self.shadings else "not offered by this engine"
        debug = {"features": None, "visibility": None, "wireframe": None, "uv_textures": None}
        return {"modes": modes, "debug": debug, "debug_modes": dict(self.debug_modes),
                "feature_channels": [m.split(":", 1)[1] for m in self.debug_modes if m.startswith("feature:")]}

    @staticmethod
    def _debug_modes() -> dict:
        """{mode: label}: one 'feature:<group>' per lighting-feature channel group, and the
        visibility of the environment's brightest light (drawn on the hands in UV space)."""
        import torch

        from ..features import lighting_features
        from ..tools.feature_views import channel_groups

        one = torch.zeros(1, 1, 3)
        _, _, names = lighting_features(one, one + torch.tensor([0.0, 1.0, 0.0]), torch.ones(1, 1, 1, dtype=torch.bool),
                                        np.array([[0.0, 1.0, 0.0]]), np.ones((1, 3)), np.array([0.0, 0.0, 1.0]))
        modes = {f"feature:{label}": f"feature: {label}" for label, _ in channel_groups(names)}
        modes["visibility"] = "visibility of the brightest light"
        return modes

    def _debug_textures(self, mode, req, scene, env, cam) -> dict:
        """{side: float32 [R, R, 3]} display textures of a debug mode (features cached per request)."""
        import torch

        from ..hand_model import vertex_normals
        from ..tools.feature_views import channel_groups, display_values

        if self._features is None or self._features[0] != req.id:
            ff = self.engine.lighting_features(scene, env, cam.center, n_lights=DEBUG_LIGHTS, resolution=DEBUG_RESOLUTION)
            self._features = (req.id, ff)
        ff = self._features[1]
        eng = self.engine
        if mode == "visibility":
            k = int(np.argmax(ff.light_rgb @ REC709_LUMA))
            light = torch.as_tensor(ff.light_dirs[k], dtype=torch.float32)
            cols = []
            for i, h in enumerate(scene.hands):
                v = eng.models[h.side](h.pose, h.global_orient, h.transl, meshes=("proxy",)).proxy_vertices[0]
                facing = vertex_normals(v, eng.models[h.side].proxy_faces) @ light > 0
                vis = ff.visibility[i, :, k]
                c = torch.tensor([0.12, 0.12, 0.12]).repeat(len(v), 1)       # facing away: grey
                c[facing & vis] = torch.tensor([1.0, 0.82, 0.45])               # lit: warm
                c[facing & ~vis] = torch.tensor([0.08, 0.16, 0.6])              # shadowed: blue
                cols.append(c)
            maps = eng.uv_rasterizer(DEBUG_RESOLUTION).gather(torch.stack(cols), eng.asset.proxy_faces)
            return {s: maps[i].permute(1, 2, 0).contiguous().numpy() for i, s in enumerate(ff.sides)}
        label = mode.split(":", 1)[1]
        idx = dict(channel_groups(ff.names))[label]
        maps = ff.maps.permute(0, 2, 3, 1).contiguous().numpy()
        return {s: display_values(label, maps[i][..., idx]).astype(np.float32) for i, s in enumerate(ff.sides)}

    def _render_mode(self, mode, req, scene, env, cam, kw):
        if mode in self.debug_modes:
            tex = self._debug_textures(mode, req, scene, env, cam)
            return self.engine.render(scene, env, cam, shading="uv_texture", radiance_textures=tex,
                                      return_linear=req.want_linear, **{**kw, "tonemap": "none", "exposure_ev": 0.0})
        if self._mode(mode) == "student":
            sf = self.engine.render_student(scene, env, cam, student=self.student, return_linear=req.want_linear,
                                            **{k: v for k, v in kw.items() if k != "shadows"})
            return sf.as_frame()
        return self.engine.render(scene, env, cam, shading=self._mode(mode), return_linear=req.want_linear, **kw)

    def env(self, spec):
        from ..environment import EnvironmentMap

        if spec not in self.envs:
            env = EnvironmentMap.from_name_or_path(spec)  # raises a clear ValueError on bad files
            if len(self.envs) >= 4:
                self.envs.pop(next(iter(self.envs)))
            self.envs[spec] = env
        self.good_env = spec
        return self.envs[spec]

    def blurred_background(self, env, cam, exposure_ev, tonemap):
        import cv2

        from ..environment import EnvironmentMap

        key = id(env.image)
        if key not in self.blurred:
            small = cv2.resize(np.asarray(env.image), (64, 32), interpolation=cv2.INTER_AREA)
            pad = np.concatenate([small[:, -8:], small, small[:, :8]], 1)
            blur = cv2.GaussianBlur(pad, (0, 0), 2.0)[:, 8:-8]
            self.blurred = {key: EnvironmentMap(np.ascontiguousarray(blur), name="blurred")}
        benv = self.blurred[key].with_rotation(env.rotation).with_exposure(env.exposure)
        w, h = max(8, cam.width // 8), max(8, cam.height // 8)
        small_cam = camera_from_dict(camera_to_dict(cam), 1.0)
        small_cam.K = small_cam.K.copy()
        small_cam.K[0] *= w / cam.width
        small_cam.K[1] *= h / cam.height
        small_cam.width, small_cam.height = w, h
        rad = benv.lookup(small_cam.pixel_rays())
        rad = cv2.resize(np.ascontiguousarray(rad, np.float32), (cam.width, cam.height), interpolation=cv2.INTER_LINEAR)
        return to_uint8(tone_map(rad, exposure_ev, tonemap))  # as the compositor's tone-mapping pass

    def _load_student(self):
        """(inference backend of the --student or the shipped default student, None) or (None, why not)."""
        from ..student import StudentLoadError

        try:
            return self.engine.student_backend(self.student_path), None
        except (StudentLoadError, OSError) as e:
            return None, str(e)

    def _mode(self, m):
        if m == "student" and self.student is None:
            return "pbr"
        return m

    def render(self, req: RenderRequest) -> dict:
        from ..scene import HandState, Scene

        t0 = time.perf_counter()
        scene = Scene([HandState(**h) for h in req.scene["hands"]], name=req.scene.get("name", "viewer"))
        cam = camera_from_dict(req.camera, req.scale)
        env_error = None
        try:
            base = self.env(req.env_spec)
        except (ValueError, OSError) as e:
            env_error = str(e)
            base = self.env(self.good_env or "studio")
        env = base.rotate(req.env_yaw, req.env_pitch).with_exposure(req.env_exposure)
        t_env = time.perf_counter()
        bg = {"env": "env", "none": "none", "blurred": "transparent"}[req.background]
        kw = dict(exposure_ev=req.exposure_ev, tonemap=req.tonemap, background=bg, shadows=req.shadows)
        modes = [req.shading] if not req.split else [req.split[0], req.split[1]]
        frames = [self._render_mode(m, req, scene, env, cam, kw) for m in modes]
        t_eng = time.perf_counter()
        img = frames[0].image
        if req.split:
            xs = int(round(float(req.split[2]) * cam.width))
            img = np.concatenate([frames[0].image[:, :xs], frames[1].image[:, xs:]], 1)
        if req.background == "blurred":
            back = self.blurred_background(env, cam, req.exposure_ev, req.tonemap)
            a = img[..., 3:4].astype(np.float32) / 255.0
            img = (img[..., :3] * a + back * (1.0 - a) + 0.5).astype(np.uint8)
        img = np.ascontiguousarray(img[..., :3])
        verts = {s: v.detach().cpu().numpy().astype(np.float32) for s, v in frames[0].vertices.items()}
        if req.wireframe:
            img = self.draw_wireframe(img, frames[0].hand_id, cam, scene)
        t_end = time.perf_counter()
        timings = dict(frames[0].timings_ms)
        comp = frames[-1].composite_ms or {}
        for k in COMPOSITE_STAGES:
            if k in comp:
                timings["composite." + k] = comp[k]
        timings["env_load"] = (t_env - t0) * 1e3
        timings["engine_total"] = (t_eng - t_env) * 1e3
        timings["viewer_post"] = (t_end - t_eng) * 1e3
        timings["worker_total"] = (t_end - t0) * 1e3
        out = {"type": "frame", "id": req.id, "state_version": req.state_version, "tag": req.tag,
               "scale": req.scale, "image": img, "hand_id": frames[0].hand_id, "sides": frames[0].sides,
               "camera": camera_to_dict(cam), "vertices": verts, "timings_ms": timings, "env_error": env_error,
               "env_spec": req.env_spec, "modes": modes}
        if req.want_linear:
            lin = frames[0].linear
            if req.split:
                xs = int(round(float(req.split[2]) * cam.width))
                lin = np.concatenate([frames[0].linear[:, :xs], frames[1].linear[:, xs:]], 1)
            out["linear"] = lin
        return out

    def draw_wireframe(self, img, hand_id, cam, scene):
        """Front-facing proxy edges of each hand, clipped to that hand's pixels (hidden-line look)."""
        import cv2

        out = img.copy()
        eye = cam.center
        posed = self.engine.pose(scene, meshes=("proxy",))  # the wireframe draws the proxy meshes
        for i, h in enumerate(scene.hands):
            pv = posed[h.side].proxy_vertices[0].numpy().astype(np.float64)
            f = self.proxy_faces[h.side]
            tri = pv[f]
            n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            front = np.einsum("ij,ij->i", n, eye - tri.mean(1)) > 0
            pix = cam.project(pv)
            polys = (pix[f[front]] * 4).round().astype(np.int32)  # 2 bits of sub-pixel precision
            layer = np.zeros(out.shape[:2], np.uint8)
            cv2.polylines(layer, list(polys), True, 255, 1, cv2.LINE_AA, shift=2)
            mask = cv2.dilate((hand_id == i).astype(np.uint8), np.ones((3, 3), np.uint8))
            a = (layer.astype(np.float32) / 255.0 * mask * 0.85)[..., None]
            out = (out * (1.0 - a) + np.array([90, 230, 255], np.float32) * a + 0.5).astype(np.uint8)
        return out


def _worker_main(req_q, res_q, parent_pid, asset=None, student=None):
    try:
        os.nice(5)  # under CPU contention the UI process wins: input never waits for the engine
    except (AttributeError, OSError):
        pass
    try:
        r = _Renderer(asset, student)
        res_q.put({"type": "ready", **r.info})
    except Exception as e:  # noqa: BLE001 - reported to the UI, which shows it
        res_q.put({"type": "fatal", "message": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return
    while True:
        try:
            msg = req_q.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:
                return  # the UI died: do not linger
            continue
        batch = [msg]
        while True:  # drain: frame skipping
            try:
                batch.append(req_q.get_nowait())
            except queue.Empty:
                break
        if any(m is None for m in batch):
            break
        # tagged requests (screenshot, turntable) are all rendered, in order; of the interactive
        # ones only the newest, and only if nothing tagged came after it
        todo = [m for m in batch if m.tag]
        if not batch[-1].tag:
            todo.append(batch[-1])
        skipped = len(batch) - len(todo)
        for k, m in enumerate(todo):
            try:
                out = r.render(m)
                out["skipped"] = skipped if k == len(todo) - 1 else 0
                res_q.put(out)
            except Exception as e:  # noqa: BLE001 - a failed frame is reported, the worker lives on
                res_q.put({"type": "error", "id": m.id, "tag": m.tag, "message": f"{type(e).__name__}: {e}",
                           "skipped": skipped if k == len(todo) - 1 else 0, "traceback": traceback.format_exc()})
    try:
        r.engine.release()
    except Exception:  # noqa: BLE001
        pass


class RenderWorker:
    """UI-side handle: ``submit(request)`` never blocks; ``poll()`` returns finished results."""

    def __init__(self, asset=None, student=None):
        """``asset``: the hand asset (a shipped name, an asset folder or its npz; None: the default);
        ``student``: student weights for the 'student' mode (None: the shipped default)."""
        ctx = mp.get_context("spawn")
        self.req_q = ctx.Queue()
        self.res_q = ctx.Queue()
        self.proc = ctx.Process(target=_worker_main, args=(self.req_q, self.res_q, os.getpid(),
                                                           None if asset is None else str(asset),
                                                           None if student is None else str(student)),
                                name="relit-hands-render", daemon=True)
        self.proc.start()
        self.info: dict | None = None
        self.fatal: str | None = None
        self.in_flight = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ready(self) -> bool:
        return self.info is not None

    def submit(self, req: RenderRequest) -> None:
        self.req_q.put(req)
        self.in_flight += 1

    def poll(self) -> list:
        out = []
        while True:
            try:
                msg = self.res_q.get_nowait()
            except queue.Empty:
                break
            except (EOFError, OSError):
                break
            if msg.get("type") == "ready":
                self.info = msg
            elif msg.get("type") == "fatal":
                self.fatal = msg["message"]
            else:
                self.in_flight = max(0, self.in_flight - 1 - int(msg.get("skipped", 0)))
            out.append(msg)
        if self.fatal is None and not self.proc.is_alive() and self.info is not None:
            self.fatal = f"render worker exited (code {self.proc.exitcode})"
        return out

    def close(self, timeout: float = 5.0) -> None:
        if self.proc.is_alive():
            try:
                self.req_q.put(None)
            except (OSError, ValueError):
                pass
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(2.0)
        for q in (self.req_q, self.res_q):
            q.close()
            q.cancel_join_thread()


__all__ = ["RenderRequest", "RenderWorker", "camera_to_dict", "camera_from_dict",
           "asdict"]
