"""Input on the 3-D view: mouse (drag-to-pose, camera orbit / pan / zoom, environment
rotation), hover picking and keyboard shortcuts (:class:`ViewerInput`, a mixin of
:class:`~.app.ViewerApp`; the attributes it uses are created in ``ViewerApp.__init__``)."""
from __future__ import annotations

import time

import numpy as np

from .picking import Picker
from .state import ViewerState


class ViewerInput:
    """Turns this frame's mouse and keyboard input into edits of the :class:`~.state.ViewerState`."""

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
