"""Seam stitching: make per-hand UV radiance textures continuous across the atlas's chart borders.

A UV-space network predicts every chart on its own, so the two UV copies of a point on a chart
border (a UV seam) get different values and the rendered hand shows a crease there. This module
precomputes, once per UV layout and resolution R, a sparse linear operator that removes that jump,
and applies it to textures every frame with two fixed-width gathers (no per-frame Python loops).

Conventions (docs/conventions.md, :mod:`.uv_maps`): texel (row, col) has its centre at
(u, v) = ((col + 0.5) / R, (row + 0.5) / R); *texel coordinates* here are the continuous
(x, y) = (u * R - 0.5, v * R - 0.5), i.e. x = col, y = row at texel centres. Textures are sampled
bilinearly with clamp-to-edge (the GL compositor's ``LINEAR`` radiance texture, nvdiffrast's
``filter_mode='linear', boundary_mode='clamp'``): a sample at (x, y) reads the 2 x 2 texels
around it. Distances below are in texels (of the resolution R).

Construction (numpy / scipy, float64; :func:`build_stitch_operator`):

1. **Seam edges** (:func:`seam_edges`): mesh edges of the render mesh (``render_faces``) whose two
   incident faces use different UV corners (``render_uv_faces`` into ``render_uvs``); for each,
   the UV corners of its two vertices on side A and on side B.
2. **Seam samples** (:func:`seam_samples`): every seam edge sampled at the midpoints of
   ``n = ceil(max(len_A, len_B) / spacing)`` equal steps (lengths in texels): the same 3-D point
   at texel coordinates ``xy_a`` (side A) and ``xy_b`` (side B). Each pair gives two *sided
   samples*: (self = A, partner = B) and (self = B, partner = A), each with the chart of its own
   side's face.
3. **Discrepancy** ``c_s`` of sided sample s (operator ``G``, 8 entries per row):
   ``c_s = 0.5 * (bilerp(T, partner) - bilerp(T, self))``: adding c_s to the texels around
   ``self`` (and -c_s on the other side) moves both sides to the average of the two.
4. **Texel charts** (:func:`texel_charts`): the chart (connected component of the UV topology) of
   the render UV triangle covering each texel centre; texels not covered but within ``margin``
   texels of a covered one take the chart of their nearest covered texel (``inside`` False);
   texels a sided sample reads that no chart claimed (the tip of a chart thinner than a texel)
   take the chart of the nearest such sample.
5. **Spread** (operator ``W``, ``k`` entries per row): each texel t of chart C with distance
   ``d < flat + band`` to C's nearest sided sample, inside C or outside it (margin),
   receives ``delta_t = phi(t) * sum_j w_j c_{s_j}`` over its ``k`` nearest sided samples of
   chart C, ``w_j`` proportional to ``g(d_j) - g(d_{k+1})`` with ``g(r) = exp(-(r^2 - d^2) /
   (2 sigma^2))`` (sum 1: a Gaussian of width ``sigma`` along the seam, which smooths the
   correction along it; the (k+1)-th nearest sample's weight is subtracted so that a sample's
   weight is 0 where it enters or leaves the k nearest, i.e. delta is continuous over the band),
   and the falloff ``phi = 1`` for margin texels and for ``d <= flat``,
   ``0.5 * (1 + cos(pi * (d - flat) / band))`` for ``flat < d < flat + band``, 0 beyond. ``phi`` is
   C1-continuous at both ends of the ramp, so no new step appears at the band's inner edge;
   ``flat`` (default 1.5 texels) covers every texel of a border sample's bilinear footprint, so
   the two bilinear reads of a seam point agree after stitching.

Limits: values are matched (C0), not slopes, so where the two sides' shading slopes differ a soft
crease can remain; where three or more charts meet (junctions) the pairwise averages disagree, and
slits or spikes of a chart narrower than a texel hold texels both sides want, so the reads there
still differ somewhat (hand_v2 at R = 256: the mean |A - B| of a texture constant per chart drops
to ~5 % of its value before, the median to 0; the rest sits at junctions and slivers).

Apply (:class:`SeamStitcher`, :func:`stitch_seams`): ``out = T + scatter(W @ (G @ T))``, both
products as fixed-width gathers (``embedding_bag``) over the channels of all hands at once; CPU or
CUDA, any float dtype; the input is not modified. With ``albedo`` the same in shading space,
``out = T + A * scatter(W @ (G @ (T / A)))``; the engine (:func:`stitch_student_textures`) does
that with the asset's albedo map and clamps at 0. The correction is antisymmetric across each seam
(side A gets +c, side B -c, over bands of the same width in texels), so the total is kept; a
chart's mean moves by at most half its largest jump times the band's share of its area (a few
percent for hand_v2's charts and jumps of a few percent; small charts whose area is all band,
such as a nail, move further toward their neighbours).

Both hands use the same operator: the left hand's layout is the mirror of the right's with the same
UVs (hand_model.HandAsset.mirrored), hence the same seams and texel grid.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = ["seam_edges", "uv_face_charts", "seam_samples", "texel_charts", "bilinear_footprint",
           "SeamStitchOperator", "build_stitch_operator", "SeamStitcher", "seam_stitcher", "stitch_seams",
           "stitch_student_textures"]


def seam_edges(faces, uv_faces) -> Dict[str, np.ndarray]:
    """Mesh edges cut by the UV layout.

    ``faces [F, 3]`` position topology, ``uv_faces [F, 3]`` the parallel UV topology (corner k of
    face f is vertex ``faces[f, k]`` at UV ``uv_faces[f, k]``). An edge shared by two faces is a seam
    when the two faces give its vertices different UV indices; boundary edges (one face) are not
    seams; an edge of more than two faces is a ValueError.

    Returns {``vertices`` [E, 2] (v0 < v1), ``uv_a`` [E, 2], ``uv_b`` [E, 2] (the UV indices of
    v0 and v1 in face ``face_a`` / ``face_b``), ``face_a`` [E], ``face_b`` [E]} (int64).
    """
    f = np.asarray(faces, np.int64)
    uf = np.asarray(uv_faces, np.int64)
    if f.shape != uf.shape or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces {f.shape} and uv_faces {uf.shape} must both be [F, 3]")
    pe = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    ue = np.concatenate([uf[:, [0, 1]], uf[:, [1, 2]], uf[:, [2, 0]]])
    fid = np.tile(np.arange(len(f)), 3)
    flip = pe[:, 0] > pe[:, 1]
    pe = np.where(flip[:, None], pe[:, ::-1], pe)
    ue = np.where(flip[:, None], ue[:, ::-1], ue)
    n = int(pe.max()) + 1 if pe.size else 1
    key = pe[:, 0] * n + pe[:, 1]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    count = np.diff(np.r_[start, len(ks)])
    if (count > 2).any():
        raise ValueError(f"seam_edges: {int((count > 2).sum())} edges have more than two faces (non-manifold mesh)")
    two = start[count == 2]
    a, b = order[two], order[two + 1]
    cut = np.any(ue[a] != ue[b], axis=1)
    a, b = a[cut], b[cut]
    return {"vertices": pe[a], "uv_a": ue[a], "uv_b": ue[b], "face_a": fid[a], "face_b": fid[b]}


def uv_face_charts(uv_faces) -> np.ndarray:
    """Chart id [F] int64 of every face: connected components of faces sharing a UV edge
    (``tools.semantic_atlas.uv_charts`` calls this)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    uf = np.asarray(uv_faces, np.int64)
    F = len(uf)
    e = np.concatenate([uf[:, [0, 1]], uf[:, [1, 2]], uf[:, [2, 0]]])
    e.sort(axis=1)
    fid = np.tile(np.arange(F), 3)
    key = e[:, 0] * (int(uf.max()) + 1) + e[:, 1]
    o = np.argsort(key, kind="stable")
    same = key[o][1:] == key[o][:-1]
    i, j = fid[o][:-1][same], fid[o][1:][same]
    adj = coo_matrix((np.ones(len(i)), (i, j)), shape=(F, F))
    return connected_components(adj, directed=False)[1].astype(np.int64)


