"""Request scheduling: what the viewer sends to the render worker and when, and what it does
with the results that come back (:class:`RequestScheduler`, a mixin of
:class:`~.app.ViewerApp`; the attributes it uses are created in ``ViewerApp.__init__``)."""
from __future__ import annotations

import time

import numpy as np

from relit_hands.stages import COMPOSITE_STAGES, PBR_STAGES

from .render_worker import RenderRequest, camera_to_dict

# the PBR frame's stages with 'composite' split into its parts, then the worker's own
STAGES = (*(s for s in PBR_STAGES if s != "composite"), *(f"composite.{k}" for k in COMPOSITE_STAGES),
          "viewer_post", "worker_total")


class RequestScheduler:
    """Render requests (full / reduced resolution, progressive refinement), framing the hands,
    and the worker's messages: ready, errors, finished frames."""

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

    def frame_is_current(self) -> bool:
        """The displayed frame shows the current state and camera at full quality."""
        if self.frame is None:
            return False
        meta = self._req_meta.get(self.frame["id"])
        return (meta is not None and meta[0] == self.state.version and meta[1] == self.state.camera_version
                and self.frame["scale"] >= self.render_scale - 1e-6 and self.worker.in_flight == 0
                and self.frame["camera"]["width"] == self.render_size(self.render_scale)[0])

    def _start_with_student(self):
        """With a trained student installed, open on the neural relighting (and compare it with the
        PBR baseline in split screen) unless the user already picked modes."""
        why = ((self.info.get("capabilities") or {}).get("modes") or {}).get("student", "")
        if why is None and self.state.open_with(shading="student", split_modes=("student", "pbr")):
            self.report("neural student loaded (shipped default model); PBR baseline: key 2 or split screen (C)")
        elif why:
            self.report(f"neural student unavailable: {why}; showing the PBR baseline")
