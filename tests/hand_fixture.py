"""A small synthetic right-hand asset in the npz layout of docs/conventions.md, for tests.

Canonical frame: wrist at the origin, fingers along +X, palm normal -Y, thumb on the -Z side.
Proxy = one octagonal tube per bone (joint -> child joint or fingertip) plus a palm slab,
soft LBS weights from the distance to the bones; render mesh = one midpoint subdivision of the
proxy (so render_proxy_face / render_proxy_bary are exact).  ~1k proxy / ~4k render vertices.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from relit_hands.hand_model import PARENTS, HandAsset, default_asset_path

_FINGERS = {  # first joint, knuckle, splay (deg, from +X toward +Z), phalanx lengths, tip index
    "index": (1, (0.094, 0.0, -0.025), -6.0, (0.040, 0.025, 0.021), 1),
    "middle": (4, (0.096, 0.0, -0.004), -1.0, (0.045, 0.028, 0.022), 2),
    "pinky": (7, (0.081, 0.0, 0.035), 12.0, (0.033, 0.020, 0.019), 4),
    "ring": (10, (0.090, 0.0, 0.016), 5.0, (0.042, 0.027, 0.021), 3),
}


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def skeleton():
    """(joints [16,3], tips [5,3] thumb,index,middle,ring,pinky, radius per bone [16])."""
    J = np.zeros((16, 3))
    tips = np.zeros((5, 3))
    rad = np.full(16, 0.0085)
    for name, (j0, mcp, splay, lengths, ti) in _FINGERS.items():
        a = np.radians(splay)
        d = np.array([np.cos(a), 0.0, np.sin(a)])
        p = np.array(mcp, dtype=np.float64)
        for k in range(3):
            J[j0 + k] = p
            rad[j0 + k] = 0.0090 - 0.0008 * k
            p = p + lengths[k] * d
        tips[ti] = p
    p = np.array([0.022, -0.007, -0.022])
    for k, (ang, length) in enumerate([(-42.0, 0.046), (-30.0, 0.032), (-22.0, 0.027)]):
        a = np.radians(ang)
        d = _unit([np.cos(a), -0.06, np.sin(a)])
        J[13 + k] = p
        rad[13 + k] = 0.0105 - 0.0008 * k
        p = p + length * d
    tips[0] = p
    rad[0] = 0.0
    return J, tips, rad


def bone_segments(J, tips):
    """Bone j's segment (start, end) for j = 1..15; bone 0 = wrist -> each first finger joint."""
    tip_of = {3: 1, 6: 2, 9: 4, 12: 3, 15: 0}
    seg = {}
    for j in range(1, 16):
        child = [c for c in range(16) if PARENTS[c] == j]
        end = J[child[0]] if child else tips[tip_of[j]]
        seg[j] = [(J[j], end)]
    seg[0] = [(J[0], J[c]) for c in range(16) if PARENTS[c] == 0]
    return seg


def _seg_dist(p, a, b):
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _tube(a, b, r, n_stations=6, n_around=8, cap_end=True):
    axis = _unit(b - a)
    up = np.array([0.0, 1.0, 0.0])
    up = _unit(up - axis * (up @ axis))
    side = np.cross(axis, up)
    ang = 2 * np.pi * np.arange(n_around) / n_around
    ring = np.cos(ang)[:, None] * side + np.sin(ang)[:, None] * up
    V, F = [], []
    for s in range(n_stations):
        t = s / (n_stations - 1)
        V.extend(a + t * (b - a) + r * ring)
    for s in range(n_stations - 1):
        for k in range(n_around):
            i0, i1 = s * n_around + k, s * n_around + (k + 1) % n_around
            j0, j1 = i0 + n_around, i1 + n_around
            F += [[i0, j0, i1], [i1, j0, j1]]
    c1 = len(V)  # open at the start (inside the parent bone / palm); end cap for fingertips only
    base = (n_stations - 1) * n_around
    if cap_end:
        V.append(b)
        for k in range(n_around):
            F.append([c1, base + k, base + (k + 1) % n_around])
    V = np.array(V)
    F = np.array(F)
    # make the winding outward (CCW seen from outside)
    cen = V[F].mean(1)
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    mid = (a + b) / 2
    outward = ((cen - mid) * n).sum(1) >= 0
    F[~outward] = F[~outward][:, [0, 2, 1]]
    return V, F, c1


def _box(center, half):
    s = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    V = center + s * half
    F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    out = ((V[F].mean(1) - center) * n).sum(1) >= 0
    F[~out] = F[~out][:, [0, 2, 1]]
    return V, F


