"""Inference backends: torch and ONNX Runtime agree on the very ONNX graph the TensorRT backend
would consume; the graph uses TensorRT-friendly operators only; backend selection and errors."""
import onnx
import pytest
import torch

from relit_hands.inference import (OnnxRuntimeBackend, TorchBackend, available_backends, export_onnx, onnx_maps_input,
                                   make_backend)
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
