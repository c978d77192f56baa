r"""A seeded library of thousands of diverse HDR training environments, with splits and a guard.

    relit-hands make-light-library --out data/lights --count 200 --height 128 --preview lights.png
    lib = LightLibrary.generated(count=100, split="train"); env = lib.load(lib.entries()[0])

**Maps.** ``generate(family, seed, height)`` -> ``[height, 2 height, 3]`` float32 linear Rec.709
radiance, equirectangular with the orientation of docs/conventions.md (row 0 = +Y, centre column
looks at -Z), in the units of the shipped maps (:mod:`.make_environments`: 1 ~ a bright overcast
zenith). It is a pure function of its arguments: every random parameter comes from a generator
seeded by (crc32(family), seed) and is drawn before anything depends on ``height``, so the same
inputs give bit-identical images and other heights show the same scene. Built from the primitives
of :mod:`.make_environments` (4x4 supersampled masks, gnomonic rectangles, energy-exact disks, a
Lambertian ground lit by the upper hemisphere). Azimuths are degrees with 0 = -Z, 90 = +X
(:func:`.make_environments.az_el_dir`), elevations degrees above the horizon; every azimuth is
drawn over the full circle, so lights come from in front of, beside and behind the subject
whatever the view. Families (parameters drawn uniformly unless noted):

* ``sun``: clear-to-hazy sky (haze 0..1), sun anywhere in azimuth, elevation -8..88 deg with 30 %
  of seeds grazing (-8..8 deg: below -radius the disk is gone and only the twilight glow remains),
  disk radius 0.25..1.5 deg x (1 + 2 haze), sun = 50..90 % of the upper hemisphere's energy,
  warm dusk colours at low sun; ground albedo 0.05..0.8 (dark soil to snow: light from below).
* ``overcast``: sky luminance (1 + g sin el) with g = 0.5..3 (CIE overcast: 2), a brighter
  thin-cloud patch (x1..2.5, 15..45 deg wide), cool-to-warm tint, ground albedo 0.05..0.5.
* ``room``: interior with coloured walls (any hue, saturation 0.1..0.7), ceiling and floor,
  1..3 windows (8..30 x 8..25 deg half sizes, 15..150x the wall radiance, blue-to-sunset sky over
  a coloured landscape, optional mullions), light pools and glow; 50 %: a ceiling lamp
  (2700..4000 K, 5..30 % of the energy).
* ``studio``: dim backdrop (1..8 % of the energy) and 2..5 sources among soft boxes (5..25 deg
  half sizes), strips (1.5..4 x 12..35 deg) and rings (6..18 deg radius), at elevations -35..75
  deg (below = bounce cards), 2700..8000 K or (15 %) a coloured gel; key/fill ratios up to 20:1.
* ``color``: 2..6 saturated coloured sources (hues spread around the wheel, saturation 0.6..1),
  disks of 1..8 deg radius or boxes of 3..15 deg half size, anywhere on the sphere, over a dark
  backdrop (0.5..5 % of the energy).
* ``neon``: night: dark sky and street, 2..8 saturated neon strips (0.6..2 x 4..20 deg), 0..6 lit
  windows, 0..4 sodium street lamps (disks), 50 %: a moon.

Total energy (integral of radiance over the sphere, Rec.709 luminance, sr x radiance units) is
drawn log-uniformly from the family's :data:`ENERGY_RANGES` (all within 0.05..60; the shipped maps
span 0.34..25) and met exactly before the float32 cast (RGBE files: within 1 %). Maps are finite
and non-negative; small disks are widened where needed so that no pixel exceeds
:data:`DISK_RADIANCE_MAX` (HALF_MAX / 4), so every map survives half-float EXR.

**Splits.** ``split_of(family, seed)``: u = the first 8 bytes of sha256("family/seed") / 2^64;
train if u < 0.8, val if u < 0.9, else test (:data:`SPLIT_FRACTIONS`). The whole
:data:`HELD_OUT_FAMILY` (``color``) is test: its seeds are never trained on. It is the family to
hold out because every ingredient of it is seen in training (saturated colours in ``neon``, several
area sources and disks in ``studio`` and ``room``) but not their combination -- lights of very
different hues from different directions, the case where the student's per-channel energy
normalisation and its colour handling must generalise, and the one the six shipped maps lack.
User maps (a folder of ``.hdr`` / ``.exr`` / ``.pic``): u from the sha256 of the file's bytes, so a
map keeps its split when renamed or moved, and duplicates share a split.

**Guard.** :func:`require_split` raises :class:`SplitError` (a ``ValueError``) naming the first
entry outside the allowed splits, and also an entry whose recorded split disagrees with the rule
(an edited manifest). Training uses ``{"train"}``; evaluation on novel light uses ``{"test"}``.

**Folders.** ``make-light-library`` writes ``<id>.hdr`` per map, ``library.json`` (entries: id,
family, seed, split, file, source, energy, peak, parameters) and a preview grid;
:meth:`LightLibrary.from_folder` reads such a folder, or any folder of user maps.
"""
from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from relit_hands.environment import EnvironmentMap, equirect_solid_angles, luminance
from relit_hands.image_io import HDR_EXTENSIONS, write_hdr_image

