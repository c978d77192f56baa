"""Proxy ray casting: per-vertex, per-light visibility against the proxies of *both* hands.

Public API
----------
``proxy_visibility(vertices, normals, faces, directions, *, epsilon=1e-3, backend='auto',
cull_backfacing=True, return_info=False) -> vis [H, V, N] bool (torch)``

    ``vis[h, v, l]`` is True when the ray ``o = x_hv + epsilon * n_hv`` (``epsilon`` metres
    along the unit vertex normal), direction ``d_l`` (unit, pointing *towards* the light),
    ``t in (0, inf)``, hits no triangle of ANY hand (all hands are put in one scene, so one
    hand shadows the other; a hand also shadows itself).

    * ``epsilon`` default ``1e-3`` m (1 mm): the proxy is ~1000 vertices over a ~0.2 m hand,
      edges are ~5-10 mm, so 1 mm clears the vertex's own fan (no self-hit acne at grazing
      angles on convex regions) while being far below the gap between touching fingers.
    * ``cull_backfacing`` (default True): directions with ``n . d <= 0`` are reported *not
      visible* without casting (on a closed, outward-oriented mesh such a ray re-enters the
      surface). Every lighting feature is weighted by ``max(0, n . d)``, so nothing downstream
      changes and about half of the rays are skipped. With ``False`` every ray is cast.
    * Inputs: numpy or torch; ``vertices``/``normals`` ``[H, V, 3]`` or a list of ``[V_h, 3]``
      (one per hand); ``faces`` ``[F, 3]`` shared by all hands or a list, one per hand.
      The result is a torch bool tensor ``[H, V, N]`` on the device of ``vertices`` (a list
      of ``[V_h, N]`` when the hands have different vertex counts).
    * Ray order (what backends see): direction-major; inside one direction the vertices of
      all hands in Morton (Z-curve) order. Consecutive rays then share the direction and are
      spatially coherent (neighbouring rays usually share a grid cell in the Triton kernel).

Backends (``RayCaster``: ``build(vertices_world [M,3], faces [K,3])`` once per frame, then
``occluded(origins [R,3], dirs [R,3]) -> bool [R]``, ``hit_distance(origins, dirs) -> float32
[R]`` (distance to the nearest hit in units of ``|d|``, ``inf`` for none; what the translucency
cue of :mod:`.translucency` casts), and ``occluded_lights(origins,
light_index [R], directions [N,3])`` for rays drawn from a shared direction set (default:
``occluded(origins, directions[light_index])``; ``proxy_visibility`` calls this one);
registry ``get_backend(name)``, ``register_backend``, ``available_backends()``,
``resolve_backend('auto')``). Each backend lives in its own module (its docstring has the
design and the measurements); all are re-exported here:

* ``'torch'``  :mod:`.raycast_reference` -- brute-force Moller-Trumbore of every ray against
  every triangle, CPU or CUDA. The ground truth of the tests.
* ``'embree'`` :mod:`.raycast_embree` -- Intel Embree 4 through ``embreex`` (CPU).
* ``'grid'``   :mod:`.raycast_grid` -- pure torch per-light orthographic grid; that module
  also holds the binning (``bin_triangles_per_light``) and ``morton_order``.
* ``'triton'`` :mod:`.raycast_triton` -- Triton kernels (CUDA, or ``TRITON_INTERPRET=1`` on
  CPU tensors) over the same per-light grid, plus the clustered kernel for arbitrary rays
  (``cluster_cull_stats``). triton is only imported inside functions, never at module import.

``'auto'`` = ``'triton'`` when ``torch.cuda.is_available()`` and triton is importable, else
``'embree'`` when embreex imports, else ``'torch'``. The chosen name is ``backend.name`` and
is returned with ``return_info=True`` (with the build/query milliseconds).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Union

import numpy as np
import torch

__all__ = [
    "RayCaster",
    "TorchRayCaster",
    "EmbreeRayCaster",
    "TritonRayCaster",
    "GridRayCaster",
    "bin_triangles_per_light",
    "register_backend",
    "get_backend",
    "available_backends",
    "resolve_backend",
    "proxy_visibility",
    "visibility_rays",
    "morton_order",
    "cluster_cull_stats",
    "DEFAULT_EPSILON",
]

DEFAULT_EPSILON = 1e-3  # metres along the vertex normal
_DET_EPS = 1e-12        # |det| below this: ray parallel to the triangle plane -> no hit

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike, dtype, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device if device is not None else x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _sync(dev) -> None:
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- interface
class RayCaster:
    """Occlusion ray caster. ``build`` once per frame, then any number of ``occluded`` calls.

    Rays are ``o + t d`` with ``t in (0, inf)``; ``d`` need not be unit length for the
    result (all backends treat any positive hit distance as occluding).
    ``last_build_ms`` / ``last_query_ms`` hold the wall-clock timing of the latest calls
    (CUDA backends synchronise before reading the clock).
    """

    name = "base"

    def __init__(self) -> None:
        self.last_build_ms = 0.0
        self.last_query_ms = 0.0

    def build(self, vertices: ArrayLike, faces: ArrayLike) -> None:  # pragma: no cover
        raise NotImplementedError

    def occluded(self, origins: ArrayLike, dirs: ArrayLike) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def hit_distance(self, origins: ArrayLike, dirs: ArrayLike) -> torch.Tensor:
        """Nearest hit ``t > 0`` of each ray (float32 [R], ``inf`` where it hits nothing).

        The default is the brute-force reference on the triangles of the last ``build``
        (backends with a faster query override it)."""
        if getattr(self, "_reference", None) is None:
            raise RuntimeError(f"{type(self).__name__}.hit_distance called before build")
        return self._reference.hit_distance(origins, dirs)

    def occluded_lights(self, origins, light_index, directions) -> torch.Tensor:
        """Rays whose directions come from a shared set: ``dirs = directions[light_index]``.
        Backends that exploit the shared directions (the per-light grid of 'grid' and
        'triton') override this; the default just expands the directions."""
        d = directions[light_index] if isinstance(directions, torch.Tensor) else \
            np.asarray(directions)[np.asarray(light_index)]
        return self.occluded(origins, d)

    @classmethod
    def is_available(cls) -> bool:
        return True


_REGISTRY: Dict[str, Callable[..., RayCaster]] = {}


def register_backend(name: str, factory: Callable[..., RayCaster]) -> None:
    _REGISTRY[name] = factory


def available_backends() -> List[str]:
    """Registered backends whose dependencies import on this machine (no device check for
    'triton' beyond the import: without CUDA it needs ``TRITON_INTERPRET=1``)."""
    return [n for n, f in _REGISTRY.items() if getattr(f, "is_available", lambda: True)()]


def resolve_backend(name: str = "auto") -> str:
    if name != "auto":
        if name not in _REGISTRY:
            raise KeyError(f"unknown ray casting backend {name!r}; known: {sorted(_REGISTRY)}")
        return name
    if torch.cuda.is_available() and _triton_importable():
        return "triton"
    if EmbreeRayCaster.is_available():
        return "embree"
    return "torch"


def get_backend(name: str = "auto", **kwargs) -> RayCaster:
    """Instantiate a backend by name ('auto', 'torch', 'embree', 'triton')."""
    return _REGISTRY[resolve_backend(name)](**kwargs)


# ----------------------------------------------------------------------------- backends
# The backend modules import the interface above from this module, so they are imported only
# now that it exists; re-exported so that ``raycast.TorchRayCaster`` etc. keep working.
from .raycast_reference import TorchRayCaster  # noqa: E402
from .raycast_embree import EmbreeRayCaster  # noqa: E402
from .raycast_grid import GridRayCaster, bin_triangles_per_light, morton_order  # noqa: E402
from .raycast_triton import TritonRayCaster, _triton_importable, cluster_cull_stats  # noqa: E402

register_backend("torch", TorchRayCaster)
register_backend("embree", EmbreeRayCaster)
register_backend("triton", TritonRayCaster)
register_backend("grid", GridRayCaster)


# ----------------------------------------------------------------------------- frame API
def _as_hand_list(x, dtype, device) -> List[torch.Tensor]:
    if isinstance(x, (list, tuple)):
        return [_as_tensor(a, dtype, device) for a in x]
    t = _as_tensor(x, dtype, device)
    if t.dim() == 2:
        t = t[None]
    return list(t)


def _device_of(x) -> torch.device:
    if isinstance(x, (list, tuple)):
        return x[0].device if len(x) and isinstance(x[0], torch.Tensor) else torch.device("cpu")
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def visibility_rays(vertices, normals, faces, directions, *, epsilon: float = DEFAULT_EPSILON,
                    cull_backfacing: bool = True, device=None) -> dict:
    """The frame's scene and ray list exactly as ``proxy_visibility`` casts them:
    ``{'scene_vertices' [M,3], 'scene_faces' [K,3], 'origins' [R,3], 'dirs' [R,3],
    'ray_index' [R] (index into the direction-major [N, M(Morton)] grid), 'order' [M]
    (Morton permutation), 'counts' (vertices per hand), 'N'}``."""
    dev = torch.device(device) if device is not None else _device_of(vertices)
    vs = _as_hand_list(vertices, torch.float32, dev)
    ns = _as_hand_list(normals, torch.float32, dev)
    H = len(vs)
    if isinstance(faces, (list, tuple)):
        fs = [_as_tensor(f, torch.long, dev) for f in faces]
    else:
        fs = [_as_tensor(faces, torch.long, dev)] * H
    if len(ns) != H or len(fs) != H:
        raise ValueError("vertices, normals and faces must describe the same number of hands")
    counts = [int(v.shape[0]) for v in vs]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    all_v = torch.cat(vs, 0)
    all_f = torch.cat([f.reshape(-1, 3) + int(offsets[h]) for h, f in enumerate(fs)], 0)
    all_n = torch.nn.functional.normalize(torch.cat(ns, 0), dim=-1)
    dirs = torch.nn.functional.normalize(_as_tensor(directions, torch.float32, dev), dim=-1)
    M, N = all_v.shape[0], dirs.shape[0]
    order = morton_order(all_v)                         # coherent vertex order
    ov = all_v[order] + epsilon * all_n[order]          # [M,3] ray origins
    if cull_backfacing:
        sel = (dirs @ all_n[order].T > 0).reshape(-1)   # [N*M], direction-major
        idx = torch.nonzero(sel, as_tuple=False).squeeze(1)
    else:
        idx = torch.arange(N * M, device=dev)
    li = torch.div(idx, M, rounding_mode="floor")
    vi = idx - li * M
    return {"scene_vertices": all_v, "scene_faces": all_f, "origins": ov[vi], "dirs": dirs[li],
            "light_index": li, "directions": dirs, "ray_index": idx, "order": order,
            "counts": counts, "N": N}


def proxy_visibility(vertices, normals, faces, directions, *, epsilon: float = DEFAULT_EPSILON,
                     backend: Union[str, RayCaster] = "auto", cull_backfacing: bool = True,
                     return_info: bool = False):
    """Visibility ``[H, V, N]`` (bool, torch) of each light direction from each proxy vertex,
    against the proxies of all hands. See the module docstring for the exact definition.

    ``backend``: a name ('auto', 'torch', 'embree', 'triton') or a ``RayCaster`` instance
    (reuse one across frames to keep its compiled state). With ``return_info`` also returns
    ``{'backend': name, 'build_ms', 'query_ms', 'rays'}``.
    """
    out_device = _device_of(vertices)
    caster = backend if isinstance(backend, RayCaster) else get_backend(backend)
    if caster.name == "embree":
        work_dev = torch.device("cpu")
    elif getattr(caster, "device", None) is not None:
        work_dev = torch.device(caster.device)
    else:
        work_dev = out_device
    fr = visibility_rays(vertices, normals, faces, directions, epsilon=epsilon,
                         cull_backfacing=cull_backfacing, device=work_dev)
    caster.build(fr["scene_vertices"], fr["scene_faces"])
    if type(caster).occluded_lights is RayCaster.occluded_lights:
        occ = caster.occluded(fr["origins"], fr["dirs"])
    else:
        occ = caster.occluded_lights(fr["origins"], fr["light_index"], fr["directions"])
    occ = occ.to(work_dev)
    order, idx, N, counts = fr["order"], fr["ray_index"], fr["N"], fr["counts"]
    M = order.numel()
    vis_sorted = torch.zeros(N * M, dtype=torch.bool, device=work_dev)
    vis_sorted[idx] = ~occ
    vis_sorted = vis_sorted.view(N, M).T                # [M (Morton), N]
    vis = torch.empty_like(vis_sorted)
    vis[order] = vis_sorted
    vis = vis.to(out_device)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    parts = [vis[offsets[h]:offsets[h + 1]] for h in range(len(counts))]
    result = torch.stack(parts, 0) if len(set(counts)) == 1 else parts
    if return_info:
        info = {"backend": caster.name, "build_ms": caster.last_build_ms,
                "query_ms": caster.last_query_ms, "rays": int(idx.numel())}
        return result, info
    return result
