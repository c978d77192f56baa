"""Per-vertex proxy features -> UV-space feature maps [H, C, R, R].

Precomputation (once per UV layout and resolution R, cached on disk):
  * texel (row, col) has its centre at (u, v) = ((col + 0.5) / R, (row + 0.5) / R)
    (conventions.md: row = v * R, col = u * R, v = 0 is row 0, no flips);
  * each texel centre is located in the proxy's UV triangles (``proxy_uvs [T,2]``,
    ``proxy_uv_faces [F,3]``; UV triangle f is position triangle f, i.e. it is parallel to
    ``faces``): barycentrics (b0, b1, b2) w.r.t. the UV corners, inclusive of the edges
    (tolerance 1e-6 so that no crack opens between adjacent triangles); where several
    triangles contain the centre (shared edges, overlapping charts) the one whose smallest
    barycentric is largest wins; ``mask [R,R]`` (bool) = texels covered this way;
  * seam dilation: a texel not covered but within ``dilation`` texels (Euclidean, texel
    centres) of a covered one copies the (triangle, barycentrics) lookup of its nearest
    covered texel (``scipy.ndimage.distance_transform_edt(..., return_indices=True)``).
    Values just outside a chart are thus the chart-border values extended outward
    (constant along the nearest-point direction, no extrapolation overshoot), so the
    student's convolutions see no holes/black seams near chart borders. Texels further
    away have no lookup and gather to 0. ``valid [R,R]`` = texels with a lookup.
    Default ``dilation`` = max(4, R // 32).

Gather (every frame): with the per-texel proxy vertex indices i_k = faces[tri, k] and
weights b_k, ``map[h, :, row, col] = sum_k b_k * features[h, i_k, :]`` -- one
``torch.nn.functional.embedding_bag(mode='sum', per_sample_weights=b)`` over all texels of
all hands (texels without a lookup have zero weights), CPU or CUDA; the result is
[H,C,R,R] in channels_last memory format (``contiguous=True`` for NCHW-contiguous). Because barycentric interpolation is linear, a per-vertex feature that is a
linear function of position is reproduced exactly at the interpolated 3-D position.

Disk cache: ``$RELIT_HANDS_CACHE`` or ``~/.cache/relit_hands``, subfolder ``uv_maps``, one npz
per (sha1 of the uv arrays, R, dilation, format version).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = ["UVRasterizer", "uv_feature_maps", "rasterize_uv", "cache_dir"]

_FORMAT_VERSION = 1
_BARY_TOL = 1e-6


def _cache_entry_ok(data: dict, R: int, n_faces: int) -> bool:
    """A cached texel table is used only if its shapes, dtypes and value ranges are right."""
    tri, bary, mask = data["tri"], data["bary"], data["mask"]
    if tri.shape != (R, R) or mask.shape != (R, R) or bary.shape != (R, R, 3):
        return False
    if tri.dtype.kind not in "iu" or bary.dtype.kind != "f" or mask.dtype != bool:
        return False
    if tri.size and (tri.min() < -1 or tri.max() >= n_faces):
        return False
    return bool(np.isfinite(bary).all())


def cache_dir() -> Path:
    root = os.environ.get("RELIT_HANDS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "relit_hands"
    return base / "uv_maps"


def default_dilation(resolution: int) -> int:
    return max(4, int(resolution) // 32)


def rasterize_uv(uvs: np.ndarray, uv_faces: np.ndarray, resolution: int
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Texel-centre point location in UV triangles (vectorised numpy).

    Returns ``tri [R,R] int32`` (-1 = uncovered) and ``bary [R,R,3] float32``.
    """
    R = int(resolution)
    uv = np.asarray(uvs, dtype=np.float64)
    fu = np.asarray(uv_faces, dtype=np.int64)
    P = uv[fu] * R - 0.5                   # corners in "texel-centre index" coordinates
    a, b, c = P[:, 0], P[:, 1], P[:, 2]    # [F,2] (x = col, y = row)
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    good = np.abs(det) > 1e-14
    lo = np.clip(np.ceil(P.min(1) - 1e-9), 0, R - 1).astype(np.int64)   # [F,2]
    hi = np.clip(np.floor(P.max(1) + 1e-9), 0, R - 1).astype(np.int64)
    nx = np.where(good, hi[:, 0] - lo[:, 0] + 1, 0).clip(0)
    ny = np.where(good, hi[:, 1] - lo[:, 1] + 1, 0).clip(0)
    cnt = nx * ny
    tri_all = np.empty(0, np.int64)
    tex_all = np.empty(0, np.int64)
    bary_all = np.empty((0, 3), np.float64)
    score_all = np.empty(0, np.float64)
    # process triangles in batches to bound memory at R = 1024
    order = np.arange(len(fu))
    batch_cap = 4_000_000
    start = 0
    pieces = []
    while start < len(order):
        csum = np.cumsum(cnt[start:])
        end = start + max(1, int(np.searchsorted(csum, batch_cap, side="right")))
        sl = slice(start, end)
        c_ = cnt[sl]
        tot = int(c_.sum())
        if tot:
            fid = np.repeat(np.arange(start, end), c_)
            first = np.repeat(np.cumsum(c_) - c_, c_)
            k = np.arange(tot) - first
            w = nx[fid]
            col = lo[fid, 0] + k % w
            row = lo[fid, 1] + k // w
            px = col.astype(np.float64)
            py = row.astype(np.float64)
            ax, ay = a[fid, 0], a[fid, 1]
            bx, by = b[fid, 0], b[fid, 1]
            cx, cy = c[fid, 0], c[fid, 1]
            d = det[fid]
            b1 = ((px - ax) * (cy - ay) - (cx - ax) * (py - ay)) / d
            b2 = ((bx - ax) * (py - ay) - (px - ax) * (by - ay)) / d
            b0 = 1.0 - b1 - b2
            mn = np.minimum(np.minimum(b0, b1), b2)
            inside = mn >= -_BARY_TOL
            pieces.append((fid[inside], (row * R + col)[inside],
                           np.stack([b0, b1, b2], 1)[inside], mn[inside]))
        start = end
    if pieces:
        tri_all = np.concatenate([p[0] for p in pieces])
        tex_all = np.concatenate([p[1] for p in pieces])
        bary_all = np.concatenate([p[2] for p in pieces])
        score_all = np.concatenate([p[3] for p in pieces])
    tri = np.full(R * R, -1, np.int32)
    bary = np.zeros((R * R, 3), np.float32)
    if tex_all.size:
        # best (most interior) candidate per texel: sort by texel, then by -score
        o = np.lexsort((-score_all, tex_all))
        tex_s = tex_all[o]
        keep = np.ones(tex_s.size, bool)
        keep[1:] = tex_s[1:] != tex_s[:-1]
        sel = o[keep]
        bb = np.clip(bary_all[sel], 0.0, None)
        bb /= bb.sum(1, keepdims=True)         # clip the edge tolerance, renormalise
        tri[tex_all[sel]] = tri_all[sel]
        bary[tex_all[sel]] = bb
    return tri.reshape(R, R), bary.reshape(R, R, 3)


