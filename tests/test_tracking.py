"""Tracker input -> hand-model pose (relit_hands.tracking): round trips on synthetic trackers made
from the hand model, joint limits, invalid input, One Euro smoothing, left/right mirroring."""
import numpy as np
import pytest
import torch

from relit_hands.hand_model import HandModel, mirror_pose, mirror_translation, rodrigues
from relit_hands.poses import (anatomical_to_pose, clamp_pose, is_within_limits, limits_array,
                               matrix_to_axis_angle, pose_preset)
from relit_hands.tracking import (KP21_TO_KEYPOINT, XR_TO_KEYPOINT, HandRetargeter, OneEuroFilter,
                                  matrix_to_quat, quat_to_matrix, synthetic_keypoints21,
                                  synthetic_openxr_joints)
from relit_hands import tracking

M = np.diag([1.0, 1.0, -1.0])


@pytest.fixture(scope="module")
def models():
    return {"right": HandModel(side="right"), "left": HandModel(side="left")}


def random_pose(rng, side):
    """A pose with every anatomical angle uniform within its joint limits."""
    lim = limits_array()
    return anatomical_to_pose(rng.uniform(lim[..., 0], lim[..., 1]), side=side)


def local_angle_error_deg(pose_a, pose_b):
    """[15] geodesic angle between the local joint rotations of two poses."""
    Ra = rodrigues(torch.as_tensor(np.asarray(pose_a, np.float64).reshape(15, 3)))
    Rb = rodrigues(torch.as_tensor(np.asarray(pose_b, np.float64).reshape(15, 3)))
    c = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c.numpy(), -1.0, 1.0)))


def round_trip(models, kind, noise, n=40, seed=0, **kw):
    """(mean keypoint error mm, max mm, mean joint angle error deg) over n random frames, both hands."""
    rng = np.random.default_rng(seed)
    errs, angs = [], []
    for side, model in models.items():
        rt = HandRetargeter(model, **kw)
        for _ in range(n):
            pose = random_pose(rng, side)
            go, tr = rng.normal(0.0, 1.0, 3), rng.normal(0.0, 0.3, 3)
            truth = model(pose, go, tr, meshes=()).keypoints[0].double().numpy()
            if kind == "openxr":
                j = synthetic_openxr_joints(model, pose, go, tr, noise_mm=noise, noise_deg=noise, rng=rng)
                res = rt.retarget_openxr(j["positions"], j["orientations"], j["location_flags"])
            else:
                res = rt.retarget_keypoints21(synthetic_keypoints21(model, pose, go, tr, noise_mm=noise, rng=rng))
            assert not res.held and np.isfinite(res.pose).all()
            assert is_within_limits(res.pose, side=side, tol_deg=1e-3)
            posed = model(res.pose, res.global_orient, res.transl, meshes=()).keypoints[0].double().numpy()
            # the retargeter's own forward kinematics (keypoints, residuals) is the model's
            np.testing.assert_allclose(res.keypoints, posed, atol=2e-5)
            errs.append(np.linalg.norm(posed - truth, axis=-1) * 1e3)
            angs.append(local_angle_error_deg(pose, res.pose))
    errs, angs = np.array(errs), np.array(angs)
    return errs.mean(), errs.max(), angs.mean()


# ---------------------------------------------------------------------------------- rotations

def test_rotation_helpers_match_references():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(200, 3))
    r[:20] *= np.pi / np.linalg.norm(r[:20], axis=-1, keepdims=True)  # angles of exactly pi
    r[20:40] *= 1e-9
    R = rodrigues(torch.as_tensor(r)).numpy()
    np.testing.assert_allclose(tracking._exp(r), R, atol=1e-12)
    ref = matrix_to_axis_angle(torch.as_tensor(R)).numpy()
    got = tracking._log(R)
    np.testing.assert_allclose(tracking._exp(got), R, atol=1e-9)
    np.testing.assert_allclose(got[40:], ref[40:], atol=1e-9)  # (pi: the axis sign is arbitrary)
    np.testing.assert_allclose(tracking._log(R[40:]), ref[40:], atol=1e-9)  # fast path, no angle near pi
    q = matrix_to_quat(R)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), R, atol=1e-12)


