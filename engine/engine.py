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

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .camera import Camera
from . import raycast
from .compositor import Compositor
from .environment import EnvironmentMap
from .features import lighting_features
from .hand_model import HandAsset, HandModel, asset_mismatch, default_asset_path, vertex_normals
from .image_io import read_png
from .scene import Scene
from .stages import PBR_STAGES, STUDENT_STAGES, in_stage_order
from .translucency import mean_free_paths_of, proxy_transmittance
from .uv_maps import UVRasterizer

SHADINGS = ("pbr", "uv_texture", "albedo", "normal", "uv")


@dataclass
class Frame:
    """One rendered frame.

    image: uint8 [H, W, 3] (or [H, W, 4] with a transparent background), sRGB, tone mapped.
    linear: float32 [H, W, 3] linear HDR radiance before exposure and tone mapping (if asked).
    mask: bool [H, W] hand coverage; hand_id: int8 [H, W] (-1 background, else index into
    ``sides``); timings_ms: per-stage milliseconds. With ``readback='rgb'`` mask and hand_id
    are None, with ``readback='none'`` (and when drawn into a host target) image is None too.
    """

    image: np.ndarray
    mask: np.ndarray
    hand_id: np.ndarray
    camera: Camera
    sides: list
    timings_ms: dict = field(default_factory=dict)
    linear: np.ndarray | None = None


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
    """Renders one or two posed hands under an HDR environment.

    ``Engine(asset=None, *, ctx=None, shadow_map_size=1024, device='cpu')``: ``asset`` is a path
    to a right-hand npz (textures beside it) or None for the shipped asset; ``ctx`` an existing
    moderngl context (the viewer's), else a headless EGL one is created.

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

    def __init__(self, asset=None, *, ctx=None, shadow_map_size: int = 1024, device="cpu",
                 raycast_backend: str = "auto"):
        path = Path(asset) if asset is not None else default_asset_path()
        self.asset = HandAsset.load(path)
        self.device = torch.device(device)
        self.models = {side: HandModel(self.asset, side, device=self.device) for side in ("right", "left")}
        self.compositor = Compositor(ctx, shadow_map_size=shadow_map_size)
        tex = load_asset_textures(path.parent)
        self.drawables = {}
        for side, model in self.models.items():
            a = model.asset
            self.drawables[side] = self.compositor.add_hand(a.render_vertices, a.render_faces, a.render_uvs,
                                                            a.render_uv_faces, name=side, **tex)
        self._proxy_faces = {side: m.proxy_faces for side, m in self.models.items()}
        self.raycaster = raycast.get_backend(raycast_backend)
        self.raycast_backend = self.raycaster.name
        self._uv = {}

    def uv_rasterizer(self, resolution: int) -> UVRasterizer:
        """Texel -> proxy (triangle, barycentrics) for the shared atlas at ``resolution`` (cached)."""
        if resolution not in self._uv:
            a = self.asset  # the right hand; the left hand is its mirror with the same layout
            self._uv[resolution] = UVRasterizer(a.proxy_uvs, a.proxy_uv_faces, resolution, faces=a.proxy_faces)
        return self._uv[resolution]

    def vertex_features(self, scene: Scene, env: EnvironmentMap, view_origin, *, n_lights: int = 64,
                        sources=("vis",), posed: dict | None = None, translucency=None, **feature_kw) -> dict:
        """Per-proxy-vertex lighting features (the part of :meth:`lighting_features` before the UV
        gather) for one or both ``sources``: 'vis' (visibility ray cast against both hands'
        proxies) and 'novis' (visibility = 1 for every vertex and light: no ray casting).

        ``translucency``: mean free paths (metres, e.g. ``translucency.DEFAULT_MEAN_FREE_PATHS``)
        adds the ``transmit_*`` channels (:mod:`.translucency`, a second ray cast through the
        hands); 'novis' casts no rays, so its ``transmit_*`` channels are 0.

        ``posed`` optionally gives {side: HandOutput} with proxy vertices already skinned.
        Returns ``{'vis': [H,Vp,C], 'novis': [H,Vp,C] (those asked for), 'energy': [3], 'names':
        [C], 'visibility': bool [H,Vp,N] or None, 'light_dirs', 'light_rgb', 'timings_ms'}``.
        """
        t = {}
        t0 = time.perf_counter()
        sides = [h.side for h in scene.hands]
        with torch.no_grad():
            if posed is None:
                posed = self.pose(scene, meshes=("proxy",))
            proxies = torch.stack([posed[s].proxy_vertices[0] for s in sides])
        t1 = time.perf_counter()
        t["skinning_proxy"] = (t1 - t0) * 1e3
        faces = [self._proxy_faces[s] for s in sides]
        normals = torch.stack([vertex_normals(proxies[i], faces[i]) for i in range(len(sides))])
        dirs, rgb = env.directional_lights(n_lights)
        t2 = time.perf_counter()
        t["lights"] = (t2 - t1) * 1e3
        out = {"light_dirs": dirs, "light_rgb": rgb, "visibility": None}
        vis = trans = None
        if "vis" in sources:
            vis = raycast.proxy_visibility(proxies, normals, faces, dirs, backend=self.raycaster)
            out["visibility"] = vis
            if translucency:
                trans = proxy_transmittance(proxies, normals, faces, dirs, mean_free_paths=translucency,
                                            backend=self.raycaster, scene_built=True)["transmittance"]
        t3 = time.perf_counter()
        t["raycast"] = (t3 - t2) * 1e3 if vis is not None else 0.0  # 'novis' alone casts no rays
        origin = np.asarray(view_origin, np.float64)
        for src in sources:
            if src not in ("vis", "novis"):
                raise ValueError(f"feature source must be 'vis' or 'novis', got {src!r}")
            v = vis if src == "vis" else torch.ones(proxies.shape[0], proxies.shape[1], len(dirs), dtype=torch.bool)
            if translucency:
                T = trans if src == "vis" else torch.zeros(*v.shape, len(translucency))
                feature_kw.update(transmittance=T, mean_free_paths=tuple(translucency))
            feats, energy, names = lighting_features(proxies, normals, v, dirs, rgb, origin, **feature_kw)
            out[src] = feats
            out["energy"], out["names"] = torch.as_tensor(energy), list(names)
        t["features"] = (time.perf_counter() - t3) * 1e3
        out["timings_ms"] = t
        return out

    def lighting_features(self, scene: Scene, env: EnvironmentMap, view_origin, *, n_lights: int = 64,
                          resolution: int = 256, **feature_kw) -> FeatureFrame:
        """Skin the proxies, ray cast visibility of ``n_lights`` environment lights against both
        hands, compute per-vertex features seen from ``view_origin`` [3] (world; for stereo the
        midpoint of the eyes) and gather them into UV maps of ``resolution``."""
        t0 = time.perf_counter()
        vf = self.vertex_features(scene, env, view_origin, n_lights=n_lights, **feature_kw)
        t = dict(vf["timings_ms"])
        t4 = time.perf_counter()
        uv = self.uv_rasterizer(resolution)
        # the left proxy's faces are the right's with two columns swapped (mirroring); the UV
        # lookup's barycentrics follow the right hand's corner order, so gather with those faces
        maps = uv.gather(vf["vis"], self.asset.proxy_faces)
        t5 = time.perf_counter()
        t["uv_gather"] = (t5 - t4) * 1e3
        t["total"] = (t5 - t0) * 1e3
        return FeatureFrame(maps=maps, mask=uv.mask, energy=vf["energy"], names=vf["names"],
                            sides=[h.side for h in scene.hands], visibility=vf["visibility"],
                            light_dirs=vf["light_dirs"], light_rgb=vf["light_rgb"], timings_ms=t)

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
        t = {}
        t0 = time.perf_counter()
        posed = self.pose(scene)
        t1 = time.perf_counter()
        t["skinning"] = (t1 - t0) * 1e3
        sides = [h.side for h in scene.hands]
        if shading == "uv_texture":
            missing = [s for s in sides if not radiance_textures or s not in radiance_textures]
            if missing:
                raise ValueError(f"shading='uv_texture' needs radiance_textures[{missing[0]!r}]")
        self._upload(posed, sides, radiance_textures if shading == "uv_texture" else None)
        t2 = time.perf_counter()
        t["normals_upload"] = (t2 - t1) * 1e3
        if camera is None:
            if target is not None:
                width, height = self.compositor.target_size(target)
            camera = self._framing(posed, sides, width, height, scene.view_direction)
        out = self.compositor.render([self.drawables[s] for s in sides], env, camera, shading=shading,
                                     exposure_ev=exposure_ev, tonemap=tonemap, background=background,
                                     shadows=shadows, return_linear=return_linear, readback=readback,
                                     target=target)
        t3 = time.perf_counter()
        t["composite"] = (t3 - t2) * 1e3
        t["total"] = (t3 - t0) * 1e3
        return Frame(image=out["rgb"], mask=out["mask"], hand_id=out["hand_id"], camera=camera, sides=sides,
                     timings_ms=in_stage_order(t, PBR_STAGES), linear=out.get("linear"))

    # ---------------------------------------------------------------------------------
    # Shared by the PBR / UV-texture path and the student path

    def _upload(self, posed: dict, sides: list, radiance_textures: dict | None = None) -> None:
        """Posed render vertices (and radiance textures) to the GPU; the drawable computes the
        area-weighted vertex normals itself (one sparse product, faster than a torch pass here)."""
        for side in sides:
            self.drawables[side].update_vertices(posed[side].render_vertices[0].numpy())
            if radiance_textures is not None:
                self.drawables[side].set_radiance_texture(radiance_textures[side])

    @staticmethod
    def _framing(posed: dict, sides: list, width: int, height: int, direction) -> Camera:
        pts = torch.cat([posed[s].render_vertices[0] for s in sides]).numpy()
        return framing_camera(pts, width, height, direction=direction)

    # ---------------------------------------------------------------------------------
    # Neural student path
    def student_backend(self, student=None, *, backend: str = "auto"):
        """Resolve ``student`` to an :class:`~relit_hands.inference.InferenceBackend` (cached).

        None: the shipped default model (``relit_hands/models/student/student.safetensors``) through
        ``backend``; a :class:`~relit_hands.student.StudentLoadError` naming the file if it is
        missing or unreadable (render the PBR baseline with :meth:`render` instead). A path: that
        weights file through ``backend``. An ``InferenceBackend``: used as is. A
        :class:`~relit_hands.student.StudentNet`: wrapped in the torch backend."""
        from .inference import InferenceBackend, TorchBackend, make_backend
        from .student import StudentLoadError, StudentNet, default_student_path

        if isinstance(student, InferenceBackend):
            return student
        if isinstance(student, StudentNet):
            return TorchBackend(student, device=str(self.device))
        cache = self.__dict__.setdefault("_student_backends", {})
        if student is None:
            student = default_student_path()
            if not student.is_file():
                raise StudentLoadError(f"{student}: no trained default student installed (train one with "
                                       f"`relit-hands train-student ... --install-default`, README: Student); "
                                       f"the PBR baseline needs none (Engine.render, --shading pbr)")
        key = (str(Path(student).resolve()), backend)
        if key not in cache:
            be = make_backend(backend, student)
            wrong = asset_mismatch((getattr(be, "meta", None) or {}).get("asset"), self.asset)
            if wrong:
                raise StudentLoadError(f"{student}: this student was {wrong}")
            cache[key] = be
        return cache[key]

    def render_student(self, scene: Scene, env: EnvironmentMap, cameras=None, *, student=None,
                       backend: str = "auto", n_lights: int = 64, resolution: int | None = None,
                       exposure_ev: float = 0.0, tonemap: str = "aces", background: str = "env",
                       return_linear: bool = False, width: int = 1280, height: int = 720,
                       readback: str | None = None, targets=None) -> "StudentFrame":
        """Render ``scene`` with the neural student: ONE feature + student pass, then one
        composite per camera (``shading='uv_texture'``).

        ``cameras``: a :class:`Camera`, a list of one or two (stereo: left eye, right eye), or None
        (one framing camera of ``width`` x ``height``). The lighting features are computed for
        the view origin = the camera centre, or the midpoint of the two eye centres for stereo
        (see :mod:`.features` on why one texture serves both eyes), so both eyes see the same
        textures from different viewpoints. ``student``: see :meth:`student_backend`;
        ``resolution`` (UV R) defaults to the model's and must match it. ``env`` carries its
        rotation (:meth:`EnvironmentMap.rotate`).

        Returns a :class:`StudentFrame`: ``frames`` (one :class:`Frame` per camera),
        ``textures`` {side: float32 [R, R, 3] linear HDR radiance}, ``timings_ms`` per stage
        (skinning, lights, raycast, features, uv_gather, student, textures, upload, composite
        = the sum over views, total) and the backend's name. ``readback``: as in :meth:`render`
        ('rgb' skips the per-view mask / hand id / depth read-back, which the bench does).

        ``targets``: draw each view into the host's own framebuffer / texture instead of reading it
        back (as ``target`` in :meth:`render`): one per camera (stereo: [left eye, right eye]), or
        one target for a single camera; with ``cameras`` None the framing camera takes the first
        target's size. The targets are checked (type, size, dtype: ValueError naming
        ``targets[i]``) before the feature and student passes run.
        """
        from .student import environment_code, scene_centre, select_channels, variant_feature_source

        _check_frame_args(width, height, exposure_ev, cameras is None and targets is None)
        t_start = time.perf_counter()
        be = self.student_backend(student, backend=backend)
        R = be.resolution
        if resolution is not None and int(resolution) != R:
            raise ValueError(f"resolution={resolution} but the student was trained at R={R}")
        sides = [h.side for h in scene.hands]
        t = {}
        t0 = time.perf_counter()
        posed = self.pose(scene, meshes=("render", "proxy"))  # with each hand's shape
        t["skinning"] = (time.perf_counter() - t0) * 1e3
        if targets is not None and not isinstance(targets, (list, tuple)):
            targets = [targets]
        if cameras is None:
            if targets:
                width, height = self.compositor.target_size(targets[0], "targets[0]")
            cameras = [self._framing(posed, sides, width, height, scene.view_direction)]
        elif isinstance(cameras, Camera):
            cameras = [cameras]
        cameras = list(cameras)
        if not 1 <= len(cameras) <= 2 or not all(isinstance(c, Camera) for c in cameras):
            raise ValueError("cameras must be a Camera or a list of one or two Cameras (stereo)")
        if targets is None:
            targets = [None] * len(cameras)
        elif len(targets) != len(cameras):
            raise ValueError(f"targets: one per camera, got {len(targets)} for {len(cameras)} camera(s)")
        else:
            for i, (tgt, cam) in enumerate(zip(targets, cameras)):
                self.compositor.target_format(tgt, (cam.width, cam.height), f"targets[{i}]")
        origin = np.mean([c.center for c in cameras], 0)
        # features (per proxy vertex) -> UV maps
        source = variant_feature_source(be.variant)
        vf = self.vertex_features(scene, env, origin, n_lights=n_lights, sources=(source,), posed=posed,
                                  translucency=mean_free_paths_of(be.feature_names or ()))
        for k in ("lights", "raycast", "features"):
            t[k] = vf["timings_ms"][k]
        t["skinning"] += vf["timings_ms"]["skinning_proxy"]
        t1 = time.perf_counter()
        uv = self.uv_rasterizer(R)
        maps = uv.gather(vf[source], self.asset.proxy_faces)
        maps = select_channels(maps, vf["names"], be.feature_names or vf["names"])
        code = None
        if be.needs_code:
            code = torch.from_numpy(environment_code(env.sh_coefficients(), vf["energy"].numpy(), origin,
                                                     scene_centre(scene)))[None].expand(len(sides), -1)
        t2 = time.perf_counter()
        t["uv_gather"] = (t2 - t1) * 1e3
        out = be.run(maps, code)
        if out.is_cuda:
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        t["student"] = (t3 - t2) * 1e3
        rad = (out.float() * vf["energy"].to(out.device).reshape(1, 3, 1, 1)).permute(0, 2, 3, 1).cpu()
        textures = {s: np.ascontiguousarray(rad[i].numpy()) for i, s in enumerate(sides)}
        t4 = time.perf_counter()
        t["textures"] = (t4 - t3) * 1e3
        self._upload(posed, sides, textures)
        t5 = time.perf_counter()
        t["upload"] = (t5 - t4) * 1e3
        frames, per_view = [], []
        for cam, tgt in zip(cameras, targets):
            tc = time.perf_counter()
            o = self.compositor.render([self.drawables[s] for s in sides], env, cam, shading="uv_texture",
                                       exposure_ev=exposure_ev, tonemap=tonemap, background=background,
                                       shadows=False, return_linear=return_linear, readback=readback,
                                       target=tgt)
            per_view.append((time.perf_counter() - tc) * 1e3)
            frames.append(Frame(image=o["rgb"], mask=o["mask"], hand_id=o["hand_id"], camera=cam, sides=sides,
                                timings_ms={"composite": per_view[-1]}, linear=o.get("linear")))
        t6 = time.perf_counter()
        t["composite"] = sum(per_view)
        t["composite_per_view"] = per_view
        t["total"] = (t6 - t_start) * 1e3
        return StudentFrame(frames=frames, textures=textures, timings_ms=in_stage_order(t, STUDENT_STAGES),
                            backend=be.name, variant=be.variant, view_origin=origin, energy=vf["energy"].numpy(),
                            resolution=R)

    def release(self):
        self.compositor.release()


@dataclass
class StudentFrame:
    """What :meth:`Engine.render_student` returns.

    frames: one :class:`Frame` per camera (stereo: [left eye, right eye]); textures: {side:
    float32 [R, R, 3]} linear HDR radiance (shared by every view); timings_ms: per stage;
    backend: the inference backend's name; variant: the student's variant; view_origin [3]: where
    the features were computed from; energy [3]; resolution R."""

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
