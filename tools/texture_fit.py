r"""Appearance stage of ``relit-hands personalize`` (issue #21): the user's albedo texture and every
frame's lighting, from the frames and the fitted geometry (:mod:`relit_hands.tools.hand_fit`).

Method, and why
---------------
No differentiable rasterizer runs on the CPU, but none is needed once the geometry is fixed: the
project's GL compositor (``Engine(asset=..., compositor='gl')``, Mesa llvmpipe on the CPU) rasterises
the fitted hand in every frame with ``shading='uv'`` (per-pixel texture coordinates) and
``shading='normal'`` (per-pixel world normals), read back as float32 (``return_linear=True``,
``background='none'``). That turns every hand pixel into an *observation*: (texel, normal,
colour). With the geometry fixed the image model below is linear in the albedo for fixed lighting
and linear in the lighting for fixed albedo, so the fit alternates two exact linear least-squares
solves instead of a gradient descent through a renderer.

Image model (linear Rec.709; the 8-bit frames are sRGB-decoded; a locked exposure is one global
scale, absorbed by the lighting), per frame ``f`` and colour channel ``c``::

    I_c(x) = A_c(uv(x)) * [ Y(n(x)) . e_fc  +  s_fc * max(0, n(x) . d_f) * V_f(x) ]

* ``A`` [R, R, 3] the albedo texture (atlas layout of docs/conventions.md, row = v R);
* ``Y(n)`` [9] the real SH basis of :func:`relit_hands.environment.sh_basis` and ``e_fc`` [9] the
  frame's SH *irradiance* coefficients (``E(n) = Y(n) . e``; the radiance coefficients
  ``env.sh_coefficients()`` would be ``e / SH_COSINE_BAND``, also written);
* one directional light: direction ``d_f`` (world unit vector, towards the light), RGB irradiance
  ``s_f >= 0``, and its visibility ``V_f(x)`` ray-cast on the fitted hand's *proxy* (the engine's
  :func:`relit_hands.raycast.proxy_visibility`: per proxy vertex, then interpolated to the pixel
  through the proxy triangle and barycentrics of the pixel's texel, :class:`relit_hands.uv_maps.UVRasterizer`
  -- the render mesh and the proxy share the atlas);
* ``n`` the *smooth geometric* normal of the fitted render mesh (the fitting engine draws an asset
  copy whose normal map is flat): the path tracer that made the test data shades with smooth vertex
  normals, and the asset's normal map is not fitted here.

Not modelled: specular reflection (the robust weights down-weight highlights), subsurface
scattering (it softens the shading; the fitted albedo absorbs its average), inter-reflection, the
environment's occlusion by the hand (SH irradiance is unshadowed), camera noise.

Alternation (``rounds``, default 3), after an initial albedo = the base asset's:

1. **lighting per frame given the albedo** -- for every candidate direction ``d`` the 10 unknowns
   per channel (9 SH + ``s``) are a weighted linear least-squares problem; its normal equations are
   assembled once per frame, so all candidates are solved in one batched ``torch.linalg.solve``.
   Candidates: :data:`DIRECTION_CANDIDATES` Fibonacci directions over the sphere, then the best one
   is refined on rings of 8 directions at 10, 5 and 2.5 degrees (each ring ray-cast afresh). A
   channel whose ``s`` comes out negative is solved with SH only. Then 2 iteratively re-weighted
   rounds (Cauchy weights, scale = 1.4826 x the median absolute residual) at the chosen direction;
2. **albedo per texel given the lighting** -- every observation falls in one texel of the working
   resolution; the weighted least-squares albedo of a texel is closed form,
   ``A_t = (sum_i w_i S_i I_i + lam P_t) / (sum_i w_i S_i^2 + lam)`` (``S_i`` the modelled shading),
   with Cauchy robust weights (2 re-weightings) and a weak prior ``P`` (the base albedo in the
   current gauge, ``lam`` = :data:`ALBEDO_PRIOR_OBSERVATIONS` typical observations) so texels seen
   once do not jump;
3. **gauge** -- albedo and lighting are only defined up to a per-channel scale (a darker hand under a
   brighter light looks the same; so is the colour of the light against the skin's): the fitted
   albedo is scaled so its observation-weighted mean per channel equals the base asset's over the
   observed texels, and the lighting inversely. A skin-tone change *relative to the base* is
   therefore not recoverable from uncalibrated video; the *pattern* (marks, freckles, nails, palm
   against back) is. The evaluation (``personalize-eval``) compares albedos after one least-squares
   scale per channel for this reason;
4. **marks** (once, after the rounds) -- the solved albedo is trusted only where it departs from
   the base clearly (:func:`sparse_deviation`): per working texel the log ratio to the base, ``d = log(A / base) -
   g`` (``g`` its weighted median over the observed texels), is shrunk towards 0 by a soft threshold
   on its length, ``d' = d max(0, |d| - t) / |d|`` with ``t`` = :data:`MARK_THRESHOLD` x the median
   ``|d|``. The image model leaves out subsurface scattering, specular reflection and the
   environment's inter-reflection, and a phone frame is noisy; what that leaves in ``d`` is a
   low-frequency blotch of a few tens of per cent over the whole hand (pink / green patches on the
   fingers), as large as the pattern of a real person's skin. On three synthetic people of
   ``make-phone-video`` (person seeds 101-103, fitted from their videos with the true albedo unseen),
   the unshrunk albedo scored 1.5-3.4 dB *below* the base asset's (PSNR after one RGB scale: 20.5 /
   16.6 / 25.9 dB against 23.9 / 18.1 / 28.8) and the shrunk one 24.4 / 20.0 / 27.7 dB: above the
   base on two people, 1.1 dB below it on the third, and 1.8-3.9 dB above the unshrunk albedo on
   all three (``MARK_THRESHOLD`` was chosen on these people only). What survives the threshold
   is what a person adds to a hand: painted nails, a birthmark, a scar; freckles smaller than a
   working texel are below what the frames resolve. The nail plates are the exception to the
   threshold: a working texel that lies mostly on a nail (the asset's ``render_region``
   :data:`NAIL_REGION`, :func:`region_fraction`) keeps its departure whole. Polish is the one mark a
   hand wears over a whole known region, and the soft threshold took ``t`` (~0.6 in log) off it: a
   navy nail came out about 1.8x too light. On the same three people (all with painted nails: plum,
   teal, navy), keeping the nails whole scored +1.5 / +0.8 / -0.0 dB over shrinking them (25.92 /
   20.78 / 27.66 dB against 24.41 / 19.96 / 27.68), where sharper thresholds for every texel (hard,
   garrote, firm) all lost 0.2-1.9 dB to the soft one. Every frame's final lighting (``fit.json``,
   the contact sheet) is solved against this albedo, the one that is written.

Observations: hand pixels of the rendered fitted hand that are also inside the input mask, both
eroded by ``edge_px`` (default 2: away from the silhouette edge, where the fit and the mask
disagree most), not saturated (no 8-bit channel >= 254); weight ``w = max(0, n . v)`` (grazing
views smear a texel over a pixel). Only the training frames of the geometry stage make the albedo;
held-out frames get their lighting fitted afterwards (for the contact sheet and the report).

Working resolution. A pixel of a 256-pixel frame covers several texels of a 1024 atlas, so the
albedo is solved at a working resolution ``R_w`` where one texel spans about 2 x 2 pixels (from the
median footprint ``sqrt(|det d(u,v)/d(x,y)|)`` of the first frames, rounded to a power of two, 64
.. the texture resolution; finer would leave texels between the pixel centres unobserved). The
shrunk log ratio ``d'`` is upsampled (bilinear, normalised by the coverage so unobserved texels do
not pull their neighbours to 0) to the asset's texture resolution (that of ``hand_v2/albedo.png``)
and applied to the full-resolution base: ``albedo = base exp(g + c d')``, ``c`` the coverage
blend. Texels never observed are the base albedo in the fitted gauge ``exp(g)``, and the base's
detail finer than a working texel is kept everywhere
(``coverage = 1 - 2^(-W / (h W1))``, ``W`` the texel's summed observation weight ``sum w S^2``,
``W1`` the median weight of one observation, ``h`` = :data:`COVERAGE_HALF_WEIGHT`: a texel seen
about 1.5 times as well as a typical pixel sees it has coverage 0.5), written as ``coverage.png``.
The normal map and roughness texture are *not* estimated: the base asset's are copied.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["DIRECTION_CANDIDATES", "FrameLighting", "ViewObservations", "FrameObservations", "AppearanceFit",
           "AppearanceSettings", "observe_view", "solve_lighting", "solve_albedo", "fit_appearance",
           "working_resolution", "sparse_deviation", "upsample_albedo", "region_fraction", "MARK_THRESHOLD",
           "NAIL_REGION", "render_model_image",
           "shading", "sh_design", "flat_normal_asset"]

DIRECTION_CANDIDATES = 96
REFINE_RINGS_DEG = (10.0, 5.0, 2.5)
ALBEDO_PRIOR_OBSERVATIONS = 0.1
COVERAGE_HALF_WEIGHT = 1.5
MARK_THRESHOLD = 3.0
NAIL_REGION = 4          # ``render_region`` of the nail plates (tools/build_hand_asset.vertex_regions)


# ============================================================================ data


@dataclass
class FrameLighting:
    """One frame's lighting (world frame of the fit): ``sh_irradiance`` [9, 3] (``E(n) = Y(n) @ e``),
    ``direction`` [3] unit (towards the light), ``colour`` [3] >= 0 (irradiance of the directional
    light on a surface facing it); ``rms`` the weighted RMS residual (linear units) of the fit."""

    sh_irradiance: np.ndarray
    direction: np.ndarray
    colour: np.ndarray
    rms: float = float("nan")

    def scaled(self, k) -> "FrameLighting":
        """The lighting divided by the per-channel albedo gauge ``k`` [3]."""
        k = np.asarray(k, np.float64)
        return FrameLighting(self.sh_irradiance / k[None], self.direction.copy(), self.colour / k, self.rms)

    def to_json(self) -> dict:
        from relit_hands.environment import SH_COSINE_BAND

        return {"sh_irradiance": np.round(self.sh_irradiance, 6).tolist(),
                "sh_radiance": np.round(self.sh_irradiance / SH_COSINE_BAND[:, None], 6).tolist(),
                "direction": np.round(self.direction, 6).tolist(), "colour": np.round(self.colour, 6).tolist(),
                "rms": None if not math.isfinite(self.rms) else round(float(self.rms), 6)}


@dataclass
class ViewObservations:
    """The usable hand pixels of one view of one frame, P of them.

    ``texel`` [P] flat index into the working-resolution texture (row * R + col); ``uv`` [P, 2];
    ``normal`` [P, 3] unit world normals; ``colour`` [P, 3] linear; ``weight`` [P] (view-angle
    weight); ``proxy_vertex`` [P, 3] int and ``proxy_bary`` [P, 3]: where the pixel's texel sits on
    the proxy (to interpolate per-vertex visibility); ``pixel`` [P, 2] int (row, col)."""

    texel: np.ndarray
    uv: np.ndarray
    normal: np.ndarray
    colour: np.ndarray
    weight: np.ndarray
    proxy_vertex: np.ndarray
    proxy_bary: np.ndarray
    pixel: np.ndarray


@dataclass
class FrameObservations:
    """All views of one frame plus the posed proxy they are shadowed by: ``views`` [ViewObservations],
    ``proxy_vertices`` [Vp, 3], ``proxy_normals`` [Vp, 3] (world), and a per-frame cache of
    per-proxy-vertex visibility {direction key: [Vp] float32}."""

    views: list
    proxy_vertices: np.ndarray
    proxy_normals: np.ndarray
    visibility_cache: dict = field(default_factory=dict)

    def concat(self, name: str) -> np.ndarray:
        return np.concatenate([getattr(v, name) for v in self.views], 0)

    @property
    def count(self) -> int:
        return int(sum(len(v.texel) for v in self.views))


@dataclass
class AppearanceSettings:
    """Knobs of :func:`fit_appearance`: ``rounds`` of the alternation; ``edge_px`` erosion of the
    masks; ``working_resolution`` (None: from the pixel footprint, ``pixels_per_texel`` pixels per
    texel side); ``direction_candidates``;
    ``refine_rings_deg``; ``robust_iterations``; ``prior_observations`` (``lam`` in typical
    observations); ``coverage_half_weight`` (observations for coverage 0.5); ``mark_threshold`` (of
    :func:`sparse_deviation`, x the median departure; None keeps every departure); ``whole_nails``
    (the nail plates keep their departure unshrunk: the module docstring, step 4)."""

    rounds: int = 3
    edge_px: int = 2
    working_resolution: int | None = None
    pixels_per_texel: float = 2.0
    direction_candidates: int = DIRECTION_CANDIDATES
    refine_rings_deg: tuple = REFINE_RINGS_DEG
    robust_iterations: int = 2
    prior_observations: float = ALBEDO_PRIOR_OBSERVATIONS
    coverage_half_weight: float = COVERAGE_HALF_WEIGHT
    mark_threshold: float | None = MARK_THRESHOLD
    whole_nails: bool = True

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class AppearanceFit:
    """Result of :func:`fit_appearance`: ``albedo`` [R, R, 3] linear at the texture resolution
    (filled), ``coverage`` [R, R] in [0, 1], ``albedo_work`` [Rw, Rw, 3] / ``weight_work`` [Rw*Rw]
    (the solve itself, before :func:`sparse_deviation`), ``working_resolution``, ``gauge`` [3] (the
    per-channel scale of the base in the output, ``exp(g)``), ``lighting`` {frame index:
    FrameLighting}, ``rounds`` (per round: RMS residual over the training observations), ``seconds``
    per part, ``observations`` (pixel count), ``mark_threshold`` (the log-ratio threshold
    :func:`sparse_deviation` used), ``whole_texels`` (working texels whose departure was kept whole:
    the observed nail texels)."""

    albedo: np.ndarray
    coverage: np.ndarray
    albedo_work: np.ndarray
    weight_work: np.ndarray
    working_resolution: int
    gauge: np.ndarray
    lighting: dict
    rounds: list
    seconds: dict
    observations: int
    mark_threshold: float = 0.0
    whole_texels: int = 0


# ============================================================================ geometry helpers


def flat_normal_asset(asset_dir, out_dir):
    """A copy of the asset folder ``asset_dir`` (npz, albedo, roughness) with a *flat* normal map
    (RGB 128, 128, 255), so ``shading='normal'`` draws the smooth geometric normals. Returns it."""
    import shutil
    from pathlib import Path

    from relit_hands.image_io import read_png, write_png

    src, dst = Path(asset_dir), Path(out_dir)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("right_hand.npz", "albedo.png", "roughness.png"):
        shutil.copy2(src / name, dst / name)
    h, w = read_png(src / "normal.png").shape[:2]
    flat = np.empty((h, w, 3), np.uint8)
    flat[...] = (128, 128, 255)
    write_png(dst / "normal.png", flat)
    return dst


def sh_design(normals: np.ndarray) -> np.ndarray:
    """[P, 9] real SH basis of unit normals (float64)."""
    from relit_hands.environment import sh_basis

    return sh_basis(normals)


def fibonacci_directions(n: int) -> np.ndarray:
    from relit_hands.environment import fibonacci_sphere

    return np.asarray(fibonacci_sphere(int(n)), np.float64)


def _ring(d: np.ndarray, angle_deg: float, k: int = 8) -> np.ndarray:
    """k unit directions at ``angle_deg`` around ``d``."""
    d = d / np.linalg.norm(d)
    a = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, a)
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    t = math.radians(angle_deg)
    phis = np.arange(k) * 2 * np.pi / k
    out = np.cos(t) * d[None] + np.sin(t) * (np.cos(phis)[:, None] * u[None] + np.sin(phis)[:, None] * v[None])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _direction_key(d: np.ndarray) -> tuple:
    return tuple(np.round(np.asarray(d, np.float64), 7).tolist())


def frame_visibility(obs: FrameObservations, directions: np.ndarray, faces: np.ndarray, caster) -> np.ndarray:
    """Per-pixel visibility [P, N] (float32, interpolated per-proxy-vertex ray-cast visibility) of
    ``directions`` [N, 3] for all views of ``obs`` concatenated (cached per direction)."""
    from relit_hands.raycast import proxy_visibility

    directions = np.asarray(directions, np.float64).reshape(-1, 3)
    keys = [_direction_key(d) for d in directions]
    missing = [i for i, k in enumerate(keys) if k not in obs.visibility_cache]
    if missing:
        vis = proxy_visibility(obs.proxy_vertices[None].astype(np.float32), obs.proxy_normals[None].astype(np.float32),
                               faces, directions[missing].astype(np.float32), backend=caster)
        vis = vis[0].numpy().astype(np.float32)                                      # [Vp, Nm]
        for j, i in enumerate(missing):
            obs.visibility_cache[keys[i]] = vis[:, j]
    per_vertex = np.stack([obs.visibility_cache[k] for k in keys], 1)                # [Vp, N]
    idx, bary = obs.concat("proxy_vertex"), obs.concat("proxy_bary")
    return np.einsum("pk,pkn->pn", bary, per_vertex[idx])


def shading(normals: np.ndarray, visibility: np.ndarray, light: FrameLighting, Y: np.ndarray | None = None) -> np.ndarray:
    """Modelled irradiance [P, 3] (module docstring) at unit ``normals`` [P, 3] with directional
    visibility ``visibility`` [P]."""
    Y = sh_design(normals) if Y is None else Y
    cos = np.maximum(normals @ light.direction, 0.0) * visibility
    return Y @ light.sh_irradiance + cos[:, None] * light.colour[None]


# ============================================================================ observations


def observe_view(engine, state, camera, image_linear: np.ndarray, mask: np.ndarray | None,
                 saturated: np.ndarray | None, uv_lookup, resolution: int, edge_px: int = 2) -> tuple:
    """Rasterise the fitted hand (``state``: a :class:`relit_hands.scene.HandState` of the engine's
    asset) seen by ``camera`` with the GL compositor and collect the usable pixels.

    ``image_linear`` [H, W, 3] the frame (linear); ``mask`` [H, W] bool (None: the rendered
    silhouette only); ``saturated`` [H, W] bool; ``uv_lookup``: the proxy's
    :class:`~relit_hands.uv_maps.UVRasterizer` at ``resolution`` (texel -> proxy triangle and
    barycentrics). Returns (:class:`ViewObservations`, rendered mask [H, W] bool)."""
    from scipy import ndimage

    from relit_hands.scene import Scene

    scene = Scene([state], name="personalize")
    fr_uv = engine.render(scene, None, camera, shading="uv", background="none", shadows=False, return_linear=True)
    fr_n = engine.render(scene, None, camera, shading="normal", background="none", shadows=False, return_linear=True)
    rendered = np.asarray(fr_uv.mask, bool)
    ok = ndimage.binary_erosion(rendered, iterations=edge_px) if edge_px > 0 else rendered.copy()
    if mask is not None:
        ok &= ndimage.binary_erosion(mask, iterations=edge_px) if edge_px > 0 else mask
    if saturated is not None:
        ok &= ~saturated
    uv = fr_uv.linear[..., :2].astype(np.float64)
    n = fr_n.linear.astype(np.float64) * 2.0 - 1.0
    nlen = np.linalg.norm(n, axis=-1)
    ok &= np.isfinite(uv).all(-1) & (nlen > 0.5)
    rows, cols = np.nonzero(ok)
    uvp = np.clip(uv[rows, cols], 0.0, 1.0 - 1e-7)
    nrm = n[rows, cols] / nlen[rows, cols, None]
    tr = np.minimum((uvp[:, 1] * resolution).astype(np.int64), resolution - 1)
    tc = np.minimum((uvp[:, 0] * resolution).astype(np.int64), resolution - 1)
    tri = uv_lookup.tri[tr, tc]
    keep = tri >= 0
    rows, cols, uvp, nrm, tr, tc, tri = rows[keep], cols[keep], uvp[keep], nrm[keep], tr[keep], tc[keep], tri[keep]
    rays = camera.pixel_rays()[rows, cols].astype(np.float64)
    weight = np.clip(-(nrm * rays).sum(1), 0.0, 1.0)
    faces = engine.asset.proxy_faces
    obs = ViewObservations(texel=tr * resolution + tc, uv=uvp.astype(np.float32), normal=nrm,
                           colour=image_linear[rows, cols].astype(np.float64), weight=weight,
                           proxy_vertex=faces[tri].astype(np.int64),
                           proxy_bary=uv_lookup.bary[tr, tc].astype(np.float64),
                           pixel=np.stack([rows, cols], 1).astype(np.int32))
    return obs, rendered


def working_resolution(uv_images: list, texture_resolution: int, lo: int = 64,
                       pixels_per_texel: float = 2.0) -> int:
    """The power-of-two texture resolution at which one texel spans about ``pixels_per_texel``
    pixels (per side): from the median texel footprint ``sqrt(|det J|) * R`` of ``uv_images`` (each
    [H, W, 2] with NaN off the hand). Two pixels per texel: every texel of a view's visible surface
    is hit by a few pixel centres, so the observed area has no sampling holes."""
    feet = []
    for uv in uv_images:
        du_dx = uv[1:-1, 2:, :] - uv[1:-1, :-2, :]
        du_dy = uv[2:, 1:-1, :] - uv[:-2, 1:-1, :]
        det = np.abs(du_dx[..., 0] * du_dy[..., 1] - du_dx[..., 1] * du_dy[..., 0]) / 4.0
        ok = np.isfinite(det) & (det > 0)
        if ok.any():
            feet.append(np.sqrt(det[ok]) * texture_resolution)
    if not feet:
        return int(min(256, texture_resolution))
    f = float(np.median(np.concatenate(feet)))
    r = 2 ** int(round(math.log2(max(texture_resolution / max(f * pixels_per_texel, 1e-6), 1.0))))
    return int(np.clip(r, lo, texture_resolution))


# ============================================================================ lighting


def solve_lighting(obs: FrameObservations, albedo_per_pixel: np.ndarray, faces, caster,
                   settings: AppearanceSettings | None = None, direction: np.ndarray | None = None,
                   search: bool = True) -> FrameLighting:
    """The frame's lighting given the albedo at its pixels ``albedo_per_pixel`` [P, 3] (module
    docstring, step 1). ``direction``: start the refinement there (and skip the global search when
    ``search`` is False)."""
    st = settings or AppearanceSettings()
    n = obs.concat("normal")
    I = obs.concat("colour")
    w0 = obs.concat("weight")
    A = albedo_per_pixel
    Y = sh_design(n)                                                          # [P, 9]
    if search or direction is None:
        cands = fibonacci_directions(st.direction_candidates)
        # directions that light no observed normal cannot be told apart: keep those that do
        lit = (n @ cands.T > 0.05).mean(0) > 0.02
        cands = cands[lit] if lit.any() else cands
        best, _ = _best_direction(obs, cands, Y, n, I, A, w0, faces, caster)
    else:
        best = np.asarray(direction, np.float64)
    for ring in st.refine_rings_deg:
        cands = np.concatenate([best[None], _ring(best, ring)])
        best, _ = _best_direction(obs, cands, Y, n, I, A, w0, faces, caster)
    vis = frame_visibility(obs, best[None], faces, caster)[:, 0]
    w = w0.copy()
    light = None
    for _ in range(st.robust_iterations + 1):
        light = _solve_fixed_direction(Y, n, I, A, w, best, vis)
        pred = A * shading(n, vis, light, Y)
        r = np.abs(I - pred).sum(1)
        w = w0 / (1.0 + (r / (2.5 * _robust_scale(r[w0 > 0], I))) ** 2)
    pred = A * shading(n, vis, light, Y)
    light.rms = float(np.sqrt((w0[:, None] * (I - pred) ** 2).sum() / max(3 * w0.sum(), 1e-12)))
    return light


def _robust_scale(residual: np.ndarray, colour: np.ndarray) -> float:
    """1.4826 x the median absolute residual, floored at 0.1 % of the mean colour (noise-free data
    would otherwise get weights from rounding errors)."""
    mad = 1.4826 * float(np.median(residual)) if residual.size else 0.0
    return max(mad, 1e-3 * float(np.abs(colour).mean()) + 1e-9)


def _solve_fixed_direction(Y, n, I, A, w, d, vis) -> FrameLighting:
    z = np.maximum(n @ d, 0.0) * vis
    e = np.zeros((9, 3))
    s = np.zeros(3)
    for c in range(3):
        X = A[:, c:c + 1] * np.concatenate([Y, z[:, None]], 1)               # [P, 10]
        Xw = X * w[:, None]
        G = X.T @ Xw
        G += np.eye(10) * 1e-8 * (np.trace(G) / 10.0 + 1e-12)
        b = Xw.T @ I[:, c]
        x = np.linalg.solve(G, b)
        if x[9] < 0.0:
            x = np.zeros(10)
            x[:9] = np.linalg.solve(G[:9, :9], b[:9])
        e[:, c], s[c] = x[:9], x[9]
    return FrameLighting(e, np.asarray(d, np.float64) / np.linalg.norm(d), s)


def _best_direction(obs, cands, Y, n, I, A, w, faces, caster) -> tuple:
    """The candidate with the lowest weighted residual (all candidates in one batched solve)."""
    V = frame_visibility(obs, cands, faces, caster)                          # [P, N]
    Z = np.maximum(n @ cands.T, 0.0) * V                                       # [P, N]
    total = np.zeros(len(cands))
    for c in range(3):
        a2w = (A[:, c] ** 2) * w
        aIw = A[:, c] * I[:, c] * w
        G = (Y * a2w[:, None]).T @ Y                                           # [9, 9]
        G += np.eye(9) * 1e-8 * (np.trace(G) / 9.0 + 1e-12)
        b = Y.T @ aIw                                                          # [9]
        g = (Y * a2w[:, None]).T @ Z                                           # [9, N]
        h = (Z ** 2 * a2w[:, None]).sum(0)                                      # [N]
        q = Z.T @ aIw                                                          # [N]
        N = len(cands)
        M = np.zeros((N, 10, 10))
        M[:, :9, :9] = G
        M[:, :9, 9] = g.T
        M[:, 9, :9] = g.T
        M[:, 9, 9] = h + 1e-8 * (np.trace(G) / 9.0 + 1e-12)
        rhs = np.concatenate([np.broadcast_to(b, (N, 9)), q[:, None]], 1)
        x = torch.linalg.solve(torch.from_numpy(M), torch.from_numpy(rhs)).numpy()
        explained = (x * rhs).sum(1)
        sh_only = b @ np.linalg.solve(G, b)
        explained = np.where(x[:, 9] >= 0.0, explained, sh_only)
        total += (I[:, c] ** 2 * w).sum() - explained
    i = int(np.argmin(total))
    return cands[i] / np.linalg.norm(cands[i]), float(total[i])


# ============================================================================ albedo


def solve_albedo(frames: list, lights: list, faces, caster, resolution: int, prior: np.ndarray,
                 settings: AppearanceSettings | None = None, initial: np.ndarray | None = None) -> tuple:
    """Per-texel weighted least-squares albedo given each frame's lighting (module docstring, step
    2). ``frames`` [FrameObservations], ``lights`` [FrameLighting] parallel; ``prior`` [R*R, 3]
    (the base albedo in the current gauge). Returns (albedo [R*R, 3], weight [R*R] summed
    observation weight S^2 w of the final re-weighting, count [R*R] observations, the median weight of
    one observation)."""
    st = settings or AppearanceSettings()
    T = resolution * resolution
    tex, S, I, w0 = [], [], [], []
    for obs, light in zip(frames, lights):
        n = obs.concat("normal")
        vis = frame_visibility(obs, light.direction[None], faces, caster)[:, 0]
        tex.append(obs.concat("texel"))
        S.append(shading(n, vis, light))
        I.append(obs.concat("colour"))
        w0.append(obs.concat("weight"))
    tex, S, I, w0 = (np.concatenate(x) for x in (tex, S, I, w0))
    count = np.bincount(tex, minlength=T).astype(np.float64)
    typical = float(np.median((S ** 2).mean(1) * w0)) if len(w0) else 1.0
    lam = st.prior_observations * typical
    w = w0.copy()
    albedo = prior.copy() if initial is None else initial.copy()
    W = np.zeros(T)
    for it in range(st.robust_iterations + 1):
        if it > 0:
            r = np.abs(I - albedo[tex] * S).sum(1)
            w = w0 / (1.0 + (r / (2.5 * _robust_scale(r[w0 > 0], I))) ** 2)
        num = np.stack([np.bincount(tex, w * S[:, c] * I[:, c], minlength=T) for c in range(3)], 1)
        den = np.stack([np.bincount(tex, w * S[:, c] ** 2, minlength=T) for c in range(3)], 1)
        albedo = (num + lam * prior) / (den + lam)
        W = den.mean(1)
    return np.clip(albedo, 0.0, 1.0), W, count, typical


def _gauge(albedo: np.ndarray, base: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """[3] per-channel k so that the weighted mean of ``albedo * k`` equals that of ``base``."""
    ww = weight[:, None]
    return (ww * base).sum(0) / np.maximum((ww * albedo).sum(0), 1e-12)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][min(int(np.searchsorted(cw, 0.5 * cw[-1])), len(x) - 1)])


def sparse_deviation(albedo_work: np.ndarray, base_work: np.ndarray, weight_work: np.ndarray,
                     threshold: float | None = MARK_THRESHOLD, keep_whole: np.ndarray | None = None) -> tuple:
    """The solved albedo as the base times a gauge and *sparse* marks (module docstring, step 4).

    ``albedo_work`` / ``base_work`` [T, 3] linear at the working resolution, ``weight_work`` [T]
    (0 = not observed). Returns (``g`` [3]: the log gauge, the weighted median of ``log(albedo /
    base)`` over the observed texels; ``deviation`` [T, 3]: the soft-thresholded departure ``d'``,
    0 where not observed; ``t``: the threshold used, ``threshold`` x the weighted median ``|d|``).
    ``threshold`` None keeps every departure (``t`` = 0). ``keep_whole`` [T] bool: texels whose
    departure is kept unshrunk (the nail plates); they still count in the median that sets ``t``."""
    seen = weight_work > 0
    ratio = np.log(np.maximum(albedo_work, 1e-4) / np.maximum(base_work, 1e-4))
    if not seen.any():
        return np.zeros(3), np.zeros_like(ratio), 0.0
    w = weight_work[seen]
    g = np.array([_weighted_median(ratio[seen, c], w) for c in range(3)])
    d = np.where(seen[:, None], ratio - g, 0.0)
    length = np.linalg.norm(d, axis=1, keepdims=True)
    t = 0.0 if threshold is None else float(threshold) * _weighted_median(length[seen, 0], w)
    shrunk = d * np.maximum(0.0, length - t) / np.maximum(length, 1e-12)
    if keep_whole is not None:
        shrunk = np.where(np.asarray(keep_whole, bool)[:, None], d, shrunk)
    return g, shrunk, t


def region_fraction(asset, region: int, resolution: int, supersample: int = 8) -> np.ndarray:
    """[R * R] float64 in [0, 1]: the fraction of each texel of an ``R`` = ``resolution`` texture
    that lies on ``asset``'s (:class:`~relit_hands.hand_model.HandAsset`) render-mesh region
    ``region`` (``render_region``, per vertex, interpolated over each UV triangle): the atlas is
    rasterised at ``resolution x supersample`` and area-averaged; texels outside every chart are 0."""
    from relit_hands.uv_maps import rasterize_uv

    R, k = int(resolution), int(supersample)
    tri, bary = rasterize_uv(asset.render_uvs, asset.render_uv_faces, R * k)
    inside = tri >= 0
    on = (asset.render_region == int(region)).astype(np.float64)
    faces = asset.render_faces[np.where(inside, tri, 0)]                              # [Rk, Rk, 3]
    frac = np.where(inside, np.einsum("ijk,ijk->ij", bary.astype(np.float64), on[faces]), 0.0)
    return np.clip(frac.reshape(R, k, R, k).mean((1, 3)).reshape(-1), 0.0, 1.0)    # float32 barycentrics


def upsample_albedo(deviation_work: np.ndarray, weight_work: np.ndarray, base_full: np.ndarray, gauge: np.ndarray,
                    half_weight: float) -> tuple:
    """The texture-resolution albedo and coverage (module docstring): ``deviation_work`` [Rw*Rw, 3]
    the log departure from the base (:func:`sparse_deviation`), ``weight_work`` [Rw*Rw];
    ``base_full`` [R, R, 3] the base albedo; ``gauge`` [3] its per-channel scale. Returns (albedo
    ``base_full * gauge * exp(blend * deviation)`` [R, R, 3], coverage [R, R] in [0, 1])."""
    from scipy import ndimage

    R = base_full.shape[0]
    Rw = int(round(math.sqrt(len(weight_work))))
    cov_w = 1.0 - np.exp2(-weight_work / max(half_weight, 1e-12))                 # [Rw*Rw]
    t = torch.from_numpy(np.concatenate([deviation_work * cov_w[:, None], cov_w[:, None]], 1)
                         .reshape(Rw, Rw, 4).transpose(2, 0, 1)[None].astype(np.float32))
    up = torch.nn.functional.interpolate(t, size=(R, R), mode="bilinear", align_corners=False)[0].numpy()
    cov = np.clip(up[3], 0.0, 1.0)
    deviation = up[:3].transpose(1, 2, 0) / np.maximum(up[3], 1e-6)[..., None]
    # feather: fade the departure out over ~1 working texel where the coverage ends
    blend = np.minimum(ndimage.gaussian_filter(cov, sigma=0.5 * R / Rw), cov)
    out = base_full * np.asarray(gauge, np.float64)[None, None] * np.exp(blend[..., None] * deviation)
    return np.clip(out, 0.0, 1.0).astype(np.float32), cov.astype(np.float32)


# ============================================================================ driver


def fit_appearance(frames: dict, train: list, base_albedo_full: np.ndarray, faces, caster,
                   settings: AppearanceSettings | None = None, progress: bool = True,
                   resolution: int | None = None, nail_fraction: np.ndarray | None = None) -> AppearanceFit:
    """Alternate lighting and albedo (module docstring).

    ``frames`` {frame index: FrameObservations} (all frames, texels at ``resolution`` = the working
    resolution), ``train`` the frame indices whose observations make the albedo (the others only get
    their lighting); ``base_albedo_full`` [R, R, 3] linear base albedo at the texture resolution;
    ``faces`` the proxy faces; ``caster`` a :class:`relit_hands.raycast.RayCaster`; ``nail_fraction``
    [Rw * Rw] (:func:`region_fraction` of the asset's :data:`NAIL_REGION`): with
    ``settings.whole_nails`` the texels at least half on a nail keep their departure whole."""
    from tqdm import tqdm

    st = settings or AppearanceSettings()
    Rw = int(resolution)
    t0 = time.perf_counter()
    base_work = torch.nn.functional.interpolate(
        torch.from_numpy(base_albedo_full.transpose(2, 0, 1)[None].astype(np.float32)), size=(Rw, Rw),
        mode="area")[0].numpy().transpose(1, 2, 0).reshape(-1, 3).astype(np.float64)
    albedo = base_work.copy()
    lights = {}
    rounds = []
    seconds = {"lighting": 0.0, "albedo": 0.0}
    W = np.zeros(Rw * Rw)
    for rnd in range(st.rounds):
        t1 = time.perf_counter()
        for f in tqdm(train, desc=f"appearance: lighting, round {rnd + 1}/{st.rounds}", unit="frame",
                      disable=not progress, leave=False, dynamic_ncols=True):
            obs = frames[f]
            prev = lights.get(f)
            lights[f] = solve_lighting(obs, albedo[obs.concat("texel")], faces, caster, st,
                                       direction=None if prev is None else prev.direction, search=prev is None)
        t2 = time.perf_counter()
        # the prior: the base albedo, which is the gauge the albedo is kept in
        albedo, W, count, typical = solve_albedo([frames[f] for f in train], [lights[f] for f in train], faces, caster, Rw,
                                        base_work, st, initial=albedo)
        seen = W > 0
        k = _gauge(albedo[seen], base_work[seen], W[seen])
        albedo = np.clip(albedo * k[None], 0.0, 1.0)
        for f in train:
            lights[f] = lights[f].scaled(k)
        t3 = time.perf_counter()
        seconds["lighting"] += t2 - t1
        seconds["albedo"] += t3 - t2
        rms = float(np.sqrt(np.mean([lights[f].rms ** 2 for f in train])))
        rounds.append({"round": rnd + 1, "rms_linear": rms, "observed_texels": int(seen.sum()),
                       "gauge": np.round(k, 5).tolist()})
    t1 = time.perf_counter()
    whole = None
    if st.whole_nails and nail_fraction is not None:
        if np.shape(nail_fraction) != (Rw * Rw,):
            raise ValueError(f"nail_fraction must be [{Rw * Rw}] (the working resolution {Rw}^2), "
                             f"got {np.shape(nail_fraction)}")
        whole = np.asarray(nail_fraction) >= 0.5
    log_gauge, deviation, mark_t = sparse_deviation(albedo, base_work, W, st.mark_threshold, keep_whole=whole)
    gauge_base = np.exp(log_gauge)
    full, coverage = upsample_albedo(deviation, W, base_albedo_full.astype(np.float64), gauge_base,
                                     st.coverage_half_weight * typical)
    seconds["upsample"] = time.perf_counter() - t1
    # final lighting for every frame (held-out ones included) with the albedo that is written
    written = np.clip(base_work * np.exp(log_gauge + deviation), 0.0, 1.0)
    t1 = time.perf_counter()
    for f in tqdm(sorted(frames), desc="appearance: final lighting", unit="frame", disable=not progress, leave=False,
                  dynamic_ncols=True):
        obs = frames[f]
        prev = lights.get(f)
        lights[f] = solve_lighting(obs, written[obs.concat("texel")], faces, caster, st,
                                   direction=None if prev is None else prev.direction, search=prev is None)
    seconds["lighting"] += time.perf_counter() - t1
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    seconds["total"] = round(time.perf_counter() - t0, 3)
    return AppearanceFit(albedo=full, coverage=coverage, albedo_work=albedo.reshape(Rw, Rw, 3).astype(np.float32),
                         weight_work=W.astype(np.float32), working_resolution=Rw, gauge=gauge_base, lighting=lights,
                         rounds=rounds, seconds=seconds, observations=int(sum(frames[f].count for f in train)),
                         mark_threshold=round(mark_t, 5),
                         whole_texels=0 if whole is None else int((whole & (W > 0)).sum()))


# ============================================================================ rendering with the model


def render_model_image(engine, state, camera, albedo: np.ndarray, light: FrameLighting, caster, uv_lookup,
                       background: np.ndarray | None = None) -> np.ndarray:
    """The image model (module docstring) rendered for ``state`` seen by ``camera``: linear
    [H, W, 3] (``background`` [H, W, 3] linear behind the hand, else black). ``albedo`` [R, R, 3]
    linear (sampled nearest at the pixel's texture coordinate); ``uv_lookup``: a proxy
    :class:`~relit_hands.uv_maps.UVRasterizer` (visibility interpolation)."""
    from relit_hands.hand_model import vertex_normals

    Rl = uv_lookup.resolution
    obs, rendered = observe_view(engine, state, camera, np.zeros((camera.height, camera.width, 3)), None, None,
                                 uv_lookup, Rl, edge_px=0)
    out = np.zeros((camera.height, camera.width, 3)) if background is None else np.array(background, np.float64)
    if not len(obs.texel):
        return out.astype(np.float32)
    from relit_hands.scene import Scene

    posed = engine.pose(Scene([state]), meshes=("proxy",))["right"].proxy_vertices[0].detach().cpu()
    pn = vertex_normals(posed, engine.asset.proxy_faces).numpy()
    fo = FrameObservations([obs], posed.numpy().astype(np.float64), pn.astype(np.float64))
    vis = frame_visibility(fo, light.direction[None], engine.asset.proxy_faces, caster)[:, 0]
    R = albedo.shape[0]
    tr = np.minimum((obs.uv[:, 1] * R).astype(np.int64), R - 1)
    tc = np.minimum((obs.uv[:, 0] * R).astype(np.int64), R - 1)
    colour = albedo[tr, tc].astype(np.float64) * shading(obs.normal, vis, light)
    out[obs.pixel[:, 0], obs.pixel[:, 1]] = colour
    # the 1-px rim the erosion-free observation still lost (texels off the proxy atlas): keep background
    return out.astype(np.float32)
