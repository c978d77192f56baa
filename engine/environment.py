"""HDR environment maps: orientation, rotation, exposure, N directional lights, SH lighting.

Frames and orientation (binding; see docs/conventions.md)
--------------------------------------------------------
World: right-handed, +Y up, metres. The stored image is an equirectangular (lat-long) map,
``image[row, col]`` with ``H`` rows and ``W = 2 H`` columns. Pixel centres sit at

    u = (col + 0.5) / W,  v = (row + 0.5) / H
    phi = 2 pi (u - 0.5)       (azimuth),   el = pi (0.5 - v)   (elevation)
    d_map = (sin(phi) cos(el),  sin(el),  -cos(phi) cos(el))

so row 0 is +Y (up), the last row -Y, the centre column looks at -Z, u = 0.75 at +X,
u = 0.25 at -X and u = 0 (the left/right edge) at +Z.

The map carries a rotation ``rotation`` (3x3, **world_from_map**): a direction ``d_map`` of the
image is the world direction ``rotation @ d_map``. Every method that takes or returns
directions uses **world** directions; only :meth:`direction_to_uv` / :meth:`uv_to_direction`
say explicitly how they convert (they also work in world space, undoing the rotation).

Radiance units: the image stores linear Rec.709 RGB radiance (arbitrary but consistent units,
"W / (m^2 sr)"-like). ``exposure`` (EV, stops) scales all radiance by ``2 ** exposure``; every
radiance-returning method (``lookup``, ``resampled_image``, ``radiance``, lights, energy, SH)
applies it. The raw ``image`` attribute is never modified (it is read-only and shared between
maps derived with :meth:`rotate` / :meth:`with_exposure`).

Input cleaning: NaN / +-inf / negative pixels are replaced by 0 and a ``UserWarning`` names the
file (or map name) and counts the pixels; with ``strict=True`` an :class:`EnvironmentMapError`
is raised instead.
"""
from __future__ import annotations

import copy
import importlib.resources
import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .color import luminance
from .image_io import HDR_EXTENSIONS, ImageReadError, read_hdr_image

__all__ = [
    "EnvironmentMap",
    "EnvironmentMapError",
    "DominantLights",
    "luminance",
    "fibonacci_sphere",
    "equirect_directions",
    "equirect_solid_angles",
    "equirect_directions_and_solid_angles",
    "rotation_yaw_pitch",
    "SH_BASIS_DOC",
    "sh_basis",
    "SH_COSINE_BAND",
    "MIN_LIGHTS",
    "MAX_LIGHTS",
]

MIN_LIGHTS = 32
MAX_LIGHTS = 1024
MAX_RADIANCE = 1e9  # largest pixel radiance accepted from a file or array (finite but huge maps are refused)
MAX_EXPOSURE_EV = 64.0  # |exposure| accepted by with_exposure / the constructor
MAX_MAP_PIXELS = 8192 * 4096  # largest map accepted (W x H)
_SHIPPED_PACKAGE = "relit_hands.models"
_SHIPPED_FOLDER = "environments"


class EnvironmentMapError(ValueError):
    """An environment map's pixels are invalid (wrong shape, not 2:1, NaN/inf/negative+strict)."""


# ------------------------------------------------------------------------------ geometry helpers


def _uv_to_dir(uv: np.ndarray) -> np.ndarray:
    """Map-frame direction of equirect coordinates ``uv [..., 2]`` -> ``[..., 3]`` unit vectors."""
    uv = np.asarray(uv, dtype=np.float64)
    phi = 2.0 * np.pi * (uv[..., 0] - 0.5)
    el = np.pi * (0.5 - uv[..., 1])
    ce = np.cos(el)
    return np.stack([np.sin(phi) * ce, np.sin(el), -np.cos(phi) * ce], axis=-1)


def _dir_to_uv(d: np.ndarray) -> np.ndarray:
    """Map-frame direction ``[..., 3]`` (any length > 0) -> ``uv [..., 2]``, u in [0, 1)."""
    d = np.asarray(d, dtype=np.float64)
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    d = d / np.maximum(n, 1e-300)
    phi = np.arctan2(d[..., 0], -d[..., 2])
    u = np.mod(phi / (2.0 * np.pi) + 0.5, 1.0)
    u = np.where(u >= 1.0, 0.0, u)  # mod can round up to exactly 1.0
    v = 0.5 - np.arcsin(np.clip(d[..., 1], -1.0, 1.0)) / np.pi
    return np.stack([u, v], axis=-1)


