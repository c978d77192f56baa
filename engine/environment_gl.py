"""The environment's GL state for the compositor: what one environment map lights and shows.

:class:`EnvironmentGL` turns an environment into what the passes read -- the k dominant lights,
the residual environment's SH irradiance, the prefiltered residual (a 3D texture) and the equirect
background texture -- and keeps them for the last environment (same image, rotation and exposure)
and the map's SH per image (rotated / rescaled when only the rotation or exposure change). The
model is described in :mod:`relit_hands.compositor`.
"""
from __future__ import annotations

import numpy as np

from .environment import SH_COSINE_BAND, equirect_directions_and_solid_angles, fibonacci_sphere, sh_basis


class _EnvState:
    __slots__ = ("key", "image_ref", "light_dirs", "light_rgb", "sh_irr", "prefilter")


class EnvironmentGL:
    """Environment state of one compositor's context. ``num_shadow_lights`` k and ``num_env_lights``
    n of ``env.dominant_lights(k, n)``; ``residual_sh`` 'map' or 'lights'; ``prefilter_size`` (W, H)
    and ``prefilter_roughness`` levels of the prefiltered residual (the compositor validates them).
    The methods that upload expect the context current (:meth:`Compositor.render` calls them).

    ``state`` is the derived state of the last environment, ``env_tex`` its background texture,
    ``prefilter_tex`` its prefiltered levels (None until first needed)."""

    def __init__(self, ctx, *, num_shadow_lights: int, num_env_lights: int, residual_sh: str,
                 prefilter_size, prefilter_roughness):
        import moderngl
        self._mgl = moderngl
        self.ctx = ctx
        self.num_shadow_lights = num_shadow_lights
        self.num_env_lights = num_env_lights
        self.residual_sh = residual_sh
        self.prefilter_size = prefilter_size
        self.prefilter_roughness = prefilter_roughness
        self.env_tex = None
        self._env_tex_ref = None
        self.state: _EnvState | None = None
        self.prefilter_tex = None
        self._sh_ref = None

    def key(self, env):
        img = getattr(env, "image", None)
        rot = np.asarray(getattr(env, "rotation", np.eye(3)), dtype=np.float64)
        scale = float(getattr(env, "scale", 1.0))
        return (id(env) if img is None else id(img), rot.tobytes(), scale)

    def prepare(self, env) -> _EnvState:
        key = self.key(env)
        st = self.state
        if st is not None and st.key == key:
            return st
        st = _EnvState()
        st.key = key
        st.image_ref = getattr(env, "image", None)  # keeps id(image) valid while cached
        k, n = self.num_shadow_lights, self.num_env_lights
        res = env.dominant_lights(k, n)
        dirs_k, rgb_k, dirs_r, rgb_r = (np.asarray(a, dtype=np.float64).reshape(-1, 3) for a in
                                        (res[0], res[1], res[2], res[3]))
        st.light_dirs, st.light_rgb = dirs_k, rgb_k
        if self.residual_sh == "map" and hasattr(env, "sh_coefficients"):
            sh = self.map_sh(env) - sh_basis(dirs_k).T @ rgb_k
        else:
            sh = sh_basis(dirs_r).T @ rgb_r
        st.sh_irr = sh * SH_COSINE_BAND[:, None]
        st.prefilter = self.prefilter(dirs_r, rgb_r)
        self.upload(env, st)
        self.state = st
        return st

    def map_sh(self, env) -> np.ndarray:
        """env.sh_coefficients(), computed once per image and then rotated / rescaled (an exact
        order-2 SH rotation, solved on 64 Fibonacci directions) when only rotation or exposure change."""
        img = getattr(env, "image", None)
        rot = np.asarray(getattr(env, "rotation", np.eye(3)), dtype=np.float64)
        scale = float(getattr(env, "scale", 1.0))
        ref = self._sh_ref
        if img is None or ref is None or ref[0] is not img or ref[3] <= 0.0:
            c = np.asarray(env.sh_coefficients(), dtype=np.float64)
            if img is not None:
                self._sh_ref = (img, rot, c, scale)
            return c
        _, rot0, c0, s0 = ref
        Q = rot @ rot0.T  # world_from_ref-world
        X = fibonacci_sphere(64)
        Y = sh_basis(X)
        c = np.linalg.lstsq(Y, sh_basis(X @ Q) @ c0, rcond=None)[0]
        return c * (scale / s0)

    def prefilter(self, dirs, rgb) -> np.ndarray:
        W, H = self.prefilter_size
        d, omega = equirect_directions_and_solid_angles(H, W)
        levels = []
        for r in self.prefilter_roughness:
            a2 = (r * r) ** 2
            if len(dirs) == 0:
                levels.append(np.zeros((H * W, 3)))
                continue
            # N = V = d, h = normalize(d + l): (n.h)^2 = (1 + d.l) / 2
            nh2 = np.clip(0.5 * (1.0 + d @ dirs.T), 0.0, 1.0)  # [P, L]
            dd = nh2 * (a2 - 1.0) + 1.0
            w = a2 / (np.pi * dd * dd) / 4.0
            norm = omega @ w  # [L]
            w = w / np.where(norm > 0, norm, 1.0)[None, :]
            levels.append(w @ rgb)
        return np.stack(levels).reshape(len(levels), H, W, 3).astype(np.float32)

    def upload(self, env, st):
        self.upload_image(env)
        mgl = self._mgl
        pf = st.prefilter
        L, H, W = pf.shape[:3]
        if self.prefilter_tex is None or self.prefilter_tex.size != (W, H, L):
            if self.prefilter_tex is not None:
                self.prefilter_tex.release()
            self.prefilter_tex = self.ctx.texture3d((W, H, L), 3, dtype="f4", alignment=1)
            self.prefilter_tex.filter = (mgl.LINEAR, mgl.LINEAR)
            self.prefilter_tex.repeat_x = True
            self.prefilter_tex.repeat_y = False
            self.prefilter_tex.repeat_z = False
        self.prefilter_tex.write(np.ascontiguousarray(pf).tobytes())

    def upload_image(self, env):
        """The equirect background texture (uploaded once per image)."""
        mgl = self._mgl
        img = getattr(env, "image", None)
        if img is None:  # generic env: world-frame image with rotation/exposure baked in
            img = np.asarray(env.resampled_image(), dtype=np.float32)
        if self.env_tex is None or self._env_tex_ref is not img:
            h, w = img.shape[:2]
            a = np.ones((h, w, 4), np.float32)  # RGBA: llvmpipe samples it ~15% faster than RGB
            a[..., :3] = img
            if self.env_tex is not None:
                self.env_tex.release()
            self.env_tex = self.ctx.texture((w, h), 4, a.tobytes(), dtype="f4")
            self.env_tex.filter = (mgl.LINEAR, mgl.LINEAR)
            self.env_tex.repeat_x = True
            self.env_tex.repeat_y = False
            self._env_tex_ref = img

    def prefilter_texture(self):
        """:attr:`prefilter_tex`, or before any PBR frame a matching 1x1x1 dummy (the full hand
        program binds its sampler whatever the shading)."""
        if self.prefilter_tex is None:  # non-PBR frames before any PBR one: a matching dummy
            self.prefilter_tex = self.ctx.texture3d((1, 1, 1), 3, np.zeros(3, np.float32).tobytes(),
                                                    dtype="f4")
        return self.prefilter_tex
