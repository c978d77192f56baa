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


# ------------------------------------------------------------------ light head

TRANSLUCENT_NAMES = list(FEATURE_NAMES[:15]) + ["ao", "transmit_2mm_r", "transmit_2mm_g", "transmit_2mm_b",
                                                 "normal_x", "normal_y", "normal_z"]


def light_head_net(names=TRANSLUCENT_NAMES, R=32):
    from relit_hands.hand_model import HandAsset

    torch.manual_seed(0)
    m = StudentNet(len(names), base=8, levels=3, static_channels=4, resolution=R, feature_names=names,
                   albedo_prior=True, light_head=True)
    m.set_albedo(HandAsset.load().albedo_map(R))
    return m.eval()


def test_light_head_groups_pick_rgb_triplets():
    from relit_hands.student import light_head_groups

    g = light_head_groups(TRANSLUCENT_NAMES)
    assert g == {"diffuse": ["diffuse_vis", "diffuse_novis", "transmit_2mm"],
                 "specular": ["spec_a0.20", "spec_a0.40", "spec_a0.70"]}
    # an incomplete triplet is not a group; ao and normals never are
    assert light_head_groups(["diffuse_vis_r", "diffuse_vis_g", "ao", "normal_x"]) == {"diffuse": [], "specular": []}


def test_light_head_starts_lambertian():
    """Untrained: A / pi x diffuse_vis, plus 0.02 / pi x A x each other diffuse group, 0.01 x each
    specular lobe and a 0.002 x A residual (module docstring) -- computed here by hand."""
    m = light_head_net()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, m.in_channels, 32, 32, generator=g)
    with torch.no_grad():
        y = m(x)
    A = m.albedo
    ch = {n: i for i, n in enumerate(TRANSLUCENT_NAMES)}

    def rgb(prefix):
        return x[:, [ch[f"{prefix}_{c}"] for c in "rgb"]]

    want = A * (rgb("diffuse_vis") + 0.02 * (rgb("diffuse_novis") + rgb("transmit_2mm"))) / np.pi
    want = want + 0.01 * (rgb("spec_a0.20") + rgb("spec_a0.40") + rgb("spec_a0.70")) + 0.002 * A
    # the weight convolution starts with std 1e-3 weights: a few per cent around its bias
    torch.testing.assert_close(y, want, rtol=0.03, atol=2e-4)


def test_light_head_is_linear_in_the_light_for_fixed_weights():
    """Scaling only the light-linear channels of one texel neighbourhood changes the head's part of
    the output by exactly that factor when the weights do not see the change: checked by evaluating
    the head with the decoder output held fixed."""
    m = light_head_net()
    with torch.no_grad():
        m.head_diffuse.weight.normal_(std=0.3)   # weights that vary over texels
        m.head_specular.weight.normal_(std=0.3)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, m.in_channels, 32, 32, generator=g)
    d = torch.rand(2, m.channels[0], 32, 32, generator=g)
    with torch.no_grad():
        h1 = m._light_head(d, x)
        x2 = x.clone()
        lin = [i for i, n in enumerate(TRANSLUCENT_NAMES) if not n.startswith(("ao", "normal_"))]
        x2[:, lin] *= 2.5
        h2 = m._light_head(d, x2)
        x3 = x.clone()
        x3[:, [i for i in range(len(TRANSLUCENT_NAMES)) if i not in lin]] = 0.0  # ao / normals do not enter
        h3 = m._light_head(d, x3)
    torch.testing.assert_close(h2, 2.5 * h1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(h3, h1)


def test_light_head_needs_albedo_prior_and_radiometric_channels():
    with pytest.raises(ValueError, match="albedo_prior"):
        StudentNet(len(TRANSLUCENT_NAMES), base=8, levels=3, resolution=32, feature_names=TRANSLUCENT_NAMES,
                   light_head=True)
    names = ["normal_x", "normal_y", "normal_z"]
    with pytest.raises(ValueError, match="no radiometric"):
        StudentNet(3, base=8, levels=3, resolution=32, feature_names=names, albedo_prior=True, light_head=True)


def test_light_head_save_load_roundtrip(tmp_path):
    m = light_head_net()
    with torch.no_grad():
        m.head_diffuse.weight.normal_(std=0.1)
        m.head_specular.weight.normal_(std=0.1)
    m2, meta = load_student(save_student(tmp_path / "h.safetensors", m))
    assert meta["light_head"] is True and m2.light_head
    x = torch.rand(1, m.in_channels, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x), rtol=1e-5, atol=1e-7)


def test_default_student_path_follows_the_assets_layout(tmp_path):
    """The shipped student of an asset: student.safetensors for 'hand', student_hand_v2.safetensors
    for hand_v2 and for a person fitted from it (same layout, another folder)."""
    import shutil

    from relit_hands.hand_model import HandAsset, asset_path
    from relit_hands.student import default_student_path, shipped_layout_name

    v1, v2 = HandAsset.load(asset_path("hand")), HandAsset.load(asset_path("hand_v2"))
    person = tmp_path / "person"
    shutil.copytree(asset_path("hand_v2").parent, person)
    p = HandAsset.load(person / "right_hand.npz")
    assert default_student_path().name == "student.safetensors"
    assert default_student_path(asset=v1).name == "student.safetensors"
    assert default_student_path(asset=v2).name == "student_hand_v2.safetensors"
    assert default_student_path("novis", asset=p).name == "student_novis_hand_v2.safetensors"
    assert shipped_layout_name(p) == "hand_v2"
    moved = HandAsset.load(person / "right_hand.npz")
    moved.proxy_uvs = moved.proxy_uvs[::-1].copy()           # another layout: no shipped student
    assert shipped_layout_name(moved) is None
