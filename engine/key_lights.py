r"""Sharp shadows of the brightest lights: per-texel visibility of the K *key lights*.

Why. :func:`.raycast.proxy_visibility` casts one ray per proxy vertex and light; the UV gather
then interpolates that visibility across each proxy triangle (edges ~5-10 mm). For a sun, a
window or a soft box the shadow edge is thus smeared over a triangle, and a finger's shadow on
the other hand becomes a blurred grey band. Measured on evaluation set v2, hard light is where
the student loses to PBR (the sun family pooled ~3 dB below it). For the few lights that carry
most of the energy this module casts one ray per *texel* instead.

Definitions (hand h, atlas texel t with a UV lookup -- ``UVRasterizer.valid`` -- and key light l):

* key lights: the ``K`` lights of largest luminance :math:`lum(E_l)` (:func:`key_light_indices`,
  ties broken by the lower index, a stable order);
* texel point and normal (world, metres): the proxy surface point of the texel and the
  interpolated vertex normal, both by the same barycentric gather as the features::

      p_t = sum_k b_k x_{i_k}            m_t = normalize(sum_k b_k n_{i_k})

* visibility: ``V[h, l, t]`` is True when ``m_t . w_l > 0`` and the ray ``p_t + epsilon m_t``,
  direction ``w_l``, hits no triangle of either hand's proxy (the scene the vertex visibility
  was cast against; same ``epsilon``, default 1 mm);
* contributions (:func:`key_light_maps`), with ``En_l = E_l / energy`` (what the features are
  normalised by, :mod:`.features`), ``cos = max(0, m_t . w_l)`` and the GGX terms of
  :mod:`.features` evaluated with ``m_t`` and the view direction from ``p_t``::

      diffuse_vis[t] += sum_l En_l V cos                spec_a[t] += sum_l En_l V D_a Vis_a cos

The per-vertex features are then computed with the key lights *left out* of ``diffuse_vis`` and
``spec_*`` (``lighting_features(exclude_lights=...)``) and the texel sums added after the UV
gather (:func:`add_key_light_maps`), so the channels keep their names and meaning -- the same
sum over all lights, only the key lights' part is evaluated per texel. ``ao``,
``diffuse_novis`` and ``transmit_*`` stay per vertex. With every light a key light and a proxy
whose triangles are smaller than a texel both ways agree (tested against the per-vertex
features).

Shadow edges (:func:`key_shadow_coverage`): one ray per texel decides a whole texel, so a shadow
edge follows the texel grid and shows as a staircase once the texture is magnified (a hand close
to the camera). Texels where the ray's verdict differs from a neighbour's are therefore sampled
again at ``n x n`` points spread over the texel's footprint on the proxy surface, and their
visibility becomes the fraction ``C in [0, 1]`` of those rays that reach the light (the texel's
*coverage*); every other texel keeps 0 or 1. The footprint of texel t is spanned by the steps to
its neighbours ``dp/dx, dp/dy`` (:func:`texel_steps`); a sub-sample sits at
``p_t + ox dp/dx + oy dp/dy``, ``o in {(i + 1/2) / n - 1/2}``, with the texel's normal (for odd
``n`` the middle sample is the texel's own ray, already cast).

Cost: one ray per valid texel, hand and key light (R = 256: ~45k texels, so ~90k rays per key
light for two hands, about half culled by ``cos``); the rays go to the frame's ray caster,
already built for the vertex visibility; plus ``n^2`` rays per edge texel and key light (a few
percent of the texels).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .color import luminance
from .features import ggx_distribution, smith_visibility

__all__ = ["key_light_indices", "texel_surface", "texel_key_visibility", "texel_steps", "key_shadow_coverage",
           "key_light_maps", "add_key_light_maps", "pack_visibility", "unpack_visibility", "pack_coverage",
           "unpack_coverage", "texel_key_lights"]


def key_light_indices(light_rgb, k: int) -> torch.Tensor:
    """The ``min(k, N)`` lights of largest luminance, brightest first: int64 [K] (ties: lower index)."""
    E = torch.as_tensor(np.asarray(light_rgb) if not isinstance(light_rgb, torch.Tensor) else light_rgb)
    lum = luminance(E.double().cpu())
    k = max(0, min(int(k), lum.numel()))
    order = sorted(range(lum.numel()), key=lambda i: (-float(lum[i]), i))
    return torch.tensor(order[:k], dtype=torch.int64)


def texel_surface(uv, vertices: torch.Tensor, normals: torch.Tensor, faces) -> tuple:
    """Proxy surface point and unit normal of every texel: ``(points [H,3,R,R], normals [H,3,R,R])``
    float32 (world, metres), zeros where a texel has no lookup. ``uv`` a
    :class:`~relit_hands.uv_maps.UVRasterizer`; ``vertices``/``normals`` [H,Vp,3]; ``faces`` the
    right hand's proxy faces (the layout's corner order; the left hand shares vertex indices)."""
    both = torch.cat([vertices.float(), normals.float()], -1)
    m = uv.gather(both, faces, contiguous=True)
    pts, nrm = m[:, :3], m[:, 3:]
    nrm = nrm / nrm.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return pts.contiguous(), nrm.contiguous()


def texel_key_visibility(caster, points: torch.Tensor, normals: torch.Tensor, valid, dirs,
                         epsilon: float = 1e-3) -> torch.Tensor:
    """``V [H,K,R,R]`` bool (module docstring) for ``dirs`` [K,3] (unit, towards the lights) on a
    ``caster`` already built with the frame's proxies. ``valid`` [R,R] bool: texels with a lookup."""
    H, _, R, _ = points.shape
    dev = points.device
    d = torch.as_tensor(np.asarray(dirs) if not isinstance(dirs, torch.Tensor) else dirs,
                        dtype=torch.float32, device=dev).reshape(-1, 3)
    K = d.shape[0]
    vis = torch.zeros(H, K, R * R, dtype=torch.bool, device=dev)
    if K == 0:
        return vis.view(H, K, R, R)
    sel = torch.as_tensor(np.asarray(valid), device=dev).reshape(-1).nonzero().squeeze(1)
    p = points.permute(0, 2, 3, 1).reshape(H, R * R, 3)[:, sel]            # [H,T,3]
    n = normals.permute(0, 2, 3, 1).reshape(H, R * R, 3)[:, sel]
    cos = torch.einsum("htk,lk->hlt", n, d)                                 # [H,K,T]
    front = cos > 0
    h_i, l_i, t_i = front.nonzero(as_tuple=True)
    if h_i.numel():
        origins = p[h_i, t_i] + epsilon * n[h_i, t_i]
        occ = caster.occluded(origins.contiguous(), d[l_i].contiguous())
        occ = torch.as_tensor(occ).to(dev)
        vis[h_i, l_i, sel[t_i]] = ~occ
    return vis.view(H, K, R, R)


