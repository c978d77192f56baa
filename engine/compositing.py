"""The compositor interface: the last stage of a frame, with two backends behind it.

A compositor draws the posed hands, each carrying its UV radiance texture (the student's output),
over the environment, for a batch of cameras (mono: one; stereo: the eye pair)::

    compositor.attach_hands(models, asset_textures)          # once: each hand's render mesh
    views = compositor.composite_textures(sides, vertices, textures, env, cameras, timer=timer)

Backends ('gl', 'nvdiffrast'; :func:`relit_hands.backends.resolve` picks one for a device):

* ``'gl'`` -- :class:`relit_hands.compositor.Compositor`: OpenGL 3.3 through moderngl, on a headless
  EGL context or the host application's own (the viewer's, a VR frame loop's). Runs on every
  machine (Mesa llvmpipe without a GPU), draws into host framebuffers, and is also the PBR
  baseline's renderer. The textures cross to the host once per frame (:func:`to_host`) and are
  uploaded to GL.
* ``'nvdiffrast'`` -- :class:`relit_hands.compositor_nvdiffrast.NvdiffrastCompositor`: CUDA only.
  nvdiffrast rasterises every camera in one batched call; textures and images stay on the
  device (nothing crosses to the host unless an image is read back).

Every copy of frame data from the compute device to the host goes through :func:`to_host`, the
one place that may copy; :data:`TRANSFERS` counts its calls (a test checks the count per frame).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["HandCompositor", "TRANSFERS", "to_host", "to_host_together", "compositor_availability"]


class _TransferCounter:
    """Calls of :func:`to_host` (``count``) and the bytes they moved off a non-CPU device."""

    def __init__(self):
        self.count = 0
        self.device_bytes = 0

    def reset(self):
        self.count = 0
        self.device_bytes = 0


TRANSFERS = _TransferCounter()


def to_host(x: torch.Tensor) -> torch.Tensor:
    """``x`` on the CPU (a no-op for a CPU tensor), counted in :data:`TRANSFERS`."""
    TRANSFERS.count += 1
    if x.device.type != "cpu":
        TRANSFERS.device_bytes += x.numel() * x.element_size()
    return x.detach().cpu()


def to_host_together(tensors: list) -> list:
    """``tensors`` on the CPU in ONE counted copy (:func:`to_host`): unchanged when they are
    already there, else flattened into one device buffer, copied once and split back (same shapes,
    float32)."""
    if all(t.device.type == "cpu" for t in tensors):
        to_host(tensors[0])  # no copy: counted as the frame's one hand-off
        return [t.detach() for t in tensors]
    flat = to_host(torch.cat([t.detach().float().reshape(-1) for t in tensors]))
    return [p.reshape(t.shape) for p, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def compositor_availability(device) -> dict:
    """{name: True or why that compositor cannot serve ``device`` (one line)}."""
    dev = torch.device(device)
    out = {"gl": True}
    if dev.type != "cuda":
        out["nvdiffrast"] = "needs a CUDA device"
    elif not torch.cuda.is_available():
        out["nvdiffrast"] = "no CUDA device"
    else:
        try:
            import nvdiffrast.torch  # noqa: F401
            out["nvdiffrast"] = True
        except Exception as e:  # noqa: BLE001 - a compiled extension fails in many ways
            out["nvdiffrast"] = f"nvdiffrast not importable ({type(e).__name__}: {e})"
    return out


class HandCompositor(ABC):
    """What :class:`~relit_hands.engine.Engine` needs from a compositor.

    ``name``: the backend's name; ``student_stages``: the stage names of a student frame through
    it (:mod:`.stages`)."""

    name: str
    student_stages: tuple

    @abstractmethod
    def attach_hands(self, models: dict, textures: dict) -> None:
        """Register both hands' render meshes: ``models`` {side: HandModel} (topology, UVs; the left
        hand mirrors the right), ``textures`` the asset's albedo / normal_map / roughness uint8
        [R, R, 3] (the PBR shading's; a backend that draws only radiance textures may ignore them)."""

    @abstractmethod
    def composite_textures(self, sides: list, vertices: dict, textures: torch.Tensor, env, cameras: list, *,
                           exposure_ev: float = 0.0, tonemap: str = "aces", background: str = "env",
                           return_linear: bool = False, readback: str | None = None, targets=None,
                           timer=None) -> list:
        """Draw hands ``sides`` (posed render vertices ``vertices`` {side: [V, 3] float32, metres,
        world, on the engine's device}; ``textures`` [len(sides), R, R, 3] float32 linear HDR
        radiance, same device) over ``env`` for each of ``cameras``.

        ``readback`` / ``targets`` / ``return_linear`` as in :meth:`Engine.render_student`. Marks the
        stages it runs on ``timer`` (a :class:`~relit_hands.stages.StageTimer`). Returns one dict per
        camera: 'rgb' (uint8 [H, W, 3|4] numpy or None), 'mask', 'hand_id' (numpy or None),
        'linear' (float32 [H, W, 3] or None), 'device_image' (uint8 [H, W, 3] tensor on the device
        or None), 'timings_ms' (that view's composite milliseconds and parts)."""
