"""Student inference backends behind one interface.

    backend = make_backend("auto", "models/student/student.safetensors")
    textures = backend.run(maps, env_code)     # [B, C, R, R] (+ [B, 30]) -> [B, 3, R, R] float32
    backend.name                               # e.g. 'onnxruntime-cpu', 'torch-cuda-fp16-graph'

Backends (``make_backend(kind, model_path, device='auto', precision='auto')``):

* ``torch`` -- CPU (fp32, ``inference_mode``, channels_last) or CUDA (fp16 by default, the whole
  network captured once per input shape in a **CUDA graph** and replayed; static input/output
  buffers, warm-up on a side stream as the PyTorch docs prescribe; falls back to eager if capture
  fails). The CUDA path is written against PyTorch's documented API but **has not been run on
  this project's CPU machines**.
* ``onnxruntime`` -- the ONNX export (:func:`export_onnx`, opset 17, dynamic batch) in an ONNX
  Runtime session on the CPU execution provider (CUDA provider if installed and asked for).
* ``tensorrt`` -- an engine built from the *same* ONNX file in fp16 with TensorRT's Python API
  (``trt.Builder`` / ``create_network`` / ``OnnxParser`` / ``IBuilderConfig.set_flag(FP16)`` /
  ``build_serialized_network`` / ``Runtime.deserialize_cuda_engine`` / ``set_tensor_address`` +
  ``execute_async_v3``), cached on disk keyed by GPU name, TensorRT version, precision and the
  ONNX file's hash. TensorRT cannot be installed on the project's machines: the import is
  guarded and this backend is untested; the ONNX graph it consumes is verified with ONNX
  Runtime (tests/test_inference.py).
* ``auto`` -- tensorrt if importable and CUDA is available, else torch on CUDA, else onnxruntime
  if installed, else torch on the CPU. The chosen backend's ``name`` says which.

Every backend takes torch tensors (any device; moved as needed) and returns float32 torch
tensors on its device: radiance / energy, as :class:`~relit_hands.student.StudentNet` defines.
Caches (ONNX exports, TensorRT engines): ``$RELIT_HANDS_CACHE`` or ``~/.cache/relit_hands``,
subfolder ``student``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .student import CODE_IN, StudentNet, load_student

__all__ = ["InferenceBackend", "TorchBackend", "OnnxRuntimeBackend", "TensorRTBackend", "make_backend",
           "export_onnx", "available_backends", "student_cache_dir", "BACKENDS"]

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
ONNX_EXPORT_VERSION = 2  # 2: channels-last input ``maps_nhwc``


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


def available_backends() -> dict:
    """{backend: True or 'why not'} on this machine."""
    cuda = torch.cuda.is_available()
    return {"torch": True,
            "torch-cuda": True if cuda else "no CUDA device",
            "onnxruntime": True if _has("onnxruntime") else "onnxruntime not installed",
            "tensorrt": (True if (cuda and _has("tensorrt")) else
                         ("tensorrt not installed" if not _has("tensorrt") else "no CUDA device"))}


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

class TorchBackend(InferenceBackend):
    """The network in PyTorch. CPU: fp32 eager. CUDA: fp16 (``precision='fp16'``, default) and,
    with ``cuda_graph=True`` (default), one CUDA graph per input shape."""

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
        # One graph per (B, C, R) shape. Inputs are copied into static buffers, the graph
        # replays the captured kernels, the static output is cloned (the next replay overwrites it).
        key = (tuple(maps.shape), None if code is None else tuple(code.shape))
        g = self._graphs.get(key)
        if g is None:
            try:
                s_in = maps.clone()
                s_code = None if code is None else code.clone()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side), torch.no_grad():
                    for _ in range(3):  # warm-up: cuDNN autotuning, allocator pools
                        self.model(s_in, s_code)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), torch.no_grad():
                    s_out = self.model(s_in, s_code)
                g = self._graphs[key] = (graph, s_in, s_code, s_out)
            except Exception as e:  # capture can fail on exotic setups: stay correct, lose the speed-up
                warnings.warn(f"CUDA graph capture failed ({e}); running the student eagerly")
                self.use_graph = False
                self.name = self.name.replace("-graph", "")
                return self._eager(maps, code)
        graph, s_in, s_code, s_out = g
        s_in.copy_(maps)
        if s_code is not None:
            s_code.copy_(code)
        graph.replay()
        return s_out.float()  # .float() allocates a new tensor, so the result survives the next replay

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


class OnnxRuntimeBackend(InferenceBackend):
    """ONNX Runtime session on an exported student (CPU execution provider by default)."""

    def __init__(self, onnx_path, meta: dict, providers=None, threads: Optional[int] = None):
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
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(str(self.onnx_path), so, providers=self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.device = torch.device("cpu")
        self.name = "onnxruntime-" + ("cuda" if self.providers[0].startswith("CUDA") else "cpu")

    def run(self, maps, env_code=None):
        self._check(maps, env_code)
        feed = {"maps_nhwc": np.ascontiguousarray(onnx_maps_input(maps.detach().float().cpu()).numpy())}
        if "env_code" in self.input_names:
            feed["env_code"] = np.ascontiguousarray(env_code.detach().float().cpu().numpy())
        out = self.session.run(["radiance"], feed)[0]
        return torch.from_numpy(out)


# ---------------------------------------------------------------------------------- TensorRT

def _trt_engine_key(onnx_path, precision: str) -> str:
    import tensorrt as trt

    gpu = torch.cuda.get_device_name(torch.cuda.current_device())
    cc = "%d.%d" % torch.cuda.get_device_capability()
    raw = f"{gpu}|sm{cc}|trt{trt.__version__}|{precision}|{_file_sha1(onnx_path, 40)}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def build_trt_engine(onnx_path, engine_path, *, precision: str = "fp16", max_batch: int = 2,
                     workspace_gb: float = 2.0, meta: Optional[dict] = None) -> Path:
    """Build a TensorRT engine from an ONNX file and serialise it to ``engine_path``.

    One optimisation profile: batch 1 (one hand) .. ``max_batch`` (optimised for ``max_batch``).
    fp16 through ``BuilderFlag.FP16`` (TensorRT 8-10; TensorRT >= 11 networks are strongly typed
    and ignore the flag -- export an fp16 ONNX for it)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is implied from TensorRT 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse the ONNX graph: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)[1:]
        profile.set_shape(t.name, [1] + shape, [max_batch] + shape, [max_batch] + shape)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(bytes(blob))
    tmp.replace(engine_path)
    if meta is not None:
        engine_path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return engine_path


