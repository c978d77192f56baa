"""The per-frame stages, one home: the ordered names (keys of ``timings_ms``, milliseconds) of the
stages a frame runs, in the order they run. The engine fills them (and returns them in this
order, :func:`in_stage_order`); the bench, the VR latency benchmark and the viewer tabulate or
plot them and add their own keys on top (e.g. 'retarget', 'gl_finish', 'other', 'viewer_post').

* :data:`PBR_STAGES`: :meth:`relit_hands.engine.Engine.render` (then 'total').
* :data:`STUDENT_STAGES`: :meth:`relit_hands.engine.Engine.render_student` ('composite' is the sum
  over the views; then 'composite_per_view', 'total').
* :data:`GPU_STUDENT_STAGES`: :class:`relit_hands.gpu_frame.GpuFrameRenderer` (the student frame
  on CUDA: no upload to a GL context).
* :data:`COMPOSITE_STAGES`: the parts of one ``composite``, :meth:`relit_hands.compositor.Compositor.render`'s
  ``timings_ms`` / ``last_timings`` (then 'total').
"""
from __future__ import annotations

__all__ = ["PBR_STAGES", "STUDENT_STAGES", "GPU_STUDENT_STAGES", "COMPOSITE_STAGES", "in_stage_order"]

PBR_STAGES = ("skinning", "normals_upload", "composite")
STUDENT_STAGES = ("skinning", "lights", "raycast", "features", "uv_gather", "student", "textures", "upload",
                  "composite")
GPU_STUDENT_STAGES = tuple(s for s in STUDENT_STAGES if s != "upload")
COMPOSITE_STAGES = ("env_prepare", "shadows", "draw", "readback")


def in_stage_order(timings: dict, stages) -> dict:
    """``timings`` with the ``stages`` keys first, in that order, then its other keys (e.g. 'total');
    a stage missing from ``timings`` is a KeyError (the producer and this list disagree)."""
    return {**{s: timings[s] for s in stages}, **timings}
