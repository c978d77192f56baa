"""GPU fast path: the whole student frame on one CUDA device, no device-to-host copy.

    from relit_hands.gpu_frame import GpuFrameRenderer
    gpu = GpuFrameRenderer()                                  # CUDA + nvdiffrast required
    cams = gpu.cameras_for([scene], (1920, 1080), stereo=False)
    t = gpu.render(scene, env, cams, student=backend, n_lights=256)   # timings (ms) per stage
    gpu.last_image                                            # uint8 [views, H, W, 3] CUDA tensor

STATUS: UNMEASURED. Written against nvdiffrast's and PyTorch's documented APIs on a machine
without a GPU; it has never run. ``benchmarks/gpu_suite.sh`` exercises it on the GPU machine
and checks its image against the OpenGL compositor's (PSNR) before timing it.

Stages (all torch CUDA tensors; the host only uploads the poses, the N environment lights
[N, 6] and -- bottleneck variant -- the 30-float environment code):

* skinning: both hands' render + proxy meshes (:class:`~relit_hands.hand_model.HandModel` on CUDA);
* lights: ``env.directional_lights(N)`` (host; cached per image, only rotated) uploaded;
* raycast: proxy visibility (the ``triton`` backend on CUDA by default);
* features + uv_gather: :func:`~relit_hands.features.lighting_features` and
  :class:`~relit_hands.uv_maps.UVRasterizer` (``embedding_bag``) on CUDA;
* student: the inference backend (torch fp16 + CUDA graph, or TensorRT), output x energy;
* composite: per view, nvdiffrast ``rasterize`` of both hands' render meshes (one mesh, one call
  for all views: stereo is a batch of 2 clip-space position sets), ``interpolate`` of the UVs
  (the UV topology ``render_uv_faces``, parallel to the position faces), ``texture`` lookup in a
  side-by-side atlas of the hands' radiance textures [1, R, hands*R, 3], the equirect background
  by ``grid_sample`` along each pixel's world ray (same mapping as shaders/common.glsl), optional
  ``antialias``, exposure, ACES (Narkowicz) and the sRGB OETF -> uint8. Rows are flipped to the
  image convention (row 0 = top) as the GL compositor does.

Timings use CUDA events recorded between stages (GPU timeline, no per-stage synchronisation);
the frame ends with one ``torch.cuda.synchronize``. Not done (would move the numbers further):
one CUDA graph for the whole frame (needs the ray caster and nvdiffrast in the graph), the PBR
baseline (stays on the OpenGL compositor), MSAA (``antialias`` is nvdiffrast's analytic edge AA).
"""
from __future__ import annotations

import numpy as np
import torch

from .color import to_uint8, tone_map
from .stages import GPU_STUDENT_STAGES

__all__ = ["GpuFrameRenderer", "available"]


