"""The three students as renderers of the evaluation harness (``relit-hands eval``).

    relit-hands eval --capture captures/lightstage --plugin relit_hands.tools.student_eval \\
        --renderer pbr student student_novis student_bottleneck --out docs/eval_student

registers ``student`` (spatially aligned features with visibility, ours), ``student_novis``
(ablation: the same features without visibility), ``student_bottleneck`` (ablation: the
environment as a global code) and ``student_unstitched`` (the vis student's raw textures, without
the seam stitching :meth:`~relit_hands.engine.Engine.render_student` applies by default). Weights: ``$RELIT_HANDS_STUDENT_VIS`` / ``_NOVIS`` /
``_BOTTLENECK`` if set, else the shipped model (:func:`~relit_hands.student.default_student_path`:
``student.safetensors``, ``student_novis.safetensors``, ``student_bottleneck.safetensors`` in
``relit_hands/models/student/``, with the suffix ``_hand_v2`` for a capture of asset v2). The inference backend is
``$RELIT_HANDS_STUDENT_BACKEND`` (default ``auto``). A missing weights file is a clear error when
the renderer is used, not when the module is imported.
"""
from __future__ import annotations

import os
from pathlib import Path

from .eval_renderers import register_renderer

RENDERERS = {"student": ("vis", True), "student_novis": ("novis", True), "student_bottleneck": ("bottleneck", True),
             "student_unstitched": ("vis", False)}   # name -> (variant, seam_stitch)
DESCRIPTIONS = {"student": "neural student: spatially aligned features with ray-cast visibility",
                "student_novis": "student ablation: the same features without visibility",
                "student_bottleneck": "student ablation: environment as a global code (bottleneck)",
                "student_unstitched": "neural student (vis) without seam stitching: the raw predicted textures"}


def student_weights(variant: str, asset=None) -> Path:
    """Where the harness looks for a variant's weights (see the module docstring); ``asset``: the
    capture's hand asset (the shipped student of its layout, :func:`~relit_hands.student.default_student_path`)."""
    from ..student import StudentLoadError, default_student_path

    env = os.environ.get(f"RELIT_HANDS_STUDENT_{variant.upper()}")
    if env:
        return Path(env)
    path = default_student_path(variant, asset=asset)
    if path.is_file():
        return path
    raise StudentLoadError(f"{path}: no trained {variant} student (train one with `relit-hands train-student "
                           f"--variant {variant} ... --install-default`, or set RELIT_HANDS_STUDENT_{variant.upper()})")


class StudentRenderer:
    """Harness renderer: ``(frame, camera, env) -> Frame`` (hands only, linear radiance)."""

    def __init__(self, engine, variant: str, n_lights: int = 64, seam_stitch: bool = True):
        from ..student import StudentLoadError

        self.engine, self.n_lights, self.seam_stitch = engine, n_lights, seam_stitch
        # the engine's own resolution (its device, the registry, the asset check)
        self.backend = engine.student_backend(student_weights(variant, engine.asset),
                                              inference=os.environ.get("RELIT_HANDS_STUDENT_BACKEND", "auto"))
        if self.backend.variant != variant:
            raise StudentLoadError(f"{student_weights(variant, engine.asset)}: holds a {self.backend.variant} student, "
                                   f"expected {variant}")

    def __call__(self, frame, camera, env):
        out = self.engine.render_student(frame.scene, env, camera, student=self.backend, n_lights=self.n_lights,
                                         background="none", return_linear=True, seam_stitch=self.seam_stitch)
        return out.frames[0]


for _name, (_variant, _stitch) in RENDERERS.items():
    register_renderer(_name, (lambda v, st: (lambda ctx: StudentRenderer(ctx.engine, v, seam_stitch=st)))(
                          _variant, _stitch), DESCRIPTIONS[_name], overwrite=True)