from .make_environments import (
    HALF_MAX,
    SUPERSAMPLE,
    add_disk,
    angle_to_deg,
    az_el_dir,
    downsample,
    elevation_deg,
    ground_texture,
    lerp,
    plane_coords,
    rect_mask,
    sky_over_ground,
    smoothstep,
    supersampled_dirs,
    write_preview,
)

__all__ = ["FAMILIES", "TRAIN_FAMILIES", "HELD_OUT_FAMILY", "ENERGY_RANGES", "SPLITS", "SPLIT_FRACTIONS",
           "DEFAULT_HEIGHT", "DISK_RADIANCE_MAX", "LightEntry", "LightLibrary", "SplitError", "generate",
           "split_of", "file_split", "require_split", "add_arguments", "run_from_args", "main"]

DEFAULT_HEIGHT = 128
DISK_RADIANCE_MAX = HALF_MAX / 4
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
HELD_OUT_FAMILY = "color"
USER_FAMILY = "file"
PREVIEW_MAX = 36
# family -> (min, max) total luminance energy, drawn log-uniformly
ENERGY_RANGES = {"sun": (1.0, 40.0), "overcast": (0.5, 12.0), "room": (0.3, 8.0), "studio": (2.0, 60.0),
                 "color": (0.3, 10.0), "neon": (0.05, 2.0)}


class SplitError(ValueError):
    """A light map of the wrong split (or with a forged split) was about to be used."""


# ------------------------------------------------------------------------------- helpers


def _energy(img: np.ndarray) -> float:
    """Luminance of the integral of ``img [h, 2h, 3]`` radiance over the sphere (sr x radiance)."""
    h = img.shape[0]
    return float(luminance(equirect_solid_angles(h, 2 * h) @ img.astype(np.float64).sum(axis=1)))


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """Colour ``[3]`` of a black body at ``kelvin`` (Planck at 610 / 550 / 465 nm, 6500 K = white),
    scaled to unit luminance."""
    lam = np.array([610e-9, 550e-9, 465e-9])

    def planck(t):
        return 1.0 / (lam**5 * np.expm1(1.4388e-2 / (lam * t)))

    rgb = planck(kelvin) / planck(6500.0)
    return rgb / luminance(rgb)


def hue_rgb(hue: float, sat: float) -> np.ndarray:
    """Colour ``[3]`` of HSV (hue 0..1, saturation 0..1, value 1) scaled to unit luminance."""
    rgb = np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, 1.0))
    return rgb / luminance(rgb)


def _albedo(rng, lo: float, hi: float, hue_lo: float, hue_hi: float, sat_hi: float) -> np.ndarray:
    tint = np.array(colorsys.hsv_to_rgb(rng.uniform(hue_lo, hue_hi), rng.uniform(0.0, sat_hi), 1.0))
    return rng.uniform(lo, hi) * tint


