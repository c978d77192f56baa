r"""Per-vertex lighting features on the proxy mesh (the student's spatially aligned input).

Inputs (torch or numpy; computed in float32 torch on the device of ``vertices``):
  x_v  vertices [H,V,3] (world, metres); n_v normals [H,V,3] (normalised here);
  V_vl visibility [H,V,N] bool (``raycast.proxy_visibility``);
  w_l  light_dirs [N,3], unit, pointing from the surface *towards* light l;
  E_l  light_rgb [N,3], the RGB irradiance light l delivers to a surface facing it
       (linear Rec.709), i.e. a Lambertian surface of albedo rho gets
       radiance rho/pi * sum_l E_l max(0, n.w_l);
  c    view_origin [3], the camera centre in world space. For stereo (VR) pass the
       midpoint of the two eye centres: at a 64 mm IPD and >= 0.3 m the two eye directions
       differ from it by <= ~6 deg, below the angular width of the widest-used lobe
       (alpha >= 0.2 -> highlight width ~ 20 deg), and both eyes then see one texture.

Definitions (per hand h, vertex v, light l; lum(E) = 0.2126 R + 0.7152 G + 0.0722 B, :mod:`.color`):
  cos_l   = max(0, n . w_l)
  o       = (c - x) / |c - x|                       view direction (vertex -> camera)
  nv      = clamp(n . o, 0, 1)   (back-facing vertices keep a continuous value: nv = 0)
  h_l     = (w_l + o) / |w_l + o|,  nh_l = n . h_l = (n.w_l + n.o) / sqrt(2 + 2 w_l.o)
  GGX     D_a(nh)   = a^2 / (pi * (nh^2 (a^2 - 1) + 1)^2)            (a = GGX alpha)
  Smith   Vis_a(nl, nv) = G2 / (4 nl nv)
                    = 0.5 / (nl sqrt(nv^2 (1 - a^2) + a^2) + nv sqrt(nl^2 (1 - a^2) + a^2))
          (height-correlated Smith G2 for GGX, Heitz 2014; finite at nv -> 0)
  f_spec  = D * G2 / (4 nv nl)  (no Fresnel: F = 1, the student learns F0), times the cosine
          -> per-light specular weight s_al = D_a(nh_l) * Vis_a(cos_l, nv) * cos_l

Energy normalisation: energy = sum_l E_l  (RGB, [3]). Every RGB light-dependent channel is
divided per colour channel by energy (``normalize='rgb'``, default): channel k of a
feature is  sum_l E_lk (...) / sum_l E_lk, a cosine/BRDF-weighted *average* over the lights,
so it is invariant to any HDR scale of the environment and bounded (diffuse in [0,1]);
the student's prediction is multiplied back by ``energy`` per channel. This is exact for
linear per-channel light transport. ``normalize='luminance'`` divides all channels by the
scalar L = sum_l lum(E_l) instead (keeps the environment's colour in the features) and
then returns ``energy = (L, L, L)``, so "multiply back by ``energy``" holds in both modes.
Channels (C = 19 by default, names returned in order; :func:`feature_names` lists them):
  diffuse_vis_{r,g,b}    sum_l E_l V_l cos_l / energy
  diffuse_novis_{r,g,b}  sum_l E_l cos_l / energy
  spec_a{a}_{r,g,b}      sum_l E_l V_l s_al / energy      for each a in ``roughness``
  ao                     sum_l lum(E_l) V_l cos_l / sum_l lum(E_l) cos_l
                         (light-weighted visibility fraction, "how much of the light that
                         reaches this vertex's hemisphere is not blocked"; 1 where no light
                         is above the horizon); already scale free.
  transmit_{m}mm_{r,g,b} sum_l E_l T_lm max(0, -n . w_l) / energy   for each mean free path m,
                         if ``transmittance`` [H,V,N,M] is given (:mod:`.translucency`: light
                         from behind the surface attenuated by the tissue it crosses)
  normal_{x,y,z}         n (world), if ``include_normal``
  view_{x,y,z}           o (world), if ``include_view``
``roughness`` are GGX alpha values (not perceptual roughness). Default (0.2, 0.4, 0.7):
with N = 64..512 directional lights the light spacing is ~9-25 deg; lobes narrower than
that (alpha < ~0.2) would sparkle from light to light instead of describing a highlight.
Skin's specular alpha is ~0.3-0.5, bracketed by the three lobes.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch

from .color import REC709_LUMA as LUMA  # noqa: F401  (re-exported: Rec.709 luminance weights)
from .color import luminance
from .hand_model import vertex_normals  # noqa: F401  (re-exported: features are computed on skinned proxies)

__all__ = ["lighting_features", "feature_names", "ggx_distribution", "smith_visibility", "vertex_normals",
           "luminance", "LUMA"]


def _t(x, dtype=torch.float32, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device if device is not None else x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def feature_names(roughness: Sequence[float] = (0.2, 0.4, 0.7), *, include_normal: bool = True,
                  include_view: bool = False, mean_free_paths: Sequence[float] = ()) -> List[str]:
    """The channel names of :func:`lighting_features` with the same arguments, in channel order:
    diffuse_vis_{r,g,b}, diffuse_novis_{r,g,b}, spec_a{a:.2f}_{r,g,b} per roughness, ao,
    transmit_{mm:g}mm_{r,g,b} per mean free path (when given), normal_{x,y,z}, view_{x,y,z}."""
    names = ["diffuse_vis_r", "diffuse_vis_g", "diffuse_vis_b",
             "diffuse_novis_r", "diffuse_novis_g", "diffuse_novis_b"]
    for a in roughness:
        tag = f"spec_a{float(a):.2f}"
        names += [f"{tag}_r", f"{tag}_g", f"{tag}_b"]
    names.append("ao")
    for mfp in mean_free_paths:
        tag = f"transmit_{float(mfp) * 1e3:g}mm"
        names += [f"{tag}_r", f"{tag}_g", f"{tag}_b"]
    if include_normal:
        names += ["normal_x", "normal_y", "normal_z"]
    if include_view:
        names += ["view_x", "view_y", "view_z"]
    return names


def ggx_distribution(nh2: torch.Tensor, a2) -> torch.Tensor:
    """GGX normal distribution ``D = a^2 / (pi (nh^2 (a^2 - 1) + 1)^2)`` from ``nh2 = (n.h)^2`` and
    ``a2 = alpha^2`` (tensors or floats, broadcast)."""
    return a2 / (math.pi * (nh2 * (a2 - 1.0) + 1.0) ** 2)


def smith_visibility(nl: torch.Tensor, nv: torch.Tensor, a2) -> torch.Tensor:
    """Height-correlated Smith ``G2 / (4 nl nv)`` for GGX (module docstring) from the clamped
    cosines ``nl``, ``nv`` >= 0 and ``a2 = alpha^2``; finite at nv -> 0."""
    return 0.5 / (nl * torch.sqrt(nv * nv * (1.0 - a2) + a2)
                  + nv * torch.sqrt(nl * nl * (1.0 - a2) + a2)).clamp_min(1e-12)


def lighting_features(vertices, normals, visibility, light_dirs, light_rgb, view_origin,
                      roughness: Sequence[float] = (0.2, 0.4, 0.7), *,
                      include_normal: bool = True, include_view: bool = False,
                      normalize: str = "rgb", transmittance=None,
                      mean_free_paths: Sequence[float] = (),
                      exclude_lights=None) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Per-vertex lighting features; see the module docstring for every formula.

    ``transmittance`` [H,V,N,M] (:func:`relit_hands.translucency.proxy_transmittance`) adds the
    ``transmit_*`` channels, one RGB triple per entry of ``mean_free_paths`` (metres, names only).
    ``exclude_lights`` (indices [K] or bool [N]) leaves those lights out of ``diffuse_vis`` and
    ``spec_*`` only (their per-texel part is added after the UV gather, :mod:`.key_lights`);
    ``energy``, ``ao`` and the other channels still count every light.

    Returns ``(features [H,V,C] float32, energy [3] float32, channel_names)``.
    Accepts ``[V,3]`` / ``[V,N]`` single-hand inputs too (then ``features`` is ``[1,V,C]``).
    """
    roughness = tuple(roughness)
    x = _t(vertices)
    dev = x.device
    n = torch.nn.functional.normalize(_t(normals, device=dev), dim=-1)
    vis = _t(visibility, torch.float32, dev)
    x = x[None] if x.dim() == 2 else x
    n = n[None] if n.dim() == 2 else n
    vis = vis[None] if vis.dim() == 2 else vis
    w = torch.nn.functional.normalize(_t(light_dirs, device=dev), dim=-1)  # [N,3]
    E = _t(light_rgb, device=dev)                                          # [N,3]
    c = _t(view_origin, device=dev).reshape(3)

    energy = E.sum(0)                                                      # [3]
    lumE = luminance(E)                                                    # [N]
    if normalize == "rgb":
        norm = energy
    elif normalize == "luminance":
        norm = lumE.sum().expand(3)
    else:
        raise ValueError("normalize must be 'rgb' or 'luminance'")
    tiny = 1e-12 * float(norm.abs().max()) + 1e-30
    inv_norm = 1.0 / norm.clamp_min(tiny)
    En = E * inv_norm                                                      # [N,3] normalised

    nl = torch.einsum("hvk,nk->hvn", n, w)                                 # [H,V,N]
    cos = nl.clamp_min(0.0)
    cv_all = cos * vis
    cv = cv_all
    if exclude_lights is not None:
        keep = torch.ones(w.shape[0], dtype=torch.float32, device=dev)
        keep[torch.as_tensor(exclude_lights, device=dev)] = 0.0
        cv = cv_all * keep
    feats = [torch.einsum("hvn,nc->hvc", cv, En),                          # diffuse_vis
             torch.einsum("hvn,nc->hvc", cos, En)]                         # diffuse_novis

    o = torch.nn.functional.normalize(c - x, dim=-1)                       # [H,V,3]
    nv = (n * o).sum(-1, keepdim=True).clamp(0.0, 1.0)                     # [H,V,1]
    wo = torch.einsum("hvk,nk->hvn", o, w)                                 # [H,V,N]
    hlen = torch.sqrt((2.0 + 2.0 * wo).clamp_min(1e-12))
    nh = ((nl + (n * o).sum(-1, keepdim=True)) / hlen).clamp(0.0, 1.0)
    nh2 = nh * nh
    for a in roughness:
        a2 = float(a) ** 2
        s = ggx_distribution(nh2, a2) * smith_visibility(cos, nv, a2) * cv  # cos & V folded in
        feats.append(torch.einsum("hvn,nc->hvc", s, En))

    num = torch.einsum("hvn,n->hv", cv_all, lumE)
    den = torch.einsum("hvn,n->hv", cos, lumE)
    ao = torch.where(den > 1e-30 + 1e-12 * float(lumE.abs().sum()), num / den.clamp_min(1e-30),
                     torch.ones_like(den))
    feats.append(ao[..., None])
    if transmittance is not None:
        T = _t(transmittance, device=dev)
        T = T[None] if T.dim() == 3 else T
        if T.shape[:3] != nl.shape or T.shape[3] != len(mean_free_paths):
            raise ValueError(f"transmittance: expected [H, V, N, M] = {list(nl.shape)} + [{len(mean_free_paths)}] "
                             f"(one per mean free path), got {list(T.shape)}")
        back = (-nl).clamp_min(0.0)                                        # [H,V,N]
        for m in range(len(mean_free_paths)):
            feats.append(torch.einsum("hvn,nc->hvc", T[..., m] * back, En))
    if include_normal:
        feats.append(n)
    if include_view:
        feats.append(o)
    out = torch.cat(feats, -1).to(torch.float32).contiguous()
    energy_out = (energy if normalize == "rgb" else norm).to(torch.float32)
    names = feature_names(roughness, include_normal=include_normal, include_view=include_view,
                          mean_free_paths=mean_free_paths if transmittance is not None else ())
    return out, energy_out, names
