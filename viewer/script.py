"""Scripted UI actions: the viewer driven without a person (tests, README images, headless runs).

A script is a JSON list of actions (or ``{"actions": [...]}``), played one frame at a time by
the real app loop; mouse actions are injected as imgui input events, the same path a GLFW
window's events take, so a scripted drag exercises picking, the drag mapping and undo exactly
as a user's drag does::

    [
     {"action": "wait_render"},
     {"action": "drag_joint", "side": "right", "joint": "index2", "dx": 0, "dy": 80},
     {"action": "rotate_env", "yaw": 90},
     {"action": "rotate_env", "yaw": 30, "drag": true},
     {"action": "set_mode", "mode": "albedo"},
     {"action": "split", "left": "pbr", "right": "normal"},
     {"action": "open_env", "path": "my_sky.hdr"},
     {"action": "preset", "name": "fist"},
     {"action": "wait_frames", "n": 10},
     {"action": "screenshot", "path": "out.png"}
    ]

Actions: ``wait_frames n``; ``wait_render`` (until the view shows the current state at full
quality); ``drag_joint side joint dx dy [steps]``; ``drag x y dx dy [button] [shift] [ctrl]``
(view fractions 0..1 for x, y; pixels for dx, dy); ``hover side joint``; ``set_joint side joint
[flexion] [abduction]``; ``rotate_env yaw [pitch] [drag]`` (relative degrees);
``set_env name``; ``open_env path``; ``set_mode mode``; ``split [left right pos] [on]``;
``set key value`` (any document setting: exposure_ev, tonemap, background, shadows, wireframe,
env_exposure ...); ``preset name [side]``; ``load_pose path``; ``save_pose path``; ``undo``;
``redo``; ``reset``; ``orbit yaw [pitch]``; ``zoom factor``; ``frame_hands``; ``show panel on``
(panel: uv, log, stats); ``screenshot path [ui] [exr]``; ``turntable path [frames]``;
``expect_error [contains]`` (records whether the UI shows an error); ``dismiss_errors``; ``quit``.
Relative paths resolve against the script file's folder; for a script read from a file
(``relit-hands view --script``) every path must resolve inside that folder (symlinks included). Every action's outcome is recorded in
:attr:`ScriptPlayer.results` (status ok / error + message), and an action that fails reports in
the UI like a user's action would; the script goes on.
"""
from __future__ import annotations

from pathlib import Path

from .state import joint_index


def load_script(path) -> list:
    """Actions from a JSON file (a list, or an object with an ``actions`` list)."""
    from ..validation import InputFileError, read_json_file

    path = Path(path)
    try:
        data = read_json_file(path, what="action script")
    except InputFileError as e:
        raise InputFileError(f"cannot read the action script: {e}") from None
    actions = data.get("actions") if isinstance(data, dict) else data
    if not isinstance(actions, list) or not all(isinstance(a, dict) and "action" in a for a in actions):
        raise ValueError(f"{path}: expected a JSON list of objects with an 'action' key")
    return actions


