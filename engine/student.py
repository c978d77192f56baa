r"""The run-time student: a UV-space convolutional encoder-decoder (RelightableHands' student).

Input: the spatially aligned lighting features of :mod:`.features` gathered to UV maps
``[B, C, R, R]`` (B = hands, both hands through one network: the left hand is the mirror of the
right one and shares its UV layout, so texel (row, col) is the same anatomical spot on both),
plus a learned static UV tensor ``[1, S, R, R]`` (per-texel "what is here": albedo-like detail,
nails, creases, that the coarse proxy's features cannot carry) concatenated at the input.
Output: ``[B, 3, R, R]`` linear RGB radiance **divided by the environment energy** (the
features are divided by ``energy`` per RGB channel, :mod:`.features`); the caller multiplies
back by ``energy`` [3], so any HDR scale works.

Architecture (``StudentNet(in_channels, base=32, levels=4, static_channels=8, resolution)``):
a U-Net made only of export-friendly operations (ONNX opset 17 ``Conv``, ``LeakyRelu``,
``Resize`` nearest x2, ``Concat``, ``Softplus``, ``Add``/``Mul`` (input affine, broadcast adds),
and for the bottleneck variant ``Gemm`` + ``Unsqueeze``: all TensorRT layers; no shape
arithmetic in the graph)::

    x = maps * in_scale + in_shift                                     R
    e0 = lrelu(conv3x3(cat(x, static)) -> c0)                          R
         (computed as conv(x) + conv(static), the latter broadcast over the batch)
    e_i = conv3x3 stride 2 (c_{i-1} -> c_i) lrelu, conv3x3 lrelu       R / 2^i, i = 1..levels
    [bottleneck variant: e_L = lrelu(conv3x3(e_L) + W mlp(code)), i.e. the code tiled over the
     bottleneck grid and concatenated, through a 1x1 convolution; written as a broadcast add]
    d_i = conv3x3(nearest_up2(d_{i+1}) -> c_i) lrelu,
          conv3x3(cat(d_i, e_i) -> c_i) lrelu                          i = levels-1..0
    out = softplus(conv3x3(d_0 -> 3))                                  radiance / energy
    [albedo prior: out = softplus(conv3x3(d_0 -> 3)) * A, A = the asset's linear albedo texture
     [1, 3, R, R] (a fixed buffer saved with the weights, a constant in the ONNX graph): the
     network predicts shading, not albedo x shading, which a ReLU network learns slowly]
    [white specular channel (``specular_channel=True``, with the albedo prior):
     out = softplus(conv3x3(d_0 -> 3)) * A + softplus(conv3x3(d_0 -> 1)) (one grey channel added
     to R, G and B, broadcast): the skin's surface reflection is not tinted by the albedo, and
     without this channel the network must learn it as a per-texel 1/A]
    [light head (``light_head=True``, with the albedo prior): the decoder also predicts per-texel
     non-negative weights w = softplus(conv3x3(d_0)) and adds
       A * sum_g w_g,rgb * F_g,rgb   (diffuse-like groups g: diffuse_vis, diffuse_novis, transmit_*)
       + sum_l w_l * F_l,rgb         (specular lobes l: spec_a*, one grey weight each)
     where F are the raw energy-normalised feature maps (not the normalised network input). For
     fixed weights the output is linear in each light's contribution, as light transport is, so
     the network learns *how* this texel responds (subsurface colour, shadow softness, gloss)
     and the features carry *how much* light arrives: an environment unlike the training ones
     changes F, not what the network must extrapolate. Starts as a Lambertian A / pi x
     diffuse_vis skin with a faint specular; the selections and sums are fixed 1x1 convolutions
     (non-persistent buffers derived from the feature names), so the graph stays Conv / Mul /
     Add / Softplus]

with ``c_i = base * min(2^i, 4)`` (32, 64, 128, 128, 128 for base 32, levels 4). Full-resolution
work is kept to three 3x3 convolutions (plus the output one): at R = 256 every level costs about
the same FLOPs, so the channel cap keeps the deep levels cheap. ``softplus`` keeps radiance
positive without a dead zone (ReLU outputs can get stuck at 0 for dark texels); its bias is
initialised so the untrained network predicts ~0.05 (a mid-grey Lambertian skin under an
average light), not softplus(0) = 0.69.

Variants (the paper's comparison; all three share the network, the loss and the training tool):

* ``'vis'`` (ours): every feature channel of :func:`.features.lighting_features` with ray-cast
  visibility -- diffuse_vis rgb, diffuse_novis rgb, spec_a{0.20,0.40,0.70} rgb (shadowed), ao,
  normal xyz (C = 19).
* ``'novis'`` (ablation a, "the same features without visibility"): the features are computed
  with visibility = 1 for every vertex and light (no ray casting), which makes diffuse_vis ==
  diffuse_novis, the specular lobes unshadowed and ao == 1. The redundant channels are dropped
  instead of fed as duplicates / constants: inputs = diffuse_novis rgb, the three unshadowed
  specular lobes, normal xyz (C = 15). The network is otherwise identical.
* ``'bottleneck'`` (ablation b, "bottleneck conditioning"): no spatially aligned lighting at all.
  Spatial inputs = the world normal map (normal xyz, pure geometry: it carries the pose) and
  the learned static UV tensor; the environment enters only as a global code -- an MLP
  (Linear-LeakyReLU-Linear) on :func:`environment_code` (the environment's order-2 SH
  coefficients [9, 3] in the WORLD frame, i.e. with the map's rotation applied, each colour
  divided by that colour's energy, plus the unit direction from the hands to the camera), tiled
  over the bottleneck grid and concatenated there (DRAM-style conditioning).

Key lights (``key_lights=K``, metadata only; :mod:`.key_lights`): the model was trained on
features whose diffuse_vis / spec_* part of the K brightest lights is cast per UV texel (sharp
shadows), so the engine computes its inputs that way. The network itself is unchanged.

Files: :func:`save_student` / :func:`load_student` -- safetensors (tensors) + JSON metadata in the
safetensors header (key ``relit_hands_student``): variant, architecture, resolution, the model's
input feature names and which feature computation they come from, the input normalisation, the
loss scale. No pickle anywhere. Any problem (missing, unreadable, corrupt, not a student, wrong
shapes) raises :class:`StudentLoadError` (a ``ValueError``) that names the file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .features import feature_names

__all__ = [
    "StudentNet", "StudentLoadError", "VARIANTS", "FEATURE_NAMES", "variant_feature_names",
    "variant_feature_source", "select_channels", "environment_code", "CODE_IN", "save_student",
    "load_student", "default_student_path", "shipped_layout_name", "FORMAT_VERSION", "model_meta", "light_head_groups",
]

FORMAT_VERSION = 1
META_KEY = "relit_hands_student"
VARIANTS = ("vis", "novis", "bottleneck")

#: Channels of :func:`relit_hands.features.lighting_features` with its defaults (C = 19):
#: diffuse_vis rgb, diffuse_novis rgb, spec_a{0.20,0.40,0.70} rgb, ao, normal xyz.
FEATURE_NAMES = tuple(feature_names())
#: Length of :func:`environment_code`: 27 normalised SH values + 3 view-direction values.
CODE_IN = 30


class StudentLoadError(ValueError):
    """A student weights file that is missing, unreadable, corrupt or does not fit the model."""


def variant_feature_names(variant: str, available: Sequence[str] = FEATURE_NAMES) -> list:
    """The feature channels (in order) that ``variant`` consumes, picked from ``available``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    av = list(available)
    if variant == "vis":
        return av
    if variant == "novis":
        # computed with visibility = 1: diffuse_vis duplicates diffuse_novis, ao is constant 1,
        # transmit_* (a ray cast) are 0
        return [n for n in av if not n.startswith(("diffuse_vis", "transmit_")) and n != "ao"]
    return [n for n in av if n.startswith("normal_")]


