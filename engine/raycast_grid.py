"""The per-light orthographic grid ("shadow-map binning") in pure torch, and the 'grid' backend.

``bin_triangles_per_light`` bins the scene's triangles per light direction (the candidate
lists the Triton grid kernel of :mod:`.raycast_triton` walks); ``GridRayCaster`` ('grid', CPU
or CUDA) tests each ray against its cell's list in torch: exact, the reference for the
binning; slow on CPU (use 'embree' there). ``morton_order`` is the Z-curve sort used for
coherent ray order and for the triangle clusters.
"""
from __future__ import annotations

import time

import torch

from .raycast import _DET_EPS, _as_tensor, _sync
from .raycast_reference import TorchRayCaster


def morton_order(points: torch.Tensor) -> torch.Tensor:
    """Permutation sorting points [M,3] along a 30-bit Morton (Z-order) curve."""
    p = points.float()
    lo = p.min(0).values
    ext = (p.max(0).values - lo).clamp_min(1e-12)
    q = ((p - lo) / ext * 1023.0).round().long().clamp(0, 1023)

    def spread(x):
        x = (x | (x << 16)) & 0x030000FF
        x = (x | (x << 8)) & 0x0300F00F
        x = (x | (x << 4)) & 0x030C30C3
        x = (x | (x << 2)) & 0x09249249
        return x

    code = (spread(q[:, 0]) << 2) | (spread(q[:, 1]) << 1) | spread(q[:, 2])
    return torch.argsort(code)


# ----------------------------------------------------------------------------- light grid
def _direction_basis(dirs: torch.Tensor) -> torch.Tensor:
    """[N,3] unit directions -> [N,2,3] orthonormal (a, b) spanning the plane normal to d."""
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=dirs.dtype, device=dirs.device).expand_as(dirs)
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=dirs.dtype, device=dirs.device).expand_as(dirs)
    helper = torch.where(dirs[:, :1].abs() < 0.9, ex, ey)
    a = torch.nn.functional.normalize(torch.cross(dirs, helper, dim=-1), dim=-1)
    b = torch.cross(dirs, a, dim=-1)
    return torch.stack([a, b], 1)


def bin_triangles_per_light(vertices: torch.Tensor, faces: torch.Tensor, directions: torch.Tensor,
                            grid: int) -> dict:
    """Per-light orthographic binning ("shadow-map" grid) of the scene's triangles.

    For light j, every triangle is projected onto the plane normal to d_j (basis a_j, b_j)
    and its 2-D bounding box (grown by a margin of 1e-5 x the scene extent) is binned into
    a grid x grid raster over the projected scene bounds. A ray o + t d_j can only hit
    triangles whose projection contains o's projection, hence only triangles listed in o's
    cell: an exact candidate set (cells are clamped at the border; a ray whose projection
    is outside the bounds misses everything, and the clamped cell's triangles are then
    rejected by the exact test). Returns CSR arrays: ``cell_start``/``cell_count``
    [N*G*G] into ``tri_list`` (int32 triangle ids), and ``basis`` [N,2,3], ``lo`` [N,2],
    ``inv_cell`` [N,2] to locate rays.
    """
    N, G = directions.shape[0], int(grid)
    K = faces.shape[0]
    basis = _direction_basis(directions)                                   # [N,2,3]
    pv = torch.einsum("nij,mj->nmi", basis, vertices)                      # [N,M,2]
    ext = float((vertices.amax(0) - vertices.amin(0)).max().clamp_min(1e-9))
    margin = 1e-5 * ext
    lo = pv.amin(1) - 2 * margin
    hi = pv.amax(1) + 2 * margin
    inv_cell = G / (hi - lo).clamp_min(1e-12)                              # [N,2]
    pt = pv[:, faces]                                                      # [N,K,3,2]
    c0 = ((pt.amin(2) - margin - lo[:, None]) * inv_cell[:, None]).floor().clamp(0, G - 1).long()
    c1 = ((pt.amax(2) + margin - lo[:, None]) * inv_cell[:, None]).floor().clamp(0, G - 1).long()
    nx = (c1[..., 0] - c0[..., 0] + 1).reshape(-1)
    ny = (c1[..., 1] - c0[..., 1] + 1).reshape(-1)
    cnt = nx * ny                                                          # [N*K]
    total = int(cnt.sum())
    flat = torch.repeat_interleave(torch.arange(N * K, device=vertices.device), cnt,
                                   output_size=total)
    first = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(total, device=vertices.device) - first[flat]
    w = nx[flat]
    cx = c0[..., 0].reshape(-1)[flat] + local % w
    cy = c0[..., 1].reshape(-1)[flat] + torch.div(local, w, rounding_mode="floor")
    j = torch.div(flat, K, rounding_mode="floor")
    key = (j * G + cy) * G + cx
    key_sorted, order = torch.sort(key)
    tri_list = (flat[order] - j[order] * K).to(torch.int32).contiguous()
    cell_count = torch.bincount(key_sorted, minlength=N * G * G)
    cell_start = torch.cumsum(cell_count, 0) - cell_count
    return {"basis": basis, "lo": lo, "inv_cell": inv_cell, "grid": G, "tri_list": tri_list,
            "cell_start": cell_start, "cell_count": cell_count, "entries": total}


