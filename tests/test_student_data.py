"""The student training-set format: what the (stand-in) teacher writes, and what the Dataset reads."""
import json

import numpy as np
import pytest
import torch

from relit_hands.hand_model import HandAsset
from relit_hands.tools.student_data import (StudentDataset, StudentDatasetError, make_synthetic_student_set,
                                      read_manifest, synthetic_teacher_target)
from relit_hands.student import FEATURE_NAMES, select_channels

torch.set_num_threads(1)
R = 64


@pytest.fixture(scope="module")
def sset(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("sset")
    make_synthetic_student_set(root, engine, n=4, resolution=R, n_lights=32, seed=3)
    return root


def test_manifest_and_sample_files(sset, engine):
    man = read_manifest(sset)
    assert man["version"] == 1 and man["resolution"] == R and man["n_lights"] == 32
    assert man["feature_names"] == list(FEATURE_NAMES)
    assert "STAND-IN" in man["generator"]
    assert [s["split"] for s in man["samples"]] == ["train", "train", "train", "val"]
    for s in man["samples"]:
        assert set(s) >= {"id", "split", "scene", "env", "view_origin", "file"}
        assert set(s["env"]) == {"id", "yaw_deg", "pitch_deg"}
        H = len(s["scene"]["hands"])
        with np.load(sset / s["file"], allow_pickle=False) as z:
            Vp = engine.asset.proxy_vertices.shape[0]
            assert z["vertex_features"].dtype == np.float16 and z["vertex_features"].shape == (H, Vp, 19)
            assert z["vertex_features_novis"].shape == (H, Vp, 19)
            assert z["target"].dtype == np.float16 and z["target"].shape == (H, 3, R, R)
            assert z["energy"].shape == (3,) and z["env_sh"].shape == (9, 3)
            nov = z["vertex_features_novis"].astype(np.float32)
            # all rays visible: diffuse_vis == diffuse_novis, ao == 1
            assert np.allclose(nov[..., 0:3], nov[..., 3:6], atol=2e-3)
            assert np.allclose(nov[..., 15], 1.0)


def test_dataset_items_and_target_function(sset, engine):
    ds = StudentDataset(sset, "train")
    n_hands = sum(len(s["scene"]["hands"]) for s in read_manifest(sset)["samples"] if s["split"] == "train")
    assert len(ds) == n_hands
    it = ds[0]
    assert it["maps"].shape == (19, R, R) and it["maps_novis"].shape == (19, R, R)
    assert it["target"].shape == (3, R, R) and it["env_code"].shape == (30,) and it["mask"].dtype == torch.bool
    # the stand-in teacher's target / energy is its documented function of the gathered features
    alb = HandAsset.load().albedo_map(R)
    want = synthetic_teacher_target(it["maps"][None], FEATURE_NAMES, alb, torch.ones(3))[0]
    m = it["mask"]
    rel = (want - it["target"])[:, m].abs().max() / want[:, m].abs().max()
    assert rel < 5e-3  # float16 storage
    # gathered maps agree with the engine's own feature path for the same frame
    vds = StudentDataset(sset, None, variant="vis")
    assert torch.allclose(vds[0]["inputs"], it["maps"])
    nov = StudentDataset(sset, "train", variant="novis")[0]["inputs"]
    assert nov.shape == (15, R, R)
    bot = StudentDataset(sset, "train", variant="bottleneck")[0]["inputs"]
    assert torch.allclose(bot, select_channels(it["maps"][None], FEATURE_NAMES, ["normal_x", "normal_y", "normal_z"])[0])
    # --turn: the same inputs with the normals turned; refused for the bottleneck code
    tds = StudentDataset(sset, "train", variant="vis", turn=True)
    tds.reseed(3)
    t = tds[0]["inputs"]
    k = [FEATURE_NAMES.index(f"normal_{c}") for c in "xyz"]
    rest = [i for i in range(len(FEATURE_NAMES)) if i not in k]
    assert torch.equal(t[rest], it["maps"][rest]) and not torch.allclose(t[k], it["maps"][k])
    with pytest.raises(StudentDatasetError, match="bottleneck"):
        StudentDataset(sset, "train", variant="bottleneck", turn=True)


def test_bad_sets_raise_clear_errors(sset, tmp_path):
    with pytest.raises(StudentDatasetError, match="no manifest"):
        StudentDataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StudentDatasetError, match="manifest.json"):
        StudentDataset(tmp_path)
    man = json.loads((sset / "manifest.json").read_text())
    man["asset"]["sha1"] = "0" * 16
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(StudentDatasetError, match="different hand asset"):
        StudentDataset(tmp_path)
    man = json.loads((sset / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(StudentDatasetError, match="sample file not found"):
        StudentDataset(tmp_path, "train")[0]


def test_several_sets_pool_their_samples_and_must_agree(sset, engine, tmp_path):
    other = tmp_path / "other"
    make_synthetic_student_set(other, engine, n=2, resolution=R, n_lights=32, seed=5)
    one, two = StudentDataset(sset, "train"), StudentDataset(other, "train")
    both = StudentDataset([sset, other], "train")
    assert len(both) == len(one) + len(two)
    # items of the second set are read from the second folder (same relative file names in both)
    assert torch.equal(both[len(one)]["target"], two[0]["target"])
    assert torch.equal(both[0]["target"], one[0]["target"])
    assert not torch.equal(both[len(one)]["target"], one[0]["target"])
    assert len(StudentDataset([sset, other], "val")) == len(StudentDataset(sset, "val")) + len(StudentDataset(other, "val"))
    # a set made with other options is refused, naming it
    odd = tmp_path / "odd"
    make_synthetic_student_set(odd, engine, n=1, resolution=32, n_lights=32, seed=6)
    with pytest.raises(StudentDatasetError, match=f"{odd}: resolution 32"):
        StudentDataset([sset, odd], "train")


def test_turn_normals_turns_only_the_normals_rigidly():
    """The augmentation of train-student --turn: one rotation for the whole texture, applied to the
    normal channels only (unit length and angles between texels kept), seeded."""
    from relit_hands.tools.student_data import turn_normals

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 8, 8, generator=g)
    n = torch.nn.functional.normalize(torch.randn(3, 8, 8, generator=g), dim=0)
    x[3:6] = n
    a = turn_normals(x, [3, 4, 5], np.random.default_rng(1))
    b = turn_normals(x, [3, 4, 5], np.random.default_rng(1))
    assert torch.equal(a, b) and torch.equal(a[:3], x[:3])
    assert not torch.allclose(a[3:], x[3:], atol=1e-2)
    torch.testing.assert_close(a[3:].norm(dim=0), torch.ones(8, 8))
    # a rigid turn: the cosine between any two texels' normals is unchanged
    torch.testing.assert_close(torch.einsum("chw,c->hw", a[3:], a[3:, 0, 0]),
                               torch.einsum("chw,c->hw", x[3:], x[3:, 0, 0]), atol=1e-5, rtol=1e-5)
    Q = torch.linalg.lstsq(x[3:].reshape(3, -1).T, a[3:].reshape(3, -1).T).solution.T
    torch.testing.assert_close(Q @ Q.T, torch.eye(3), atol=1e-4, rtol=1e-4)
    assert abs(float(torch.linalg.det(Q)) - 1.0) < 1e-4                    # a rotation, not a mirror