def _neighbour_links(points: torch.Tensor, valid, max_ratio: float) -> dict:
    """For dim 3 (columns) and 2 (rows): ``(link [H, ...n-1...], diff [H,3, ...n-1...])``, texel i
    and i + 1 on the same surface (both with a lookup, within ``max_ratio`` x the median neighbour
    distance of the atlas) and the world step between them (0 where not linked)."""
    pts = points.float()
    ok = torch.as_tensor(np.asarray(valid), device=pts.device)
    out = {}
    for dim in (3, 2):
        n = pts.shape[dim]
        diff = pts.narrow(dim, 1, n - 1) - pts.narrow(dim, 0, n - 1)
        dist2 = (diff * diff).sum(1)                                          # [H, ...] squared distance
        pair = (ok.narrow(dim - 2, 0, n - 1) & ok.narrow(dim - 2, 1, n - 1)).expand_as(dist2)
        linked = dist2[pair]
        med = linked[::8].median() if linked.numel() else dist2.new_tensor(0.0)   # every 8th pair: plenty
        link = pair & (dist2 <= max_ratio ** 2 * med)
        out[dim] = (link, diff * link[:, None])
    return out


def texel_steps(points: torch.Tensor, valid, max_ratio: float = 4.0) -> tuple:
    """World steps to the next texel along x (columns) and y (rows): ``(dp_dx, dp_dy)`` [H,3,R,R]
    float32 (metres) from ``points`` [H,3,R,R] (:func:`texel_surface`): central differences where
    both neighbours are on the same surface, one-sided where one is, 0 where neither is. A
    neighbour counts when it has a lookup (``valid`` [R,R]) and lies within ``max_ratio`` times the
    median neighbour distance of the atlas (a texel across a UV seam is usually far away)."""
    return _steps(points, _neighbour_links(points, valid, max_ratio))