def _dilate(tri: np.ndarray, bary: np.ndarray, dilation: int):
    from scipy.ndimage import distance_transform_edt

    covered = tri >= 0
    if dilation <= 0 or covered.all() or not covered.any():
        return tri.copy(), bary.copy()
    dist, (ir, ic) = distance_transform_edt(~covered, return_indices=True)
    take = (~covered) & (dist <= dilation)
    tri2 = tri.copy()
    bary2 = bary.copy()
    tri2[take] = tri[ir[take], ic[take]]
    bary2[take] = bary[ir[take], ic[take]]
    return tri2, bary2


def _uv_key(uvs: np.ndarray, uv_faces: np.ndarray, R: int, dilation: int) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(uvs, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(uv_faces, dtype=np.int64).tobytes())
    h.update(f"R={R};D={dilation};v={_FORMAT_VERSION}".encode())
    return h.hexdigest()[:24]


class UVRasterizer:
    """Texel -> (proxy triangle, barycentrics) lookup for one UV layout and resolution.

    Attributes (numpy): ``tri [R,R] int32`` (after dilation, -1 = none), ``bary [R,R,3]``,
    ``mask [R,R] bool`` (covered by a UV triangle), ``valid [R,R] bool`` (has a lookup after
    dilation). ``gather(features [H,V,C], faces [F,3]) -> [H,C,R,R]`` (torch).
    """

    def __init__(self, uvs, uv_faces, resolution: int, dilation: Optional[int] = None,
                 faces=None, use_cache: bool = True) -> None:
        uvs = np.asarray(uvs.detach().cpu() if isinstance(uvs, torch.Tensor) else uvs,
                         dtype=np.float32)
        uv_faces = np.asarray(uv_faces.detach().cpu() if isinstance(uv_faces, torch.Tensor)
                              else uv_faces, dtype=np.int64)
        self.resolution = R = int(resolution)
        self.dilation = default_dilation(R) if dilation is None else int(dilation)
        self.n_faces = int(uv_faces.shape[0])
        self.cache_path = None
        self.loaded_from_cache = False
        data = None
        if use_cache:
            self.cache_path = cache_dir() / f"{_uv_key(uvs, uv_faces, R, self.dilation)}.npz"
            if self.cache_path.is_file():
                try:
                    with np.load(self.cache_path, allow_pickle=False) as z:
                        data = {k: z[k] for k in ("tri", "bary", "mask")}
                    if not _cache_entry_ok(data, R, self.n_faces):
                        raise ValueError("corrupt cache entry")
                    self.loaded_from_cache = True
                except Exception:  # corrupt / truncated / foreign entry: rebuilt and rewritten below
                    data = None
        if data is None:
            tri0, bary0 = rasterize_uv(uvs, uv_faces, R)
            tri, bary = _dilate(tri0, bary0, self.dilation)
            data = {"tri": tri, "bary": bary, "mask": tri0 >= 0}
            if use_cache:
                try:
                    self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}.npz")
                    np.savez_compressed(tmp, **data)
                    os.replace(tmp, self.cache_path)
                except OSError:
                    pass  # a read-only cache is not an error
        self.tri = data["tri"].astype(np.int32)
        self.bary = data["bary"].astype(np.float32)
        self.mask = data["mask"].astype(bool)
        self.valid = self.tri >= 0
        self._dev_cache: Dict[Tuple[str, int, int], tuple] = {}
        self._faces = None if faces is None else torch.as_tensor(np.asarray(
            faces.detach().cpu() if isinstance(faces, torch.Tensor) else faces), dtype=torch.long)

    def mask_tensor(self, device=None) -> torch.Tensor:
        return torch.from_numpy(self.mask).to(device)

    def _lookup(self, faces, device, H: int, V: int):
        """Dense per-texel (vertex index [H*R*R, 3], weight [H*R*R, 3]) on ``device``,
        vertex indices offset by h*V for hand h; cached per (device, H, V, faces)."""
        f = self._faces if faces is None else (faces if isinstance(faces, torch.Tensor)
                                               else torch.as_tensor(np.asarray(faces)))
        if f is None:
            raise ValueError("gather needs faces (pass them here or to the constructor)")
        f = f.to(torch.long)
        if f.shape[0] != self.n_faces:
            raise ValueError(f"faces has {f.shape[0]} rows, the UV layout {self.n_faces}")
        key = (str(torch.device(device)), H, V)
        hit = self._dev_cache.get(key)
        fc = f.detach().cpu()
        if hit is not None and hit[0].shape == fc.shape and torch.equal(hit[0], fc):
            return hit[1], hit[2]
        tri = torch.from_numpy(self.tri.reshape(-1)).long()
        valid = tri >= 0
        vidx = fc[tri.clamp_min(0)]                                       # [RR,3]
        w = torch.from_numpy(self.bary.reshape(-1, 3)).clone()
        w[~valid] = 0.0                                                   # no lookup -> 0
        off = (torch.arange(H) * V)[:, None, None]
        vidx_h = (vidx[None] + off).reshape(-1, 3)                        # [H*RR,3]
        w_h = w[None].expand(H, -1, -1).reshape(-1, 3)
        entry = (fc.clone(), vidx_h.to(device), w_h.contiguous().to(device))
        self._dev_cache[key] = entry
        return entry[1], entry[2]

    def gather(self, features, faces=None, contiguous: bool = False) -> torch.Tensor:
        """features [H,V,C] (or [V,C]) torch/numpy -> maps [H,C,R,R] (zeros where there is
        no lookup). ``faces [F,3]`` is the proxy position topology parallel to ``uv_faces``
        (or given to the constructor).

        One ``embedding_bag(mode='sum', per_sample_weights=barycentrics)`` over all hands'
        texels (CPU and CUDA). The result is returned in ``torch.channels_last`` memory
        format (that is how the texel-major gather lands; convolutions take it directly);
        ``contiguous=True`` returns a standard NCHW-contiguous tensor instead (one copy).
        """
        f = features if isinstance(features, torch.Tensor) else torch.as_tensor(
            np.asarray(features))
        if f.dim() == 2:
            f = f[None]
        H, V, C = f.shape
        R = self.resolution
        vidx, w = self._lookup(faces, f.device, H, V)
        if not f.is_floating_point():
            f = f.float()
        out = torch.nn.functional.embedding_bag(vidx, f.reshape(H * V, C),
                                                per_sample_weights=w.to(f.dtype), mode="sum")
        out = out.view(H, R, R, C).permute(0, 3, 1, 2)                    # channels_last
        return out.contiguous() if contiguous else out

    __call__ = gather


_RASTERIZERS: Dict[tuple, UVRasterizer] = {}


def uv_feature_maps(features, faces, uvs, uv_faces, resolution: int,
                    dilation: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Convenience: ``(maps [H,C,R,R], mask [R,R] bool)`` with a memoised ``UVRasterizer``."""
    uvs_np = np.asarray(uvs.detach().cpu() if isinstance(uvs, torch.Tensor) else uvs,
                        np.float32)
    uvf_np = np.asarray(uv_faces.detach().cpu() if isinstance(uv_faces, torch.Tensor)
                        else uv_faces, np.int64)
    D = default_dilation(resolution) if dilation is None else int(dilation)
    key = (_uv_key(uvs_np, uvf_np, int(resolution), D),)
    r = _RASTERIZERS.get(key)
    if r is None:
        r = _RASTERIZERS[key] = UVRasterizer(uvs_np, uvf_np, resolution, D)
    maps = r.gather(features, faces)
    return maps, r.mask_tensor(maps.device)
