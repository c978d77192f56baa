"""Anatomical frames, limits, conversions and presets (fixture + shipped asset)."""
import numpy as np
import pytest
import torch

from hand_fixture import ASSET_PARAMS, asset_param
from relit_hands import poses
from relit_hands.hand_model import HandModel, mirror_pose


@pytest.fixture(params=ASSET_PARAMS, scope="module")
def asset(request):
    return asset_param(request.param)


@pytest.fixture(scope="module")
def model(asset):
    return HandModel(asset, dtype=torch.float64)


def _random_angles(n, seed=0, margin=0.0):
    lim = poses.limits_array()
    u = np.random.default_rng(seed).uniform(size=(n, 15, 3))
    lo, hi = lim[..., 0] + margin, lim[..., 1] - margin
    return lo + u * (hi - lo)


def test_limits_table():
    lim = poses.limits_array()
    assert lim.shape == (15, 3, 2) and (lim[..., 0] < lim[..., 1]).all()
    assert set(poses.JOINT_LIMITS) == set(poses.FINGER_JOINT_NAMES)
    assert poses.JOINT_LIMITS["index_mcp"][0] == (-20.0, 90.0)
    assert poses.JOINT_LIMITS["middle_mcp"][1][1] < poses.JOINT_LIMITS["index_mcp"][1][1]