def _steps(points: torch.Tensor, links: dict) -> tuple:
    steps = []
    for dim in (3, 2):
        link, diff = links[dim]
        n = points.shape[dim]
        total = torch.zeros_like(points, dtype=torch.float32)
        count = torch.zeros(points.shape[0], 1, *points.shape[2:], device=points.device)
        for start in (0, 1):                                                  # the step after, the step before
            total.narrow(dim, start, n - 1).add_(diff)
            count.narrow(dim, start, n - 1).add_(link[:, None].float())
        steps.append(total / count.clamp_min(1.0))
    return steps[0], steps[1]


def key_shadow_coverage(caster, points: torch.Tensor, normals: torch.Tensor, valid, dirs,
                        visibility: torch.Tensor, samples: int = 3, epsilon: float = 1e-3) -> torch.Tensor:
    """Fractional visibility along shadow edges (module docstring): ``C [H,K,R,R]`` float32 in
    [0, 1], equal to ``visibility`` (bool [H,K,R,R], :func:`texel_key_visibility`) except at texels
    that face the light and whose verdict differs from that of a facing, same-surface 4-neighbour;
    those become the fraction of ``samples x samples`` rays over the texel's footprint that reach
    the light. ``samples`` 1 returns ``visibility`` as float. Same ``caster`` and ``epsilon`` as the
    visibility."""
    n = int(samples)
    if n < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    dev = points.device
    vis = visibility.to(dev)
    cov = vis.to(torch.float32)
    H, K, R, _ = vis.shape
    if n == 1 or K == 0:
        return cov
    d = torch.as_tensor(np.asarray(dirs) if not isinstance(dirs, torch.Tensor) else dirs,
                        dtype=torch.float32, device=dev).reshape(-1, 3)
    links = _neighbour_links(points, valid, 4.0)
    front = (torch.einsum("hcyx,kc->hkyx", normals.float(), d) > 0) \
        & torch.as_tensor(np.asarray(valid), device=dev)
    edge = torch.zeros_like(front)
    for dim in (3, 2):
        link = links[dim][0][:, None]                                          # [H,1, ...n-1...]
        m = vis.shape[dim]
        differ = (front.narrow(dim, 0, m - 1) & front.narrow(dim, 1, m - 1) & link
                  & (vis.narrow(dim, 0, m - 1) != vis.narrow(dim, 1, m - 1)))
        edge.narrow(dim, 0, m - 1).logical_or_(differ)
        edge.narrow(dim, 1, m - 1).logical_or_(differ)
    h_i, l_i, y_i, x_i = edge.nonzero(as_tuple=True)
    if h_i.numel() == 0:
        return cov
    dx, dy = _steps(points, links)
    o = (torch.arange(n, dtype=torch.float32, device=dev) + 0.5) / n - 0.5
    oy, ox = torch.meshgrid(o, o, indexing="ij")
    off = torch.stack([ox.reshape(-1), oy.reshape(-1)], 1)
    centre = n % 2 == 1                                   # odd n: the texel's own ray is the middle sample
    if centre:
        off = off[(off != 0).any(1)]
    S = off.shape[0]
    ox, oy = off[:, 0].reshape(1, S, 1), off[:, 1].reshape(1, S, 1)               # [1,S,1]
    p = points[h_i, :, y_i, x_i].float()[:, None]                              # [E,1,3]
    nrm = normals[h_i, :, y_i, x_i].float()[:, None]
    q = p + ox * dx[h_i, :, y_i, x_i][:, None] + oy * dy[h_i, :, y_i, x_i][:, None] + epsilon * nrm
    rays = d[l_i][:, None].expand(-1, S, 3)
    occ = torch.as_tensor(caster.occluded(q.reshape(-1, 3).contiguous(), rays.reshape(-1, 3).contiguous()))
    lit = (~occ.to(dev).reshape(-1, S)).float().sum(1)
    if centre:
        lit = lit + cov[h_i, l_i, y_i, x_i]
    cov[h_i, l_i, y_i, x_i] = lit / (n * n)
    return cov


