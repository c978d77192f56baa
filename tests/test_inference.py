"""Inference backends: torch and ONNX Runtime agree on the very ONNX graph the TensorRT backend
would consume; the graph uses TensorRT-friendly operators only; backend selection and errors; the
TensorRT execution provider's options; the CUDA-graph wrapper's eager fallback. The tests whose
names hold ``cuda`` need a GPU (skipped here) and compare against the eager / CPU model there."""
import warnings

import onnx
import pytest
import torch

from relit_hands.inference import (OnnxRuntimeBackend, ProviderUnavailable, TensorRTBackend, TorchBackend,
                                   available_backends, cuda_graphed, export_onnx, make_backend, onnx_maps_input,
                                   tensorrt_provider_options)
from relit_hands.student import CODE_IN, StudentLoadError, StudentNet, model_meta, save_student

torch.set_num_threads(1)
TRT_OPS = {"Add", "Mul", "Concat", "Constant", "Conv", "Identity", "LeakyRelu", "Resize", "Softplus", "Gemm",
           "Unsqueeze", "Cast", "Transpose"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))


def varied(variant, R=64, seed=0):
    """A small student whose output actually varies over texels (random init is ~constant)."""
    torch.manual_seed(seed)
    m = StudentNet.for_variant(variant, resolution=R, base=8, levels=3, static_channels=4)
    with torch.no_grad():
        m.out.weight.normal_(std=0.05)
    return m.eval()


def inputs(m, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, m.in_channels, m.resolution, m.resolution, generator=g)
    c = torch.rand(B, CODE_IN, generator=g) if m.variant == "bottleneck" else None
    return x, c


@pytest.mark.parametrize("variant", ["vis", "novis", "bottleneck"])
def test_torch_and_onnxruntime_agree(tmp_path, variant):
    m = varied(variant)
    path = export_onnx(m, tmp_path / "s.onnx")
    g = onnx.load(str(path))
    onnx.checker.check_model(g)
    assert g.opset_import[0].version == 17
    ops = {n.op_type for n in g.graph.node}
    assert ops <= TRT_OPS, f"operators outside the TensorRT-friendly set: {ops - TRT_OPS}"
    torch_be = TorchBackend(m)
    ort_be = OnnxRuntimeBackend(path, model_meta(m), threads=1)
    assert torch_be.name == "torch-cpu-fp32" and ort_be.name == "onnxruntime-cpu"
    for B in (2, 1):  # both hands, one hand (dynamic batch)
        x, c = inputs(m, B)
        a, b = torch_be.run(x, c), ort_be.run(x, c)
        assert a.shape == b.shape == (B, 3, 64, 64) and b.dtype == torch.float32
        rng = float(a.max() - a.min())
        assert rng > 1e-3
        assert float((a - b).abs().max()) < 1e-3 * rng
        # maps in channels_last memory (how the UV gather makes them) go in without a copy: same result
        xc = x.contiguous(memory_format=torch.channels_last)
        assert onnx_maps_input(xc).is_contiguous()
        assert torch.equal(ort_be.run(xc, c), b)
    x0 = g.graph.input[0]
    assert x0.name == "maps_nhwc" and [d.dim_value for d in x0.type.tensor_type.shape.dim[1:]] == [64, 64, m.in_channels]


def test_albedo_prior_student_exports_and_roundtrips(tmp_path):
    """The albedo prior (a fixed buffer multiplying the output) is a constant in the ONNX graph,
    travels in the weights file, and leaves the prediction at ~0.05 x albedo / mean albedo."""
    from relit_hands.hand_model import HandAsset
    from relit_hands.student import load_student

    torch.manual_seed(0)
    m = StudentNet.for_variant("vis", resolution=64, base=8, levels=3, static_channels=4, albedo_prior=True)
    A = HandAsset.load().albedo_map(64)
    m.set_albedo(A)
    x, _ = inputs(m.eval(), 2)
    with torch.no_grad():
        y0 = m(x)
    torch.testing.assert_close(y0 / A[None], torch.full_like(y0, 0.05 / float(A.mean())), rtol=0.05, atol=0)
    with torch.no_grad():
        m.out.weight.normal_(std=0.05)
    path = export_onnx(m, tmp_path / "p.onnx")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} <= TRT_OPS
    a = TorchBackend(m).run(x, None)
    b = OnnxRuntimeBackend(path, model_meta(m), threads=1).run(x, None)
    assert float((a - b).abs().max()) < 1e-3 * float(a.max() - a.min())
    m2, meta = load_student(save_student(tmp_path / "p.safetensors", m))
    assert meta["albedo_prior"] is True
    torch.testing.assert_close(m2.albedo[0], A)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x), rtol=1e-5, atol=1e-7)


