"""OpenGL compositor: environment background + two (or more) hand meshes, tone mapped.

One :class:`Compositor` owns a moderngl context (headless EGL by default, or one you pass in,
e.g. the viewer's window context) and one :class:`HandDrawable` per hand (GPU buffers and
textures). A frame is::

    comp = Compositor()
    right = comp.add_hand(positions, faces, uvs, uv_faces, albedo=..., normal_map=..., roughness=...)
    left = comp.add_hand(...)
    right.update_vertices(skinned_positions, skinned_normals)      # every frame
    out = comp.render([right, left], env, camera, shading="pbr")     # dict of numpy images

Passes
------
1. **Background** -- every pixel centre's world ray ``R^T K^-1 (u, v, 1)`` is rotated into the
   map frame (``env.rotation^T``) and looks up the equirect image (``env.image``, uploaded once
   per image as a float texture, bilinear, u wraps) times ``env.scale`` (2^exposure of the map)
   (``env_background`` in common.glsl). Drawn by the tone-mapping pass (4) behind the hands'
   coverage, ``c = hands + (1 - coverage) * background`` -- the same blend MSAA gives when the
   background is drawn first --, or, when the linear image is read back (``return_linear``, which
   must hold it), by its own fullscreen pass before the hands.
2. **Shadow maps** -- the ``k`` (default 4) brightest lights of ``env.dominant_lights(k, n)``
   each get an orthographic depth map (``shadow_map_size``^2, tiles of one depth atlas) whose
   frustum is fitted to the bounding sphere of *all* rendered hands, so one hand shadows the
   other (back faces w.r.t. the light are culled when ``cull_back_faces``). Lookup: normal-offset bias (``texel * (1 + 2 (1 - N.L))`` along the geometric
   normal) + a constant depth bias of 1.5 texels, 2x2 taps (+-0.5 texel) of hardware 2x2
   bilinear PCF (a 3x3-texel tent footprint).
3. **Hands** -- depth-tested rasterisation of every hand (4x MSAA by default) into an RGBA32F
   radiance target and an RGBA32F aux target (hand id + 1, camera depth z, -, coverage),
   resolved (box filter) to single-sample textures (``msaa=None``: 4x on GPUs, off on
   llvmpipe where it costs 2-3x).
4. **Tone mapping** -- (the environment background, see 1,) exposure ``2^exposure_ev``, then ACES (Narkowicz 2015 fit,
   ``x(2.51x+0.03)/(x(2.43x+0.59)+0.14)``, no 0.6 pre-scale), Hable/Uncharted 2 filmic
   (A..F = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30, exposure bias 2, white point W = 11.2) or none
   (clamp), then the exact sRGB OETF, into an RGBA8 target. With ``background='transparent'``
   the colour is un-premultiplied by the coverage first and alpha = coverage.

Shading model ('pbr')
---------------------
Per fragment, with texture samples at the mesh UV (conventions.md: ``texel (row, col) =
(v R, u R)``, no flips):

* ``albedo`` = sRGB-decoded albedo texture (linear);
* normal: ``n = normalize(T nm.x + B nm.y + N nm.z)``, ``nm = 2 * normal_map - 1``, with the
  interpolated vertex normal N, tangent T = +u direction (Gram-Schmidt against N) and
  bitangent ``B = w cross(N, T)`` (w = handedness, so B is the +v direction, mirrored meshes
  included);
* roughness texture R channel = perceptual roughness ``r`` (clamped to [0.045, 1]), GGX
  ``alpha = r^2``; G channel * 0.08 = F0 (scalar, ~0.028-0.04 for skin).

Lighting. ``E_k`` = irradiance (``rgb``) of dominant light k, ``l_k`` its direction; ``V_k`` its
shadow-map visibility (1 with ``shadows=False``)::

    L_o = albedo / pi * ( sum_k E_k V_k max(0, n.l_k)  +  max(0, E_sh(n)) )
        + sum_k E_k V_k max(0, n.l_k) * D(h) * Vis(n.l, n.v) * F(v.h)
        + P(reflect(-v, n), r) * EnvBRDF(F0, r, n.v)

* ``D`` = GGX/Trowbridge-Reitz ``a^2 / (pi ((n.h)^2 (a^2 - 1) + 1)^2)``, ``a = r^2``;
  ``Vis`` = Smith height-correlated ``G / (4 n.l n.v) = 0.5 / (n.l sqrt((n.v)^2 (1 - a^2) + a^2)
  + n.v sqrt((n.l)^2 (1 - a^2) + a^2))``; ``F`` = Schlick ``F0 + (1 - F0)(1 - v.h)^5``.
  Lambert diffuse and specular are added without energy coupling (no ``1 - F`` factor).
* ``E_sh`` = irradiance of the *residual* environment from order-2 SH (Ramamoorthi-Hanrahan
  band factors pi, 2pi/3, pi/4). The residual SH is ``env.sh_coefficients()`` (exact projection
  of the whole map) minus the SH projection of the k dominant directional lights
  (``sum_k E_k Y(l_k)``). This is more accurate than projecting the n - k discrete residual
  lights (their sampling noise leaks into bands 1-2) and is exactly consistent because the
  lights' energies sum to the map's integral (the map's SH is projected once per image and then
  rotated exactly / rescaled when only the env rotation or exposure change). ``residual_sh='lights'`` selects the projection
  of the residual lights instead (used automatically if the env lacks ``sh_coefficients``).
* ``P(d, r)`` = prefiltered residual environment: a 64x32 equirect (world frame) per roughness
  level ``r_i`` in ``linspace(0.1, 1, 5)`` (a 3D texture, linear between levels, roughness
  clamped to that range). Texel value = ``sum_j rgb_j w_ij`` over the n - k residual lights,
  where ``w_ij = D_{a_i}(h) / 4`` (the GGX lobe's reflected-direction pdf with N = V = d,
  h = normalize(d + l_j)) normalised per light so that ``sum_texels w_ij dOmega = 1``
  (energy exact even when a lobe is narrower than a texel).
* ``EnvBRDF`` = Karis 2014 "mobile" analytic fit of the split-sum ``F0 A + B``.
* Not modelled: subsurface scattering, ambient occlusion / shadowing of the residual
  environment, multiple-scattering energy compensation.

Other shading modes: 'uv_texture' (per-hand HDR radiance texture, sampled by UV, displayed as
is: the student's output; drawn with its own small program, ``hand_uv.vert`` / ``hand_uv.frag``,
~3x cheaper per fragment on llvmpipe than a texture-only branch of the full program), 'normal'
(``0.5 n + 0.5`` of the normal-mapped world normal), 'albedo' (linear albedo), 'uv' (``(u, v, 0)``).

Outputs (row 0 = top, see :mod:`relit_hands.camera` for the pixel convention)
--------------------------------------------------------------------------------
``rgb`` uint8 ``[H,W,3]`` (``[H,W,4]`` for transparent), ``linear`` float32 ``[H,W,3]``
scene-referred radiance (before exposure_ev and tone mapping; premultiplied by coverage at edges
when the background is not drawn) when ``return_linear``, ``mask`` bool (coverage >= 0.5),
``coverage`` float32 in [0, 1], ``hand_id`` int8 (-1 background, else the position of the hand
in the ``hands`` argument), ``depth`` float32 camera z in metres (``inf`` on background),
``timings_ms``.

Host targets
------------
``render(..., target=...)`` draws pass 4 into a framebuffer or texture the host application owns
(same context) instead of the compositor's RGBA8 target, and reads nothing back: 8-bit targets get
the tone-mapped sRGB image, half / float targets the linear radiance times ``2^exposure_ev``
(:meth:`Compositor.target_format`). The hands' MSAA is resolved before that pass. Every method that
touches GL restores the context's state afterwards (:class:`~relit_hands.gl_state.GLStateGuard`)
and makes the previously current EGL context current again.

Modules
-------
This module keeps the :class:`Compositor` (targets, shadow passes, the frame, tone mapping, host
targets, read-back); :mod:`relit_hands.gl_context` creates the headless context and holds the GL
helpers, :mod:`relit_hands.hand_drawable` the :class:`HandDrawable`, and
:mod:`relit_hands.environment_gl` the environment's GL state (``Compositor.env_gl``). The names
callers import from this module still import from here.
"""
from __future__ import annotations

