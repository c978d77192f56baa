"""The ``'nvdiffrast'`` compositor: the student's textures drawn on CUDA, nothing leaves the device.

:class:`NvdiffrastCompositor` implements :class:`~relit_hands.compositing.HandCompositor` with
nvdiffrast (``diffrp-nvdiffrast``): one ``rasterize`` call for every camera (stereo is a batch of
two clip-space position sets), ``interpolate`` of the UVs (the UV topology ``render_uv_faces``,
parallel to the position faces), a ``texture`` lookup in the hands' radiance textures laid side by
side [1, R, hands*R, 3], the equirect background by ``grid_sample`` along each pixel's world ray
(the mapping of shaders/common.glsl), optional analytic edge ``antialias``, then exposure, tone
mapping and the sRGB OETF (:mod:`.color`, the GL tone-mapping pass's functions) to uint8. Rows are
flipped to the image convention (row 0 = top) as the GL compositor does.

It draws radiance textures only: the PBR baseline stays on the GL compositor. No masks / hand ids
are produced (``readback='all'`` reads back the image only). STATUS: never run on a GPU yet;
``benchmarks/gpu_suite.sh`` checks its images against the GL compositor's (PSNR) before timing it.
"""
from __future__ import annotations

import numpy as np
import torch

from .color import to_uint8, tone_map
from .compositing import HandCompositor, compositor_availability, to_host
from .stages import GPU_STUDENT_STAGES

__all__ = ["NvdiffrastCompositor"]

NEAR_M, FAR_M = 0.01, 100.0   # clip planes (metres): hands nearer than 1 cm to an eye are clipped