class TensorRTBackend(InferenceBackend):
    """A TensorRT engine (built from the ONNX export and cached on disk) run on torch CUDA tensors
    with ``execute_async_v3`` on the current torch stream. UNTESTED here: no TensorRT on the
    project's machines (see the module docstring)."""

    def __init__(self, onnx_path, meta: dict, precision: str = "fp16", max_batch: int = 2, cache_dir=None):
        import tensorrt as trt

        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT backend needs a CUDA device")
        self.meta = dict(meta)
        self.device = torch.device("cuda")
        self.precision = precision
        cache = Path(cache_dir) if cache_dir else student_cache_dir() / "tensorrt"
        self.engine_path = cache / f"student_{_trt_engine_key(onnx_path, precision)}.plan"
        if not self.engine_path.is_file():
            build_trt_engine(onnx_path, self.engine_path, precision=precision, max_batch=max_batch,
                             meta={"onnx": str(onnx_path), "gpu": torch.cuda.get_device_name(),
                                   "tensorrt": trt.__version__, "precision": precision})
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with open(self.engine_path, "rb") as f:
            self.engine = self._runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"{self.engine_path}: cannot deserialise the TensorRT engine (delete it to rebuild)")
        self.context = self.engine.create_execution_context()
        self._trt = trt
        self.io = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.io if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.name = f"tensorrt-{precision}"

    def _torch_dtype(self, name):
        trt = self._trt
        dt = self.engine.get_tensor_dtype(name)
        return {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}[dt]

    def run(self, maps, env_code=None):
        self._check(maps, env_code)
        feeds = {"maps_nhwc": onnx_maps_input(maps)}
        if "env_code" in self.inputs:
            feeds["env_code"] = env_code
        keep = []
        for n in self.inputs:
            t = feeds[n].to(self.device, self._torch_dtype(n)).contiguous()
            keep.append(t)
            self.context.set_input_shape(n, tuple(t.shape))
            self.context.set_tensor_address(n, t.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape("radiance")), dtype=self._torch_dtype("radiance"),
                          device=self.device)
        self.context.set_tensor_address("radiance", out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out.float()


# ---------------------------------------------------------------------------------- factory

def make_backend(kind: str = "auto", model_path=None, device: str = "auto", precision: str = "auto", *,
                 model: Optional[StudentNet] = None, meta: Optional[dict] = None, cuda_graph: bool = True,
                 threads: Optional[int] = None) -> InferenceBackend:
    """A backend for a student weights file (``model_path``) or an in-memory ``model``.

    ``kind``: 'auto' | 'torch' | 'onnxruntime' | 'tensorrt'; ``device``: 'auto' | 'cpu' | 'cuda';
    ``precision``: 'auto' (fp16 on CUDA, fp32 on the CPU) | 'fp32' | 'fp16'. Errors in the
    weights file raise :class:`~relit_hands.student.StudentLoadError` naming it."""
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
    if kind == "auto":
        if cuda and _has("tensorrt"):
            kind = "tensorrt"
        elif cuda:
            kind = "torch"
        elif _has("onnxruntime"):
            kind = "onnxruntime"
        else:
            kind = "torch"
    if kind == "torch":
        dev = "cuda" if cuda else "cpu"
        return TorchBackend(model, meta, device=dev, precision=precision, cuda_graph=cuda_graph)
    if model_path is not None:
        onnx_path = _cached_onnx(model, model_path)
    else:  # in-memory model: export keyed by the weights' bytes
        h = hashlib.sha1()
        for k, v in model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
        onnx_path = student_cache_dir() / f"student_mem_{h.hexdigest()[:16]}_v{ONNX_EXPORT_VERSION}.onnx"
        if not onnx_path.is_file():
            export_onnx(model, onnx_path)
    if kind == "onnxruntime":
        providers = None
        if device == "cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            return OnnxRuntimeBackend(onnx_path, meta, providers=providers, threads=threads)
        except Exception:  # noqa: BLE001 - a corrupt / truncated cached export: rebuild it once
            onnx_path.unlink(missing_ok=True)
            export_onnx(model, onnx_path)
            return OnnxRuntimeBackend(onnx_path, meta, providers=providers, threads=threads)
    if not _has("tensorrt"):
        raise ValueError("backend 'tensorrt' needs the tensorrt Python package (not installable here); "
                         "use 'onnxruntime' or 'torch'")
    return TensorRTBackend(onnx_path, meta, precision="fp16" if precision in ("auto", "fp16") else "fp32")
