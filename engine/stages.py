"""The per-frame stages, one home: the ordered names (keys of ``timings_ms``, milliseconds) of the
stages a frame runs, in the order they run. The engine fills them (and returns them in this
order, :func:`in_stage_order`); the bench, the VR latency benchmark and the viewer tabulate or
plot them and add their own keys on top (e.g. 'retarget', 'gl_finish', 'other', 'viewer_post').

* :data:`PBR_STAGES`: :meth:`relit_hands.engine.Engine.render` (then 'total').
* :data:`STUDENT_STAGES`: :meth:`relit_hands.engine.Engine.render_student` ('composite' is the sum
  over the views; then 'composite_per_view', 'total').
* :data:`GPU_STUDENT_STAGES`: the same frame through the nvdiffrast compositor (textures stay on
  the CUDA device: no 'upload' to a GL context).
* :data:`COMPOSITE_STAGES`: the parts of one GL ``composite``, :meth:`relit_hands.compositor.Compositor.render`'s
  ``timings_ms`` (then 'total'); a rendered :class:`~relit_hands.engine.Frame` carries them as
  ``composite_ms``.

:class:`StageTimer` measures the stages: wall clock on the CPU, CUDA events on a CUDA device (the
GPU's own timeline, one synchronisation when the frame's timings are read).
"""
from __future__ import annotations

import time

__all__ = ["PBR_STAGES", "STUDENT_STAGES", "GPU_STUDENT_STAGES", "COMPOSITE_STAGES", "in_stage_order",
           "StageTimer", "StageTimings"]

PBR_STAGES = ("skinning", "normals_upload", "composite")
STUDENT_STAGES = ("skinning", "lights", "raycast", "features", "uv_gather", "student", "textures", "upload",
                  "composite")
GPU_STUDENT_STAGES = tuple(s for s in STUDENT_STAGES if s != "upload")
COMPOSITE_STAGES = ("env_prepare", "shadows", "draw", "readback")


def in_stage_order(timings: dict, stages) -> dict:
    """``timings`` with the ``stages`` keys first, in that order, then its other keys (e.g. 'total');
    a stage missing from ``timings`` is a KeyError (the producer and this list disagree)."""
    return {**{s: timings[s] for s in stages}, **timings}


class StageTimings(dict):
    """Milliseconds per stage, in the order the stages ran ({stage: ms}, then 'total'; a plain
    dict for JSON and ``dict(...)`` callers). ``clock`` says how they were measured: 'wall'
    (``time.perf_counter`` on the host) or 'cuda-events' (the device's timeline)."""

    def __init__(self, values=(), clock: str = "wall"):
        super().__init__(values)
        self.clock = clock

    @property
    def total(self) -> float:
        return float(self["total"])


class StageTimer:
    """Stage boundaries of one frame on ``device`` (a ``torch.device`` or its name).

    ``mark(stage)`` closes the stage that ran since the previous mark (marks of one name add up);
    ``result(order, extra)`` returns :class:`StageTimings` with ``order``'s stages first, then the
    ``extra`` entries, 'total' last.
    On CUDA every mark records an event on the current stream, and ``result`` synchronises once:
    no per-stage synchronisation perturbs the frame being timed."""

    def __init__(self, device="cpu"):
        import torch

        self._torch = torch
        self.cuda = torch.device(device).type == "cuda"
        self._marks = [(None, self._now())]

    def _now(self):
        if self.cuda:
            e = self._torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _ms(self, a, b) -> float:
        return float(a.elapsed_time(b)) if self.cuda else (b - a) * 1e3

    def mark(self, stage: str) -> None:
        self._marks.append((stage, self._now()))

    def skipped(self, stage: str) -> None:
        """``stage`` did not run this frame: it reports exactly 0 ms."""
        self._marks.append((stage, self._marks[-1][1]))

    def result(self, order=(), extra: dict | None = None) -> StageTimings:
        if self.cuda:
            self._marks[-1][1].synchronize()
        t: dict = {}
        for (_, a), (stage, b) in zip(self._marks, self._marks[1:]):
            t[stage] = t.get(stage, 0.0) + self._ms(a, b)
        t.update(extra or {})  # e.g. 'composite_per_view', placed before 'total'
        t["total"] = self._ms(self._marks[0][1], self._marks[-1][1])
        return StageTimings(in_stage_order(t, order), clock="cuda-events" if self.cuda else "wall")