def test_frames_orthonormal_right_handed(asset):
    F = poses.joint_frames(asset)
    assert F.shape == (15, 3, 3)
    np.testing.assert_allclose(F.transpose(0, 2, 1) @ F, np.broadcast_to(np.eye(3), (15, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(F), 1.0, atol=1e-12)
    # twist along the bone, flexion axis perpendicular to the palm normal for fingers
    J = asset.joints
    t = J[2] - J[1]
    np.testing.assert_allclose(F[0][:, 2], t / np.linalg.norm(t), atol=1e-6)
    assert np.abs(F[:12, 1, 0]).max() < 1e-9  # f . y = 0
    # left asset gives the same (right-hand) frames
    np.testing.assert_allclose(poses.joint_frames(asset.mirrored()), F, atol=1e-6)


def test_anatomical_roundtrip(asset):
    ang = _random_angles(64, seed=1)
    pose = poses.anatomical_to_pose(torch.tensor(ang), asset)
    back = poses.pose_to_anatomical(pose, asset)
    np.testing.assert_allclose(back.numpy(), ang, atol=1e-8)
    # and pose -> anatomical -> pose
    pose2 = poses.anatomical_to_pose(back, asset)
    torch.testing.assert_close(pose2, pose, atol=1e-9, rtol=0)
    # numpy in -> numpy out, float32
    p32 = poses.anatomical_to_pose(ang[0], asset)
    assert isinstance(p32, np.ndarray) and p32.dtype == np.float32 and p32.shape == (45,)
    # left side
    pl = poses.anatomical_to_pose(torch.tensor(ang), asset, side="left")
    torch.testing.assert_close(pl, mirror_pose(pose))
    np.testing.assert_allclose(poses.pose_to_anatomical(pl, asset, side="left").numpy(), ang, atol=1e-8)


def test_single_axis_is_pure_rotation_about_frame_axis(asset):
    F = poses.joint_frames(asset)
    ang = np.zeros((15, 3))
    ang[4, 0] = 30.0  # middle PIP flexion
    pose = poses.anatomical_to_pose(ang, asset).reshape(15, 3)
    np.testing.assert_allclose(pose[4], np.radians(30) * F[4][:, 0], atol=1e-6)
    assert np.abs(np.delete(pose, 4, 0)).max() == 0


@pytest.mark.parametrize("joint", range(15))
def test_positive_flexion_moves_tip_to_palm(asset, model, joint):
    tip = {0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 4, 7: 4, 8: 4, 9: 3, 10: 3, 11: 3, 12: 0, 13: 0, 14: 0}[joint]
    ang = np.zeros((15, 3))
    ang[joint, 0] = 20.0
    rest = model(np.zeros(45)).keypoints[0, 16 + tip].numpy()
    posed = model(poses.anatomical_to_pose(ang, asset)).keypoints[0, 16 + tip].numpy()
    assert posed[1] < rest[1] - 1e-3  # toward -Y (palm side)
    if joint >= 12:  # thumb flexes across the palm, toward the little finger (+Z)
        assert posed[2] > rest[2]


def test_abduction_signs(asset, model):
    rest = model(np.zeros(45)).keypoints[0].numpy()
    for joint, tip, direction in ((0, 1, -1), (6, 4, +1), (9, 3, +1), (3, 2, -1)):
        ang = np.zeros((15, 3))
        ang[joint, 1] = 10.0  # abduction: index -> thumb side (-Z), pinky/ring -> +Z
        p = model(poses.anatomical_to_pose(ang, asset)).keypoints[0, 16 + tip].numpy()
        assert np.sign(p[2] - rest[16 + tip][2]) == direction
    ang = np.zeros((15, 3))
    ang[12, 1] = 30.0  # thumb CMC palmar abduction lifts the thumb away from the palm (-Y)
    p = model(poses.anatomical_to_pose(ang, asset)).keypoints[0, 16].numpy()
    assert p[1] < rest[16][1] - 5e-3


def test_clamp_pose(asset):
    ang = _random_angles(32, seed=2)
    inside = poses.anatomical_to_pose(torch.tensor(ang), asset)
    torch.testing.assert_close(poses.clamp_pose(inside, asset), inside, atol=1e-9, rtol=0)
    assert poses.is_within_limits(inside, asset).all()
    big = ang.copy()
    big[:, :, 0] += 60.0  # over-flexed / some inside still
    big[:, 1, 1] = 40.0   # PIP lateral deviation far out
    pose = poses.anatomical_to_pose(torch.tensor(big), asset)
    assert not poses.is_within_limits(pose, asset).any()
    cl = poses.clamp_pose(pose, asset)
    assert poses.is_within_limits(cl, asset).all()
    lim = poses.limits_array()
    a = poses.pose_to_anatomical(cl, asset).numpy()
    np.testing.assert_allclose(a, np.clip(big, lim[..., 0], lim[..., 1]), atol=1e-6)
    # numpy + left side
    pl = mirror_pose(pose[0].numpy())
    cll = poses.clamp_pose(pl, asset, side="left")
    assert isinstance(cll, np.ndarray)
    np.testing.assert_allclose(cll, mirror_pose(cl[0].numpy()), atol=1e-6)
    assert poses.is_within_limits(cll, asset, side="left")


def test_anatomical_to_pose_differentiable(asset):
    ang = torch.tensor(_random_angles(2, seed=3), requires_grad=True)
    poses.anatomical_to_pose(ang, asset).sum().backward()
    assert torch.isfinite(ang.grad).all()


@pytest.mark.parametrize("name", poses.POSE_PRESETS)
def test_presets_within_limits_and_mirrored(asset, name):
    r = poses.pose_preset(name, "right", asset)
    l = poses.pose_preset(name, "left", asset)
    assert r.shape == (45,) and r.dtype == np.float32
    assert poses.is_within_limits(r, asset) and poses.is_within_limits(l, asset, side="left")
    np.testing.assert_allclose(l, mirror_pose(r), atol=1e-7)
    assert set(poses.POSE_PRESETS) >= {"flat", "relaxed", "fist", "point", "pinch", "ok", "thumbs_up", "spread"}
    with pytest.raises(ValueError, match="unknown pose preset"):
        poses.pose_preset("wave", asset=asset)


def test_preset_geometry(asset, model):
    kp = lambda n: model(poses.pose_preset(n, asset=asset)).keypoints[0].numpy()  # noqa: E731
    tips = slice(16, 21)
    for n in ("pinch", "ok"):
        k = kp(n)
        assert np.linalg.norm(k[16] - k[17]) < 0.015, n  # thumb tip ~ index tip
    flat = kp("flat")
    fist = kp("fist")
    # fist: finger tips curled back under the palm: behind the knuckles, on the palm side
    for tip, mcp in ((17, 1), (18, 4), (19, 10), (20, 7)):
        assert fist[tip, 0] < flat[mcp, 0] - 0.015 and -0.04 < fist[tip, 1] < 0.0
        palm_pt = np.array([flat[mcp, 0] - 0.025, -0.012, flat[mcp, 2]])
        assert np.linalg.norm(fist[tip] - palm_pt) < 0.03
    # point: index straight, others fisted
    pt = kp("point")
    np.testing.assert_allclose(pt[17], flat[17], atol=2e-3)  # shipped weights bleed slightly
    assert pt[18, 0] < flat[4, 0]
    # thumbs up: thumb tip stays far out while fingers curl
    tu = kp("thumbs_up")
    assert np.linalg.norm(tu[16] - tu[17]) > 0.06
    # spread: index / pinky tips move apart
    sp = kp("spread")
    assert np.linalg.norm(sp[17] - sp[20]) > np.linalg.norm(flat[17] - flat[20]) + 0.01


def test_bad_inputs(asset):
    with pytest.raises(ValueError, match=r"\[\.\.\., 15, 3\]"):
        poses.anatomical_to_pose(np.zeros((14, 3)), asset)
    with pytest.raises(ValueError, match=r"\[\.\.\., 45\]"):
        poses.pose_to_anatomical(np.zeros(44), asset)
    with pytest.raises(ValueError, match="side"):
        poses.anatomical_to_pose(np.zeros((15, 3)), asset, side="up")