def _loguniform(rng, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _soft(soft: float, h: int) -> float:
    """Edge softness (deg) of at least one supersample, so thin shapes never fall between samples."""
    return max(soft, 180.0 / (h * SUPERSAMPLE))


def _mask(m: np.ndarray) -> np.ndarray:
    """Supersampled scalar mask ``[h*ss, 2h*ss]`` -> ``[h, 2h]``."""
    return downsample(m[..., None])[..., 0]


def _disk_radius(rgb, radius_deg: float, h: int) -> float:
    """``radius_deg`` widened so a disk of energy ``rgb [3]`` stays below :data:`DISK_RADIANCE_MAX`
    and spans at least one of :func:`add_disk`'s 16x16 subsamples at height ``h``."""
    r_peak = math.degrees(math.sqrt(float(np.max(rgb)) / (math.pi * DISK_RADIANCE_MAX)))
    return max(radius_deg, r_peak, 180.0 / (16 * h))


def _compose(h: int, layers, disks, total: float) -> np.ndarray:
    """Sum of light components with exact energies -> ``[h, 2h, 3]``.

    ``layers``: ``(image [h, 2h, 3] relative radiance, weight)``; ``disks``: ``(direction [3],
    radius_deg, colour [3], weight)``. Weights are normalised to sum to 1; each component carries
    ``weight x total`` luminance energy.
    """
    wsum = sum(w for _, w in layers) + sum(d[-1] for d in disks)
    img = np.zeros((h, 2 * h, 3))
    for rel, w in layers:
        img += rel * (total * w / wsum / _energy(rel))
    for direction, radius, colour, w in disks:
        rgb = np.asarray(colour) / luminance(colour) * (total * w / wsum)
        add_disk(img, direction, _disk_radius(rgb, radius, h), rgb, energy=True)
    return img


# ------------------------------------------------------------------------------ families


def _sun(rng, h: int, total: float):
    az = rng.uniform(-180, 180)
    el = rng.uniform(-8, 8) if rng.random() < 0.3 else rng.uniform(8, 88)
    haze = rng.uniform(0, 1)
    radius = rng.uniform(0.25, 1.5) * (1 + 2 * haze)
    sun_frac = rng.uniform(0.5, 0.9)
    aureole, aureole_w = rng.uniform(1, 4), rng.uniform(4, 10)
    albedo = _albedo(rng, 0.05, 0.8, 0.05, 0.35, 0.5)
    sun_dir = az_el_dir(az, el)
    dusk = float(smoothstep(15.0, -4.0, el))  # 0 by day, 1 with the sun at / below the horizon
    d = supersampled_dirs(h)
    e, ang = elevation_deg(d), angle_to_deg(d, sun_dir)
    zen = lerp(lerp([0.10, 0.22, 0.60], [0.40, 0.46, 0.58], haze), [0.015, 0.03, 0.10], dusk)
    hor = lerp([0.55, 0.66, 0.82], [0.85, 0.85, 0.85], haze)
    sky = lerp(hor, zen, np.clip(e / 90.0, 0, 1) ** 0.45)
    glow = dusk * np.exp(-ang / 50.0) * np.exp(-np.clip(e, 0, 90) / 12.0)
    sky = sky + glow[..., None] * np.array([1.3, 0.48, 0.12])
    sky = sky * (1.0 + aureole * np.exp(-ang / aureole_w) + 0.6 * np.exp(-ang / 35.0))[..., None]
    sky = downsample(np.where((e >= 0)[..., None], sky, 0.0))
    sun_rgb = lerp([1.0, 0.93, 0.84], [1.0, 0.42, 0.10], dusk)
    sun_energy = sun_rgb / luminance(sun_rgb) * total * sun_frac
    visible = el - _disk_radius(sun_energy, radius, h) >= 0.5
    sky_share = 1 - sun_frac if visible else 1.0
    up = _compose(h, [(sky, sky_share)], [(sun_dir, radius, sun_rgb, sun_frac)] if visible else [], total)
    haze_rgb = 0.8 * sky[h // 2 - 1].mean(0) * (total * sky_share / _energy(sky))  # sky just above the horizon
    params = {"sun_azimuth_deg": az, "sun_elevation_deg": el, "sun_visible": bool(visible), "haze": haze,
              "sun_fraction": sun_frac if visible else 0.0, "ground_albedo": albedo.tolist()}
    return sky_over_ground(up, albedo, haze_rgb, 2.5), params


def _overcast(rng, h: int, total: float):
    grad = rng.uniform(0.5, 3.0)
    tint = lerp([0.9, 0.95, 1.05], [1.05, 1.0, 0.9], rng.uniform(0, 1))
    p_az, p_el, p_k, p_w = rng.uniform(-180, 180), rng.uniform(10, 80), rng.uniform(0, 1.5), rng.uniform(15, 45)
    albedo = _albedo(rng, 0.05, 0.5, 0.05, 0.35, 0.4)
    d = supersampled_dirs(h)
    e = elevation_deg(d)
    patch = 1 + p_k * np.exp(-angle_to_deg(d, az_el_dir(p_az, p_el)) / p_w)
    lum = (1 + grad * np.sin(np.radians(np.maximum(e, 0)))) * patch
    sky = downsample(np.where((e >= 0)[..., None], lum[..., None] * tint, 0.0))
    up = _compose(h, [(sky, 1.0)], [], total)
    params = {"gradation": grad, "patch_azimuth_deg": p_az, "patch_elevation_deg": p_el, "patch_gain": p_k,
              "ground_albedo": albedo.tolist()}
    return sky_over_ground(up, albedo, 0.9 * up[h // 2 - 1].mean(0), 3.0), params


def _room(rng, h: int, total: float):
    wall = hue_rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.7))
    ceiling = lerp(wall, [1.0, 1.0, 1.0], 0.5) * rng.uniform(0.6, 1.2)
    floor = hue_rgb(rng.uniform(0.02, 0.12), rng.uniform(0.0, 0.8)) * rng.uniform(0.4, 1.5)
    ceil_el, floor_el = rng.uniform(35, 60), -rng.uniform(20, 45)
    d = supersampled_dirs(h)
    e = elevation_deg(d)
    img = np.where((e > ceil_el)[..., None], ceiling, wall * np.ones_like(d))
    img = np.where((e < floor_el)[..., None], floor * ground_texture(d, 3.0)[..., None], img)
    windows = []
    for _ in range(int(rng.integers(1, 4))):
        az, el, hw, hh = rng.uniform(-180, 180), rng.uniform(0, 30), rng.uniform(8, 30), rng.uniform(8, 25)
        gain = _loguniform(rng, 15, 150)
        sky_rgb = lerp([2.2, 3.2, 5.5], [5.0, 2.5, 1.2], rng.uniform(0, 1) ** 2)
        land = hue_rgb(rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.6)) * rng.uniform(0.05, 0.3)
        horizon, mullions = rng.uniform(-15, 5), rng.random() < 0.6
        sky_rgb = sky_rgb / luminance(sky_rgb)
        x, y, _ = plane_coords(d, az, el)
        view = np.where((y < horizon + 3 * np.sin(0.35 * x))[..., None], land, sky_rgb) * gain
        if mullions:
            bar = np.clip(smoothstep(0.9, 0.5, np.abs(x)) + smoothstep(0.9, 0.5, np.abs(y - 2)), 0, 1)
            view = view * (1 - bar)[..., None] + wall * 0.6 * bar[..., None]
        win = rect_mask(d, az, el, hw, hh, soft=_soft(0.4, h))[..., None]
        glow = np.exp(-angle_to_deg(d, az_el_dir(az, el)) / 40.0)[..., None] * sky_rgb * 0.02 * gain
        pool = rect_mask(d, az, -45, hw, 18, soft=12.0)[..., None] * sky_rgb * 0.05 * gain
        img = img * (1 - win) + view * win + glow * (1 - win) + np.where((e < floor_el)[..., None], pool, 0.0)
        windows.append({"azimuth_deg": az, "elevation_deg": el, "half_size_deg": [hw, hh], "gain": gain})
    disks = []
    if rng.random() < 0.5:
        lamp = (az_el_dir(rng.uniform(-180, 180), rng.uniform(50, 89)), rng.uniform(1, 4),
                kelvin_rgb(rng.uniform(2700, 4000)), rng.uniform(0.05, 0.3))
        disks.append(lamp)
    img = _compose(h, [(downsample(img), 1.0 - sum(x[-1] for x in disks))], disks, total)
    return img, {"windows": windows, "lamp": bool(disks), "wall_rgb": wall.tolist()}


def _studio(rng, h: int, total: float):
    d = supersampled_dirs(h)
    e = elevation_deg(d)
    grey = kelvin_rgb(rng.uniform(3000, 7000))
    back = grey * (1.0 + 0.4 * np.clip(e / 90, -1, 1))[..., None]
    back = np.where((e < -20)[..., None], back * rng.uniform(0.8, 1.5), back)
    bg_w = rng.uniform(0.01, 0.08)
    lights, sources = [], []
    for _ in range(int(rng.integers(2, 6))):
        kind = str(rng.choice(["box", "strip", "ring"]))
        az, el = rng.uniform(-180, 180), rng.uniform(-35, 75)
        colour = hue_rgb(rng.uniform(0, 1), rng.uniform(0.3, 0.6)) if rng.random() < 0.15 \
            else kelvin_rgb(rng.uniform(2700, 8000))
        weight = _loguniform(rng, 0.05, 1.0)
        if kind == "box":
            m = rect_mask(d, az, el, rng.uniform(5, 25), rng.uniform(5, 25), soft=_soft(rng.uniform(0.5, 3), h))
        elif kind == "strip":
            long, short = rng.uniform(12, 35), rng.uniform(1.5, 4)
            hw, hh = (short, long) if rng.random() < 0.7 else (long, short)
            m = rect_mask(d, az, el, hw, hh, soft=_soft(0.8, h))
        else:
            radius, width, s = rng.uniform(6, 18), rng.uniform(1, 3), _soft(0.5, h)
            m = smoothstep(width + s, width - s, np.abs(angle_to_deg(d, az_el_dir(az, el)) - radius))
        lights.append((_mask(m)[..., None] * colour, weight))
        sources.append({"kind": kind, "azimuth_deg": az, "elevation_deg": el, "weight": weight})
    wsum = sum(w for _, w in lights)
    layers = [(downsample(back), bg_w)] + [(m, w * (1 - bg_w) / wsum) for m, w in lights]
    return _compose(h, layers, [], total), {"backdrop_fraction": bg_w, "sources": sources}


def _color(rng, h: int, total: float):
    d = supersampled_dirs(h)
    e = elevation_deg(d)
    back = hue_rgb(rng.uniform(0, 1), rng.uniform(0, 0.3)) * (1.0 + 0.3 * np.clip(e / 90, -1, 1))[..., None]
    bg_w = rng.uniform(0.005, 0.05)
    layers, disks, sources = [(downsample(back), bg_w)], [], []
    n = int(rng.integers(2, 7))
    hue0 = rng.uniform(0, 1)
    for i in range(n):
        colour = hue_rgb(hue0 + i / n + rng.uniform(-0.08, 0.08), rng.uniform(0.6, 1.0))
        az, el, w = rng.uniform(-180, 180), rng.uniform(-40, 80), _loguniform(rng, 0.1, 1.0)
        if rng.random() < 0.5:
            disks.append((az_el_dir(az, el), rng.uniform(1, 8), colour, w))
        else:
            m = rect_mask(d, az, el, rng.uniform(3, 15), rng.uniform(3, 15), soft=_soft(1.0, h))
            layers.append((_mask(m)[..., None] * colour, w))
        sources.append({"azimuth_deg": az, "elevation_deg": el, "rgb": colour.tolist()})
    k = (1 - bg_w) / (sum(w for _, w in layers[1:]) + sum(x[-1] for x in disks))
    layers = layers[:1] + [(m, w * k) for m, w in layers[1:]]
    disks = [(c, r, rgb, w * k) for c, r, rgb, w in disks]
    return _compose(h, layers, disks, total), {"backdrop_fraction": bg_w, "sources": sources}


NEON_HUES = (0.83, 0.5, 0.95, 0.33, 0.62, 0.0, 0.1)  # magenta, cyan, pink, green, blue, red, amber


def _neon(rng, h: int, total: float):
    d = supersampled_dirs(h)
    e = elevation_deg(d)
    sky = lerp([0.010, 0.012, 0.030], [0.002, 0.003, 0.010], smoothstep(0, 60, np.clip(e, 0, 90))) * rng.uniform(0.5, 2)
    street = np.array([0.004, 0.004, 0.005]) * rng.uniform(0.5, 2) * ground_texture(d, 1.5)[..., None]
    layers = [(downsample(np.where((e >= 0)[..., None], sky, street)), rng.uniform(0.05, 0.3))]
    for _ in range(int(rng.integers(2, 9))):
        colour = hue_rgb(NEON_HUES[int(rng.integers(len(NEON_HUES)))] + rng.uniform(-0.03, 0.03), rng.uniform(0.85, 1))
        az, el, long, short = rng.uniform(-180, 180), rng.uniform(-5, 40), rng.uniform(4, 20), rng.uniform(0.6, 2)
        hw, hh = (short, long) if rng.random() < 0.3 else (long, short)
        m = rect_mask(d, az, el, hw, hh, soft=_soft(0.3, h))
        layers.append((_mask(m)[..., None] * colour, _loguniform(rng, 0.05, 0.3)))
    for _ in range(int(rng.integers(0, 7))):
        az, el, hw, hh = rng.uniform(-180, 180), rng.uniform(0, 30), rng.uniform(2, 6), rng.uniform(2, 5)
        m = rect_mask(d, az, el, hw, hh, soft=_soft(0.5, h))
        layers.append((_mask(m)[..., None] * kelvin_rgb(rng.uniform(2500, 4000)), rng.uniform(0.01, 0.05)))
    disks = [(az_el_dir(rng.uniform(-180, 180), rng.uniform(5, 35)), rng.uniform(0.6, 2), [1.0, 0.55, 0.10],
              rng.uniform(0.03, 0.15)) for _ in range(int(rng.integers(0, 5)))]
    if rng.random() < 0.5:
        disks.append((az_el_dir(rng.uniform(-180, 180), rng.uniform(20, 70)), 0.27, [0.75, 0.8, 0.9],
                      rng.uniform(0.002, 0.01)))
    return _compose(h, layers, disks, total), {"strips_and_windows": len(layers) - 1, "disks": len(disks)}


# family -> (generator(rng, height, total_energy) -> (image, params), one-line description)
FAMILIES = {
    "sun": (_sun, "sun and sky: any sun direction incl. grazing / set, clear to hazy, bright ground"),
    "overcast": (_overcast, "overcast sky with random gradation, bright patch, tint and ground"),
    "room": (_room, "interior: coloured walls, 1-3 windows, optional ceiling lamp"),
    "studio": (_studio, "studio: soft boxes, strips and rings, tungsten to daylight or gels"),
    "color": (_color, "several saturated coloured sources (HELD OUT of training)"),
    "neon": (_neon, "night street: neon strips, lit windows, sodium lamps, moon"),
}
TRAIN_FAMILIES = tuple(f for f in FAMILIES if f != HELD_OUT_FAMILY)


def _family_rng(family: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(family.encode()), int(seed)])


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown light family {family!r} (known: {', '.join(FAMILIES)})")


