"""Save and restore the OpenGL state the compositor changes, so it can draw inside a host's context.

A host application (a VR runtime's frame loop, a windowed viewer) that lends its moderngl context
to the :class:`~relit_hands.engine.Engine` expects its state back after every call. moderngl tracks
part of that state in Python (``ctx.fbo``; each framebuffer's viewport, scissor and write masks,
applied by ``Framebuffer.use()``) and cannot read the rest (the ``enable`` flags, the blend
function), and a host may set state with raw GL calls moderngl never sees. :class:`GLStateGuard`
therefore reads the *GL* state itself, through the context's own function loader
(``glGetIntegerv`` / ``glIsEnabled`` ...), and restores both GL and moderngl's bookkeeping.

Saved and restored by :meth:`GLStateGuard.preserved`:

* draw and read framebuffer bindings, and moderngl's ``ctx.fbo`` (Python and C side);
* viewport; scissor box and ``GL_SCISSOR_TEST``;
* ``GL_BLEND``, ``GL_DEPTH_TEST``, ``GL_CULL_FACE``, ``GL_RASTERIZER_DISCARD``,
  ``GL_PROGRAM_POINT_SIZE`` (through ``ctx.enable_only``, so moderngl's flag bookkeeping matches GL
  again) and ``GL_FRAMEBUFFER_SRGB``;
* blend function (source / destination, RGB and alpha), depth function, front face, depth write
  mask and the colour write mask of every draw buffer.

:func:`made_current` makes a context current for a block and then makes current again the EGL
context that was current before (glcontext's EGL backend, behind ``with ctx:``, leaves *no* context
current on exit, which would strand a headless host's context after every engine call).

Not restored: the bound program, vertex array, buffers, texture units 0-6 and the active texture
unit, pixel-store alignment. moderngl binds these on every draw and upload, so a moderngl host is
unaffected; a host drawing with raw GL calls rebinds its own objects before drawing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

import moderngl

__all__ = ["GLStateGuard", "made_current"]

GL_DRAW_FRAMEBUFFER_BINDING = 0x8CA6
GL_READ_FRAMEBUFFER_BINDING = 0x8CAA
GL_DRAW_FRAMEBUFFER = 0x8CA9
GL_READ_FRAMEBUFFER = 0x8CA8
GL_VIEWPORT = 0x0BA2
GL_SCISSOR_BOX = 0x0C10
GL_SCISSOR_TEST = 0x0C11
GL_FRAMEBUFFER_SRGB = 0x8DB9
GL_FRONT_FACE = 0x0B46
GL_CW = 0x0900
GL_DEPTH_FUNC = 0x0B74
GL_DEPTH_WRITEMASK = 0x0B72
GL_COLOR_WRITEMASK = 0x0C23
GL_MAX_DRAW_BUFFERS = 0x8824
GL_BLEND_SRC_RGB, GL_BLEND_DST_RGB, GL_BLEND_SRC_ALPHA, GL_BLEND_DST_ALPHA = 0x80C9, 0x80C8, 0x80CB, 0x80CA
# moderngl's enable_only flags and the GL capabilities they stand for
_MGL_FLAGS = ((moderngl.BLEND, 0x0BE2), (moderngl.DEPTH_TEST, 0x0B71), (moderngl.CULL_FACE, 0x0B44),
              (moderngl.RASTERIZER_DISCARD, 0x8C89), (moderngl.PROGRAM_POINT_SIZE, 0x8642))

_u, _i, _b = ctypes.c_uint, ctypes.c_int, ctypes.c_ubyte
_SIGNATURES = {  # name: (restype, argtypes)
    "glGetIntegerv": (None, (_u, ctypes.POINTER(_i))),
    "glGetBooleani_v": (None, (_u, _u, ctypes.POINTER(_b))),
    "glIsEnabled": (_b, (_u,)),
    "glEnable": (None, (_u,)),
    "glDisable": (None, (_u,)),
    "glBindFramebuffer": (None, (_u, _u)),
    "glViewport": (None, (_i, _i, _i, _i)),
    "glScissor": (None, (_i, _i, _i, _i)),
    "glDepthFunc": (None, (_u,)),
    "glDepthMask": (None, (_b,)),
    "glColorMaski": (None, (_u, _b, _b, _b, _b)),
    "glBlendFuncSeparate": (None, (_u, _u, _u, _u)),
}


EGL_DRAW, EGL_READ = 0x3059, 0x305A


@functools.lru_cache(maxsize=1)
def _egl():
    """libEGL's current-context entry points (the library glcontext's EGL backend loads)."""
    lib = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
    p = ctypes.c_void_p
    for name, res, args in (("eglGetCurrentContext", p, ()), ("eglGetCurrentDisplay", p, ()),
                            ("eglGetCurrentSurface", p, (ctypes.c_int,)),
                            ("eglMakeCurrent", ctypes.c_uint, (p, p, p, p))):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


@contextlib.contextmanager
def made_current(ctx):
    """``with ctx:`` for the block; afterwards the EGL context current before it (if any, and if
    ``ctx`` is an EGL context) is current again. Other backends keep moderngl's behaviour (a
    window context from ``moderngl.create_context()`` is never switched)."""
    egl = _egl() if type(ctx.mglo._context).__module__ == "egl" else None
    prev = None
    if egl is not None and egl.eglGetCurrentContext():
        prev = (egl.eglGetCurrentDisplay(), egl.eglGetCurrentSurface(EGL_DRAW),
                egl.eglGetCurrentSurface(EGL_READ), egl.eglGetCurrentContext())
    try:
        with ctx:
            yield
    finally:
        if prev is not None:
            egl.eglMakeCurrent(*prev)


class GLStateGuard:
    """Snapshot / restore of one moderngl context's GL state (module docstring: which state).

    ``GLStateGuard(ctx)`` loads the GL entry points once through the context's loader (the
    glcontext backend moderngl made it with, or the loader of ``moderngl.create_context()`` for a
    window); ``with guard.preserved(): ...`` runs the block and puts the state back, also when it
    raises. The context must be current (``with ctx:``) when the block starts and ends.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        loader = ctx.mglo._context  # the object moderngl itself loaded its GL functions from
        load = getattr(loader, "load_opengl_function", None) or loader.load
        self._gl = {}
        for name, (res, args) in _SIGNATURES.items():
            ptr = load(name)
            if not ptr:
                raise RuntimeError(f"OpenGL function {name} is not available in this context")
            self._gl[name] = ctypes.CFUNCTYPE(res, *args)(ptr)
        self._max_draw_buffers = self._ints(GL_MAX_DRAW_BUFFERS, 1)[0]

    def _ints(self, pname: int, n: int) -> list:
        buf = (_i * 16)()
        self._gl["glGetIntegerv"](pname, buf)
        return list(buf[:n])

    def save(self) -> dict:
        """The current state (GL values and moderngl's tracked framebuffer)."""
        gl = self._gl
        masks = []
        for i in range(self._max_draw_buffers):
            m = (_b * 4)()
            gl["glGetBooleani_v"](GL_COLOR_WRITEMASK, i, m)
            masks.append(tuple(m))
        depth_mask = (_i * 16)()
        gl["glGetIntegerv"](GL_DEPTH_WRITEMASK, depth_mask)
        return {
            "mgl_fbo": self.ctx.fbo, "mgl_fbo_c": self.ctx.mglo.fbo,
            "draw_fbo": self._ints(GL_DRAW_FRAMEBUFFER_BINDING, 1)[0],
            "read_fbo": self._ints(GL_READ_FRAMEBUFFER_BINDING, 1)[0],
            "viewport": self._ints(GL_VIEWPORT, 4), "scissor": self._ints(GL_SCISSOR_BOX, 4),
            "scissor_test": gl["glIsEnabled"](GL_SCISSOR_TEST),
            "srgb": gl["glIsEnabled"](GL_FRAMEBUFFER_SRGB),
            "flags": sum(f for f, cap in _MGL_FLAGS if gl["glIsEnabled"](cap)),
            "front_face": self._ints(GL_FRONT_FACE, 1)[0], "depth_func": self._ints(GL_DEPTH_FUNC, 1)[0], "depth_mask": depth_mask[0], "color_masks": masks,
            "blend": [self._ints(p, 1)[0] for p in (GL_BLEND_SRC_RGB, GL_BLEND_DST_RGB,
                                                   GL_BLEND_SRC_ALPHA, GL_BLEND_DST_ALPHA)],
        }

    def restore(self, s: dict) -> None:
        """Put back a :meth:`save` snapshot: moderngl's tracked framebuffer first, then GL."""
        gl = self._gl
        self.ctx.fbo = s["mgl_fbo"]
        self.ctx.mglo.fbo = s["mgl_fbo_c"]
        gl["glBindFramebuffer"](GL_DRAW_FRAMEBUFFER, s["draw_fbo"])
        gl["glBindFramebuffer"](GL_READ_FRAMEBUFFER, s["read_fbo"])
        gl["glViewport"](*s["viewport"])
        gl["glScissor"](*s["scissor"])
        for cap, on in ((GL_SCISSOR_TEST, s["scissor_test"]), (GL_FRAMEBUFFER_SRGB, s["srgb"])):
            gl["glEnable" if on else "glDisable"](cap)
        self.ctx.enable_only(s["flags"])
        self.ctx.front_face = "cw" if s["front_face"] == GL_CW else "ccw"  # GL and moderngl's tracked value
        gl["glDepthFunc"](s["depth_func"])
        gl["glDepthMask"](s["depth_mask"])
        for i, m in enumerate(s["color_masks"]):
            gl["glColorMaski"](i, *m)
        gl["glBlendFuncSeparate"](*s["blend"])

    @contextlib.contextmanager
    def preserved(self):
        """Run the ``with`` block and restore the state found at its start."""
        snapshot = self.save()
        try:
            yield
        finally:
            self.restore(snapshot)
