"""Pictures of the lighting features: every channel as UV maps of both hands, and on the hands.

Channel groups are shown as RGB where the feature carries light colour (diffuse with / without
visibility, each specular lobe), grey for ambient occlusion, ``0.5 n + 0.5`` for normals. Values
are shown as they are fed to the student (divided by the environment's energy); specular lobes,
which exceed 1 near highlights, are compressed with x / (1 + x).
"""
from __future__ import annotations

import numpy as np
import torch

from relit_hands.color import linear_to_srgb, to_uint8

from .contact_sheet import grid, label_tile


def channel_groups(names: list) -> list:
    """[(label, [channel indices])]: RGB triplets by prefix, single channels alone."""
    groups, seen = [], set()
    for i, n in enumerate(names):
        prefix = n.rsplit("_", 1)[0] if n[-2:] in ("_r", "_g", "_b", "_x", "_y", "_z") else n
        if prefix in seen:
            continue
        seen.add(prefix)
        idx = [j for j, m in enumerate(names) if (m.rsplit("_", 1)[0] if m[-2:] in
               ("_r", "_g", "_b", "_x", "_y", "_z") else m) == prefix]
        groups.append((prefix, idx))
    return groups


def display_values(label: str, x: np.ndarray) -> np.ndarray:
    """Feature values [..., 1 or 3] -> linear display values in [0, 1], RGB."""
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, -1)
    if label.startswith("normal") or label.startswith("view"):
        return np.clip(0.5 * x + 0.5, 0, 1)
    if label.startswith("spec"):
        return x / (1.0 + x)
    return np.clip(x, 0, 1)


def feature_sheet(engine, scene, env, camera, *, n_lights=64, resolution=256, tile=256):
    """uint8 sheet: one column per channel group; rows = UV maps of each hand, then the group
    drawn on the hands (uv_texture shading). Returns (sheet, FeatureFrame)."""
    ff = engine.lighting_features(scene, env, camera.center, n_lights=n_lights, resolution=resolution)
    maps = ff.maps.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # [H, R, R, C]
    outside = ~ff.mask
    groups = channel_groups(ff.names)
    rows = [[] for _ in range(len(ff.sides) + 1)]
    for label, idx in groups:
        textures = {}
        for h, side in enumerate(ff.sides):
            disp = display_values(label, maps[h][..., idx])
            textures[side] = disp.astype(np.float32)
            img = to_uint8(linear_to_srgb(disp))
            img[outside] = (40, 40, 44)
            rows[h].append(label_tile(_resize(img, tile), f"{side} UV: {label}", size=12))
        frame = engine.render(scene, None, camera, shading="uv_texture", radiance_textures=textures,
                              tonemap="none", background="none")
        rows[-1].append(label_tile(_resize(frame.image, tile), f"on hands: {label}", size=12))
    tiles = [t for row in rows for t in row]
    return grid(tiles, columns=len(groups)), ff


def _resize(img, size):
    t = torch.as_tensor(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None].float()
    h, w = img.shape[:2]
    s = size / max(h, w)
    t = torch.nn.functional.interpolate(t, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    out = np.zeros((size, size, 3), np.uint8)
    r = t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    y0, x0 = (size - r.shape[0]) // 2, (size - r.shape[1]) // 2
    out[y0:y0 + r.shape[0], x0:x0 + r.shape[1]] = r
    return out