_DIR_CACHE: dict[tuple[int, int], np.ndarray] = {}
_LABEL_CACHE: dict[tuple[int, int, int], np.ndarray] = {}
_FIB_CACHE: dict[tuple[int, float], np.ndarray] = {}
_CACHE_MAX = 16


def equirect_directions(height: int, width: int) -> np.ndarray:
    """Map-frame unit directions of the pixel centres, ``[H, W, 3]`` float64 (cached, read-only)."""
    key = (int(height), int(width))
    d = _DIR_CACHE.get(key)
    if d is None:
        v = (np.arange(height) + 0.5) / height
        u = (np.arange(width) + 0.5) / width
        uu, vv = np.meshgrid(u, v)
        d = _uv_to_dir(np.stack([uu, vv], axis=-1))
        d.flags.writeable = False
        if len(_DIR_CACHE) >= _CACHE_MAX:
            _DIR_CACHE.pop(next(iter(_DIR_CACHE)))
        _DIR_CACHE[key] = d
    return d


def equirect_solid_angles(height: int, width: int) -> np.ndarray:
    """Solid angle (sr) of one pixel of each row, ``[H]`` float64.

    The exact area of the pixel's latitude band cell, ``(2 pi / W) * (sin el_top - sin el_bottom)``
    -- the integral of the ``sin(theta)`` (theta = polar angle) area element, so the map's total
    ``W * sum(...)`` is 4 pi to rounding (the midpoint ``sin(theta) dtheta dphi`` rule is off by
    ~1e-5 at H = 256).
    """
    edges = np.pi * (0.5 - np.arange(height + 1) / height)  # elevation of row edges, top first
    return (2.0 * np.pi / width) * (np.sin(edges[:-1]) - np.sin(edges[1:]))


