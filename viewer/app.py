"""The desktop viewer: a GLFW window (or a headless EGL framebuffer) with an imgui UI over the
engine's image.

    relit-hands view                       # window (needs a display)
    relit-hands view --headless --script actions.json --frames 120 --screenshot out.png

One frame of :meth:`ViewerApp.step`: play the next scripted input events (if any), poll the
window, collect finished frames from the render worker (:mod:`.render_worker`, a separate
process), build the UI (imgui + implot), turn mouse input on the 3-D view into edits of the
:class:`~.state.ViewerState` (posing by dragging, camera orbit / pan / zoom, environment
rotation), send a render request when the state or the camera changed (reduced resolution while
dragging), and draw: the newest finished frame full-view, the hover highlight, the UI.

Mouse on the 3-D view:
  left on a finger segment ...... drag: bend (flexion) / spread (abduction), within joint limits
  left on the palm .............. drag: move the hand;  Shift + drag: turn it
  left on the background ........ orbit;  Shift + left / middle: pan;  wheel: zoom
  right (or Ctrl + left) ........ rotate the environment (horizontal: yaw, vertical: pitch)
Keys: Ctrl+Z undo, Ctrl+Y / Ctrl+Shift+Z redo, F frame the hands, W proxy wireframe,
      C split-screen comparison, 1..5 shading modes, F12 screenshot.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import sys
from collections import deque
from pathlib import Path

import numpy as np

from ..poses import FINGER_JOINT_NAMES, JOINT_LIMITS, POSE_PRESETS
from ..scene import SCENE_PRESETS
from .picking import Picker, joint_label
from .render_worker import RenderRequest, RenderWorker, camera_to_dict
from .state import BACKGROUNDS, TONEMAPS, ViewerState

log = logging.getLogger("relit_hands.viewer")

MODE_LABELS = {"student": "Neural student", "pbr": "PBR baseline", "albedo": "Albedo", "normal": "Normals",
               "uv": "UV coordinates"}
BG_LABELS = {"env": "Shown", "blurred": "Blurred", "none": "Hidden"}
STAGES = ("skinning", "normals_upload", "composite.env_prepare", "composite.shadows", "composite.draw",
          "composite.readback", "viewer_post", "worker_total")
STAGE_LABELS = {"skinning": "skinning (LBS)", "normals_upload": "normals + upload", "composite.env_prepare": "env lights",
                "composite.shadows": "shadow maps", "composite.draw": "raster + tonemap",
                "composite.readback": "readback", "viewer_post": "viewer extras", "worker_total": "frame total"}
HINT = ("LMB finger: bend / spread   LMB palm: move (Shift: turn)   LMB background: orbit (Shift: pan)   "
        "RMB: rotate environment   wheel: zoom")


def _fonts_dir() -> Path:
    import imgui_bundle

    return Path(imgui_bundle.__file__).parent / "assets" / "fonts"


def _rgba(r, g, b, a=1.0):
    from imgui_bundle import imgui

    return imgui.ImVec4(r, g, b, a)


class ViewerApp:
    """The viewer. ``headless=True``: no window; the UI renders into an offscreen framebuffer
    of a standalone EGL context (screenshots keep the UI; no display needed)."""

    def __init__(self, *, headless: bool = False, size=(1600, 900), scene="clasp", env="studio",
                 render_scale: float = 1.0, interact_scale: float = 0.5, max_fps: float = 60.0, idle_fps: float = 15.0,
                 title: str = "Relit Hands"):
        import moderngl
        from imgui_bundle import imgui, implot

        self.headless = bool(headless)
        self.size = (int(size[0]), int(size[1]))
        self.max_fps = float(max_fps)
        self.render_scale = float(render_scale)
        self.interact_scale = float(interact_scale)
        self.window = None
        self.ui_scale = 1.0
        from ..compositor import preload_triton

        preload_triton()  # before Mesa's LLVM loads (see relit_hands.compositor.preload_triton)
        if self.headless:
            self.ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
            self._fb_tex = self.ctx.texture(self.size, 4)
            self.fbo = self.ctx.framebuffer([self._fb_tex])
        else:
            import glfw

            if not glfw.init():
                raise RuntimeError("GLFW could not initialise (no display?). Use --headless.")
            global _GLFW_WINDOWS
            _GLFW_WINDOWS += 1
            glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
            glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
            glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
            glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
            glfw.window_hint(glfw.SCALE_TO_MONITOR, True)  # HiDPI: logical size x content scale
            self.window = glfw.create_window(self.size[0], self.size[1], title, None, None)
            if not self.window:
                _release_glfw()
                raise RuntimeError("GLFW could not create an OpenGL 3.3 core window. Use --headless.")
            glfw.make_context_current(self.window)
            glfw.swap_interval(1)
            self.ctx = moderngl.create_context(require=330)
            self.fbo = self.ctx.detect_framebuffer()
            self.ui_scale = max(1.0, float(glfw.get_window_content_scale(self.window)[0]))

        self.imgui_ctx = imgui.create_context()
        self.implot_ctx = implot.create_context()
        io = imgui.get_io()
        io.set_ini_filename("")  # fixed layout, nothing written next to the user's files
        io.config_flags |= imgui.ConfigFlags_.nav_enable_keyboard
        self._setup_style()
        from .gl_imgui import GlfwInput, ImguiRenderer

        self.renderer = ImguiRenderer(self.ctx)
        self.input = None if self.headless else GlfwInput(self.window)

        self.state = ViewerState(scene, env)
        self.worker = RenderWorker()
        self.picker = Picker()
        self.frame = None  # newest frame result from the worker
        self.frame_tex = None
        self.frame_ref = None
        self.overlay_tex = None
        self.overlay_ref = None
        self._overlay_key = None
        self.uv_refs = None
        self._req_id = 0
        self._req_key = None
        self._req_scale = None
        self._req_meta: dict = {}
        self._last_input_t = 0.0
        self._framed = False
        self.hover = None
        self.drag = None
        self.errors: deque = deque(maxlen=8)  # shown in the banner until dismissed
        self.log_lines: deque = deque(maxlen=300)
        self._seen_env_errors = set()
        self.env_good = self.state.env_spec
        self.frame_count = 0
        self.frames_received = 0
        self.ui_ms = deque(maxlen=240)
        self.fps_hist = deque(maxlen=240)
        self.engine_hist = deque(maxlen=240)
        self.stage_hist = {k: deque(maxlen=240) for k in STAGES}
        self._t_last = time.perf_counter()
        self._pending_shots: list = []  # (path, with_ui)
        self._pending_exr: dict = {}  # request id -> path
        self.turntable = None
        self.script = None
        self.quit = False
        self.show_uv = False
        self.show_log = False
        self.show_stats = True
        self.env_path = ""
        self.pose_path = "pose.json"
        self.shot_path = "relit_hands_viewer.png"
        self.shot_exr = False
        self.tt_frames = 36
        self.apply_side = 0
        self.edit_side = "right"
        self._dialog = None
        self._shipped = None
        self.info = {}
        self.idle_fps = float(idle_fps)
        self._last_frame_t = 0.0
        self.ui_rects = []
        self._ui_active = False

    # ------------------------------------------------------------------ style
    def _setup_style(self):
        from imgui_bundle import imgui

        io = imgui.get_io()
        s = self.ui_scale
        font = _fonts_dir() / "Roboto" / "Roboto-Regular.ttf"
        if font.is_file():
            self.font = io.fonts.add_font_from_file_ttf(str(font), 15.0 * s)
            bold = _fonts_dir() / "Roboto" / "Roboto-Bold.ttf"
            self.font_bold = io.fonts.add_font_from_file_ttf(str(bold), 15.0 * s) if bold.is_file() else self.font
        else:
            self.font = self.font_bold = None
        imgui.style_colors_dark()
        st = imgui.get_style()
        st.window_rounding = 6.0
        st.child_rounding = 4.0
        st.frame_rounding = 4.0
        st.grab_rounding = 4.0
        st.popup_rounding = 4.0
        st.tab_rounding = 4.0
        st.scrollbar_rounding = 6.0
        st.window_border_size = 1.0
        st.frame_padding = imgui.ImVec2(8, 4)
        st.item_spacing = imgui.ImVec2(8, 6)
        st.window_padding = imgui.ImVec2(10, 10)
        st.window_title_align = imgui.ImVec2(0.0, 0.5)
        c = st.set_color_
        acc = (0.27, 0.62, 0.98)
        c(imgui.Col_.window_bg, _rgba(0.075, 0.08, 0.095, 0.94))
        c(imgui.Col_.child_bg, _rgba(0.06, 0.065, 0.08, 0.6))
        c(imgui.Col_.popup_bg, _rgba(0.09, 0.095, 0.11, 0.97))
        c(imgui.Col_.border, _rgba(0.22, 0.24, 0.28, 0.7))
        c(imgui.Col_.title_bg, _rgba(0.10, 0.11, 0.13, 1.0))
        c(imgui.Col_.title_bg_active, _rgba(0.12, 0.14, 0.18, 1.0))
        c(imgui.Col_.menu_bar_bg, _rgba(0.09, 0.10, 0.12, 1.0))
        c(imgui.Col_.frame_bg, _rgba(0.15, 0.16, 0.19, 1.0))
        c(imgui.Col_.frame_bg_hovered, _rgba(0.20, 0.22, 0.27, 1.0))
        c(imgui.Col_.frame_bg_active, _rgba(0.24, 0.27, 0.33, 1.0))
        c(imgui.Col_.button, _rgba(0.17, 0.19, 0.23, 1.0))
        c(imgui.Col_.button_hovered, _rgba(acc[0] * 0.7, acc[1] * 0.7, acc[2] * 0.7, 1.0))
        c(imgui.Col_.button_active, _rgba(*acc, 1.0))
        c(imgui.Col_.header, _rgba(0.17, 0.20, 0.26, 1.0))
        c(imgui.Col_.header_hovered, _rgba(0.22, 0.30, 0.42, 1.0))
        c(imgui.Col_.header_active, _rgba(0.25, 0.38, 0.56, 1.0))
        c(imgui.Col_.slider_grab, _rgba(*acc, 0.9))
        c(imgui.Col_.slider_grab_active, _rgba(0.45, 0.75, 1.0, 1.0))
        c(imgui.Col_.check_mark, _rgba(*acc, 1.0))
        c(imgui.Col_.separator, _rgba(0.22, 0.24, 0.28, 1.0))
        c(imgui.Col_.text_disabled, _rgba(0.45, 0.47, 0.52, 1.0))
        c(imgui.Col_.plot_lines, _rgba(*acc, 1.0))
        if s != 1.0:
            st.scale_all_sizes(s)

    # ------------------------------------------------------------------ layout
    def window_size(self):
        if self.headless:
            return self.size
        import glfw

        return glfw.get_window_size(self.window)

    def fb_scale(self):
        if self.headless:
            return 1.0, 1.0
        import glfw

        w, h = glfw.get_window_size(self.window)
        fw, fh = glfw.get_framebuffer_size(self.window)
        return (fw / w if w else 1.0), (fh / h if h else 1.0)

    def panel_widths(self):
        W, _ = self.window_size()
        s = self.ui_scale
        left, right = 330 * s, 350 * s
        if W < left + right + 300 * s:  # small window: panels float over the view
            return left, right, False
        return left, right, True

    def view_rect(self):
        """(x0, y0, x1, y1) of the 3-D view in window coordinates."""
        from imgui_bundle import imgui

        W, H = self.window_size()
        top = imgui.get_frame_height() if imgui.get_current_context() else 22
        bottom = 26 * self.ui_scale
        left, right, docked = self.panel_widths()
        if not docked:
            return 0.0, float(top), float(W), float(H - bottom)
        return float(left), float(top), float(W - right), float(H - bottom)

    def render_size(self, scale=1.0):
        x0, y0, x1, y1 = self.view_rect()
        sx, sy = self.fb_scale()
        return max(16, int((x1 - x0) * sx * scale)), max(16, int((y1 - y0) * sy * scale))

    # ------------------------------------------------------------------ logging / errors
    def report(self, msg: str, error: bool = False):
        stamp = time.strftime("%H:%M:%S")
        self.log_lines.append(("ERROR " if error else "") + f"[{stamp}] {msg}")
        (log.error if error else log.info)(msg)
        if error:
            self.errors.append(msg)

    # ------------------------------------------------------------------ worker I/O
    def _display_camera(self):
        w, h = self.render_size(1.0)
        return self.state.camera.camera(w, h)

    def request(self, scale=None, tag="", want_linear=False, camera=None):
        st = self.state
        self._req_id += 1
        cam = camera or self._display_camera()
        req = RenderRequest(
            id=self._req_id, state_version=st.version, scene=st.scene.to_dict(), camera=camera_to_dict(cam),
            env_spec=st.env_spec, env_yaw=st.env_yaw, env_pitch=st.env_pitch, env_exposure=st.env_exposure,
            exposure_ev=st.exposure_ev, tonemap=st.tonemap, background=st.background, shading=st.shading,
            split=(st.split_modes[0], st.split_modes[1], st.split_pos) if st.split else None,
            shadows=st.shadows, wireframe=st.wireframe,
            scale=self.render_scale if scale is None else scale, want_linear=want_linear, tag=tag)
        self.worker.submit(req)
        self._req_meta[req.id] = (st.version, st.camera_version, req.scale)
        if len(self._req_meta) > 64:
            for k in sorted(self._req_meta)[:-32]:
                self._req_meta.pop(k)
        return req.id

    def _maybe_request(self):
        if not self.worker.ready:
            return
        if not self._framed:
            self._frame_hands()
            self._framed = True
        interacting = self.drag is not None or self._ui_active
        key = (self.state.version, self.state.camera_version, self.render_size(1.0))
        full = self.render_scale
        if key != self._req_key:
            scale = full * self.interact_scale if interacting else full
            self.request(scale)
            self._req_key, self._req_scale = key, scale
        elif (not interacting and self._req_scale is not None and self._req_scale < full
              and time.perf_counter() - self._last_input_t > 0.15):
            self.request(full)  # progressive quality: refine once input stops
            self._req_scale = full

    def _frame_hands(self):
        import torch

        pts = []
        with torch.no_grad():
            for h in self.state.scene.hands:
                out = self.picker.models[h.side](h.pose, h.global_orient, h.transl, meshes=("render",))
                pts.append(out.render_vertices[0].numpy())
        w, h = self.render_size(1.0)
        self.state.frame_hands(np.concatenate(pts), w / h)

    def _receive(self):
        for msg in self.worker.poll():
            t = msg.get("type")
            if t == "ready":
                self.info = msg
                self.report(f"render worker ready: {msg['renderer']} (OpenGL {msg['gl_version']}), "
                            f"engine init {msg['engine_init_ms']:.0f} ms")
                self._start_with_student()
            elif t == "fatal":
                self.report(f"render worker failed: {msg['message']}", error=True)
            elif t == "error":
                self.report(f"render failed: {msg['message']}", error=True)
            elif t == "frame":
                self._on_frame(msg)

    def _on_frame(self, fr):
        if fr.get("env_error"):
            spec = fr["env_spec"]
            if spec not in self._seen_env_errors:
                self._seen_env_errors.add(spec)
                self.report(f"Could not open environment: {fr['env_error']}", error=True)
            if self.state.env_spec == spec:  # revert to the last environment that loaded
                self.state.env_spec = self.env_good
                self.state.drop_last_undo()
                self.state.touch()
        else:
            self.env_good = fr["env_spec"]
        tag = fr.get("tag") or ""
        if tag.startswith("turntable:"):
            self._on_turntable_frame(fr)
            return
        if fr["id"] in self._pending_exr:
            path = self._pending_exr.pop(fr["id"])
            try:
                from ..image_io import write_hdr_image
                from ..validation import check_finite_image, write_atomic

                linear = fr["linear"]
                check_finite_image(linear, f"EXR {path}")  # NaN / inf: an error, nothing written
                write_atomic(path, lambda p: write_hdr_image(p, linear))
                self.report(f"wrote linear EXR {path}")
            except (ValueError, OSError) as e:
                self.report(f"EXR screenshot failed: {e}", error=True)
        if self.frame is not None and fr["id"] < self.frame["id"]:
            return
        self.frame = fr
        self._last_frame_t = time.perf_counter()
        self.frames_received += 1
        self.picker.set_frame(fr)
        self._upload_frame(fr["image"])
        tm = fr["timings_ms"]
        self.engine_hist.append(tm.get("worker_total", 0.0))
        for k in STAGES:
            self.stage_hist[k].append(tm.get(k, 0.0))

    def _upload_frame(self, img):
        """Upload into the older of two textures (ping-pong), so the write never waits for the
        GPU (llvmpipe: the CPU) to finish drawing the texture shown last frame."""
        import moderngl

        h, w = img.shape[:2]
        self._tex_i = (getattr(self, "_tex_i", 0) + 1) % 2
        ring = getattr(self, "_frame_texs", [None, None])
        t = ring[self._tex_i]
        if t is None or t.size != (w, h):
            if t is not None:
                self.renderer.forget(t)
                t.release()
            t = self.ctx.texture((w, h), 3, alignment=1)
            t.filter = (moderngl.LINEAR, moderngl.LINEAR)
            ring[self._tex_i] = t
        self._frame_texs = ring
        t.write(np.ascontiguousarray(img).tobytes())
        self.frame_tex = t
        self.frame_ref = self.renderer.texture_ref(t)

    def frame_is_current(self) -> bool:
        """The displayed frame shows the current state and camera at full quality."""
        if self.frame is None:
            return False
        meta = self._req_meta.get(self.frame["id"])
        return (meta is not None and meta[0] == self.state.version and meta[1] == self.state.camera_version
                and self.frame["scale"] >= self.render_scale - 1e-6 and self.worker.in_flight == 0
                and self.frame["camera"]["width"] == self.render_size(self.render_scale)[0])

    # ------------------------------------------------------------------ view input
    def _to_frame_px(self, mx, my):
        x0, y0, x1, y1 = self.view_rect()
        cam = self.frame["camera"]
        return (mx - x0) / (x1 - x0) * cam["width"], (my - y0) / (y1 - y0) * cam["height"]

    def _handle_view_input(self):
        from imgui_bundle import imgui

        io = imgui.get_io()
        mx, my = io.mouse_pos.x, io.mouse_pos.y
        x0, y0, x1, y1 = self.view_rect()
        in_view = x0 <= mx < x1 and y0 <= my < y1 and not io.want_capture_mouse
        st = self.state
        if self.drag is None and in_view:
            for b in (0, 1, 2):
                if imgui.is_mouse_clicked(b):
                    self._start_drag(b, mx, my, io)
                    break
            if io.mouse_wheel != 0.0:
                st.camera.zoom(0.9 ** io.mouse_wheel)
                st.camera_changed()
                self._last_input_t = time.perf_counter()
        if self.drag is not None:
            d = self.drag
            if imgui.is_mouse_down(d["button"]):
                dx, dy = mx - d["x"], my - d["y"]
                if dx or dy:
                    self._last_input_t = time.perf_counter()
                self._update_drag(d, dx, dy)
            else:
                self.drag = None
                st.end_edit()
                self._last_input_t = time.perf_counter()
        # hover
        if self.drag is None:
            self.hover = None
            if in_view and self.frame is not None:
                u, v = self._to_frame_px(mx, my)
                pk = self.picker.pick(u, v)
                self.hover = pk

    def _start_drag(self, button, mx, my, io):
        st = self.state
        d = {"button": button, "x": mx, "y": my, "key": f"drag{time.perf_counter()}"}
        pk = None
        if self.frame is not None:
            pk = self.picker.pick(*self._to_frame_px(mx, my))
        ctrl, shift = io.key_ctrl, io.key_shift
        if button == 1 or (button == 0 and ctrl):
            d.update(kind="env", yaw0=st.env_yaw, pitch0=st.env_pitch)
        elif button == 2 or (button == 0 and shift and pk is None):
            d.update(kind="pan", target0=np.array(st.camera.target), cam0=st.camera.copy())
        elif pk is not None and pk.side in st.sides():
            h = st.hand(pk.side)
            d.update(side=pk.side, joint=pk.joint, pick=pk)
            if pk.joint == 0:
                d.update(kind="turn" if shift else "move", transl0=h.transl.copy(), orient0=h.global_orient.copy())
            else:
                ang = st.angles(pk.side)
                g = self.picker.drag_gains(h, ang, pk.joint)
                x0, _, x1, _ = self.view_rect()
                g = g * ((x1 - x0) / self.frame["camera"]["width"])  # frame px -> window px
                d.update(kind="joint", angles0=ang[pk.joint - 1].copy(), gains=g)
        else:
            d.update(kind="orbit", yaw0=st.camera.yaw, pitch0=st.camera.pitch)
        self.drag = d

    def _update_drag(self, d, dx, dy):
        st = self.state
        k = d["kind"]
        if k == "orbit":
            st.camera.yaw = d["yaw0"] - 0.35 * dx
            st.camera.orbit(0, 0)
            st.camera.pitch = float(np.clip(d["pitch0"] + 0.35 * dy, -89, 89))
            st.camera_changed()
        elif k == "pan":
            st.camera.target = d["target0"].copy()
            st.camera.pan(dx, dy, self.view_rect()[3] - self.view_rect()[1])
            st.camera_changed()
        elif k == "env":
            yaw = (d["yaw0"] + 0.3 * dx + 180.0) % 360.0 - 180.0
            pitch = float(np.clip(d["pitch0"] - 0.2 * dy, -90, 90))
            if (yaw, pitch) != (st.env_yaw, st.env_pitch):
                st.begin_edit(d["key"])
                st.env_yaw, st.env_pitch = yaw, pitch
                st.touch()
        elif k == "joint":
            da = Picker.drag_to_angles(d["gains"], (dx, dy))
            a0 = d["angles0"]
            if dx or dy:
                st.set_joint(d["side"], d["joint"] - 1, flexion=a0[0] + da[0], abduction=a0[1] + da[1], key=d["key"])
        elif k == "move":
            cam = self._display_camera()
            depth = float((cam.R @ d["pick"].point + cam.t)[2])
            x0, _, x1, _ = self.view_rect()
            m_per_px = depth / cam.K[0, 0] * (cam.width / (x1 - x0))
            if dx or dy:
                st.move_hand(d["side"], d["transl0"] + (cam.R.T @ np.array([dx, dy, 0.0])) * m_per_px, key=d["key"])
        elif k == "turn":
            cam = self._display_camera()
            if dx or dy:
                go = ViewerState.turned(d["orient0"], -cam.R[1], 0.5 * dx)
                go = ViewerState.turned(go, cam.R[0], -0.5 * dy)
                # turn about the picked point, not the wrist: keep the grabbed point in place
                from scipy.spatial.transform import Rotation

                r = Rotation.from_rotvec(go) * Rotation.from_rotvec(d["orient0"]).inv()
                p = d["pick"].point
                t0 = d["transl0"].astype(np.float64)
                st.orient_hand(d["side"], go, key=d["key"])
                st.move_hand(d["side"], p + r.apply(t0 - p), key=d["key"])

    def _handle_keys(self):
        from imgui_bundle import imgui

        io = imgui.get_io()
        if io.want_capture_keyboard:
            return
        st = self.state
        ctrl = io.key_ctrl
        if ctrl and imgui.is_key_pressed(imgui.Key.z):
            st.redo() if io.key_shift else st.undo()
        elif ctrl and imgui.is_key_pressed(imgui.Key.y):
            st.redo()
        elif imgui.is_key_pressed(imgui.Key.f):
            self._frame_hands()
        elif imgui.is_key_pressed(imgui.Key.w):
            st.set("wireframe", not st.wireframe)
        elif imgui.is_key_pressed(imgui.Key.c):
            st.set("split", not st.split)
        elif imgui.is_key_pressed(imgui.Key.f12):
            self.screenshot(self.shot_path)
        else:
            modes = self.available_modes()
            for i, m in enumerate(modes[:9]):
                if imgui.is_key_pressed(getattr(imgui.Key, f"_{i + 1}")):
                    st.set("shading", m)

    def _start_with_student(self):
        """With a trained student installed, open on the neural relighting (and compare it with the
        PBR baseline in split screen) unless the user already picked modes."""
        why = ((self.info.get("capabilities") or {}).get("modes") or {}).get("student", "")
        if why is None and self.state.open_with(shading="student", split_modes=("student", "pbr")):
            self.report("neural student loaded (shipped default model); PBR baseline: key 2 or split screen (C)")
        elif why:
            self.report(f"neural student unavailable: {why}; showing the PBR baseline")

    # ------------------------------------------------------------------ actions (UI + scripts)
    def available_modes(self):
        caps = (self.info.get("capabilities") or {}).get("modes") or {}
        if not caps:
            return ["pbr", "albedo", "normal", "uv"]
        return [m for m, why in caps.items() if why is None]

    def open_env(self, spec):
        spec = str(spec).strip()
        if not spec:
            self.report("Open environment: no file given", error=True)
            return
        p = Path(spec).expanduser()
        if not p.is_file() and (len(p.parts) > 1 or p.suffix):
            self.report(f"Could not open environment: {spec}: no such file", error=True)
            return
        self.state.set_env(str(p) if p.is_file() else spec)
        self.report(f"environment: {spec}")

    def load_pose(self, path):
        try:
            self.state.load_pose(Path(path).expanduser())
            self.report(f"loaded pose {path}")
            return True
        except (ValueError, OSError) as e:
            self.report(f"Could not load pose: {e}", error=True)
            return False

    def save_pose(self, path):
        try:
            self.state.save_pose(Path(path).expanduser())
            self.report(f"saved pose {path}")
            return True
        except (ValueError, OSError) as e:
            self.report(f"Could not save pose: {e}", error=True)
            return False

    def preset(self, name, side=None):
        try:
            self.state.preset(name, side)
            if side is None:
                self._frame_hands()
        except ValueError as e:
            self.report(str(e), error=True)

    def screenshot(self, path, with_ui=True, exr=None):
        """PNG of the window (UI included) after this frame's draw; ``with_ui=False``: the engine
        frame only. ``exr``: also the linear HDR frame (rendered for it at full resolution)."""
        self._pending_shots.append((str(path), bool(with_ui)))
        if exr:
            rid = self.request(self.render_scale, tag="exr", want_linear=True)
            self._pending_exr[rid] = str(exr)

    def start_turntable(self, folder, frames=36, degrees=360.0):
        """Record ``frames`` orbit frames into ``folder``: a new or empty folder, or an earlier
        turntable's (its marker file); never a folder of other files (OutputFolder)."""
        from ..validation import OutputFolder

        folder = Path(folder)
        try:
            OutputFolder(folder, "turntable", label="turntable folder").create()
        except (ValueError, OSError) as e:
            self.report(f"turntable: {e}", error=True)
            return
        cam0 = self.state.camera.copy()
        w, h = self.render_size(self.render_scale)
        ids = []
        for k in range(int(frames)):
            c = cam0.copy()
            c.orbit(degrees * k / frames, 0.0)
            ids.append(self.request(1.0, tag=f"turntable:{k}", camera=c.camera(w, h)))
        self.turntable = {"folder": folder, "n": int(frames), "done": 0, "images": {}}
        self.report(f"recording a {frames}-frame turntable into {folder}")

    def _on_turntable_frame(self, fr):
        tt = self.turntable
        if tt is None:
            return
        from ..image_io import write_png

        from ..validation import check_finite_image, write_atomic

        k = int(fr["tag"].split(":")[1])
        path = tt["folder"] / f"frame_{k:04d}.png"
        try:
            check_finite_image(fr.get("linear"), f"turntable {path}")
            check_finite_image(fr["image"], f"turntable {path}")
            write_atomic(path, lambda p: write_png(p, fr["image"]))
        except (ValueError, OSError) as e:
            self.report(f"turntable frame failed: {e}", error=True)
        tt["done"] += 1
        if tt["done"] >= tt["n"]:
            self._finish_turntable()

    def _finish_turntable(self):
        tt, self.turntable = self.turntable, None
        try:
            import cv2

            files = sorted(tt["folder"].glob("frame_*.png"))
            first = cv2.imread(str(files[0]))
            h, w = first.shape[:2]
            out = tt["folder"] / "turntable.mp4"
            vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
            if vw.isOpened():
                for f in files:
                    vw.write(cv2.imread(str(f)))
                vw.release()
                self.report(f"turntable: {len(files)} frames + {out.name} in {tt['folder']}")
            else:
                self.report(f"turntable: {len(files)} PNG frames in {tt['folder']} (no MP4 encoder)")
        except Exception as e:  # noqa: BLE001 - the PNG frames are already written
            self.report(f"turntable: PNG frames written; MP4 failed: {e}")

    # ------------------------------------------------------------------ UI
    def _slider(self, label, value, lo, hi, fmt="%.1f", key=None, field=None):
        from imgui_bundle import imgui

        changed, v = imgui.slider_float(label, float(value), float(lo), float(hi), fmt)
        if changed and field is not None:
            self.state.set(field, float(v), key=key or f"ui:{label}")
        return changed, v

    def _help(self, text):
        from imgui_bundle import imgui

        if imgui.is_item_hovered(imgui.HoveredFlags_.allow_when_disabled):
            imgui.set_tooltip(text)

    def _header(self, text):
        from imgui_bundle import imgui

        if self.font_bold is not None:
            imgui.push_font(self.font_bold, 0.0)
        imgui.text_colored(_rgba(0.55, 0.75, 1.0), text.upper())
        if self.font_bold is not None:
            imgui.pop_font()
        imgui.separator()

    def _ui_menu(self):
        from imgui_bundle import imgui

        st = self.state
        if imgui.begin_main_menu_bar():
            if imgui.begin_menu("File"):
                if imgui.menu_item("Open environment...", "", False)[0]:
                    self._open_dialog("env")
                if imgui.menu_item("Load pose...", "", False)[0]:
                    self._open_dialog("pose_load")
                if imgui.menu_item("Save pose...", "", False)[0]:
                    self._open_dialog("pose_save")
                imgui.separator()
                if imgui.menu_item("Screenshot", "F12", False)[0]:
                    self.screenshot(self.shot_path, exr=str(Path(self.shot_path).with_suffix(".exr")) if self.shot_exr else None)
                if imgui.menu_item("Record turntable", "", False, self.turntable is None)[0]:
                    self.start_turntable("turntable", self.tt_frames)
                imgui.separator()
                if imgui.menu_item("Quit", "", False)[0]:
                    self.quit = True
                imgui.end_menu()
            if imgui.begin_menu("Edit"):
                if imgui.menu_item("Undo", "Ctrl+Z", False, st.can_undo)[0]:
                    st.undo()
                if imgui.menu_item("Redo", "Ctrl+Y", False, st.can_redo)[0]:
                    st.redo()
                if imgui.menu_item("Reset scene", "", False)[0]:
                    st.reset()
                imgui.end_menu()
            if imgui.begin_menu("View"):
                if imgui.menu_item("Frame hands", "F", False)[0]:
                    self._frame_hands()
                self.show_stats = imgui.menu_item("Stats overlay", "", self.show_stats)[1]
                self.show_uv = imgui.menu_item("UV textures", "", self.show_uv)[1]
                self.show_log = imgui.menu_item("Log", "", self.show_log)[1]
                imgui.end_menu()
            info = self.info
            txt = f"{info.get('renderer', 'starting engine...')}"
            w = imgui.calc_text_size(txt).x
            imgui.same_line(imgui.get_window_width() - w - 16)
            imgui.text_disabled(txt)
            imgui.end_main_menu_bar()

    def _note_rect(self):
        from imgui_bundle import imgui

        p, z = imgui.get_window_pos(), imgui.get_window_size()
        self.ui_rects.append((p.x, p.y, p.x + z.x, p.y + z.y))

    def covered_by_ui(self, x, y, margin=6.0) -> bool:
        """True where a floating UI window (stats, errors, log, UV textures) covers (x, y)."""
        return any(x0 - margin <= x <= x1 + margin and y0 - margin <= y <= y1 + margin
                   for x0, y0, x1, y1 in self.ui_rects)

    def _fixed_window(self, name, x, y, w, h, flags=0):
        from imgui_bundle import imgui

        imgui.set_next_window_pos(imgui.ImVec2(x, y))
        imgui.set_next_window_size(imgui.ImVec2(w, h))
        f = (imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_collapse
             | imgui.WindowFlags_.no_saved_settings | flags)
        return imgui.begin(name, None, f)[0]

    def _ui_left(self):
        from imgui_bundle import imgui

        st = self.state
        W, H = self.window_size()
        top = imgui.get_frame_height()
        lw, _, _ = self.panel_widths()
        if self._fixed_window("Hands", 0, top, lw, H - top - 26 * self.ui_scale):
            self._header("Presets")
            imgui.text_disabled("Two hands")
            self._button_row(SCENE_PRESETS, lambda n: self.preset(n), "two")
            imgui.text_disabled("One hand")
            self._button_row(POSE_PRESETS, lambda n: self.preset(n), "one")
            imgui.spacing()
            self._header("Pose")
            sides = st.sides()
            if self.edit_side not in sides:
                self.edit_side = sides[0]
            for s in ("right", "left"):
                if s in sides:
                    if imgui.radio_button(f"{s.capitalize()} hand", self.edit_side == s):
                        self.edit_side = s
                    imgui.same_line()
            imgui.new_line()
            names = list(POSE_PRESETS)
            imgui.set_next_item_width(140 * self.ui_scale)
            _, self.apply_side = imgui.combo("##applypose", self.apply_side, names)
            imgui.same_line()
            if imgui.button("Apply to hand"):
                self.preset(names[self.apply_side], self.edit_side)
            self._help("Apply a one-hand pose preset to the selected hand, keeping its placement")
            side = self.edit_side
            ang = st.angles(side)
            imgui.begin_child("joints", imgui.ImVec2(0, -150 * self.ui_scale), imgui.ChildFlags_.borders)
            hover_j = self.hover.joint if (self.hover is not None and self.hover.side == side) else None
            if self.drag is not None and self.drag.get("kind") == "joint" and self.drag["side"] == side:
                hover_j = self.drag["joint"]
            for f_i, finger in enumerate(("thumb", "index", "middle", "ring", "pinky")):
                joints = [j for j, n in enumerate(FINGER_JOINT_NAMES) if n.startswith(finger)]
                open_ = hover_j is not None and (hover_j - 1) in joints
                if open_:
                    imgui.set_next_item_open(True)
                elif f_i < 2:
                    imgui.set_next_item_open(True, imgui.Cond_.once)
                if imgui.tree_node(finger.capitalize()):
                    for j in joints:
                        name = FINGER_JOINT_NAMES[j]
                        lim = JOINT_LIMITS[name]
                        hot = hover_j == j + 1
                        if hot:
                            imgui.push_style_color(imgui.Col_.text, _rgba(1.0, 0.8, 0.35))
                        imgui.text(name.split("_")[1].upper())
                        if hot:
                            imgui.pop_style_color()
                        for a, (lab, (lo, hi)) in enumerate(zip(("flex", "abd"), lim[:2])):
                            imgui.same_line(60 * self.ui_scale + a * 120 * self.ui_scale)
                            imgui.set_next_item_width(112 * self.ui_scale)
                            ch, v = imgui.slider_float(f"##{name}{lab}", float(ang[j, a]), lo, hi, f"{lab} %.0f\u00b0")
                            if ch:
                                kw = {"flexion": v} if a == 0 else {"abduction": v}
                                st.set_joint(side, j, key=f"ui:{side}:{name}:{lab}", **kw)
                    imgui.tree_pop()
            imgui.end_child()
            h = st.hand(side)
            imgui.set_next_item_width(-80 * self.ui_scale)
            ch, v = imgui.drag_float3("position cm", [float(x) * 100 for x in h.transl], 0.05, -100, 100, "%.1f")
            if ch:
                st.move_hand(side, np.array(v) / 100.0, key=f"ui:{side}:pos")
            if imgui.button("Undo") and st.can_undo:
                st.undo()
            imgui.same_line()
            if imgui.button("Redo") and st.can_redo:
                st.redo()
            imgui.same_line()
            if imgui.button("Reset"):
                st.reset()
                self._frame_hands()
            imgui.set_next_item_width(-110 * self.ui_scale)
            _, self.pose_path = imgui.input_text("##posepath", self.pose_path)
            imgui.same_line()
            if imgui.button("Load"):
                self.load_pose(self.pose_path)
            imgui.same_line()
            if imgui.button("Save"):
                self.save_pose(self.pose_path)
        imgui.end()

    def _button_row(self, names, fn, idk):
        from imgui_bundle import imgui

        avail = imgui.get_content_region_avail().x
        x = 0.0
        for i, n in enumerate(names):
            w = imgui.calc_text_size(n).x + 2 * imgui.get_style().frame_padding.x
            if i and x + w < avail:
                imgui.same_line()
            elif i:
                x = 0.0
            if imgui.button(f"{n}##{idk}"):
                fn(n)
            x += w + imgui.get_style().item_spacing.x

    def _ui_right(self):
        from imgui_bundle import imgui

        st = self.state
        W, H = self.window_size()
        top = imgui.get_frame_height()
        _, rw, _ = self.panel_widths()
        caps = self.info.get("capabilities") or {}
        if self._fixed_window("Rendering", W - rw, top, rw, H - top - 26 * self.ui_scale):
            self._header("Environment")
            if self._shipped is None:
                from ..environment import EnvironmentMap

                self._shipped = EnvironmentMap.list_shipped()
            cur = st.env_spec if st.env_spec in self._shipped else Path(st.env_spec).name
            if imgui.begin_combo("map", cur):
                for n in self._shipped:
                    if imgui.selectable(n, n == st.env_spec)[0]:
                        st.set_env(n)
                imgui.end_combo()
            if imgui.button("Open HDR / EXR..."):
                self._open_dialog("env")
            imgui.same_line()
            imgui.set_next_item_width(-50 * self.ui_scale)
            _, self.env_path = imgui.input_text("##envpath", self.env_path)
            imgui.same_line()
            if imgui.button("Open"):
                self.open_env(self.env_path)
            self._slider("yaw", st.env_yaw, -180, 180, "%.0f\u00b0", field="env_yaw")
            self._help("Rotate about the vertical axis (or drag with the right mouse button)")
            self._slider("pitch", st.env_pitch, -90, 90, "%.0f\u00b0", field="env_pitch")
            self._slider("intensity", st.env_exposure, -4, 4, "%+.1f EV", field="env_exposure")
            imgui.text("background")
            for b in BACKGROUNDS:
                imgui.same_line()
                if imgui.radio_button(BG_LABELS[b], st.background == b):
                    st.set("background", b)
            imgui.spacing()
            self._header("Camera")
            self._slider("exposure", st.exposure_ev, -4, 4, "%+.1f EV", field="exposure_ev")
            if imgui.begin_combo("tone map", st.tonemap):
                for t in TONEMAPS:
                    if imgui.selectable(t, t == st.tonemap)[0]:
                        st.set("tonemap", t)
                imgui.end_combo()
            ch, v = imgui.checkbox("shadows", st.shadows)
            if ch:
                st.set("shadows", v)
            imgui.same_line()
            if imgui.button("Frame hands (F)"):
                self._frame_hands()
            ch, v = imgui.slider_float("render scale", self.render_scale, 0.25, 1.0, "%.2f")
            if ch:
                self.render_scale = v
            self._help("Engine resolution relative to the view; while dragging, x%.2f more" % self.interact_scale)
            imgui.spacing()
            self._header("Shading")
            modes = caps.get("modes") or {m: None for m in ("pbr", "albedo", "normal", "uv")}
            for m, why in modes.items():
                imgui.begin_disabled(why is not None and m != "student")
                label = MODE_LABELS.get(m, m)
                if m == "student" and why is not None:
                    label += "  (PBR until trained)"
                if imgui.radio_button(label, st.shading == m):
                    st.set("shading", m)
                imgui.end_disabled()
                if why:
                    self._help(why)
            ch, v = imgui.checkbox("split-screen comparison (C)", st.split)
            if ch:
                st.set("split", v)
            if st.split:
                names = list(modes)
                for i, side in enumerate(("left", "right")):
                    imgui.set_next_item_width(120 * self.ui_scale)
                    if i:
                        imgui.same_line()
                    cur = st.split_modes[i]
                    if imgui.begin_combo(f"##split{side}", MODE_LABELS.get(cur, cur)):
                        for n in names:
                            if imgui.selectable(MODE_LABELS.get(n, n), n == cur)[0]:
                                sm = list(st.split_modes)
                                sm[i] = n
                                st.set("split_modes", tuple(sm))
                        imgui.end_combo()
                self._slider("divider", st.split_pos, 0.05, 0.95, "%.2f", field="split_pos")
            imgui.spacing()
            self._header("Debug views")
            ch, v = imgui.checkbox("proxy wireframe (W)", st.wireframe)
            if ch:
                st.set("wireframe", v)
            _, self.show_uv = imgui.checkbox("UV textures", self.show_uv)
            debug_modes = caps.get("debug_modes") or {}
            if debug_modes:
                cur = debug_modes.get(st.shading, "off (use the shading mode)")
                imgui.set_next_item_width(-1)
                if imgui.begin_combo("##debugview", cur):
                    if imgui.selectable("off (use the shading mode)", st.shading not in debug_modes)[0] \
                            and st.shading in debug_modes:
                        st.set("shading", "pbr")
                    for m, lab in debug_modes.items():
                        if imgui.selectable(lab, st.shading == m)[0]:
                            st.set("shading", m)
                    imgui.end_combo()
                self._help("Lighting-feature channels (the student's input, divided by the environment's energy) "
                           "and the visibility of the brightest environment light, drawn on the hands "
                           "(N = 64 lights, UV maps 256x256). Lit: warm; shadowed by a hand: blue; facing away: grey.")
            else:
                imgui.text_disabled("lighting features / visibility: not offered by this engine")
            imgui.spacing()
            self._header("Capture")
            imgui.set_next_item_width(-1)
            _, self.shot_path = imgui.input_text("##shot", self.shot_path)
            if imgui.button("Screenshot (F12)"):
                self.screenshot(self.shot_path, exr=str(Path(self.shot_path).with_suffix(".exr")) if self.shot_exr else None)
            imgui.same_line()
            _, self.shot_exr = imgui.checkbox("+ linear EXR", self.shot_exr)
            imgui.set_next_item_width(90 * self.ui_scale)
            _, self.tt_frames = imgui.input_int("frames", self.tt_frames)
            self.tt_frames = int(np.clip(self.tt_frames, 4, 720))
            imgui.same_line()
            if self.turntable is None:
                if imgui.button("Record turntable"):
                    self.start_turntable("turntable", self.tt_frames)
            else:
                tt = self.turntable
                imgui.progress_bar(tt["done"] / tt["n"], imgui.ImVec2(-1, 0), f"{tt['done']}/{tt['n']}")
        imgui.end()

    def _ui_stats(self):
        from imgui_bundle import imgui, implot

        if not self.show_stats:
            return
        x0, y0, x1, y1 = self.view_rect()
        w = 290 * self.ui_scale
        imgui.set_next_window_pos(imgui.ImVec2(x1 - 10, y1 - 10), imgui.Cond_.always, imgui.ImVec2(1.0, 1.0))
        imgui.set_next_window_size(imgui.ImVec2(w, 0))
        imgui.set_next_window_bg_alpha(0.72)
        flags = (imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_saved_settings
                 | imgui.WindowFlags_.no_focus_on_appearing | imgui.WindowFlags_.no_nav)
        if imgui.begin("##stats", None, flags):
            self._note_rect()
            fps = 1000.0 / max(np.mean(list(self.fps_hist)[-60:]), 1e-3) if self.fps_hist else 0.0
            ui_ms = np.mean(list(self.ui_ms)[-60:]) if self.ui_ms else 0.0
            eng = self.engine_hist[-1] if self.engine_hist else 0.0
            imgui.text(f"UI {fps:5.1f} fps  ({ui_ms:4.1f} ms/frame)")
            fr = self.frame
            res = f"{fr['camera']['width']}x{fr['camera']['height']}" if fr else "-"
            imgui.text(f"Engine {eng:6.1f} ms  ({1000.0 / eng if eng else 0:4.1f} fps)  {res}")
            if imgui.begin_table("stages", 2, imgui.TableFlags_.sizing_stretch_prop):
                for k in STAGES:
                    h = self.stage_hist[k]
                    if not h:
                        continue
                    imgui.table_next_row()
                    imgui.table_next_column()
                    imgui.text_disabled(STAGE_LABELS[k])
                    imgui.table_next_column()
                    imgui.text(f"{h[-1]:7.1f} ms")
                imgui.end_table()
            if len(self.engine_hist) > 1 and implot.begin_plot("##hist", imgui.ImVec2(-1, 90 * self.ui_scale),
                                                                implot.Flags_.no_menus | implot.Flags_.no_box_select):
                implot.setup_axes("", "ms", implot.AxisFlags_.no_tick_labels, implot.AxisFlags_.auto_fit)
                implot.setup_legend(implot.Location_.north_west)
                e = np.asarray(self.engine_hist, np.float64)
                implot.plot_line("engine", e)
                u = np.asarray(list(self.fps_hist)[-len(e) * 4:], np.float64)
                if len(u):
                    implot.plot_line("UI", u, xscale=len(e) / max(len(u), 1))
                implot.end_plot()
            imgui.text_disabled(f"GL: {self.info.get('renderer', '-')}")
            imgui.text_disabled(f"skinning: torch {self.info.get('torch_device', '-')}   render: worker process")
            if self.worker.in_flight:
                imgui.text_disabled(f"rendering... ({self.worker.in_flight} queued)")
        imgui.end()

    def _ui_status(self):
        from imgui_bundle import imgui

        W, H = self.window_size()
        h = 26 * self.ui_scale
        imgui.set_next_window_pos(imgui.ImVec2(0, H - h))
        imgui.set_next_window_size(imgui.ImVec2(W, h))
        flags = imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_saved_settings
        imgui.push_style_var(imgui.StyleVar_.window_padding, imgui.ImVec2(10, 4))
        imgui.push_style_var(imgui.StyleVar_.window_rounding, 0.0)
        if imgui.begin("##status", None, flags):
            hv = self.hover
            if self.drag is not None and self.drag.get("kind") == "joint":
                d = self.drag
                a = self.state.angles(d["side"])[d["joint"] - 1]
                imgui.text_colored(_rgba(1.0, 0.8, 0.35), f"{d['side']} {joint_label(d['joint'])}: "
                                   f"flexion {a[0]:.0f}\u00b0  abduction {a[1]:.0f}\u00b0")
            elif hv is not None:
                msg = f"{hv.side} {joint_label(hv.joint)}"
                if hv.joint:
                    a = self.state.angles(hv.side)[hv.joint - 1]
                    msg += f": flexion {a[0]:.0f}\u00b0  abduction {a[1]:.0f}\u00b0   (drag to bend / spread)"
                else:
                    msg += "   (drag to move, Shift+drag to turn)"
                imgui.text_colored(_rgba(1.0, 0.8, 0.35), msg)
            else:
                imgui.text_disabled(HINT)
            st = self.state
            right = f"{Path(st.env_spec).stem}  yaw {st.env_yaw:.0f}\u00b0   {MODE_LABELS.get(st.shading, st.shading)}"
            w = imgui.calc_text_size(right).x
            imgui.same_line(W - w - 12)
            imgui.text_disabled(right)
        imgui.end()
        imgui.pop_style_var(2)

    def _ui_errors(self):
        from imgui_bundle import imgui

        if not self.errors:
            return
        x0, y0, x1, y1 = self.view_rect()
        w = min(560 * self.ui_scale, x1 - x0 - 20)
        imgui.set_next_window_pos(imgui.ImVec2((x0 + x1) / 2 - w / 2, y0 + 12))
        imgui.set_next_window_size(imgui.ImVec2(w, 0))
        imgui.push_style_color(imgui.Col_.window_bg, _rgba(0.42, 0.09, 0.10, 0.95))
        imgui.push_style_color(imgui.Col_.border, _rgba(0.9, 0.35, 0.35, 1.0))
        flags = imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_saved_settings
        if imgui.begin("##errors", None, flags):
            self._note_rect()
            imgui.text_colored(_rgba(1.0, 0.85, 0.85), "Error")
            for e in list(self.errors)[-3:]:
                imgui.push_text_wrap_pos(w - 16)
                imgui.text(e)
                imgui.pop_text_wrap_pos()
            if imgui.button("Dismiss"):
                self.errors.clear()
            imgui.same_line()
            if imgui.button("Show log"):
                self.show_log = True
        imgui.end()
        imgui.pop_style_color(2)

    def _ui_log(self):
        from imgui_bundle import imgui

        if not self.show_log:
            return
        x0, y0, x1, y1 = self.view_rect()
        imgui.set_next_window_pos(imgui.ImVec2(x0 + 10, y1 - 190 * self.ui_scale), imgui.Cond_.appearing)
        imgui.set_next_window_size(imgui.ImVec2(x1 - x0 - 20, 180 * self.ui_scale), imgui.Cond_.appearing)
        opened, self.show_log = imgui.begin("Log", self.show_log)
        if opened:
            self._note_rect()
            for line in self.log_lines:
                if line.startswith("ERROR"):
                    imgui.text_colored(_rgba(1.0, 0.5, 0.5), line)
                else:
                    imgui.text_unformatted(line)
            if imgui.get_scroll_y() >= imgui.get_scroll_max_y():
                imgui.set_scroll_here_y(1.0)
        imgui.end()

    def _ui_uv(self):
        from imgui_bundle import imgui

        if not self.show_uv:
            return
        if self.uv_refs is None:
            import moderngl

            from ..engine import load_asset_textures
            from ..hand_model import default_asset_path

            self.uv_refs = {}
            try:
                tex = load_asset_textures(default_asset_path().parent)
            except (OSError, ValueError) as e:
                self.report(f"UV textures: {e}", error=True)
                self.show_uv = False
                return
            for k, img in tex.items():
                t = self.ctx.texture((img.shape[1], img.shape[0]), 3, np.ascontiguousarray(img).tobytes(), alignment=1)
                t.build_mipmaps()
                t.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
                self.uv_refs[k] = (t, self.renderer.texture_ref(t))
        x0, y0, x1, y1 = self.view_rect()
        s = 200 * self.ui_scale
        imgui.set_next_window_pos(imgui.ImVec2(x0 + 10, y1 - s - 70 * self.ui_scale), imgui.Cond_.appearing)
        opened, self.show_uv = imgui.begin("UV textures (right hand atlas)", self.show_uv,
                                           imgui.WindowFlags_.always_auto_resize)
        if opened:
            self._note_rect()
            for i, (k, (t, ref)) in enumerate(self.uv_refs.items()):
                if i:
                    imgui.same_line()
                imgui.begin_group()
                imgui.text_disabled({"albedo": "albedo (sRGB)", "normal_map": "normal (tangent)",
                                     "roughness": "roughness / F0"}.get(k, k))
                imgui.image(ref, imgui.ImVec2(s, s))
                imgui.end_group()
        imgui.end()

    def _draw_view(self):
        from imgui_bundle import imgui

        dl = imgui.get_background_draw_list()
        x0, y0, x1, y1 = self.view_rect()
        if self.frame_ref is None:
            msg = "Starting the render engine..." if self.worker.fatal is None else f"Engine failed: {self.worker.fatal}"
            ts = imgui.calc_text_size(msg)
            dl.add_text(imgui.ImVec2((x0 + x1 - ts.x) / 2, (y0 + y1 - ts.y) / 2),
                        imgui.get_color_u32(_rgba(0.7, 0.72, 0.78)), msg)
            return
        # the frame itself is drawn opaque before the UI (see step); overlays go on top here
        # hover / drag highlight
        target = None
        if self.drag is not None and self.drag.get("side"):
            target = (self.drag["side"], self.drag["joint"])
        elif self.hover is not None:
            target = (self.hover.side, self.hover.joint)
        if target is not None:
            key = (id(self.frame), target)
            if key != self._overlay_key:
                ov = self.picker.highlight(*target)
                self._overlay_key = key
                self._overlay_box = None
                if ov is not None:
                    ys, xs = np.nonzero(ov[..., 3])
                    if len(xs) == 0:
                        ov = None
                if ov is not None:
                    # upload / draw only the bounding box (fill rate is what costs on llvmpipe)
                    H0, W0 = ov.shape[:2]
                    bx0, bx1, by0, by1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                    self._overlay_box = (bx0 / W0, by0 / H0, bx1 / W0, by1 / H0)
                    ov = np.ascontiguousarray(ov[by0:by1, bx0:bx1])
                    h, w = ov.shape[:2]
                    if self.overlay_tex is None or self.overlay_tex.size != (w, h):
                        if self.overlay_tex is not None:
                            self.renderer.forget(self.overlay_tex)
                            self.overlay_tex.release()
                        self.overlay_tex = self.ctx.texture((w, h), 4)
                        self.overlay_ref = self.renderer.texture_ref(self.overlay_tex)
                    self.overlay_tex.write(ov.tobytes())
            box = getattr(self, "_overlay_box", None)
            if self.overlay_ref is not None and box is not None:
                vw, vh = x1 - x0, y1 - y0
                dl.add_image(self.overlay_ref, imgui.ImVec2(x0 + box[0] * vw, y0 + box[1] * vh),
                             imgui.ImVec2(x0 + box[2] * vw, y0 + box[3] * vh))
        st = self.state
        if self.frame.get("modes") and len(self.frame["modes"]) == 2:
            xs = x0 + st.split_pos * (x1 - x0)
            dl.add_line(imgui.ImVec2(xs, y0), imgui.ImVec2(xs, y1), imgui.get_color_u32(_rgba(1, 1, 1, 0.85)), 2.0)
            a, b = (MODE_LABELS.get(m, m) for m in self.frame["modes"])
            col = imgui.get_color_u32(_rgba(1, 1, 1, 0.9))
            bgc = imgui.get_color_u32(_rgba(0, 0, 0, 0.55))
            for text, x in ((a, xs - imgui.calc_text_size(a).x - 14), (b, xs + 14)):
                ts = imgui.calc_text_size(text)
                dl.add_rect_filled(imgui.ImVec2(x - 6, y0 + 10), imgui.ImVec2(x + ts.x + 6, y0 + 14 + ts.y), bgc, 4.0)
                dl.add_text(imgui.ImVec2(x, y0 + 12), col, text)
        if self.frame["scale"] < self.render_scale - 1e-6:
            dl.add_text(imgui.ImVec2(x0 + 12, y1 - 24), imgui.get_color_u32(_rgba(1, 1, 1, 0.6)),
                        f"preview {self.frame['scale'] / self.render_scale:.0%} resolution")

    def _open_dialog(self, kind):
        try:
            from imgui_bundle import portable_file_dialogs as pfd

            if kind == "env":
                dlg = pfd.open_file("Open environment map", "", ["HDR images", "*.hdr *.exr *.pic", "All files", "*"])
            elif kind == "pose_load":
                dlg = pfd.open_file("Load pose", "", ["Pose files", "*.json *.npz"])
            else:
                dlg = pfd.save_file("Save pose", "pose.json", ["Pose files", "*.json *.npz"])
            self._dialog = (kind, dlg)
        except Exception as e:  # noqa: BLE001 - no dialog helper (zenity / kdialog): type a path instead
            self.report(f"No file dialog available ({e}); type the path in the panel instead", error=True)

    def _poll_dialog(self):
        if self._dialog is None:
            return
        kind, dlg = self._dialog
        try:
            if not dlg.ready(0):
                return
            res = dlg.result()
        except Exception as e:  # noqa: BLE001
            self._dialog = None
            self.report(f"file dialog failed: {e}", error=True)
            return
        self._dialog = None
        path = res[0] if isinstance(res, list) and res else (res if isinstance(res, str) else "")
        if not path:
            return
        if kind == "env":
            self.env_path = path
            self.open_env(path)
        elif kind == "pose_load":
            self.pose_path = path
            self.load_pose(path)
        else:
            self.pose_path = path
            self.save_pose(path)

    # ------------------------------------------------------------------ frame loop
    def step(self) -> bool:
        """One UI frame. Returns False when the app should close."""
        from imgui_bundle import imgui

        t0 = time.perf_counter()
        io = imgui.get_io()
        if self.headless:
            io.display_size = imgui.ImVec2(*self.size)
            io.display_framebuffer_scale = imgui.ImVec2(1, 1)
        else:
            import glfw

            glfw.poll_events()
            if glfw.window_should_close(self.window):
                self.quit = True
            w, h = glfw.get_window_size(self.window)
            io.display_size = imgui.ImVec2(w, h)
            io.display_framebuffer_scale = imgui.ImVec2(*self.fb_scale())
        if self.script is not None:  # after the window's events: scripted input wins this frame
            self.script.step()
        now = time.perf_counter()
        io.delta_time = max(now - self._t_last, 1e-4)
        self.fps_hist.append((now - self._t_last) * 1e3)
        self._t_last = now
        self._receive()
        self._poll_dialog()

        imgui.new_frame()
        self._handle_view_input()
        self.ui_rects = []
        self._handle_keys()
        self._ui_menu()
        self._ui_left()
        self._ui_right()
        self._ui_stats()
        self._ui_uv()
        self._ui_log()
        self._ui_errors()
        self._ui_status()
        self._draw_view()
        self._ui_active = imgui.is_any_item_active()
        if self._ui_active:
            self._last_input_t = time.perf_counter()
        elif self.drag is None:
            self.state.end_edit()
        imgui.render()
        self._maybe_request()

        if self.headless:
            self.fbo.use()
        else:
            self.fbo = self.ctx.detect_framebuffer()
            self.fbo.use()
        self.fbo.clear(0.05, 0.055, 0.065, 1.0)
        if self.frame_tex is not None:
            sx, sy = self.fb_scale()
            x0, y0, x1, y1 = self.view_rect()
            fb_h = int(round(imgui.get_io().display_size.y * sy))
            self.renderer.draw_image(self.frame_tex, (x0 * sx, y0 * sy, x1 * sx, y1 * sy), fb_h, self.fbo)
        self.renderer.render(imgui.get_draw_data(), self.fbo)
        self._take_screenshots()
        if self.headless:
            self.ctx.finish()  # what a buffer swap does for a window: keep the GL queue one frame deep
        self.frame_count += 1
        self.ui_ms.append((time.perf_counter() - t0) * 1e3)
        if not self.headless:
            import glfw

            glfw.swap_buffers(self.window)
        fps = self.max_fps
        busy = (self.drag is not None or self._ui_active or self.script is not None and not self.script.finished
                or self.turntable is not None or self._pending_exr or time.perf_counter() - self._last_input_t < 1.0
                or time.perf_counter() - self._last_frame_t < 0.5)
        if not busy and self.idle_fps > 0:
            fps = min(fps, self.idle_fps) if fps > 0 else self.idle_fps
        if fps > 0:
            rest = 1.0 / fps - (time.perf_counter() - t0)
            if rest > 0:
                time.sleep(rest)
        return not self.quit

    def read_window(self) -> np.ndarray:
        """The last drawn window contents (UI included), uint8 [H, W, 3], row 0 = top."""
        fb = self.fbo
        w, h = fb.viewport[2], fb.viewport[3]
        if self.headless:
            w, h = self.size
        else:
            import glfw

            w, h = glfw.get_framebuffer_size(self.window)
        data = fb.read(viewport=(0, 0, w, h), components=3, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1].copy()

    def _take_screenshots(self):
        if not self._pending_shots:
            return
        from ..image_io import write_png
        from ..validation import check_finite_image, write_atomic

        shots, self._pending_shots = self._pending_shots, []
        for path, with_ui in shots:
            try:
                if self.frame is not None:  # the engine frame on screen: NaN / inf is an error, not a black PNG
                    check_finite_image(self.frame.get("linear"), f"screenshot {path}")
                    check_finite_image(self.frame["image"], f"screenshot {path}")
                if with_ui:
                    img = self.read_window()
                elif self.frame is not None:
                    img = self.frame["image"]
                else:
                    raise ValueError("no frame rendered yet")
                check_finite_image(img, f"screenshot {path}")
                write_atomic(path, lambda p: write_png(p, img))
                self.report(f"wrote screenshot {path} ({img.shape[1]}x{img.shape[0]})")
            except (ValueError, OSError) as e:
                self.report(f"screenshot failed: {e}", error=True)

    def wait_until_current(self, timeout=120.0) -> bool:
        """Step until the displayed frame matches the current state at full quality."""
        t_end = time.perf_counter() + timeout
        while time.perf_counter() < t_end:
            self.step()
            if self.frame_is_current() and self.worker.in_flight == 0:
                return True
            if self.worker.fatal:
                return False
        return False

    def run(self, frames: int | None = None, script=None, screenshot=None, exr=None, summary=None) -> int:
        """Play ``script`` (a :class:`~.script.ScriptPlayer` or list of actions), run at least
        ``frames`` frames (None: until closed; headless: until the script ends), then write
        ``screenshot`` (waiting for an up-to-date frame)."""
        from .script import ScriptPlayer

        if script is not None and not isinstance(script, ScriptPlayer):
            script = ScriptPlayer(self, script)
        self.script = script
        t0 = time.perf_counter()
        n0 = self.frame_count
        try:
            while True:
                if not self.step():
                    break
                done_script = self.script is None or self.script.finished
                if frames is not None and self.frame_count - n0 >= frames and done_script:
                    break
                if frames is None and self.headless and done_script:
                    break
                if self.worker.fatal and self.frame is None:
                    self.report(self.worker.fatal, error=True)
                    return 3
            if screenshot:
                if not self.wait_until_current():
                    # never write a stale frame (e.g. one of another environment) under the name
                    msg = self.worker.fatal or "timed out waiting for an up-to-date frame"
                    self.report(f"no screenshot written: {msg}", error=True)
                    print(f"relit-hands view: error: no screenshot written to {screenshot}: "
                          f"{' '.join(str(msg).split())}", file=sys.stderr)
                    return 2
                self.screenshot(screenshot, exr=exr)
                self.step()
                if exr:
                    t_end = time.perf_counter() + 120
                    while self._pending_exr and time.perf_counter() < t_end:
                        self.step()
        finally:
            wall = time.perf_counter() - t0
            if summary:
                record = {"written_by": "relit-hands", "screenshot": str(screenshot) if screenshot else None,
                          "exr": str(exr) if exr else None, **self.summary(wall)}
                Path(summary).write_text(json.dumps(record, indent=1, default=str) + "\n")
        return 0

    def summary(self, wall_s=None) -> dict:
        ui = list(self.ui_ms)
        eng = list(self.engine_hist)
        fr = self.frame
        return {
            "frames": self.frame_count, "frames_rendered": self.frames_received, "wall_s": wall_s,
            "ui_ms_median": float(np.median(ui)) if ui else None,
            "engine_ms_median": float(np.median(eng)) if eng else None,
            "render_size": [fr["camera"]["width"], fr["camera"]["height"]] if fr else None,
            "last_timings_ms": fr["timings_ms"] if fr else None,
            "renderer": self.info.get("renderer"), "errors": list(self.log_lines),
            "script": self.script.results if self.script is not None else None,
            "scene": self.state.scene.to_dict(),
            "angles_deg": {s: np.round(self.state.angles(s), 2).tolist() for s in self.state.sides()},
            "env": {"spec": self.state.env_spec, "yaw": self.state.env_yaw, "pitch": self.state.env_pitch},
            "shading": self.state.shading, "split": self.state.split,
        }

    def close(self):
        try:
            self.worker.close()
        finally:
            from imgui_bundle import imgui, implot

            try:
                self.renderer.release()
            except Exception:  # noqa: BLE001
                pass
            implot.destroy_context(self.implot_ctx)
            imgui.destroy_context(self.imgui_ctx)
            if self.window is not None:
                import glfw

                glfw.destroy_window(self.window)
                _release_glfw()
                self.window = None
            else:
                self.ctx.release()


_GLFW_WINDOWS = 0  # viewer windows alive in this process: GLFW is terminated after the last one


def _release_glfw() -> None:
    import glfw

    global _GLFW_WINDOWS
    _GLFW_WINDOWS = max(0, _GLFW_WINDOWS - 1)
    if _GLFW_WINDOWS == 0:
        glfw.terminate()


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


__all__ = ["ViewerApp", "display_available", "math"]