def _ray_cells(bins: dict, origins: torch.Tensor, light_index: torch.Tensor):
    """(start, count) of each ray's candidate list in ``bins['tri_list']``."""
    G = bins["grid"]
    li = light_index.long()
    p = torch.einsum("rij,rj->ri", bins["basis"][li], origins)
    c = ((p - bins["lo"][li]) * bins["inv_cell"][li]).floor().clamp(0, G - 1).long()
    cell = (li * G + c[:, 1]) * G + c[:, 0]
    return bins["cell_start"][cell], bins["cell_count"][cell]


def default_grid_size(n_triangles: int) -> int:
    """~8 triangles per cell per layer: G = clamp(round(sqrt(K / 8)), 8, 64)."""
    return int(min(64, max(8, round((max(n_triangles, 1) / 8) ** 0.5))))


class GridRayCaster(TorchRayCaster):
    """Pure torch (CPU or CUDA) per-light grid: ``occluded_lights`` bins the triangles per
    light direction (``bin_triangles_per_light``) and tests each ray only against its cell's
    list (candidate pairs expanded with ``repeat_interleave``, exact Moller-Trumbore).
    Arbitrary rays (``occluded``) fall back to brute force. Exact like 'torch'; useful as a
    GPU path without Triton and to test the binning the Triton kernel uses."""

    name = "grid"

    def __init__(self, grid: int | None = None, max_elems: int = 1 << 22, device=None) -> None:
        super().__init__(max_elems=max_elems, device=device)
        self.grid = grid
        self.last_bin_ms = 0.0
        self.last_candidates = 0

    def build(self, vertices, faces) -> None:
        super().build(vertices, faces)
        self._v = _as_tensor(vertices, torch.float32, self.dev)
        self._f = _as_tensor(faces, torch.long, self.dev)

    def _bins(self, directions):
        t0 = time.perf_counter()
        d = torch.nn.functional.normalize(_as_tensor(directions, torch.float32, self.dev), dim=-1)
        G = self.grid or default_grid_size(self._f.shape[0])
        bins = bin_triangles_per_light(self._v, self._f, d, G)
        _sync(self.dev)
        self.last_bin_ms = (time.perf_counter() - t0) * 1e3
        return d, bins

    def occluded_lights(self, origins, light_index, directions) -> torch.Tensor:
        if self._f.shape[0] == 0:
            return torch.zeros(len(origins), dtype=torch.bool, device=self.dev)
        d, bins = self._bins(directions)
        t0 = time.perf_counter()
        o = _as_tensor(origins, torch.float32, self.dev)
        li = _as_tensor(light_index, torch.long, self.dev)
        start, cnt = _ray_cells(bins, o, li)
        out = torch.zeros(o.shape[0], dtype=torch.bool, device=self.dev)
        total = int(cnt.sum())
        self.last_candidates = total
        if total:
            ray = torch.repeat_interleave(torch.arange(o.shape[0], device=self.dev), cnt,
                                          output_size=total)
            first = torch.cumsum(cnt, 0) - cnt
            pos = start[ray] + torch.arange(total, device=self.dev) - first[ray]
            tri = bins["tri_list"][pos].long()
            step = max(1, self.max_elems)
            for s in range(0, total, step):
                r_, t_ = ray[s:s + step], tri[s:s + step]
                hit = _mt_pairs(o[r_], d[li[r_]], self.v0[t_], self.e1[t_], self.e2[t_])
                out.index_put_((r_[hit],), torch.ones_like(r_[hit], dtype=torch.bool))
        _sync(self.dev)
        self.last_query_ms = (time.perf_counter() - t0) * 1e3 + self.last_bin_ms
        return out


def _mt_pairs(o, d, v0, e1, e2) -> torch.Tensor:
    """Moller-Trumbore on paired rows (ray i vs triangle i) -> bool [P]; same arithmetic."""
    p = torch.cross(d, e2, dim=-1)
    det = (e1 * p).sum(-1)
    ok = det.abs() > _DET_EPS
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    tv = o - v0
    u = (tv * p).sum(-1) * inv
    q = torch.cross(tv, e1, dim=-1)
    v = (d * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    return ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