def seam_samples(uvs, faces, uv_faces, resolution: int, spacing: float = 1.0) -> Dict[str, np.ndarray]:
    """Dense samples along the seam edges, in texel coordinates of resolution R.

    Each seam edge (:func:`seam_edges`) is cut into ``n = max(1, ceil(max(len_a, len_b) / spacing))``
    equal steps (``len_*``: the edge's length in texels on each side) and sampled at the step
    midpoints t = (i + 0.5) / n. Returns {``xy_a``, ``xy_b`` [S, 2] float64 (x = u R - 0.5 = col,
    y = v R - 0.5 = row: the same 3-D point on side A and side B), ``chart_a``, ``chart_b`` [S]
    (:func:`uv_face_charts` of the two faces), ``edge`` [S] (index into the seam edges), ``t`` [S]
    (from the edge's lower vertex id)}.
    """
    R = int(resolution)
    uv = np.asarray(uvs, np.float64)
    se = seam_edges(faces, uv_faces)
    charts = uv_face_charts(uv_faces)
    pa = uv[se["uv_a"]] * R - 0.5          # [E, 2 ends, 2]
    pb = uv[se["uv_b"]] * R - 0.5
    la = np.linalg.norm(pa[:, 1] - pa[:, 0], axis=1)
    lb = np.linalg.norm(pb[:, 1] - pb[:, 0], axis=1)
    n = np.maximum(1, np.ceil(np.maximum(la, lb) / float(spacing))).astype(np.int64)
    edge = np.repeat(np.arange(len(n)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    t = (np.arange(int(n.sum())) - first + 0.5) / n[edge]
    tt = t[:, None]
    return {"xy_a": pa[edge, 0] * (1 - tt) + pa[edge, 1] * tt,
            "xy_b": pb[edge, 0] * (1 - tt) + pb[edge, 1] * tt,
            "chart_a": charts[se["face_a"]][edge], "chart_b": charts[se["face_b"]][edge],
            "edge": edge, "t": t}


def texel_charts(uvs, uv_faces, resolution: int, margin: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """(chart [R, R] int64, inside [R, R] bool): the chart of the UV triangle covering each texel
    centre (``inside``; :func:`.uv_maps.rasterize_uv`), texels not covered but within ``margin``
    texels (Euclidean, texel centres) of a covered one take the chart of their nearest covered
    texel, all others -1."""
    from scipy.ndimage import distance_transform_edt

    from .uv_maps import rasterize_uv

    R = int(resolution)
    tri, _ = rasterize_uv(np.asarray(uvs, np.float32), np.asarray(uv_faces, np.int64), R)
    inside = tri >= 0
    chart = np.where(inside, uv_face_charts(uv_faces)[np.maximum(tri, 0)], -1)
    if inside.any() and not inside.all() and margin > 0:
        dist, (ir, ic) = distance_transform_edt(~inside, return_indices=True)
        take = ~inside & (dist <= margin)
        chart[take] = chart[ir[take], ic[take]]
    return chart.astype(np.int64), inside


def bilinear_footprint(xy, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """Bilinear, clamp-to-edge read at texel coordinates ``xy [N, 2]`` (x = col, y = row):
    (flat texel indices row * R + col [N, 4] int64, weights [N, 4] float64, rows sum to 1)."""
    R = int(resolution)
    xy = np.asarray(xy, np.float64)
    x0 = np.floor(xy[:, 0])
    y0 = np.floor(xy[:, 1])
    fx = xy[:, 0] - x0
    fy = xy[:, 1] - y0
    cols = np.clip(np.stack([x0, x0 + 1, x0, x0 + 1], 1), 0, R - 1).astype(np.int64)
    rows = np.clip(np.stack([y0, y0, y0 + 1, y0 + 1], 1), 0, R - 1).astype(np.int64)
    w = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return rows * R + cols, w


@dataclass
class SeamStitchOperator:
    """The precomputed stitch of one UV layout at resolution R (numpy, float64 weights).

    ``out[t] = T[t] + sum_j texel_w[i, j] * c[texel_src[i, j]]`` for ``t = texel_idx[i]``, with
    ``c[s] = sum_j sample_w[s, j] * T[sample_idx[s, j]]`` (flat texel index = row * R + col).
    ``phi [R, R]`` (the falloff, 0 off the band), ``chart`` / ``inside`` (:func:`texel_charts`) and
    the ``samples`` (:func:`seam_samples`) are kept for inspection and tests."""

    resolution: int
    sample_idx: np.ndarray   # [2S, 8] int64
    sample_w: np.ndarray     # [2S, 8] float64
    texel_idx: np.ndarray    # [N] int64, unique
    texel_src: np.ndarray    # [N, k] int64 into the 2S sided samples
    texel_w: np.ndarray      # [N, k] float64 (phi included)
    phi: np.ndarray          # [R, R] float64
    chart: np.ndarray        # [R, R] int64
    inside: np.ndarray       # [R, R] bool
    samples: dict

    def apply_numpy(self, textures: np.ndarray) -> np.ndarray:
        """Reference apply on ``[..., R * R]`` numpy arrays (channels first, flattened texels)."""
        x = np.asarray(textures, np.float64)
        c = (x[..., self.sample_idx] * self.sample_w).sum(-1)
        out = x.copy()
        out[..., self.texel_idx] += (c[..., self.texel_src] * self.texel_w).sum(-1)
        return out


def build_stitch_operator(uvs, faces, uv_faces, resolution: int, *, band: Optional[float] = None,
                          flat: float = 1.5, margin: int = 2, spacing: float = 1.0, sigma: float = 1.0,
                          k: int = 4) -> SeamStitchOperator:
    """Build the stitch (module docstring) for the mesh ``faces [F, 3]`` with UVs ``uvs [T, 2]`` /
    ``uv_faces [F, 3]`` (the render mesh: ``render_faces``, ``render_uvs``, ``render_uv_faces``).

    ``band``: falloff width in texels beyond ``flat`` (default ``max(3, R / 64)``, 4 at R = 256);
    ``flat``: texels from the seam with the full correction; ``margin``: texels outside a chart that
    are corrected too (the bilinear reads just inside a chart border touch them; >= 1);
    ``spacing``: seam sample spacing (texels); ``sigma``: smoothing along the seam (texels);
    ``k``: nearest sided samples per texel.
    """
    from scipy.spatial import cKDTree

    R = int(resolution)
    band = max(3.0, R / 64.0) if band is None else float(band)
    if band <= 0 or flat < 0 or margin < 1 or spacing <= 0 or sigma <= 0 or k < 1:
        raise ValueError("build_stitch_operator: band, sigma, spacing > 0, flat >= 0, margin >= 1, k >= 1")
    sm = seam_samples(uvs, faces, uv_faces, R, spacing)
    xy_self = np.concatenate([sm["xy_a"], sm["xy_b"]])
    xy_part = np.concatenate([sm["xy_b"], sm["xy_a"]])
    s_chart = np.concatenate([sm["chart_a"], sm["chart_b"]])
    i_self, w_self = bilinear_footprint(xy_self, R)
    i_part, w_part = bilinear_footprint(xy_part, R)
    sample_idx = np.concatenate([i_part, i_self], 1)
    sample_w = 0.5 * np.concatenate([w_part, -w_self], 1)

    chart, inside = texel_charts(uvs, uv_faces, R, margin)
    # texels a seam sample reads that no chart claimed (the tip of a chart thinner than a texel):
    # the chart of the nearest sample reading them (outside its chart: full correction)
    fp = i_self.ravel()
    fd = np.abs(np.repeat(xy_self, 4, 0) - np.stack([fp % R, fp // R], 1)).max(1)
    free = chart.ravel()[fp] < 0
    o = np.argsort(-fd[free], kind="stable")                # nearest last: it wins the assignment
    chart = chart.copy()
    chart.ravel()[fp[free][o]] = np.repeat(s_chart, 4)[free][o]
    rows, cols = np.nonzero(chart >= 0)
    t_chart = chart[rows, cols]
    t_xy = np.stack([cols, rows], 1).astype(np.float64)
    t_in = inside[rows, cols]
    reach = flat + band
    idx_l, src_l, w_l, phi_l = [], [], [], []
    for c in np.unique(t_chart):
        sel = np.flatnonzero(s_chart == c)
        tsel = np.flatnonzero(t_chart == c)
        if sel.size == 0 or tsel.size == 0:
            continue
        kk = min(k + 1, sel.size)
        d, j = cKDTree(xy_self[sel]).query(t_xy[tsel], k=kk)
        d = d.reshape(len(tsel), kk)
        j = j.reshape(len(tsel), kk)
        dmin = d[:, 0]
        keep = dmin < reach   # (margin texels by a mesh boundary, e.g. an open wrist, are far from any seam)
        d, j, dmin, tsel = d[keep], j[keep], dmin[keep], tsel[keep]
        s = np.clip((dmin - flat) / band, 0.0, 1.0)
        phi = np.where(t_in[tsel], 0.5 * (1.0 + np.cos(np.pi * s)), 1.0)
        g = np.exp(-(d * d - dmin[:, None] ** 2) / (2.0 * sigma * sigma))
        if kk == k + 1:  # minus the (k+1)-th's weight: a sample's weight is 0 where it enters the k nearest
            g = np.maximum(g[:, :k] - g[:, k:], 0.0)
            j = j[:, :k]
            kk = k
        g[:, 0] += 1e-12  # (k+1 samples at one distance)
        w = g / g.sum(1, keepdims=True)
        if kk < k:  # pad to the fixed width with zero weights
            j = np.pad(j, ((0, 0), (0, k - kk)))
            w = np.pad(w, ((0, 0), (0, k - kk)))
        idx_l.append(rows[tsel] * R + cols[tsel])
        src_l.append(sel[j])
        w_l.append(w * phi[:, None])
        phi_l.append(phi)
    texel_idx = np.concatenate(idx_l) if idx_l else np.zeros(0, np.int64)
    texel_src = np.concatenate(src_l) if src_l else np.zeros((0, k), np.int64)
    texel_w = np.concatenate(w_l) if w_l else np.zeros((0, k))
    phi_map = np.zeros(R * R)
    if idx_l:
        phi_map[texel_idx] = np.concatenate(phi_l)
    return SeamStitchOperator(resolution=R, sample_idx=sample_idx, sample_w=sample_w,
                              texel_idx=texel_idx.astype(np.int64), texel_src=texel_src.astype(np.int64),
                              texel_w=texel_w, phi=phi_map.reshape(R, R), chart=chart, inside=inside,
                              samples=sm)


class SeamStitcher:
    """Apply a :class:`SeamStitchOperator` to torch textures (CPU or CUDA, float16 / 32 / 64).

    ``stitcher(textures)``: ``[H, C, R, R]`` (channels first), ``[H, R, R, C]`` (channels last) or a
    single hand ``[C, R, R]`` / ``[R, R, C]`` -> a new tensor of the same shape, dtype and device
    (the input is not modified). The layout is read from the shape (the two R axes are equal);
    ``channels_last`` forces it where the shape is ambiguous (C == R). ``clamp_min``: clamp the result
    from below (0.0 for radiance: near a seam's sharp corners, a dark texel next to a bright chart
    border can be pulled below 0; None: the linear operator as is).

    ``albedo``: stitch in *shading space* instead: ``out = T + A * (W @ G @ (T / A))`` with the
    albedo ``A`` (one hand's map in the textures' layout, [C, R, R] or [R, R, C], > 0 wherever the
    seam samples read, i.e. dilated past the charts; clamped to >= 1e-3), shared by all hands. The
    seam target is then the average of the two sides' radiance / albedo, and the correction is
    scaled by the local albedo: with a continuous albedo the result is just as continuous, the
    albedo's detail inside the band is kept, and two textures that differ by an albedo ratio
    (a personalised asset with the same shading) still differ by exactly that ratio.

    Per frame, for all hands and channels at once: one ``index_select`` of the texels the seam
    samples read (a table [U, H*C]), two ``embedding_bag(mode='sum')`` with fixed-width rows (the
    operators G and W: discrepancy per sided sample, then correction per band texel) and one
    ``index_add`` of the corrections into a copy of the textures. Half precision is computed in
    float32."""

    def __init__(self, op: SeamStitchOperator):
        self.op = op
        self.resolution = op.resolution
        used, inv = np.unique(op.sample_idx, return_inverse=True)
        self._used = used.astype(np.int64)                           # [U] texels read by the samples
        self._sample_u = inv.reshape(op.sample_idx.shape).astype(np.int64)
        self._dev: Dict[tuple, tuple] = {}

    def _tensors(self, device, dtype, H: int, last: bool):
        key = (str(device), dtype, H, last)
        hit = self._dev.get(key)
        if hit is None:
            op, RR = self.op, self.resolution ** 2
            used = torch.from_numpy(self._used)
            tex = torch.from_numpy(op.texel_idx)
            if last:   # rows of the [H * R * R, C] view: hand h's texel t is row h * RR + t
                off = (torch.arange(H) * RR)[:, None]
                used = (off + used[None]).reshape(-1)
                tex = (off + tex[None]).reshape(-1)
            hit = (used.to(device), torch.from_numpy(self._sample_u).to(device),
                   torch.from_numpy(op.sample_w).to(device, dtype), torch.from_numpy(op.texel_src).to(device),
                   torch.from_numpy(op.texel_w).to(device, dtype), tex.to(device))
            self._dev[key] = hit
        return hit

    def _albedo(self, albedo, last: bool, shape, device, dtype, H: int):
        """(1 / albedo at the texels the samples read [U, H*C], albedo at the band texels [N, H*C],
        repeated for the H hands), the albedo clamped to >= 1e-3; cached for the last albedo tensor
        seen per (device, dtype, layout, H)."""
        R = self.resolution
        C = shape[-1] if last else shape[-3]
        key = ("albedo", str(device), dtype, last, H)
        hit = self._dev.get(key)
        if hit is not None and hit[0] is albedo and hit[1] == getattr(albedo, "_version", None):
            return hit[2], hit[3]
        a = albedo if isinstance(albedo, torch.Tensor) else torch.as_tensor(np.asarray(albedo))
        want = (R, R, C) if last else (C, R, R)
        if tuple(a.shape) != want:
            raise ValueError(f"stitch_seams: albedo must be {list(want)} (one hand, the textures' layout), "
                             f"got {list(a.shape)}")
        a = a.to(device, dtype).reshape(R * R, C) if last else a.to(device, dtype).reshape(C, R * R).t()
        used = torch.from_numpy(self._used).to(device)
        tex = torch.from_numpy(self.op.texel_idx).to(device)
        inv_used = (1.0 / a.index_select(0, used).clamp_min(1e-3)).repeat(1, H).contiguous()
        a_tex = a.index_select(0, tex).clamp_min(1e-3).repeat(1, H).contiguous()
        self._dev[key] = (albedo, getattr(albedo, "_version", None), inv_used, a_tex)
        return inv_used, a_tex

    def _layout(self, shape, channels_last):
        R = self.resolution
        first = len(shape) >= 3 and shape[-1] == R and shape[-2] == R
        last = len(shape) >= 3 and shape[-2] == R and shape[-3] == R
        if len(shape) not in (3, 4) or not (first or last):
            raise ValueError(f"stitch_seams: textures must be [H, C, {R}, {R}] or [H, {R}, {R}, C] "
                             f"(or one hand without H), got {tuple(shape)}")
        if channels_last is None:
            if first and last:
                raise ValueError(f"stitch_seams: shape {tuple(shape)} is ambiguous, pass channels_last")
            return last
        if (channels_last and not last) or (not channels_last and not first):
            raise ValueError(f"stitch_seams: shape {tuple(shape)} is not channels_{'last' if channels_last else 'first'}")
        return bool(channels_last)

    def __call__(self, textures: torch.Tensor, channels_last: Optional[bool] = None,
                 clamp_min: Optional[float] = None, albedo: Optional[torch.Tensor] = None) -> torch.Tensor:
        import torch.nn.functional as F

        if not isinstance(textures, torch.Tensor):
            raise TypeError(f"stitch_seams: textures must be a torch tensor, got {type(textures).__name__}")
        if not textures.is_floating_point():
            raise TypeError(f"stitch_seams: textures must be floating point, got {textures.dtype}")
        shape = textures.shape
        last = self._layout(shape, channels_last)
        R = self.resolution
        RR = R * R
        wdt = textures.dtype if textures.dtype in (torch.float32, torch.float64) else torch.float32
        if textures.numel() == 0 or len(self.op.texel_idx) == 0:
            out = textures.clone()
            return out if clamp_min is None else out.clamp_min_(clamp_min)
        if last:
            C = shape[-1]
            H = textures.numel() // (RR * C)
            used, su, sw, ts, tw, tex = self._tensors(textures.device, wdt, H, True)
            x = textures.reshape(H * RR, C)
            tab = x.index_select(0, used).view(H, -1, C).transpose(0, 1).reshape(-1, H * C).to(wdt)   # [U, H*C]
            if albedo is not None:
                inv_used, a_tex = self._albedo(albedo, last, shape, textures.device, wdt, H)
                tab = tab * inv_used
            c = F.embedding_bag(su, tab, per_sample_weights=sw, mode="sum")                      # [2S, H*C]
            d = F.embedding_bag(ts, c, per_sample_weights=tw, mode="sum")                        # [N, H*C]
            if albedo is not None:
                d = d * a_tex
            d = d.view(-1, H, C).transpose(0, 1).reshape(-1, C).to(x.dtype)                       # [H*N, C]
            out = x.index_add(0, tex, d).view(shape)
            return out if clamp_min is None else out.clamp_min_(clamp_min)
        B = textures.numel() // RR
        C = shape[-3]
        used, su, sw, ts, tw, tex = self._tensors(textures.device, wdt, 1, False)
        x = textures.reshape(B, RR)
        tab = x.index_select(1, used).t().contiguous().to(wdt)                                    # [U, B]
        if albedo is not None:
            inv_used, a_tex = self._albedo(albedo, last, shape, textures.device, wdt, B // C)
            tab = tab * inv_used
        c = F.embedding_bag(su, tab, per_sample_weights=sw, mode="sum")                          # [2S, B]
        d = F.embedding_bag(ts, c, per_sample_weights=tw, mode="sum")                            # [N, B]
        if albedo is not None:
            d = d * a_tex
        out = x.index_add(1, tex, d.t().to(x.dtype)).view(shape)
        return out if clamp_min is None else out.clamp_min_(clamp_min)


_STITCHERS: Dict[str, SeamStitcher] = {}
_BY_ID: Dict[tuple, tuple] = {}


def _layout_key(uvs, faces, uv_faces, R, params) -> str:
    h = hashlib.sha1()
    for a, dt in ((uvs, np.float32), (faces, np.int64), (uv_faces, np.int64)):
        h.update(np.ascontiguousarray(np.asarray(a), dtype=dt).tobytes())
    h.update(f"R={int(R)};{sorted(params.items())}".encode())
    return h.hexdigest()


def seam_stitcher(asset=None, resolution: int = 256, **params) -> SeamStitcher:
    """The :class:`SeamStitcher` of ``asset``'s render mesh (a :class:`~.hand_model.HandAsset`, a
    path for ``HandAsset.load``, or None: the shipped asset) at ``resolution``; built once per
    (layout, R, params) and kept in memory (building takes about a second at R = 256).
    ``params``: keywords of :func:`build_stitch_operator`."""
    from .hand_model import HandAsset

    a = asset if isinstance(asset, HandAsset) else HandAsset.load(asset)
    arrays = (a.render_uvs, a.render_faces, a.render_uv_faces)
    fast = (tuple(map(id, arrays)), int(resolution), tuple(sorted(params.items())))
    hit = _BY_ID.get(fast)
    if hit is not None and all(x is y for x, y in zip(hit[0], arrays)):   # per frame: no hashing
        return hit[1]
    key = _layout_key(*arrays, resolution, params)
    st = _STITCHERS.get(key)
    if st is None:
        st = _STITCHERS[key] = SeamStitcher(build_stitch_operator(a.render_uvs, a.render_faces, a.render_uv_faces,
                                                                  resolution, **params))
    if len(_BY_ID) > 64:
        _BY_ID.clear()
    _BY_ID[fast] = (arrays, st)   # keeps the arrays alive, so their ids are not reused
    return st


def stitch_seams(textures: torch.Tensor, asset=None, *, channels_last: Optional[bool] = None,
                 clamp_min: Optional[float] = None, **params) -> torch.Tensor:
    """Seam-stitched copy of ``textures`` ([H, C, R, R] or [H, R, R, C] torch, CPU or CUDA; R read
    from the shape) for ``asset``'s UV layout (:func:`seam_stitcher`); see :class:`SeamStitcher`."""
    shape = textures.shape
    if len(shape) < 3:
        raise ValueError(f"stitch_seams: textures must be [H, C, R, R] or [H, R, R, C], got {tuple(shape)}")
    if channels_last is None:
        R = shape[-1] if shape[-1] == shape[-2] else shape[-2]
    else:
        R = shape[-2] if channels_last else shape[-1]
    return seam_stitcher(asset, int(R), **params)(textures, channels_last=channels_last, clamp_min=clamp_min)


_ALBEDO: Dict[tuple, tuple] = {}


def stitch_student_textures(textures: torch.Tensor, asset, *, clamp_min: Optional[float] = 0.0) -> torch.Tensor:
    """What :meth:`Engine.render_student <relit_hands.engine.Engine.render_student>` does to the
    student's radiance ``[H, R, R, 3]`` (both hands share the right hand's layout; the left hand is
    its mirror with the same UVs): stitched in shading space with ``asset``'s albedo map at R
    (:meth:`HandAsset.albedo_map`, cached per asset, R and device; plain radiance stitching for an
    asset without an albedo texture), clamped at ``clamp_min``."""
    R = int(textures.shape[-2])
    st = seam_stitcher(asset, R)
    key = (id(asset), R, str(textures.device))
    hit = _ALBEDO.get(key)
    if hit is None or hit[0] is not asset:
        try:
            alb = asset.albedo_map(R).permute(1, 2, 0).contiguous().to(textures.device)   # [R, R, 3]
        except (OSError, ValueError):
            alb = None
        if len(_ALBEDO) > 16:
            _ALBEDO.clear()
        hit = _ALBEDO[key] = (asset, alb)
    alb = hit[1] if hit[1] is not None and hit[1].shape[-1] == textures.shape[-1] else None
    return st(textures, channels_last=True, clamp_min=clamp_min, albedo=alb)