import time

import numpy as np

from . import environment as _environment
from . import gl_context as _gl_context
from .camera import Camera
from .compositing import HandCompositor, to_host_together
from .environment_gl import EnvironmentGL
from .gl_context import _check_image, _gl_current, _mat_bytes, create_headless_context, load_shader
from .gl_state import GLStateGuard, made_current
from .hand_drawable import HandDrawable
from .stages import COMPOSITE_STAGES, STUDENT_STAGES, in_stage_order

__all__ = ["Compositor", "HandDrawable", "create_headless_context", "load_shader"]

# Re-exported for callers of this module, unused here (same objects; assigned, not imported, so pyflakes
# does not take them for unused imports).
preload_triton = _gl_context.preload_triton
_equirect_dirs = _environment.equirect_directions_and_solid_angles  # (directions [H*W,3], solid angles [H*W])

SHADINGS = {"pbr": 0, "uv_texture": 1, "normal": 2, "albedo": 3, "uv": 4}
TONEMAPS = {"none": 0, "aces": 1, "filmic": 2}
BACKGROUNDS = ("env", "none", "transparent")
_MAX_LIGHTS = 8  # must match MAX_LIGHTS in hand.frag


class Compositor(HandCompositor):
    """Renders hands over an environment map; see the module docstring for the exact model. The
    ``'gl'`` backend of :class:`~relit_hands.compositing.HandCompositor`.

    Parameters: ``ctx`` an existing moderngl context (e.g. the viewer's) or None for a headless
    EGL one; ``shadow_map_size`` texels per shadow map side; ``num_shadow_lights`` k dominant
    lights (<= 8); ``num_env_lights`` n lights the environment is split into (32..1024);
    ``msaa`` samples (1 disables; None = 4 on GPUs, 1 on CPU rasterisers such as llvmpipe);
    ``prefilter_size`` (W, H) of each prefiltered level;
    ``prefilter_roughness`` roughness levels (increasing, uniformly spaced);
    ``residual_sh`` 'map' or 'lights' (see module docstring); ``cull_back_faces`` in the hands
    and shadow passes (meshes must be closed, CCW = outward; set False for open meshes).
    """

    def __init__(self, ctx=None, *, shadow_map_size: int = 1024, num_shadow_lights: int = 4,
                 num_env_lights: int = 64, msaa: int | None = None, prefilter_size=(64, 32),
                 prefilter_roughness=(0.1, 0.325, 0.55, 0.775, 1.0), residual_sh: str = "map",
                 cull_back_faces: bool = True):
        import moderngl
        self._mgl = moderngl
        self.owns_ctx = ctx is None
        self.ctx = create_headless_context() if ctx is None else ctx
        if self.owns_ctx:
            # a new standalone context is current on creation; the compositor makes its own context
            # current only inside its calls, so none is left current in between (a context released
            # while current stays bound to the thread and breaks the next GLX/EGL context there)
            with self.ctx:
                pass
        with made_current(self.ctx):
            self._gl_state = GLStateGuard(self.ctx)
            with self._gl_state.preserved():
                self._init(num_shadow_lights, residual_sh, prefilter_roughness, shadow_map_size,
                           num_env_lights, msaa, prefilter_size, cull_back_faces)

    def _init(self, num_shadow_lights, residual_sh, prefilter_roughness, shadow_map_size,
              num_env_lights, msaa, prefilter_size, cull_back_faces):
        moderngl = self._mgl
        if not 0 <= num_shadow_lights <= _MAX_LIGHTS:
            raise ValueError(f"num_shadow_lights must be in [0, {_MAX_LIGHTS}]")
        if residual_sh not in ("map", "lights"):
            raise ValueError("residual_sh must be 'map' or 'lights'")
        pr = np.asarray(prefilter_roughness, dtype=np.float64)
        if pr.ndim != 1 or len(pr) < 2 or np.any(np.diff(pr) <= 0) or not np.allclose(np.diff(pr), pr[1] - pr[0]):
            raise ValueError("prefilter_roughness must be >= 2 increasing, uniformly spaced values")
        self.shadow_map_size = int(shadow_map_size)
        self.num_shadow_lights = int(num_shadow_lights)
        self.num_env_lights = int(num_env_lights)
        renderer = str(self.ctx.info.get("GL_RENDERER", "")).lower()
        self.software = any(w in renderer for w in ("llvmpipe", "softpipe", "swiftshader", "swrast"))
        if msaa is None:  # auto: MSAA costs ~2-3x on CPU rasterisers, where it is off by default
            msaa = 1 if self.software else 4
        self.msaa = max(1, min(int(msaa), self.ctx.max_samples))
        self.prefilter_size = (int(prefilter_size[0]), int(prefilter_size[1]))
        self.prefilter_roughness = pr
        self.residual_sh = residual_sh
        self.cull_back_faces = bool(cull_back_faces)
        self.hands: list[HandDrawable] = []

        vs_fs = load_shader("fullscreen.vert")
        self.prog_bg = self.ctx.program(vertex_shader=vs_fs, fragment_shader=load_shader("background.frag"))
        self.prog_tm = self.ctx.program(vertex_shader=vs_fs, fragment_shader=load_shader("tonemap.frag"))
        self.prog_hand = self.ctx.program(vertex_shader=load_shader("hand.vert"),
                                          fragment_shader=load_shader("hand.frag"))
        self.prog_hand_uv = self.ctx.program(vertex_shader=load_shader("hand_uv.vert"),
                                             fragment_shader=load_shader("hand_uv.frag"))
        self.prog_shadow = self.ctx.program(vertex_shader=load_shader("shadow.vert"),
                                            fragment_shader=load_shader("shadow.frag"))
        self.vao_fs = self.ctx.vertex_array(self.prog_bg, [])
        self.vao_tm = self.ctx.vertex_array(self.prog_tm, [])
        self._set_samplers()

        S = self.shadow_map_size
        ntiles = max(1, self.num_shadow_lights)
        max_tex = int(self.ctx.info.get("GL_MAX_TEXTURE_SIZE", 16384))
        if S < 16 or S * ntiles > max_tex:
            raise ValueError(f"shadow atlas {S * ntiles}x{S} (shadow_map_size x num_shadow_lights) "
                             f"exceeds GL_MAX_TEXTURE_SIZE={max_tex} or is too small")
        self.shadow_tex = self.ctx.depth_texture((S * ntiles, S))
        self.shadow_tex.compare_func = "<="
        self.shadow_tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.shadow_tex.repeat_x = self.shadow_tex.repeat_y = False
        self.shadow_fbo = self.ctx.framebuffer(depth_attachment=self.shadow_tex)

        self.env_gl = EnvironmentGL(self.ctx, num_shadow_lights=self.num_shadow_lights,
                                    num_env_lights=self.num_env_lights, residual_sh=self.residual_sh,
                                    prefilter_size=self.prefilter_size, prefilter_roughness=self.prefilter_roughness)
        self._targets = None
        self._targets_key = None

    # ---------------------------------------------------------------- setup
    def _set_samplers(self):
        units = {"u_albedo": 0, "u_normal_map": 1, "u_rough": 2, "u_shadow": 4, "u_prefilter": 5}
        for name, unit in units.items():
            if name in self.prog_hand:
                self.prog_hand[name].value = unit
        self.prog_hand_uv["u_radiance"].value = 3
        self.prog_bg["u_env"].value = 6
        self.prog_tm["u_env"].value = 6
        self.prog_tm["u_hdr"].value = 0

    @_gl_current
    def add_hand(self, positions, faces, uvs, uv_faces, **kw) -> HandDrawable:
        """Create a :class:`HandDrawable` (keyword args: albedo, normal_map, roughness, normals,
        name), register it (its index = registration order) and return it."""
        h = HandDrawable(self, positions, faces, uvs, uv_faces, **kw)
        self.hands.append(h)
        return h

    # ---------------------------------------------------------------- the compositor interface
    name = "gl"
    student_stages = STUDENT_STAGES

    def attach_hands(self, models: dict, textures: dict) -> None:
        """One :class:`HandDrawable` per hand of ``models`` ({side: HandModel}), in
        :attr:`hand_drawables` {side: drawable}, with the asset's PBR ``textures``."""
        self.hand_drawables = {}
        for side, model in models.items():
            a = model.asset
            self.hand_drawables[side] = self.add_hand(a.render_vertices, a.render_faces, a.render_uvs,
                                                      a.render_uv_faces, name=side, **textures)

    def upload_hands(self, sides, vertices: dict, textures=None) -> None:
        """Posed vertices {side: [V, 3] host tensor or array} (and radiance textures, one [R, R, 3]
        per side in ``sides`` order, arrays or host tensors) to the drawables of ``sides``; each
        drawable computes its normals itself."""
        for i, side in enumerate(sides):
            v = vertices[side]
            self.hand_drawables[side].update_vertices(v.numpy() if hasattr(v, "numpy") else v)
            if textures is not None:
                self.hand_drawables[side].set_radiance_texture(textures[i])

    def composite_textures(self, sides, vertices, textures, env, cameras, *, exposure_ev=0.0, tonemap="aces",
                           background="env", return_linear=False, readback=None, targets=None, timer=None):
        """:meth:`HandCompositor.composite_textures`: the textures (and, from a CUDA device, the posed
        vertices with them) cross to the host in one copy (:func:`~relit_hands.compositing.to_host`)
        and are uploaded (stage 'upload'); every camera is one :meth:`render` ('composite')."""
        tex, *verts = to_host_together([textures.float()] + [vertices[s] for s in sides])
        self.upload_hands(sides, dict(zip(sides, verts)), tex)
        if timer is not None:
            timer.mark("upload")
        targets = [None] * len(cameras) if targets is None else targets
        views = []
        for cam, tgt in zip(cameras, targets):
            o = self.render([self.hand_drawables[s] for s in sides], env, cam, shading="uv_texture",
                            exposure_ev=exposure_ev, tonemap=tonemap, background=background, shadows=False,
                            return_linear=return_linear, readback=readback, target=tgt)
            o["device_image"] = None
            views.append(o)
        if timer is not None:
            timer.mark("composite")
        return views

    def set_radiance_texture(self, hand_index: int, tex):
        """HDR radiance texture of registered hand ``hand_index`` for ``shading='uv_texture'``."""
        self.hands[hand_index].set_radiance_texture(tex)

    def release(self):
        with made_current(self.ctx):
            for h in self.hands:
                h.release()
            self.hands.clear()
        if self.owns_ctx:
            self.ctx.release()

    # ---------------------------------------------------------------- environment
    # The environment's state lives in ``self.env_gl`` (:class:`~relit_hands.environment_gl.EnvironmentGL`);
    # these names keep reading it on the compositor.
    def _map_sh(self, env) -> np.ndarray:
        return self.env_gl.map_sh(env)

    def _prefilter(self, dirs, rgb) -> np.ndarray:
        return self.env_gl.prefilter(dirs, rgb)

    @property
    def _env_state(self):
        return self.env_gl.state

    @property
    def _env_tex(self):
        return self.env_gl.env_tex

    @property
    def _prefilter_tex(self):
        return self.env_gl.prefilter_tex

    # ---------------------------------------------------------------- targets
    def _get_targets(self, W, H):
        if self._targets_key == (W, H):
            return self._targets
        if self._targets is not None:
            for o in self._targets.values():
                o.release()
        ctx, s = self.ctx, self.msaa
        t = {}
        t["hdr"] = ctx.texture((W, H), 4, dtype="f4")
        t["aux"] = ctx.texture((W, H), 4, dtype="f4")
        for k in ("hdr", "aux"):
            t[k].filter = (self._mgl.NEAREST, self._mgl.NEAREST)
        t["out"] = ctx.texture((W, H), 4)
        # fbo_draw*: radiance + aux; fbo_draw_rgb*: radiance only, for frames whose aux nothing reads
        # (readback 'rgb' / 'none'; the coverage the tone-mapping pass needs is the radiance alpha): the
        # hand shader's aux output is discarded and a 1280x720 frame saves clearing and writing one
        # RGBA32F target
        if s > 1:
            t["ms_c"] = ctx.renderbuffer((W, H), 4, samples=s, dtype="f4")
            t["ms_a"] = ctx.renderbuffer((W, H), 4, samples=s, dtype="f4")
            t["ms_d"] = ctx.depth_renderbuffer((W, H), samples=s)
            t["fbo_draw"] = ctx.framebuffer([t["ms_c"], t["ms_a"]], t["ms_d"])
            t["fbo_resolve"] = ctx.framebuffer([t["hdr"], t["aux"]])
            t["fbo_draw_rgb"] = ctx.framebuffer([t["ms_c"]], t["ms_d"])
            t["fbo_resolve_rgb"] = ctx.framebuffer([t["hdr"]])
        else:
            t["ms_d"] = ctx.depth_renderbuffer((W, H))
            t["fbo_draw"] = ctx.framebuffer([t["hdr"], t["aux"]], t["ms_d"])
            t["fbo_draw_rgb"] = ctx.framebuffer([t["hdr"]], t["ms_d"])
        t["fbo_out"] = ctx.framebuffer([t["out"]])
        self._targets, self._targets_key = t, (W, H)
        return t

    # ---------------------------------------------------------------- shadows
    @staticmethod
    def _light_matrix(d, center, radius):
        d = d / np.linalg.norm(d)
        up = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.99 else np.array([1.0, 0.0, 0.0])
        x = np.cross(up, d)
        x /= np.linalg.norm(x)
        y = np.cross(d, x)
        view = np.eye(4)
        view[:3, :3] = np.stack([x, y, d])
        view[:3, 3] = -view[:3, :3] @ center
        proj = np.diag([1.0 / radius, 1.0 / radius, -1.0 / radius, 1.0])
        return proj @ view

    def _render_shadows(self, hands, st, center, radius):
        k = len(st.light_dirs)
        S = self.shadow_map_size
        r = radius * 1.02 + 1e-6
        r *= 1.0 + 4.0 / S  # margin so PCF taps stay inside the tile
        mats = [self._light_matrix(st.light_dirs[i], center, r) for i in range(k)]
        fbo = self.shadow_fbo
        fbo.use()
        fbo.viewport = (0, 0, S * max(1, self.num_shadow_lights), S)
        fbo.clear(depth=1.0)
        if self.cull_back_faces:  # closed meshes: the light-facing surface is enough
            self.ctx.front_face = "ccw"
            self.ctx.enable(self._mgl.CULL_FACE)
        for i in range(k):
            fbo.viewport = (i * S, 0, S, S)
            self.prog_shadow["u_light_mat"].write(_mat_bytes(mats[i]))
            for h in hands:
                h.vao_shadow.render()
        self.ctx.disable(self._mgl.CULL_FACE)
        texel = 2.0 * r / S
        return mats, texel, 1.5 * texel / (2.0 * r)

    # ---------------------------------------------------------------- render
    @_gl_current
    def render(self, hands=None, env=None, camera: Camera | None = None, *, shading: str = "pbr",
               exposure_ev: float = 0.0, tonemap: str = "aces", background: str = "env",
               shadows: bool = True, return_linear: bool = False, readback: str | None = None,
               target=None) -> dict:
        """Render ``hands`` (HandDrawables or registered indices; None = all registered) under
        ``env`` seen by ``camera``. Returns a dict of numpy images (module docstring).

        ``readback``: 'all' (the default without ``target``: rgb, mask, coverage, hand_id, depth),
        'rgb' (the tone-mapped image only; mask / coverage / hand_id / depth are None -- saves
        reading and decoding the float aux target), or 'none' (nothing is read back: the frame stays
        in :attr:`output_texture` for a viewer / VR compositor sharing the context; 'rgb' is None).
        ``linear`` is read when ``return_linear`` whatever ``readback`` says. Non-PBR shading
        prepares only the background texture of ``env`` (its lights, SH and prefiltered maps
        are not used and not computed).

        ``target``: a framebuffer or texture of the host application (same context) that the final
        pass draws into instead of :attr:`output_texture`; nothing is read back (``readback`` must be
        None or 'none', ``return_linear`` False). See :meth:`target_format` for what it may be and
        what it receives. Either way the context's GL state is restored afterwards (``GLStateGuard``)."""
        if shading not in SHADINGS:
            raise ValueError(f"shading must be one of {sorted(SHADINGS)}, got {shading!r}")
        if tonemap not in TONEMAPS:
            raise ValueError(f"tonemap must be one of {sorted(TONEMAPS)}, got {tonemap!r}")
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        if not isinstance(camera, Camera):
            raise TypeError("camera must be a relit_hands.camera.Camera")
        if readback is None:
            readback = "all" if target is None else "none"
        if readback not in ("all", "rgb", "none"):
            raise ValueError(f"readback must be 'all', 'rgb' or 'none', got {readback!r}")
        if target is not None:
            if readback != "none" or return_linear:
                raise ValueError("a frame drawn into a host target is not read back: "
                                 "pass readback=None or 'none' and return_linear=False")
            out_format = self.target_format(target, (camera.width, camera.height))
        hands = list(self.hands if hands is None else hands)
        hands = [self.hands[h] if isinstance(h, (int, np.integer)) else h for h in hands]
        for i, h in enumerate(hands):
            if not isinstance(h, HandDrawable) or h.ctx is not self.ctx:
                raise TypeError(f"hands[{i}] is not a HandDrawable of this compositor")
            if shading == "uv_texture" and h.radiance_tex is None:
                raise ValueError(f"hands[{i}] has no radiance texture: call set_radiance_texture first")
        if shading in ("pbr", "normal"):  # the normal-mapped shadings read the tangent frame
            for h in hands:
                h._ensure_tangents()
        need_env = background == "env" or shading == "pbr"
        if need_env and env is None:
            raise ValueError("an environment map is required for shading='pbr' or background='env'")
        ctx, mgl = self.ctx, self._mgl
        timings = {}
        t0 = time.perf_counter()
        pbr = shading == "pbr"
        st = None
        if env is not None:
            if pbr:
                st = self.env_gl.prepare(env)
            else:  # only the background is drawn from env: lights / SH / prefilter are unused
                self.env_gl.upload_image(env)
        t1 = time.perf_counter()
        timings["env_prepare"] = (t1 - t0) * 1e3

        W, H = camera.width, camera.height
        tg = self._get_targets(W, H)
        if hands:
            lo = np.min([h.center - h.radius for h in hands], axis=0)
            hi = np.max([h.center + h.radius for h in hands], axis=0)
            center = 0.5 * (lo + hi)
            radius = max(max(np.linalg.norm(h.center - center) + h.radius for h in hands), 1e-6)
        else:
            center, radius = np.zeros(3), 1.0

        # ---- shadow maps
        k = len(st.light_dirs) if (pbr and st is not None) else 0
        use_shadows = bool(shadows) and pbr and k > 0 and bool(hands)
        ctx.disable(mgl.CULL_FACE | mgl.BLEND | mgl.RASTERIZER_DISCARD)  # whatever a host context had on
        ctx.enable(mgl.DEPTH_TEST)
        ctx.depth_func = "<"
        if use_shadows:
            mats, texel, bias = self._render_shadows(hands, st, center, radius)
        t2 = time.perf_counter()
        timings["shadows"] = (t2 - t1) * 1e3

        # ---- background
        sfx = "" if readback == "all" else "_rgb"  # the aux target only feeds the 'all' read-back
        fbo = tg["fbo_draw" + sfx]
        fbo.use()
        fbo.viewport = (0, 0, W, H)
        # An environment background is drawn by the tone-mapping pass behind the hands' coverage
        # (one full-screen pass fewer: ~4 ms at 1280x720 on llvmpipe), except when the linear image
        # is read back, which must hold it: then by its own pass, before the hands.
        bg_pass = background == "env" and return_linear
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        if background == "env":
            m = getattr(env, "rotation", None)
            rot_t = np.eye(3) if (m is None or getattr(env, "image", None) is None) else np.asarray(m).T
            ray = _mat_bytes(rot_t @ camera.R.T @ np.linalg.inv(camera.K))
            scale = float(getattr(env, "scale", 1.0)) if getattr(env, "image", None) is not None else 1.0
            prog = self.prog_bg if bg_pass else self.prog_tm  # whichever pass draws it
            prog["u_ray_from_pix"].write(ray)
            prog["u_height"].value = float(H)
            prog["u_scale"].value = scale
            self.env_gl.env_tex.use(6)
        if bg_pass:
            ctx.disable(mgl.DEPTH_TEST)
            self.vao_fs.render(mgl.TRIANGLES, vertices=3)
            ctx.enable(mgl.DEPTH_TEST)

        # ---- hands
        if hands:
            zc = float((camera.R @ center + camera.t)[2])
            far = max(zc + radius * 1.1, 1e-3)
            near = max(zc - radius * 1.1, far * 1e-4)
            uv_only = shading == "uv_texture"  # its own small program (hand_uv.*), see below
            p = self.prog_hand_uv if uv_only else self.prog_hand
            p["u_view_proj"].write(_mat_bytes(camera.gl_view_projection(near, far)))
            self._set(p, "u_mode", SHADINGS[shading])
            self._set(p, "u_cam_pos", tuple(camera.center.astype(float)))
            self._set(p, "u_cam_rz", tuple(camera.R[2].astype(float)))
            self._set(p, "u_cam_tz", float(camera.t[2]))
            if pbr:
                p["u_num_lights"].value = k
                dirs = np.zeros((_MAX_LIGHTS, 3), np.float32)
                rgbs = np.zeros((_MAX_LIGHTS, 3), np.float32)
                dirs[:k], rgbs[:k] = st.light_dirs, st.light_rgb
                p["u_light_dir"].write(dirs.tobytes())
                p["u_light_rgb"].write(rgbs.tobytes())
                p["u_shadows"].value = int(use_shadows)
                if use_shadows:
                    allm = np.stack(list(mats) + [np.eye(4)] * (_MAX_LIGHTS - k))
                    p["u_light_mat"].write(np.ascontiguousarray(
                        allm.transpose(0, 2, 1), dtype=np.float32).tobytes())
                    p["u_light_texel"].write(np.full(_MAX_LIGHTS, texel, np.float32).tobytes())
                    p["u_light_bias"].write(np.full(_MAX_LIGHTS, bias, np.float32).tobytes())
                    p["u_shadow_tile"].value = float(self.shadow_map_size)
                p["u_sh_irr"].write(st.sh_irr.astype(np.float32).tobytes())
                p["u_pf_r0"].value = float(self.prefilter_roughness[0])
                p["u_pf_r1"].value = float(self.prefilter_roughness[-1])
                p["u_pf_levels"].value = float(len(self.prefilter_roughness))
            if not uv_only:  # the full program: bind matching sampler types, even if unused
                self.shadow_tex.use(4)
                self.env_gl.prefilter_texture().use(5)  # a matching dummy before the first PBR frame
            if self.cull_back_faces:  # meshes are closed with CCW = outward (conventions.md)
                ctx.front_face = "ccw"
                ctx.enable(mgl.CULL_FACE)
            for i, h in enumerate(hands):
                self._set(p, "u_hand_id", float(i))
                if uv_only:
                    h.radiance_tex.use(3)
                else:
                    h.albedo_tex.use(0)
                    h.normal_tex.use(1)
                    h.rough_tex.use(2)
                (h.vao_uv if uv_only else h.vao).render()
        if self.msaa > 1:
            ctx.copy_framebuffer(tg["fbo_resolve" + sfx], fbo)

        # ---- tone mapping (into the host's target, or ours)
        ctx.disable(mgl.DEPTH_TEST | mgl.CULL_FACE)
        self.prog_tm["u_exposure"].value = float(2.0 ** exposure_ev)
        self.prog_tm["u_tonemap"].value = TONEMAPS[tonemap]
        self.prog_tm["u_transparent"].value = int(background == "transparent")
        self.prog_tm["u_env_bg"].value = int(background == "env" and not bg_pass)
        self.prog_tm["u_linear_out"].value = int(target is not None and out_format == "linear")
        tg["hdr"].use(0)
        if target is None:
            self._draw_tonemap(tg["fbo_out"], W, H)
        else:
            self._draw_tonemap_into(target, W, H)
        t3 = time.perf_counter()
        timings["draw"] = (t3 - t2) * 1e3

        # ---- readback (GL rows are bottom-up)
        out = {"rgb": None, "mask": None, "coverage": None, "hand_id": None, "depth": None}
        ncomp = 4 if background == "transparent" else 3
        if readback != "none":  # read only the channels returned: slicing RGB out of RGBA costs ~4 ms
            img = np.empty((H, W, ncomp), np.uint8)
            tg["fbo_out"].read_into(img, components=ncomp, alignment=1)
            out["rgb"] = np.ascontiguousarray(img[::-1])
        if readback == "all":
            self._read_aux(tg, out, H, W)
        if return_linear:
            hdr = np.frombuffer(tg["hdr"].read(alignment=1), np.float32).reshape(H, W, 4)[::-1]
            out["linear"] = np.ascontiguousarray(hdr[..., :3])
        t4 = time.perf_counter()
        timings["readback"] = (t4 - t3) * 1e3
        timings["total"] = (t4 - t0) * 1e3
        timings = in_stage_order(timings, COMPOSITE_STAGES)
        out["timings_ms"] = timings
        return out

    def _draw_tonemap(self, fbo, W, H):
        """The tone-mapping pass (uniforms and ``u_hdr`` already set) into ``fbo``, full W x H."""
        fbo.use()
        fbo.viewport = (0, 0, W, H)
        self.vao_tm.render(self._mgl.TRIANGLES, vertices=3)

    def _draw_tonemap_into(self, target, W, H):
        """The tone-mapping pass into a host target: a texture through a framebuffer made for this
        draw; a host framebuffer with its own viewport / scissor bookkeeping put back afterwards
        (the GL state itself is restored by the caller's ``GLStateGuard``)."""
        self.ctx.disable_direct(0x8DB9)  # GL_FRAMEBUFFER_SRGB: the pass writes sRGB-encoded values itself
        if isinstance(target, self._mgl.Texture):
            fbo = self.ctx.framebuffer([target])
            try:
                self._draw_tonemap(fbo, W, H)
            finally:
                fbo.release()
            return
        viewport, scissor = target.viewport, target.scissor
        target.scissor = None
        try:
            self._draw_tonemap(target, W, H)
        finally:
            target.viewport, target.scissor = viewport, scissor

    def target_size(self, target, name: str = "target") -> tuple:
        """(W, H) of a host ``target`` (a ``moderngl.Framebuffer`` or ``moderngl.Texture`` of this
        context); TypeError naming ``name`` for anything else."""
        mgl = self._mgl
        if not isinstance(target, (mgl.Framebuffer, mgl.Texture)):
            raise TypeError(f"{name} must be a moderngl.Framebuffer or moderngl.Texture, got {type(target).__name__}")
        if target.ctx is not self.ctx:
            raise ValueError(f"{name} belongs to another moderngl context than the engine's")
        return tuple(target.size)

    def target_format(self, target, size, name: str = "target") -> str:
        """What a host ``target`` of a ``size`` = (W, H) frame receives: 'srgb8' or 'linear'.

        * a ``moderngl.Texture``, or a ``moderngl.Framebuffer`` whose colour attachment 0 is a
          texture or renderbuffer, of 3 or 4 components; multisampled ones are fine (every sample
          gets the pixel's value -- the engine resolves its own MSAA before this pass);
        * dtype 'f1' (8-bit UNORM, also an sRGB internal format): ``'srgb8'`` -- exposure, tone
          mapping and the sRGB OETF, exactly the read-back ``rgb`` image (GL_FRAMEBUFFER_SRGB is
          disabled for the draw, so an sRGB-format target stores the encoded values as they are);
        * dtype 'f2' / 'f4' (half / float): ``'linear'`` -- scene-referred linear radiance times
          ``2^exposure_ev``, no tone mapping or encoding (= the read-back ``linear`` image at
          exposure 0);
        * a framebuffer moderngl knows no attachments of (a window's default framebuffer,
          ``ctx.screen`` / ``ctx.detect_framebuffer()``): ``'srgb8'``.

        Alpha is 1, or the hand coverage with ``background='transparent'`` (colour not
        premultiplied), in both formats. The whole target is drawn (viewport = its full size);
        its depth attachment is left untouched. ValueError naming ``name`` when its size is not
        ``size`` or its attachment cannot take the frame."""
        tsize = self.target_size(target, name)
        W, H = size
        if tsize != (W, H):
            raise ValueError(f"{name}: size {tsize[0]}x{tsize[1]} does not match the camera's {W}x{H}")
        if isinstance(target, self._mgl.Texture):
            image = target
        else:
            attachments = target.color_attachments
            if attachments is None:  # detected (window) framebuffer: 8-bit
                return "srgb8"
            if not attachments:
                raise ValueError(f"{name}: the framebuffer has no colour attachment")
            image = attachments[0]
        if getattr(image, "depth", False):
            raise ValueError(f"{name}: a depth texture cannot receive colour")
        if image.components < 3:
            raise ValueError(f"{name}: {image.components} components; the frame needs 3 (RGB) or 4 (RGBA)")
        formats = {"f1": "srgb8", "f2": "linear", "f4": "linear"}
        if image.dtype not in formats:
            raise ValueError(f"{name}: dtype {image.dtype!r} cannot receive the frame; use 'f1' (8-bit, tone "
                             f"mapped sRGB) or 'f2' / 'f4' (linear radiance)")
        return formats[image.dtype]

    @staticmethod
    def _read_aux(tg, out, H, W):
        """mask / coverage / hand_id / depth from the aux target (readback='all')."""
        aux = np.frombuffer(tg["aux"].read(alignment=1), np.float32).reshape(H, W, 4)[::-1]
        cov = np.clip(aux[..., 3], 0.0, 1.0)
        mask = cov >= 0.5
        hid = np.full((H, W), -1, np.int8)
        safe = np.where(cov > 0, aux[..., 3], 1.0)
        hid[mask] = (np.rint(aux[..., 0][mask] / safe[mask]) - 1).astype(np.int8)
        depth = np.full((H, W), np.inf, np.float32)
        cvd = cov > 0
        depth[cvd] = aux[..., 1][cvd] / safe[cvd]
        out["mask"], out["coverage"], out["hand_id"], out["depth"] = mask, np.ascontiguousarray(cov), hid, depth

    @_gl_current
    def tone_map(self, image, *, exposure_ev: float = 0.0, tonemap: str = "aces") -> np.ndarray:
        """A linear HDR image float32 ``[H, W, 3]`` -> uint8 ``[H, W, 3]`` sRGB through the frames'
        own tone-mapping pass (exposure ``2^exposure_ev``, ``tonemap``, sRGB OETF; no background).
        Rows keep their order (row 0 in, row 0 out): used for textures, e.g. the glTF export."""
        if tonemap not in TONEMAPS:
            raise ValueError(f"tonemap must be one of {sorted(TONEMAPS)}, got {tonemap!r}")
        a = _check_image("image", image)
        H, W = a.shape[:2]
        rgba = np.ones((H, W, 4), np.float32)
        rgba[..., :3] = a
        src = self.ctx.texture((W, H), 4, rgba.tobytes(), dtype="f4")
        dst = self.ctx.texture((W, H), 4)
        fbo = self.ctx.framebuffer([dst])
        try:
            self.ctx.disable(self._mgl.BLEND | self._mgl.CULL_FACE | self._mgl.RASTERIZER_DISCARD)
            for name, value in (("u_exposure", float(2.0 ** exposure_ev)), ("u_tonemap", TONEMAPS[tonemap]),
                                ("u_transparent", 0), ("u_env_bg", 0), ("u_linear_out", 0)):
                self.prog_tm[name].value = value
            src.use(0)
            self._draw_tonemap(fbo, W, H)
            out = np.empty((H, W, 3), np.uint8)
            fbo.read_into(out, components=3, alignment=1)
        finally:
            for obj in (fbo, dst, src):
                obj.release()
        return out

    @property
    def output_texture(self):
        """The RGBA8 moderngl texture of the last render (GL orientation: row 0 = bottom), for a
        viewer that shares the context and wants to draw it without the numpy readback."""
        return None if self._targets is None else self._targets["out"]

    @staticmethod
    def _set(prog, name, value):
        if name in prog:
            prog[name].value = value