def test_specular_channel_student_exports_and_roundtrips(tmp_path):
    """The grey specular channel is added untinted to R, G and B after the albedo prior, exports
    with the same TensorRT-friendly operators, and its switch travels in the weights file."""
    from relit_hands.hand_model import HandAsset
    from relit_hands.student import load_student

    torch.manual_seed(0)
    m = StudentNet.for_variant("vis", resolution=64, base=8, levels=3, static_channels=4, albedo_prior=True,
                               specular_channel=True)
    A = HandAsset.load().albedo_map(64)
    m.set_albedo(A)
    with torch.no_grad():
        m.out.weight.normal_(std=0.05)
        m.out_specular.weight.normal_(std=0.05)
    x, _ = inputs(m.eval(), 2)
    with torch.no_grad():
        y = m(x)
        # the grey channel is what remains once the albedo-tinted part is removed: equal in R, G, B
        m.out_specular.bias.fill_(-30.0)  # softplus ~ 0: only the tinted part
        tinted = m(x)
    spec = y - tinted
    assert float(spec.min()) > 0
    torch.testing.assert_close(spec[:, 0], spec[:, 1], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(spec[:, 0], spec[:, 2], rtol=1e-4, atol=1e-7)
    path = export_onnx(m, tmp_path / "s.onnx")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} <= TRT_OPS
    a = TorchBackend(m).run(x, None)
    b = OnnxRuntimeBackend(path, model_meta(m), threads=1).run(x, None)
    assert float((a - b).abs().max()) < 1e-3 * float(a.max() - a.min())
    m2, meta = load_student(save_student(tmp_path / "s.safetensors", m))
    assert meta["specular_channel"] is True and m2.out_specular is not None
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="albedo_prior"):
        StudentNet.for_variant("vis", resolution=64, base=8, levels=3, specular_channel=True)


def test_light_head_student_exports_and_roundtrips(tmp_path):
    """The light head's fixed selections and sums are 1x1 convolutions: the graph keeps the
    TensorRT-friendly operators and ONNX Runtime matches torch; the switch travels in the file."""
    from relit_hands.hand_model import HandAsset
    from relit_hands.student import load_student

    torch.manual_seed(0)
    m = StudentNet.for_variant("vis", resolution=64, base=8, levels=3, static_channels=4, albedo_prior=True,
                               light_head=True)
    m.set_albedo(HandAsset.load().albedo_map(64))
    with torch.no_grad():
        m.head_diffuse.weight.normal_(std=0.1)
        m.head_specular.weight.normal_(std=0.1)
    x, _ = inputs(m.eval(), 2)
    path = export_onnx(m, tmp_path / "h.onnx")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} <= TRT_OPS
    a = TorchBackend(m).run(x, None)
    b = OnnxRuntimeBackend(path, model_meta(m), threads=1).run(x, None)
    assert float((a - b).abs().max()) < 1e-3 * float(a.max() - a.min())
    m2, meta = load_student(save_student(tmp_path / "h.safetensors", m))
    assert meta["light_head"] is True
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x), rtol=1e-5, atol=1e-7)


def test_make_backend_from_file(tmp_path):
    m = varied("vis")
    p = save_student(tmp_path / "s.safetensors", m)
    x, _ = inputs(m)
    ref = m(x).detach()
    for kind in ("torch", "onnxruntime", "auto"):
        be = make_backend(kind, p)
        assert be.variant == "vis" and be.resolution == 64
        assert float((be.run(x) - ref).abs().max()) < 1e-3 * float(ref.max() - ref.min())
    if not torch.cuda.is_available():
        assert make_backend("auto", p).name == "onnxruntime-cpu"  # auto without CUDA
    # the export is cached by the weights file's hash
    assert len(list((tmp_path / "cache" / "student").glob("*.onnx"))) == 1


