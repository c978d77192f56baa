"""Contact sheets: labelled grids of rendered tiles (presets x environments)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def label_tile(img: np.ndarray, text: str, size: int = 14) -> np.ndarray:
    """uint8 [H, W, 3] with ``text`` on a dark strip at the top-left."""
    im = Image.fromarray(np.ascontiguousarray(img[..., :3]))
    draw = ImageDraw.Draw(im)
    font = _font(size)
    box = draw.textbbox((0, 0), text, font=font)
    draw.rectangle((0, 0, box[2] + 10, box[3] + 8), fill=(20, 20, 22))
    draw.text((5, 3), text, fill=(235, 235, 235), font=font)
    return np.asarray(im)


def grid(tiles: list, columns: int, gap: int = 2, background=(12, 12, 14)) -> np.ndarray:
    """Arrange equally sized uint8 tiles [H, W, 3] row-major into one image."""
    if not tiles:
        raise ValueError("no tiles to arrange")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    out = np.zeros((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), np.uint8)
    out[:] = background
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = t[..., :3]
    return out


def preset_contact_sheet(engine, scenes: list, envs: list, tile=(256, 256), columns: int = 7,
                         progress=None, env_labels=None, **render_kw) -> tuple[np.ndarray, list]:
    """Render every scene under every environment; returns (sheet uint8, per-tile records)."""
    tiles, records = [], []
    env_labels = env_labels or [env.name for env in envs]
    for env, env_label in zip(envs, env_labels):
        for scene in scenes:
            frame = engine.render(scene, env, width=tile[0], height=tile[1], **render_kw)
            tiles.append(label_tile(frame.image, f"{scene.name} | {env_label}"))
            records.append({"scene": scene.name, "env": env_label, "coverage": float(frame.mask.mean()),
                            "ms": frame.timings_ms})
            if progress is not None:
                progress.update(1)
    return grid(tiles, columns), records