def variant_feature_source(variant: str) -> str:
    """Which per-vertex feature computation a variant reads: 'vis' (ray-cast visibility) or
    'novis' (visibility = 1 everywhere). The bottleneck variant only reads normals (identical in
    both), so it uses 'novis' and needs no ray casting at run time."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return "vis" if variant == "vis" else "novis"


def select_channels(maps: torch.Tensor, names: Sequence[str], wanted: Sequence[str]) -> torch.Tensor:
    """``maps [B, C, R, R]`` with channel ``names`` -> the ``wanted`` channels in that order."""
    names = list(names)
    if list(wanted) == names:
        return maps
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"feature maps lack channel(s) {missing}; they have {names}")
    idx = torch.tensor([names.index(w) for w in wanted], device=maps.device)
    return maps.index_select(1, idx)


def scene_centre(scene) -> np.ndarray:
    """Mean wrist position of the scene's hands (world, metres) -- the 'where the hands are'
    point used for the bottleneck code's view direction."""
    return np.mean([np.asarray(h.transl, np.float64) for h in scene.hands], 0)


def environment_code(sh, energy, view_origin, centre) -> np.ndarray:
    """The bottleneck variant's global input, ``[CODE_IN]`` float32.

    ``sh [9, 3]``: :meth:`EnvironmentMap.sh_coefficients` (WORLD frame, rotation and exposure
    applied); ``energy [3]``: the features' energy (sum of the N lights' rgb = the map's total
    energy); each colour's SH is divided by that colour's energy so the code is scale free like
    the features (coefficient 0 becomes the constant 0.282). Then the unit direction from
    ``centre`` (:func:`scene_centre`) to ``view_origin`` (the camera) -- the bottleneck network's
    only view information, as the specular lobes carry it for the other variants."""
    sh = np.asarray(sh, np.float64).reshape(9, 3)
    e = np.maximum(np.asarray(energy, np.float64).reshape(3), 1e-12)
    d = np.asarray(view_origin, np.float64).reshape(3) - np.asarray(centre, np.float64).reshape(3)
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    return np.concatenate([(sh / e[None]).reshape(-1), d]).astype(np.float32)


