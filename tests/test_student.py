"""The student network: shapes and variants, export-friendly structure, safetensors save/load with
clear errors for missing / corrupt / mismatched files."""
import json

import numpy as np
import pytest
import torch

from relit_hands.student import (CODE_IN, FEATURE_NAMES, StudentLoadError, StudentNet, environment_code,
                                 load_student, read_student_meta, save_student, select_channels,
                                 variant_feature_names, variant_feature_source)

torch.set_num_threads(1)
SMALL = dict(base=8, levels=3, static_channels=4)


def small(variant="vis", R=32, seed=0):
    torch.manual_seed(seed)
    return StudentNet.for_variant(variant, resolution=R, **SMALL)


def test_variant_channels():
    assert variant_feature_names("vis") == list(FEATURE_NAMES) and len(FEATURE_NAMES) == 19
    nov = variant_feature_names("novis")
    assert len(nov) == 15 and "ao" not in nov and not any(n.startswith("diffuse_vis") for n in nov)
    assert variant_feature_names("bottleneck") == ["normal_x", "normal_y", "normal_z"]
    assert [variant_feature_source(v) for v in ("vis", "novis", "bottleneck")] == ["vis", "novis", "novis"]
    with pytest.raises(ValueError):
        variant_feature_names("nope")


@pytest.mark.parametrize("variant", ["vis", "novis", "bottleneck"])
def test_forward_shapes_positive(variant):
    m = small(variant)
    x = torch.rand(2, m.in_channels, 32, 32)
    code = torch.rand(2, CODE_IN) if variant == "bottleneck" else None
    with torch.no_grad():
        y = m(x, code)
    assert y.shape == (2, 3, 32, 32) and (y > 0).all()
    assert abs(float(y.mean()) - 0.05) < 0.03  # initialised near a mid-grey skin response


def test_bottleneck_uses_the_code_and_needs_it():
    m = small("bottleneck")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        m.out.weight.normal_(std=0.1)
        a, b = m(x, torch.zeros(1, CODE_IN)), m(x, torch.ones(1, CODE_IN))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="env_code"):
        m(x)


def test_resolution_must_fit_levels():
    with pytest.raises(ValueError, match="multiple"):
        StudentNet(19, resolution=36, levels=3)


def test_select_channels_and_environment_code():
    maps = torch.arange(4.0)[None, :, None, None].expand(1, 4, 2, 2)
    out = select_channels(maps, ["a", "b", "c", "d"], ["d", "b"])
    assert out[0, :, 0, 0].tolist() == [3.0, 1.0]
    with pytest.raises(ValueError, match="lack"):
        select_channels(maps, ["a", "b", "c", "d"], ["x"])
    sh = np.random.default_rng(0).normal(size=(9, 3))
    c1 = environment_code(sh, [1, 2, 3], [0, 0, 1], [0, 0, 0])
    c2 = environment_code(sh * 7, [7, 14, 21], [0, 0, 5], [0, 0, 0])  # HDR scale and distance free
    assert c1.shape == (CODE_IN,) and np.allclose(c1, c2, atol=1e-6)


def test_save_load_roundtrip(tmp_path):
    m = small("bottleneck")
    m.set_input_normalisation(torch.full((3,), 0.5), torch.full((3,), 2.0))
    p = save_student(tmp_path / "s.safetensors", m, {"note": "x"})
    m2, meta = load_student(p)
    assert meta["variant"] == "bottleneck" and meta["feature_names"] == ["normal_x", "normal_y", "normal_z"]
    assert meta["note"] == "x" and meta["resolution"] == 32 and meta["feature_source"] == "novis"
    x, c = torch.rand(2, 3, 32, 32), torch.rand(2, CODE_IN)
    with torch.no_grad():
        assert torch.equal(m.eval()(x, c), m2(x, c))
    # no pickle: the file is safetensors with a JSON header
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert "relit_hands_student" in header["__metadata__"]


def test_missing_file_error(tmp_path):
    p = tmp_path / "nope.safetensors"
    with pytest.raises(StudentLoadError, match="nope.safetensors.*not found"):
        load_student(p)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_error(tmp_path, damage):
    p = save_student(tmp_path / "s.safetensors", small())
    raw = p.read_bytes()
    p.write_bytes({"garbage": b"\x00\x01not a safetensors file" * 10, "truncated": raw[: len(raw) // 2],
                   "empty": b""}[damage])
    with pytest.raises(StudentLoadError, match=str(p.name)) as e:
        load_student(p)
    assert isinstance(e.value, ValueError)


def test_mismatched_weights_error(tmp_path):
    from safetensors.torch import load_file, save_file

    p = save_student(tmp_path / "s.safetensors", small())
    meta = read_student_meta(p)
    meta["base"] = 16  # claims a wider network than the tensors hold
    save_file(load_file(str(p)), str(p), metadata={"relit_hands_student": json.dumps(meta)})
    with pytest.raises(StudentLoadError, match="s.safetensors.*do not match"):
        load_student(p)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(StudentLoadError, match="other.safetensors.*metadata"):
        load_student(tmp_path / "other.safetensors")