def _subdivide(V, F):
    """Midpoint subdivision. Returns V2, F2, proxy face and barycentrics of each new vertex."""
    nV = len(V)
    edges = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    inv = inv.reshape(3, -1).T  # [F, 3] edge ids of (01, 12, 20)
    mids = (V[uniq[:, 0]] + V[uniq[:, 1]]) / 2
    V2 = np.concatenate([V, mids])
    m = nV + inv
    a, b, c = F[:, 0], F[:, 1], F[:, 2]
    m01, m12, m20 = m[:, 0], m[:, 1], m[:, 2]
    F2 = np.concatenate([np.stack([a, m01, m20], 1), np.stack([m01, b, m12], 1),
                         np.stack([m20, m12, c], 1), np.stack([m01, m12, m20], 1)])
    face = np.zeros(len(V2), dtype=np.int64)
    bary = np.zeros((len(V2), 3))
    for k in range(3):  # original vertices
        face[F[:, k]] = np.arange(len(F))
        bary[F[:, k]] = np.eye(3)[k]
    for k, (p, q) in enumerate([(0, 1), (1, 2), (2, 0)]):
        e = nV + inv[:, k]
        face[e] = np.arange(len(F))
        w = np.zeros(3)
        w[p] = w[q] = 0.5
        bary[e] = w
    return V2, F2, face, bary


def make_fixture_arrays(sigma: float = 0.006) -> dict:
    J, tips, rad = skeleton()
    seg = bone_segments(J, tips)
    Vs, Fs, tip_ids = [], [], {}
    off = 0
    tip_of = {3: 1, 6: 2, 9: 4, 12: 3, 15: 0}
    for j in range(1, 16):
        a, b = seg[j][0]
        V, F, c1 = _tube(a, b, rad[j], cap_end=j in tip_of)
        Vs.append(V)
        Fs.append(F + off)
        if j in tip_of:
            tip_ids[tip_of[j]] = off + c1
        off += len(V)
    Vb, Fb = _box(np.array([0.045, 0.0, 0.004]), np.array([0.045, 0.009, 0.036]))
    Vs.append(Vb)
    Fs.append(Fb + off)
    Vp = np.concatenate(Vs)
    Fp = np.concatenate(Fs)

    def weights(P):
        D = np.stack([np.min([_seg_dist(P, a, b) for a, b in seg[j]], axis=0) for j in range(16)], 1)
        W = np.exp(-((D - D.min(1, keepdims=True)) / sigma) ** 2)
        W[W < 1e-4] = 0.0
        return W / W.sum(1, keepdims=True)

    Vr, Fr, rface, rbary = _subdivide(Vp, Fp)

    def uvs(P):
        lo, hi = P.min(0), P.max(0)
        return ((P[:, [0, 2]] - lo[[0, 2]]) / (hi - lo)[[0, 2]]).clip(0, 1)

    ptips = np.array([tip_ids[i] for i in range(5)])
    return dict(
        render_vertices=Vr.astype(np.float32), render_faces=Fr.astype(np.int32),
        render_uvs=uvs(Vr).astype(np.float32), render_uv_faces=Fr.astype(np.int32),
        render_weights=weights(Vr).astype(np.float32),
        proxy_vertices=Vp.astype(np.float32), proxy_faces=Fp.astype(np.int32),
        proxy_uvs=uvs(Vp).astype(np.float32), proxy_uv_faces=Fp.astype(np.int32),
        proxy_weights=weights(Vp).astype(np.float32),
        render_proxy_face=rface.astype(np.int32), render_proxy_bary=rbary.astype(np.float32),
        joints=J.astype(np.float32), parents=PARENTS.copy(),
        tip_vertex_ids=ptips.astype(np.int32),  # proxy vertices keep their ids in the render mesh
        proxy_tip_vertex_ids=ptips.astype(np.int32),
        render_region=np.zeros(len(Vr), dtype=np.uint8),
        render_face_parent=np.tile(np.arange(len(Fp)), 4).astype(np.int32),
    )


_CACHE: dict = {}


def fixture_asset() -> HandAsset:
    if "fx" not in _CACHE:
        _CACHE["fx"] = HandAsset.from_arrays(make_fixture_arrays(), source="<test fixture>")
    return _CACHE["fx"]


def shipped_asset_path() -> Path:
    return default_asset_path()


def get_asset(name: str) -> HandAsset:
    """'fixture' or 'shipped' (the caller skips 'shipped' when the file is missing)."""
    if name == "fixture":
        return fixture_asset()
    if "shipped" not in _CACHE:
        _CACHE["shipped"] = HandAsset.load(shipped_asset_path())
    return _CACHE["shipped"]


ASSET_PARAMS = ["fixture", "shipped"]


def asset_param(request_param: str):
    """Helper for parametrized pytest fixtures: skip only 'shipped' when the file is missing."""
    import pytest

    if request_param == "shipped" and not shipped_asset_path().is_file():
        pytest.skip(f"shipped asset not built yet: {shipped_asset_path()}")
    return get_asset(request_param)
