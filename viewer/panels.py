"""The imgui UI: style, menu bar, the Hands and Rendering panels, the stats / status / error /
log / UV windows, the overlays drawn on the 3-D view and the file dialogs (:class:`ViewerPanels`,
a mixin of :class:`~.app.ViewerApp`; the attributes it uses are created in ``ViewerApp.__init__``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..poses import FINGER_JOINT_NAMES, JOINT_LIMITS, POSE_PRESETS
from ..scene import SCENE_PRESETS
from .picking import joint_label
from .scheduling import STAGES
from .state import BACKGROUNDS, TONEMAPS

MODE_LABELS = {"student": "Neural student", "pbr": "PBR baseline", "albedo": "Albedo", "normal": "Normals",
               "uv": "UV coordinates"}
BG_LABELS = {"env": "Shown", "blurred": "Blurred", "none": "Hidden"}
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


class ViewerPanels:
    """Builds this frame's imgui windows and widgets; their edits go to the state or the actions."""

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
