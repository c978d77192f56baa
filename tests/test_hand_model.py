"""HandModel / HandAsset: MANO kinematics, mirroring, validation (fixture + shipped asset)."""
import numpy as np
import pytest
import torch

from hand_fixture import ASSET_PARAMS, asset_param, fixture_asset, make_fixture_arrays
from relit_hands.hand_model import (PARENTS, HandAsset, HandModel, mirror_pose, mirror_translation,
                                    rodrigues, vertex_normals)
from relit_hands import poses


@pytest.fixture(params=ASSET_PARAMS, scope="module")
def asset(request):
    return asset_param(request.param)


@pytest.fixture(scope="module")
def models(asset):
    return (HandModel(asset, "right", dtype=torch.float64), HandModel(asset, "left", dtype=torch.float64))


def _rand_pose(B, seed=0, scale=0.4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, 45, generator=g, dtype=torch.float64) * 2 - 1) * scale


def test_rest_pose_reproduces_template(asset):
    m = HandModel(asset)  # float32, the default
    out = m(np.zeros(45))
    assert out.render_vertices.shape == (1, len(asset.render_vertices), 3)
    assert out.proxy_vertices.shape == (1, len(asset.proxy_vertices), 3)
    assert out.joints.shape == (1, 16, 3) and out.keypoints.shape == (1, 21, 3)
    assert out.joint_transforms.shape == (1, 16, 4, 4)
    np.testing.assert_allclose(out.render_vertices[0].numpy(), asset.render_vertices, atol=1e-6)
    np.testing.assert_allclose(out.proxy_vertices[0].numpy(), asset.proxy_vertices, atol=1e-6)
    np.testing.assert_allclose(out.joints[0].numpy(), asset.joints, atol=1e-6)
    np.testing.assert_allclose(out.keypoints[0, 16:].numpy(), asset.render_vertices[asset.tip_vertex_ids], atol=1e-6)
    eye = np.broadcast_to(np.eye(3), (16, 3, 3))
    np.testing.assert_allclose(out.joint_transforms[0, :, :3, :3].numpy(), eye, atol=1e-7)


def test_weights_rows_sum_to_one(asset):
    for w in (asset.render_weights, asset.proxy_weights):
        assert w.shape[1] == 16 and w.min() >= 0
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(asset.parents, PARENTS)


def test_global_orient_rotates_about_wrist(models):
    m, _ = models
    go = torch.tensor([[0.3, -1.1, 0.7]], dtype=torch.float64)
    R = rodrigues(go)[0]
    J0 = m.rest_joints[0]
    for pose in (torch.zeros(1, 45, dtype=torch.float64), _rand_pose(1, seed=3)):
        a = m(pose)
        b = m(pose, go)
        for k in ("render_vertices", "proxy_vertices", "joints", "keypoints"):
            ref = (getattr(a, k)[0] - J0) @ R.T + J0
            torch.testing.assert_close(getattr(b, k)[0], ref, atol=1e-10, rtol=0)
        Gref = torch.eye(4, dtype=torch.float64)
        Gref[:3, :3] = R
        Gref[:3, 3] = J0 - R @ J0
        torch.testing.assert_close(b.joint_transforms[0], Gref @ a.joint_transforms[0], atol=1e-10, rtol=0)


def test_translation(models):
    m, _ = models
    pose, go = _rand_pose(2, seed=1), torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.5, 0.2]], dtype=torch.float64)
    t = torch.tensor([[0.1, -0.2, 0.5], [1.0, 2.0, 3.0]], dtype=torch.float64)
    a, b = m(pose, go), m(pose, go, t)
    for k in ("render_vertices", "proxy_vertices", "joints", "keypoints"):
        torch.testing.assert_close(getattr(b, k), getattr(a, k) + t[:, None], atol=1e-12, rtol=0)
    torch.testing.assert_close(b.joint_transforms[..., :3, 3], a.joint_transforms[..., :3, 3] + t[:, None])
    torch.testing.assert_close(b.joint_transforms[..., :3, :3], a.joint_transforms[..., :3, :3])