def generate(family: str, seed: int, height: int = DEFAULT_HEIGHT, *, with_params: bool = False):
    """The map of ``(family, seed)`` at ``height``: ``[height, 2 height, 3]`` float32 radiance
    (module docstring), or ``(image, params)`` with the drawn parameters when ``with_params``."""
    _check_family(family)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if int(height) < 16 or height % 2:
        raise ValueError(f"height must be an even integer >= 16, got {height!r}")
    rng = _family_rng(family, seed)
    total = _loguniform(rng, *ENERGY_RANGES[family])
    img, params = FAMILIES[family][0](rng, int(height), total)
    img = (img * (total / _energy(img))).astype(np.float32)
    peak = float(img.max())
    if not np.isfinite(img).all() or img.min() < 0 or peak >= HALF_MAX:
        raise RuntimeError(f"{family}-{seed}: invalid map (peak {peak})")  # a generator bug, never user input
    return (img, {"total_energy": total, **params}) if with_params else img


# ---------------------------------------------------------------------------------- splits


def _unit_hash(data: bytes) -> float:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2.0**64


def _split_from_unit(u: float) -> str:
    return "train" if u < SPLIT_FRACTIONS["train"] else "val" if u < 1.0 - SPLIT_FRACTIONS["test"] else "test"


def split_of(family: str, seed: int) -> str:
    """Split of a generated map (module docstring): the held-out family is always ``test``."""
    _check_family(family)
    return "test" if family == HELD_OUT_FAMILY else _split_from_unit(_unit_hash(f"{family}/{int(seed)}".encode()))


