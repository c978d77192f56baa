"""What kind of lighting an evaluation image shows: the subsets of evaluation set v2.

Computed from the frame itself (scene, environment, camera), so they apply to any capture,
real ones included, and the light stage uses the same tests to plan such frames:

* :func:`dominant_direction`: the environment's brightest direction (a sun, a lamp, a window;
  the zenith of an overcast sky);
* :func:`is_backlit`: the dominant light is behind the hands as the camera sees them (more than
  ``BACKLIT_DEG`` degrees from the direction hands -> camera);
* :func:`interhand_shadow_fraction`: how much of one hand's light-facing proxy surface the *other*
  hand shadows from the dominant light (the two-hand case the paper's visibility features are
  for); a frame counts as ``interhand_shadow`` from ``SHADOW_FRACTION``;
* :func:`env_family`: the light library family of a map id (``sun-000011`` -> ``sun``), or
  ``shipped`` for the named maps.
"""
from __future__ import annotations

import numpy as np
import torch

BACKLIT_DEG = 110.0
SHADOW_FRACTION = 0.05


def dominant_direction(env) -> np.ndarray:
    """Unit world direction [3] of the brightest of 64 equal-area lights of ``env``."""
    from relit_hands.color import REC709_LUMA

    dirs, rgb = env.directional_lights(64)
    return np.asarray(dirs[int(np.argmax(np.asarray(rgb) @ REC709_LUMA))], np.float64)


def is_backlit(camera_centre, scene_centre, light_dir, threshold_deg: float = BACKLIT_DEG) -> bool:
    """True when ``light_dir`` (unit, towards the light) is more than ``threshold_deg`` from the
    direction from ``scene_centre`` to ``camera_centre`` (world, metres)."""
    to_cam = np.asarray(camera_centre, np.float64) - np.asarray(scene_centre, np.float64)
    to_cam /= max(np.linalg.norm(to_cam), 1e-12)
    return bool(np.degrees(np.arccos(np.clip(to_cam @ light_dir, -1.0, 1.0))) > threshold_deg)


def interhand_shadow_fraction(models: dict, scene, light_dir) -> float:
    """Largest fraction, over the two hands, of a hand's proxy vertices facing ``light_dir`` that
    see the light with that hand alone but not with both hands: 0 for a single hand.
    ``models``: {side: HandModel}."""
    from relit_hands import raycast
    from relit_hands.hand_model import vertex_normals

    if len(scene.hands) < 2:
        return 0.0
    d = torch.as_tensor(np.asarray(light_dir, np.float32)[None])
    with torch.no_grad():
        verts = [models[h.side](h.pose, h.global_orient, h.transl, meshes=("proxy",)).proxy_vertices[0]
                 for h in scene.hands]
    faces = [models[h.side].proxy_faces for h in scene.hands]
    normals = [vertex_normals(v, f) for v, f in zip(verts, faces)]
    both = raycast.proxy_visibility(verts, normals, faces, d)
    both = [both[i] for i in range(2)] if isinstance(both, torch.Tensor) else both
    worst = 0.0
    for i in range(2):
        alone = raycast.proxy_visibility(verts[i][None], normals[i][None], faces[i], d)[0]
        facing = (normals[i] @ d[0]) > 0
        if facing.sum() == 0:
            continue
        shadowed = alone[:, 0] & ~both[i][:, 0] & facing
        worst = max(worst, float(shadowed.sum()) / float(facing.sum()))
    return worst


def env_family(env_id: str) -> str:
    """Light-library family of a map id, ``shipped`` for a shipped map's name."""
    from .light_library import FAMILIES

    head = str(env_id).split("-")[0]
    return head if head in FAMILIES and "-" in str(env_id) else "shipped"
