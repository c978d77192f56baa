r"""Teacher training machinery: projecting UV textures into captured views, the loss, the data.

Projection (one definition, two rasterizers)
--------------------------------------------
A predicted radiance texture reaches a captured view through a *lookup*: for every pixel covered
by a hand, its texture coordinates ``(u, v)`` and which hand (``ViewLookup``). Pixel colour =
bilinear texture sample at ``(u, v)``: ``grid_sample(texture, grid=(2u - 1, 2v - 1),
align_corners=False)``, which reproduces the UV convention (texel (row, col) has its centre at
``((col + .5) / R, (row + .5) / R)``). The sample is differentiable w.r.t. the texture, so
gradients flow into the network and the latent texture; the geometry (lookup) is fixed.

* CPU (default): *precomputed rasterization* -- :func:`view_lookup` renders the posed hands with
  the engine's OpenGL compositor (``shading='uv'``: per-pixel interpolated UV, hand index) once
  per (pose, camera) and caches it. The hand index agrees with the capture's ray-cast masks
  (pixel-centre rule) on > 99.9 % of the pixels.
* CUDA: :func:`rasterize_nvdiffrast` builds the same lookup with nvdiffrast
  (``dr.rasterize`` + ``dr.interpolate``; the ``diffrp-nvdiffrast`` wheel compiles at first use)
  and the sample is the same ``grid_sample``; the loss is identical.

Loss
----
Default ``'l2'``: ``L = mean over hand pixels and RGB of ((pred - ref) / s)^2``, with ``s`` the
mean reference hand-pixel radiance of the training frames (fixed at the start of training and
stored with the teacher). Why L2 on LINEAR radiance: the references are Monte-Carlo path traced
(8-64 spp on the CPU machines; the tiny preset's images are visibly noisy), and only the squared
error has the noise-free image as its minimiser -- an L1 loss converges to the per-pixel *median*
and a log loss to the geometric mean, both biased low for the skewed noise of path tracing; it is
also what the evaluation's PSNR measures. ``'log_l1'`` (``|log(1 + pred/s) - log(1 + ref/s)|``,
relative for bright pixels) is available for real, low-noise captures with strong highlights. Pixels used: the capture's hand mask,
eroded by one pixel (silhouette pixels of the path-traced reference are area averages that mix
hand and background; the lookup is a pixel-centre sample), where the lookup's hand index agrees
with the mask's hand label. Group frames (a few lights on) are supervised with the SUM of the
lit lights' textures (linearity), exactly as OLAT frames.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ViewLookup", "view_lookup", "rasterize_nvdiffrast", "sample_textures", "project_image",
           "log_l1_loss", "l2_loss", "teacher_loss", "LOSSES", "pose_key", "TrainingView", "ViewCache", "frame_lights", "erode"]


@dataclass
class ViewLookup:
    """Hand pixels of one view: ``pix`` [P] flat pixel indices (row-major), ``hand`` [P] hand
    index (scene order), ``grid`` [P, 2] grid_sample coordinates ``(2u - 1, 2v - 1)``,
    ``shape`` (H, W)."""

    pix: torch.Tensor
    hand: torch.Tensor
    grid: torch.Tensor
    shape: tuple

    def subset(self, keep: torch.Tensor) -> "ViewLookup":
        return ViewLookup(self.pix[keep], self.hand[keep], self.grid[keep], self.shape)


def _lookup_from_maps(uv: np.ndarray, hand_id: np.ndarray) -> ViewLookup:
    hid = np.asarray(hand_id).astype(np.int64)
    flat = np.nonzero(hid.reshape(-1) >= 0)[0]
    uvp = np.asarray(uv, np.float32).reshape(-1, uv.shape[-1])[flat, :2]
    grid = torch.from_numpy(uvp * 2.0 - 1.0)
    return ViewLookup(torch.from_numpy(flat), torch.from_numpy(hid.reshape(-1)[flat]), grid, tuple(hid.shape))


def view_lookup(engine, scene, camera) -> ViewLookup:
    """CPU precomputed rasterization: the engine's UV render of ``scene`` seen by ``camera``."""
    fr = engine.render(scene, None, camera, shading="uv", return_linear=True, background="none",
                       tonemap="none")
    return _lookup_from_maps(fr.linear[..., :2], fr.hand_id)