def file_split(path) -> str:
    """Split of a user map file, from the sha256 of its bytes."""
    return _split_from_unit(_unit_hash(Path(path).read_bytes()))


@dataclass(frozen=True)
class LightEntry:
    """A library map, without its pixels. ``id``: ``"<family>-<seed:06d>"`` for generated maps,
    ``"file-<stem>"`` for user maps (then ``family == "file"`` and ``seed`` is None); ``path``: the
    map's file when it lives on disk (user maps, folders written by ``make-light-library``)."""

    id: str
    family: str
    split: str
    seed: int | None = None
    path: Path | None = None


def _generated_entry(family: str, seed: int, path=None) -> LightEntry:
    return LightEntry(f"{family}-{seed:06d}", family, split_of(family, seed), seed, path)


def require_split(entries, allowed: Iterable[str], purpose: str) -> None:
    """Raise :class:`SplitError` naming the first of ``entries`` (one :class:`LightEntry` or many)
    whose split is not in ``allowed``, or whose recorded split is not the one the split rule gives
    its (family, seed)."""
    allowed = set(allowed)
    for e in [entries] if isinstance(entries, LightEntry) else entries:
        if e.seed is not None and e.family in FAMILIES and e.split != split_of(e.family, e.seed):
            raise SplitError(f"{purpose}: light map {e.id} is recorded as {e.split!r} but the split rule "
                             f"assigns {split_of(e.family, e.seed)!r} to {e.family} seed {e.seed}")
        if e.split not in allowed:
            why = f" (family {e.family!r} is held out of training)" if e.family == HELD_OUT_FAMILY else ""
            raise SplitError(f"{purpose}: light map {e.id} is in the {e.split!r} split{why}; "
                             f"{purpose} accepts only {', '.join(sorted(allowed))} maps")