class NvdiffrastCompositor(HandCompositor):
    """Student textures -> images on ``device`` (CUDA) with nvdiffrast; ``antialias``: nvdiffrast's
    analytic edge antialiasing (the GL path uses MSAA on GPUs)."""

    name = "nvdiffrast"
    student_stages = GPU_STUDENT_STAGES

    def __init__(self, device="cuda", *, antialias: bool = True):
        ok = compositor_availability(device)["nvdiffrast"]
        if ok is not True:
            raise RuntimeError(f"the nvdiffrast compositor is unavailable: {ok}")
        import nvdiffrast.torch as dr

        self.dr = dr
        self.device = torch.device(device)
        self.glctx = dr.RasterizeCudaContext(device=self.device)
        self.antialias = bool(antialias)
        self._mesh = {}
        self._env_src = self._env_tex = None

    def attach_hands(self, models: dict, textures: dict) -> None:
        for s, m in models.items():
            a = m.asset
            self._mesh[s] = dict(
                faces=torch.as_tensor(np.asarray(m.render_faces), dtype=torch.int32, device=self.device),
                uvs=torch.as_tensor(np.asarray(a.render_uvs), dtype=torch.float32, device=self.device),
                uv_faces=torch.as_tensor(np.asarray(a.render_uv_faces), dtype=torch.int32, device=self.device))

    def _env_texture(self, env) -> torch.Tensor:
        """[1, 3, He, We] float32 of the map (map frame, before exposure), uploaded once per image."""
        if self._env_src is not env.image:  # holding the array keeps the identity test sound
            img = torch.from_numpy(np.ascontiguousarray(env.image, dtype=np.float32))
            self._env_tex = img.permute(2, 0, 1)[None].contiguous().to(self.device)
            self._env_src = env.image
        return self._env_tex

    @torch.no_grad()
    def composite_textures(self, sides, vertices, textures, env, cameras, *, exposure_ev=0.0, tonemap="aces",
                           background="env", return_linear=False, readback=None, targets=None, timer=None):
        if targets is not None and any(t is not None for t in targets):
            raise ValueError("the nvdiffrast compositor does not draw into GL targets: use compositor='gl'")
        if background not in ("env", "none"):
            raise ValueError(f"the nvdiffrast compositor draws background 'env' or 'none', not {background!r}")
        dr, dev = self.dr, self.device
        nh, R = len(sides), textures.shape[1]
        atlas = textures.float().permute(1, 0, 2, 3).reshape(1, R, nh * R, 3).contiguous()  # hands side by side
        pos, tris, uvs, uvtris = [], [], [], []
        voff = uoff = 0
        for k, s in enumerate(sides):
            m = self._mesh[s]
            v = vertices[s].float()
            pos.append(v)
            tris.append(m["faces"] + voff)
            uv = m["uvs"].clone()
            uv[:, 0] = (uv[:, 0] + k) / nh                                # atlas column of hand k
            uvs.append(uv)
            uvtris.append(m["uv_faces"] + uoff)
            voff += v.shape[0]
            uoff += uv.shape[0]
        P = torch.cat(pos)                                                # [V, 3] world
        tri = torch.cat(tris).contiguous()
        uv_all = torch.cat(uvs)[None].contiguous()
        uv_tri = torch.cat(uvtris).contiguous()
        W, H = cameras[0].width, cameras[0].height
        if any((c.width, c.height) != (W, H) for c in cameras):
            raise ValueError("the nvdiffrast compositor draws every camera at one size")
        mats, rays = [], []
        for cam in cameras:  # fixed clip planes, no device read: float32 z/w resolves ~2 um at 0.5 m
            mats.append(cam.gl_view_projection(NEAR_M, FAR_M))
            rays.append(env.rotation.T @ cam.R.T @ np.linalg.inv(cam.K))    # pixel -> map-frame ray
        M = torch.as_tensor(np.stack(mats), dtype=torch.float32, device=dev)          # [B, 4, 4]
        Ph = torch.cat([P, torch.ones_like(P[:, :1])], 1)                              # [V, 4]
        clip = torch.einsum("bij,vj->bvi", M, Ph).contiguous()                         # [B, V, 4]
        rast, _ = dr.rasterize(self.glctx, clip, tri, resolution=[H, W])
        texc, _ = dr.interpolate(uv_all, rast, uv_tri)
        col = dr.texture(atlas, texc, filter_mode="linear", boundary_mode="clamp")     # [B, H, W, 3]
        cover = rast[..., 3:4] > 0
        if background == "env":
            # world ray of each pixel centre (GL row r is image row H-1-r) -> equirect lookup
            u = torch.arange(W, device=dev, dtype=torch.float32) + 0.5
            vv = (H - 1 - torch.arange(H, device=dev, dtype=torch.float32)) + 0.5
            pix = torch.stack(torch.broadcast_tensors(u[None, :], vv[:, None], torch.ones(H, W, device=dev)), -1)
            Rm = torch.as_tensor(np.stack(rays), dtype=torch.float32, device=dev)      # [B, 3, 3]
            d = torch.einsum("bij,hwj->bhwi", Rm, pix)
            d = d / d.norm(dim=-1, keepdim=True)
            phi = torch.atan2(d[..., 0], -d[..., 2])
            el = torch.asin(d[..., 1].clamp(-1, 1))
            grid = torch.stack([phi / torch.pi, -2.0 * el / torch.pi], -1)   # = 2 * (u, v) - 1 of the equirect
            envt = self._env_texture(env).expand(len(cameras), -1, -1, -1)
            bg = torch.nn.functional.grid_sample(envt, grid, mode="bilinear", padding_mode="border",
                                                 align_corners=False).permute(0, 2, 3, 1) * float(env.scale)
        else:
            bg = torch.zeros_like(col)
        lin = torch.where(cover, col, bg)
        if self.antialias:
            lin = dr.antialias(lin.contiguous(), rast, clip, tri)
        img = to_uint8(tone_map(lin, exposure_ev, tonemap)).flip(1)                  # row 0 = top
        if timer is not None:
            timer.mark("composite")
        if readback is None:
            readback = "all"
        rgb = to_host(img).numpy() if readback != "none" else None
        linear = to_host(lin.flip(1)).numpy() if return_linear else None
        return [{"rgb": None if rgb is None else rgb[i], "mask": None, "hand_id": None,
                 "linear": None if linear is None else linear[i], "device_image": img[i], "timings_ms": {}}
                for i in range(len(cameras))]