def rasterize_nvdiffrast(glctx, vertices_list, faces, uvs, uv_faces, camera, device="cuda") -> ViewLookup:
    """The same lookup on CUDA with nvdiffrast (imported here; needs ``diffrp-nvdiffrast``).

    ``vertices_list``: per hand [V, 3] world positions (scene order); ``faces``: per hand [F, 3]
    position faces; ``uvs`` [T, 2] / ``uv_faces`` [F, 3] the (shared) UV layout, right-hand
    corner order (pass the right hand's ``render_uv_faces`` for both hands together with each
    hand's own position faces reordered to match, i.e. the right hand's ``render_faces``).
    Pixel centres are sampled (same rule as OpenGL / the capture masks)."""
    import nvdiffrast.torch as dr  # noqa: F401  (optional dependency)

    Wp, Hp = camera.width, camera.height
    K, Rm, t = (torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device) for x in (camera.K, camera.R, camera.t))
    near, far = 0.01, 100.0
    verts, tris, uvv, uvt, hid = [], [], [], [], []
    voff = toff = 0
    for h, (v, f) in enumerate(zip(vertices_list, faces)):
        v = torch.as_tensor(v, dtype=torch.float32, device=device)
        f = torch.as_tensor(np.asarray(f), dtype=torch.int32, device=device)
        verts.append(v)
        tris.append(f + voff)
        uvt.append(torch.as_tensor(np.asarray(uv_faces), dtype=torch.int32, device=device) + toff)
        uvv.append(torch.as_tensor(np.asarray(uvs), dtype=torch.float32, device=device))
        hid.append(torch.full((v.shape[0], 1), float(h), device=device))
        voff += v.shape[0]
        toff += len(uvs)
    V = torch.cat(verts)
    xc = V @ Rm.T + t
    z = xc[:, 2:3]
    px = (xc[:, :2] / z) @ K[:2, :2].T + K[:2, 2]
    # pixels -> NDC (OpenGL: y up); pixel centres at +0.5 as everywhere in the project
    ndc_x = px[:, 0:1] / Wp * 2 - 1
    ndc_y = 1 - px[:, 1:2] / Hp * 2
    ndc_z = (far + near) / (far - near) - 2 * far * near / ((far - near) * z)
    clip = torch.cat([ndc_x * z, ndc_y * z, ndc_z * z, z], 1)[None]
    tri = torch.cat(tris).contiguous()
    rast, _ = dr.rasterize(glctx, clip.contiguous(), tri, resolution=[Hp, Wp])
    uvattr, _ = dr.interpolate(torch.cat(uvv)[None], rast, torch.cat(uvt).contiguous())
    # hand index from the triangle id (1-based, 0 = background)
    tid = rast[0, ..., 3].long() - 1
    nf = torch.tensor([len(f) for f in faces], device=device).cumsum(0)
    hand = torch.where(tid >= 0, torch.searchsorted(nf, tid, right=True), torch.full_like(tid, -1))
    uvp = uvattr[0].flip(0)           # nvdiffrast's row 0 is the bottom (y up)
    hand = hand.flip(0)
    return _lookup_from_maps(uvp.detach().cpu().numpy(), hand.cpu().numpy())