# --------------------------------------------------------------------------------- library


class LightLibrary:
    """A list of :class:`LightEntry` (generated seeds and / or map files) with its splits."""

    def __init__(self, entries: Iterable[LightEntry], source: str = ""):
        self._entries = list(entries)
        self.source = source

    @classmethod
    def generated(cls, families=None, count: int = 100, split: str | None = None, first_seed: int = 0):
        """``count`` seeds per family (default: all :data:`FAMILIES`): seeds ``first_seed ...
        first_seed + count - 1``, or with ``split`` the first ``count`` seeds (from ``first_seed``)
        that fall in that split. The held-out family has no ``train`` / ``val`` seeds."""
        families = list(FAMILIES if families is None else families)
        for f in families:
            _check_family(f)
        if isinstance(count, bool) or int(count) != count or count <= 0:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        entries = []
        for f in families:
            if split in ("train", "val") and f == HELD_OUT_FAMILY:
                continue
            seed, found = first_seed, 0
            while found < count and (split is not None or seed < first_seed + count):
                if split is None or split_of(f, seed) == split:
                    entries.append(_generated_entry(f, seed))
                    found += 1
                seed += 1
        return cls(entries, f"generated: {', '.join(families)} x {count}" + (f" ({split})" if split else ""))

    @classmethod
    def from_folder(cls, folder):
        """A folder written by ``make-light-library`` (its ``library.json``), else every map file
        (``.hdr`` / ``.exr`` / ``.pic``, sorted by name) split by :func:`file_split`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such light-library folder")
        manifest = folder / "library.json"
        if manifest.is_file():
            entries = [LightEntry(m["id"], m["family"], m["split"], m.get("seed"), folder / m["file"])
                       for m in json.loads(manifest.read_text())["entries"]]
        else:
            files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in HDR_EXTENSIONS)
            entries = [LightEntry(f"{USER_FAMILY}-{p.stem}", USER_FAMILY, file_split(p), None, p) for p in files]
        if not entries:
            raise ValueError(f"{folder}: no environment maps (.hdr / .exr / .pic) and no library.json")
        return cls(entries, str(folder))

    @classmethod
    def from_spec(cls, spec: str):
        """``"gen:COUNT"``: COUNT ``train`` maps per training family; anything else: a folder."""
        if str(spec).startswith("gen:"):
            try:
                count = int(spec[4:])
            except ValueError:
                raise ValueError(f"light library {spec!r}: expected gen:COUNT with an integer COUNT") from None
            return cls.generated(TRAIN_FAMILIES, count, split="train")
        return cls.from_folder(spec)

    def entries(self, split: str | None = None) -> list[LightEntry]:
        """Entries of ``split`` (``None`` / ``"all"``: every entry), in library order."""
        if split in (None, "all"):
            return list(self._entries)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")
        return [e for e in self._entries if e.split == split]

    def sample(self, rng: np.random.Generator, n: int, split: str) -> list[LightEntry]:
        """``n`` entries of ``split`` drawn uniformly with ``rng`` (without replacement while ``n``
        does not exceed the split's size). Users still check them with :func:`require_split`."""
        pool = self.entries(split)
        if not pool:
            raise ValueError(f"light library {self.source}: no {split!r} maps")
        return [pool[i] for i in rng.choice(len(pool), size=int(n), replace=n > len(pool))]

    def load(self, entry: LightEntry, height: int = DEFAULT_HEIGHT) -> EnvironmentMap:
        """The entry's :class:`EnvironmentMap` named ``entry.id``: its file when it has one (stored
        resolution), else :func:`generate` at ``height``."""
        if entry.path is not None:
            return EnvironmentMap.load(entry.path, name=entry.id)
        return EnvironmentMap(generate(entry.family, entry.seed, height), name=entry.id)

    def __len__(self) -> int:
        return len(self._entries)


# ------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--out", required=True, type=Path, help="output folder (maps, library.json)")
    p.add_argument("--families", nargs="+", default=None, help=f"generated families (default: {' '.join(FAMILIES)})")
    p.add_argument("--count", type=int, default=None, help="maps per family (default 16)")
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT, help="generated map height (width = 2x)")
    p.add_argument("--split", choices=SPLITS + ("all",), default="all",
                   help="keep only this split (with generated families: COUNT maps of it per family)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--from-folder", type=Path, default=None, help="take user .hdr/.exr maps from this folder instead")
    p.add_argument("--preview", type=Path, default=None, help=f"tone-mapped grid PNG of up to {PREVIEW_MAX} maps")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder (or over a --preview file) that relit-hands did not "
                        "write; never over an input")
    p.add_argument("--no-progress", action="store_true")
    return p