def key_light_maps(points: torch.Tensor, normals: torch.Tensor, visibility: torch.Tensor, dirs, rgb_n,
                   view_origin, roughness: Sequence[float] = (0.2, 0.4, 0.7)) -> torch.Tensor:
    """The key lights' part of ``diffuse_vis`` and ``spec_a*`` per texel: ``[H, 3 + 3 len(roughness), R, R]``
    float32, channels diffuse_vis_{r,g,b} then spec_a{a}_{r,g,b} per roughness (the order of
    :func:`~relit_hands.features.feature_names`). ``dirs`` [K,3] unit towards the lights,
    ``rgb_n`` [K,3] the lights' RGB divided by the frame's ``energy``; ``view_origin`` [3] world;
    ``visibility`` [H,K,R,R], bool or the float coverage of :func:`key_shadow_coverage`.
    Evaluated only on texels that see at least one key light (the rest are 0)."""
    dev = points.device
    H, _, R, _ = points.shape
    d = torch.as_tensor(dirs, dtype=torch.float32, device=dev).reshape(-1, 3)
    En = torch.as_tensor(rgb_n, dtype=torch.float32, device=dev).reshape(-1, 3)
    K = d.shape[0]
    C = 3 + 3 * len(roughness)
    out = torch.zeros(H, R * R, C, dtype=torch.float32, device=dev)
    vis = visibility.reshape(H, K, R * R).to(torch.float32)
    h_i, t_i = (vis > 0).any(1).nonzero(as_tuple=True)
    if h_i.numel():
        p = points.reshape(H, 3, R * R)[h_i, :, t_i]                        # [M,3]
        n = normals.reshape(H, 3, R * R)[h_i, :, t_i]
        v = vis[h_i, :, t_i]                                                # [M,K]
        nl = n @ d.T                                                        # [M,K]
        cos = nl.clamp_min(0.0)
        cv = cos * v
        cols = [cv @ En]
        o = torch.as_tensor(np.asarray(view_origin, np.float32), device=dev).reshape(1, 3) - p
        o = o / o.norm(dim=1, keepdim=True).clamp_min(1e-12)
        no = (n * o).sum(1, keepdim=True)                                   # [M,1]
        nv = no.clamp(0.0, 1.0)
        nh = ((nl + no) / torch.sqrt((2.0 + 2.0 * (o @ d.T)).clamp_min(1e-12))).clamp(0.0, 1.0)
        nh2 = nh * nh
        for a in roughness:
            a2 = float(a) ** 2
            cols.append((ggx_distribution(nh2, a2) * smith_visibility(cos, nv, a2) * cv) @ En)
        out[h_i, t_i] = torch.cat(cols, 1)
    return out.permute(0, 2, 1).reshape(H, C, R, R)


def add_key_light_maps(maps: torch.Tensor, names: Sequence[str], key_maps: torch.Tensor,
                       roughness: Sequence[float] = (0.2, 0.4, 0.7)) -> torch.Tensor:
    """``maps`` [H,C,R,R] (channels ``names``) with :func:`key_light_maps`' channels added into
    diffuse_vis_* and spec_a*_* (a new tensor; channels the maps do not have are skipped)."""
    targets = ["diffuse_vis_r", "diffuse_vis_g", "diffuse_vis_b"]
    for a in roughness:
        targets += [f"spec_a{float(a):.2f}_{c}" for c in "rgb"]
    index = {n: i for i, n in enumerate(names)}
    src = [j for j, n in enumerate(targets) if n in index]
    dst = [index[targets[j]] for j in src]
    out = maps.clone()
    if dst:
        out[:, dst] += key_maps[:, src].to(out.dtype)
    return out


