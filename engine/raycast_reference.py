"""The 'torch' ray casting backend: brute-force reference (every ray against every triangle).

Moller-Trumbore of every ray against every triangle, chunked so one chunk holds about
``max_elems`` (default 2**22) ray-triangle pairs. CPU or CUDA (follows the input device).
The ground truth of the tests; the other backends use the same arithmetic.
"""
from __future__ import annotations

import time

import torch

from .raycast import _DET_EPS, RayCaster, _as_tensor, _sync


def _moller_trumbore_any(o, d, v0, e1, e2, tmin: float = 0.0) -> torch.Tensor:
    """o, d [r,3]; v0, e1, e2 [k,3] -> bool [r]: ray hits any triangle at t > tmin.
    The same arithmetic as the Triton kernel (pvec = d x e2, det = e1 . pvec ...)."""
    dx, dy, dz = (d[:, i:i + 1] for i in range(3))
    e1x, e1y, e1z = e1[:, 0], e1[:, 1], e1[:, 2]
    e2x, e2y, e2z = e2[:, 0], e2[:, 1], e2[:, 2]
    px = dy * e2z - dz * e2y
    py = dz * e2x - dx * e2z
    pz = dx * e2y - dy * e2x
    det = e1x * px + e1y * py + e1z * pz
    ok = det.abs() > _DET_EPS
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    tx = o[:, 0:1] - v0[:, 0]
    ty = o[:, 1:2] - v0[:, 1]
    tz = o[:, 2:3] - v0[:, 2]
    u = (tx * px + ty * py + tz * pz) * inv
    del px, py, pz
    qx = ty * e1z - tz * e1y
    qy = tz * e1x - tx * e1z
    qz = tx * e1y - ty * e1x
    del tx, ty, tz
    v = (dx * qx + dy * qy + dz * qz) * inv
    t = (e2x * qx + e2y * qy + e2z * qz) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > tmin)
    return hit.any(dim=1)


def _moller_trumbore_nearest(o, d, v0, e1, e2, tmin: float = 0.0) -> torch.Tensor:
    """o, d [r,3]; v0, e1, e2 [k,3] -> float [r]: smallest t > tmin over the triangles hit
    (``inf`` when none). Same arithmetic as :func:`_moller_trumbore_any`."""
    dx, dy, dz = (d[:, i:i + 1] for i in range(3))
    px = dy * e2[:, 2] - dz * e2[:, 1]
    py = dz * e2[:, 0] - dx * e2[:, 2]
    pz = dx * e2[:, 1] - dy * e2[:, 0]
    det = e1[:, 0] * px + e1[:, 1] * py + e1[:, 2] * pz
    ok = det.abs() > _DET_EPS
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    tx, ty, tz = o[:, 0:1] - v0[:, 0], o[:, 1:2] - v0[:, 1], o[:, 2:3] - v0[:, 2]
    u = (tx * px + ty * py + tz * pz) * inv
    qx = ty * e1[:, 2] - tz * e1[:, 1]
    qy = tz * e1[:, 0] - tx * e1[:, 2]
    qz = tx * e1[:, 1] - ty * e1[:, 0]
    v = (dx * qx + dy * qy + dz * qz) * inv
    t = (e2[:, 0] * qx + e2[:, 1] * qy + e2[:, 2] * qz) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > tmin)
    return torch.where(hit, t, torch.full_like(t, float("inf"))).amin(dim=1)


class TorchRayCaster(RayCaster):
    """Brute-force reference (every ray x every triangle), chunked to ~max_elems pairs."""

    name = "torch"

    def __init__(self, max_elems: int = 1 << 22, device=None) -> None:
        super().__init__()
        self.max_elems = int(max_elems)
        self.device = device

    def build(self, vertices, faces) -> None:
        t0 = time.perf_counter()
        dev = self.device if self.device is not None else (
            vertices.device if isinstance(vertices, torch.Tensor) else "cpu")
        v = _as_tensor(vertices, torch.float32, dev)
        f = _as_tensor(faces, torch.long, dev)
        tri = v[f]  # [K,3,3]
        self.v0 = tri[:, 0].contiguous()
        self.e1 = (tri[:, 1] - tri[:, 0]).contiguous()
        self.e2 = (tri[:, 2] - tri[:, 0]).contiguous()
        self.dev = dev
        self.last_build_ms = (time.perf_counter() - t0) * 1e3

    def _chunked(self, fn, origins, dirs, dtype) -> torch.Tensor:
        t0 = time.perf_counter()
        o = _as_tensor(origins, torch.float32, self.dev)
        d = _as_tensor(dirs, torch.float32, self.dev)
        k = max(1, self.v0.shape[0])
        chunk = max(1, self.max_elems // k)
        out = torch.empty(o.shape[0], dtype=dtype, device=self.dev)
        for s in range(0, o.shape[0], chunk):
            out[s:s + chunk] = fn(o[s:s + chunk], d[s:s + chunk], self.v0, self.e1, self.e2)
        _sync(self.dev)
        self.last_query_ms = (time.perf_counter() - t0) * 1e3
        return out

    def occluded(self, origins, dirs) -> torch.Tensor:
        return self._chunked(_moller_trumbore_any, origins, dirs, torch.bool)

    def hit_distance(self, origins, dirs) -> torch.Tensor:
        return self._chunked(_moller_trumbore_nearest, origins, dirs, torch.float32)