def test_clamp_matches_poses_clamp(models):
    """The retargeter's numpy clamp equals relit_hands.poses.clamp_pose on poses outside the limits."""
    rt = HandRetargeter(models["right"])
    rng = np.random.default_rng(4)
    lim = limits_array()
    span = lim[..., 1] - lim[..., 0]
    for _ in range(10):
        ang = rng.uniform(lim[..., 0] - 0.5 * span, lim[..., 1] + 0.5 * span)
        pose = anatomical_to_pose(ang).astype(np.float64)
        ref = clamp_pose(pose)
        Rl = rodrigues(torch.as_tensor(pose.reshape(15, 3))).numpy()
        got = np.empty((15, 3, 3))
        for js, lv in zip(tracking._LEVELS, rt.levels):
            got[js - 1] = tracking._clamp(Rl[js - 1], lv)
        np.testing.assert_allclose(got, rodrigues(torch.as_tensor(ref.reshape(15, 3))).numpy(), atol=1e-9)


# ---------------------------------------------------------------------------------- round trips

def test_openxr_round_trip_noisy(models):
    mean_mm, max_mm, ang = round_trip(models, "openxr", noise=2.0)
    assert mean_mm < 3.0 and max_mm < 8.0 and ang < 5.0, (mean_mm, max_mm, ang)


def test_openxr_round_trip_noise_free_is_exact(models):
    mean_mm, max_mm, ang = round_trip(models, "openxr", noise=0.0, n=15, seed=1)
    assert max_mm < 0.05 and ang < 0.01, (mean_mm, max_mm, ang)


def test_keypoints21_round_trip_noisy(models):
    # measured (80 frames, 2 mm per coordinate): ~2.7 mm mean, ~9.5 mm max, ~9.5 deg; the joint angles
    # suffer from 2 mm noise on 2-4 cm bones (single frame, no orientations)
    mean_mm, max_mm, ang = round_trip(models, "keypoints21", noise=2.0)
    assert mean_mm < 3.5 and max_mm < 12.0 and ang < 11.0, (mean_mm, max_mm, ang)


def test_keypoints21_round_trip_noise_free(models):
    # positions are matched; the twist of each bone is only seen through the flexion planes (a thumb
    # CMC twist of a nearly straight thumb is not observable: a few mm at the thumb tip at worst)
    mean_mm, max_mm, ang = round_trip(models, "keypoints21", noise=0.0, n=30, seed=2, position_noise_mm=0.2)
    assert mean_mm < 0.2 and max_mm < 6.0 and ang < 5.0, (mean_mm, max_mm, ang)


def test_mapping_tables():
    assert sorted(KP21_TO_KEYPOINT.tolist()) == list(range(21))
    assert sorted(k for k in XR_TO_KEYPOINT.tolist() if k >= 0) == list(range(21))
    assert (XR_TO_KEYPOINT[[0, 6, 11, 16, 21]] == -1).all()  # palm and finger metacarpals
    assert XR_TO_KEYPOINT[2] == 13 and KP21_TO_KEYPOINT[1] == 13  # thumb CMC = MANO thumb1


def test_synthetic_openxr_frames_follow_the_spec(models):
    """-Z of each finger joint frame points along its bone to the next joint, +Y to the back of the hand."""
    model = models["right"]
    j = synthetic_openxr_joints(model, pose_preset("relaxed"), noise_mm=0.0, noise_deg=0.0)
    R = quat_to_matrix(j["orientations"].astype(np.float64))
    p = j["positions"].astype(np.float64)
    for a, b in [(7, 8), (8, 9), (9, 10), (12, 13), (3, 4), (4, 5)]:
        d = (p[b] - p[a]) / np.linalg.norm(p[b] - p[a])
        assert -R[a][:, 2] @ d > 0.99
    # flat hand, palm down (-Y): back of the hand is +Y
    j = synthetic_openxr_joints(model, np.zeros(45), noise_mm=0.0, noise_deg=0.0)
    R = quat_to_matrix(j["orientations"].astype(np.float64))
    for a in (1, 7, 8, 9, 12, 17, 22):
        assert R[a][:, 1] @ [0.0, 1.0, 0.0] > 0.99
    assert np.allclose(np.linalg.det(R), 1.0)


# ---------------------------------------------------------------------------------- mirroring

