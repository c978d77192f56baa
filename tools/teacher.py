r"""The OLAT teacher: a UV-space network that predicts a hand's radiance texture under ONE light.

RelightableHands' teacher learns one-light-at-a-time appearance from a light stage; environment
lighting is then a weighted sum of its outputs (:mod:`relit_hands.tools.relight`). Ours works
in the hand's UV atlas (shared by both hands through the mirrored layout, so one network and one
latent texture serve the left and the right hand):

    Z        learned latent texture [Cz, R, R]                      ("what is here": albedo,
                                                                    nails, creases, thickness)
    p        pose code = MLP(pose vector [94]) tiled over UV        (:func:`teacher_inputs.pose_vector`)
    F        = trunk(cat(Z, p)):  conv3x3 -> lrelu -> conv3x3 -> lrelu     once per hand and pose
    per light l (conditioning c_l [9], :mod:`teacher_inputs`):
      s_l    = shadow branch: conv5x5(cat(vis, vis * max(0, n.l))) -> 4 ch   (spatial context:
               subsurface scattering blurs shadow edges over a few mm = a few texels)
      h_l    = 1x1-conv MLP(cat(F, c_l, s_l)) -> 7 channels (a_rgb, s, e_rgb)
      rho    = softplus(a)                 reflectance-like gain (RGB, >= 0); with an albedo prior
               (``albedo_prior=True``: the asset's linear albedo texture A [3, R, R], a fixed
               buffer saved with the weights) rho = softplus(a) * A, softplus(a) starting at 1/pi:
               the untrained teacher is then the asset's Lambertian skin and training learns only
               what differs (translucency, view dependence, shadow softness)
      g      = sigmoid(s + 6 (vis - 1/2))  learned shadow / gain factor in [0, 1] multiplying the
               (skip-connected) visibility, in the spirit of the deep shadow maps of the
               paper's lineage
      e      = softplus(e_raw)             residual, not cosine-weighted (light that arrives
               through the skin from lit regions: SSS past the terminator, glowing fingers)
      T_l    = E_l * (rho * g * max(0, n.l) + e [+ k * vis * f_s(l, v) max(0, n.l)]),
               E_l = I_l / d_l^2  (point light, W/sr -> W/m^2) or the light's irradiance (directional)
      [specular prior (``specular_prior=True``): f_s = the GGX microfacet lobe of the asset's
       specular texture S [2, R, R] = (alpha, F0) (:meth:`HandAsset.specular_map`, the very maps
       the PBR baseline renders, a fixed buffer saved with the weights): F_Schlick(F0, v.h) *
       D_alpha(n.h) * Vis_alpha(n.l, n.v) (height-correlated Smith, as :mod:`relit_hands.features`),
       shadowed by the ray-cast visibility ``vis``, scaled by a learned per-texel gain
       k = softplus(kappa) (starting at 1). Without it the residual ``e`` has to learn the skin's
       white sheen from the light and view directions, which the 1x1 head learns slowly: the
       teacher then renders skin too dark and too red under broad or grazing light (measured).
       ``learn_specular_alpha=True``: the lobe's alpha is also learned per texel, as a log-scale of
       the prior's (:meth:`TeacherNet.enable_learned_specular_alpha`).]

The output is LINEAR in each light's RGB intensity and lights never interact inside the network
(no normalisation across the light batch), so the texture for a set of lights is exactly the sum
of the single-light textures (tested). Cost: the trunk runs once per hand and pose; per light only
the 5x5 shadow conv (2->4 ch) and three 1x1 convs run, so hundreds of lights per pose are cheap.

Initialisation: ``rho`` starts at ~0.12 (a Lambertian skin of albedo ~0.4: radiance = albedo/pi x irradiance),
``e`` at ~0.003, so an untrained teacher already renders plausible shaded, shadowed hands and the
optimisation only has to learn the residual appearance.

Files: :func:`save_teacher` / :func:`load_teacher` -- safetensors (weights) with the config as JSON
in the safetensors metadata (key ``relit_hands_teacher``); no pickle.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from .teacher_inputs import POSE_DIM, cond_names

__all__ = ["TeacherNet", "ggx_lobe", "save_teacher", "load_teacher", "TeacherLoadError", "META_KEY", "default_teacher_path"]

META_KEY = "relit_hands_teacher"
FORMAT_VERSION = 1


def default_teacher_path() -> Path:
    """The shipped default teacher: ``relit_hands/models/teacher/teacher.safetensors`` (README:
    the one command that rebuilds it)."""
    from relit_hands import models

    return Path(models.__file__).resolve().parent / "teacher" / "teacher.safetensors"


class TeacherLoadError(ValueError):
    """A teacher weights file that is missing, unreadable or not a teacher (names the file)."""


def _inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def ggx_lobe(l: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """Cosine-weighted GGX reflection ``F_Schlick(F0, v.h) D(n.h) Vis(n.l, n.v) max(0, n.l)``.

    ``l``, ``v`` [B, 3, ...]: unit directions towards the light and the camera in a local frame
    whose third axis is the normal; ``alpha`` (GGX alpha, not perceptual roughness) and ``f0``
    broadcast against ``[B, 1, ...]``. Returns ``[B, 1, ...]`` (radiance per unit irradiance);
    0 where the light or the camera is below the surface. D and Vis are the student features' own
    (:func:`relit_hands.features.ggx_distribution`, :func:`~relit_hands.features.smith_visibility`),
    the Fresnel term that of the PBR shader (``shaders/hand.frag``)."""
    from ..features import ggx_distribution, smith_visibility

    nl = l[:, 2:3]
    nv = v[:, 2:3]
    h = l + v
    h = h * torch.rsqrt((h * h).sum(1, keepdim=True).clamp_min(1e-16))   # = h / max(|h|, 1e-8); faster than norm on CPU
    nh = h[:, 2:3].clamp_min(0)
    vh = (v * h).sum(1, keepdim=True).clamp(0, 1)
    a2 = alpha * alpha
    nlc = nl.clamp_min(0)
    fres = f0 + (1 - f0) * (1 - vh) ** 5
    lobe = fres * ggx_distribution(nh * nh, a2) * smith_visibility(nlc, nv.clamp_min(1e-4), a2) * nlc
    return torch.where((nl > 0) & (nv > 0), lobe, torch.zeros_like(nl))


class TeacherNet(nn.Module):
    """See the module docstring. ``forward(cond, falloff, intensity, pose, valid=None)``."""

    def __init__(self, resolution: int = 256, latent_channels: int = 16, pose_code: int = 8,
                 trunk_channels: int = 32, head_channels: int = 32, d_ref: float = 1.0,
                 rho_init: float = 0.12, e_init: float = 0.003, albedo_prior: bool = False,
                 albedo: torch.Tensor | None = None, specular_prior: bool = False,
                 specular: torch.Tensor | None = None, translucency_mfp: float = 0.0,
                 learn_specular_alpha: bool = False):
        """``albedo_prior``: multiply the learned gain by a fixed albedo texture ``albedo``
        [3, R, R] (linear; :meth:`HandAsset.albedo_map`); ``specular_prior``: add the GGX lobe of
        the fixed specular texture ``specular`` [2, R, R] (alpha, F0; :meth:`HandAsset.specular_map`).
        When loading, both buffers come from the weights file.

        ``translucency_mfp`` > 0 (metres): the conditioning carries a 10th channel, the
        ray-cast transmittance of the light through the hand with that mean free path
        (:class:`~.teacher_inputs.TexelConditioning`), which the head sees and which adds a
        translucent term ``softplus(trans_gain) * transmit`` (a learned RGB gain per texel,
        starting at 0.02) -- still linear in the lights."""
        super().__init__()
        self.config = dict(resolution=int(resolution), latent_channels=int(latent_channels),
                           pose_code=int(pose_code), trunk_channels=int(trunk_channels),
                           head_channels=int(head_channels), d_ref=float(d_ref),
                           rho_init=float(rho_init), e_init=float(e_init), albedo_prior=bool(albedo_prior))
        if translucency_mfp:  # only written when used: files without it keep their config
            self.config["translucency_mfp"] = float(translucency_mfp)
            self.trans_gain = nn.Parameter(torch.full((1, 3, resolution, resolution), _inv_softplus(0.02)))
        else:
            self.trans_gain = None
        if specular_prior:  # only written when used: files without it keep their config
            self.config["specular_prior"] = True
            if specular is None:
                specular = torch.zeros(2, resolution, resolution)
            if tuple(specular.shape) != (2, resolution, resolution):
                raise ValueError(f"specular prior must be [2, {resolution}, {resolution}], got {tuple(specular.shape)}")
            self.register_buffer("specular", specular.detach().float().clone()[None])
            self.spec_gain = nn.Parameter(torch.full((1, 1, resolution, resolution), _inv_softplus(1.0)))
        else:
            self.specular = None
        self.spec_log_alpha = None
        if albedo_prior:
            if albedo is None:
                albedo = torch.zeros(3, resolution, resolution)
            if tuple(albedo.shape) != (3, resolution, resolution):
                raise ValueError(f"albedo prior must be [3, {resolution}, {resolution}], got {tuple(albedo.shape)}")
            self.register_buffer("albedo", albedo.detach().float().clone()[None])
            rho_init = 1.0 / math.pi
        else:
            self.albedo = None
        R, Cz, Ct, Ch, Pc = resolution, latent_channels, trunk_channels, head_channels, pose_code
        self.resolution = R
        self.d_ref = float(d_ref)
        if learn_specular_alpha:
            self.enable_learned_specular_alpha()
        # the hand asset whose atlas the latent / albedo textures live in (asset_reference; saved
        # as the file's 'asset' metadata; None = the shipped default 'hand')
        self.asset_ref: str | None = None
        self.latent = nn.Parameter(0.1 * torch.randn(1, Cz, R, R))
        self.pose_mlp = nn.Sequential(nn.Linear(POSE_DIM, 64), nn.LeakyReLU(0.2), nn.Linear(64, Pc))
        self.trunk = nn.Sequential(nn.Conv2d(Cz + Pc, Ct, 3, padding=1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(Ct, Ct, 3, padding=1), nn.LeakyReLU(0.2))
        self.shadow = nn.Conv2d(2, 4, 5, padding=2)
        nc = len(cond_names(translucency_mfp))
        self.head = nn.Sequential(nn.Conv2d(Ct + nc + 4, Ch, 1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(Ch, Ch, 1), nn.LeakyReLU(0.2), nn.Conv2d(Ch, 7, 1))
        last = self.head[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            last.bias.zero_()
            last.bias[0:3] = _inv_softplus(rho_init)
            last.bias[4:7] = _inv_softplus(e_init)

    def enable_learned_specular_alpha(self) -> None:
        """Let training correct the specular prior's lobe width: a per-texel log-scale of the GGX
        alpha, ``alpha' = alpha exp(clamp(spec_log_alpha, -1.5, 1.5))``, starting at 0 (the prior
        as it was, so a trained teacher given it renders the same). The asset's roughness map is a
        guess at the skin; the light stage's images are what the skin is. Needs the specular prior."""
        if self.specular is None:
            raise ValueError("a learned specular alpha needs the specular prior (specular_prior=True)")
        if self.spec_log_alpha is None:
            R = self.resolution
            self.spec_log_alpha = nn.Parameter(torch.zeros(1, 1, R, R, device=self.specular.device))
            self.config["learn_specular_alpha"] = True

    # ------------------------------------------------------------------------------
    def trunk_features(self, pose: torch.Tensor) -> torch.Tensor:
        """pose [H, POSE_DIM] -> per-hand light-independent features [H, Ct, R, R]."""
        H = pose.shape[0]
        R = self.resolution
        code = self.pose_mlp(pose)[:, :, None, None].expand(H, -1, R, R)
        return self.trunk(torch.cat([self.latent.expand(H, -1, -1, -1), code], 1))

    def light_response(self, feats: torch.Tensor, cond: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """feats [H, Ct, R, R], cond [H, L, C, R, R] (C = 9, or 10 with the translucency channel)
        -> unit-irradiance response [H, L, 3, R, R]
        (``rho * g * max(0, n.l) + e``: the radiance for irradiance 1).

        The 1x1-convolution head is evaluated as per-texel matrix products in channels-last
        layout, and its first layer is split: ``W [F; c; s] = W_F F + W_c c + W_s s``, where the
        ``W_F F`` part does not depend on the light and is computed once per hand, not once per
        light (same numbers as the convolutions, ~3x faster on a CPU). ``valid`` [R, R] bool: the
        per-texel part runs on those texels only and the response is 0 elsewhere (what every
        caller multiplies by anyway). On asset v2 (55 % of the atlas covered) a 256-light
        environment relighting went from 34.7 to 29.4 s on one CPU core: the head's per-texel
        work shrinks, the 5x5 shadow convolution and the conditioning do not."""
        H, L, C, R, _ = cond.shape
        Ct = feats.shape[1]
        c = cond.reshape(H * L, C, R, R)
        vis_full = c[:, 7:8]
        s = self.shadow(torch.cat([vis_full, vis_full * c[:, 8:9].clamp_min(0)], 1))      # [HL, 4, R, R]
        x = torch.cat([c, s], 1).reshape(H * L, C + s.shape[1], R * R)                     # [HL, C+4, P]
        fF = feats.reshape(H, Ct, R * R)
        idx = None
        if valid is not None:
            idx = torch.nonzero(valid.reshape(-1).to(x.device), as_tuple=False).squeeze(1)
            x, fF = x[:, :, idx], fF[:, :, idx]
        P = x.shape[-1]
        l1, l2, l3 = self.head[0], self.head[2], self.head[4]
        w1 = l1.weight[:, :, 0, 0]
        a = self.head[1].negative_slope
        f_part = torch.einsum("oc,hcp->hpo", w1[:, :Ct], fF) + l1.bias                     # [H, P, Ch]
        xt = x.reshape(H, L, C + s.shape[1], P).transpose(2, 3)                            # [H, L, P, C+4]
        h = F.leaky_relu(f_part[:, None] + xt @ w1[:, Ct:].T, a)
        h = F.leaky_relu(h @ l2.weight[:, :, 0, 0].T + l2.bias, a)
        h = (h @ l3.weight[:, :, 0, 0].T + l3.bias).transpose(2, 3).reshape(H * L, 7, P)
        vis, ndl = x[:, 7:8], x[:, 8:9].clamp_min(0)

        def texels(t):  # a per-texel parameter / buffer [1, k, R, R] -> [1, k, P]
            t = t.reshape(1, t.shape[-3], R * R)
            return t[:, :, idx] if idx is not None else t

        rho = F.softplus(h[:, 0:3])
        if self.albedo is not None:
            rho = rho * texels(self.albedo)
        g = torch.sigmoid(h[:, 3:4] + 6.0 * (vis - 0.5))
        e = F.softplus(h[:, 4:7])
        out = rho * g * ndl + e
        if self.specular is not None:
            spec = texels(self.specular)
            alpha = spec[:, 0:1]
            if self.spec_log_alpha is not None:
                alpha = alpha * torch.exp(texels(self.spec_log_alpha).clamp(-1.5, 1.5))
            lobe = ggx_lobe(x[:, 0:3], x[:, 4:7], alpha, spec[:, 1:2])
            out = out + F.softplus(texels(self.spec_gain)) * vis * lobe
        if self.trans_gain is not None:
            out = out + F.softplus(texels(self.trans_gain)) * x[:, 9:10]
        if idx is not None:
            full = out.new_zeros(H * L, 3, R * R)
            full[:, :, idx] = out
            out = full
        return out.reshape(H, L, 3, R, R)

    @property
    def mean_free_path(self) -> float:
        """The translucency channel's mean free path (metres); 0 without the channel."""
        return float(self.config.get("translucency_mfp", 0.0))

    def forward(self, cond, falloff, intensity, pose, valid=None, *, sum_lights: bool = False,
                feats: torch.Tensor | None = None):
        """Radiance textures.

        cond [H, L, 9, R, R], falloff [H, L, 1, R, R] (1/d^2 or 1), intensity [L, 3] (W/sr for
        point lights, irradiance for directional ones), pose [H, POSE_DIM], valid [R, R] bool.
        Returns [H, L, 3, R, R] (or [H, 3, R, R] with ``sum_lights``): linear radiance, zero
        outside ``valid``.
        """
        if feats is None:
            feats = self.trunk_features(pose)
        resp = self.light_response(feats, cond, valid)    # 0 outside valid
        I = intensity.to(resp.dtype).reshape(1, -1, 3, 1, 1)
        out = resp * falloff * I
        return out.sum(1) if sum_lights else out


def save_teacher(model: TeacherNet, path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    meta = {"format_version": FORMAT_VERSION, "config": model.config,
            **({"asset": model.asset_ref} if model.asset_ref else {}), **(extra or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.safetensors")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    tmp.replace(path)


# What a teacher file's metadata may ask for (checked before anything is built).
CONFIG_INT_BOUNDS = {"resolution": (8, 4096), "latent_channels": (1, 256), "pose_code": (1, 256),
                     "trunk_channels": (1, 512), "head_channels": (1, 512)}
CONFIG_FLOAT_BOUNDS = {"d_ref": (1e-6, 1e6), "rho_init": (1e-9, 1e3), "e_init": (1e-12, 1e3),
                       "translucency_mfp": (0.0, 0.1)}
CONFIG_BOOLS = ("albedo_prior", "specular_prior", "learn_specular_alpha")


def check_teacher_config(config, path) -> dict:
    """A teacher file's ``config`` with only known keys, each within its bounds; else
    :class:`TeacherLoadError` naming the file and the key."""
    if not isinstance(config, dict):
        raise TeacherLoadError(f"{path}: teacher metadata has no 'config' object")
    unknown = sorted(set(config) - set(CONFIG_INT_BOUNDS) - set(CONFIG_FLOAT_BOUNDS) - set(CONFIG_BOOLS))
    if unknown:
        raise TeacherLoadError(f"{path}: teacher config has unknown key(s) {unknown[:5]}")
    out = {}
    for k, v in config.items():
        if k in CONFIG_BOOLS:
            if not isinstance(v, bool):
                raise TeacherLoadError(f"{path}: teacher config {k}={str(v)[:20]!r} is not true/false")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TeacherLoadError(f"{path}: teacher config {k}={str(v)[:20]!r} is not a finite number")
        elif k in CONFIG_INT_BOUNDS:
            lo, hi = CONFIG_INT_BOUNDS[k]
            if not isinstance(v, int) or not lo <= v <= hi:
                raise TeacherLoadError(f"{path}: teacher config {k}={v!r} is outside {lo} .. {hi}")
        else:
            lo, hi = CONFIG_FLOAT_BOUNDS[k]
            if not lo <= v <= hi:
                raise TeacherLoadError(f"{path}: teacher config {k}={v!r} is outside {lo:g} .. {hi:g}")
        out[k] = v
    return out


def load_teacher(path, device="cpu") -> tuple[TeacherNet, dict]:
    """(model in eval mode, metadata dict). Raises :class:`TeacherLoadError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "teacher.safetensors"
    if not path.is_file():
        raise TeacherLoadError(f"{path}: teacher weights not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
    except Exception as e:
        raise TeacherLoadError(f"{path}: not a readable safetensors file ({e})") from None
    if META_KEY not in md:
        raise TeacherLoadError(f"{path}: not a teacher file (no '{META_KEY}' metadata)")
    from ..student import check_file_shapes
    from ..validation import InputFileError, parse_json_text

    try:
        meta = parse_json_text(md[META_KEY], f"{path}: teacher metadata")
    except InputFileError as e:
        raise TeacherLoadError(str(e)) from None
    config = check_teacher_config(meta.get("config") if isinstance(meta, dict) else None, path)
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated before they match the file
            shapes = {k: tuple(v.shape) for k, v in TeacherNet(**config).state_dict().items()}
    except (TypeError, ValueError) as e:
        raise TeacherLoadError(f"{path}: teacher metadata does not describe a valid network ({e})") from None
    check_file_shapes(path, shapes, TeacherLoadError, "the teacher its metadata describes")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise TeacherLoadError(f"{path}: not a readable safetensors file ({e})") from None
    for k, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise TeacherLoadError(f"{path}: tensor {k!r} contains NaN or infinite values")
    model = TeacherNet(**config)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise TeacherLoadError(f"{path}: weights do not match the teacher config: {e}") from None
    ref = meta.get("asset")
    model.asset_ref = ref if isinstance(ref, str) and ref else None
    return model.to(device).eval(), meta
