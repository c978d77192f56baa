"""VR loop: OpenXR hand tracking -> retargeted hands -> relit student render into both eyes.

    python examples/openxr_hands.py                     # OpenXR if pyopenxr + a runtime, else synthetic
    python examples/openxr_hands.py --mode synthetic --frames 48 --eye-size 184x192 --out vr_hands.gif

Each frame (one function, :meth:`VRHands.step`, shared by both paths):

    joints of both hands (XR_EXT_hand_tracking, 26 per hand)  --HandRetargeter-->  pose, root, bone lengths
    -> Scene(HandState x2, with the calibrated per-bone shape)
    -> two eye Cameras (Camera.from_openxr of each XrView: pose + asymmetric fov)
    -> Engine.render_student(scene, env, [left, right], targets=[left_tex, right_tex])

``--mode openxr`` (``pip install "relit-hands[vr]"``, i.e. pyopenxr, and an OpenXR runtime with
``XR_EXT_hand_tracking`` and ``XR_KHR_opengl_enable``): a hidden GLFW window gives the host OpenGL
context; the session is bound to it (GLX on Linux, WGL on Windows); one swapchain per eye, whose
GL textures are wrapped with ``ctx.external_texture`` and drawn into with no CPU read-back;
``xrLocateHandJointsEXT`` in the LOCAL reference space at the frame's predicted display time;
``xrLocateViews`` for the eyes; one projection layer submitted per frame.

``--mode synthetic`` (what runs here, with no headset): the same loop on a joint stream made from
the hand model itself (:func:`relit_hands.tracking.synthetic_openxr_joints`): both hands do a short
gesture (relaxed -> pinch / fist and back) with tracker noise, the tracked hands are 4-8% longer
in some bones than the model (so the shape calibration has something to find), and one frame of
the right hand is dropped (invalid flags: the retargeter holds the last pose).  The eyes are
OpenXR-style views (Quest-2-like asymmetric fields of view, 64 mm IPD) turned into cameras with
``Camera.from_openxr``; both eyes are drawn into RGBA8 textures standing in for swapchain images,
read back only to write a side-by-side animated GIF and a JSON summary (per-stage ms, held frames).

Shape: the first ``--calibrate`` good frames' ``bone_length_scales`` of each hand are collected; their
per-bone median becomes the hand's shape (``tracking.shape_from_scales``: length per bone, girth 1),
which is then rendered (``HandState.shape``) and used by the retargeter (``set_shape``).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relit_hands import Camera, Engine, EnvironmentMap
from relit_hands.compositor import create_headless_context
from relit_hands.poses import pose_preset
from relit_hands.scene import HandState, Scene, orientation
from relit_hands.tracking import (HandRetargeter, OneEuroFilter, shape_from_scales,
                                  synthetic_openxr_joints)

SIDES = ("left", "right")  # OpenXR's XrHandEXT order and the eye order
# Quest-2-like per-eye fields of view (angleLeft, angleRight, angleUp, angleDown), radians: the eyes'
# frusta are asymmetric, wider towards the temple and below.
QUEST_LIKE_FOV = {"left": (-0.942, 0.698, 0.768, -0.942), "right": (-0.698, 0.942, 0.768, -0.942)}
IPD = 0.064


# ----------------------------------------------------------------------------------------
# The per-frame core (both paths)


@dataclass
class StepResult:
    """One frame: the StudentFrame (None when no hand is known yet), the Scene rendered, which hands
    were held (invalid input, last pose kept) or absent, and per-stage milliseconds."""

    frame: object
    scene: Scene | None
    held: dict
    timings_ms: dict = field(default_factory=dict)


def eye_cameras(views, width: int, height: int) -> list:
    """[left, right] Cameras from two OpenXR views: ``XrView`` objects (``.pose``, ``.fov``) or
    (pose, fov) pairs as :meth:`Camera.from_openxr` takes them."""
    cams = []
    for v in views:
        pose, fov = (v.pose, v.fov) if hasattr(v, "pose") else v
        cams.append(Camera.from_openxr(pose, fov, width, height))
    return cams


class VRHands:
    """Tracked joints of both hands + eye cameras -> both eyes rendered (into host targets).

    ``engine``: an :class:`Engine` (made with the host's GL context to draw into its textures);
    ``env``: the lighting; ``calibrate``: good frames per hand whose bone lengths make its shape
    (0: never shape the hands); ``smoothing``: One Euro filters on the tracked joints."""

    def __init__(self, engine: Engine, env: EnvironmentMap, *, student=None, inference: str = "auto",
                 n_lights: int = 64, smoothing: bool = True, calibrate: int = 30, exposure_ev: float = 0.0):
        self.engine, self.env = engine, env
        self.student, self.inference, self.n_lights, self.exposure_ev = student, inference, n_lights, exposure_ev
        self.calibrate = int(calibrate)
        self.retargeters = {}
        for side in SIDES:
            filters = dict(position_filter=OneEuroFilter(), orientation_filter=OneEuroFilter(beta=0.5)) if smoothing else {}
            self.retargeters[side] = HandRetargeter(engine.models[side], **filters)
        self.scales = {side: [] for side in SIDES}
        self.shapes = {side: None for side in SIDES}

    def retarget(self, joints: dict, timestamp: float | None = None) -> tuple:
        """{side: {'positions' [26, 3], 'orientations' [26, 4], 'location_flags' [26]} or None} ->
        ([HandState], {side: 'tracked' | 'held' | 'absent'})."""
        hands, status = [], {}
        for side in SIDES:
            j = joints.get(side)
            rt = self.retargeters[side]
            if j is None:
                j = {"positions": np.full((26, 3), np.nan), "orientations": np.full((26, 4), np.nan),
                     "location_flags": np.zeros(26, np.int64)}
            try:
                res = rt.retarget_openxr(j["positions"], j["orientations"], j.get("location_flags"), timestamp=timestamp)
            except ValueError:  # invalid and nothing to hold yet
                status[side] = "absent"
                continue
            status[side] = "held" if res.held else "tracked"
            if not res.held and self.calibrate and self.shapes[side] is None:
                self.scales[side].append(res.bone_length_scales)
                if len(self.scales[side]) >= self.calibrate:
                    self.shapes[side] = shape_from_scales(np.array(self.scales[side]))
                    rt.set_shape(self.shapes[side])  # later frames are solved on the shaped skeleton
            hands.append(HandState(side, res.pose, res.global_orient, res.transl, self.shapes[side]))
        return hands, status

    def step(self, joints: dict, cameras: list, *, targets=None, timestamp: float | None = None,
             readback: str | None = None) -> StepResult:
        """One frame: retarget both hands, build the scene, render both eyes with the student into
        ``targets`` ([left, right] host textures / framebuffers; None: read back, see
        :meth:`Engine.render_student`)."""
        t0 = time.perf_counter()
        hands, status = self.retarget(joints, timestamp)
        t1 = time.perf_counter()
        t = {"retarget": (t1 - t0) * 1e3}
        if not hands:
            return StepResult(None, None, status, t)
        scene = Scene(hands, name="openxr")
        frame = self.engine.render_student(scene, self.env, cameras, student=self.student, inference=self.inference,
                                           n_lights=self.n_lights, exposure_ev=self.exposure_ev, targets=targets,
                                           readback=readback if targets is None else None)
        t.update({k: v for k, v in frame.timings_ms.items() if not isinstance(v, list)})
        t["render_total"] = t.pop("total")
        t["total"] = (time.perf_counter() - t0) * 1e3
        return StepResult(frame, scene, status, t)


# ----------------------------------------------------------------------------------------
# Synthetic path: a joint stream made from the model, OpenXR-style eye views


def _smooth(x):
    return x * x * (3 - 2 * x)


class SyntheticXR:
    """A short two-hand gesture as an OpenXR runtime would report it (joints in the LOCAL space:
    head at the origin looking down -Z), with noise, slightly longer bones than the model, and one
    invalid frame of the right hand (``drop_frame``)."""

    def __init__(self, engine: Engine, frames: int = 48, noise: float = 1.5, seed: int = 0, drop_frame: int | None = 9,
                 rate_hz: float = 90.0):
        self.models = engine.models
        self.frames, self.noise, self.rate_hz = frames, noise, rate_hz
        self.drop_frame = drop_frame if drop_frame is not None and drop_frame < frames else None
        self.rng = np.random.default_rng(seed)
        self.gesture = {"right": ("relaxed", "pinch"), "left": ("relaxed", "fist")}
        self.true_shape = {}
        for side in SIDES:  # the user's hands: some bones 4-8% longer than the model's
            s = np.ones((16, 2))
            s[:, 0] = 1.0 + self.rng.uniform(0.0, 0.08, 16)
            self.true_shape[side] = s

    def hand(self, side: str, i: int) -> tuple:
        """(pose, global_orient, transl) of ``side`` at frame i: in front of the head, palm to the eyes."""
        a = _smooth(0.5 - 0.5 * math.cos(2 * math.pi * i / max(self.frames, 1)))  # 0 -> 1 -> 0
        p0, p1 = (pose_preset(n, side) for n in self.gesture[side])
        pose = (1 - a) * p0 + a * p1
        sx = 1.0 if side == "right" else -1.0
        wave = 0.03 * math.sin(2 * math.pi * i / max(self.frames, 1))
        go = orientation((0.15 * sx, 1.0, -0.35), (-0.2 * sx, 0.1, 1.0))
        transl = np.array([sx * 0.075 + wave, -0.13, -0.30])
        return pose, go, transl

    def joints(self, i: int) -> dict:
        out = {}
        for side in SIDES:
            pose, go, tr = self.hand(side, i)
            j = synthetic_openxr_joints(self.models[side], pose, go, tr, noise_mm=self.noise, noise_deg=self.noise,
                                        rng=self.rng, shape=self.true_shape[side])
            if side == "right" and i == self.drop_frame:
                j["location_flags"] = np.zeros(26, np.int64)  # tracking lost for a frame
            out[side] = j
        return out

    def views(self, i: int) -> list:
        """Two OpenXR views ((orientation xyzw, position), fov): the head sways a little."""
        yaw = 0.04 * math.sin(2 * math.pi * i / max(self.frames, 1))
        q = (0.0, math.sin(yaw / 2), 0.0, math.cos(yaw / 2))
        right_axis = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        return [((q, tuple(s * IPD / 2 * right_axis)), QUEST_LIKE_FOV[side]) for s, side in ((-1, "left"), (1, "right"))]


def _median_timings(rows: list) -> dict:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.median([r[k] for r in rows if k in r])) for k in keys}


def run_synthetic(args, engine: Engine | None = None) -> dict:
    """The loop on a synthetic stream; writes ``args.out`` (GIF) and its JSON summary. Returns the summary."""
    from PIL import Image

    w, h = (int(v) for v in args.eye_size.lower().split("x"))
    own = engine is None
    if own:  # this loop plays the VR application: its own GL context, which the Engine draws into
        host_ctx = create_headless_context()
        engine = Engine(ctx=host_ctx, shadow_map_size=256)
    try:
        env = EnvironmentMap.from_name_or_path(args.env).rotate(args.yaw)
        vr = VRHands(engine, env, student=args.model, inference=args.inference, n_lights=args.lights,
                     calibrate=args.calibrate)
        src = SyntheticXR(engine, frames=args.frames, noise=args.noise, seed=args.seed, drop_frame=args.drop_frame)
        ctx = engine.compositor.ctx
        eyes = [ctx.texture((w, h), 4) for _ in SIDES]  # stand-ins for the two swapchain images
        images, rows, held = [], [], {s: [] for s in SIDES}
        for i in range(args.frames):
            cams = eye_cameras(src.views(i), w, h)
            r = vr.step(src.joints(i), cams, targets=eyes, timestamp=i / src.rate_hz)
            tf = time.perf_counter()
            ctx.finish()
            r.timings_ms["gl_finish"] = (time.perf_counter() - tf) * 1e3
            rows.append(r.timings_ms)
            for s, st in r.held.items():
                if st == "held":
                    held[s].append(i)
            sbs = np.concatenate([np.frombuffer(t.read(alignment=1), np.uint8).reshape(h, w, 4)[::-1, :, :3]
                                  for t in eyes], axis=1)
            images.append(sbs)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        frames = [Image.fromarray(np.ascontiguousarray(im)) for im in images]
        frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / args.gif_fps), loop=0)
        shape_err = {}
        for s in SIDES:
            if vr.shapes[s] is not None:
                err = vr.shapes[s][:, 0] / src.true_shape[s][:, 0] - 1.0
                shape_err[s] = {"max_abs_pct": float(np.abs(err).max() * 100), "mean_abs_pct": float(np.abs(err).mean() * 100)}
        summary = {
            "mode": "synthetic",
            "frames": args.frames,
            "eye_size": [w, h],
            "fov_rad": QUEST_LIKE_FOV,
            "ipd_m": IPD,
            "backend": engine.student_backend(args.model, inference=args.inference).name,
            "raycast_backend": engine.raycast_backend,
            "held_frames": held,
            "dropped_frame": src.drop_frame,
            "calibrate_frames": args.calibrate,
            "shape_calibrated": {s: vr.shapes[s] is not None for s in SIDES},
            "shape_error_vs_truth": shape_err,
            "median_ms": _median_timings(rows[1:] if len(rows) > 1 else rows),  # frame 0 includes warm-up
            "first_frame_ms": rows[0].get("total") if rows else None,
            "gif": str(out),
        }
        out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        for t in eyes:
            t.release()
        return summary
    finally:
        if own:
            engine.release()
            with host_ctx:  # released after making it not current (leaving `with` does)
                pass
            host_ctx.release()


# ----------------------------------------------------------------------------------------
# OpenXR path (pyopenxr); not runnable without a runtime and a headset


# OpenGL internal formats of swapchain images we can draw into, best first: (format, moderngl dtype)
_GL_SRGB8_ALPHA8, _GL_RGBA8, _GL_RGBA16F = 0x8C43, 0x8058, 0x881A
_SWAPCHAIN_FORMATS = ((_GL_SRGB8_ALPHA8, "f1"), (_GL_RGBA8, "f1"), (_GL_RGBA16F, "f2"))


def _joints_from_locations(array) -> dict:
    """A ctypes array of 26 ``XrHandJointLocationEXT`` -> the retargeter's arrays (no Python loop:
    the C layout is uint64 flags, XrPosef (quaternion x y z w, position x y z) float32, float32 radius)."""
    dt = np.dtype([("flags", "<u8"), ("q", "<f4", 4), ("p", "<f4", 3), ("radius", "<f4")])
    a = np.frombuffer(array, dtype=dt, count=26)
    return {"positions": a["p"].astype(np.float64), "orientations": a["q"].astype(np.float64),
            "location_flags": a["flags"].astype(np.int64)}


def _check(xr, result) -> None:
    """Raise the pyopenxr exception of a raw function's XrResult (``check_result`` returns it)."""
    r = xr.check_result(xr.Result(result))
    if r.is_exception():
        raise r


