"""Headless OpenGL context creation and the small GL helpers the compositor's modules share.

:func:`create_headless_context` makes a standalone moderngl context on EGL (after
:func:`preload_triton`, see there why); :func:`load_shader` reads the package's GLSL with
``#include`` expanded; ``_gl_current`` runs a method with its object's context current and GL state
restored; ``_mat_bytes`` / ``_check_image`` convert and check arrays for upload.
"""
from __future__ import annotations

import functools
import importlib.resources
import re

import numpy as np

from .gl_state import made_current

_EGL_HELP = (
    "Could not create a headless OpenGL context through EGL ({err}).\n"
    "The compositor needs OpenGL >= 3.3 via EGL. On Debian/Ubuntu install the EGL loader and\n"
    "Mesa drivers:   sudo apt-get install libegl1 libgl1-mesa-dri   (plus `pip install moderngl\n"
    "glcontext`). Check with:\n"
    "    python -c \"import moderngl; print(moderngl.create_context(standalone=True, "
    "backend='egl').info['GL_RENDERER'])\"\n"
    "(prints e.g. 'llvmpipe (LLVM ...)' on CPU or your GPU's name). On NVIDIA machines make sure "
    "libEGL_nvidia is installed with the driver. Alternatively pass an existing context: "
    "Compositor(ctx=...)."
)


def preload_triton() -> None:
    """Import Triton (if installed) before an OpenGL driver loads Mesa's LLVM.

    Mesa's llvmpipe and Triton each bring their own LLVM. If Mesa's is loaded first (any
    OpenGL context on a CPU machine), a later ``import triton`` -- which PyTorch itself does
    lazily, e.g. when a ``torch.optim`` optimiser is created -- crashes the process with a
    segmentation fault. Loaded in the other order they coexist, so every context this package
    creates (here and in the viewer) calls this first. Without Triton installed it does nothing.
    """
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        try:
            import triton  # noqa: F401
        except Exception:  # noqa: BLE001 - a broken triton must not stop rendering
            pass


def create_headless_context(require: int = 330):
    """A standalone moderngl context on EGL; RuntimeError with install hints if impossible."""
    preload_triton()
    try:
        import moderngl
    except ImportError as exc:  # pragma: no cover - moderngl is a hard dependency
        raise RuntimeError("moderngl is not installed: pip install moderngl glcontext") from exc
    try:
        return moderngl.create_context(standalone=True, backend="egl", require=require)
    except Exception as exc:  # noqa: BLE001 - glcontext raises various types
        raise RuntimeError(_EGL_HELP.format(err=f"{type(exc).__name__}: {exc}")) from exc


_SHADER_CACHE: dict[str, str] = {}


def load_shader(name: str) -> str:
    """GLSL source from the ``relit_hands.shaders`` package, with ``#include "x"`` expanded."""
    src = _SHADER_CACHE.get(name)
    if src is None:
        src = importlib.resources.files("relit_hands.shaders").joinpath(name).read_text(encoding="utf-8")
        src = re.sub(r'^\s*#include\s+"([^"]+)"\s*$', lambda m: load_shader(m.group(1)), src, flags=re.M)
        _SHADER_CACHE[name] = src
    return src


def _gl_current(method):
    """Run a method with ``self.ctx`` made current (and the previous context restored), so
    several contexts (tests, a viewer window plus a headless renderer) can coexist, and with the
    context's GL state restored afterwards (:class:`~relit_hands.gl_state.GLStateGuard`), so a host
    application sharing its context finds its framebuffer, viewport and flags as it left them."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with made_current(self.ctx), self._gl_state.preserved():
            return method(self, *args, **kwargs)
    return wrapper


def _mat_bytes(m) -> bytes:
    """Row-major numpy matrix -> column-major float32 bytes for GLSL."""
    return np.ascontiguousarray(np.asarray(m, dtype=np.float32).T).tobytes()


def _check_image(name, img, channels=3) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != channels:
        raise ValueError(f"{name} must be an [H, W, {channels}] image, got shape {a.shape}")
    return a