class ScriptPlayer:
    """Plays actions on a :class:`~.app.ViewerApp`, advancing once per UI frame."""

    def __init__(self, app, actions, base_dir=None, render_timeout_s: float = 120.0, confine: bool = False):
        """``confine``: every path an action names must resolve inside ``base_dir`` (symlinks
        included) -- set for scripts read from a file (``relit-hands view --script``)."""
        self.app = app
        self.confine = bool(confine)
        self.actions = list(actions)
        self.base = Path(base_dir) if base_dir else Path.cwd()
        self.timeout = float(render_timeout_s)
        self.results: list = []
        self._gen = self._run()
        self.finished = False

    def step(self) -> None:
        """Advance by one frame (called by the app before it reads input)."""
        if self.finished:
            return
        try:
            next(self._gen)
        except StopIteration:
            self.finished = True

    def _path(self, p) -> Path:
        if self.confine:
            from ..validation import resolve_inside

            return resolve_inside(self.base, str(p), what="script path")
        p = Path(str(p)).expanduser()
        return p if p.is_absolute() else self.base / p

    # ------------------------------------------------------------------ driver
    def _run(self):
        for i, a in enumerate(self.actions):
            name = a.get("action")
            fn = getattr(self, "_a_" + str(name), None)
            rec = {"index": i, "action": name, "status": "ok"}
            if fn is None:
                rec.update(status="error", message=f"unknown action {name!r}")
                self.app.report(f"script: unknown action {name!r}", error=True)
            else:
                try:
                    out = yield from fn(a)
                    if isinstance(out, dict):
                        rec.update(out)
                except (ValueError, KeyError, TypeError, OSError) as e:
                    rec.update(status="error", message=str(e))
                    self.app.report(f"script action {i} ({name}): {e}", error=True)
            self.results.append(rec)
            yield

    def _wait_render(self):
        import time

        t_end = time.perf_counter() + self.timeout
        yield
        while not (self.app.frame_is_current() and self.app.worker.in_flight == 0):
            if time.perf_counter() > t_end or self.app.worker.fatal:
                raise ValueError("timed out waiting for the render worker")
            yield

    def _mouse_drag(self, x, y, dx, dy, button=0, steps=8, shift=False, ctrl=False):
        from imgui_bundle import imgui

        io = imgui.get_io()
        keys = ([imgui.Key.left_shift, imgui.Key.mod_shift] if shift else []) + \
               ([imgui.Key.left_ctrl, imgui.Key.mod_ctrl] if ctrl else [])
        io.add_mouse_pos_event(x, y)
        yield
        for key in keys:
            io.add_key_event(key, True)
        yield
        io.add_mouse_button_event(button, True)
        yield
        for k in range(1, steps + 1):
            io.add_mouse_pos_event(x + dx * k / steps, y + dy * k / steps)
            yield
        io.add_mouse_button_event(button, False)
        yield
        for key in keys:
            io.add_key_event(key, False)
        yield

    def _joint_window_point(self, side, mano_joint):
        app = self.app
        x0, y0, x1, y1 = app.view_rect()
        cam = app.frame["camera"]

        def to_window(u, v):
            return x0 + u / cam["width"] * (x1 - x0), y0 + v / cam["height"] * (y1 - y0)

        pt = app.picker.joint_screen_point(side, mano_joint, accept=lambda u, v: not app.covered_by_ui(*to_window(u, v)))
        if pt is None:
            raise ValueError(f"the {side} hand's joint {mano_joint} is not visible in the view")
        return to_window(*pt)

    # ------------------------------------------------------------------ actions
    def _a_wait_frames(self, a):
        from ..validation import check_number

        for _ in range(check_number(a.get("n", 1), "wait_frames n", 0, 100_000, integer=True)):
            yield

    def _a_wait_render(self, a):
        yield from self._wait_render()

    def _a_drag_joint(self, a):
        side = a.get("side", "right")
        j = joint_index(a["joint"])
        yield from self._wait_render()
        before = self.app.state.angles(side)[j].copy()
        x, y = self._joint_window_point(side, j + 1)
        yield from self._mouse_drag(x, y, float(a.get("dx", 0)), float(a.get("dy", 0)), 0, int(a.get("steps", 8)))
        after = self.app.state.angles(side)[j]
        return {"before_deg": before[:2].round(2).tolist(), "after_deg": after[:2].round(2).tolist(),
                "at": [round(x, 1), round(y, 1)]}

    def _a_hover(self, a):
        from imgui_bundle import imgui

        yield from self._wait_render()
        x, y = self._joint_window_point(a.get("side", "right"), joint_index(a["joint"]) + 1)
        imgui.get_io().add_mouse_pos_event(x, y)
        yield
        yield

    def _a_drag(self, a):
        yield from self._wait_render()
        x0, y0, x1, y1 = self.app.view_rect()
        x = x0 + float(a.get("x", 0.5)) * (x1 - x0)
        y = y0 + float(a.get("y", 0.5)) * (y1 - y0)
        yield from self._mouse_drag(x, y, float(a.get("dx", 0)), float(a.get("dy", 0)), int(a.get("button", 0)),
                                    int(a.get("steps", 8)), bool(a.get("shift")), bool(a.get("ctrl")))

    def _a_set_joint(self, a):
        st = self.app.state
        st.set_joint(a.get("side", "right"), a["joint"], a.get("flexion"), a.get("abduction"), a.get("twist"))
        yield

    def _a_rotate_env(self, a):
        st = self.app.state
        if a.get("drag"):  # right-button drag: 0.3 deg per pixel horizontally
            yield from self._wait_render()
            x0, y0, x1, y1 = self.app.view_rect()
            yield from self._mouse_drag(x0 + 0.1 * (x1 - x0), y0 + 0.1 * (y1 - y0), float(a.get("yaw", 0)) / 0.3,
                                        -float(a.get("pitch", 0)) / 0.2, button=1)
        else:
            st.rotate_env(float(a.get("yaw", 0)), float(a.get("pitch", 0)))
            yield

    def _a_set_env(self, a):
        from ..environment import EnvironmentMap

        EnvironmentMap.from_name_or_path(a["name"])  # an unknown name fails here, not in the worker
        self.app.state.set_env(a["name"])
        yield

    def _a_open_env(self, a):
        self.app.open_env(str(self._path(a["path"])))
        yield

    def _a_set_mode(self, a):
        self.app.state.set("shading", a["mode"])
        self.app.state.set("split", False)
        yield

    def _a_split(self, a):
        st = self.app.state
        if "left" in a or "right" in a:
            st.set("split_modes", (a.get("left", st.split_modes[0]), a.get("right", st.split_modes[1])))
        if "pos" in a:
            st.set("split_pos", float(a["pos"]))
        st.set("split", bool(a.get("on", True)))
        yield

    def _a_set(self, a):
        self.app.state.set(a["key"], a["value"])
        yield

    def _a_preset(self, a):
        self.app.preset(a["name"], a.get("side"))
        yield

    def _a_load_pose(self, a):
        ok = self.app.load_pose(self._path(a["path"]))
        yield
        if not ok:
            raise ValueError(self.app.errors[-1] if self.app.errors else "load failed")

    def _a_save_pose(self, a):
        ok = self.app.save_pose(self._path(a["path"]))
        yield
        if not ok:
            raise ValueError(self.app.errors[-1] if self.app.errors else "save failed")

    def _a_undo(self, a):
        self.app.state.undo()
        yield

    def _a_redo(self, a):
        self.app.state.redo()
        yield

    def _a_reset(self, a):
        self.app.state.reset()
        yield

    def _a_orbit(self, a):
        self.app.state.camera.orbit(float(a.get("yaw", 0)), float(a.get("pitch", 0)))
        self.app.state.camera_changed()
        yield

    def _a_zoom(self, a):
        self.app.state.camera.zoom(float(a.get("factor", 1.0)))
        self.app.state.camera_changed()
        yield

    def _a_frame_hands(self, a):
        self.app._frame_hands()
        yield

    def _a_show(self, a):
        attr = {"uv": "show_uv", "log": "show_log", "stats": "show_stats"}[a["panel"]]
        setattr(self.app, attr, bool(a.get("on", True)))
        yield

    def _a_screenshot(self, a):
        if a.get("wait", True):
            yield from self._wait_render()
        exr = a.get("exr")
        self.app.screenshot(self._path(a["path"]), with_ui=bool(a.get("ui", True)),
                            exr=str(self._path(exr)) if exr else None)
        yield
        while exr and self.app._pending_exr:
            yield
        return {"path": str(self._path(a["path"]))}

    def _a_turntable(self, a):
        yield from self._wait_render()
        from ..validation import check_number

        n = check_number(a.get("frames", 36), "turntable frames", 1, 3600, integer=True)
        self.app.start_turntable(self._path(a.get("path", "turntable")), n)
        while self.app.turntable is not None:
            yield

    def _a_expect_error(self, a):
        yield
        errs = list(self.app.errors)
        text = str(a.get("contains", ""))
        hit = any(text.lower() in e.lower() for e in errs)
        if not hit:
            raise ValueError(f"expected an error{' containing ' + repr(text) if text else ''}; shown: {errs}")
        return {"shown": errs}

    def _a_dismiss_errors(self, a):
        self.app.errors.clear()
        yield

    def _a_quit(self, a):
        self.app.quit = True
        yield