def run_openxr(args) -> dict:
    """The loop against an OpenXR runtime (see the module docstring). Raises on setup failures
    (no pyopenxr, no runtime, missing extensions) before anything is rendered."""
    import xr  # ImportError without pyopenxr: nothing was created yet

    needed = [xr.KHR_OPENGL_ENABLE_EXTENSION_NAME, xr.EXT_HAND_TRACKING_EXTENSION_NAME]
    available = xr.enumerate_instance_extension_properties()
    missing = [e for e in needed if e not in available]
    if missing:
        raise RuntimeError(f"the OpenXR runtime lacks {missing}")
    instance = xr.create_instance(xr.InstanceCreateInfo(
        application_info=xr.ApplicationInfo(application_name="relit_hands", application_version=0,
                                            engine_name="relit_hands", engine_version=0,
                                            api_version=xr.Version(1, 0, xr.XR_VERSION_PATCH)),
        enabled_extension_names=needed))
    handles = {}
    try:
        system = xr.get_system(instance, xr.SystemGetInfo(xr.FormFactor.HEAD_MOUNTED_DISPLAY))  # no headset: raises
        stereo = xr.ViewConfigurationType.PRIMARY_STEREO
        config_views = xr.enumerate_view_configuration_views(instance, system, stereo)

        # the host GL context: a hidden window (the runtime's compositor shows the swapchains)
        import glfw
        import moderngl

        if not glfw.init():
            raise RuntimeError("GLFW initialisation failed")
        handles["glfw"] = True
        glfw.window_hint(glfw.VISIBLE, False)
        glfw.window_hint(glfw.DOUBLEBUFFER, False)
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 4)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 1)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        window = glfw.create_window(64, 64, "relit-hands", None, None)
        if window is None:
            raise RuntimeError("cannot create a (hidden) GLFW window for the OpenGL context")
        glfw.make_context_current(window)
        glfw.swap_interval(0)
        ctx = moderngl.create_context()
        # xrGetOpenGLGraphicsRequirementsKHR must be called before xrCreateSession
        req = xr.GraphicsRequirementsOpenGLKHR()
        get_req = ctypes.cast(xr.get_instance_proc_addr(instance, "xrGetOpenGLGraphicsRequirementsKHR"),
                              xr.PFN_xrGetOpenGLGraphicsRequirementsKHR)
        _check(xr, get_req(instance, system, ctypes.byref(req)))
        if platform.system() == "Windows":
            from OpenGL import WGL
            binding = xr.GraphicsBindingOpenGLWin32KHR(h_dc=WGL.wglGetCurrentDC(), h_glrc=WGL.wglGetCurrentContext())
        else:
            from OpenGL import GLX
            binding = xr.GraphicsBindingOpenGLXlibKHR(x_display=GLX.glXGetCurrentDisplay(),
                                                      glx_drawable=GLX.glXGetCurrentDrawable(),
                                                      glx_context=GLX.glXGetCurrentContext())
        session = xr.create_session(instance, xr.SessionCreateInfo(
            xr.SessionCreateFlags.NONE, system, next=ctypes.cast(ctypes.pointer(binding), ctypes.c_void_p)))
        handles["session"] = session
        space = xr.create_reference_space(session, xr.ReferenceSpaceCreateInfo(
            xr.ReferenceSpaceType.LOCAL, xr.Posef(xr.Quaternionf(0, 0, 0, 1), xr.Vector3f(0, 0, 0))))

        offered = list(xr.enumerate_swapchain_formats(session))
        fmt, dtype = next(((f, d) for f, d in _SWAPCHAIN_FORMATS if f in offered), (None, None))
        if fmt is None:
            raise RuntimeError(f"no RGBA8 / SRGB8_ALPHA8 / RGBA16F swapchain format among {offered}")
        swapchains, targets, sizes = [], [], []
        for vp in config_views:  # one swapchain per eye
            w, h = vp.recommended_image_rect_width, vp.recommended_image_rect_height
            sc = xr.create_swapchain(session, xr.SwapchainCreateInfo(
                usage_flags=xr.SwapchainUsageFlags.SAMPLED_BIT | xr.SwapchainUsageFlags.COLOR_ATTACHMENT_BIT,
                format=fmt, sample_count=1, width=w, height=h, face_count=1, array_size=1, mip_count=1))
            images = xr.enumerate_swapchain_images(sc, xr.SwapchainImageOpenGLKHR)
            swapchains.append(sc)
            sizes.append((w, h))
            # the engine draws straight into the runtime's textures
            targets.append([ctx.external_texture(im.image, (w, h), 4, 0, dtype) for im in images])
        trackers = {side: xr.create_hand_tracker_ext(session, xr.HandTrackerCreateInfoEXT(
            hand=xr.HandEXT.LEFT if side == "left" else xr.HandEXT.RIGHT,
            hand_joint_set=xr.HandJointSetEXT.DEFAULT)) for side in SIDES}
        locate = ctypes.cast(xr.get_instance_proc_addr(instance, "xrLocateHandJointsEXT"), xr.PFN_xrLocateHandJointsEXT)
        joint_buffers = {side: (xr.HandJointLocationEXT * 26)() for side in SIDES}
        assert ctypes.sizeof(xr.HandJointLocationEXT) == 40

        engine = Engine(ctx=ctx)
        env = EnvironmentMap.from_name_or_path(args.env).rotate(args.yaw)
        vr = VRHands(engine, env, student=args.model, inference=args.inference, n_lights=args.lights,
                     calibrate=args.calibrate)
        running, frames, rows, t_start = False, 0, [], time.perf_counter()
        while args.frames <= 0 or frames < args.frames:
            # events: session state machine (begin on READY, end on STOPPING, quit on EXITING)
            quit_ = False
            while True:
                try:
                    ev = xr.poll_event(instance)
                except xr.EventUnavailable:
                    break
                if xr.StructureType(ev.type) == xr.StructureType.EVENT_DATA_SESSION_STATE_CHANGED:
                    state = xr.SessionState(ctypes.cast(ctypes.byref(ev), ctypes.POINTER(
                        xr.EventDataSessionStateChanged)).contents.state)
                    if state == xr.SessionState.READY:
                        xr.begin_session(session, xr.SessionBeginInfo(stereo))
                        running = True
                    elif state == xr.SessionState.STOPPING:
                        xr.end_session(session)
                        running = False
                    elif state in (xr.SessionState.EXITING, xr.SessionState.LOSS_PENDING):
                        quit_ = True
                elif xr.StructureType(ev.type) == xr.StructureType.EVENT_DATA_INSTANCE_LOSS_PENDING:
                    quit_ = True
            if quit_:
                break
            if not running:
                time.sleep(0.1)
                continue
            frame_state = xr.wait_frame(session)
            xr.begin_frame(session)
            layers = []
            if frame_state.should_render:
                when = frame_state.predicted_display_time
                view_state, views = xr.locate_views(session, xr.ViewLocateInfo(
                    view_configuration_type=stereo, display_time=when, space=space))
                joints = {}
                for side in SIDES:
                    loc = xr.HandJointLocationsEXT(joint_count=26, joint_locations=joint_buffers[side])
                    _check(xr, locate(trackers[side], ctypes.byref(xr.HandJointsLocateInfoEXT(base_space=space, time=when)),
                                      ctypes.byref(loc)))
                    joints[side] = _joints_from_locations(joint_buffers[side]) if loc.is_active else None
                idx = [xr.acquire_swapchain_image(sc, xr.SwapchainImageAcquireInfo()) for sc in swapchains]
                for sc in swapchains:
                    xr.wait_swapchain_image(sc, xr.SwapchainImageWaitInfo(timeout=xr.INFINITE_DURATION))
                eyes = [targets[k][idx[k]] for k in range(2)]
                cams = [Camera.from_openxr(v.pose, v.fov, *sizes[k]) for k, v in enumerate(views)]
                r = vr.step(joints, cams, targets=eyes, timestamp=when * 1e-9)
                if r.frame is None:  # no hand seen yet: clear the eyes
                    for tex in eyes:
                        fbo = ctx.framebuffer([tex])
                        fbo.clear(0.0, 0.0, 0.0, 1.0)
                        fbo.release()
                rows.append(r.timings_ms)
                for sc in swapchains:
                    xr.release_swapchain_image(sc, xr.SwapchainImageReleaseInfo())
                proj_views = (xr.CompositionLayerProjectionView * 2)()
                for k, v in enumerate(views):
                    pv = proj_views[k]
                    pv.type = xr.StructureType.COMPOSITION_LAYER_PROJECTION_VIEW
                    pv.pose, pv.fov = v.pose, v.fov
                    pv.sub_image.swapchain = swapchains[k]
                    pv.sub_image.image_rect.offset.x = pv.sub_image.image_rect.offset.y = 0
                    pv.sub_image.image_rect.extent.width, pv.sub_image.image_rect.extent.height = sizes[k]
                layer = xr.CompositionLayerProjection(space=space, views=proj_views)
                layers.append(ctypes.byref(layer))
            xr.end_frame(session, xr.FrameEndInfo(display_time=frame_state.predicted_display_time,
                                                  environment_blend_mode=xr.EnvironmentBlendMode.OPAQUE,
                                                  layers=layers))
            frames += 1
        summary = {"mode": "openxr", "frames": frames, "eye_size": list(sizes[0]),
                   "seconds": time.perf_counter() - t_start, "median_ms": _median_timings(rows) if rows else {}}
        engine.release()
        for tr in trackers.values():
            xr.destroy_hand_tracker_ext(tr)
        for sc in swapchains:
            xr.destroy_swapchain(sc)
        return summary
    finally:
        if "session" in handles:
            xr.destroy_session(handles["session"])
        xr.destroy_instance(instance)
        if handles.get("glfw"):
            import glfw
            glfw.terminate()


# ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("auto", "openxr", "synthetic"), default="auto",
                    help="auto: OpenXR when pyopenxr and a runtime are there, else the synthetic stream")
    ap.add_argument("--frames", type=int, default=48, help="frames to run (openxr: 0 = until the session ends)")
    ap.add_argument("--eye-size", default="184x192", help="synthetic: per-eye WxH (a Quest 2 eye is 1832x1920)")
    ap.add_argument("--env", default="studio")
    ap.add_argument("--yaw", type=float, default=0.0)
    ap.add_argument("--model", help="student weights (.safetensors); default: the shipped model")
    ap.add_argument("--inference", default="auto", help="student inference backend: auto | torch | onnxruntime | tensorrt")
    ap.add_argument("--lights", type=int, default=64)
    ap.add_argument("--calibrate", type=int, default=30, help="good frames per hand whose bone lengths make its shape")
    ap.add_argument("--noise", type=float, default=1.5, help="synthetic: tracker noise, mm / deg")
    ap.add_argument("--drop-frame", type=int, default=9, help="synthetic: the right hand's invalid frame")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gif-fps", type=float, default=20.0)
    ap.add_argument("--out", default="openxr_hands.gif", help="synthetic: the side-by-side GIF (+ .json summary)")
    return ap


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.mode in ("auto", "openxr"):
        try:
            summary = run_openxr(args)
            print(json.dumps(summary, indent=1))
            return summary
        except Exception as e:  # no pyopenxr / runtime / headset / extension
            if args.mode == "openxr":
                raise
            print(f"OpenXR unavailable ({type(e).__name__}: {e}); running the synthetic stream", file=sys.stderr)
    summary = run_synthetic(args)
    t = summary["median_ms"]
    print(f"wrote {summary['gif']} ({summary['frames']} frames, 2 x {summary['eye_size'][0]}x{summary['eye_size'][1]}); "
          f"median {t.get('total', float('nan')):.1f} ms/frame (retarget {t.get('retarget', float('nan')):.2f} ms, "
          f"student {t.get('student', float('nan')):.1f} ms, composite {t.get('composite', float('nan')):.1f} ms); "
          f"held frames {summary['held_frames']}")
    return summary


if __name__ == "__main__":
    main()
