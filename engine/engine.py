"""The run-time engine: posed hands + environment + camera -> image, timed stage by stage.

    from relit_hands import Engine, EnvironmentMap, scene_preset
    engine = Engine()                                   # shipped hand asset, headless EGL
    frame = engine.render(scene_preset("clasp"), EnvironmentMap.from_name_or_path("studio"))
    frame.image        # uint8 [H, W, 3], tone mapped sRGB
    frame.timings_ms   # {'skinning': ..., 'composite': ..., 'total': ...}

Stages (each owned by one module): skinning (:mod:`.hand_model`), proxy ray casting
(:mod:`.raycast`), per-vertex lighting features (:mod:`.features`), UV feature maps
(:mod:`.uv_maps`), compositing with the physically based baseline or per-hand UV radiance
textures (:mod:`.compositor`). The ray-casting backend is chosen once, when the Engine is made.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .camera import Camera
from . import backends
from . import raycast as raycast_module
from .compositing import to_host, to_host_together
from .compositor import Compositor
from .environment import EnvironmentMap
from .features import lighting_features
from .hand_model import HandAsset, HandModel, asset_mismatch, default_asset_path, vertex_normals
from .image_io import read_png
from .scene import Scene
from .stages import PBR_STAGES, StageTimer, StageTimings
from .key_lights import add_key_light_maps, key_light_indices, key_light_maps, texel_key_lights
from .translucency import mean_free_paths_of, proxy_transmittance
from .uv_maps import UVRasterizer

SHADINGS = ("pbr", "uv_texture", "albedo", "normal", "uv")


@dataclass
class Frame:
    """One rendered frame.

    image: uint8 [H, W, 3] (or [H, W, 4] with a transparent background), sRGB, tone mapped.
    linear: float32 [H, W, 3] linear HDR radiance before exposure and tone mapping (if asked).
    mask: bool [H, W] hand coverage; hand_id: int8 [H, W] (-1 background, else index into
    ``sides``); timings_ms: per-stage milliseconds (:class:`~relit_hands.stages.StageTimings`).
    With ``readback='rgb'`` mask and hand_id are None, with ``readback='none'`` (and when drawn
    into a host target) image is None too.
    vertices: {side: [V, 3] float32 tensor} the posed render vertices (metres, world, on the
    engine's device) the frame was drawn with -- reuse them instead of skinning again.
    composite_ms: the GL compositor's parts of this view's composite (env_prepare, shadows, draw,
    readback, total); device_image: uint8 [H, W, 3] tensor on the CUDA device (the nvdiffrast
    compositor), else None.
    """

    image: np.ndarray
    mask: np.ndarray
    hand_id: np.ndarray
    camera: Camera
    sides: list
    timings_ms: dict = field(default_factory=dict)
    linear: np.ndarray | None = None
    vertices: dict | None = None
    composite_ms: dict = field(default_factory=dict)
    device_image: "torch.Tensor | None" = None


@dataclass
class FeatureFrame:
    """The student's input for one frame (hands in ``sides`` order, as in the scene).

    maps: float32 [H, C, R, R] UV feature maps (zeros outside the atlas); mask: bool [R, R]
    texels covered by the atlas (before seam dilation); energy: [3] RGB total light energy the
    features were divided by; names: C channel names; visibility: bool [H, Vp, N] per proxy
    vertex and light; light_dirs / light_rgb: [N, 3] world directions / irradiance;
    timings_ms: per stage.
    """

    maps: torch.Tensor
    mask: np.ndarray
    energy: torch.Tensor
    names: list
    sides: list
    visibility: torch.Tensor
    light_dirs: np.ndarray
    light_rgb: np.ndarray
    timings_ms: dict = field(default_factory=dict)


def framing_camera(points, width=1280, height=720, direction=(0.0, 0.25, 1.0), fov_y_deg=30.0,
                   margin=1.12, up=(0.0, 1.0, 0.0)) -> Camera:
    """A look-at camera from ``direction`` (world, towards the camera) that frames ``points``
    [N, 3] (metres, world): their bounding sphere fills the smaller field of view x 1/margin."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    lo, hi = p.min(0), p.max(0)
    center = (lo + hi) / 2
    radius = float(np.linalg.norm(p - center, axis=1).max())
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    fov_y = np.radians(fov_y_deg)
    fov_x = 2 * np.arctan(np.tan(fov_y / 2) * width / height)
    half = min(fov_x, fov_y) / 2
    dist = radius * margin / np.sin(half)
    return Camera.look_at(center + d * dist, center, up=up, fov_y_deg=fov_y_deg, width=width, height=height)


def _check_frame_args(width, height, exposure_ev, check_size: bool) -> None:
    """API boundary (issue #18): a finite exposure within +-30 EV and, when the engine frames the
    camera itself, an integer image size of 16..8192 per side (ArgumentError, a ValueError)."""
    from .validation import check_number

    check_number(exposure_ev, "exposure_ev", -30.0, 30.0)
    if check_size:
        check_number(width, "width", 16, 8192, integer=True)
        check_number(height, "height", 16, 8192, integer=True)


def load_asset_textures(asset_dir) -> dict:
    """albedo / normal_map / roughness uint8 [R, R, 3] from an asset folder."""
    asset_dir = Path(asset_dir)
    return {
        "albedo": read_png(asset_dir / "albedo.png")[..., :3],
        "normal_map": read_png(asset_dir / "normal.png")[..., :3],
        "roughness": read_png(asset_dir / "roughness.png")[..., :3],
    }


class Engine:
    """Renders one or two posed hands under an HDR environment: one pipeline, one device.

    ``Engine(asset=None, *, ctx=None, shadow_map_size=1024, device='auto', raycast='auto',
    compositor='auto')``: ``asset`` is a path to a right-hand npz (textures beside it), an asset
    folder holding ``right_hand.npz`` and its textures, or None for the shipped asset; ``ctx`` an existing moderngl context (the viewer's), else a headless EGL
    one is created when the GL compositor is first needed. ``device``: 'auto' (CUDA when usable,
    else the CPU), 'cpu' or 'cuda' -- every stage's tensors live there, from skinning to the
    student's textures. ``raycast`` / ``compositor`` (and ``render_student``'s ``inference``) name a
    backend or 'auto'; :mod:`.backends` resolves each once for the device and says why a named one
    cannot serve it. The PBR baseline is always drawn by the GL compositor.

    Stages of a student frame (:meth:`render_student`), each owned by one module: skinning both
    hands (:mod:`.hand_model`) -> environment lights (:mod:`.environment`) -> proxy visibility
    (:mod:`.raycast`) -> lighting features (:mod:`.features`) -> UV maps (:mod:`.uv_maps`) -> student
    (:mod:`.inference`) -> composite (:mod:`.compositing`: :mod:`.compositor` GL or
    :mod:`.compositor_nvdiffrast`), cameras as a batch (mono, stereo).

    Inside a host application (a VR frame loop owning the context and the swapchain images)::

        engine = Engine(ctx=host_ctx)
        engine.render(scene, env, camera, target=eye_fbo)                       # PBR, one view
        engine.render_student(scene, env, [left_cam, right_cam], targets=[left_tex, right_tex])

    draws straight into the host's framebuffers / textures (swapchain images wrapped with
    ``host_ctx.external_texture``), with no read-back to the CPU: 8-bit targets get the tone-mapped
    sRGB frame, float targets linear radiance (:meth:`Compositor.target_format`); the host's
    framebuffer binding, viewport, scissor, enable flags, blend / depth function and write masks are
    restored after every call (:mod:`.gl_state`).
    """

    def __init__(self, asset=None, *, ctx=None, shadow_map_size: int = 1024, device="auto",
                 raycast: str = "auto", compositor: str = "auto"):
        path = Path(asset) if asset is not None else default_asset_path()
        if path.is_dir():  # an asset folder (a shipped one, make-phone-video's, personalize's)
            path = path / "right_hand.npz"
        self.asset = HandAsset.load(path)
        self.device = backends.resolve_device(device)
        self.models = {side: HandModel(self.asset, side, device=self.device) for side in ("right", "left")}
        self._asset_textures = load_asset_textures(path.parent)
        self._ctx, self._shadow_map_size = ctx, shadow_map_size
        self._gl = None
        self.compositor_backend = backends.resolve("compositor", compositor, self.device)
        if self.compositor_backend == "gl":
            self.hand_compositor = self.compositor
        else:
            from .compositor_nvdiffrast import NvdiffrastCompositor

            self.hand_compositor = NvdiffrastCompositor(self.device)
            self.hand_compositor.attach_hands(self.models, self._asset_textures)
        self._proxy_faces = {side: m.proxy_faces for side, m in self.models.items()}
        self.raycast_backend = backends.resolve("raycast", raycast, self.device)
        self.raycaster = raycast_module.get_backend(self.raycast_backend)
        self._uv = {}
        self._student_backends = {}

    @property
    def compositor(self) -> Compositor:
        """The GL compositor (the PBR baseline's, and the student's with ``compositor='gl'``),
        made on first use with the hands attached (:attr:`drawables`)."""
        if self._gl is None:
            self._gl = Compositor(self._ctx, shadow_map_size=self._shadow_map_size)
            self._gl.attach_hands(self.models, self._asset_textures)
        return self._gl

    @property
    def drawables(self) -> dict:
        """{side: HandDrawable} of the GL compositor."""
        return self.compositor.hand_drawables

    def uv_rasterizer(self, resolution: int) -> UVRasterizer:
        """Texel -> proxy (triangle, barycentrics) for the shared atlas at ``resolution`` (cached)."""
        if resolution not in self._uv:
            a = self.asset  # the right hand; the left hand is its mirror with the same layout
            self._uv[resolution] = UVRasterizer(a.proxy_uvs, a.proxy_uv_faces, resolution, faces=a.proxy_faces)
        return self._uv[resolution]

    def vertex_features(self, scene: Scene, env: EnvironmentMap, view_origin, *, n_lights: int = 64,
                        sources=("vis",), posed: dict | None = None, translucency=None, timer=None,
                        key_lights: int = 0, key_resolution: int | None = None, key_edge_samples: int = 3,
                        **feature_kw) -> dict:
        """Per-proxy-vertex lighting features (the part of :meth:`lighting_features` before the UV
        gather) for one or both ``sources``: 'vis' (visibility ray cast against both hands'
        proxies) and 'novis' (visibility = 1 for every vertex and light: no ray casting).

        ``translucency``: mean free paths (metres, e.g. ``translucency.DEFAULT_MEAN_FREE_PATHS``)
        adds the ``transmit_*`` channels (:mod:`.translucency`, a second ray cast through the
        hands); 'novis' casts no rays, so its ``transmit_*`` channels are 0.

        ``key_lights`` K > 0 (with ``key_resolution`` R): the K brightest lights' part of the
        'vis' diffuse_vis / spec_* channels is cast per UV texel instead of per vertex
        (:mod:`.key_lights`): it is left out of ``out['vis']`` and returned as ``out['key']``
        (:func:`~relit_hands.key_lights.texel_key_lights`); :meth:`feature_maps` adds it back
        after the gather; along their shadow edges each texel's visibility is the fraction of
        ``key_edge_samples`` squared rays that reach the light (1: one ray decides, a staircase
        edge; :func:`~relit_hands.key_lights.key_shadow_coverage`). 'novis' is unaffected (nothing
        to sharpen without visibility).
        ``posed`` optionally gives {side: HandOutput} with proxy vertices already skinned;
        ``timer`` a :class:`~relit_hands.stages.StageTimer` to mark the stages on (else one of its own).
        Returns ``{'vis': [H,Vp,C], 'novis': [H,Vp,C] (those asked for), 'energy': [3], 'names':
        [C], 'visibility': bool [H,Vp,N] or None, 'light_dirs', 'light_rgb', 'timings_ms'}``, the
        tensors on the engine's device.
        """
        own = timer is None
        timer = StageTimer(self.device) if own else timer
        sides = [h.side for h in scene.hands]
        with torch.no_grad():
            if posed is None:
                posed = self.pose(scene, meshes=("proxy",))
            proxies = torch.stack([posed[s].proxy_vertices[0] for s in sides])
        timer.mark("skinning")
        faces = [self._proxy_faces[s] for s in sides]
        normals = torch.stack([vertex_normals(proxies[i], faces[i]) for i in range(len(sides))])
        dirs, rgb = env.directional_lights(n_lights)
        timer.mark("lights")
        out = {"light_dirs": dirs, "light_rgb": rgb, "visibility": None}
        vis = trans = None
        key_idx = None
        if key_lights and "vis" in sources:
            if not key_resolution:
                raise ValueError("key_lights needs key_resolution (the UV resolution of the texel rays)")
            key_idx = key_light_indices(rgb, key_lights)
        if "vis" in sources:
            vis = raycast_module.proxy_visibility(proxies, normals, faces, dirs, backend=self.raycaster)
            out["visibility"] = vis
            if translucency:
                trans = proxy_transmittance(proxies, normals, faces, dirs, mean_free_paths=translucency,
                                            backend=self.raycaster, scene_built=True)["transmittance"]
        if vis is not None:
            timer.mark("raycast")
        else:
            timer.skipped("raycast")  # 'novis' alone casts no rays
        origin = np.asarray(view_origin, np.float64)
        dev = proxies.device
        for src in sources:
            if src not in ("vis", "novis"):
                raise ValueError(f"feature source must be 'vis' or 'novis', got {src!r}")
            v = vis if src == "vis" else torch.ones(proxies.shape[0], proxies.shape[1], len(dirs), dtype=torch.bool,
                                                    device=dev)
            if translucency:
                T = trans if src == "vis" else torch.zeros(*v.shape, len(translucency), device=dev)
                feature_kw.update(transmittance=T, mean_free_paths=tuple(translucency))
            excl = key_idx if src == "vis" else None
            feats, energy, names = lighting_features(proxies, normals, v, dirs, rgb, origin, exclude_lights=excl,
                                                     **feature_kw)
            out[src] = feats
            out["energy"], out["names"] = torch.as_tensor(energy, device=dev), list(names)
        if key_idx is not None:
            out["key"] = texel_key_lights(self.raycaster, self.uv_rasterizer(int(key_resolution)), proxies, normals,
                                          self.asset.proxy_faces, dirs, rgb, out["energy"], len(key_idx),
                                          indices=key_idx, edge_samples=key_edge_samples)
            out["key"]["roughness"] = tuple(feature_kw.get("roughness", (0.2, 0.4, 0.7)))
            out["key"]["view_origin"] = origin
            out["key"]["proxy_vertices"], out["key"]["proxy_normals"] = proxies, normals
        timer.mark("features")
        out["timings_ms"] = timer.result() if own else None
        return out

    def feature_maps(self, vf: dict, source: str, resolution: int) -> torch.Tensor:
        """UV feature maps [H,C,R,R] of :meth:`vertex_features`' ``vf[source]``: the barycentric
        gather, plus the key lights' per-texel part when ``vf`` has one (source 'vis')."""
        uv = self.uv_rasterizer(resolution)
        # the left proxy's faces are the right's with two columns swapped (mirroring); the UV
        # lookup's barycentrics follow the right hand's corner order, so gather with those faces
        maps = uv.gather(vf[source], self.asset.proxy_faces)
        key = vf.get("key")
        if key is not None and source == "vis":
            if key["points"].shape[-1] != resolution:
                raise ValueError(f"key lights were cast at R={key['points'].shape[-1]}, maps asked at R={resolution}")
            km = key_light_maps(key["points"], key["normals"], key["visibility"], key["dirs"], key["rgb_n"],
                                key["view_origin"], key["roughness"])
            maps = add_key_light_maps(maps, vf["names"], km, key["roughness"])
        return maps

    def lighting_features(self, scene: Scene, env: EnvironmentMap, view_origin, *, n_lights: int = 64,
                          resolution: int = 256, **feature_kw) -> FeatureFrame:
        """Skin the proxies, ray cast visibility of ``n_lights`` environment lights against both
        hands, compute per-vertex features seen from ``view_origin`` [3] (world; for stereo the
        midpoint of the eyes) and gather them into UV maps of ``resolution``."""
        timer = StageTimer(self.device)
        if feature_kw.get("key_lights"):
            feature_kw.setdefault("key_resolution", resolution)
        vf = self.vertex_features(scene, env, view_origin, n_lights=n_lights, timer=timer, **feature_kw)
        uv = self.uv_rasterizer(resolution)  # FeatureFrame carries its mask
        maps = self.feature_maps(vf, "vis", resolution)
        timer.mark("uv_gather")
        return FeatureFrame(maps=maps, mask=uv.mask, energy=vf["energy"], names=vf["names"],
                            sides=[h.side for h in scene.hands], visibility=vf["visibility"],
                            light_dirs=vf["light_dirs"], light_rgb=vf["light_rgb"], timings_ms=timer.result())

    # ---------------------------------------------------------------------------------
    def pose(self, scene: Scene, meshes=("render",)) -> dict:
        """Skin every hand of ``scene``: {side: HandOutput} (batch of 1, torch, world metres), each
        with its :attr:`HandState.shape` (per-bone scales; None = the asset's proportions)."""
        out = {}
        with torch.no_grad():
            for h in scene.hands:
                out[h.side] = self.models[h.side](h.pose, h.global_orient, h.transl,
                                                  shape=getattr(h, "shape", None), meshes=meshes)
        return out

    def default_camera(self, scene: Scene, width=1280, height=720, **kw) -> Camera:
        """A camera from the front (+Z), slightly above, framing all hands of ``scene``."""
        posed = self.pose(scene)
        pts = torch.cat([o.render_vertices[0] for o in posed.values()]).numpy()
        kw.setdefault("direction", scene.view_direction)
        return framing_camera(pts, width, height, **kw)

    def render(self, scene: Scene, env: EnvironmentMap | None, camera: Camera | None = None, *,
               shading: str = "pbr", radiance_textures: dict | None = None, exposure_ev: float = 0.0,
               tonemap: str = "aces", background: str = "env", shadows: bool = True,
               return_linear: bool = False, width: int = 1280, height: int = 720,
               readback: str | None = None, target=None) -> Frame:
        """Render ``scene``. ``camera`` None frames the hands (``width`` x ``height``, or the
        size of ``target``).

        ``readback`` (see :meth:`Compositor.render`): 'all' (the default without ``target``), 'rgb'
        (``mask`` / ``hand_id`` are None) or 'none' (``image`` None too; the frame stays on the GPU
        in ``compositor.output_texture``; the default with ``target``).

        ``target``: draw the frame into the host application's own ``moderngl.Framebuffer`` or
        ``moderngl.Texture`` (the Engine must have been made with the host's context,
        ``Engine(ctx=host_ctx)``) instead of reading it back: 8-bit targets get the tone-mapped
        sRGB image, float targets linear radiance (:meth:`Compositor.target_format`); its size
        must be the camera's; the returned Frame has no images; the host's GL state is left as it
        was (:mod:`.gl_state`).

        ``shading='uv_texture'`` draws ``radiance_textures`` {side: float32 [R, R, 3] linear HDR}
        directly (the neural student's output); 'pbr' is the physically based baseline.
        """
        if shading not in SHADINGS:
            raise ValueError(f"shading must be one of {SHADINGS}, got {shading!r}")
        _check_frame_args(width, height, exposure_ev, camera is None and target is None)
        timer = StageTimer(self.device)
        posed = self.pose(scene)
        timer.mark("skinning")
        sides = [h.side for h in scene.hands]
        if shading == "uv_texture":
            missing = [s for s in sides if not radiance_textures or s not in radiance_textures]
            if missing:
                raise ValueError(f"shading='uv_texture' needs radiance_textures[{missing[0]!r}]")
        gl = self.compositor
        vertices = {s: posed[s].render_vertices[0] for s in sides}
        gl.upload_hands(sides, self._host_vertices(vertices, sides),
                        [radiance_textures[s] for s in sides] if shading == "uv_texture" else None)
        timer.mark("normals_upload")
        if camera is None:
            if target is not None:
                width, height = gl.target_size(target)
            camera = self._framing(vertices, width, height, scene.view_direction)
        out = gl.render([self.drawables[s] for s in sides], env, camera, shading=shading,
                        exposure_ev=exposure_ev, tonemap=tonemap, background=background,
                        shadows=shadows, return_linear=return_linear, readback=readback, target=target)
        timer.mark("composite")
        return Frame(image=out["rgb"], mask=out["mask"], hand_id=out["hand_id"], camera=camera, sides=sides,
                     timings_ms=timer.result(PBR_STAGES), linear=out.get("linear"), vertices=vertices,
                     composite_ms=out["timings_ms"])

    # ---------------------------------------------------------------------------------
    # Shared by the PBR / UV-texture path and the student path

    @staticmethod
    def _host_vertices(vertices: dict, sides: list) -> dict:
        """{side: [V, 3]} on the host for the GL compositor: as they are on a CPU engine, one
        counted copy (:func:`~relit_hands.compositing.to_host`) from a CUDA one."""
        if all(vertices[s].device.type == "cpu" for s in sides):
            return vertices
        return dict(zip(sides, to_host_together([vertices[s] for s in sides])))

    @staticmethod
    def _framing(vertices: dict, width: int, height: int, direction) -> Camera:
        pts = to_host(torch.cat([v.detach().float() for v in vertices.values()])).numpy()
        return framing_camera(pts, width, height, direction=direction)

    # ---------------------------------------------------------------------------------
    # Neural student path
    def student_backend(self, student=None, *, inference: str = "auto"):
        """Resolve ``student`` to an :class:`~relit_hands.inference.InferenceBackend` on the engine's
        device (cached).

        None: the shipped default model (``relit_hands/models/student/student.safetensors``) through
        ``inference`` (a backend name or 'auto', resolved by :mod:`.backends`); a
        :class:`~relit_hands.student.StudentLoadError` naming the file if it is missing or unreadable
        (render the PBR baseline with :meth:`render` instead). A path: that weights file. An
        ``InferenceBackend``: used as is. A :class:`~relit_hands.student.StudentNet`: wrapped in the
        torch backend."""
        from .inference import InferenceBackend, TorchBackend, make_backend
        from .hand_model import asset_reference
        from .student import StudentLoadError, StudentNet, default_student_path, load_student, read_student_meta

        if isinstance(student, InferenceBackend):
            return student
        if isinstance(student, StudentNet):
            return TorchBackend(student, device=str(self.device))
        if student is None:
            student = default_student_path(asset=self.asset)
            if not student.is_file():
                raise StudentLoadError(f"{student}: no trained default student installed (train one with "
                                       f"`relit-hands train-student ... --install-default`, README: Student); "
                                       f"the PBR baseline needs none (Engine.render, --shading pbr)")
        kind = backends.resolve("inference", inference, self.device)
        key = (str(Path(student).resolve()), kind)
        if key not in self._student_backends:
            ref = read_student_meta(student).get("asset")
            wrong = asset_mismatch(ref if isinstance(ref, str) else None, self.asset, same_layout=True)
            if wrong:
                raise StudentLoadError(f"{student}: this student was {wrong}")
            mine = asset_reference(self.asset.source or None)
            if (ref or asset_reference(None)) != mine:
                # another asset on the model's layout (a personalised hand): its albedo replaces the
                # one the student was trained with (the albedo prior multiplies every output)
                model, meta = load_student(student)
                if model.albedo is not None:
                    model.set_albedo(self.asset.albedo_map(model.resolution), init_bias=False)
                    meta = dict(meta, albedo_of=mine)
                be = make_backend(kind, model=model, meta=meta, device=self.device.type)
            else:
                be = make_backend(kind, student, device=self.device.type)
            self._student_backends[key] = be
        return self._student_backends[key]

    def render_student(self, scene: Scene, env: EnvironmentMap, cameras=None, *, student=None,
                       inference: str = "auto", n_lights: int = 64, resolution: int | None = None,
                       exposure_ev: float = 0.0, tonemap: str = "aces", background: str = "env",
                       return_linear: bool = False, width: int = 1280, height: int = 720,
                       readback: str | None = None, targets=None, seam_stitch: bool = True) -> "StudentFrame":
        """Render ``scene`` with the neural student: ONE feature + student pass, then the
        compositor draws every camera (``Engine(compositor=...)``: GL or nvdiffrast).

        ``cameras``: a :class:`Camera`, a list of one or two (stereo: left eye, right eye), or None
        (one framing camera of ``width`` x ``height``). The lighting features are computed for
        the view origin = the camera centre, or the midpoint of the two eye centres for stereo
        (see :mod:`.features` on why one texture serves both eyes), so both eyes see the same
        textures from different viewpoints. ``student``: see :meth:`student_backend` (``inference``
        names its backend); ``resolution`` (UV R) defaults to the model's and must match it. ``env``
        carries its rotation (:meth:`EnvironmentMap.rotate`).

        Returns a :class:`StudentFrame`: ``frames`` (one :class:`Frame` per camera, each with the
        posed vertices), ``textures`` {side: float32 [R, R, 3] linear HDR radiance; numpy on a CPU
        engine, a device tensor on CUDA}, ``timings_ms`` per stage (:class:`~relit_hands.stages.StageTimings`:
        skinning, lights, raycast, features, uv_gather, student, textures, upload (GL only),
        composite = all views, then composite_per_view and total) and the backend's name.
        ``readback``: as in :meth:`render` ('rgb' skips the per-view mask / hand id / depth read-back,
        which the bench does).

        ``targets``: draw each view into the host's own framebuffer / texture instead of reading it
        back (as ``target`` in :meth:`render`; GL compositor): one per camera (stereo: [left eye, right
        eye]), or one target for a single camera; with ``cameras`` None the framing camera takes the
        first target's size. The targets are checked (type, size, dtype: ValueError naming
        ``targets[i]``) before the feature and student passes run.

        ``seam_stitch``: make the student's textures continuous across the atlas's UV seams before
        compositing (:func:`.seam_stitch.stitch_student_textures`; the operator is built once per layout
        and R, about a second; its per-frame cost is counted in the 'textures' stage, and ``textures``
        are the stitched ones); False draws the raw prediction.

        Data stays on the engine's device from skinning to the textures; the GL compositor copies
        textures + vertices to the host once, the nvdiffrast compositor not at all
        (:func:`~relit_hands.compositing.to_host`).
        """
        from .student import environment_code, scene_centre, select_channels, variant_feature_source

        _check_frame_args(width, height, exposure_ev, cameras is None and targets is None)
        timer = StageTimer(self.device)
        be = self.student_backend(student, inference=inference)
        R = be.resolution
        if resolution is not None and int(resolution) != R:
            raise ValueError(f"resolution={resolution} but the student was trained at R={R}")
        sides = [h.side for h in scene.hands]
        comp = self.hand_compositor
        posed = self.pose(scene, meshes=("render", "proxy"))  # with each hand's shape
        vertices = {s: posed[s].render_vertices[0] for s in sides}
        if targets is not None and not isinstance(targets, (list, tuple)):
            targets = [targets]
        if cameras is None:
            if targets:
                width, height = self.compositor.target_size(targets[0], "targets[0]")
            cameras = [self._framing(vertices, width, height, scene.view_direction)]
        elif isinstance(cameras, Camera):
            cameras = [cameras]
        cameras = list(cameras)
        if not 1 <= len(cameras) <= 2 or not all(isinstance(c, Camera) for c in cameras):
            raise ValueError("cameras must be a Camera or a list of one or two Cameras (stereo)")
        if targets is not None:
            if len(targets) != len(cameras):
                raise ValueError(f"targets: one per camera, got {len(targets)} for {len(cameras)} camera(s)")
            if comp is not self.compositor:
                raise ValueError("targets are GL framebuffers / textures: use Engine(compositor='gl')")
            for i, (tgt, cam) in enumerate(zip(targets, cameras)):
                comp.target_format(tgt, (cam.width, cam.height), f"targets[{i}]")
        origin = np.mean([c.center for c in cameras], 0)
        # features (per proxy vertex) -> UV maps
        source = variant_feature_source(be.variant)
        vf = self.vertex_features(scene, env, origin, n_lights=n_lights, sources=(source,), posed=posed,
                                  translucency=mean_free_paths_of(be.feature_names or ()), timer=timer,
                                  key_lights=be.key_lights, key_resolution=R)
        maps = self.feature_maps(vf, source, R)
        maps = select_channels(maps, vf["names"], be.feature_names or vf["names"])
        code = None
        if be.needs_code:  # host: SH of the map + energy (the sum of the lights, host numbers) -> 30 floats
            e_host = np.asarray(vf["light_rgb"], np.float64).sum(0)
            code = torch.from_numpy(environment_code(env.sh_coefficients(), e_host, origin, scene_centre(scene)))
            code = code[None].expand(len(sides), -1).to(self.device)
        timer.mark("uv_gather")
        out = be.run(maps, code)
        timer.mark("student")
        rad = (out.float() * vf["energy"].to(out.device).reshape(1, 3, 1, 1)).permute(0, 2, 3, 1).contiguous()  # [H,R,R,3]
        if seam_stitch:  # continuous across the UV seams (in shading space: radiance / the asset's albedo)
            from .seam_stitch import stitch_student_textures
            rad = stitch_student_textures(rad, self.asset)
        timer.mark("textures")
        views = comp.composite_textures(sides, vertices, rad, env, cameras, exposure_ev=exposure_ev, tonemap=tonemap,
                                        background=background, return_linear=return_linear, readback=readback,
                                        targets=targets, timer=timer)
        per_view = [v["timings_ms"].get("total") for v in views]   # GL: each view's own wall time
        t = timer.result(comp.student_stages, extra={"composite_per_view": per_view})
        if None in per_view:  # nvdiffrast draws the views in one batch
            t["composite_per_view"] = [t["composite"] / len(views)] * len(views)
        frames = [Frame(image=v["rgb"], mask=v["mask"], hand_id=v["hand_id"], camera=cam, sides=sides,
                        timings_ms={"composite": ms}, linear=v.get("linear"), vertices=vertices,
                        composite_ms=v["timings_ms"], device_image=v.get("device_image"))
                  for v, cam, ms in zip(views, cameras, t["composite_per_view"])]
        textures = {s: (rad[i].contiguous().numpy() if rad.device.type == "cpu" else rad[i]) for i, s in enumerate(sides)}
        return StudentFrame(frames=frames, textures=textures, timings_ms=t, backend=be.name, variant=be.variant,
                            view_origin=origin, energy=vf["energy"].numpy() if rad.device.type == "cpu" else vf["energy"],
                            resolution=R)

    def release(self):
        if self._gl is not None:
            self._gl.release()
            self._gl = None


@dataclass
class StudentFrame:
    """What :meth:`Engine.render_student` returns.

    frames: one :class:`Frame` per camera (stereo: [left eye, right eye]); textures: {side:
    float32 [R, R, 3]} linear HDR radiance (shared by every view); timings_ms: per stage;
    backend: the inference backend's name; variant: the student's variant; view_origin [3]: where
    the features were computed from; energy [3] (what the student's output was multiplied by);
    resolution R. ``textures`` and ``energy`` are numpy on a CPU engine and tensors on the CUDA
    device otherwise (nothing is copied to the host for them)."""

    frames: list
    textures: dict
    timings_ms: dict
    backend: str
    variant: str
    view_origin: np.ndarray
    energy: np.ndarray
    resolution: int

    @property
    def image(self) -> np.ndarray:
        """The first view's image (mono) -- see :meth:`side_by_side` for stereo."""
        return self.frames[0].image

    def as_frame(self, view: int = 0) -> "Frame":
        """View ``view``'s :class:`Frame` carrying the whole pass's per-stage timings (scalars only:
        the per-view composite list is dropped), for callers that treat it like :meth:`Engine.render`'s."""
        t = {k: v for k, v in self.timings_ms.items() if not isinstance(v, list)}
        return replace(self.frames[view], timings_ms=t)

    def side_by_side(self) -> np.ndarray:
        """The views next to each other (left eye | right eye), as a VR compositor takes them."""
        return np.concatenate([f.image for f in self.frames], axis=1)