def pack_visibility(vis: torch.Tensor) -> np.ndarray:
    """bool [H,K,R,R] -> uint8 bits (numpy ``packbits`` along the flattened texels) for storage."""
    v = np.asarray(vis.cpu() if isinstance(vis, torch.Tensor) else vis, bool)
    return np.packbits(v.reshape(*v.shape[:2], -1), axis=-1)


def unpack_visibility(bits: np.ndarray, resolution: int) -> torch.Tensor:
    """Inverse of :func:`pack_visibility`: bool [H,K,R,R]."""
    R = int(resolution)
    v = np.unpackbits(np.asarray(bits, np.uint8), axis=-1, count=R * R).astype(bool)
    return torch.from_numpy(v.reshape(*v.shape[:2], R, R))


def pack_coverage(cov: torch.Tensor) -> dict:
    """Coverage [H,K,R,R] in [0, 1] -> storage arrays: ``key_visibility`` (the bits of ``cov >= 1/2``,
    :func:`pack_visibility`) and, for the fractional texels, ``key_partial_index`` int32 (flat index
    into [H, K, R*R]) and ``key_partial_coverage`` uint8 (coverage x 255, rounded)."""
    c = np.asarray(cov.detach().cpu() if isinstance(cov, torch.Tensor) else cov, np.float32)
    flat = c.reshape(-1)
    part = np.flatnonzero((flat > 0) & (flat < 1)).astype(np.int32)
    return {"key_visibility": pack_visibility(c >= 0.5), "key_partial_index": part,
            "key_partial_coverage": np.round(flat[part] * 255.0).astype(np.uint8)}


def unpack_coverage(arrays, resolution: int, hand: Optional[int] = None) -> torch.Tensor:
    """Inverse of :func:`pack_coverage` (to 1/255): float32 [H,K,R,R], or [1,K,R,R] for one ``hand``.
    Arrays without the partial entries (sets written before coverage) give the plain bits."""
    bits = np.asarray(arrays["key_visibility"])
    H, K = bits.shape[:2]
    R = int(resolution)
    sel = slice(None) if hand is None else slice(hand, hand + 1)
    cov = unpack_visibility(bits[sel], R).to(torch.float32)
    if "key_partial_index" in arrays:
        idx = np.asarray(arrays["key_partial_index"], np.int64)
        val = np.asarray(arrays["key_partial_coverage"], np.float32) / 255.0
        if hand is not None:
            keep = idx // (K * R * R) == hand
            idx, val = idx[keep] - hand * K * R * R, val[keep]
        cov.view(-1)[torch.from_numpy(idx)] = torch.from_numpy(val)
    return cov


def texel_key_lights(caster, uv, vertices, normals, faces, light_dirs, light_rgb, energy, k: int,
                     epsilon: float = 1e-3, indices: Optional[torch.Tensor] = None, edge_samples: int = 3) -> dict:
    """Everything the key-light maps need for one frame: ``{'indices' [K], 'dirs' [K,3], 'rgb_n'
    [K,3], 'points', 'normals' [H,3,R,R], 'visibility' [H,K,R,R]}`` (tensors on the device of
    ``vertices``). ``visibility`` is float32 coverage refined along shadow edges with
    ``edge_samples`` x ``edge_samples`` rays (:func:`key_shadow_coverage`); ``edge_samples`` 1: the
    plain per-texel verdict (bool)."""
    dev = vertices.device
    idx = key_light_indices(light_rgb, k) if indices is None else indices
    d = torch.as_tensor(np.asarray(light_dirs)[idx.numpy()], dtype=torch.float32, device=dev)
    E = torch.as_tensor(np.asarray(light_rgb)[idx.numpy()], dtype=torch.float32, device=dev)
    e = torch.as_tensor(energy, dtype=torch.float32, device=dev).reshape(1, 3).clamp_min(1e-30)
    pts, nrm = texel_surface(uv, vertices, normals, faces)
    vis = texel_key_visibility(caster, pts, nrm, uv.valid, d, epsilon)
    if edge_samples > 1:
        vis = key_shadow_coverage(caster, pts, nrm, uv.valid, d, vis, edge_samples, epsilon)
    return {"indices": idx, "dirs": d, "rgb_n": E / e, "points": pts, "normals": nrm, "visibility": vis}
