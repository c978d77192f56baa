"""One device, every backend resolved for it: the engine's single place for backend choice.

    from relit_hands.backends import resolve_device, resolve, availability
    dev = resolve_device("auto")                      # cuda when usable, else cpu
    resolve("raycast", "auto", dev)                   # 'embree' on the CPU machine, 'triton' on CUDA
    availability("compositor", dev)                   # {'gl': True, 'nvdiffrast': 'needs a CUDA device'}

Three kinds of backend, each behind its own small interface:

* ``raycast`` -- proxy visibility (:mod:`.raycast`): 'embree' (CPU), 'grid' (torch, any device),
  'torch' (the brute-force reference, any device), 'triton' (CUDA kernels);
* ``inference`` -- the student network (:mod:`.inference`): 'torch', 'onnxruntime', 'tensorrt';
* ``compositor`` -- the last stage (:mod:`.compositing`): 'gl', 'nvdiffrast' (CUDA).

A backend that would run on another device than the engine's (Embree on a CUDA engine) counts
as unavailable for it: a frame never crosses between host and device except where
:func:`relit_hands.compositing.to_host` does it. :func:`resolve` raises :class:`BackendUnavailable`
with the reason when a named backend cannot serve the device; 'auto' takes the first available
of :data:`PREFERENCE`.
"""
from __future__ import annotations

import torch

__all__ = ["KINDS", "PREFERENCE", "BackendUnavailable", "resolve_device", "availability", "resolve", "report"]

KINDS = ("raycast", "inference", "compositor")

# 'auto' = the first available, per device type
PREFERENCE = {
    "raycast": {"cuda": ("triton", "torch"), "cpu": ("embree", "grid", "torch")},
    "inference": {"cuda": ("tensorrt", "torch"), "cpu": ("onnxruntime", "torch")},
    "compositor": {"cuda": ("nvdiffrast", "gl"), "cpu": ("gl",)},
}


class BackendUnavailable(ValueError):
    """A named backend cannot serve the engine's device; the message says why."""


def resolve_device(device="auto") -> torch.device:
    """'auto' -> CUDA when a device is usable, else the CPU; 'cuda' without one is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {name!r}: no CUDA device is available (torch {torch.__version__})")
    if dev.type not in ("cpu", "cuda"):
        raise BackendUnavailable(f"device {name!r}: the engine runs on 'cpu' or 'cuda'")
    return dev


def _raycast(dev: torch.device) -> dict:
    from . import raycast

    cuda = dev.type == "cuda"
    out = {"torch": True, "grid": True}
    if cuda:
        out["embree"] = "a CPU ray caster (the engine's device is CUDA)"
    else:
        out["embree"] = True if raycast.EmbreeRayCaster.is_available() else "embreex not installed"
    if not cuda:
        out["triton"] = "needs a CUDA device (tests run its kernels with TRITON_INTERPRET=1)"
    else:
        out["triton"] = True if raycast._triton_importable() else "triton not importable"
    return out


def _inference(dev: torch.device) -> dict:
    from . import inference

    have = inference.available_backends()
    out = {"torch": True, "onnxruntime": have.get("onnxruntime", "onnxruntime not installed")}
    out["tensorrt"] = "needs a CUDA device" if dev.type != "cuda" else have.get("tensorrt", "tensorrt not installed")
    return out


def availability(kind: str, device) -> dict:
    """{backend name: True, or one line saying why it cannot serve ``device``}."""
    dev = torch.device(device)
    if kind == "raycast":
        return _raycast(dev)
    if kind == "inference":
        return _inference(dev)
    if kind == "compositor":
        from .compositing import compositor_availability

        return compositor_availability(dev)
    raise ValueError(f"backend kind must be one of {KINDS}, got {kind!r}")


def resolve(kind: str, name: str, device) -> str:
    """The backend of ``kind`` that serves ``device``: ``name`` itself when it can (else
    :class:`BackendUnavailable` with the reason), or for 'auto' the first available of
    :data:`PREFERENCE`."""
    dev = torch.device(device)
    avail = availability(kind, dev)
    if name == "auto":
        for cand in PREFERENCE[kind][dev.type]:
            if avail.get(cand) is True:
                return cand
        raise BackendUnavailable(f"no {kind} backend serves {dev}: "
                                 + "; ".join(f"{k}: {v}" for k, v in avail.items() if v is not True))
    if name not in avail:
        raise BackendUnavailable(f"unknown {kind} backend {name!r}; known: {sorted(avail)} or 'auto'")
    if avail[name] is not True:
        raise BackendUnavailable(f"{kind} backend {name!r} cannot run on {dev}: {avail[name]}")
    return name


def report(device="auto") -> dict:
    """{kind: {name: True or why not}} for ``device`` (what ``relit-hands info`` prints)."""
    dev = resolve_device(device)
    return {"device": str(dev), **{k: availability(k, dev) for k in KINDS}}
