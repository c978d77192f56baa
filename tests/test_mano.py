"""ManoHandModel through smplx, on a MANO-layout pickle generated from our asset."""
import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from hand_fixture import ASSET_PARAMS, asset_param
from relit_hands.hand_model import HandModel, mirror_pose

smplx = pytest.importorskip("smplx")
from relit_hands.mano import ManoHandModel  # noqa: E402


@pytest.fixture(params=ASSET_PARAMS, scope="module")
def asset(request):
    return asset_param(request.param)


def exact_regressor(V, J, k=24):
    """Sparse [16, V] regressor with J = R @ V exactly: per joint, the minimum-norm affine
    combination (weights sum to 1) of its k nearest vertices."""
    V = V.astype(np.float64)
    rows, cols, vals = [], [], []
    for j, p in enumerate(J.astype(np.float64)):
        nn = np.argsort(np.linalg.norm(V - p, axis=1))[:k]
        A = np.vstack([V[nn].T, np.ones(k)])  # 4 x k
        w = np.linalg.pinv(A) @ np.append(p, 1.0)
        rows += [j] * k
        cols += nn.tolist()
        vals += w.tolist()
    return scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(16, len(V)))


def write_mano_pickle(path, asset):
    Vn = len(asset.proxy_vertices)
    data = {
        "v_template": asset.proxy_vertices.astype(np.float64),
        "f": asset.proxy_faces.astype(np.uint32),
        "weights": asset.proxy_weights.astype(np.float64),
        "J_regressor": exact_regressor(asset.proxy_vertices, asset.joints),
        "kintree_table": np.stack([np.where(asset.parents < 0, 4294967295, asset.parents), np.arange(16)]).astype(np.int64),
        "posedirs": np.zeros((Vn, 3, 135)),
        "shapedirs": np.zeros((Vn, 3, 10)),
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)


@pytest.fixture(scope="module")
def mano_dir(asset, tmp_path_factory):
    d = tmp_path_factory.mktemp("mano")
    write_mano_pickle(d / "MANO_RIGHT.pkl", asset)
    write_mano_pickle(d / "MANO_LEFT.pkl", asset.mirrored())
    return d


@pytest.mark.parametrize("side", ["right", "left"])
def test_mano_matches_hand_model(asset, mano_dir, side):
    tips = asset.proxy_tip_vertex_ids
    mano = ManoHandModel(mano_dir, side, tip_vertex_ids=tips)
    ours = HandModel(asset, side)
    g = torch.Generator().manual_seed(0)
    pose = (torch.rand(3, 45, generator=g) * 2 - 1) * 0.6
    go = (torch.rand(3, 3, generator=g) * 2 - 1)
    tr = torch.rand(3, 3, generator=g) * 0.1
    if side == "left":
        pose, go = mirror_pose(pose), mirror_pose(go)
    a = mano(pose, go, tr)
    b = ours(pose, go, tr)
    assert a.render_vertices.shape == (3, len(asset.proxy_vertices), 3)
    torch.testing.assert_close(a.render_vertices, b.proxy_vertices, atol=1e-5, rtol=0)
    assert a.proxy_vertices is a.render_vertices
    torch.testing.assert_close(a.joints, b.joints, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.keypoints[:, 16:], b.proxy_vertices[:, tips], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.joint_transforms, b.joint_transforms, atol=1e-5, rtol=0)
    # single-pose numpy input, rest pose = template
    r = mano(np.zeros(45))
    np.testing.assert_allclose(r.render_vertices[0].numpy(), asset.proxy_vertices if side == "right"
                               else asset.mirrored().proxy_vertices, atol=1e-5)


def test_mano_single_file_and_errors(asset, mano_dir, tmp_path):
    f = tmp_path / "my_hand.pkl"
    f.write_bytes((mano_dir / "MANO_RIGHT.pkl").read_bytes())
    m = ManoHandModel(f, "right", tip_vertex_ids=asset.proxy_tip_vertex_ids)
    assert m(np.zeros(45)).keypoints.shape == (1, 21, 3)
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
        ManoHandModel(tmp_path, "right")
    with pytest.raises(FileNotFoundError):
        ManoHandModel(tmp_path / "nope.pkl")
    with pytest.raises(ValueError, match="tip_vertex_ids"):
        if len(asset.proxy_vertices) <= 744:
            ManoHandModel(mano_dir, "right")  # smplx's default tip ids need 778 vertices
        else:
            ManoHandModel(mano_dir, "right", tip_vertex_ids=[0, 1, 2])
    with pytest.raises(ValueError, match=r"\[45\]"):
        m(np.zeros(44))


def test_chumpy_pickle_error(tmp_path):
    try:
        import chumpy  # noqa: F401
        pytest.skip("chumpy is installed")
    except ImportError:
        pass
    f = tmp_path / "MANO_RIGHT.pkl"
    f.write_bytes(b"\x80\x02cchumpy.ch\nCh\nq\x00.")  # a pickle that references chumpy.ch.Ch
    with pytest.raises(ImportError, match="chumpy"):
        ManoHandModel(tmp_path, "right")