def _library_from_args(args) -> LightLibrary:
    split = None if args.split == "all" else args.split
    if args.from_folder is not None:
        if args.families or args.count is not None:
            raise ValueError("--from-folder takes the folder's maps: do not combine it with --families / --count")
        lib = LightLibrary.from_folder(args.from_folder)
        return LightLibrary(lib.entries(split), lib.source)
    if args.height < 16 or args.height % 2 or args.height > 4096:
        raise ValueError(f"--height must be an even integer in 16..4096, got {args.height}")
    if args.count is not None and args.count > 100_000:
        raise ValueError(f"--count must be at most 100000, got {args.count}")
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {args.first_seed}")
    lib = LightLibrary.generated(args.families, 16 if args.count is None else args.count, split, args.first_seed)
    if not len(lib):
        raise ValueError(f"no maps: family {HELD_OUT_FAMILY!r} has only test maps (held out of training)")
    return lib


def _preview_ev(img: np.ndarray) -> float:
    """Display EV putting the luminance exceeded on 0.5 % of the sphere (by solid angle) at 2, so
    sources saturate in colour rather than to white; rounded to half stops."""
    h = img.shape[0]
    lum = luminance(img).ravel()
    order = np.argsort(lum)
    omega = np.repeat(equirect_solid_angles(h, 2 * h), 2 * h)[order]
    level = lum[order][np.searchsorted(np.cumsum(omega), 0.995 * omega.sum())]
    return round(2 * math.log2(2.0 / max(float(level), 1e-6))) / 2