def test_left_equals_mirrored_right(models):
    rng = np.random.default_rng(5)
    pose_r = random_pose(rng, "right")
    go_r, tr_r = rng.normal(size=3), rng.normal(0, 0.2, 3)
    jr = synthetic_openxr_joints(models["right"], pose_r, go_r, tr_r, rng=rng)
    # the synthetic left tracker is the mirror of the right one (positions z -> -z; right-handed frames)
    jl0 = synthetic_openxr_joints(models["left"], mirror_pose(pose_r), mirror_pose(go_r), mirror_translation(tr_r),
                                  noise_mm=0.0, noise_deg=0.0)
    jr0 = synthetic_openxr_joints(models["right"], pose_r, go_r, tr_r, noise_mm=0.0, noise_deg=0.0)
    np.testing.assert_allclose(jl0["positions"], jr0["positions"] @ M, atol=1e-6)
    Rl, Rr = quat_to_matrix(jl0["orientations"].astype(np.float64)), quat_to_matrix(jr0["orientations"].astype(np.float64))
    np.testing.assert_allclose(Rl, M @ Rr @ np.diag([-1.0, 1.0, 1.0]), atol=1e-5)
    # retargeting the mirrored (noisy) right-hand data as a left hand gives the mirrored result
    pos_l = jr["positions"] @ M
    q_l = matrix_to_quat(M @ quat_to_matrix(jr["orientations"].astype(np.float64)) @ np.diag([-1.0, 1.0, 1.0]))
    a = HandRetargeter(models["right"]).retarget_openxr(jr["positions"], jr["orientations"])
    b = HandRetargeter(models["left"]).retarget_openxr(pos_l, q_l)
    np.testing.assert_allclose(b.pose, mirror_pose(a.pose), atol=1e-5)
    np.testing.assert_allclose(b.global_orient, mirror_pose(a.global_orient), atol=1e-5)
    np.testing.assert_allclose(b.transl, mirror_translation(a.transl), atol=1e-6)
    np.testing.assert_allclose(b.keypoints, a.keypoints @ M, atol=1e-6)
    kr = synthetic_keypoints21(models["right"], pose_r, go_r, tr_r, rng=rng)
    a = HandRetargeter(models["right"]).retarget_keypoints21(kr)
    b = HandRetargeter(models["left"]).retarget_keypoints21(kr @ M)
    np.testing.assert_allclose(b.pose, mirror_pose(a.pose), atol=1e-5)
    np.testing.assert_allclose(b.bone_length_scales, a.bone_length_scales, atol=1e-6)


# ---------------------------------------------------------------------------------- bone lengths

def test_bone_length_scales_and_residuals(models):
    model = models["right"]
    flat = synthetic_keypoints21(model, np.zeros(45), noise_mm=0.0).astype(np.float64)
    np.testing.assert_allclose(HandRetargeter(model).retarget_keypoints21(flat).bone_length_scales, 1.0, atol=1e-4)
    kp = synthetic_keypoints21(model, pose_preset("pinch"), noise_mm=0.0).astype(np.float64)
    res = HandRetargeter(model).retarget_keypoints21(kp)
    distal = [3, 6, 9, 12, 15]
    np.testing.assert_allclose(np.delete(res.bone_length_scales, distal), 1.0, atol=1e-4)
    # the skinned (LBS) fingertip of a bent distal joint comes a little closer to it
    np.testing.assert_allclose(res.bone_length_scales[distal], 1.0, atol=0.025)
    assert res.residuals.shape == (21,) and res.residuals.max() < 1e-3
    # a hand 10% larger (about the wrist): every bone 1.1x, and the fixed-size model cannot fit it
    big = kp[0] + 1.1 * (kp - kp[0])
    big_res = HandRetargeter(model).retarget_keypoints21(big)
    np.testing.assert_allclose(big_res.bone_length_scales, 1.1 * res.bone_length_scales, rtol=1e-5)
    assert big_res.residuals.max() > 5e-3


# ---------------------------------------------------------------------------------- invalid input

def test_wrong_shapes_raise_named_errors(models):
    rt = HandRetargeter(models["right"])
    with pytest.raises(ValueError, match=r"positions: expected shape \[26, 3\], got \[21, 3\]"):
        rt.retarget_openxr(np.zeros((21, 3)), np.zeros((26, 4)))
    with pytest.raises(ValueError, match=r"orientations: expected shape \[26, 4\]"):
        rt.retarget_openxr(np.zeros((26, 3)), np.zeros((26, 3)))
    with pytest.raises(ValueError, match=r"location_flags"):
        rt.retarget_openxr(np.zeros((26, 3)), np.zeros((26, 4)), location_flags=np.ones(25, int))
    with pytest.raises(ValueError, match=r"keypoints: expected shape \[21, 3\], got \[26, 3\]"):
        rt.retarget_keypoints21(np.zeros((26, 3)))
    with pytest.raises(ValueError, match=r"confidences: expected shape \[21\]"):
        rt.retarget_keypoints21(np.zeros((21, 3)), confidences=np.ones(20))