#: Feature-name prefixes of light-linear channels the light head weights (the rest -- ao, normals --
#: only feed the network): diffuse-like groups are tinted by the albedo, specular lobes are not.
DIFFUSE_PREFIXES = ("diffuse_vis", "diffuse_novis", "transmit_")
SPECULAR_PREFIXES = ("spec_a",)


def light_head_groups(names: Sequence[str]) -> dict:
    """The rgb groups of ``names`` the light head combines: ``{'diffuse': [prefix, ...],
    'specular': [prefix, ...]}`` in channel order, each prefix having ``_r``, ``_g`` and ``_b``."""
    names = list(names)
    groups = {"diffuse": [], "specular": []}
    for n in names:
        if not n.endswith("_r"):
            continue
        prefix = n[:-2]
        if not all(f"{prefix}_{c}" in names for c in "gb"):
            continue
        if prefix.startswith(DIFFUSE_PREFIXES):
            groups["diffuse"].append(prefix)
        elif prefix.startswith(SPECULAR_PREFIXES):
            groups["specular"].append(prefix)
    return groups


def _conv(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class StudentNet(nn.Module):
    """UV-space U-Net: ``forward(maps [B, C, R, R], env_code [B, CODE_IN] or None) -> [B, 3, R, R]``
    (radiance / energy). See the module docstring for the architecture and the variants.

    ``in_channels`` must equal ``len(feature_names)`` when given; ``resolution`` R must be a
    multiple of ``2 ** levels``. Buffers ``in_scale`` / ``in_shift`` [1, C, 1, 1] hold the input
    normalisation (set by the trainer from data statistics; identity by default) and travel
    with the weights (and into the ONNX graph).
    """

    def __init__(self, in_channels: int, base: int = 32, levels: int = 4, static_channels: int = 8,
                 resolution: int = 256, variant: str = "vis", code_dim: int = 64,
                 feature_names: Optional[Sequence[str]] = None, slope: float = 0.2,
                 albedo_prior: bool = False, specular_channel: bool = False, light_head: bool = False,
                 key_lights: int = 0):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        R = int(resolution)
        if levels < 1 or R % (2 ** levels):
            raise ValueError(f"resolution {R} must be a multiple of 2^levels = {2 ** levels}")
        if feature_names is not None and len(feature_names) != in_channels:
            raise ValueError(f"in_channels={in_channels} but {len(feature_names)} feature names")
        self.in_channels, self.base, self.levels = int(in_channels), int(base), int(levels)
        self.static_channels, self.resolution, self.variant = int(static_channels), R, variant
        self.code_dim, self.slope = int(code_dim), float(slope)
        self.albedo_prior = bool(albedo_prior)
        if specular_channel and not albedo_prior:
            raise ValueError("specular_channel needs albedo_prior (without it the 3 outputs are already untinted)")
        self.specular_channel = bool(specular_channel)
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.light_head = bool(light_head)
        self.key_lights = int(key_lights)
        if not 0 <= self.key_lights <= 64:
            raise ValueError(f"key_lights must be 0 .. 64, got {key_lights}")
        if self.light_head:
            if not albedo_prior:
                raise ValueError("light_head needs albedo_prior (its diffuse terms are albedo x weight x feature)")
            if self.feature_names is None:
                raise ValueError("light_head needs feature_names (it picks the radiometric channels by name)")
            self.head_groups = light_head_groups(self.feature_names)
            if not (self.head_groups["diffuse"] or self.head_groups["specular"]):
                raise ValueError(f"light_head: no radiometric feature channels among {self.feature_names}")
        ch = [base * min(2 ** i, 4) for i in range(levels + 1)]
        self.channels = ch
        self.register_buffer("in_scale", torch.ones(1, in_channels, 1, 1))
        self.register_buffer("in_shift", torch.zeros(1, in_channels, 1, 1))
        if static_channels > 0:
            self.static = nn.Parameter(0.01 * torch.randn(1, static_channels, R, R))
        else:
            self.register_parameter("static", None)
        # conv3x3(cat(x, static)) == conv_x(x) + conv_s(static) (a convolution is linear in its
        # input channels): the static branch is computed once per call on [1, S, R, R] and
        # broadcast over the batch -- and in the ONNX export it is a folded constant.
        self.enc0 = _conv(in_channels, ch[0])
        self.enc0_static = nn.Conv2d(static_channels, ch[0], 3, padding=1, bias=False) if static_channels else None
        self.down = nn.ModuleList([_conv(ch[i - 1], ch[i], stride=2) for i in range(1, levels + 1)])
        self.enc = nn.ModuleList([_conv(ch[i], ch[i]) for i in range(1, levels + 1)])
        if variant == "bottleneck":
            self.code_mlp = nn.Sequential(nn.Linear(CODE_IN, code_dim), nn.LeakyReLU(slope),
                                          nn.Linear(code_dim, code_dim))
            self.code_merge = _conv(ch[levels], ch[levels])
            self.code_proj = nn.Linear(code_dim, ch[levels])
        self.up = nn.ModuleList([_conv(ch[i + 1], ch[i]) for i in range(levels)])
        self.merge = nn.ModuleList([_conv(2 * ch[i], ch[i]) for i in range(levels)])
        self.out = _conv(ch[0], 3)
        self.out_specular = _conv(ch[0], 1) if self.specular_channel else None
        if self.light_head:
            self._build_light_head(ch[0])
        if self.albedo_prior:  # filled by set_albedo (training) or from the weights file (loading)
            self.register_buffer("albedo", torch.full((1, 3, R, R), 0.4))
        else:
            self.albedo = None
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=self.slope, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.constant_(self.out.bias, math.log(math.expm1(0.05)))  # softplus(b) = 0.05
        if self.albedo is not None:
            self._init_out_bias()

    def _build_light_head(self, c0: int):
        """Fixed 1x1 selection / expansion / summation convolutions (non-persistent buffers, derived
        from the feature names) and the learned weight convolution (module docstring)."""
        gd, gs = self.head_groups["diffuse"], self.head_groups["specular"]
        names = self.feature_names
        nd, ns = len(gd), len(gs)
        # two convolutions, not one sliced in two: the graph keeps to Conv (no Slice)
        self.head_diffuse = _conv(c0, 3 * nd) if nd else None
        self.head_specular = _conv(c0, ns) if ns else None

        def pick(groups):  # [3G, C, 1, 1]: rows = (group, colour), picks that feature channel
            w = torch.zeros(3 * len(groups), len(names), 1, 1)
            for g, prefix in enumerate(groups):
                for k, c in enumerate("rgb"):
                    w[3 * g + k, names.index(f"{prefix}_{c}"), 0, 0] = 1.0
            return w

        def colour_sum(n):  # [3, 3n, 1, 1]: sums the n groups of each colour
            w = torch.zeros(3, 3 * n, 1, 1)
            for g in range(n):
                for k in range(3):
                    w[k, 3 * g + k, 0, 0] = 1.0
            return w

        expand = torch.zeros(3 * ns, ns, 1, 1)  # one grey weight per specular lobe -> r, g, b
        for g in range(ns):
            expand[3 * g:3 * g + 3, g, 0, 0] = 1.0
        self.register_buffer("head_pick_diffuse", pick(gd), persistent=False)
        self.register_buffer("head_sum_diffuse", colour_sum(nd), persistent=False)
        self.register_buffer("head_pick_specular", pick(gs), persistent=False)
        self.register_buffer("head_expand_specular", expand, persistent=False)
        self.register_buffer("head_sum_specular", colour_sum(ns), persistent=False)

    def _init_light_head(self):
        """Start as a Lambertian x albedo skin with a faint specular: diffuse_vis (or, for the novis
        variant, diffuse_novis) weighted 1/pi, every other diffuse-like group 0.02 / pi, each specular
        lobe 0.01; and the residual term of ``out`` near 0 (0.002 of the average light)."""
        gd, gs = self.head_groups["diffuse"], self.head_groups["specular"]
        main = "diffuse_vis" if "diffuse_vis" in gd else (gd[0] if gd else None)
        with torch.no_grad():
            for conv, bias in ((self.head_diffuse, [(1.0 if g == main else 0.02) / math.pi for g in gd for _ in "rgb"]),
                               (self.head_specular, [0.01] * len(gs))):
                if conv is not None:
                    nn.init.normal_(conv.weight, std=1e-3)
                    conv.bias.copy_(torch.tensor([math.log(math.expm1(b)) for b in bias]))
        nn.init.constant_(self.out.bias, math.log(math.expm1(0.002)))

    def _light_head(self, d: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """sum_g w_g(x) * A(x) * F_g(x) over diffuse-like groups (per-colour weights) + sum_l
        w_l(x) * F_l(x) over specular lobes (grey weights); F are the raw (energy-normalised)
        feature maps, so the output stays linear in each light's contribution for fixed weights."""
        out = None
        if self.head_diffuse is not None:
            w = F.softplus(self.head_diffuse(d))
            diff = F.conv2d(w * F.conv2d(maps, self.head_pick_diffuse.to(maps.dtype)),
                            self.head_sum_diffuse.to(maps.dtype))
            out = diff * self.albedo.to(maps.dtype)
        if self.head_specular is not None:
            w = F.softplus(self.head_specular(d))
            spec = F.conv2d(F.conv2d(w, self.head_expand_specular.to(maps.dtype))
                            * F.conv2d(maps, self.head_pick_specular.to(maps.dtype)),
                            self.head_sum_specular.to(maps.dtype))
            out = spec if out is None else out + spec
        return out

    def _init_out_bias(self):
        """softplus(b) * mean albedo = 0.05 (the untrained prediction of the module docstring)."""
        if self.albedo.is_meta:  # shapes-only build (load_student checks a file against it)
            return
        if self.light_head:
            self._init_light_head()
            return
        m = float(self.albedo.mean().clamp_min(1e-3))
        nn.init.constant_(self.out.bias, math.log(math.expm1(0.05 / m)))
        if self.out_specular is not None:  # the grey channel starts near 0: 0.002 of the ~0.05 prediction
            nn.init.normal_(self.out_specular.weight, std=1e-3)
            nn.init.constant_(self.out_specular.bias, math.log(math.expm1(0.002)))

    def set_albedo(self, albedo, init_bias: bool = True):
        """The albedo prior ``[3, R, R]`` (linear, :meth:`HandAsset.albedo_map`); with ``init_bias``
        (before training) re-initialises the output bias so the untrained prediction stays ~0.05;
        ``init_bias=False`` swaps the albedo of a trained model (a person on the same layout)."""
        if self.albedo is None:
            raise ValueError("this student was built without albedo_prior")
        a = torch.as_tensor(albedo, dtype=torch.float32).reshape(1, 3, self.resolution, self.resolution)
        self.albedo.copy_(a)
        if init_bias:
            self._init_out_bias()

    @property
    def code_in(self) -> int:
        return CODE_IN if self.variant == "bottleneck" else 0

    def set_input_normalisation(self, mean, std):
        """Inputs become ``(x - mean) / std`` per channel (std clamped >= 1e-3)."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(1, -1, 1, 1).clamp_min(1e-3)
        self.in_scale.copy_(1.0 / std)
        self.in_shift.copy_(-mean / std)

    def forward(self, maps: torch.Tensor, env_code: Optional[torch.Tensor] = None) -> torch.Tensor:
        a = self.slope
        x = self.enc0(maps * self.in_scale + self.in_shift)
        if self.static is not None:
            x = x + self.enc0_static(self.static.to(x.dtype))                 # [1, c0, R, R] broadcast
        e = [F.leaky_relu(x, a)]
        for down, conv in zip(self.down, self.enc):
            y = F.leaky_relu(down(e[-1]), a)
            e.append(F.leaky_relu(conv(y), a))
        d = e[-1]
        if self.variant == "bottleneck":
            if env_code is None:
                raise ValueError("the bottleneck student needs env_code [B, %d]" % CODE_IN)
            c = self.code_proj(self.code_mlp(env_code.to(d.dtype)))          # [B, c_L]
            # == a 1x1 convolution over cat(d, code tiled over the grid); broadcast, no Expand
            d = F.leaky_relu(self.code_merge(d) + c[:, :, None, None], a)
        for i in reversed(range(self.levels)):
            d = F.interpolate(d, scale_factor=2.0, mode="nearest")
            d = F.leaky_relu(self.up[i](d), a)
            d = F.leaky_relu(self.merge[i](torch.cat([d, e[i]], 1)), a)
        out = F.softplus(self.out(d))
        if self.albedo is None:
            return out
        out = out * self.albedo.to(out.dtype)
        if self.light_head:
            out = out + self._light_head(d, maps)
        return out + F.softplus(self.out_specular(d)) if self.out_specular is not None else out

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "base": self.base, "levels": self.levels,
                "static_channels": self.static_channels, "resolution": self.resolution,
                "variant": self.variant, "code_dim": self.code_dim, "slope": self.slope,
                "feature_names": self.feature_names, "albedo_prior": self.albedo_prior,
                **({"specular_channel": True} if self.specular_channel else {}),
                **({"light_head": True} if self.light_head else {}),
                **({"key_lights": self.key_lights} if self.key_lights else {})}

    @classmethod
    def for_variant(cls, variant: str, resolution: int = 256, available=FEATURE_NAMES, **kw) -> "StudentNet":
        """A fresh network for ``variant`` reading the channels of ``available``."""
        names = variant_feature_names(variant, available)
        return cls(len(names), resolution=resolution, variant=variant, feature_names=names, **kw)


# ------------------------------------------------------------------------------ files

_LAYOUTS: dict = {}


def shipped_layout_name(asset) -> Optional[str]:
    """The shipped asset (``'hand'``, ``'hand_v2'``, ...: a folder of ``relit_hands/models`` with a
    ``right_hand.npz``) whose UV layout and topology ``asset`` (a :class:`~relit_hands.hand_model.HandAsset`)
    shares -- itself, or the asset a personalised hand was fitted from; None if none."""
    from . import models  # noqa: F401
    from .hand_model import HandAsset, asset_reference, layout_id

    root = Path(models.__file__).resolve().parent
    ref = asset_reference(getattr(asset, "source", None) or None)
    names = sorted(p.parent.name for p in root.glob("*/right_hand.npz"))
    if ref in names:
        return ref
    mine = layout_id(asset)
    for name in names:
        if name not in _LAYOUTS:
            _LAYOUTS[name] = layout_id(HandAsset.load(root / name / "right_hand.npz"))
        if _LAYOUTS[name] == mine:
            return name
    return None


def render_asset_path(asset=None, student=None) -> Optional[Path]:
    """The hand asset to render a student with: ``asset`` (a shipped name such as 'hand_v2', an
    asset folder or its npz) when given, else the asset ``student`` (a weights path) was trained on
    (its metadata's 'asset'), else None (the shipped default). A student file that cannot be read
    is a :class:`StudentLoadError` naming it."""
    from .hand_model import asset_path

    if asset:
        return asset_path(asset)
    if student:
        ref = read_student_meta(student).get("asset")
        return asset_path(ref if isinstance(ref, str) else None)
    return None


def default_student_path(variant: str = "vis", asset=None) -> Path:
    """Where a shipped model lives: ``relit_hands/models/student/student.safetensors`` for the
    default 'vis' student, ``student_{novis,bottleneck}.safetensors`` for the ablations (made by
    ``relit-hands train-student --variant V ... --install-default``). Those are for the default
    asset 'hand'; with ``asset`` (a :class:`~relit_hands.hand_model.HandAsset`) on another shipped
    layout NAME (:func:`shipped_layout_name`: hand_v2, or a person fitted from it) the file is
    ``student[_{variant}]_NAME.safetensors``."""
    from . import models  # noqa: F401

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    stem = "student" if variant == "vis" else f"student_{variant}"
    base = shipped_layout_name(asset) if asset is not None else None
    if base and base != "hand":
        stem += f"_{base}"
    return Path(models.__file__).resolve().parent / "student" / f"{stem}.safetensors"


def model_meta(model: StudentNet, **extra) -> dict:
    meta = {"format": "relit_hands.student", "format_version": FORMAT_VERSION, **model.config(),
            "feature_source": variant_feature_source(model.variant), "code_in": model.code_in,
            "output": "linear RGB radiance / energy (multiply by the features' energy [3])"}
    meta["input_normalisation"] = {"scale": model.in_scale.flatten().tolist(),
                                   "shift": model.in_shift.flatten().tolist()}
    meta.update(extra)
    return meta


def save_student(path, model: StudentNet, meta: Optional[dict] = None) -> Path:
    """Write ``model`` (its state dict, float32) and JSON metadata to a safetensors file.
    Written to a temporary file first and renamed, so a crash never leaves half a model."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = model_meta(model, **(meta or {}))
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(full)})
    tmp.replace(path)
    return path


def read_student_meta(path) -> dict:
    """The JSON metadata of a student file (no tensors loaded)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise StudentLoadError(f"{path}: student weights file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise StudentLoadError(f"{path}: not a readable safetensors file (corrupt or truncated?): {e}") from None
    if META_KEY not in header:
        raise StudentLoadError(f"{path}: safetensors file without relit-hands student metadata "
                               f"(was it written by save_student?)")
    from .validation import InputFileError, parse_json_text

    try:
        meta = parse_json_text(header[META_KEY], f"{path}: student metadata")
    except InputFileError as e:
        raise StudentLoadError(str(e)) from None
    if not isinstance(meta, dict) or meta.get("format") != "relit_hands.student":
        fmt = meta.get("format") if isinstance(meta, dict) else meta
        raise StudentLoadError(f"{path}: metadata format {str(fmt)[:40]!r} is not a relit-hands student")
    version = meta.get("format_version", -1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise StudentLoadError(f"{path}: student metadata format_version {str(version)[:20]!r} is not an integer")
    if version > FORMAT_VERSION:
        raise StudentLoadError(f"{path}: student format version {meta.get('format_version')} is newer than "
                               f"this relit-hands ({FORMAT_VERSION}); upgrade the package")
    return meta


# Bounds on the architecture a weights file's metadata may ask for (checked before anything is
# built; the tensor shapes must then match the file's own before real memory is allocated).
META_BOUNDS = {"in_channels": (1, 512), "base": (1, 512), "levels": (1, 8), "static_channels": (0, 256),
               "resolution": (16, 4096), "code_dim": (1, 4096)}


def check_student_meta(meta: dict, path) -> dict:
    """The constructor arguments from a student file's metadata, each an int within
    :data:`META_BOUNDS` (variant one of VARIANTS); :class:`StudentLoadError` naming the file."""
    kw = {}
    for k, (lo, hi) in META_BOUNDS.items():
        if k not in meta:
            raise StudentLoadError(f"{path}: student metadata lacks {k!r}")
        v = meta[k]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise StudentLoadError(f"{path}: student metadata {k}={v!r} is outside {lo} .. {hi}")
        kw[k] = v
    if meta.get("variant") not in VARIANTS:
        raise StudentLoadError(f"{path}: student metadata variant {meta.get('variant')!r} is not one of {VARIANTS}")
    kw["variant"] = meta["variant"]
    names = meta.get("feature_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                              or len(names) > 512):
        raise StudentLoadError(f"{path}: student metadata feature_names must be a list of names")
    kl = meta.get("key_lights", 0)
    if isinstance(kl, bool) or not isinstance(kl, int) or not 0 <= kl <= 64:
        raise StudentLoadError(f"{path}: student metadata key_lights={kl!r} is outside 0 .. 64")
    slope = meta.get("slope", 0.2)
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope <= 1:
        raise StudentLoadError(f"{path}: student metadata slope={slope!r} is outside 0 .. 1")
    return kw


def check_file_shapes(path, shapes: dict, error, what: str) -> None:
    """Compare a network's expected tensor ``shapes`` {name: shape} with a safetensors file's header
    (no tensor data is read); raise ``error`` naming the file on any difference."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types
        raise error(f"{path}: not a readable safetensors file (corrupt or truncated?): {e}") from None
    missing = sorted(set(shapes) - set(have))
    unexpected = sorted(set(have) - set(shapes))
    bad = [f"{k} {have[k]} != {v}" for k, v in shapes.items() if k in have and have[k] != v]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if bad:
            parts.append(f"wrong shapes {bad[:3]}")
        raise error(f"{path}: weights do not match {what}: " + "; ".join(parts))


def load_student(path, device="cpu") -> tuple[StudentNet, dict]:
    """``(model in eval mode, metadata)`` from a file written by :func:`save_student`.

    Raises :class:`StudentLoadError` naming the file if it is missing, not safetensors, lacks the
    metadata, or its tensors do not fit the architecture the metadata describes."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_student_meta(path)
    kw = check_student_meta(meta, path)

    def build():
        return StudentNet(**kw, feature_names=meta.get("feature_names"), slope=meta.get("slope", 0.2),
                          albedo_prior=bool(meta.get("albedo_prior", False)),
                          specular_channel=bool(meta.get("specular_channel", False)),
                          light_head=bool(meta.get("light_head", False)), key_lights=int(meta.get("key_lights", 0)))

    try:
        with torch.device("meta"):  # shapes only: nothing is allocated before they match the file
            shapes = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except (KeyError, TypeError, ValueError) as e:
        raise StudentLoadError(f"{path}: student metadata does not describe a valid network ({e})") from None
    check_file_shapes(path, shapes, StudentLoadError, f"the {kw['variant']} student its metadata describes")
    try:
        model = build()
    except (KeyError, TypeError, ValueError) as e:
        raise StudentLoadError(f"{path}: student metadata does not describe a valid network ({e})") from None
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise StudentLoadError(f"{path}: cannot read the weights (corrupt or truncated?): {e}") from None
    # (names and shapes were checked against the file's header above)
    for k, t in tensors.items():
        if not torch.isfinite(t).all():
            raise StudentLoadError(f"{path}: tensor {k!r} contains NaN or infinite values")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta
