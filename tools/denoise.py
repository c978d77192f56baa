r"""Denoised light-stage images for TRAINING (never for evaluation references).

The light stage's OLAT images are Monte-Carlo path traced at 64 spp on the CPU machines; their
noise caps what the teacher can learn from them (README: the held-out OLAT PSNR of an untrained
teacher is already at the noise floor). Intel Open Image Denoise (OIDN, through ``pyoidn``) removes
most of that noise. Its ``RT`` filter (HDR mode) takes two optional *guides* that make it keep
texture and geometric detail instead of blurring it:

* ``albedo`` [H, W, 3] in [0, 1]: the asset's LINEAR albedo texture seen through the view's lookup
  (the skin's diffuse reflectance the path tracer was given, :meth:`HandAsset.albedo_map`);
* ``normal`` [H, W, 3] in [-1, 1]: the posed mesh's interpolated shading normal, world frame.

Both come from the engine's own rasterisation of the same pose and camera
(:class:`relit_hands.tools.teacher_training.ViewLookup`), so they are noise-free
(``clean_aux=True``) and aligned with the capture to the pixel-centre rule. Pixels off the hands
get a zero albedo and normal, which OIDN reads as "no surface here".

Evaluation references are never denoised: a denoiser's bias would move the bar every renderer is
measured against. ``relit-hands eval`` has no option that does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["denoise_image", "view_guides", "denoiser_available"]


def denoiser_available() -> bool:
    try:
        import pyoidn  # noqa: F401
    except ImportError:
        return False
    return True


def _pyoidn():
    try:
        import pyoidn
    except ImportError:
        raise RuntimeError("denoising needs Intel Open Image Denoise: pip install 'relit-hands[train]' "
                           "(or pip install 'pyoidn>=2.4,<3')") from None
    return pyoidn


def view_guides(lookup, albedo: torch.Tensor, normals: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free OIDN guides of one view.

    ``lookup``: the view's :class:`ViewLookup` (hand pixels, hand index, UV grid);
    ``albedo`` [3, R, R] linear albedo texture (shared by both hands, mirrored layout);
    ``normals`` [Hh, 3, R, R] per-hand unit normals in UV space (world frame; e.g.
    :attr:`PoseGeometry.normal`). Returns ``(albedo [H, W, 3] in [0, 1], normal [H, W, 3] in
    [-1, 1])`` float32, zeros off the hands."""
    from .teacher_training import project_image

    Hh = normals.shape[0]
    a = project_image(albedo[None].expand(Hh, -1, -1, -1).float(), lookup).clamp(0.0, 1.0)
    n = project_image(normals.float(), lookup)
    n = torch.nn.functional.normalize(n, dim=-1)
    return a.numpy().astype(np.float32), n.numpy().astype(np.float32)


def denoise_image(image: np.ndarray, albedo: np.ndarray | None = None, normal: np.ndarray | None = None,
                  *, quality: str = "high") -> np.ndarray:
    """OIDN ``RT`` filter on a linear HDR image [H, W, 3] (radiance >= 0). ``albedo`` / ``normal``:
    optional noise-free guides of the same shape (see :func:`view_guides`). Returns float32
    [H, W, 3]; negative or non-finite inputs are rejected (a NaN would spread over the image)."""
    img = np.ascontiguousarray(np.asarray(image, np.float32)[..., :3])
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"denoise_image: expected an [H, W, 3] image, got shape {np.shape(image)}")
    if not np.isfinite(img).all():
        raise ValueError("denoise_image: the image holds NaN or infinite values")
    img = np.maximum(img, 0.0)
    guides = {}
    for name, g in (("albedo", albedo), ("normal", normal)):
        if g is not None:
            g = np.ascontiguousarray(np.asarray(g, np.float32))
            if g.shape != img.shape:
                raise ValueError(f"denoise_image: {name} guide {g.shape} does not match the image {img.shape}")
            guides[name] = g
    if "normal" in guides and "albedo" not in guides:
        raise ValueError("denoise_image: OIDN takes a normal guide only together with an albedo guide")
    out = _pyoidn().denoise(img, guides.get("albedo"), guides.get("normal"), hdr=True,
                            clean_aux=bool(guides), quality=quality)
    return np.maximum(np.asarray(out, np.float32), 0.0)


def measure(capture, reference, out=None) -> dict:
    """How much closer denoising brings a capture's views to a higher-spp render of the same frames
    and cameras (``reference``: e.g. ``lightstage --spp 1024`` of a few frames, another sample
    stream). Hand pixels (eroded reference mask), linear PSNR with peak = P99.5 of each reference
    view; rows for the raw image, OIDN without guides and OIDN with the guides. ``out``: JSON path."""
    import json

    from relit_hands.tools.capture import Capture
    from relit_hands.engine import Engine
    from .eval_metrics import psnr_linear
    from .evaluate import capture_engine_kwargs
    from .teacher_inputs import TexelConditioning
    from .teacher_training import erode, view_lookup

    lo = Capture.load(capture, check_files=False)
    hi = Capture.load(reference, check_files=False)
    eng = Engine(**capture_engine_kwargs(lo))
    tc = TexelConditioning(eng, 256)
    albedo = eng.asset.albedo_map(256)
    frames = {f.id: f for f in lo.frames}
    rows = []
    for f in hi.frames:
        if f.id not in frames:
            continue
        for c in f.images:
            mine = frames[f.id].images.get(c)
            if not Path(f.images[c]).is_file() or mine is None or not Path(mine).is_file():
                continue
            ref, raw = hi.image(f, c), lo.image(frames[f.id], c)
            m = erode(hi.mask(f, c)) > 0
            a, n = view_guides(view_lookup(eng, f.scene, lo.cameras[c]), albedo, tc.geometry(f.scene).normal)
            peak = float(np.percentile(ref[m], 99.5))
            row = {"frame": f.id, "camera": c}
            for k, im in (("raw", raw), ("oidn", denoise_image(raw)), ("oidn_guided", denoise_image(raw, a, n))):
                row[k] = round(psnr_linear(ref, im, m, peak), 3)
            rows.append(row)
    if not rows:
        raise ValueError(f"{reference}: no view that {capture} also has")
    res = {"capture": str(capture), "reference": str(reference), "views": len(rows),
           "spp": {"capture": lo.generator.get("spp"), "reference": hi.generator.get("spp")},
           "psnr_mean_db": {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("raw", "oidn", "oidn_guided")},
           "per_view": rows}
    if out:
        from relit_hands.validation import write_text_atomic

        write_text_atomic(out, json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":  # python -m relit_hands.tools.denoise CAPTURE REFERENCE [OUT.json]
    import sys

    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m relit_hands.tools.denoise CAPTURE HIGH_SPP_REFERENCE [OUT.json]")
    r = measure(*sys.argv[1:])
    print({k: r[k] for k in ("views", "spp", "psnr_mean_db")})
