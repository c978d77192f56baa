"""Student inference backends behind one interface.

    backend = make_backend("auto", "models/student/student.safetensors")
    textures = backend.run(maps, env_code)     # [B, C, R, R] (+ [B, 30]) -> [B, 3, R, R] float32
    backend.name                               # e.g. 'onnxruntime-cpu', 'torch-cuda-fp16-graph'

Backends (``make_backend(kind, model_path, device='auto', precision='auto')``):

* ``torch`` -- CPU (fp32, ``inference_mode``, channels_last) or CUDA (fp16 by default, the whole
  network captured once per input shape in a **CUDA graph** by ``torch.cuda.make_graphed_callables``
  and replayed; falls back to eager with a warning if capture fails). ``make_graphed_callables``
  rather than ``torch.compile(mode='reduce-overhead')``: with no tensor requiring grad it captures
  only the forward pass of the same eager kernels (eager numerics, no Inductor / Triton compile
  step, nothing to recompile per shape). It is given a plain function, not the module, because on
  a module it replaces ``forward``, which would break the second shape's capture.
* ``onnxruntime`` -- the ONNX export (:func:`export_onnx`, opset 17, dynamic batch) in an ONNX
  Runtime session: the CPU execution provider, or on CUDA the CUDA execution provider when this
  onnxruntime has it (``onnxruntime-gpu``), with inputs and output bound to torch CUDA memory
  through ORT's IOBinding (no host copy).
* ``tensorrt`` -- the *same* ONNX file through ONNX Runtime's **TensorRT execution provider**
  (:func:`tensorrt_provider_options`: fp16, one optimisation profile for batch 1..2, the engine
  cache switched on in ``student_cache_dir()/tensorrt/<GPU, compute capability, ONNX Runtime and
  TensorRT versions>``; the ONNX file's name carries the weights' hash, so each weights file gets
  its own engine), CUDA provider for anything TensorRT does not take. Needs ``onnxruntime-gpu``
  built with TensorRT and the TensorRT libraries (``libnvinfer``); neither exists on the project's
  machines, so this path has not run: the ONNX graph it consumes is verified with ONNX Runtime and
  its provider options against ONNX Runtime's documentation (tests/test_inference.py).
* ``auto`` -- tensorrt if available on CUDA (falling back with a warning if the session cannot be
  made), else torch on CUDA, else onnxruntime if installed, else torch on the CPU. The chosen
  backend's ``name`` says which.

The CUDA paths are written against PyTorch's and ONNX Runtime's documented APIs; the project's
machines have no GPU, so they run only where one is lent (tests marked ``cuda``).
:func:`available_backends` says what this machine has, with a one-line reason for what it lacks.

Every backend takes torch tensors (any device; moved as needed) and returns float32 torch
tensors on its device: radiance / energy, as :class:`~relit_hands.student.StudentNet` defines.
Caches (ONNX exports, TensorRT engines): ``$RELIT_HANDS_CACHE`` or ``~/.cache/relit_hands``,
subfolder ``student``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .student import CODE_IN, StudentNet, load_student

__all__ = ["InferenceBackend", "TorchBackend", "OnnxRuntimeBackend", "TensorRTBackend", "make_backend",
           "export_onnx", "available_backends", "student_cache_dir", "BACKENDS", "cuda_graphed",
           "tensorrt_provider_options", "tensorrt_cache_dir", "ProviderUnavailable"]

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
ONNX_EXPORT_VERSION = 2  # 2: channels-last input ``maps_nhwc``
TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
# the TensorRT runtime library the TensorRT execution provider loads (TensorRT 10, 8; unversioned)
_NVINFER = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so", "nvinfer_10.dll", "nvinfer.dll")


def student_cache_dir() -> Path:
    root = os.environ.get("RELIT_HANDS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "relit_hands"
    return base / "student"


def _file_sha1(path, n: int = 16) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _ort_providers() -> list:
    """The execution providers this onnxruntime build has ([] if onnxruntime is not installed)."""
    if not _has("onnxruntime"):
        return []
    import onnxruntime as ort

    return list(ort.get_available_providers())


_nvinfer_handle = None


def _load_nvinfer():
    """Load TensorRT's runtime library (what the TensorRT execution provider dlopens) once, globally,
    so that a copy the ``tensorrt`` Python package ships is found too. The handle, or None."""
    global _nvinfer_handle

    def dlopen():
        for name in _NVINFER:
            try:
                return ctypes.CDLL(name, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            except OSError:
                pass
        return None

    if _nvinfer_handle is None:
        handle = dlopen()
        if handle is None and _has("tensorrt"):
            try:  # the pip ``tensorrt`` package loads its bundled libnvinfer on import
                import tensorrt  # noqa: F401
            except Exception:  # noqa: BLE001
                pass
            else:
                handle = dlopen()
        _nvinfer_handle = handle
    return _nvinfer_handle


def _tensorrt_version() -> str:
    """TensorRT's version from ``getInferLibVersion()`` (e.g. 100900 -> '10.9.0'), or 'unknown'."""
    lib = _load_nvinfer()
    try:
        v = int(lib.getInferLibVersion())
    except Exception:  # noqa: BLE001
        return "unknown"
    major, minor, patch = (v // 10000, (v // 100) % 100, v % 100) if v >= 10000 else (v // 1000, (v // 100) % 10, v % 100)
    return f"{major}.{minor}.{patch}"


def _cuda_reason() -> Optional[str]:
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"no CUDA device (torch {torch.__version__} is a CPU-only build)"
    return "no CUDA device (torch.cuda.is_available() is False)"


def _tensorrt_reason(cuda_reason: Optional[str] = None, providers: Optional[list] = None) -> Optional[str]:
    """None if the tensorrt backend can run here, else a one-line reason naming what is missing."""
    providers = _ort_providers() if providers is None else providers
    missing = []
    if not _has("onnxruntime"):
        missing.append("onnxruntime not installed (the tensorrt backend runs through ONNX Runtime's "
                       "TensorrtExecutionProvider: install onnxruntime-gpu built with TensorRT)")
    elif TRT_EP not in providers:
        missing.append("onnxruntime has no TensorrtExecutionProvider (install onnxruntime-gpu built with TensorRT, "
                       "and TensorRT)")
    if cuda_reason:
        missing.append(cuda_reason)
    if not missing and _load_nvinfer() is None:
        missing.append("onnxruntime has the TensorrtExecutionProvider but TensorRT's library (libnvinfer) "
                       "cannot be loaded (install TensorRT or put it on LD_LIBRARY_PATH)")
    return "; ".join(missing) or None


def available_backends() -> dict:
    """{backend: True or a one-line 'why not'} on this machine. Keys: ``torch`` (always),
    ``torch-cuda``, ``onnxruntime`` (CPU), ``onnxruntime-cuda`` (its CUDA execution provider),
    ``tensorrt`` (ONNX Runtime's TensorRT execution provider on CUDA)."""
    cuda = _cuda_reason()
    providers = _ort_providers()
    ort_ok = True if _has("onnxruntime") else "onnxruntime not installed (pip install onnxruntime)"
    if ort_ok is not True:
        ort_cuda = ort_ok
    elif CUDA_EP not in providers:
        ort_cuda = "onnxruntime has no CUDAExecutionProvider (this is the CPU build: install onnxruntime-gpu)"
        ort_cuda = ort_cuda + ("; " + cuda if cuda else "")
    else:
        ort_cuda = cuda or True
    return {"torch": True,
            "torch-cuda": cuda or True,
            "onnxruntime": ort_ok,
            "onnxruntime-cuda": ort_cuda,
            "tensorrt": _tensorrt_reason(cuda, providers) or True}


class InferenceBackend:
    """``run(maps [B, C, R, R], env_code [B, CODE_IN] or None) -> [B, 3, R, R]`` float32 torch.

    Attributes: ``name`` (which backend, device and precision), ``meta`` (the model's metadata:
    variant, feature_names, resolution, ...), ``device`` (torch device of the outputs)."""

    name = "abstract"
    meta: dict = {}
    device = torch.device("cpu")

    @property
    def variant(self) -> str:
        return self.meta.get("variant", "vis")

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def feature_names(self) -> list:
        return list(self.meta.get("feature_names") or [])

    @property
    def key_lights(self) -> int:
        """How many brightest lights the model's inputs take per texel (:mod:`relit_hands.key_lights`; 0: none)."""
        return int(self.meta.get("key_lights", 0) or 0)

    @property
    def needs_code(self) -> bool:
        return self.variant == "bottleneck"

    def _check(self, maps, env_code):
        R = self.resolution
        C = int(self.meta["in_channels"])
        if maps.dim() != 4 or maps.shape[1] != C or maps.shape[2] != R or maps.shape[3] != R:
            raise ValueError(f"{self.name}: maps must be [B, {C}, {R}, {R}], got {list(maps.shape)}")
        if self.needs_code:
            if env_code is None or tuple(env_code.shape) != (maps.shape[0], CODE_IN):
                raise ValueError(f"{self.name}: the bottleneck student needs env_code [B, {CODE_IN}]")

    def run(self, maps: torch.Tensor, env_code: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    __call__ = run

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} variant={self.variant} R={self.meta.get('resolution')}>"



# ---------------------------------------------------------------------------------- torch

def cuda_graphed(fn: Callable, sample_args: tuple, *, warmup: int = 3):
    """``fn(*sample_args)`` captured in a CUDA graph for exactly these shapes, dtypes and memory
    formats, through ``torch.cuda.make_graphed_callables``. Returns ``(callable, None)``, or
    ``(fn, reason)`` -- eager, unchanged -- when the arguments are not CUDA tensors or the capture
    fails (the caller decides whether to warn).

    ``sample_args`` become the graph's static inputs (pass private copies): each call copies its
    arguments into them and replays; the result is the graph's static output, which the next
    replay overwrites (copy it if it must survive). Nothing may require grad: then only the forward
    pass is captured (no backward graph), under ``no_grad`` and outside ``inference_mode`` so the
    static buffers stay writable from any mode. ``fn`` should be a plain function: given an
    ``nn.Module``, ``make_graphed_callables`` replaces its ``forward``."""
    if not sample_args or not all(isinstance(a, torch.Tensor) and a.is_cuda for a in sample_args):
        return fn, "the inputs are not CUDA tensors (CUDA graphs are for CUDA devices)"
    if any(a.requires_grad for a in sample_args):
        return fn, "an input requires grad (the inference capture is forward-only)"
    try:
        with torch.cuda.device(sample_args[0].device), torch.inference_mode(False), torch.no_grad():
            graphed = torch.cuda.make_graphed_callables(fn, tuple(sample_args), num_warmup_iters=int(warmup))
    except Exception as e:  # noqa: BLE001 - capture can fail on exotic setups: stay correct, lose the speed-up
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return fn, f"CUDA graph capture failed ({type(e).__name__}: {msg})"
    return graphed, None


class TorchBackend(InferenceBackend):
    """The network in PyTorch. CPU: fp32 eager. CUDA: fp16 (``precision='fp16'``, default) and,
    with ``cuda_graph=True`` (default), one CUDA graph per input shape (:func:`cuda_graphed`)."""

    def __init__(self, model: StudentNet, meta: Optional[dict] = None, device="cpu", precision: str = "auto",
                 cuda_graph: bool = True):
        from .student import model_meta

        self.device = torch.device(device)
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 inference is for CUDA devices (CPU half convolutions are slow)")
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.meta = dict(meta) if meta else model_meta(model)
        self.model = model.eval().to(self.device, dtype=self.dtype).to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.use_graph = bool(cuda_graph) and self.device.type == "cuda"
        self._graphs: dict = {}
        self.name = f"torch-{self.device.type}-{precision}" + ("-graph" if self.use_graph else "")

    def _eager(self, maps, code):
        with torch.inference_mode():
            return self.model(maps, code).float()

    def _graph_run(self, maps, code):
        # One graph per (B, C, R) shape; make_graphed_callables copies the inputs into the graph's
        # static buffers and replays it. Its output is the graph's static output: copied (float32,
        # always a new tensor) so that the result survives the next replay.
        key = (tuple(maps.shape), None if code is None else tuple(code.shape))
        g = self._graphs.get(key)
        if g is None:
            model = self.model
            if code is None:
                fn, args = (lambda m: model(m)), (maps.clone(),)
            else:
                fn, args = (lambda m, c: model(m, c)), (maps.clone(), code.clone())
            g, why = cuda_graphed(fn, args)
            if why is not None:
                warnings.warn(f"{why}; running the student eagerly")
                self.use_graph = False
                self.name = self.name.replace("-graph", "")
                return self._eager(maps, code)
            self._graphs[key] = g
        with torch.no_grad():
            out = g(maps) if code is None else g(maps, code)
        return out.to(torch.float32, copy=True)

    def run(self, maps, env_code=None):
        self._check(maps, env_code)
        maps = maps.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        code = None if env_code is None else env_code.to(self.device, self.dtype)
        if self.variant != "bottleneck":
            code = None
        if self.use_graph:
            return self._graph_run(maps, code)
        return self._eager(maps, code)


# ---------------------------------------------------------------------------------- ONNX

class _ChannelsLastInput(torch.nn.Module):
    """The student with its feature maps taken channels-last, ``[B, R, R, C]``: the layout in which
    :meth:`UVRasterizer.gather` produces them, so the runtimes read them without a copy (the
    graph's first op is a Transpose; a numpy NCHW copy of 2 x 19 x 256^2 maps cost ~3 ms per frame
    on the CPU)."""

    def __init__(self, model: StudentNet):
        super().__init__()
        self.model = model

    def forward(self, maps_nhwc, env_code=None):
        maps = maps_nhwc.permute(0, 3, 1, 2)
        return self.model(maps) if env_code is None else self.model(maps, env_code)


def onnx_maps_input(maps: torch.Tensor) -> torch.Tensor:
    """``maps [B, C, R, R]`` -> the exported graph's ``maps_nhwc [B, R, R, C]`` (a view, no copy,
    when ``maps`` is in ``torch.channels_last`` memory format)."""
    return maps.permute(0, 2, 3, 1)


def export_onnx(model: StudentNet, path, resolution: Optional[int] = None, batch: int = 2, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """Export ``model`` to ONNX (TorchScript-based exporter, opset ``opset``): inputs ``maps_nhwc``
    [B, R, R, C] (the feature maps channels-last, :func:`onnx_maps_input`; and ``env_code`` [B, 30]
    for the bottleneck variant), output ``radiance`` [B, 3, R, R] (= radiance / energy). Batch is
    dynamic unless ``dynamic_batch=False``; R is fixed (the learned static UV tensor has that size).
    Operators: Transpose (the input), Conv, LeakyRelu, Resize (nearest), Concat, Softplus, Mul/Add
    (+ Gemm/Unsqueeze for the bottleneck): all TensorRT layers. Written to a temporary file and
    renamed."""
    R = int(resolution or model.resolution)
    if R != model.resolution:
        raise ValueError(f"the model's resolution is {model.resolution}, not {R}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    maps = torch.zeros(batch, R, R, model.in_channels)
    names_in = ["maps_nhwc"]
    args = (maps,)
    if model.variant == "bottleneck":
        args = (maps, torch.zeros(batch, CODE_IN))
        names_in.append("env_code")
    axes = {n: {0: "batch"} for n in names_in + ["radiance"]} if dynamic_batch else None
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        with torch.no_grad():
            torch.onnx.export(_ChannelsLastInput(model), args, str(tmp), dynamo=False, opset_version=int(opset),
                              input_names=names_in, output_names=["radiance"], dynamic_axes=axes,
                              do_constant_folding=True)
    tmp.replace(path)
    return path


def _cached_onnx(model: StudentNet, model_path, opset: int = 17) -> Path:
    """The ONNX export of a weights file, made once and cached (keyed by the file's hash)."""
    key = f"{_file_sha1(model_path)}_o{opset}_v{ONNX_EXPORT_VERSION}"
    p = student_cache_dir() / f"student_{key}.onnx"
    if not p.is_file():
        export_onnx(model, p, opset=opset)
    return p



class ProviderUnavailable(RuntimeError):
    """ONNX Runtime could not give the session the execution provider it was asked for."""


def _provider_name(p) -> str:
    return p[0] if isinstance(p, (tuple, list)) else str(p)


class OnnxRuntimeBackend(InferenceBackend):
    """ONNX Runtime session on an exported student (CPU execution provider by default).

    ``providers``: ONNX Runtime's list (names, or ``(name, options)`` pairs), highest priority
    first. When the session's first provider is a CUDA one (``CUDAExecutionProvider``,
    ``TensorrtExecutionProvider``), :meth:`run` binds torch CUDA tensors to the inputs and the
    output with IOBinding (no host copy) and returns a CUDA tensor. ``device='cuda'`` with a CPU
    session: the result is moved to the CUDA device (for callers that keep the frame on the GPU)."""

    def __init__(self, onnx_path, meta: dict, providers=None, threads: Optional[int] = None, device=None):
        import onnxruntime as ort

        self.onnx_path = Path(onnx_path)
        self.meta = dict(meta)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(threads) if threads else max(1, torch.get_num_threads())
        so.inter_op_num_threads = 1
        # no busy-waiting of the intra-op pool after a run: on a small shared CPU the spinning
        # threads otherwise steal the cores from the stages that follow (measured: the next
        # numpy / OpenGL stages of the frame ran up to 10x slower)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = list(providers or [CPU_EP])
        self.session = ort.InferenceSession(str(self.onnx_path), so, providers=self.providers)
        self.active_providers = list(self.session.get_providers())
        self.input_names = [i.name for i in self.session.get_inputs()]
        out = self.session.get_outputs()[0]
        self._out_name, self._out_tail = out.name, [int(d) for d in out.shape[1:]]
        self.on_cuda = self.active_providers[0] in (CUDA_EP, TRT_EP)
        if self.on_cuda:
            opts = dict(self.providers[0][1]) if isinstance(self.providers[0], (tuple, list)) else {}
            self.device = torch.device("cuda", int(opts.get("device_id", torch.cuda.current_device())))
        elif device is not None and torch.device(device).type == "cuda":
            self.device = torch.device(device)
        else:
            self.device = torch.device("cpu")
        self.name = "onnxruntime-" + ("cuda" if self.on_cuda else "cpu")

    def _run_cuda(self, maps, env_code):
        dev = self.device
        feeds = {"maps_nhwc": onnx_maps_input(maps.detach().to(dev, torch.float32)).contiguous()}
        if "env_code" in self.input_names:
            feeds["env_code"] = env_code.detach().to(dev, torch.float32).contiguous()
        out = torch.empty([int(maps.shape[0])] + self._out_tail, dtype=torch.float32, device=dev)
        binding = self.session.io_binding()
        for name, t in feeds.items():
            binding.bind_input(name=name, device_type="cuda", device_id=dev.index, element_type=np.float32,
                               shape=tuple(t.shape), buffer_ptr=t.data_ptr())
        binding.bind_output(name=self._out_name, device_type="cuda", device_id=dev.index, element_type=np.float32,
                            shape=tuple(out.shape), buffer_ptr=out.data_ptr())
        # ONNX Runtime runs on its own CUDA stream: the inputs torch wrote on its stream must be
        # there first; ORT synchronises its stream at the end of the run, and synchronize_outputs
        # says so explicitly before torch reads ``out``
        torch.cuda.current_stream(dev).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out

    def run(self, maps, env_code=None):
        self._check(maps, env_code)
        if self.on_cuda:
            return self._run_cuda(maps, env_code)
        feed = {"maps_nhwc": np.ascontiguousarray(onnx_maps_input(maps.detach().float().cpu()).numpy())}
        if "env_code" in self.input_names:
            feed["env_code"] = np.ascontiguousarray(env_code.detach().float().cpu().numpy())
        out = torch.from_numpy(self.session.run(["radiance"], feed)[0])
        return out if self.device.type == "cpu" else out.to(self.device)


# ---------------------------------------------------------------------------------- TensorRT

def _profile_shapes(inputs: dict, batch: int) -> str:
    """ONNX Runtime's TensorRT profile string: 'name:BxD1xD2...,name2:...'."""
    return ",".join(f"{n}:" + "x".join(str(d) for d in [batch] + list(tail)) for n, tail in inputs.items())


def tensorrt_provider_options(cache_dir, *, fp16: bool = True, device_id: int = 0, inputs: Optional[dict] = None,
                              max_batch: int = 2, workspace_bytes: int = 2 << 30) -> list:
    """The ``providers`` list for an ONNX Runtime session on TensorRT: ``[("TensorrtExecutionProvider",
    {...}), ("CUDAExecutionProvider", {"device_id": ...})]`` (CUDA runs whatever TensorRT does not
    take, as ONNX Runtime's documentation recommends). Options, as ONNX Runtime's TensorRT
    execution provider documents them (onnxruntime.ai/docs/execution-providers/
    TensorRT-ExecutionProvider.html, "Execution Provider Options"): ``device_id``,
    ``trt_fp16_enable``, ``trt_engine_cache_enable`` + ``trt_engine_cache_path`` (built engines and
    their profiles are kept in ``cache_dir`` and reused by later sessions), ``trt_max_workspace_size``
    and, when ``inputs`` ({name: shape without the batch dimension}) is given, one explicit
    optimisation profile, batch 1 .. ``max_batch`` (optimised for ``max_batch``:
    ``trt_profile_min_shapes`` / ``_opt_shapes`` / ``_max_shapes``), so that one engine serves one
    and two hands instead of a rebuild when the batch changes."""
    trt = {"device_id": int(device_id),
           "trt_fp16_enable": bool(fp16),
           "trt_engine_cache_enable": True,
           "trt_engine_cache_path": str(cache_dir),
           "trt_max_workspace_size": int(workspace_bytes)}
    if inputs:
        trt["trt_profile_min_shapes"] = _profile_shapes(inputs, 1)
        trt["trt_profile_opt_shapes"] = _profile_shapes(inputs, max_batch)
        trt["trt_profile_max_shapes"] = _profile_shapes(inputs, max_batch)
    return [(TRT_EP, trt), (CUDA_EP, {"device_id": int(device_id)})]


def tensorrt_cache_dir(device_index: Optional[int] = None) -> Path:
    """Where the TensorRT engines live: ``student_cache_dir()/tensorrt/<GPU>_sm<cc>_ort<v>_trt<v>``.
    ONNX Runtime's engine cache keys an engine by the model file's name (which carries the weights'
    hash here), its graph and the GPU's compute capability, not by the TensorRT version or the GPU
    model: the folder adds those, so that no stale engine is ever loaded."""
    import onnxruntime as ort

    idx = torch.cuda.current_device() if device_index is None else int(device_index)
    cc = "%d%d" % torch.cuda.get_device_capability(idx)
    key = f"{torch.cuda.get_device_name(idx)}_sm{cc}_ort{ort.__version__}_trt{_tensorrt_version()}"
    return student_cache_dir() / "tensorrt" / re.sub(r"[^A-Za-z0-9._-]+", "-", key)


class TensorRTBackend(OnnxRuntimeBackend):
    """The ONNX export run by ONNX Runtime's TensorRT execution provider (fp16 by default; engine
    cached on disk, :func:`tensorrt_cache_dir`), torch CUDA tensors in and out through IOBinding.
    Raises :class:`ProviderUnavailable` if ONNX Runtime cannot give the session TensorRT (it would
    otherwise fall back to CUDA or the CPU silently). Has not run on the project's machines (see
    the module docstring)."""

    def __init__(self, onnx_path, meta: dict, precision: str = "fp16", max_batch: int = 2, cache_dir=None,
                 device_id: Optional[int] = None):
        reason = _tensorrt_reason(_cuda_reason())
        if reason:
            raise ProviderUnavailable(f"backend 'tensorrt' is not available here: {reason}")
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        idx = torch.cuda.current_device() if device_id is None else int(device_id)
        cache = Path(cache_dir) if cache_dir else tensorrt_cache_dir(idx)
        cache.mkdir(parents=True, exist_ok=True)
        R, C = int(meta["resolution"]), int(meta["in_channels"])
        inputs = {"maps_nhwc": (R, R, C)}
        if meta.get("variant") == "bottleneck":
            inputs["env_code"] = (CODE_IN,)
        self.precision, self.max_batch, self.cache_dir = precision, int(max_batch), cache
        providers = tensorrt_provider_options(cache, fp16=precision == "fp16", device_id=idx, inputs=inputs,
                                              max_batch=self.max_batch)
        super().__init__(onnx_path, meta, providers=providers)
        if self.active_providers[0] != TRT_EP:
            raise ProviderUnavailable(f"onnxruntime could not create its TensorrtExecutionProvider for {onnx_path} "
                                      f"(the session got {self.active_providers}; see ONNX Runtime's log above)")
        self.name = f"tensorrt-{precision}"

    def run(self, maps, env_code=None):
        if maps.dim() == 4 and maps.shape[0] > self.max_batch:
            raise ValueError(f"{self.name}: the engine's profile takes batch 1..{self.max_batch}, got {maps.shape[0]}")
        return super().run(maps, env_code)


# ---------------------------------------------------------------------------------- factory

def _onnx_for(model: StudentNet, model_path) -> Path:
    if model_path is not None:
        return _cached_onnx(model, model_path)
    h = hashlib.sha1()  # in-memory model: export keyed by the weights' bytes
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    onnx_path = student_cache_dir() / f"student_mem_{h.hexdigest()[:16]}_v{ONNX_EXPORT_VERSION}.onnx"
    if not onnx_path.is_file():
        export_onnx(model, onnx_path)
    return onnx_path


def _export_readable(onnx_path: Path) -> bool:
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(onnx_path), providers=[CPU_EP])
        return True
    except Exception:  # noqa: BLE001
        return False


def _open_session(make, model: StudentNet, onnx_path: Path):
    """``make(onnx_path)``; a corrupt / truncated cached export (one the CPU provider cannot load
    either) is exported again, once. Other errors (a provider's) are raised as they are."""
    try:
        return make(onnx_path)
    except ProviderUnavailable:
        raise
    except Exception:  # noqa: BLE001
        if _export_readable(onnx_path):
            raise
        onnx_path.unlink(missing_ok=True)
        export_onnx(model, onnx_path)
        return make(onnx_path)


def make_backend(kind: str = "auto", model_path=None, device: str = "auto", precision: str = "auto", *,
                 model: Optional[StudentNet] = None, meta: Optional[dict] = None, cuda_graph: bool = True,
                 threads: Optional[int] = None) -> InferenceBackend:
    """A backend for a student weights file (``model_path``) or an in-memory ``model``.

    ``kind``: 'auto' | 'torch' | 'onnxruntime' | 'tensorrt'; ``device``: 'auto' | 'cpu' | 'cuda';
    ``precision``: 'auto' (fp16 on CUDA, fp32 on the CPU) | 'fp32' | 'fp16' (torch and tensorrt;
    ONNX Runtime runs the fp32 export). Errors in the weights file raise
    :class:`~relit_hands.student.StudentLoadError` naming it; 'tensorrt' where it cannot run raises
    ``ValueError`` with :func:`available_backends`' reason."""
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {kind!r}")
    if model is None:
        if model_path is None:
            raise ValueError("make_backend needs model_path or model")
        model, meta = load_student(model_path)
    elif meta is None:
        from .student import model_meta

        meta = model_meta(model)
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    if kind == "tensorrt":
        reason = _tensorrt_reason(None if cuda else (_cuda_reason() or f"device={device!r} (TensorRT runs on CUDA)"))
        if reason:
            raise ValueError(f"backend 'tensorrt' is not available here: {reason}; use 'onnxruntime' or 'torch'")
    trt_precision = "fp16" if precision in ("auto", "fp16") else "fp32"
    if kind == "auto":
        if cuda and _tensorrt_reason() is None:
            try:
                onnx_path = _onnx_for(model, model_path)
                return _open_session(lambda p: TensorRTBackend(p, meta, precision=trt_precision), model, onnx_path)
            except Exception as e:  # noqa: BLE001 - stay correct: torch on CUDA
                warnings.warn(f"backend 'auto': TensorRT through ONNX Runtime failed ({type(e).__name__}: {e}); "
                              f"using torch on CUDA")
            kind = "torch"
        elif cuda:
            kind = "torch"
        elif _has("onnxruntime"):
            kind = "onnxruntime"
        else:
            kind = "torch"
    if kind == "torch":
        dev = "cuda" if cuda else "cpu"
        return TorchBackend(model, meta, device=dev, precision=precision, cuda_graph=cuda_graph)
    onnx_path = _onnx_for(model, model_path)
    if kind == "onnxruntime":
        providers = None
        if cuda and CUDA_EP in _ort_providers():
            providers = [(CUDA_EP, {"device_id": torch.cuda.current_device()}), CPU_EP]
        elif device == "cuda":
            warnings.warn(f"backend 'onnxruntime' on CUDA: {available_backends()['onnxruntime-cuda']}; "
                          f"running on the CPU execution provider (outputs moved to CUDA)")
        return _open_session(lambda p: OnnxRuntimeBackend(p, meta, providers=providers, threads=threads,
                                                          device=device if device == "cuda" else None),
                             model, onnx_path)
    return _open_session(lambda p: TensorRTBackend(p, meta, precision=trt_precision), model, onnx_path)