def available() -> "bool | str":
    """True, or why the GPU fast path cannot run here."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception as e:  # noqa: BLE001 - import errors of a compiled extension vary
        return f"nvdiffrast not importable ({type(e).__name__}: {e})"
    return True


class GpuFrameRenderer:
    """Whole-frame renderer on CUDA (see the module docstring). ``asset``: a right-hand npz or
    None for the shipped one; ``raycast_backend``: 'auto' (triton on CUDA) or any registered."""

    def __init__(self, asset=None, *, device: str = "cuda", raycast_backend: str = "auto",
                 antialias: bool = True, exposure_ev: float = 0.0):
        ok = available()
        if ok is not True:
            raise RuntimeError(f"GPU fast path unavailable: {ok}")
        import nvdiffrast.torch as dr

        from . import raycast
        from .hand_model import HandAsset, HandModel, default_asset_path

        self.dr = dr
        self.device = torch.device(device)
        self.asset = HandAsset.load(asset if asset is not None else default_asset_path())
        self.models = {s: HandModel(self.asset, s, device=self.device) for s in ("right", "left")}
        self.raycaster = raycast.get_backend(raycast_backend)
        self.raycast_backend = self.raycaster.name
        self.glctx = dr.RasterizeCudaContext(device=self.device)
        self.antialias = bool(antialias)
        self.exposure_ev = float(exposure_ev)
        self._uv = {}
        self._env_tex = {}
        self.last_image = None
        self._mesh = {}
        for s, m in self.models.items():
            a = m.asset
            self._mesh[s] = dict(
                faces=torch.as_tensor(np.asarray(m.render_faces), dtype=torch.int64, device=self.device),
                uvs=torch.as_tensor(np.asarray(a.render_uvs), dtype=torch.float32, device=self.device),
                uv_faces=torch.as_tensor(np.asarray(a.render_uv_faces), dtype=torch.int64, device=self.device),
                proxy_faces=m.proxy_faces)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def stage_names(shading: str = "student"):
        if shading != "student":
            raise ValueError("the GPU fast path renders the student only (the PBR baseline is the GL compositor)")
        return GPU_STUDENT_STAGES

    def cameras_for(self, scenes, size, stereo: bool) -> list:
        """A fixed camera framing the first and middle frames of ``scenes`` (stereo: the eye pair)."""
        from .engine import framing_camera

        pts = []
        with torch.no_grad():
            for sc in (scenes[0], scenes[len(scenes) // 2]):
                for h in sc.hands:
                    pts.append(self.models[h.side](h.pose, h.global_orient, h.transl,
                                                   meshes=("render",)).render_vertices[0].cpu().numpy())
        cam = framing_camera(np.concatenate(pts), size[0], size[1], direction=scenes[0].view_direction)
        return cam.stereo_pair() if stereo else [cam]

    def uv_rasterizer(self, R: int):
        from .uv_maps import UVRasterizer

        if R not in self._uv:
            a = self.asset
            self._uv[R] = UVRasterizer(a.proxy_uvs, a.proxy_uv_faces, R, faces=a.proxy_faces)
        return self._uv[R]

    def _env_texture(self, env) -> torch.Tensor:
        key = id(env.image)
        t = self._env_tex.get(key)
        if t is None:  # once per image: [1, 3, He, We] float32 (map frame, exposure 0)
            self._env_tex.clear()
            img = torch.from_numpy(np.ascontiguousarray(env.image, dtype=np.float32))
            t = self._env_tex[key] = (img.permute(2, 0, 1)[None].contiguous().to(self.device), env.image)
        return t[0]

    # ------------------------------------------------------------------ the frame
    @torch.no_grad()
    def render(self, scene, env, cameras, *, student, shading: str = "student", n_lights: int = 256) -> dict:
        """One frame for every camera; returns per-stage milliseconds (CUDA-event timeline) and
        leaves ``last_image`` (uint8 [views, H, W, 3], CUDA) and ``last_textures`` (float32
        [hands, R, R, 3], CUDA)."""
        from . import raycast
        from .features import lighting_features
        from .hand_model import vertex_normals
        from .student import environment_code, scene_centre, select_channels, variant_feature_source

        self.stage_names(shading)
        dev = self.device
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(len(GPU_STUDENT_STAGES) + 1)]
        ev[0].record()
        sides = [h.side for h in scene.hands]
        posed = {h.side: self.models[h.side](h.pose, h.global_orient, h.transl, meshes=("render", "proxy"))
                 for h in scene.hands}
        proxies = torch.stack([posed[s].proxy_vertices[0] for s in sides])
        pfaces = [self._mesh[s]["proxy_faces"] for s in sides]
        pnormals = torch.stack([vertex_normals(proxies[i], pfaces[i]) for i in range(len(sides))])
        ev[1].record()
        dirs_np, rgb_np = env.directional_lights(n_lights)  # host, [N, 3] x 2 (uploaded by the callees)
        ev[2].record()
        source = variant_feature_source(student.variant)
        origin = np.mean([c.center for c in cameras], 0)
        if source == "vis":
            vis = raycast.proxy_visibility(proxies, pnormals, pfaces, dirs_np, backend=self.raycaster).to(dev)
        else:
            vis = torch.ones(proxies.shape[0], proxies.shape[1], len(dirs_np), dtype=torch.bool, device=dev)
        ev[3].record()
        feats, energy, names = lighting_features(proxies, pnormals, vis, dirs_np, rgb_np, origin)
        energy = torch.as_tensor(energy, device=dev, dtype=torch.float32)
        ev[4].record()
        R = student.resolution
        maps = self.uv_rasterizer(R).gather(feats, self.asset.proxy_faces)
        maps = select_channels(maps, list(names), student.feature_names or list(names))
        code = None
        if student.needs_code:  # host: SH of the map + energy (= sum of the lights, as in features) -> 30 floats
            e_host = rgb_np.astype(np.float64).sum(0)
            code = torch.from_numpy(environment_code(env.sh_coefficients(), e_host, origin, scene_centre(scene)))
            code = code[None].expand(len(sides), -1).to(dev)
        ev[5].record()
        out = student.run(maps, code)
        ev[6].record()
        rad = out.float() * energy.reshape(1, 3, 1, 1)                    # [B, 3, R, R]
        atlas = rad.permute(2, 0, 3, 1).reshape(1, R, len(sides) * R, 3).contiguous()  # hands side by side
        self.last_textures = rad.permute(0, 2, 3, 1)
        ev[7].record()
        self.last_image = self._composite(posed, scene, atlas, env, cameras)
        ev[8].record()
        torch.cuda.synchronize(dev)
        return {s: ev[i].elapsed_time(ev[i + 1]) for i, s in enumerate(GPU_STUDENT_STAGES)}

    def _composite(self, posed, scene, atlas, env, cameras) -> torch.Tensor:
        dr, dev = self.dr, self.device
        sides = [h.side for h in scene.hands]
        nh = len(sides)
        pos, tris, uvs, uvtris = [], [], [], []
        voff = uoff = 0
        for k, s in enumerate(sides):
            m = self._mesh[s]
            v = posed[s].render_vertices[0].float()
            pos.append(v)
            tris.append(m["faces"] + voff)
            uv = m["uvs"].clone()
            uv[:, 0] = (uv[:, 0] + k) / nh                                # atlas column of hand k
            uvs.append(uv)
            uvtris.append(m["uv_faces"] + uoff)
            voff += v.shape[0]
            uoff += uv.shape[0]
        P = torch.cat(pos)                                                # [V, 3] world
        tri = torch.cat(tris).to(torch.int32).contiguous()
        uv_all = torch.cat(uvs)[None].contiguous()
        uv_tri = torch.cat(uvtris).to(torch.int32).contiguous()
        W, H = cameras[0].width, cameras[0].height
        # near / far planes from host-side knowledge only (no device read): a sphere of 0.3 m
        # around the wrists holds both hands in any pose (a hand is < 0.22 m from wrist to tip)
        center = np.mean([np.asarray(h.transl, np.float64) for h in scene.hands], 0)
        radius = 0.3
        mats, rays = [], []
        for cam in cameras:
            zc = float((cam.R @ center + cam.t)[2])
            far = max(zc + radius * 1.1, 1e-3)
            near = max(zc - radius * 1.1, far * 1e-4)
            mats.append(cam.gl_view_projection(near, far))
            rays.append(env.rotation.T @ cam.R.T @ np.linalg.inv(cam.K))    # pixel -> map-frame ray
        M = torch.as_tensor(np.stack(mats), dtype=torch.float32, device=dev)          # [B, 4, 4]
        Ph = torch.cat([P, torch.ones_like(P[:, :1])], 1)                              # [V, 4]
        clip = torch.einsum("bij,vj->bvi", M, Ph).contiguous()                         # [B, V, 4]
        rast, _ = dr.rasterize(self.glctx, clip, tri, resolution=[H, W])
        texc, _ = dr.interpolate(uv_all, rast, uv_tri)
        col = dr.texture(atlas, texc, filter_mode="linear", boundary_mode="clamp")     # [B, H, W, 3]
        cover = rast[..., 3:4] > 0
        # background: world ray of each pixel centre (GL row r is image row H-1-r) -> equirect
        u = torch.arange(W, device=dev, dtype=torch.float32) + 0.5
        vv = (H - 1 - torch.arange(H, device=dev, dtype=torch.float32)) + 0.5
        pix = torch.stack(torch.broadcast_tensors(u[None, :], vv[:, None], torch.ones(H, W, device=dev)), -1)
        Rm = torch.as_tensor(np.stack(rays), dtype=torch.float32, device=dev)          # [B, 3, 3]
        d = torch.einsum("bij,hwj->bhwi", Rm, pix)
        d = d / d.norm(dim=-1, keepdim=True)
        phi = torch.atan2(d[..., 0], -d[..., 2])
        el = torch.asin(d[..., 1].clamp(-1, 1))
        gu = phi / torch.pi                                   # = 2 * (phi / 2pi + 0.5) - 1
        gv = -2.0 * el / torch.pi                             # = 2 * (0.5 - el / pi) - 1
        grid = torch.stack([gu, gv], -1)
        envt = self._env_texture(env).expand(len(cameras), -1, -1, -1)
        bg = torch.nn.functional.grid_sample(envt, grid, mode="bilinear", padding_mode="border",
                                             align_corners=False).permute(0, 2, 3, 1) * float(env.scale)
        img = torch.where(cover, col, bg)
        if self.antialias:
            img = dr.antialias(img.contiguous(), rast, clip, tri)
        # exposure, ACES (Narkowicz), sRGB OETF, 8 bits: as the GL tone-mapping pass; row 0 = top
        return to_uint8(tone_map(img, self.exposure_ev, "aces")).flip(1)