def test_backend_errors(tmp_path):
    with pytest.raises(StudentLoadError, match="missing.safetensors"):
        make_backend("onnxruntime", tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk" * 100)
    with pytest.raises(StudentLoadError, match="bad.safetensors"):
        make_backend("torch", bad)
    m = varied("vis")
    if available_backends()["tensorrt"] is not True:
        with pytest.raises(ValueError, match="tensorrt"):
            make_backend("tensorrt", model=m)
    with pytest.raises(ValueError, match="backend must be"):
        make_backend("tflite", model=m)
    be = TorchBackend(m)
    with pytest.raises(ValueError, match="maps must be"):
        be.run(torch.zeros(2, 5, 64, 64))
    with pytest.raises(ValueError, match="fp16"):
        TorchBackend(m, precision="fp16")


# ---------------------------------------------------------------------------------- availability, TensorRT, graphs

CUDA = torch.cuda.is_available()


def rel_err(a, b):
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).norm() / b.norm())


def test_available_backends_reasons():
    av = available_backends()
    assert set(av) >= {"torch", "torch-cuda", "onnxruntime", "onnxruntime-cuda", "tensorrt"}
    assert av["torch"] is True
    for k, v in av.items():
        assert v is True or (isinstance(v, str) and v and "\n" not in v), (k, v)
    if not CUDA:  # this machine: each reason names the missing piece
        assert "no CUDA device" in av["torch-cuda"]
        assert "no CUDA device" in av["tensorrt"]
        import onnxruntime as ort

        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            assert "onnxruntime has no TensorrtExecutionProvider" in av["tensorrt"]
            assert "onnxruntime-gpu" in av["tensorrt"]
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            assert "no CUDAExecutionProvider" in av["onnxruntime-cuda"]


@pytest.mark.skipif(available_backends()["tensorrt"] is True, reason="TensorRT is available here")
def test_tensorrt_request_names_the_reason():
    m = varied("vis")
    reason = available_backends()["tensorrt"]
    with pytest.raises(ValueError, match="backend 'tensorrt' is not available here") as e:
        make_backend("tensorrt", model=m)
    assert reason in str(e.value)
    with pytest.raises(ProviderUnavailable, match="not available here"):
        TensorRTBackend("unused.onnx", model_meta(m))
    if not CUDA:  # auto without CUDA: ONNX Runtime on the CPU, not TensorRT
        assert make_backend("auto", model=m).name == "onnxruntime-cpu"


def test_tensorrt_provider_options(tmp_path):
    """The TensorRT execution provider's options, as ONNX Runtime documents them: fp16, the engine
    cache in the given folder, one profile for batch 1..2; CUDA provider second."""
    cache = tmp_path / "trt"
    p = tensorrt_provider_options(cache, device_id=1, inputs={"maps_nhwc": (64, 64, 19), "env_code": (30,)})
    assert [n for n, _ in p] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    trt, cuda = p[0][1], p[1][1]
    assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == str(cache)
    assert trt["device_id"] == 1 and cuda == {"device_id": 1}
    assert trt["trt_profile_min_shapes"] == "maps_nhwc:1x64x64x19,env_code:1x30"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "maps_nhwc:2x64x64x19,env_code:2x30"
    assert isinstance(trt["trt_max_workspace_size"], int)
    documented = {"device_id", "trt_fp16_enable", "trt_engine_cache_enable", "trt_engine_cache_path",
                  "trt_max_workspace_size", "trt_profile_min_shapes", "trt_profile_opt_shapes",
                  "trt_profile_max_shapes"}
    assert set(trt) <= documented
    p32 = tensorrt_provider_options(cache, fp16=False)
    assert p32[0][1]["trt_fp16_enable"] is False and not any(k.startswith("trt_profile") for k in p32[0][1])


def test_cuda_graphed_falls_back_to_eager_on_cpu():
    m = varied("vis")
    x, _ = inputs(m)

    def fn(a):
        return m(a)

    g, why = cuda_graphed(fn, (x.clone(),))
    assert g is fn and "CUDA" in why
    be = TorchBackend(m, cuda_graph=True)  # CPU: graphs are never used, the name says so
    assert be.use_graph is False and be.name == "torch-cpu-fp32"
    with torch.no_grad():
        torch.testing.assert_close(be.run(x), m(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["vis", "bottleneck"])
def test_cuda_graph_torch_backend_matches_eager(variant):
    """One CUDA graph per batch shape (torch.cuda.make_graphed_callables), replayed: same result as
    the eager network on the GPU (same kernels) and as the fp32 CPU model (fp16 tolerance); a
    result survives the next replay."""
    m = varied(variant)
    ref_model = varied(variant)  # the same weights (same seed), kept on the CPU in fp32
    be = TorchBackend(m, device="cuda")
    eager = TorchBackend(varied(variant), device="cuda", cuda_graph=False)
    assert be.name == "torch-cuda-fp16-graph" and eager.name == "torch-cuda-fp16"
    for B, seed in ((2, 1), (1, 2), (2, 3)):
        x, c = inputs(m, B, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = be.run(x.cuda(), None if c is None else c.cuda())
        fallback = [str(w.message) for w in caught if "eagerly" in str(w.message)]
        assert not fallback and be.use_graph, fallback  # the capture worked: no eager fallback
        assert out.is_cuda and out.dtype == torch.float32 and out.shape == (B, 3, 64, 64)
        assert torch.isfinite(out).all()
        with torch.no_grad():
            ref = ref_model(x, c)
        assert rel_err(out, ref) < 1e-2
        assert rel_err(out, eager.run(x.cuda(), None if c is None else c.cuda())) < 2e-3  # same kernels
    assert len(be._graphs) == 2 and be.name.endswith("-graph")
    x1, c1 = inputs(m, 2, 10)
    x2, c2 = inputs(m, 2, 11)
    a = be.run(x1.cuda(), None if c1 is None else c1.cuda())
    keep = a.clone()
    be.run(x2.cuda(), None if c2 is None else c2.cuda())
    assert torch.equal(a, keep)
    fp32 = TorchBackend(varied(variant), device="cuda", precision="fp32")
    assert fp32.name == "torch-cuda-fp32-graph"
    a = fp32.run(x1.cuda(), None if c1 is None else c1.cuda())
    keep = a.clone()
    fp32.run(x2.cuda(), None if c2 is None else c2.cuda())  # fp32: the copy is not optional
    assert torch.equal(a, keep)
    with torch.no_grad():
        assert rel_err(keep, ref_model(x1, c1)) < 5e-3  # TF32 convolutions


@pytest.mark.skipif(available_backends()["onnxruntime-cuda"] is not True, reason="no onnxruntime CUDA provider")
def test_onnxruntime_cuda_iobinding_matches_cpu():
    m = varied("bottleneck")
    be = make_backend("onnxruntime", model=m, device="cuda")
    assert be.name == "onnxruntime-cuda" and be.device.type == "cuda"
    for B in (2, 1):
        x, c = inputs(m, B)
        out = be.run(x.cuda().contiguous(memory_format=torch.channels_last), c.cuda())
        assert out.is_cuda and out.shape == (B, 3, 64, 64)
        with torch.no_grad():
            assert rel_err(out, m(x, c)) < 5e-3


@pytest.mark.skipif(not CUDA or available_backends()["onnxruntime-cuda"] is True,
                    reason="needs CUDA and an onnxruntime without its CUDA provider")
def test_onnxruntime_cpu_provider_on_cuda_device():
    m = varied("vis")
    with pytest.warns(UserWarning, match="CPU execution provider"):
        be = make_backend("onnxruntime", model=m, device="cuda")
    assert be.name == "onnxruntime-cpu" and be.device.type == "cuda"
    x, _ = inputs(m)
    out = be.run(x.cuda())
    assert out.is_cuda
    with torch.no_grad():
        assert rel_err(out, m(x)) < 1e-4


@pytest.mark.skipif(available_backends()["tensorrt"] is not True, reason="no TensorRT execution provider")
def test_tensorrt_cuda_backend_matches_cpu():
    m = varied("bottleneck")
    be = make_backend("tensorrt", model=m)
    assert be.name == "tensorrt-fp16" and be.active_providers[0] == "TensorrtExecutionProvider"
    for B in (2, 1, 2):
        x, c = inputs(m, B, B)
        out = be.run(x.cuda(), c.cuda())
        assert out.is_cuda and out.dtype == torch.float32 and out.shape == (B, 3, 64, 64)
        with torch.no_grad():
            assert rel_err(out, m(x, c)) < 2e-2
    assert any(be.cache_dir.iterdir()), "no engine written to the cache"
    be2 = make_backend("tensorrt", model=m)  # a second session: the cached engine is reused
    x, c = inputs(m, 2, 5)
    assert rel_err(be2.run(x.cuda(), c.cuda()), be.run(x.cuda(), c.cuda())) < 1e-3
