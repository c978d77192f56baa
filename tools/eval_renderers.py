"""Renderer registry of the evaluation harness (:mod:`relit_hands.tools.evaluate`): which renderers
``relit-hands eval`` can run (built-ins, ``--plugin`` modules, entry points) and what their factories get."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

# evaluate() reads it as relit_hands.tools.evaluate.ENGINE_KWARGS (the same dict): rebind it there.
ENGINE_KWARGS: dict = {}  # default Engine(**kwargs) of EvalContext (e.g. {"shadow_map_size": 2048})


class EvaluationError(ValueError):
    """A request the harness refuses: train-split frames, unknown renderers/frames/cameras, bad output."""


# ======================================================================================
# Renderer registry

Renderer = Callable[..., Any]


@dataclass
class RendererSpec:
    name: str
    factory: Callable[["EvalContext"], Renderer]
    description: str = ""


_REGISTRY: dict[str, RendererSpec] = {}
_ENTRY_POINTS_LOADED = False


def register_renderer(name: str, factory: Callable[["EvalContext"], Renderer], description: str = "", *,
                      overwrite: bool = False) -> None:
    """Make renderer ``name`` available to the harness. ``factory(ctx: EvalContext)`` returns the
    renderer callable ``(frame, camera, env) -> float32 [H, W, 3]`` linear radiance."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"renderer name must be a non-empty word, got {name!r}")
    if not callable(factory):
        raise ValueError(f"renderer {name!r}: factory must be callable")
    if name in _REGISTRY and not overwrite and _REGISTRY[name].factory is not factory:
        raise ValueError(f"renderer {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = RendererSpec(name, factory, description)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="relit_hands.renderers"):
            if ep.name not in _REGISTRY:
                try:
                    register_renderer(ep.name, ep.load(), f"entry point {ep.value}")
                except Exception as e:  # a broken plugin must not break the built-ins
                    print(f"relit-hands eval: warning: renderer plugin {ep.name!r} failed to load: {e}",
                          file=sys.stderr)
    except Exception:
        pass


def available_renderers() -> dict[str, str]:
    """{name: description} of every registered renderer (built-ins, plugins, entry points)."""
    _load_entry_points()
    return {n: s.description for n, s in _REGISTRY.items()}


def get_renderer_spec(name: str) -> RendererSpec:
    _load_entry_points()
    if name not in _REGISTRY:
        raise EvaluationError(f"unknown renderer {name!r}; available: {', '.join(_REGISTRY) or '(none)'}")
    return _REGISTRY[name]


class EvalContext:
    """What a renderer factory gets: the ``capture`` and one shared :class:`Engine` (``.engine``,
    created on first use with ``engine_kwargs``)."""

    def __init__(self, capture=None, **engine_kwargs):
        self.capture = capture
        self.engine_kwargs = engine_kwargs
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            from ..engine import Engine

            # the GL compositor: the harness reads every view's hand mask (nvdiffrast gives none)
            self._engine = Engine(**{"compositor": "gl", **self.engine_kwargs})
        return self._engine

    def release(self):
        if self._engine is not None:
            self._engine.release()
            self._engine = None


class EngineRenderer:
    """The engine's physically based baseline as a harness renderer (hands only, no background)."""

    def __init__(self, engine, *, shading: str = "pbr", shadows: bool = True):
        self.engine, self.shading, self.shadows = engine, shading, shadows

    def __call__(self, frame, camera, env):
        return self.engine.render(frame.scene, env, camera, shading=self.shading, shadows=self.shadows,
                                  return_linear=True, background="none")


register_renderer("pbr", lambda ctx: EngineRenderer(ctx.engine, shadows=True),
                  "physically based baseline: GGX + prefiltered env + shadow-mapped dominant lights")
register_renderer("pbr_noshadow", lambda ctx: EngineRenderer(ctx.engine, shadows=False),
                  "physically based baseline without shadows")


def _as_radiance(out, shape) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise a renderer's return value to (float32 [H,W,3], optional bool mask)."""
    mask = None
    if hasattr(out, "linear"):
        mask = getattr(out, "mask", None)
        out = out.linear
        if out is None:
            raise EvaluationError("renderer returned a frame without linear radiance (return_linear=True)")
    elif isinstance(out, (tuple, list)):
        out, mask = out[0], (out[1] if len(out) > 1 else None)
    img = np.asarray(out, dtype=np.float32)
    if img.shape != tuple(shape):
        raise EvaluationError(f"renderer output has shape {img.shape}, the reference {tuple(shape)}")
    if not np.isfinite(img).all():
        raise EvaluationError("renderer output has NaN or infinite values")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != tuple(shape[:2]):
            mask = None
    return img, mask