def test_invalid_joints_hold_the_last_pose(models):
    model = models["right"]
    rt = HandRetargeter(model)
    j = synthetic_openxr_joints(model, pose_preset("fist"), rng=0)
    nan_pos = j["positions"].copy()
    nan_pos[9] = np.nan
    with pytest.raises(ValueError, match="no previous good pose"):
        rt.retarget_openxr(nan_pos, j["orientations"])
    good = rt.retarget_openxr(j["positions"], j["orientations"], j["location_flags"])
    assert not good.held
    flags = j["location_flags"].copy()
    flags[13] &= ~tracking.XR_SPACE_LOCATION_POSITION_VALID_BIT
    zero_q = j["orientations"].copy()
    zero_q[3] = 0.0
    inf_q = j["orientations"].copy()
    inf_q[1, 0] = np.inf
    for res in (rt.retarget_openxr(nan_pos, j["orientations"]),
                rt.retarget_openxr(j["positions"], j["orientations"], flags),
                rt.retarget_openxr(j["positions"], zero_q),
                rt.retarget_openxr(j["positions"], inf_q)):
        assert res.held and np.isfinite(res.pose).all()
        np.testing.assert_array_equal(res.pose, good.pose)
        np.testing.assert_array_equal(res.transl, good.transl)
    # an unmapped joint (palm) may be invalid
    flags = j["location_flags"].copy()
    flags[0] = 0
    assert not rt.retarget_openxr(j["positions"], j["orientations"], flags).held
    # the OpenXR and 21-keypoint paths hold the same way
    kp = synthetic_keypoints21(model, pose_preset("ok"), rng=1)
    good = rt.retarget_keypoints21(kp)
    conf = np.ones(21)
    conf[8] = 0.1
    bad = kp.copy()
    bad[20, 1] = np.nan
    for res in (rt.retarget_keypoints21(kp, confidences=conf), rt.retarget_keypoints21(bad)):
        assert res.held
        np.testing.assert_array_equal(res.pose, good.pose)
    assert not rt.retarget_keypoints21(kp, confidences=np.full(21, 0.9)).held


# ---------------------------------------------------------------------------------- smoothing

def test_one_euro_reduces_jitter_and_follows_a_step():
    rng = np.random.default_rng(6)
    f = OneEuroFilter(min_cutoff=1.0, beta=5.0, d_cutoff=1.0, rate_hz=90.0)
    x = np.array([[0.1, 0.2, 0.3]])
    raw = x + rng.normal(0.0, 0.002, (180, 1, 3))
    out = np.array([f(r) for r in raw])
    jitter_raw = np.std(np.diff(raw[90:], axis=0))
    jitter_out = np.std(np.diff(out[90:], axis=0))
    assert jitter_out < jitter_raw / 5, (jitter_raw, jitter_out)
    assert np.abs(out[90:].mean(0) - x).max() < 1e-3
    # a 10 cm step (same noise): followed to within 3 mm after 0.25 s
    step = x + [[0.1, 0.0, 0.0]] + rng.normal(0.0, 0.002, (90, 1, 3))
    after = np.array([f(r) for r in step])
    assert np.abs(after[23:] - (x + [[0.1, 0.0, 0.0]])).max() < 3e-3
    assert np.abs(after[0] - x).max() < 0.1  # lags at first (it is a low-pass filter)
    # explicit timestamps (seconds): same behaviour; time must move forward
    g = OneEuroFilter()
    g(x, t=0.0)
    g(x, t=0.011)
    with pytest.raises(ValueError, match="timestamps must increase"):
        g(x, t=0.011)
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0.0)


def test_retargeter_smoothing_reduces_pose_jitter(models):
    model = models["right"]
    pose = pose_preset("relaxed")
    rng = np.random.default_rng(7)
    frames = [synthetic_openxr_joints(model, pose, noise_mm=2.0, noise_deg=2.0, rng=rng) for _ in range(60)]
    plain = HandRetargeter(model)
    smooth = HandRetargeter(model, position_filter=OneEuroFilter(), orientation_filter=OneEuroFilter(beta=0.5))
    a = np.array([plain.retarget_openxr(f["positions"], f["orientations"]).pose for f in frames])
    b = np.array([smooth.retarget_openxr(f["positions"], f["orientations"], timestamp=i / 90.0).pose
                  for i, f in enumerate(frames)])
    assert np.std(np.diff(b[30:], axis=0)) < np.std(np.diff(a[30:], axis=0)) / 3
    err_plain = local_angle_error_deg(pose, a[-1]).mean()
    err_smooth = local_angle_error_deg(pose, b[-1]).mean()
    assert err_smooth < err_plain
    smooth.reset()
    assert smooth.last is None