def make_light_library(args, command: str | None = None, log=print) -> dict:
    """Write the library of ``args`` (see :func:`add_arguments`); returns the manifest dict."""
    from tqdm import tqdm

    from relit_hands.validation import (OutputFolder, OutputSet, check_finite_image, json_file_says, read_json_file,
                                       write_atomic)

    lib = _library_from_args(args)
    out = Path(args.out)
    overwrite = bool(getattr(args, "overwrite", False))
    manifest_path = out / "library.json"
    folder = OutputFolder(out, "make-light-library", overwrite=overwrite, inputs=[args.from_folder],
                          recognise=lambda p: json_file_says(p / "library.json", format="relit_hands.light_library"))
    preview_out = None
    if args.preview is not None:
        preview_out = Path(args.preview)
        if preview_out.suffix.lower() != ".png":
            raise ValueError(f"--preview {preview_out}: must end in .png")
        owned = []
        if json_file_says(manifest_path, format="relit_hands.light_library"):
            prev = read_json_file(manifest_path, what="light library manifest").get("preview")
            owned = [prev] if isinstance(prev, str) else []
        sources = [e.path for e in lib.entries() if e.path is not None]
        preview_out = OutputSet(inputs=[*sources, manifest_path], overwrite=overwrite, owned=owned).check(
            preview_out, "--preview")
    folder.create()
    t0 = time.perf_counter()
    records, previews = [], {}
    keep = set(range(0, len(lib), max(1, math.ceil(len(lib) / PREVIEW_MAX))))
    for i, entry in enumerate(tqdm(lib.entries(), desc="light library", unit="map", disable=args.no_progress)):
        rec = {"id": entry.id, "family": entry.family, "seed": entry.seed, "split": entry.split,
               "file": f"{entry.id}.hdr"}
        if entry.path is None:
            img, params = generate(entry.family, entry.seed, args.height, with_params=True)
            rec["params"] = params
        else:
            img = np.asarray(EnvironmentMap.load(entry.path, name=entry.id).image)
            rec["source"] = str(entry.path)
            rec["source_sha256"] = hashlib.sha256(entry.path.read_bytes()).hexdigest()
        check_finite_image(img, f"make-light-library {out / rec['file']}")
        folder.write(rec["file"], lambda p: write_hdr_image(p, img))
        env = EnvironmentMap.load(out / rec["file"], name=entry.id)  # what users get (RGBE-quantised)
        energy = env.total_energy()
        rec.update(total_energy_rgb=[round(float(x), 6) for x in energy],
                   total_energy_luminance=round(float(luminance(energy)), 6), peak=float(env.image.max()),
                   size=[env.width, env.height])
        records.append(rec)
        if i in keep:
            previews[entry.id] = env.image
    manifest = {"format": "relit_hands.light_library", "version": 1, "written_by": "relit-hands", "command": command,
                "preview": str(preview_out) if preview_out is not None else None,
                "generator": "relit_hands.tools.light_library", "source": lib.source,
                "units": "linear Rec.709 radiance, units of models/environments; equirectangular per "
                         "docs/conventions.md; energy = integral of radiance over the sphere (sr x radiance)",
                "split_rule": {"fractions": SPLIT_FRACTIONS, "held_out_family": HELD_OUT_FAMILY,
                               "generated": "sha256('family/seed')", "files": "sha256(file bytes)"},
                "families": {f: {"description": FAMILIES[f][1], "energy_range": ENERGY_RANGES[f]} for f in FAMILIES},
                "splits": {s: sum(r["split"] == s for r in records) for s in SPLITS},
                "entries": records}
    folder.write_text("library.json", json.dumps(manifest, indent=1) + "\n")
    if preview_out is not None:
        evs = {k: _preview_ev(v) for k, v in previews.items()}
        write_atomic(preview_out, lambda p: write_preview(previews, p, tile_w=384, cols=4, evs=evs))
    log(f"wrote {len(records)} map(s) to {out} in {time.perf_counter() - t0:.1f} s "
        f"(train {manifest['splits']['train']}, val {manifest['splits']['val']}, test {manifest['splits']['test']})"
        + (f"; preview {args.preview}" if args.preview else ""))
    return manifest


def run_from_args(args, command: str | None = None) -> int:
    make_light_library(args, command)
    return 0


def main(argv=None) -> int:
    p = add_arguments(argparse.ArgumentParser(prog="python -m relit_hands.tools.light_library",
                                              description="Write a seeded library of HDR training environments."))
    args = p.parse_args(argv)
    try:
        return run_from_args(args, "light_library " + " ".join(sys.argv[1:] if argv is None else argv))
    except (ValueError, OSError) as e:
        print(f"light_library: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