def test_matches_reference_lbs(models):
    """Independent numpy implementation of the MANO/SMPL equations."""
    m, _ = models
    asset = m.asset
    pose, go, tr = _rand_pose(1, seed=7, scale=0.8), np.array([0.4, 0.1, -0.3]), np.array([0.01, 0.02, 0.03])
    out = m(pose, go, tr)
    full = np.concatenate([go, pose[0].numpy()]).reshape(16, 3)
    J = asset.joints.astype(np.float64)

    def rod(r):
        th = np.linalg.norm(r)
        if th < 1e-12:
            return np.eye(3)
        k = r / th
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K

    G = []
    for j in range(16):
        L = np.eye(4)
        L[:3, :3] = rod(full[j])
        L[:3, 3] = J[j] - (J[PARENTS[j]] if j else 0)
        G.append(L if j == 0 else G[PARENTS[j]] @ L)
    A = []
    for j in range(16):
        T = np.eye(4)
        T[:3, 3] = -J[j]
        A.append(G[j] @ T)
    A = np.stack(A)
    V = asset.proxy_vertices.astype(np.float64)
    T = np.einsum("vj,jab->vab", asset.proxy_weights.astype(np.float64), A)
    ref = np.einsum("vab,vb->va", T[:, :3, :3], V) + T[:, :3, 3] + tr
    np.testing.assert_allclose(out.proxy_vertices[0].numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(out.joints[0].numpy(), np.stack([g[:3, 3] for g in G]) + tr, atol=1e-6)


def test_left_is_exact_mirror(models):
    right, left = models
    pose, go = _rand_pose(3, seed=5, scale=0.6), _rand_pose(3, seed=6)[:, :3]
    tr = torch.tensor([[0.05, -0.02, 0.1]] * 3, dtype=torch.float64)
    a = right(pose, go, tr)
    b = left(mirror_pose(pose), mirror_pose(go), mirror_translation(tr))
    flip = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    for k in ("render_vertices", "proxy_vertices", "joints", "keypoints"):
        torch.testing.assert_close(getattr(b, k), getattr(a, k) * flip, atol=1e-6, rtol=0)
    # float32 path too
    r32, l32 = HandModel(right.asset, "right"), HandModel(right.asset, "left")
    a, b = r32(pose.float(), go.float()), l32(mirror_pose(pose.float()), mirror_pose(go.float()))
    torch.testing.assert_close(b.render_vertices, a.render_vertices * flip.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.keypoints, a.keypoints * flip.float(), atol=1e-6, rtol=0)


def test_mirrored_asset_winding_and_uvs(asset):
    left = asset.mirrored()
    assert left.side == "left" and left.mirrored().side == "right"
    np.testing.assert_array_equal(left.render_uvs, asset.render_uvs)
    np.testing.assert_array_equal(left.render_vertices[:, 2], -asset.render_vertices[:, 2])
    # each face keeps its UV corners attached to the same position corners
    np.testing.assert_array_equal(left.render_faces[:, [0, 2, 1]], asset.render_faces)
    np.testing.assert_array_equal(left.render_uv_faces[:, [0, 2, 1]], asset.render_uv_faces)
    # outward normals stay outward: mirrored normals == mirror of right normals
    nr = vertex_normals(torch.tensor(asset.proxy_vertices[None], dtype=torch.float64), asset.proxy_faces)
    nl = vertex_normals(torch.tensor(left.proxy_vertices[None], dtype=torch.float64), left.proxy_faces)
    torch.testing.assert_close(nl, nr * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    # render vertices still sit where render_proxy_face/bary say, on the mirrored proxy
    tri = left.proxy_vertices[left.proxy_faces[left.render_proxy_face]]
    p = np.einsum("vk,vkc->vc", left.render_proxy_bary, tri)
    tri_r = asset.proxy_vertices[asset.proxy_faces[asset.render_proxy_face]]
    p_r = np.einsum("vk,vkc->vc", asset.render_proxy_bary, tri_r)
    np.testing.assert_allclose(p, p_r * np.array([1, 1, -1]), atol=1e-6)


def test_batch_consistency_and_broadcast(models):
    m, _ = models
    pose, go = _rand_pose(4, seed=11), _rand_pose(4, seed=12)[:, :3]
    tr = torch.rand(4, 3, dtype=torch.float64)
    batch = m(pose, go, tr)
    for i in range(4):
        one = m(pose[i], go[i], tr[i])
        torch.testing.assert_close(one.render_vertices[0], batch.render_vertices[i], atol=1e-12, rtol=0)
        torch.testing.assert_close(one.keypoints[0], batch.keypoints[i], atol=1e-12, rtol=0)
    # batch-1 parameters broadcast
    b2 = m(pose, go[:1], tr[0])
    torch.testing.assert_close(b2.joints[2], m(pose[2], go[0], tr[0]).joints[0])


def test_mesh_selection_and_numpy_input(models):
    m, _ = models
    pose = _rand_pose(2, seed=2).numpy()
    full = m(pose)
    only = m(pose, meshes=("proxy",))
    assert only.render_vertices is None
    torch.testing.assert_close(only.proxy_vertices, full.proxy_vertices)
    torch.testing.assert_close(only.keypoints, full.keypoints)
    with pytest.raises(ValueError, match="unknown mesh"):
        m(pose, meshes=("hires",))


def test_bad_inputs(models):
    m, _ = models
    with pytest.raises(ValueError, match=r"\[45\] or \[B, 45\].*\[48\]"):
        m(np.zeros(48))
    with pytest.raises(ValueError, match=r"expected shape"):
        m(np.zeros((2, 15, 3)))
    with pytest.raises(ValueError, match="global_orient"):
        m(np.zeros(45), np.zeros(4))
    with pytest.raises(ValueError, match="transl"):
        m(np.zeros(45), None, np.zeros((1, 2)))
    bad = np.zeros(45)
    bad[7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m(bad)
    with pytest.raises(ValueError, match="NaN"):
        m(np.zeros(45), np.array([0.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="batch size"):
        m(np.zeros((2, 45)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="side"):
        HandModel(m.asset, side="both")


def test_differentiable(models):
    m, _ = models
    pose = _rand_pose(2, seed=4).requires_grad_(True)
    go = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    out = m(pose, go)
    (out.render_vertices.square().sum() + out.keypoints.sum()).backward()
    assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0
    assert torch.isfinite(go.grad).all()
    # gradient at exactly zero pose is finite too
    z = torch.zeros(1, 45, dtype=torch.float64, requires_grad=True)
    m(z).proxy_vertices.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_rodrigues_matches_scipy():
    from scipy.spatial.transform import Rotation

    r = np.random.default_rng(0).normal(size=(50, 3)) * 1.5
    r[0] = 0
    r[1] = [1e-6, -2e-6, 0]
    np.testing.assert_allclose(rodrigues(torch.tensor(r)).numpy(), Rotation.from_rotvec(r).as_matrix(), atol=1e-12)


def test_vertex_normals_area_weighted():
    # a tent: two triangles of different area meeting along an edge
    V = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2.0]], dtype=torch.float64)
    F = np.array([[0, 1, 2], [0, 3, 1]])
    n = vertex_normals(V[None], F)[0]
    n1 = torch.tensor([0, 0, 1.0]) * 1.0  # |cross| = 1
    n2 = torch.tensor([0, 2.0, 0])  # (3-0) x (1-0) = (0,0,2) x (1,0,0) = (0, 2, 0)
    ref = (n1 + n2) / (n1 + n2).norm()
    torch.testing.assert_close(n[0], ref.double())
    torch.testing.assert_close(n[2], torch.tensor([0, 0, 1.0], dtype=torch.float64))
    assert vertex_normals(V, F).shape == (4, 3)


def test_asset_validation_errors(tmp_path):
    arrays = make_fixture_arrays()
    p = tmp_path / "broken.npz"
    a = dict(arrays)
    del a["proxy_weights"]
    np.savez(p, **a)
    with pytest.raises(ValueError, match=r"broken\.npz.*proxy_weights"):
        HandAsset.load(p)
    a = dict(arrays)
    a["render_weights"] = a["render_weights"][:, :15]
    np.savez(p, **a)
    with pytest.raises(ValueError, match=r"broken\.npz.*'render_weights'.*\[Vr, 16\]"):
        HandAsset.load(p)
    a = dict(arrays)
    a["render_uv_faces"] = a["render_uv_faces"][:-1]
    np.savez(p, **a)
    with pytest.raises(ValueError, match=r"render_uv_faces.*Fr="):
        HandAsset.load(p)
    a = dict(arrays)
    a["parents"] = np.arange(16) - 1
    np.savez(p, **a)
    with pytest.raises(ValueError, match="parents"):
        HandAsset.load(p)
    a = dict(arrays)
    a["proxy_weights"] = a["proxy_weights"] * 2
    np.savez(p, **a)
    with pytest.raises(ValueError, match="sum to 1"):
        HandAsset.load(p)
    a = dict(arrays)
    a["render_face_parent"] = a["render_face_parent"][:-3]
    np.savez(p, **a)
    with pytest.raises(ValueError, match="render_face_parent"):
        HandAsset.load(p)
    with pytest.raises(FileNotFoundError):
        HandAsset.load(tmp_path / "nope.npz")
    # a good file round-trips
    np.savez(p, **arrays)
    good = HandAsset.load(p)
    np.testing.assert_array_equal(good.render_faces, arrays["render_faces"])


def _finger_region(asset, j_prox, j_mid, radius):
    """Render vertices near joint j_mid whose nearest rest bone is one of the two bones meeting
    there (j_prox -> j_mid, j_mid -> child)."""
    from relit_hands.poses import _CHILD, _TIP

    V = asset.render_vertices.astype(np.float64)
    J = asset.joints.astype(np.float64)
    tips = V[asset.tip_vertex_ids]
    D = []
    for j in range(1, 16):
        end = J[_CHILD[j]] if j in _CHILD else tips[_TIP[j]]
        D.append(_dist_to_polyline(V, np.stack([J[j], end])))
    nearest = np.argmin(np.stack(D, 1), 1) + 1
    near = np.linalg.norm(V - J[j_mid], axis=1) < radius
    return np.nonzero(near & np.isin(nearest, [j_prox, j_mid]))[0]


def _dist_to_polyline(P, pts):
    d = np.full(len(P), np.inf)
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b - a
        t = np.clip(((P - a) @ ab) / (ab @ ab), 0, 1)
        d = np.minimum(d, np.linalg.norm(P - (a + t[:, None] * ab), axis=1))
    return d


def _pip_flex(asset, finger, deg=90.0):
    j_prox, j_pip, j_dip = finger
    m = HandModel(asset, dtype=torch.float64)
    ang = np.zeros((15, 3))
    ang[j_pip - 1, 0] = deg
    out = m(poses.anatomical_to_pose(ang, asset))
    idx = _finger_region(asset, j_prox, j_pip, radius=0.012)
    assert len(idx) > 10
    return out, idx


FINGERS = [(1, 2, 3), (4, 5, 6), (10, 11, 12), (7, 8, 9)]


@pytest.mark.parametrize("finger", FINGERS)
def test_pip_flexion_keeps_cross_section(asset, finger):
    """90 degrees of PIP flexion: the joint-region vertices (within 12 mm of the PIP, nearest to
    its two bones) keep > 50% of the rest minimum distance to the joint centre -- no collapse.
    (Distance to the posed bone *polyline* is not used: two-bone LBS with a 50/50 blend at the
    crease reaches exactly 0.5 of rest there on the palmar side even with ideal weights.)"""
    j_prox, j_pip, j_dip = finger
    out, idx = _pip_flex(asset, finger)
    d_rest = np.linalg.norm(asset.render_vertices[idx].astype(np.float64) - asset.joints[j_pip], axis=1)
    d_posed = np.linalg.norm(out.render_vertices[0, idx].numpy() - out.joints[0, j_pip].numpy(), axis=1)
    assert d_posed.min() > 0.5 * d_rest.min(), (d_posed.min(), d_rest.min())
    # the DIP joint really moved by 90 degrees about the PIP
    rest_pts = asset.joints[[j_prox, j_pip, j_dip]].astype(np.float64)
    posed_pts = out.joints[0, [j_prox, j_pip, j_dip]].numpy()
    u = rest_pts[2] - rest_pts[1]
    w = posed_pts[2] - posed_pts[1]
    assert abs(np.degrees(np.arccos(u @ w / np.linalg.norm(u) / np.linalg.norm(w))) - 90) < 1e-3


# ---------------------------------------------------------------------------- shape space


def _bone_end_index(j):
    """Child joint of j's bone, or None where the bone ends at a fingertip (or is the palm)."""
    return None if j == 0 or j % 3 == 0 else j + 1


def test_shape_ones_is_the_asset_and_batches(models):
    m, _ = models
    pose = _rand_pose(3, seed=11)
    plain = m(pose)
    ones = m(pose, shape=np.ones((16, 2)))
    assert torch.allclose(plain.render_vertices, ones.render_vertices, atol=1e-12)
    assert torch.allclose(plain.keypoints, ones.keypoints, atol=1e-12)
    shapes = 1 + 0.2 * torch.rand(3, 16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batched = m(pose, shape=shapes)
    for b in range(3):
        single = m(pose[b], shape=shapes[b])
        assert torch.allclose(batched.render_vertices[b], single.render_vertices[0], atol=1e-12)


def test_shape_scales_bone_lengths_exactly(models):
    m, _ = models
    shape = torch.ones(16, 2, dtype=torch.float64)
    scales = torch.linspace(0.8, 1.25, 16, dtype=torch.float64)
    shape[:, 0] = scales
    rest, shaped = m.rest_output(), m(np.zeros(45), shape=shape)
    for j in range(1, 16):
        c = _bone_end_index(j)
        if c is None:
            continue
        before = (rest.joints[0, c] - rest.joints[0, j]).norm()
        after = (shaped.joints[0, c] - shaped.joints[0, j]).norm()
        assert after / before == pytest.approx(float(scales[j]), rel=1e-9)
    # fingertips (bones ending at a tip) scale by the distal bone's length too
    from relit_hands.hand_model import TIP_ORDER

    for i, finger in enumerate(TIP_ORDER):
        j = {"thumb": 15, "index": 3, "middle": 6, "ring": 12, "pinky": 9}[finger]
        w = m.tip_weights[i]
        if w[j] > 0.999:  # a tip skinned to its distal bone only moves with it exactly
            before = (rest.keypoints[0, 16 + i] - rest.joints[0, j]).norm()
            after = (shaped.keypoints[0, 16 + i] - shaped.joints[0, j]).norm()
            assert after / before == pytest.approx(float(scales[j]), rel=1e-6)


def test_shape_girth_scales_across_the_bone_only(models):
    """Girth g on one phalanx moves each vertex by w_j (g - 1) times its offset across the
    bone axis (none along the bone), and moves no joint."""
    m, _ = models
    j, g = 5, 1.3  # middle finger, middle phalanx
    a, b = m.rest_joints[j], m.rest_joints[j + 1]
    u = (b - a) / (b - a).norm()
    shape = torch.ones(16, 2, dtype=torch.float64)
    shape[j, 1] = g
    out = m(np.zeros(45), shape=shape, meshes=("render",))
    assert torch.allclose(out.joints[0], m.rest_joints, atol=1e-12)
    off = m.render_rest - a
    across = off - (off @ u)[:, None] * u
    expected = m.render_rest + m.render_weights[:, j:j + 1] * (g - 1) * across
    assert torch.allclose(out.render_vertices[0], expected, atol=1e-12)
    assert (m.render_weights[:, j] > 0.5).sum() > 10  # the check covers a real finger segment


def test_shaped_hand_poses_with_the_same_skinning(models):
    """Posing a shaped hand = LBS of the shaped rest mesh with the asset's own weights."""
    from relit_hands.hand_model import rigid_transforms, shape_rest, skin

    m, left = models
    shape = 1 + 0.15 * torch.rand(1, 16, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    pose, go = _rand_pose(1, seed=6), torch.tensor([[0.2, -0.4, 0.1]], dtype=torch.float64)
    out = m(pose, go, shape=shape)
    J, (rv,) = shape_rest(shape, m.rest_joints, m.tip_rest, m.parents, [(m.render_weights, m.render_rest)])
    _, A = rigid_transforms(rodrigues(torch.cat([go, pose], 1).reshape(1, 16, 3)), J, m.parents)
    assert torch.allclose(out.render_vertices, skin(m.render_weights, A, rv), atol=1e-12)
    assert out.render_vertices.shape[1] == len(m.asset.render_vertices)  # same topology
    # the left hand with the same shape is the mirror image
    lo = left(mirror_pose(pose), mirror_pose(go), shape=shape)
    assert torch.allclose(lo.render_vertices * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64),
                          out.render_vertices, atol=1e-9)


def test_shape_bad_inputs(models):
    m, _ = models
    with pytest.raises(ValueError, match=r"\[16, 2\]"):
        m(np.zeros(45), shape=np.ones(32))
    bad = np.ones((16, 2))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        m(np.zeros(45), shape=bad)
    bad[3, 1] = 0.0
    with pytest.raises(ValueError, match="> 0"):
        m(np.zeros(45), shape=bad)
    with pytest.raises(ValueError, match="batch size"):
        m(np.zeros((2, 45)), shape=np.ones((3, 16, 2)))
