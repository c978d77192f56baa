"""The OLAT teacher as a renderer of the evaluation harness (``relit-hands eval``).

    relit-hands eval --capture captures/lightstage \\
        --renderer teacher pbr --plugin relit_hands.tools.teacher_renderer --out docs/eval_teacher

Importing this module registers ``teacher``: for each held-out environment frame it skins the
frame's hands, relights them with :func:`relit_hands.tools.relight.teacher_env_texture` (the
environment -- the capture's copy with the frame's rotation, as the harness passes it -- turned into
``RELIT_HANDS_TEACHER_LIGHTS`` directional lights, default 512, view direction from the camera's
centre) and draws the textures with the engine's compositor (``shading='uv_texture'``), giving
linear radiance on the hands. ``RELIT_HANDS_TEACHER`` names the run folder or weights file
(default: the shipped teacher, ``relit_hands/models/teacher/teacher.safetensors``).
"""
from __future__ import annotations

import os

from .eval_renderers import register_renderer

__all__ = ["TeacherRenderer", "teacher_factory"]


class TeacherRenderer:
    def __init__(self, engine, path, n_lights: int = 512):
        from .relight import load_teacher_run
        from .teacher_inputs import TexelConditioning

        self.engine = engine
        self.teacher, self.meta, cond = load_teacher_run(path)
        self.cond = TexelConditioning.for_teacher(engine, self.teacher, cond.resolution)
        self.n_lights = int(n_lights)
        self._geo = (None, None)

    def textures(self, scene, env, view_origin):
        from .relight import teacher_env_texture
        from .teacher_training import pose_key

        key = pose_key(scene)
        if self._geo[0] != key:  # geometry + visibility reused by every camera of a frame
            self._geo = (key, self.cond.geometry(scene))
        return teacher_env_texture(self.teacher, self.cond, scene, env, view_origin, self.n_lights,
                                   geo=self._geo[1])

    def __call__(self, frame, camera, env):
        tex = self.textures(frame.scene, env, camera.center)
        rt = {h.side: tex[i].permute(1, 2, 0).contiguous().numpy() for i, h in enumerate(frame.scene.hands)}
        return self.engine.render(frame.scene, env, camera, shading="uv_texture", radiance_textures=rt,
                                  return_linear=True, background="none")


def teacher_factory(ctx):
    from .teacher import default_teacher_path

    path = os.environ.get("RELIT_HANDS_TEACHER") or default_teacher_path()
    n = int(os.environ.get("RELIT_HANDS_TEACHER_LIGHTS", "512"))
    return TeacherRenderer(ctx.engine, path, n)


register_renderer("teacher", teacher_factory, "OLAT teacher relit by linearity (RELIT_HANDS_TEACHER=run folder)",
                  overwrite=True)