def equirect_directions_and_solid_angles(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of an ``height`` x ``width`` equirect map, row-major: map-frame unit directions
    of the pixel centres ``[H * W, 3]`` float64 (read-only, :func:`equirect_directions`) and each
    pixel's solid angle (sr) ``[H * W]`` float64 (:func:`equirect_solid_angles`; sums to 4 pi)."""
    d = equirect_directions(height, width).reshape(-1, 3)
    return d, np.repeat(equirect_solid_angles(height, width), int(width))


def fibonacci_sphere(n: int, phase: float = 0.0) -> np.ndarray:
    """``n`` nearly uniformly spread unit vectors ``[n, 3]`` float64 (golden-angle spiral in y;
    cached, read-only).

    Deterministic. Point ``i`` has ``y = 1 - (2 i + 1) / n`` and azimuth ``golden_angle * (i +
    phase)`` about +Y (``x = r cos, z = r sin``; golden angle ``pi (3 - sqrt 5)``); its Voronoi
    cells are nearly equal in area (4 pi / n each). ``phase`` turns the whole set about +Y (the
    light stage's rig uses 0.5).
    """
    n = int(n)
    key = (n, float(phase))
    p = _FIB_CACHE.get(key)
    if p is None:
        i = np.arange(n, dtype=np.float64)
        y = 1.0 - (2.0 * i + 1.0) / n
        r = np.sqrt(np.maximum(0.0, 1.0 - y * y))
        golden = np.pi * (3.0 - np.sqrt(5.0))
        theta = golden * (i + key[1])
        p = np.stack([r * np.cos(theta), y, r * np.sin(theta)], axis=-1)
        p.flags.writeable = False
        _FIB_CACHE[key] = p
    return p


def _region_labels(height: int, width: int, n: int) -> np.ndarray:
    """Pixel -> index of the nearest Fibonacci point (map frame), ``[H * W]`` int32, cached."""
    key = (int(height), int(width), int(n))
    lab = _LABEL_CACHE.get(key)
    if lab is None:
        from scipy.spatial import cKDTree

        tree = cKDTree(fibonacci_sphere(n))
        _, lab = tree.query(equirect_directions(height, width).reshape(-1, 3), k=1)
        lab = lab.astype(np.int32)
        lab.flags.writeable = False
        if len(_LABEL_CACHE) >= _CACHE_MAX:
            _LABEL_CACHE.pop(next(iter(_LABEL_CACHE)))
        _LABEL_CACHE[key] = lab
    return lab


def rotation_yaw_pitch(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """``R = Rx(pitch) @ Ry(yaw)`` (float64 3x3): yaw about +Y first, then pitch about +X.

    Both are right-handed (counter-clockwise looking down the axis towards the origin): a
    positive yaw turns +X towards -Z (counter-clockwise seen from above); a positive pitch turns
    +Y towards +Z.
    """
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
    ry = np.array([[ca, 0.0, sa], [0.0, 1.0, 0.0], [-sa, 0.0, ca]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cb, -sb], [0.0, sb, cb]])
    return rx @ ry


# ------------------------------------------------------------------------ spherical harmonics

SH_BASIS_DOC = """Real spherical harmonics, bands 0-2, of a unit direction (x, y, z) in WORLD coordinates
(Y up). Index: 0 (l=0), 1-3 (l=1, m=-1,0,1), 4-8 (l=2, m=-2..2):
  Y0 = 0.282095
  Y1 = 0.488603 y      Y2 = 0.488603 z      Y3 = 0.488603 x
  Y4 = 1.092548 x y    Y5 = 1.092548 y z    Y6 = 0.315392 (3 z^2 - 1)
  Y7 = 1.092548 x z    Y8 = 0.546274 (x^2 - y^2)
(the Ramamoorthi-Hanrahan / Sloan ordering with the axes taken literally as world x, y, z; the
irradiance formula is rotation invariant, so which axis plays "z" does not matter)."""


def sh_basis(d) -> np.ndarray:
    """Real SH basis (order 2, 9 functions) of unit directions ``d [..., 3]`` -> ``[..., 9]``.

    See :data:`SH_BASIS_DOC` for the ordering and constants.
    """
    d = np.asarray(d, dtype=np.float64)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return np.stack(
        [
            np.full_like(x, 0.282095),
            0.488603 * y,
            0.488603 * z,
            0.488603 * x,
            1.092548 * x * y,
            1.092548 * y * z,
            0.315392 * (3.0 * z * z - 1.0),
            1.092548 * x * z,
            0.546274 * (x * x - y * y),
        ],
        axis=-1,
    )


#: Ramamoorthi & Hanrahan 2001: clamped-cosine convolution constants per SH function ``[9]``
#: (band 0: pi, band 1: 2 pi / 3, band 2: pi / 4): irradiance = ``sh_basis(n) @ (L * SH_COSINE_BAND)``.
SH_COSINE_BAND = np.array([np.pi] + [2.0 * np.pi / 3.0] * 3 + [np.pi / 4.0] * 5)


class DominantLights(NamedTuple):
    """Result of :meth:`EnvironmentMap.dominant_lights` (unpacks as a 4-tuple).

    ``directions [k,3]``, ``rgb [k,3]``: the k brightest lights, brightest first;
    ``residual_directions [n-k,3]``, ``residual_rgb [n-k,3]``: all the others (same order as
    :meth:`EnvironmentMap.directional_lights`). All float32, world unit vectors / irradiance.
    """

    directions: np.ndarray
    rgb: np.ndarray
    residual_directions: np.ndarray
    residual_rgb: np.ndarray


# ------------------------------------------------------------------------------ EnvironmentMap


class EnvironmentMap:
    """An equirectangular HDR environment (radiance at infinity) with rotation and exposure.

    Parameters
    ----------
    image : array ``[H, W, 3]``, W = 2 H, linear RGB radiance (converted to float32). NaN, inf
        and negative values are replaced by 0 with a warning (see ``strict``).
    name : label used in messages and UIs (default: empty; ``load`` uses the file stem).
    strict : if True, NaN / inf / negative pixels raise :class:`EnvironmentMapError`.
    rotation : optional 3x3 world_from_map rotation (default identity).
    exposure : EV (stops); radiance is scaled by ``2 ** exposure`` everywhere.
    source : file the image came from (used in messages); set by :meth:`load`.

    Attributes
    ----------
    image : read-only float32 ``[H, W, 3]`` raw radiance (exposure not applied).
    rotation : float64 ``[3, 3]`` world_from_map.
    exposure : float EV.
    name, source : str / Path or None.
    """

    def __init__(
        self,
        image,
        name: str = "",
        *,
        strict: bool = False,
        rotation=None,
        exposure: float = 0.0,
        source=None,
    ):
        self.name = str(name)
        self.source = None if source is None else Path(source)
        label = self._label()
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise EnvironmentMapError(
                f"{label}: environment map must be an [H, W, 3] RGB image, got shape {img.shape}"
            )
        h, w = img.shape[:2]
        if h < 2 or w != 2 * h:
            raise EnvironmentMapError(
                f"{label}: equirectangular map must have width = 2 * height, got {w}x{h} (W x H)"
            )
        if not np.issubdtype(img.dtype, np.number):
            raise EnvironmentMapError(f"{label}: pixel type {img.dtype} is not numeric")
        with np.errstate(invalid="ignore", over="ignore"):
            img = np.array(img, dtype=np.float32, copy=True, order="C")
        nonfinite = ~np.isfinite(img)
        negative = img < 0  # NaN compares False
        n_nonfinite = int(nonfinite.any(axis=-1).sum())
        n_negative = int((negative & ~nonfinite).any(axis=-1).sum())
        if n_nonfinite or n_negative:
            msg = (
                f"{label}: {n_nonfinite} pixel(s) with NaN/inf and {n_negative} pixel(s) with "
                f"negative values"
            )
            if strict:
                raise EnvironmentMapError(msg)
            warnings.warn(msg + " were replaced by 0", UserWarning, stacklevel=2)
            img[nonfinite | negative] = 0.0
        peak = float(img.max()) if img.size else 0.0
        if peak > MAX_RADIANCE:
            raise EnvironmentMapError(
                f"{label}: pixel radiance up to {peak:.3g} exceeds the supported maximum {MAX_RADIANCE:g} "
                f"(scale the map down, or lower its exposure when saving it)"
            )
        img.flags.writeable = False
        self.image = img
        self.rotation = np.eye(3) if rotation is None else self._check_rotation(rotation)
        self.exposure = self._check_ev(exposure)
        self._light_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ---------------------------------------------------------------- construction helpers

    def _label(self) -> str:
        if self.source is not None:
            return str(self.source)
        return f"environment map {self.name!r}" if self.name else "environment map"

    @staticmethod
    def _check_ev(ev) -> float:
        try:
            v = float(ev)
        except (TypeError, ValueError):
            raise ValueError(f"exposure must be a number (EV), got {ev!r}") from None
        if not math.isfinite(v) or abs(v) > MAX_EXPOSURE_EV:
            raise ValueError(f"exposure must be a finite EV within +-{MAX_EXPOSURE_EV:g}, got {ev!r}")
        return v

    @staticmethod
    def _check_rotation(r) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        if r.shape != (3, 3) or not np.isfinite(r).all() or not np.allclose(r @ r.T, np.eye(3), atol=1e-5) or np.linalg.det(r) < 0:
            raise ValueError(f"rotation must be a proper 3x3 rotation matrix, got {r!r}")
        return r.copy()

    @classmethod
    def load(cls, path, *, name: str | None = None, strict: bool = False) -> "EnvironmentMap":
        """Load a ``.hdr`` / ``.exr`` equirectangular map. ``name`` defaults to the file stem.

        Raises :class:`~relit_hands.image_io.ImageReadError` (file problems) or
        :class:`EnvironmentMapError` (pixel problems); both are ``ValueError`` and name the file.
        """
        path = Path(path)
        image = read_hdr_image(path)
        return cls(image, name=path.stem if name is None else name, strict=strict, source=path)

    @staticmethod
    def _shipped_dir():
        return importlib.resources.files(_SHIPPED_PACKAGE).joinpath(_SHIPPED_FOLDER)

    @classmethod
    def list_shipped(cls) -> list[str]:
        """Names (file stems) of the environment maps shipped in ``relit_hands.models/environments``."""
        try:
            folder = cls._shipped_dir()
            entries = list(folder.iterdir())
        except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
            return []
        return sorted(
            {Path(e.name).stem for e in entries if Path(e.name).suffix.lower() in HDR_EXTENSIONS}
        )

    @classmethod
    def from_name_or_path(cls, s, *, strict: bool = False) -> "EnvironmentMap":
        """Resolve ``s`` as an existing file path, else as a shipped map name (``"sky_sun"``,
        with or without extension); raise ``ValueError`` listing the shipped names otherwise."""
        p = Path(s)
        if p.is_file():
            return cls.load(p, strict=strict)
        stem = p.stem if p.suffix.lower() in HDR_EXTENSIONS else str(s)
        if len(p.parts) <= 1 and stem in cls.list_shipped():
            folder = cls._shipped_dir()
            for ext in (".hdr", ".exr", ".pic"):
                res = folder.joinpath(stem + ext)
                if res.is_file():
                    with importlib.resources.as_file(res) as real:
                        return cls.load(real, name=stem, strict=strict)
        raise ImageReadError(
            f"{s}: no such file and not a shipped environment map "
            f"(shipped: {', '.join(cls.list_shipped()) or 'none'})"
        )

    def _derive(self, **changes) -> "EnvironmentMap":
        new = copy.copy(self)  # shares the read-only image
        # the light cache holds map-frame directions and unscaled energies (functions of the image
        # alone; rotation and exposure are applied on the way out), so derived maps share it
        new._light_cache = {} if "image" in changes else self._light_cache
        for k, v in changes.items():
            setattr(new, k, v)
        return new

    def rotate(self, yaw_deg: float, pitch_deg: float = 0.0) -> "EnvironmentMap":
        """New map sharing the image, rotated by yaw (about +Y) then pitch (about +X), degrees.

        ``new.rotation = rotation_yaw_pitch(yaw, pitch) @ self.rotation`` (the new rotation is
        applied after any existing one, in world space). Positive yaw is right-handed about +Y
        (counter-clockwise seen from above): the map's +X moves to world -Z at yaw 90.
        """
        for what, v in (("yaw", yaw_deg), ("pitch", pitch_deg)):
            if not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)):
                raise ValueError(f"{what} must be a finite number of degrees, got {v!r}")
        r = rotation_yaw_pitch(yaw_deg, pitch_deg) @ self.rotation
        return self._derive(rotation=r)

    def with_rotation(self, rotation) -> "EnvironmentMap":
        """New map sharing the image with the given absolute world_from_map rotation (3x3)."""
        return self._derive(rotation=self._check_rotation(rotation))

    def with_exposure(self, ev: float) -> "EnvironmentMap":
        """New map sharing the image with ``exposure = ev`` (absolute, stops): radiance x 2**ev."""
        return self._derive(exposure=self._check_ev(ev))

    # ------------------------------------------------------------------------- properties

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def scale(self) -> float:
        """Radiance multiplier ``2 ** exposure``."""
        return float(2.0 ** self.exposure)

    def __repr__(self) -> str:
        yaw = math.degrees(math.atan2(self.rotation[0, 2], self.rotation[2, 2]))
        return (
            f"EnvironmentMap(name={self.name!r}, {self.width}x{self.height}, "
            f"exposure={self.exposure:+g} EV, yaw~{yaw:.1f} deg)"
        )

    # ------------------------------------------------------------------ orientation helpers

    def direction_to_uv(self, d) -> np.ndarray:
        """WORLD directions ``[..., 3]`` (need not be unit) -> image coords ``uv [..., 2]``.

        Undoes the rotation (``d_map = rotation.T @ d``) and applies the equirect mapping of the
        module docstring; u in [0, 1) (wraps), v in [0, 1] (0 = top row = map +Y).
        """
        d = np.asarray(d, dtype=np.float64)
        return _dir_to_uv(d @ self.rotation)  # (R^T d) for row vectors = d @ R

    def uv_to_direction(self, uv) -> np.ndarray:
        """Image coords ``uv [..., 2]`` -> WORLD unit directions ``[..., 3]`` (float64)."""
        return _uv_to_dir(uv) @ self.rotation.T

    def pixel_directions(self) -> np.ndarray:
        """WORLD unit direction of every pixel centre, ``[H, W, 3]`` float64."""
        d = equirect_directions(self.height, self.width)
        if np.array_equal(self.rotation, np.eye(3)):
            return d.copy()
        return d @ self.rotation.T

    def pixel_solid_angles(self) -> np.ndarray:
        """Solid angle (sr) of one pixel in each row, ``[H]`` float64; ``W * sum = 4 pi``."""
        return equirect_solid_angles(self.height, self.width)

    # ------------------------------------------------------------------------- radiance

    def radiance(self) -> np.ndarray:
        """The image with exposure applied (map frame, no rotation), ``[H, W, 3]`` float32."""
        if self.exposure == 0.0:
            return self.image
        return self.image * np.float32(self.scale)

    def _sample_map_uv(self, uv: np.ndarray) -> np.ndarray:
        """Bilinear sample of the raw image at map-frame ``uv [..., 2]`` (u wraps, v clamps)."""
        h, w = self.height, self.width
        x = uv[..., 0] * w - 0.5
        y = np.clip(uv[..., 1] * h - 0.5, 0.0, h - 1.0)
        x0 = np.floor(x)
        y0 = np.floor(y)
        fx = (x - x0)[..., None].astype(np.float32)
        fy = (y - y0)[..., None].astype(np.float32)
        x0 = x0.astype(np.int64) % w
        x1 = (x0 + 1) % w
        y0 = y0.astype(np.int64)
        y1 = np.minimum(y0 + 1, h - 1)
        img = self.image
        top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
        bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
        return top * (1 - fy) + bot * fy

    def lookup(self, d_world) -> np.ndarray:
        """Radiance in WORLD directions ``d [..., 3]`` -> ``[..., 3]`` float32 (bilinear, exposure
        applied). Directions need not be normalized."""
        out = self._sample_map_uv(self.direction_to_uv(d_world))
        return (out * np.float32(self.scale)).astype(np.float32, copy=False)

    def resampled_image(self, height: int | None = None) -> np.ndarray:
        """Equirect image ``[h, 2h, 3]`` float32 in the WORLD frame (rotation baked in, exposure
        applied) -- for display / backgrounds. ``height`` defaults to the map's height."""
        h = self.height if height is None else int(height)
        if h == self.height and np.array_equal(self.rotation, np.eye(3)):
            return np.array(self.radiance(), dtype=np.float32)
        d = equirect_directions(h, 2 * h)
        return self.lookup(d)

    # ----------------------------------------------------------------------------- lights

    @staticmethod
    def _check_n(n) -> int:
        if isinstance(n, bool) or int(n) != n or not (MIN_LIGHTS <= int(n) <= MAX_LIGHTS):
            raise ValueError(f"number of lights must be an integer in [{MIN_LIGHTS}, {MAX_LIGHTS}], got {n!r}")
        return int(n)

    def directional_lights(self, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Convert the map into ``n`` directional lights (32 <= n <= 1024).

        Returns ``(directions [n, 3], rgb [n, 3])``, float32: WORLD unit vectors pointing
        *towards* each light, and each light's irradiance contribution (radiance integrated over
        its region's solid angle, ``sum_pixels L * d_omega``; W/m^2-like units, exposure
        applied). A surface with normal ``m`` then receives ``sum_l rgb_l * max(0, m . w_l)``.

        Method. The sphere is split into ``n`` nearly equal-area regions: every pixel goes to
        its nearest point of an ``n``-point Fibonacci sphere (in the map frame, so the regions
        turn with the map). A light's rgb is its region's energy; its direction is the
        luminance-weighted (luminance x solid angle) centroid of the region's pixel directions,
        normalized, falling back to the Fibonacci point for a black region. Why:

        * energy is preserved exactly: ``sum(rgb) == total_energy()`` to float rounding, for
          any map (a constant map L gives ``4 pi L``);
        * deterministic and stable: no random sampling, no iterative clustering; the pixel ->
          region assignment depends only on (H, W, n) and is cached, so rotating the map or
          changing its exposure never reshuffles lights and animations do not flicker;
        * a bright sun or lamp falls inside one region and dominates its centroid, so it becomes
          one light at its true direction with (nearly) all its energy, instead of being smeared
          or missed as with uniform-grid or random importance sampling.
        Cost: one ``bincount`` over the pixels per call; results are cached per map and ``n``.
        """
        n = self._check_n(n)
        cached = self._light_cache.get(n)
        if cached is None:
            h, w = self.height, self.width
            labels = _region_labels(h, w, n)
            omega = np.repeat(self.pixel_solid_angles(), w)  # [H*W]
            rad = self.image.reshape(-1, 3).astype(np.float64)
            energy = np.stack(
                [np.bincount(labels, weights=rad[:, c] * omega, minlength=n) for c in range(3)],
                axis=-1,
            )
            wlum = luminance(rad) * omega
            dmap = equirect_directions(h, w).reshape(-1, 3)
            cen = np.stack(
                [np.bincount(labels, weights=wlum * dmap[:, c], minlength=n) for c in range(3)],
                axis=-1,
            )
            norm = np.linalg.norm(cen, axis=-1, keepdims=True)
            wsum = np.bincount(labels, weights=wlum, minlength=n)[:, None]
            ok = (norm > 1e-12 * np.maximum(wsum, 1e-300)) & (wsum > 0)
            dirs = np.where(ok, cen / np.maximum(norm, 1e-300), fibonacci_sphere(n))
            cached = (dirs, energy)
            self._light_cache[n] = cached
        dirs, energy = cached
        dirs_w = (dirs @ self.rotation.T).astype(np.float32)
        rgb = (energy * self.scale).astype(np.float32)
        return dirs_w, rgb

    def total_energy(self) -> np.ndarray:
        """Integral of radiance over the sphere, ``[3]`` float64 (= sum of the lights' rgb)."""
        omega = self.pixel_solid_angles()
        per_row = self.image.astype(np.float64).sum(axis=1)  # [H, 3]
        return (omega @ per_row) * self.scale

    def dominant_lights(self, k: int, n: int = 64) -> DominantLights:
        """The ``k`` brightest (by luminance of rgb) of :meth:`directional_lights` ``(n)``,
        brightest first, plus the ``n - k`` residual lights -- e.g. shadow-mapped key lights and
        unshadowed fill in the PBR baseline. ``0 <= k <= n``."""
        dirs, rgb = self.directional_lights(n)
        k = int(k)
        if not 0 <= k <= len(rgb):
            raise ValueError(f"k must be in [0, {len(rgb)}], got {k}")
        order = np.argsort(-luminance(rgb), kind="stable")
        top = order[:k]
        rest = np.sort(order[k:])
        return DominantLights(dirs[top], rgb[top], dirs[rest], rgb[rest])

    # -------------------------------------------------------------------------------- SH

    def sh_coefficients(self) -> np.ndarray:
        """Radiance projected on real SH bands 0-2 in the WORLD frame, ``[9, 3]`` float64.

        ``L_i = sum_pixels L(p) Y_i(d_world(p)) d_omega(p)``, exposure applied. Basis and
        ordering: :data:`SH_BASIS_DOC`.
        """
        d = self.pixel_directions().reshape(-1, 3)
        omega = np.repeat(self.pixel_solid_angles(), self.width)
        basis = sh_basis(d) * omega[:, None]  # [P, 9]
        return (basis.T @ self.image.reshape(-1, 3).astype(np.float64)) * self.scale

    def sh_irradiance(self, normals, coeffs=None) -> np.ndarray:
        """Irradiance ``E(n) = int L(w) max(0, n.w) dw`` for WORLD normals ``[..., 3]`` ->
        ``[..., 3]`` float32, from the order-2 SH projection (Ramamoorthi & Hanrahan 2001:
        band factors pi, 2 pi / 3, pi / 4). A constant map L gives pi L. Normals are normalized
        here. ``coeffs`` defaults to :meth:`sh_coefficients`."""
        c = self.sh_coefficients() if coeffs is None else np.asarray(coeffs, dtype=np.float64)
        nrm = np.asarray(normals, dtype=np.float64)
        nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-300)
        return (sh_basis(nrm) @ (c * SH_COSINE_BAND[:, None])).astype(np.float32)
