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

This module is the host: the window / GL context, the frame loop and the frame's presentation.
The rest lives in mixins that :class:`ViewerApp` composes: :mod:`.input` (mouse and keys on the
view), :mod:`.scheduling` (render requests and results), :mod:`.actions` (environment, poses,
presets, screenshots, turntables) and :mod:`.panels` (the imgui UI).
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

from .actions import ViewerActions
from .input import ViewerInput
from .panels import ViewerPanels
from .picking import Picker
from .render_worker import RenderWorker
from .scheduling import STAGES, RequestScheduler
from .state import ViewerState

log = logging.getLogger("relit_hands.viewer")


class ViewerApp(ViewerInput, RequestScheduler, ViewerActions, ViewerPanels):
    """The viewer. ``headless=True``: no window; the UI renders into an offscreen framebuffer
    of a standalone EGL context (screenshots keep the UI; no display needed)."""

    def __init__(self, *, headless: bool = False, size=(1600, 900), scene="clasp", env="studio",
                 render_scale: float = 1.0, interact_scale: float = 0.5, max_fps: float = 60.0, idle_fps: float = 15.0,
                 title: str = "Relit Hands", asset=None, student=None):
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
        self.worker = RenderWorker(asset=asset, student=student)
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

    # ------------------------------------------------------------------ frame presentation
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
            "renderer": self.info.get("renderer"), "asset": self.info.get("asset"), "errors": list(self.log_lines),
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
