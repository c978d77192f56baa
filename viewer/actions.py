"""The viewer's actions, shared by the panels, the keyboard and scripts: environment, poses,
presets, screenshots and turntables (:class:`ViewerActions`, a mixin of
:class:`~.app.ViewerApp`; the attributes it uses are created in ``ViewerApp.__init__``)."""
from __future__ import annotations

from pathlib import Path


class ViewerActions:
    """Actions on the document and captures; a failure is reported in the UI (log / error banner), not raised."""

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
