"""Generate the shipped procedural HDR environment maps (deterministic).

    python -m relit_hands.tools.make_environments --out models/environments \
        [--preview docs/environments.png] [--height 256] [--only sky_sun,night]

Writes ``<name>.hdr`` (Radiance RGBE, equirectangular ``2H x H``, orientation of
docs/conventions.md), ``environments.json`` (name, file, description, total energy, max
radiance, bytes) and optionally a tone-mapped preview grid PNG.

Radiance units are arbitrary but physically consistent between maps (roughly: 1 = a bright
overcast zenith). Ground planes are Lambertian and lit by the map's own upper hemisphere, so
their brightness matches the sky. Small bright sources (suns, lamps) are added with their
*energy* fixed exactly (coverage by 16x16 supersampling, then normalized), so an n-light
conversion sees the intended irradiance and direction; peak pixels stay below the float16
maximum (65504) so the maps also survive half-float EXR conversion.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from relit_hands.environment import (
    EnvironmentMap,
    equirect_directions,
    equirect_solid_angles,
    luminance,
)
from relit_hands.color import aces_narkowicz, linear_to_srgb
from relit_hands.image_io import write_hdr_image, write_png

HALF_MAX = 65504.0
SUPERSAMPLE = 4


# ------------------------------------------------------------------------------ primitives


def az_el_dir(az_deg: float, el_deg: float) -> np.ndarray:
    """World direction for azimuth (0 = -Z, 90 = +X, 180 = +Z, -90 = -X) and elevation (deg)."""
    a, e = math.radians(az_deg), math.radians(el_deg)
    return np.array([math.sin(a) * math.cos(e), math.sin(e), -math.cos(a) * math.cos(e)])


def supersampled_dirs(h: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    """World directions ``[h*ss, 2h*ss, 3]`` of an ``ss``-times supersampled equirect grid."""
    return equirect_directions(h * ss, 2 * h * ss)


def downsample(img: np.ndarray, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Box-filter ``[h*ss, 2h*ss, C]`` down to ``[h, 2h, C]`` (inverse of :func:`supersampled_dirs`)."""
    hh, ww, c = img.shape
    return img.reshape(hh // ss, ss, ww // ss, ss, c).mean(axis=(1, 3))


def smoothstep(e0, e1, x):
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (``e0 > e1`` gives a falling step)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def plane_coords(d, az, el):
    """Gnomonic coordinates of directions ``d [..., 3]`` on the plane facing (az, el) degrees.

    Returns ``(x, y, front)``: ``x`` (towards +azimuth) and ``y`` (towards +elevation) are the
    angles (degrees) at which each direction crosses the plane, measured from its centre;
    ``front`` is False for directions that never reach the plane (x = y = 0 there).
    """
    a, e = math.radians(az), math.radians(el)
    c = az_el_dir(az, el)
    t = np.array([math.cos(a), 0.0, math.sin(a)])  # d/d az (horizontal right)
    b = np.array([-math.sin(a) * math.sin(e), math.cos(e), math.cos(a) * math.sin(e)])  # d/d el
    p = d @ c
    front = p > 1e-3
    ps = np.where(front, p, 1.0)
    x = np.degrees(np.arctan((d @ t) / ps))
    y = np.degrees(np.arctan((d @ b) / ps))
    return x, y, front


def rect_mask(d, az, el, half_w, half_h, soft=0.5):
    """Soft mask of a planar rectangle seen from the origin (gnomonic projection).

    Centre at (az, el) degrees, angular half sizes ``half_w`` x ``half_h`` degrees measured in
    the rectangle's plane (so it looks like a real flat softbox / window, curved in equirect),
    edges softened over ``soft`` degrees.
    """
    x, y, front = plane_coords(d, az, el)
    s = max(soft, 1e-3)
    m = smoothstep(half_w + s, half_w - s, np.abs(x)) * smoothstep(half_h + s, half_h - s, np.abs(y))
    return np.where(front, m, 0.0)


def add_disk(img: np.ndarray, center, radius_deg: float, rgb, *, energy: bool = False, ss: int = 16):
    """Add a disk of angular radius ``radius_deg`` around ``center`` (world dir) to ``img`` in place.

    ``energy=False``: ``rgb`` is the disk's radiance (pixel value x coverage).
    ``energy=True``: ``rgb`` is the total irradiance-like energy (radiance x solid angle) the disk
    must carry; pixel values are scaled so the map's integral grows by exactly ``rgb``.
    """
    h, w = img.shape[:2]
    center = np.asarray(center, float) / np.linalg.norm(center)
    el = math.degrees(math.asin(np.clip(center[1], -1, 1)))
    u = (math.atan2(center[0], -center[2]) / (2 * math.pi) + 0.5) % 1.0
    v = 0.5 - el / 180.0
    pad_r = int(math.ceil(radius_deg / (180.0 / h))) + 2
    r0, r1 = max(0, int(v * h) - pad_r), min(h, int(v * h) + pad_r + 1)
    if abs(el) + radius_deg > 80:
        cols = np.arange(w)
    else:
        pad_c = int(math.ceil(radius_deg / (360.0 / w) / math.cos(math.radians(abs(el) + radius_deg)))) + 2
        cols = np.arange(int(u * w) - pad_c, int(u * w) + pad_c + 1) % w
    rows = np.arange(r0, r1)
    # sub-sample directions for the window
    sv = (rows[:, None] + (np.arange(ss) + 0.5)[None, :] / ss) / h  # [R, ss]
    su = (cols[:, None] + (np.arange(ss) + 0.5)[None, :] / ss) / w  # [C, ss]
    phi = 2 * np.pi * (su - 0.5)
    elv = np.pi * (0.5 - sv)
    ce = np.cos(elv)[:, :, None, None]
    dx = np.sin(phi)[None, None] * ce
    dy = np.broadcast_to(np.sin(elv)[:, :, None, None], dx.shape)
    dz = -np.cos(phi)[None, None] * ce
    cosang = dx * center[0] + dy * center[1] + dz * center[2]  # [R, ss, C, ss]
    cov = (cosang >= math.cos(math.radians(radius_deg))).mean(axis=(1, 3))  # [R, C]
    rgb = np.asarray(rgb, float)
    if energy:
        omega = equirect_solid_angles(h, w)[rows][:, None]
        total = float((cov * omega).sum())
        if total <= 0:
            raise ValueError("disk too small to be sampled")
        val = cov[..., None] * (rgb / total)
    else:
        val = cov[..., None] * rgb
    img[np.ix_(rows, cols)] += val.astype(img.dtype)


def ground_radiance(sky: np.ndarray, albedo) -> np.ndarray:
    """Radiance of a Lambertian ground of ``albedo [3]`` lit by the upper hemisphere of ``sky``."""
    h, w = sky.shape[:2]
    d = equirect_directions(h, w)
    omega = equirect_solid_angles(h, w)[:, None]
    cos = np.maximum(d[..., 1], 0.0)
    e = (sky * (cos * omega)[..., None]).reshape(-1, 3).sum(0)
    return np.asarray(albedo) * e / np.pi


def sky_over_ground(up: np.ndarray, albedo, haze_rgb, haze_deg: float, texture_scale: float = 0.7) -> np.ndarray:
    """``up [h, 2h, 3]`` (radiance above the horizon) with its lower half replaced by a textured
    Lambertian ground of ``albedo [3]`` lit by ``up``'s upper hemisphere, blending into the
    horizon colour ``haze_rgb [3]`` over the ``haze_deg`` degrees below the horizon."""
    h = up.shape[0]
    g = ground_radiance(up, albedo)
    dd = equirect_directions(h, 2 * h)
    gel = elevation_deg(dd)
    ground = g[None, None, :] * ground_texture(dd, texture_scale)[..., None]
    haze = np.exp(np.minimum(gel, 0) / haze_deg)[..., None]
    ground = ground * (1 - haze) + haze_rgb * haze
    return np.where((gel < 0)[..., None], ground, up)


def elevation_deg(d):
    """Elevation (degrees, +90 = +Y) of directions ``d [..., 3]`` -> ``[...]``."""
    return np.degrees(np.arcsin(np.clip(d[..., 1], -1, 1)))


def angle_to_deg(d, c):
    """Angle (degrees) between directions ``d [..., 3]`` and the direction ``c [3]`` -> ``[...]``."""
    return np.degrees(np.arccos(np.clip(d @ (c / np.linalg.norm(c)), -1, 1)))


def lerp(a, b, t):
    """``a (1 - t) + b t`` for colours ``a, b [3]`` and weights ``t [...]`` -> ``[..., 3]``."""
    t = np.asarray(t)[..., None]
    return np.asarray(a) * (1 - t) + np.asarray(b) * t


def ground_texture(d, scale=1.0):
    """Gentle deterministic variation (no RNG) for floors / ground, ~ +-8 %."""
    el = np.arcsin(np.clip(d[..., 1], -1, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d[..., 1] < -1e-3, 1.0 / np.maximum(-d[..., 1], 1e-3), 0.0)
    px, pz = d[..., 0] * r * scale, d[..., 2] * r * scale
    n = 0.5 * np.sin(3.1 * px + 1.3 * np.sin(2.3 * pz)) + 0.5 * np.sin(2.7 * pz + 0.7 * np.sin(1.9 * px))
    fade = np.clip(-np.degrees(el) / 10.0, 0, 1)  # no texture near the horizon (aliasing)
    return 1.0 + 0.08 * n * fade


# --------------------------------------------------------------------------------- the maps


def make_sky_sun(h: int) -> np.ndarray:
    d = supersampled_dirs(h)
    el = elevation_deg(d)
    sun_dir = az_el_dir(-35.0, 40.0)
    zen = np.array([0.10, 0.22, 0.60])
    hor = np.array([0.55, 0.66, 0.82])
    t = np.clip(el / 90.0, 0, 1) ** 0.45
    sky = lerp(hor, zen, t)
    ang = angle_to_deg(d, sun_dir)
    # circumsolar aureole + a mild brightening towards the sun (Mie scattering)
    sky = sky * (1.0 + 2.5 * np.exp(-ang / 6.0) + 0.6 * np.exp(-ang / 35.0))[..., None]
    sky = np.where((el >= 0)[..., None], sky, 0.0)
    img = downsample(sky)
    sun_e = np.array([1.0, 0.93, 0.84]) * 4.6  # irradiance ~4x the sky's (clear day)
    sun_img = np.zeros_like(img)
    add_disk(sun_img, sun_dir, 0.25, sun_e, energy=True)
    return sky_over_ground(img + sun_img, [0.20, 0.17, 0.12], hor * 0.8, 2.5)


def make_overcast(h: int) -> np.ndarray:
    d = supersampled_dirs(h)
    el = elevation_deg(d)
    lz = 1.0
    s = np.sin(np.radians(np.maximum(el, 0)))
    sky = lz * (1 + 2 * s)[..., None] / 3.0 * np.array([0.95, 0.97, 1.0])
    sky = np.where((el >= 0)[..., None], sky, 0.0)
    return sky_over_ground(downsample(sky), [0.22, 0.22, 0.21], lz / 3.0 * np.array([0.95, 0.97, 1.0]) * 0.9, 3.0)


def make_studio(h: int) -> np.ndarray:
    d = supersampled_dirs(h)
    el = elevation_deg(d)
    wall = np.array([0.022, 0.022, 0.024])
    room = wall * (1.0 + 0.4 * np.clip(el / 90, -1, 1))[..., None]  # a bit brighter up
    floor = np.array([0.030, 0.029, 0.028]) * np.ones_like(d)
    room = np.where((el < -20)[..., None], floor, room)
    key = rect_mask(d, -45, 25, 22, 16, soft=1.5)[..., None] * np.array([40.0, 39.0, 37.0])
    fill = rect_mask(d, 65, 8, 9, 24, soft=1.5)[..., None] * np.array([9.0, 9.5, 10.5])
    rim = rect_mask(d, 170, 35, 4, 22, soft=0.8)[..., None] * np.array([55.0, 56.0, 60.0])
    top = rect_mask(d, 20, 62, 7, 7, soft=1.5)[..., None] * np.array([6.0, 6.0, 6.0])
    img = room + key + fill + rim + top
    # softbox light pooling on the floor under the key
    pool = np.exp(-angle_to_deg(d, az_el_dir(-40, -55)) ** 2 / (2 * 18.0**2))[..., None]
    img = img + np.where((el < -20)[..., None], pool * np.array([0.05, 0.048, 0.046]), 0.0)
    return downsample(img)


def make_window(h: int) -> np.ndarray:
    d = supersampled_dirs(h)
    el = elevation_deg(d)
    wall = np.array([0.060, 0.045, 0.032])
    ceiling = np.array([0.045, 0.038, 0.030])
    floor = np.array([0.070, 0.042, 0.022])  # warm wood
    img = np.where((el > 55)[..., None], ceiling, wall * np.ones_like(d))
    img = np.where((el < -25)[..., None], floor * ground_texture(d, 3.0)[..., None], img)
    # window on the +X wall: sky above, trees / buildings below, dark mullions
    win = rect_mask(d, 90, 12, 26, 24, soft=0.4)
    a = math.radians(90)
    c = az_el_dir(90, 12)
    t = np.array([math.cos(a), 0.0, math.sin(a)])
    b = np.array([-math.sin(a) * math.sin(math.radians(12)), math.cos(math.radians(12)),
                  math.cos(a) * math.sin(math.radians(12))])
    p = np.maximum(d @ c, 1e-3)
    x = np.degrees(np.arctan((d @ t) / p))
    y = np.degrees(np.arctan((d @ b) / p))
    outside_sky = lerp(np.array([4.0, 5.0, 6.5]), np.array([2.2, 3.2, 5.5]), np.clip((y + 5) / 30, 0, 1))
    trees = np.array([0.35, 0.5, 0.3]) * (1.0 + 0.3 * np.sin(0.9 * x) * np.sin(1.3 * y))[..., None]
    view = np.where((y < -6 + 3 * np.sin(0.35 * x))[..., None], trees, outside_sky)
    mull = (smoothstep(0.9, 0.5, np.abs(x)) + smoothstep(0.9, 0.5, np.abs(y - 2))).clip(0, 1)
    view = view * (1 - mull)[..., None] + wall * 0.6 * mull[..., None]
    img = img * (1 - win)[..., None] + view * win[..., None]
    # light pooling on the floor below the window and a soft glow on the walls nearby
    pool = rect_mask(d, 90, -45, 26, 18, soft=12.0)[..., None] * np.array([0.10, 0.11, 0.125])
    img = img + np.where((el < -25)[..., None], pool, 0.0)
    glow = np.exp(-angle_to_deg(d, c) / 40.0)[..., None] * np.array([0.05, 0.055, 0.06])
    img = img + glow * (1 - win)[..., None]
    return downsample(img)


def make_sunset(h: int) -> np.ndarray:
    d = supersampled_dirs(h)
    el = elevation_deg(d)
    sun_dir = az_el_dir(-20.0, 3.0)
    ang = angle_to_deg(d, sun_dir)
    zen = np.array([0.015, 0.03, 0.10])
    pink = np.array([0.55, 0.22, 0.32])
    orange = np.array([1.3, 0.48, 0.12])
    e = np.clip(el, 0, 90)
    sky = lerp(orange, pink, smoothstep(0, 16, e))
    sky = lerp(sky, zen, smoothstep(10, 50, e))
    toward = (0.35 + 0.65 * np.exp(-ang / 50.0) + 2.5 * np.exp(-ang / 5.0))[..., None]
    horizon_w = np.exp(-e / 12.0)[..., None]
    sky = sky * (toward * horizon_w + (1 - horizon_w))
    sky = np.where((el >= 0)[..., None], sky, 0.0)
    img = downsample(sky)
    add_disk(img, sun_dir, 0.3, np.array([1.0, 0.42, 0.10]) * 0.9, energy=True)
    return sky_over_ground(img, [0.10, 0.08, 0.07], orange * 0.25, 1.5)


def make_night(h: int) -> np.ndarray:
    d = supersampled_dirs(h)
    el = elevation_deg(d)
    sky = lerp(np.array([0.010, 0.012, 0.030]), np.array([0.002, 0.003, 0.010]),
                smoothstep(0, 60, np.clip(el, 0, 90)))
    ground = np.array([0.004, 0.004, 0.005]) * ground_texture(d, 1.5)[..., None]
    img = np.where((el >= 0)[..., None], sky, ground)
    # neon signs and lit windows (saturated)
    img += rect_mask(d, -60, 12, 14, 1.2, soft=0.3)[..., None] * np.array([2.4, 0.02, 1.9])   # magenta
    img += rect_mask(d, -60, 7, 10, 1.0, soft=0.3)[..., None] * np.array([2.0, 0.015, 1.6])
    img += rect_mask(d, 40, 18, 2.0, 12, soft=0.3)[..., None] * np.array([0.01, 1.6, 2.4])   # cyan
    img += rect_mask(d, 130, 5, 16, 2.5, soft=0.5)[..., None] * np.array([0.01, 1.1, 1.6])
    img += rect_mask(d, -150, 10, 8, 5, soft=0.5)[..., None] * np.array([1.2, 0.75, 0.3])   # warm window
    img = downsample(img)
    # amber street lamps and a few coloured point lights (energy-normalized)
    for az, elv, rgb in [(-10, 20, [1.0, 0.55, 0.10]), (95, 22, [1.0, 0.55, 0.10]),
                         (-115, 25, [1.0, 0.5, 0.08])]:
        add_disk(img, az_el_dir(az, elv), 1.2, np.array(rgb) * 0.06, energy=True)
    for az, elv, rgb in [(15, 8, [1.0, 0.0, 0.85]), (165, 14, [0.0, 0.75, 1.0]),
                         (-90, 30, [1.0, 0.02, 0.02])]:
        add_disk(img, az_el_dir(az, elv), 0.8, np.array(rgb) * 0.015, energy=True)
    add_disk(img, az_el_dir(70, 50), 0.27, [0.75, 0.8, 0.9], energy=False)  # moon radiance
    stars = np.zeros_like(img)
    rng = np.random.default_rng(7)  # seeded: deterministic
    hh, ww = img.shape[:2]
    rows = rng.integers(0, int(hh * 0.35), 90)
    cols = rng.integers(0, ww, 90)
    stars[rows, cols] = rng.uniform(0.05, 0.4, (90, 1)) * np.array([0.9, 0.95, 1.0])
    return img + stars


# name -> (generator, description, display EV: a good default exposure for viewing)
ENVIRONMENTS = {
    "sky_sun": (make_sky_sun, "Clear blue sky, bright sun disk (0.5 deg) at 40 deg elevation, "
                              "brown ground lit by sun and sky.", 0.0),
    "overcast": (make_overcast, "CIE standard overcast sky, luminance (1 + 2 sin el) / 3, grey ground.", -0.5),
    "studio": (make_studio, "Dark grey studio with a large key softbox (front left), a tall fill "
                            "(right), a strip rim light behind and a dim top light.", 1.5),
    "window": (make_window, "Dim warm room interior with a bright cool window on the +X wall "
                            "(sky and trees outside, mullions) and a lit patch on the wood floor.", 1.5),
    "sunset": (make_sunset, "Orange / pink horizon gradient under a dark blue zenith, low warm sun "
                            "(3 deg elevation), dark ground.", -0.5),
    "night": (make_night, "Night street: dark blue sky, moon, magenta / cyan neon strips, amber "
                          "street lamps and coloured point lights.", 2.5),
}


# --------------------------------------------------------------------------------- preview


def tonemap_for_preview(img: np.ndarray, ev: float | None = None, key: float = 0.18) -> np.ndarray:
    """ACES-fit (Narkowicz) tone map + sRGB encoding -> float [0, 1].

    Exposure ``2 ** ev``; ``ev=None`` auto-exposes (log-average luminance -> ``key``).
    """
    if ev is None:
        avg = float(np.exp(np.mean(np.log(luminance(img) + 1e-4))))
        x = img * (key / max(avg, 1e-6))
    else:
        x = img * (2.0 ** ev)
    return linear_to_srgb(aces_narkowicz(x))


def write_preview(maps: dict[str, np.ndarray], path: Path, tile_w: int = 512, cols: int = 2,
                  evs: dict[str, float] | None = None) -> None:
    """Grid of tone-mapped maps with their names (and display EV) as labels."""
    import cv2

    names = list(maps)
    tile_h = tile_w // 2
    label_h = 26
    rows = math.ceil(len(names) / cols)
    canvas = np.full((rows * (tile_h + label_h), cols * tile_w, 3), 0.12, np.float32)
    for i, n in enumerate(names):
        r, c = divmod(i, cols)
        img = maps[n]
        if img.shape[1] != tile_w:
            img = cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        y0 = r * (tile_h + label_h)
        canvas[y0 + label_h : y0 + label_h + tile_h, c * tile_w : (c + 1) * tile_w] = tonemap_for_preview(img, (evs or {}).get(n))
    out = np.rint(canvas * 255).astype(np.uint8)
    for i, n in enumerate(names):
        r, c = divmod(i, cols)
        y0 = r * (tile_h + label_h)
        label = n if evs is None or n not in evs else f"{n}  (display EV {evs[n]:+g})"
        cv2.putText(out, label, (c * tile_w + 8, y0 + 19), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (235, 235, 235), 1, cv2.LINE_AA)
    write_png(path, out)


# ------------------------------------------------------------------------------------ main


def generate(out: Path, height: int = 256, only=None, preview: Path | None = None, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    names = list(ENVIRONMENTS) if not only else list(only)
    unknown = [n for n in names if n not in ENVIRONMENTS]
    if unknown:
        raise SystemExit(f"unknown environment(s): {unknown}; known: {list(ENVIRONMENTS)}")
    entries, loaded = [], {}
    t_all = time.time()
    for i, name in enumerate(names, 1):
        t0 = time.time()
        fn, desc, display_ev = ENVIRONMENTS[name]
        img = fn(height).astype(np.float32)
        assert img.shape == (height, 2 * height, 3), img.shape
        assert np.isfinite(img).all() and img.min() >= 0, name
        peak = float(img.max())
        if peak >= HALF_MAX:
            raise RuntimeError(f"{name}: peak radiance {peak} exceeds the float16 range")
        path = out / f"{name}.hdr"
        write_hdr_image(path, img)
        env = EnvironmentMap.load(path)  # what users get (RGBE-quantized)
        loaded[name] = env.image
        energy = env.total_energy()
        size = path.stat().st_size
        entries.append({
            "name": name,
            "file": path.name,
            "description": desc,
            "width": 2 * height,
            "height": height,
            "total_energy_rgb": [round(float(x), 6) for x in energy],
            "total_energy_luminance": round(float(luminance(energy)), 6),
            "max_radiance": round(float(env.image.max()), 3),
            "display_ev": display_ev,
            "bytes": size,
        })
        log(f"[{i}/{len(names)}] {name:9s} {2 * height}x{height}  {size / 1024:7.1f} KiB  "
            f"energy(lum)={float(luminance(energy)):9.4f}  max={float(env.image.max()):9.1f}  "
            f"({time.time() - t0:.1f} s)")
    summary = {
        "generator": "relit_hands.tools.make_environments",
        "format": "Radiance RGBE .hdr, equirectangular, orientation per docs/conventions.md",
        "units": "linear Rec.709 radiance (arbitrary, consistent across maps); total energy = "
                 "integral of radiance over the sphere (sr x radiance)",
        "environments": entries,
    }
    if only:  # keep entries of maps not regenerated
        old = out / "environments.json"
        if old.exists():
            prev = {e["name"]: e for e in json.loads(old.read_text()).get("environments", [])}
            prev.update({e["name"]: e for e in entries})
            summary["environments"] = [prev[k] for k in sorted(prev, key=lambda k: list(ENVIRONMENTS).index(k) if k in ENVIRONMENTS else 99)]
    (out / "environments.json").write_text(json.dumps(summary, indent=2) + "\n")
    if preview is not None:
        preview.parent.mkdir(parents=True, exist_ok=True)
        write_preview(loaded, preview, evs={n: ENVIRONMENTS[n][2] for n in loaded})
        log(f"preview -> {preview}")
    log(f"wrote {len(entries)} map(s) to {out} in {time.time() - t_all:.1f} s")
    return summary


def main(argv=None) -> int:
    from ..validation import OneLineParser, int_range

    ap = OneLineParser(
        prog="relit-hands make-envs",
        description="Generate the procedural HDR environment maps shipped with relit_hands.",
    )
    ap.add_argument("--out", type=Path, default=Path("models/environments"), help="output folder")
    ap.add_argument("--height", type=int_range(8, 4096), default=256, help="map height in pixels (width = 2x)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(ENVIRONMENTS))
    ap.add_argument("--preview", type=Path, default=None, help="also write a tone-mapped preview grid PNG")
    args = ap.parse_args(argv)
    if args.height < 8:
        ap.error("--height must be >= 8")
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    generate(args.out, args.height, only, args.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