def sample_textures(textures: torch.Tensor, lookup: ViewLookup) -> torch.Tensor:
    """textures [Hh, 3, R, R] (differentiable) -> [P, 3] bilinear samples at the lookup's pixels."""
    out = textures.new_zeros(lookup.pix.shape[0], textures.shape[1])
    for h in range(textures.shape[0]):
        sel = torch.nonzero(lookup.hand == h, as_tuple=False).squeeze(1)
        if sel.numel() == 0:
            continue
        g = lookup.grid[sel].to(textures.device).reshape(1, 1, -1, 2)
        s = F.grid_sample(textures[h:h + 1], g, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.index_copy(0, sel.to(textures.device), s[0, :, 0].T)
    return out


def project_image(textures: torch.Tensor, lookup: ViewLookup) -> torch.Tensor:
    """Full image [H, W, 3] (zeros off the hands) of ``textures`` [Hh, 3, R, R] seen through ``lookup``."""
    H, W = lookup.shape
    img = textures.new_zeros(H * W, textures.shape[1])
    img = img.index_copy(0, lookup.pix.to(textures.device), sample_textures(textures, lookup))
    return img.view(H, W, -1)


def log_l1_loss(pred: torch.Tensor, ref: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean ``|log1p(pred / s) - log1p(ref / s)|`` (module docstring)."""
    s = float(scale)
    return (torch.log1p(pred.clamp_min(0) / s) - torch.log1p(ref.clamp_min(0) / s)).abs().mean()


def l2_loss(pred: torch.Tensor, ref: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean ``((pred - ref) / s)^2`` (module docstring: unbiased under Monte-Carlo noise)."""
    return ((pred - ref) / float(scale)).square().mean()


LOSSES = {"l2": l2_loss, "log_l1": log_l1_loss}


def teacher_loss(pred, ref, scale, kind: str = "l2") -> torch.Tensor:
    """The one loss definition of both rasterization paths (``kind`` 'l2' or 'log_l1')."""
    return LOSSES[kind](pred, ref, scale)


def erode(mask: np.ndarray) -> np.ndarray:
    """3x3 erosion of a boolean / label mask (a pixel survives when its 8 neighbours share its label)."""
    m = np.asarray(mask)
    p = np.pad(m, 1, mode="constant")
    ok = np.ones(m.shape, bool)
    H, W = m.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            ok &= p[dy:dy + H, dx:dx + W] == m
    return ok & (m > 0)


def pose_key(scene, decimals: int = 5) -> str:
    """A hash of a scene's hand sides and pose parameters (frames with equal keys share geometry)."""
    h = hashlib.sha1()
    for hs in scene.hands:
        h.update(hs.side.encode())
        for a in (hs.pose, hs.global_orient, hs.transl):
            h.update(np.round(np.asarray(a, np.float64), decimals).tobytes())
    return h.hexdigest()[:16]


def frame_lights(capture, frame):
    """(light ids, positions [k, 3], intensities [k, 3]) of an OLAT / group frame."""
    pos, inten = capture.light_intensities(frame)
    return list(frame.lights_on), np.asarray(pos, np.float32), np.asarray(inten, np.float32)


@dataclass
class TrainingView:
    """One (frame, camera): the lookup restricted to training pixels and their reference radiance."""

    frame_id: str
    cam_id: str
    lookup: ViewLookup          # all hand pixels of the render (for images)
    train: ViewLookup           # pixels used by the loss
    target: torch.Tensor        # [P_train, 3] reference radiance
    camera_centre: np.ndarray


class ViewCache:
    """Per-(frame, camera) lookups and reference pixels, per-pose geometry and per-(pose, light)
    vertex visibility, built lazily and kept (the capture is small enough on the CPU machines;
    for a big capture use ``max_views`` to bound memory)."""

    def __init__(self, capture, engine, conditioning, *, denoise: bool = False):
        """``denoise``: training targets are the capture's images after Intel Open Image Denoise
        with noise-free albedo / normal guides (:mod:`relit_hands.tools.denoise`); the
        references of :func:`evaluate_frames` stay the raw images."""
        self.capture = capture
        self.engine = engine
        self.cond = conditioning
        self.denoise = bool(denoise)
        self._albedo = None  # the asset's albedo at R: the denoiser's guide, made once
        self.views: dict = {}
        self.geometry: dict = {}
        self.visibility: dict = {}

    def geo(self, frame):
        k = pose_key(frame.scene)
        g = self.geometry.get(k)
        if g is None:
            g = self.geometry[k] = self.cond.geometry(frame.scene)
        return g

    def vertex_visibility(self, frame, positions, ids):
        """Per hand [Vr, k] visibility of the frame's lights (cached per pose and light id)."""
        k = pose_key(frame.scene)
        missing = [i for i in ids if (k, i) not in self.visibility]
        if missing:
            g = self.geo(frame)
            rows = [ids.index(i) for i in missing]
            vis = g.vertex_visibility(light_pos=positions[rows])
            for j, i in enumerate(missing):
                self.visibility[(k, i)] = [v[:, j] for v in vis]
        H = len(frame.scene.hands)
        return [torch.stack([self.visibility[(k, i)][h] for i in ids], 1) for h in range(H)]

    def view(self, frame, cam_id) -> TrainingView:
        key = (frame.id, cam_id)
        v = self.views.get(key)
        if v is not None:
            return v
        cam = self.capture.cameras[cam_id]
        lk = view_lookup(self.engine, frame.scene, cam)
        img = self.capture.image(frame, cam_id)
        if self.denoise:
            from .denoise import denoise_image, view_guides

            if self._albedo is None:
                self._albedo = self.cond.asset.albedo_map(self.cond.resolution)
            img = denoise_image(img, *view_guides(lk, self._albedo, self.geo(frame).normal))
        mask = self.capture.mask(frame, cam_id)
        sides = [h.side for h in frame.scene.hands]
        label = np.array([1 if s == "right" else 2 for s in sides])
        interior = erode(mask).reshape(-1)
        m = mask.reshape(-1)
        pix = lk.pix.numpy()
        keep = interior[pix] & (m[pix] == label[lk.hand.numpy()])
        keep_t = torch.from_numpy(keep)
        tr = lk.subset(keep_t)
        target = torch.from_numpy(img.reshape(-1, 3)[tr.pix.numpy()].astype(np.float32))
        v = TrainingView(frame.id, cam_id, lk, tr, target, np.asarray(cam.center, np.float32))
        self.views[key] = v
        return v


def conditioning_for_frame(cache: ViewCache, frame, camera_centre, ids=None, positions=None):
    """(geometry, cond [H,k,C,R,R], falloff [H,k,1,R,R], intensities [k,3]) for a lit frame
    (C = 9, or 10 with the conditioning's translucency channel)."""
    fids, pos, inten = frame_lights(cache.capture, frame)
    if ids is None:
        ids, positions = fids, pos
    geo = cache.geo(frame)
    vis_v = cache.vertex_visibility(frame, positions, list(ids))
    p = torch.as_tensor(positions)
    wl = p[None, :, :, None, None] - geo.position[:, None]
    d = wl.norm(dim=2, keepdim=True).clamp_min(1e-4)
    trans_v = geo.vertex_transmittance(light_pos=positions) if cache.cond.mean_free_path else None
    cond = geo._conditioning(wl / d, d, vis_v, camera_centre, trans_v)
    falloff = (1.0 / d ** 2) * geo.valid.to(d.dtype)
    return geo, cond, falloff, torch.as_tensor(inten)
