r"""Translucency cue: how far each light's ray travels through the hand, from the proxy ray cast.

Skin lets red light through thin tissue: a finger lit from behind glows. The paper's student
sees light only through visibility-weighted shading, which is zero for a light behind the
surface, so it has no spatially aligned cue for that glow. This module measures it on the
proxy with the same ray caster as the visibility (:mod:`.raycast`, both hands in one scene):

For hand h, proxy vertex x_v (unit outward normal n_v) and light direction w_l (unit, towards
the light) with ``n_v . w_l < 0`` (the light is behind the surface at v):

* ``thickness[h, v, l]``: the distance from ``x_v - epsilon n_v`` (just inside the surface)
  along w_l to where the ray leaves the hand, i.e. the nearest surface hit from inside
  (metres). Light that reaches v from behind has crossed about this much tissue.
* ``exit_visible[h, v, l]``: the light reaches that exit point, i.e. the ray continued from
  ``exit + epsilon w_l`` hits nothing (another finger or the other hand may block it; a
  second crossing of tissue is not followed).
* ``transmittance[h, v, l, m] = exp(-thickness / mfp_m) * exit_visible`` for each mean free
  path ``mfp_m`` (metres; Beer-Lambert attenuation with a few length scales, so the network
  can mix the wavelength-dependent ones skin has: red light travels millimetres, blue far
  less).

For ``n_v . w_l >= 0`` (light in front) all three are 0 / False / 0: that light is already in
the diffuse and specular features. A ray from inside that finds no exit (the vertex sits on a
part thinner than ``epsilon``) counts as thickness 0, exiting at its origin.

The student feature built from it (:func:`relit_hands.features.lighting_features`,
``transmittance=``) is ``transmit_{mfp}_{rgb} = sum_l E_l T_lm max(0, -n.w_l) / energy``.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from . import raycast
from .raycast import DEFAULT_EPSILON, RayCaster

__all__ = ["proxy_transmittance", "thickness_along", "DEFAULT_MEAN_FREE_PATHS", "mean_free_paths_of"]

DEFAULT_MEAN_FREE_PATHS = (0.002, 0.006)  # metres: ~blue/green and ~red scattering lengths in skin


def mean_free_paths_of(feature_names: Sequence[str]) -> tuple:
    """The mean free paths (metres, in order) whose ``transmit_{mm}mm_{r,g,b}`` channels appear in
    ``feature_names`` (a student's inputs), ``()`` when there are none."""
    out = []
    for name in feature_names:
        if name.startswith("transmit_") and name.endswith("mm_r"):
            out.append(float(name[len("transmit_"):-len("mm_r")]) * 1e-3)
    return tuple(out)


def thickness_along(caster: RayCaster, points, normals, dirs, epsilon: float = DEFAULT_EPSILON):
    """The two casts of the cue for surface ``points`` [R, 3] with unit outward ``normals`` and
    unit ``dirs`` [R, 3] (towards the light, behind the surface) on a built ``caster``:
    ``(thickness [R] metres, blocked [R] bool: the light does not reach the exit, query ms)``."""
    origins = points - epsilon * normals
    t_exit = caster.hit_distance(origins, dirs).to(points.device)
    query_ms = caster.last_query_ms
    t_exit = torch.where(torch.isfinite(t_exit), t_exit, torch.zeros_like(t_exit))
    blocked = caster.occluded(origins + (t_exit + epsilon)[:, None] * dirs, dirs).to(points.device)
    return t_exit, blocked, query_ms + caster.last_query_ms


def proxy_transmittance(vertices, normals, faces, directions, *,
                        mean_free_paths: Sequence[float] = DEFAULT_MEAN_FREE_PATHS,
                        epsilon: float = DEFAULT_EPSILON, backend: Union[str, RayCaster] = "auto",
                        return_info: bool = False, scene_built: bool = False):
    """Thickness, exit visibility and transmittance of every (hand, vertex, light) behind the surface.

    ``vertices`` / ``normals`` ``[H, V, 3]`` (world, metres; normals are normalised here),
    ``faces`` ``[F, 3]`` shared or a list per hand, ``directions`` ``[N, 3]`` towards the lights.
    Returns ``{'thickness': float32 [H, V, N] metres, 'exit_visible': bool [H, V, N],
    'transmittance': float32 [H, V, N, M]}`` (torch, on the device of ``vertices``), and with
    ``return_info`` also ``{'backend', 'rays', 'query_ms'}``. ``scene_built``: ``backend`` (a
    RayCaster) already holds these hands' proxies, in hand order (as :func:`raycast.proxy_visibility`
    leaves it), so the scene is not built again. Definitions: module docstring.
    """
    mfp = [float(m) for m in mean_free_paths]
    if not mfp or min(mfp) <= 0 or not np.all(np.isfinite(mfp)):
        raise ValueError(f"mean_free_paths must be positive, finite lengths in metres, got {mean_free_paths}")
    out_device = raycast._device_of(vertices)
    caster = backend if isinstance(backend, RayCaster) else raycast.get_backend(backend)
    work = torch.device("cpu") if caster.name == "embree" else out_device
    vs = torch.stack(raycast._as_hand_list(vertices, torch.float32, work))
    ns = torch.nn.functional.normalize(torch.stack(raycast._as_hand_list(normals, torch.float32, work)), dim=-1)
    H, V = vs.shape[:2]
    if isinstance(faces, (list, tuple)):
        fs = [raycast._as_tensor(f, torch.long, work) for f in faces]
    else:
        fs = [raycast._as_tensor(faces, torch.long, work)] * H
    scene_v = vs.reshape(-1, 3)
    scene_f = torch.cat([f.reshape(-1, 3) + h * V for h, f in enumerate(fs)])
    dirs = torch.nn.functional.normalize(raycast._as_tensor(directions, torch.float32, work), dim=-1)
    N = dirs.shape[0]

    behind = torch.einsum("hvk,nk->hvn", ns, dirs) < 0                    # [H, V, N]
    idx = torch.nonzero(behind.reshape(-1), as_tuple=False).squeeze(1)
    vi, li = torch.div(idx, N, rounding_mode="floor"), idx % N            # flat vertex, light
    if not scene_built:  # the caller may have just built this scene (the visibility pass of the same frame)
        caster.build(scene_v, scene_f)
    t_exit, blocked, query_ms = thickness_along(caster, vs.reshape(-1, 3)[vi], ns.reshape(-1, 3)[vi], dirs[li],
                                                epsilon)

    thickness = torch.zeros(H * V * N, dtype=torch.float32, device=work)
    thickness[idx] = t_exit
    exit_visible = torch.zeros(H * V * N, dtype=torch.bool, device=work)
    exit_visible[idx] = ~blocked
    thickness, exit_visible = thickness.view(H, V, N), exit_visible.view(H, V, N)
    scales = torch.tensor(mfp, dtype=torch.float32, device=work)
    trans = torch.exp(-thickness[..., None] / scales) * exit_visible[..., None]   # [H, V, N, M]
    result = {"thickness": thickness.to(out_device), "exit_visible": exit_visible.to(out_device),
              "transmittance": trans.to(out_device)}
    if return_info:
        return result, {"backend": caster.name, "rays": 2 * int(idx.numel()), "query_ms": query_ms}
    return result