# ---------------------------------------------------------------------------------- shape from tracking

def test_shape_from_scales_validates_and_uses_the_median():
    from relit_hands.tracking import shape_from_scales
    s = shape_from_scales(np.full(16, 1.1))
    assert s.shape == (16, 2) and s.dtype == np.float32
    np.testing.assert_allclose(s[:, 0], 1.1, rtol=1e-6)
    np.testing.assert_allclose(s[:, 1], 1.0)
    frames = np.ones((5, 16))
    frames[0] = 9.0  # one outlier frame does not move the median
    np.testing.assert_allclose(shape_from_scales(frames)[:, 0], 1.0)
    np.testing.assert_allclose(shape_from_scales(np.full(16, 50.0))[:, 0], 2.0)  # clipped
    with pytest.raises(ValueError, match="scales"):
        shape_from_scales(np.ones(15))
    with pytest.raises(ValueError, match="NaN"):
        shape_from_scales(np.full(16, np.nan))
    with pytest.raises(ValueError, match="shape"):
        HandRetargeter(HandModel(side="right"), shape=np.ones((16, 3)))


@pytest.mark.parametrize("kind", ["openxr", "keypoints21"])
def test_tracked_bone_lengths_recover_a_shaped_hand(models, kind):
    """A hand made with known per-bone length scales (girth 1): the median of the tracked
    bone_length_scales recovers them (the distal bones end at LBS fingertips, up to ~7% short
    over strongly bent random poses), and solving + re-posing on the recovered shape fits the tracked joints better than the
    unshaped model does."""
    from relit_hands.tracking import shape_from_scales
    rng = np.random.default_rng(7)
    distal = [3, 6, 9, 12, 15]
    for side, model in models.items():
        shape = np.ones((16, 2))
        shape[:, 0] = rng.uniform(0.9, 1.12, 16)
        plain = HandRetargeter(model)
        frames, scales = [], []
        for _ in range(40):
            pose = random_pose(rng, side)
            go, tr = rng.normal(0.0, 1.0, 3), rng.normal(0.0, 0.3, 3)
            truth = model(pose, go, tr, shape=shape, meshes=()).keypoints[0].double().numpy()
            if kind == "openxr":
                j = synthetic_openxr_joints(model, pose, go, tr, noise_mm=1.0, noise_deg=1.0, rng=rng, shape=shape)
                call = lambda rt, j=j: rt.retarget_openxr(j["positions"], j["orientations"], j["location_flags"])
            else:
                k = synthetic_keypoints21(model, pose, go, tr, noise_mm=1.0, rng=rng, shape=shape)
                call = lambda rt, k=k: rt.retarget_keypoints21(k)
            res = call(plain)
            assert res.shape().shape == (16, 2)
            np.testing.assert_array_equal(res.shape()[:, 0], res.bone_length_scales)
            scales.append(res.bone_length_scales)
            frames.append((call, truth))
        est = shape_from_scales(np.array(scales))
        err = est[:, 0] / shape[:, 0] - 1.0
        assert np.abs(np.delete(err, distal)).max() < 0.04, err
        assert np.abs(err[distal]).max() < 0.08, err  # LBS tips of bent fingers read short
        shaped = HandRetargeter(model, shape=est)
        e_plain, e_shaped = [], []
        for call, truth in frames:
            a, b = call(plain), call(shaped)
            ka = model(a.pose, a.global_orient, a.transl, meshes=()).keypoints[0].double().numpy()
            kb = model(b.pose, b.global_orient, b.transl, shape=est, meshes=()).keypoints[0].double().numpy()
            np.testing.assert_allclose(b.keypoints, kb, atol=3e-5)  # results are the shaped model's
            assert is_within_limits(b.pose, side=side, tol_deg=1e-3)
            e_plain.append(np.linalg.norm(ka - truth, axis=-1).mean())
            e_shaped.append(np.linalg.norm(kb - truth, axis=-1).mean())
        assert np.mean(e_shaped) < 0.85 * np.mean(e_plain), (np.mean(e_shaped), np.mean(e_plain))
        # bone_length_scales stay relative to the unshaped model; set_shape(None) restores it
        np.testing.assert_allclose(call(shaped).bone_length_scales, call(plain).bone_length_scales, atol=1e-6)
        shaped.set_shape(None)
        np.testing.assert_allclose(call(shaped).pose, call(plain).pose, atol=1e-6)
