"""personalize (issue #21, step 3): the geometry fitter, the appearance solver, the command's inputs,
outputs, refusals and resume, and personalize-eval -- on tiny make-phone-video captures (Mitsuba on
the CPU at 4 spp: 10 monocular frames at 72 px, 8 frames x 3 views at 128 px) and on noise-free
synthetic observations.

The end-to-end fit runs with a fraction of the default iterations (``FitSettings(iterations_scale=...)``);
everything here takes a few minutes on 2 CPU cores."""
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from relit_hands.hand_model import HandAsset, HandModel, asset_path
from relit_hands.image_io import read_png, write_png
from relit_hands.tools import hand_fit as hf
from relit_hands.tools import personalize as ps
from relit_hands.tools import phone_video as pv
from relit_hands.tools import texture_fit as tf
from relit_hands.tools.cli import main as cli_main
from relit_hands.tracking import KP21_TO_KEYPOINT
from relit_hands.validation import InputError

BASE = asset_path("hand_v2")
FAST_GEOMETRY = dict(iterations_scale=0.35)


def _fast_geometry():
    return hf.FitSettings(**FAST_GEOMETRY)


def _fast_appearance():
    return tf.AppearanceSettings(rounds=2, direction_candidates=48, refine_rings_deg=(8.0,))


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ captures


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    out = tmp_path_factory.mktemp("capture") / "mono"
    pv.make_phone_video(out, frames=10, resolution=72, spp=4, person_seed=5, tone="dark", seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    out = tmp_path_factory.mktemp("capture") / "multi"
    pv.make_phone_video(out, frames=8, resolution=128, spp=4, person_seed=6, views=3, seed=4, progress=False)
    return out


@pytest.fixture(scope="module")
def personalized(tmp_path_factory, mono):
    """The command run once end to end on the monocular capture (fast settings)."""
    out = tmp_path_factory.mktemp("fit") / "my_hand"
    with warnings.catch_warnings(record=True) as caught:            # the tracker's lost frames are skipped
        warnings.simplefilter("always", UserWarning)
        summary = ps.personalize(out, video=mono / "frames", keypoints=mono / "keypoints.json", masks=mono / "masks",
                                 intrinsics=mono / "intrinsics.json", holdout_every=4, progress=False,
                                 geometry_settings=_fast_geometry(), appearance_settings=_fast_appearance())
    assert len(caught) == (1 if summary["skipped_frames"] else 0)
    return out, summary


def _fit_data(capture: Path):
    views = capture / "views.json"
    cap = ps.load_inputs(capture / "frames", capture / "keypoints.json", masks=capture / "masks",
                         intrinsics=None if views.is_file() else capture / "intrinsics.json",
                         views=views if views.is_file() else None)
    holdout = np.zeros(len(cap.frame_numbers), bool)
    return cap, hf.FitData(cap.frame_numbers, cap.keypoints, cap.confidence, cap.masks, holdout)


def _keypoint_error_mm(asset, fit, capture: Path, reference: str) -> np.ndarray:
    """[F] root-relative 3-D keypoint error (mm) of a fit's frames against the ground truth."""
    gt = json.loads((capture / "ground_truth" / "frames.json").read_text())["frames"]
    model = HandModel(asset)
    errs = []
    for i, n in enumerate(fit["frames"]):
        kp = model(fit["pose"][i], fit["global_orient"][i], fit["transl"][i], meshes=()).keypoints[0]
        kp = kp.double().numpy()[KP21_TO_KEYPOINT]
        true = np.asarray(gt[int(n)]["keypoints_3d"])
        if reference == "camera":
            v = gt[int(n)]["views"][0]
            true = true @ np.asarray(v["R"]).T + np.asarray(v["t"])
        errs.append(np.linalg.norm((kp - kp[0]) - (true - true[0]), axis=1).mean() * 1e3)
    return np.asarray(errs)


# ------------------------------------------------------------------------------------ geometry


def test_fit_model_matches_hand_model():
    """The fitter's differentiable hand is HandModel: same keypoints for the converted pose, and the
    baked asset reproduces the fitted rest shape."""
    asset = HandAsset.load(BASE)
    model = hf.HandFitModel(asset)
    g = torch.Generator().manual_seed(0)
    angles = torch.randn(3, 15, 3, generator=g) * 0.3
    go, tr = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g) * 0.1
    log_shape = torch.randn(16, 2, generator=g) * 0.04
    rest = model.rest(log_shape, None)
    kp, _ = model.posed(rest, angles, go, tr)
    with np.load(BASE) as z:
        base_arrays = {k: z[k] for k in z.files}
    arrays, _, _ = hf.bake_asset_arrays(base_arrays, log_shape.numpy(), np.zeros(model.basis_render.shape[1]))
    assert list(arrays) == list(base_arrays) and all(arrays[k].dtype == base_arrays[k].dtype for k in arrays)
    baked = HandModel(HandAsset.from_arrays(arrays))
    out = baked(model.pose_axis_angle(angles).float(), go, tr, meshes=()).keypoints[:, KP21_TO_KEYPOINT]
    assert float((out - kp).abs().max()) < 1e-5


def test_geometry_fit_improves_on_the_start(multi):
    """Three calibrated views: the fit lowers the keypoint error (2-D and 3-D) below its PnP start and the
    rest-pose vertex error below the un-personalised base asset's."""
    cap, data = _fit_data(multi)
    asset = HandAsset.load(BASE)
    model = hf.HandFitModel(asset)
    go, tr, _ = hf.pnp_initialise(model, data, cap.cameras)
    start = {"frames": cap.frame_numbers, "pose": [model.pose_axis_angle(hf._default_angles(1, 10.0, "cpu"))[0]
                                                   .numpy()] * len(go), "global_orient": go, "transl": tr}
    fit = hf.fit_geometry(data, cap.cameras, settings=_fast_geometry(), progress=False)
    with np.load(BASE) as z:
        base_arrays = {k: z[k] for k in z.files}
    arrays, _, _ = hf.bake_asset_arrays(base_arrays, fit.log_shape, fit.displacement_coefficients)
    fitted = HandAsset.from_arrays(arrays)
    true = HandAsset.load(multi / "ground_truth" / "asset")
    after = {"frames": cap.frame_numbers, "pose": fit.pose, "global_orient": fit.global_orient,
             "transl": fit.transl}
    err_start = _keypoint_error_mm(asset, start, multi, "world")
    err_fit = _keypoint_error_mm(fitted, after, multi, "world")
    assert err_fit.mean() < 0.6 * err_start.mean(), (err_fit.mean(), err_start.mean())
    assert err_fit.mean() < 12.0
    assert fit.keypoint_error_px.mean() < 4.0                          # pixels, 128-px frames, 1.5 px tracker noise
    v_fit = np.linalg.norm(fitted.render_vertices - true.render_vertices, axis=1).mean() * 1e3
    v_base = np.linalg.norm(asset.render_vertices - true.render_vertices, axis=1).mean() * 1e3
    assert v_fit < v_base, (v_fit, v_base)
    assert np.abs(fit.render_displacement_m).max() <= 2.2e-3


def _fist_frame(seed: int, size: int = 96):
    """One frame of the base hand in a fist (a thumbs-up for odd seeds) turned by a seeded rotation about
    a back-facing start, 0.4 m in front of a 40-degree camera, and its 21 keypoints with 1.5 px of
    Gaussian noise (confidence 0.9): (model, FitData, FitCameras, true rotation [3, 3])."""
    from scipy.spatial.transform import Rotation

    from relit_hands.camera import Camera
    from relit_hands.poses import pose_preset, pose_to_anatomical

    asset = HandAsset.load(BASE)
    model = hf.HandFitModel(asset)
    rng = np.random.default_rng(seed)
    preset = "fist" if seed % 2 == 0 else "thumbs_up"
    angles = torch.tensor(np.radians(pose_to_anatomical(pose_preset(preset), asset)), dtype=torch.float32)[None]
    R = Rotation.from_rotvec(rng.normal(size=3) * 0.6) * Rotation.from_euler("x", 90, degrees=True)
    go = torch.tensor(R.as_rotvec(), dtype=torch.float32)[None]
    K = Camera.intrinsics_from_fov(40.0, size, size)
    cams = hf.FitCameras(["phone"], K[None], np.eye(3)[None], np.zeros((1, 3)), size, size, "camera")
    rest = model.rest(torch.zeros(16, 2), None)
    with torch.no_grad():
        centre = model.posed(rest, angles, go, torch.zeros(1, 3))[0][0].double().numpy().mean(0)
        tr = torch.tensor(np.array([0.0, 0.0, 0.4]) - centre, dtype=torch.float32)[None]
        kp = model.posed(rest, angles, go, tr)[0]
        px, _ = hf.project(kp, torch.tensor(K[None], dtype=torch.float32), torch.eye(3)[None], torch.zeros(1, 3))
    obs = px.double().numpy() + rng.normal(size=(1, 1, 21, 2)) * 1.5
    data = hf.FitData(np.array([0]), obs, np.full((1, 1, 21), 0.9), None, np.zeros(1, bool))
    return model, data, cams, R.as_matrix()


def _angle_deg(rotvec, R) -> float:
    from scipy.spatial.transform import Rotation

    return float(np.degrees((Rotation.from_rotvec(rotvec) * Rotation.from_matrix(R).inv()).magnitude()))


def test_mirrored_root_is_a_rotation_with_the_same_palm_projection():
    """The depth mirror of a root (the planar palm's second pose): a proper rotation that turns the hand
    round (>= 90 degrees) while its palm points project within a few pixels of where they did."""
    model, data, cams, R = _fist_frame(10)
    rc = hf._RootCandidates(model, data, cams, hf.DEFAULT_FLEXION_DEG)
    t = np.array([0.01, -0.02, 0.4])
    R2, t2 = rc.mirrored(R, t)
    assert abs(np.linalg.det(R2) - 1.0) < 1e-9 and np.allclose(R2 @ R2.T, np.eye(3), atol=1e-9)
    assert _angle_deg(_cv2_rotvec(R2), R) > 90.0
    palm = rc.kp_rest[hf.PALM_PLANE_KEYPOINTS]
    K = cams.K[0]

    def proj(Rm, tm):
        x = (palm @ Rm.T + tm) @ K.T
        return x[:, :2] / x[:, 2:]

    assert np.abs(proj(R2, t2) - proj(R, t)).max() < 4.0            # pixels (96-px frame; the hand spans ~30)
    R3, t3 = rc.mirrored(R2, t2)                                       # the mirror of the mirror is the pose
    assert np.allclose(R3, R, atol=1e-9) and np.allclose(t3, t, atol=1e-9)


def _cv2_rotvec(R):
    import cv2

    return cv2.Rodrigues(np.asarray(R, np.float64))[0].reshape(3)


def test_flipped_fist_is_recovered_by_the_hypotheses():
    """A fist seen from the back with 1.5 px of keypoint noise: the single-hypothesis PnP start picks the
    palm's mirror (the old initialisation, from which the per-frame optimisation never left), while the
    multi-hypothesis start -- optimising root and fingers from the start, its depth mirror, the palm-plane
    IPPE pair, open and curled fingers -- recovers the true orientation, with a lower reprojection error."""
    for seed in (10, 30):
        model, data, cams, R = _fist_frame(seed)
        go_old, _, _ = hf.pnp_initialise(model, data, cams)
        assert _angle_deg(go_old[0], R) > 60.0, seed                  # the old start is the flip
        init = hf.hypothesis_initialise(model, data, cams, hf.FitSettings(iterations_scale=0.5))
        assert _angle_deg(init["global_orient"][0], R) < 25.0, (seed, init["method"])
        assert init["hypotheses"][0] >= 2 and not init["method"][0].startswith("hypothesis 1 ")
        assert init["angles"].shape == (1, 15, 3)
        # the chosen hypothesis explains the keypoints: a couple of pixels (the noise is 1.5 px)
        rest = model.rest(torch.zeros(16, 2), None)
        with torch.no_grad():
            kp, _ = model.posed(rest, init["angles"], torch.tensor(init["global_orient"], dtype=torch.float32),
                                torch.tensor(init["transl"], dtype=torch.float32), samples=False)
            px, _ = hf.project(kp, torch.tensor(cams.K, dtype=torch.float32), torch.eye(3)[None], torch.zeros(1, 3))
        assert float(np.linalg.norm(px[0, 0].numpy() - data.keypoints[0, 0], axis=1).mean()) < 3.0


def test_rest_hand_length_is_the_flat_hands_wrist_to_middle_tip():
    """rest_hand_length is HandModel's rest wrist-to-middle-fingertip distance, scales with the common
    length scale and carries gradients to the shape."""
    asset = HandAsset.load(BASE)
    model = hf.HandFitModel(asset)
    kp = HandModel(asset).rest_output().keypoints[0].double().numpy()[KP21_TO_KEYPOINT]
    base = float(hf.rest_hand_length(model, model.rest(torch.zeros(16, 2), None)))
    assert base == pytest.approx(np.linalg.norm(kp[12] - kp[0]), abs=1e-6)
    assert 0.17 < base < 0.22
    log_shape = torch.zeros(16, 2)
    log_shape[:, 0] = math.log(1.05)
    log_shape.requires_grad_(True)
    longer = hf.rest_hand_length(model, model.rest(log_shape, None))
    assert float(longer) == pytest.approx(1.05 * base, rel=1e-5)
    longer.backward()
    assert float(log_shape.grad[:, 0].abs().sum()) > 0


def test_measured_hand_length_makes_the_monocular_fit_metric(mono):
    """One camera cannot see the size; with the true hand length given, the fitted rest hand has it
    (to the prior's 2 mm), whatever the shape prior alone would have said."""
    cap, data = _fit_data(mono)
    true = hf.HandFitModel(HandAsset.load(mono / "ground_truth" / "asset"))
    true_length = float(hf.rest_hand_length(true, true.rest(torch.zeros(16, 2), None)))
    base = hf.HandFitModel(HandAsset.load(BASE))
    base_length = float(hf.rest_hand_length(base, base.rest(torch.zeros(16, 2), None)))
    fits = {}
    for name, length in (("none", None), ("true", true_length)):
        fit = hf.fit_geometry(data, cap.cameras, settings=hf.FitSettings(**FAST_GEOMETRY, hand_length_m=length),
                              progress=False)
        ls = torch.as_tensor(fit.log_shape, dtype=torch.float32)
        fits[name] = float(hf.rest_hand_length(base, base.rest(ls, None)))
    print("hand length (mm): true", true_length * 1e3, "base", base_length * 1e3, "fits", fits)
    assert fits["true"] == pytest.approx(true_length, abs=0.003)     # the prior is 2 mm; 10 tiny frames pull
    assert abs(fits["none"] - true_length) > 0.004                   # without it the size is the prior's


def test_held_out_frames_are_tied_to_their_fixed_neighbours():
    """A held-out frame's temporal anchors are its nearest training frames before and after it (copies:
    fitting the held-out frames moves nothing else); a frame at the clip's end has one anchor."""
    frames = np.array([0, 1, 2, 3, 4, 6, 7, 9])                   # frames 5 and 8 were dropped (no hand)
    held = np.array([2, 5, 7])
    train = np.setdiff1d(np.arange(len(frames)), held)
    data = hf.FitData(frames, np.zeros((8, 1, 21, 2)), np.ones((8, 1, 21)), None, np.isin(np.arange(8), held))
    state = {"angles": torch.zeros(8, 15, 3), "global_orient": torch.zeros(8, 3),
             "transl": torch.arange(8, dtype=torch.float32)[:, None].repeat(1, 3)}
    a = hf._holdout_anchors(state, data, train, held)
    assert a["transl"][:, :, 0].tolist() == [[1, 3], [4, 6], [6, 0]]
    assert a["valid"].tolist() == [[1, 1], [1, 1], [1, 0]]
    assert a["gap"].tolist() == [[1, 1], [2, 1], [2, 1]]             # in input frames
    a["transl"] += 1.0
    assert float(state["transl"][1, 0]) == 1.0                       # a copy, not the training frames' state


# ------------------------------------------------------------------------------------ appearance


@pytest.fixture(scope="module")
def synthetic_views(tmp_path_factory):
    """Noise-free observations of the base hand in three poses / cameras (GL renders of UV and
    normals), a known albedo at the working resolution and a known lighting per frame."""
    from relit_hands.engine import Engine
    from relit_hands.hand_model import vertex_normals
    from relit_hands.poses import pose_preset
    from relit_hands.raycast import get_backend
    from relit_hands.scene import HandState, Scene
    from relit_hands.camera import Camera

    flat = tf.flat_normal_asset(BASE.parent, tmp_path_factory.mktemp("flat") / "hand")
    engine = Engine(asset=flat, device="cpu", compositor="gl")
    caster = get_backend("auto")
    Rw = 32
    lookup = engine.uv_rasterizer(Rw)
    rng = np.random.default_rng(0)
    albedo = (0.2 + 0.6 * rng.random((Rw * Rw, 3)))                       # a known, wild albedo
    states = [HandState("right", pose_preset("relaxed"), np.array([-np.pi / 2, 0, 0], np.float32)),
              HandState("right", pose_preset("spread"), np.array([np.pi / 2, 0, 0], np.float32)),
              HandState("right", pose_preset("point"), np.array([0.0, 0.4, 0.0], np.float32))]
    lights = [tf.FrameLighting(np.c_[[0.9, 0.1, 0.3, -0.2, 0, 0.05, 0, 0, 0.02]] * [1.0, 0.9, 0.8],
                               np.array([0.3, 0.8, 0.5]) / np.linalg.norm([0.3, 0.8, 0.5]), np.array([1.5, 1.3, 1.0])),
              tf.FrameLighting(np.c_[[0.7, -0.2, 0.2, 0.1, 0.03, 0, 0, 0.02, 0]] * [0.8, 0.9, 1.0],
                               np.array([-0.5, 0.5, 0.7]) / np.linalg.norm([-0.5, 0.5, 0.7]), np.array([2.0, 1.8, 1.9])),
              tf.FrameLighting(np.c_[[0.8, 0.2, 0.0, 0.1, 0, 0, 0.04, 0, 0]] * [1.0, 1.0, 1.0],
                               np.array([0.0, 0.2, 1.0]) / np.linalg.norm([0.0, 0.2, 1.0]), np.array([1.2, 1.0, 0.9]))]
    frames = {}
    for i, (state, light) in enumerate(zip(states, lights)):
        posed = engine.pose(Scene([state]), meshes=("render", "proxy"))["right"]
        pts = posed.render_vertices[0].numpy()
        cam = Camera.look_at(pts.mean(0) + np.array([0.0, 0.1, 0.45]), pts.mean(0), width=96, height=96,
                             fov_y_deg=35)
        obs, _ = tf.observe_view(engine, state, cam, np.zeros((96, 96, 3)), None, None, lookup, Rw, edge_px=1)
        pv_ = posed.proxy_vertices[0]
        fo = tf.FrameObservations([obs], pv_.double().numpy(), vertex_normals(pv_, engine.asset.proxy_faces).double().numpy())
        vis = tf.frame_visibility(fo, light.direction[None], engine.asset.proxy_faces, caster)[:, 0]
        obs.colour = albedo[obs.texel] * tf.shading(obs.normal, vis, light)    # the image, exactly the model
        frames[i] = fo
    yield {"engine": engine, "caster": caster, "frames": frames, "albedo": albedo, "lights": lights, "Rw": Rw,
           "faces": engine.asset.proxy_faces}
    engine.release()


def test_lighting_least_squares_recovers_known_lighting(synthetic_views):
    """With the light's direction known the 9 SH + 1 directional coefficients per channel are a linear
    least-squares problem: recovered exactly from noise-free shading. With the direction searched, it
    is found within a few degrees and the shading is reproduced."""
    s = synthetic_views
    for i, truth in enumerate(s["lights"]):
        obs = s["frames"][i]
        albedo = s["albedo"][obs.concat("texel")]
        exact = tf.solve_lighting(obs, albedo, s["faces"], s["caster"], tf.AppearanceSettings(refine_rings_deg=()),
                                  direction=truth.direction, search=False)
        np.testing.assert_allclose(exact.direction, truth.direction, atol=1e-9)
        np.testing.assert_allclose(exact.colour, truth.colour, rtol=1e-3, atol=1e-4)
        Y = tf.sh_design(obs.concat("normal"))        # the SH irradiance on the normals the frame shows
        np.testing.assert_allclose(Y @ exact.sh_irradiance, Y @ truth.sh_irradiance, atol=1e-3)
        # (the coefficients themselves only as well as one view's normals pin every band down)
        np.testing.assert_allclose(exact.sh_irradiance, truth.sh_irradiance, atol=0.03)
        assert exact.rms < 1e-4
        # searched: only the clamped terminator and the shadows tell a directional light from SH bands
        # 0-1, and the proxy's per-vertex visibility is piecewise constant, so a few degrees
        est = tf.solve_lighting(obs, albedo, s["faces"], s["caster"],
                                tf.AppearanceSettings(direction_candidates=256, refine_rings_deg=(6.0, 3.0, 1.5, 0.75)))
        angle = np.degrees(np.arccos(np.clip(est.direction @ truth.direction, -1, 1)))
        assert angle < 4.0, (i, angle)
        np.testing.assert_allclose(est.colour, truth.colour, rtol=0.15)
        assert est.rms < 0.03 * float(np.abs(obs.concat("colour")).mean()), est.rms   # shadow edges move a little


def test_albedo_least_squares_recovers_known_albedo(synthetic_views):
    """Given the true lighting the per-texel solve is exact; alternating from the wrong (base) albedo
    recovers it up to the per-channel scale."""
    s = synthetic_views
    frames = [s["frames"][i] for i in range(3)]
    prior = np.full((s["Rw"] ** 2, 3), 0.5)
    settings = tf.AppearanceSettings(prior_observations=1e-6)
    albedo, W, count, _ = tf.solve_albedo(frames, s["lights"], s["faces"], s["caster"], s["Rw"], prior, settings)
    seen = count > 0
    assert seen.sum() > 200
    np.testing.assert_allclose(albedo[seen], s["albedo"][seen], atol=1e-4)
    # alternation from the base albedo
    base = np.full((512, 512, 3), 0.45, np.float32)
    fit = tf.fit_appearance(dict(enumerate(frames)), [0, 1, 2], base, s["faces"], s["caster"],
                            tf.AppearanceSettings(rounds=4, prior_observations=1e-4), progress=False,
                            resolution=s["Rw"])
    got = fit.albedo_work.reshape(-1, 3).astype(np.float64)
    good = fit.weight_work > np.percentile(fit.weight_work[fit.weight_work > 0], 25)
    k = (got[good] * s["albedo"][good]).sum(0) / (got[good] ** 2).sum(0)
    rel = np.abs(got[good] * k - s["albedo"][good]) / s["albedo"][good]
    assert np.median(rel) < 0.03 and np.percentile(rel, 90) < 0.1, (np.median(rel), np.percentile(rel, 90))
    assert fit.albedo.shape == (512, 512, 3) and fit.coverage.shape == (512, 512)


def test_sparse_deviation_keeps_marks_and_drops_blotches():
    """A solved albedo = base x a gauge x a smooth +-15 % blotch, with a dark mark (-1.6 in log) on
    3 % of the texels: the gauge is recovered, the blotch shrinks to 0 and the mark survives less
    the threshold; unobserved texels carry no departure; threshold None keeps everything."""
    rng = np.random.default_rng(3)
    Rw = 64
    T = Rw * Rw
    yy, xx = np.mgrid[0:Rw, 0:Rw] / Rw
    base = (0.3 + 0.4 * rng.random((T, 3))).astype(np.float64)
    blotch = 0.15 * np.stack([np.sin(2 * np.pi * (xx + c / 3)) * np.cos(2 * np.pi * yy) for c in range(3)], -1)
    mark = np.zeros((Rw, Rw), bool)
    mark[10:21, 40:51] = True                                    # 121 texels, 3 %
    log_gauge = np.array([0.2, -0.1, 0.05])
    d_true = blotch.reshape(T, 3) + np.where(mark.reshape(T, 1), np.array([-1.6, -1.6, -1.2]), 0.0)
    albedo = base * np.exp(log_gauge + d_true)
    weight = rng.uniform(0.5, 2.0, T)
    weight[:Rw * 4] = 0.0                                        # the first four rows never seen
    g, dev, t = tf.sparse_deviation(albedo, base, weight)
    np.testing.assert_allclose(g, log_gauge, atol=0.03)         # the blotch is zero-mean, the mark sparse
    assert 0.2 < t < 0.5                                         # 3 x the median |blotch|
    m = mark.reshape(T)
    seen = weight > 0
    assert np.abs(dev[~seen]).max() == 0.0
    # the blotch (|d| < t everywhere off the mark) is gone
    assert np.abs(dev[seen & ~m]).max() < 0.05
    # the mark keeps its direction and all but the threshold of its length
    length = np.linalg.norm(dev[m], axis=1)
    true_length = np.linalg.norm(d_true[m] - (g - log_gauge), axis=1)
    np.testing.assert_allclose(length, true_length - t, atol=0.06)
    cos = (dev[m] * d_true[m]).sum(1) / (length * np.linalg.norm(d_true[m], axis=1))
    assert cos.min() > 0.99
    g2, keep, t2 = tf.sparse_deviation(albedo, base, weight, threshold=None)
    assert t2 == 0.0
    np.testing.assert_allclose(keep[seen], np.log(albedo[seen] / base[seen]) - g2, atol=1e-9)


def test_sparse_deviation_keeps_the_nails_whole():
    """Texels marked keep_whole (the nail plates) keep their departure unshrunk, the rest is shrunk
    exactly as without the mask, and the threshold (set by every seen texel) does not change."""
    rng = np.random.default_rng(5)
    T = 4096
    base = 0.3 + 0.4 * rng.random((T, 3))
    d_true = rng.normal(0.0, 0.1, (T, 3))
    nail = np.zeros(T, bool)
    nail[100:180] = True
    d_true[nail] = [-1.2, -1.0, -0.3]                            # polish
    d_true[200:210] = [-1.2, -1.0, -0.3]                          # the same departure off the nails
    albedo = base * np.exp(d_true)
    weight = rng.uniform(0.5, 2.0, T)
    weight[nail.nonzero()[0][:5]] = 0.0                           # a nail texel never seen
    g0, shrunk, t0 = tf.sparse_deviation(albedo, base, weight)
    g, dev, t = tf.sparse_deviation(albedo, base, weight, keep_whole=nail)
    assert t == t0 and np.array_equal(g, g0) and t > 0.3
    seen = weight > 0
    np.testing.assert_allclose(dev[nail & seen], d_true[nail & seen] - g, atol=1e-9)
    assert np.abs(dev[~seen]).max() == 0.0
    np.testing.assert_array_equal(dev[~nail], shrunk[~nail])
    # off the nails the same departure loses the threshold from its length
    np.testing.assert_allclose(np.linalg.norm(dev[200:210], axis=1),
                               np.linalg.norm(d_true[200:210] - g, axis=1) - t, atol=1e-9)


def test_region_fraction_of_the_nails():
    """region_fraction at one sample per texel is the barycentric interpolation of the per-vertex
    region at the texel centre (make-phone-video's texel lookup, computed independently); with
    supersampling it is the area average of the finer map; the nails are a few per cent of the
    atlas and lie inside the charts."""
    asset = HandAsset.load(BASE)
    R = 64
    fine = tf.region_fraction(asset, tf.NAIL_REGION, R * 4, supersample=1)
    lookup = pv._texel_lookup(str(BASE), R * 4)
    ref = np.zeros((R * 4) ** 2)
    ref[lookup.flat] = lookup.region[:, tf.NAIL_REGION]
    np.testing.assert_allclose(fine, ref, atol=1e-5)
    coarse = tf.region_fraction(asset, tf.NAIL_REGION, R, supersample=4)
    np.testing.assert_allclose(coarse, fine.reshape(R, 4, R, 4).mean((1, 3)).reshape(-1), atol=1e-9)
    assert 0.0 <= coarse.min() and coarse.max() <= 1.0
    on = (coarse >= 0.5).mean()
    assert 0.003 < on < 0.05, on
    charts = np.zeros((R * 4) ** 2, bool)
    charts[lookup.flat] = True
    assert fine[~charts].max() == 0.0


def test_upsampled_albedo_keeps_the_base_detail():
    """No departure -> exactly the full-resolution base times the gauge (its detail finer than a
    working texel kept, observed or not); a departure over a fully covered block scales the base
    there by exp(d)."""
    rng = np.random.default_rng(4)
    R, Rw = 256, 32
    base = (0.2 + 0.6 * rng.random((R, R, 3))).astype(np.float64)     # per-texel detail
    gauge = np.array([1.1, 0.9, 0.8])
    weight = np.zeros(Rw * Rw)
    weight[Rw * 8:Rw * 24] = 50.0                                      # rows 8..23 well observed
    zero = np.zeros((Rw * Rw, 3))
    out, cov = tf.upsample_albedo(zero, weight, base, gauge, half_weight=1.0)
    np.testing.assert_allclose(out, np.clip(base * gauge, 0, 1), rtol=1e-5, atol=1e-6)
    assert cov[R // 2, R // 2] > 0.99 and cov[4, 4] == 0.0
    dev = zero.copy()
    dev[Rw * 8:Rw * 24] = [-0.5, -0.5, -0.5]
    out, _ = tf.upsample_albedo(dev, weight, base, gauge, half_weight=1.0)
    centre = slice(R // 2 - 16, R // 2 + 16)
    np.testing.assert_allclose(out[centre], np.clip(base[centre] * gauge * np.exp(-0.5), 0, 1), rtol=1e-4)
    np.testing.assert_allclose(out[:16], np.clip(base[:16] * gauge, 0, 1), rtol=1e-5)   # unobserved rows


# ------------------------------------------------------------------------------------ the command


def test_personalized_folder_loads_and_has_everything(personalized):
    from relit_hands.engine import Engine

    out, summary = personalized
    for name in ("right_hand.npz", "albedo.png", "normal.png", "roughness.png", "coverage.png", "asset.json",
                 "model_card.md", "fit.json", "loss_plot.png", "contact_sheet.png"):
        assert (out / name).is_file(), name
    assert not (out.parent / (out.name + ".partial")).exists()
    with np.load(out / "right_hand.npz") as z, np.load(BASE) as b:
        assert z.files == b.files and all(z[k].dtype == b[k].dtype for k in b.files)
        for k in b.files:
            if k not in ("render_vertices", "proxy_vertices", "joints"):
                assert np.array_equal(z[k], b[k]), k
    a = HandAsset.load(out)
    assert a.render_vertices.shape == HandAsset.load(BASE).render_vertices.shape
    assert (out / "normal.png").read_bytes() == (BASE.parent / "normal.png").read_bytes()
    assert read_png(out / "albedo.png").shape == read_png(BASE.parent / "albedo.png").shape
    info = json.loads((out / "asset.json").read_text())
    assert "personalized" in info and "person" not in info and not (out / "person.json").exists()
    fit = json.loads((out / "fit.json").read_text())
    assert fit["frames"] and all(f["lighting"] for f in fit["frames"])
    assert any(f["held_out"] for f in fit["frames"]) and "geometry" not in fit["seconds"]
    assert {"root", "pose", "shape", "displacement", "holdout"} <= set(fit["seconds"])
    assert fit["keypoint_error_px"]["fitted"] < 6.0          # px on 72-px frames, a fraction of the iterations
    card = (out / "model_card.md").read_text()
    assert "normal.png and roughness.png are hand_v2's, copied" in card
    engine = Engine(asset=out, device="cpu")
    assert engine.asset.render_vertices.shape[0] == a.render_vertices.shape[0]
    engine.release()


def test_render_cli_takes_the_folder(personalized, tmp_path):
    out, _ = personalized
    png = tmp_path / "r.png"
    rc = cli_main(["render", "--asset", str(out), "--shading", "pbr", "--scene", "relaxed", "--size", "64x64",
                   "--out", str(png)])
    assert rc == 0 and png.is_file()


def test_personalize_eval_report(personalized, mono, tmp_path):
    out, _ = personalized
    rep = tmp_path / "report"
    rc = cli_main(["personalize-eval", "--fit", str(out), "--capture", str(mono), "--out", str(rep)])
    assert rc == 0
    r = json.loads((rep / "report.json").read_text())
    assert (rep / "report.md").is_file() and (rep / "albedo_comparison.png").is_file()
    assert r["albedo"]["fitted"]["psnr_db"] > 10 and r["albedo"]["base"]["psnr_db"] > 10
    assert r["rest_vertices"]["base"]["mean_mm"] > 0 and r["keypoints_3d"]["held_out"]["frames"] >= 1
    # the base asset against itself-truth is what the report calls 'base': same topology check works
    assert r["keypoints_3d"]["fitted"]["mean_mm"] < 200
    # monocular: one size scale about the camera, chosen on the fitted frames only
    k = r["keypoints_3d"]
    assert 0.8 < k["size_scale"] < 1.25 and k["held_out"]["size_aligned_mm"] > 0
    fitted_rows = [row for row in k["per_frame"] if not row["held_out"]]
    assert k["fitted"]["size_aligned_mm"] == pytest.approx(np.mean([row["size_aligned_mm"] for row in fitted_rows]),
                                                           abs=2e-3)


def test_camera_centre_scale():
    """A hand 7 % too small and proportionally nearer is rescaled by 1.07 about the camera centre."""
    from relit_hands.tools.personalize_eval import camera_centre_scale

    rng = np.random.default_rng(6)
    true = rng.normal(0.0, 0.04, (210, 3)) + [0.01, -0.02, 0.45]
    fitted = true / 1.07 + rng.normal(0.0, 1e-4, true.shape)
    assert camera_centre_scale(fitted, true) == pytest.approx(1.07, abs=2e-3)
    assert camera_centre_scale(true, true) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------ refusals


@pytest.fixture()
def inputs(mono, tmp_path):
    """A writable copy of the capture's inputs (to break)."""
    import shutil

    d = tmp_path / "in"
    for name in ("frames", "masks"):
        shutil.copytree(mono / name, d / name)
    for name in ("keypoints.json", "intrinsics.json"):
        shutil.copy2(mono / name, d / name)
    return d


def _run(d: Path, out: Path, **kw) -> int:
    args = ["personalize", "--video", str(kw.pop("video", d / "frames")), "--keypoints",
            str(kw.pop("keypoints", d / "keypoints.json")), "--out", str(out), "--no-progress"]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return cli_main(args)


def _break_keypoints(d: Path, fn) -> None:
    k = json.loads((d / "keypoints.json").read_text())
    fn(k["records"])
    (d / "keypoints.json").write_text(json.dumps(k))


@pytest.mark.parametrize("case, message", [
    ("missing_video", "no such video file or folder"),
    ("empty_folder", "holds no images"),
    ("wrong_count", "expected 21 keypoints"),
    ("nan", "NaN"),
    ("mismatch", "do not match"),
    ("no_hand", "no frame has a hand"),
    ("mask_size", "does not match the frames"),
    ("bad_video_file", "cannot open"),
])
def test_bad_input_is_one_clear_error(inputs, tmp_path, capsys, case, message):
    d, out = inputs, tmp_path / "out"
    kw = {}
    if case == "missing_video":
        kw["video"] = d / "nope.mp4"
    elif case == "empty_folder":
        (d / "empty").mkdir()
        kw["video"] = d / "empty"
    elif case == "bad_video_file":
        (d / "clip.mp4").write_bytes(b"not a video at all")
        kw["video"] = d / "clip.mp4"
    elif case == "wrong_count":
        _break_keypoints(d, lambda r: r[3].__setitem__("keypoints", r[3]["keypoints"][:20]))
    elif case == "nan":
        text = json.loads((d / "keypoints.json").read_text())
        text["records"][2]["keypoints"][5] = ["NaN-marker", 1.0]
        (d / "keypoints.json").write_text(json.dumps(text).replace('"NaN-marker"', "NaN"))
    elif case == "mismatch":
        _break_keypoints(d, lambda r: r.pop())
    elif case == "no_hand":
        _break_keypoints(d, lambda r: [x.__setitem__("confidence", [0.0] * 21) for x in r])
    elif case == "mask_size":
        m = read_png(sorted((d / "masks").glob("*.png"))[1])
        write_png(sorted((d / "masks").glob("*.png"))[1], np.zeros((m.shape[0] + 2, m.shape[1], 3), np.uint8))
        kw["masks"] = d / "masks"
    rc = _run(d, out, **kw)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if ": warning: " not in line]
    assert rc == 2 and len(err) == 1 and "error:" in err[0] and message in err[0], err
    assert not out.exists()


def test_hand_length_out_of_range_is_one_clear_error(inputs, tmp_path, capsys):
    """A hand length in centimetres (19) is refused by the CLI and the API, before anything is written."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        _run(inputs, out, hand_length_mm=19)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--hand-length-mm" in err[0] and "out of range" in err[0], err
    with pytest.raises(ValueError, match="--hand-length-mm"):
        ps.personalize(out, video=inputs / "frames", keypoints=inputs / "keypoints.json", hand_length_mm=float("nan"))
    assert not out.exists()


def test_api_errors_are_value_errors(inputs, tmp_path):
    d = inputs
    _break_keypoints(d, lambda r: r[0].__setitem__("keypoints", [[1.0, "HUGE"]] * 21))
    (d / "keypoints.json").write_text((d / "keypoints.json").read_text().replace('"HUGE"', "1e400"))  # parses as inf
    with pytest.raises(InputError, match="NaN or infinite"):
        ps.load_inputs(d / "frames", d / "keypoints.json")
    with pytest.raises(ValueError):
        ps.load_inputs(d / "frames", d / "keypoints.json")


def test_frames_without_a_hand_are_skipped_with_a_warning(inputs):
    d = inputs
    _break_keypoints(d, lambda r: r[1].__setitem__("confidence", [0.0] * 21))
    with pytest.warns(UserWarning, match="without a hand"):
        cap = ps.load_inputs(d / "frames", d / "keypoints.json", intrinsics=d / "intrinsics.json")
    assert 1 in cap.skipped and 1 not in cap.frame_numbers.tolist()
    assert len(cap.frame_numbers) == cap.total_frames - len(cap.skipped)


@pytest.mark.filterwarnings("ignore:.*without a hand")
def test_video_file_input(inputs, mono):
    """An mp4 made from the frames reads back as the same number of frames."""
    import cv2

    d = inputs
    files = sorted((d / "frames").glob("*.png"))
    h, w = read_png(files[0]).shape[:2]
    path = d / "clip.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    if not vw.isOpened():
        pytest.fail("OpenCV cannot write mp4 here")
    for f in files:
        vw.write(read_png(f)[..., ::-1].copy())
    vw.release()
    frames = ps.read_frames(path)
    assert len(frames) == len(files) and frames[0].shape == (h, w, 3)
    cap = ps.load_inputs(path, d / "keypoints.json", fov_deg=40.0)
    assert cap.images.shape[0] + len(cap.skipped) == len(files)
    assert "guessed" in cap.camera_note


def test_non_empty_out_is_refused_and_untouched(inputs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    before = _listing(out)
    rc = _run(inputs, out, masks=inputs / "masks", intrinsics=inputs / "intrinsics.json")
    err = capsys.readouterr().err
    assert rc == 2 and "not empty" in err and "--overwrite" in err
    assert _listing(out) == before
    assert not (tmp_path / "taken.partial").exists()


@pytest.mark.filterwarnings("ignore:.*without a hand")
def test_resume_continues_from_the_partial_folder(mono, tmp_path, monkeypatch):
    """A run stopped in the appearance stage leaves its geometry checkpoints in <out>.partial; --resume
    finishes without fitting the geometry again."""
    out = tmp_path / "hand"
    kw = dict(video=mono / "frames", keypoints=mono / "keypoints.json", masks=mono / "masks",
              intrinsics=mono / "intrinsics.json", holdout_every=0, progress=False,
              geometry_settings=hf.FitSettings(iterations_scale=0.1), appearance_settings=_fast_appearance())

    def crash(*a, **k):
        raise RuntimeError("power cut")

    monkeypatch.setattr(tf, "fit_appearance", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        ps.personalize(out, **kw)
    partial = tmp_path / "hand.partial"
    assert not out.exists() and (partial / "checkpoints" / "geometry.npz").is_file()
    done = json.loads((partial / "progress.json").read_text())["done"]
    assert "geometry" in done and "appearance" not in done
    monkeypatch.undo()
    monkeypatch.setattr(hf, "fit_geometry", crash)                        # must not be called again
    summary = ps.personalize(out, resume=True, **kw)
    assert summary["resumed"]["geometry"] and not summary["resumed"]["appearance"]
    assert HandAsset.load(out) is not None and not partial.exists()
    # the output now exists: a second run into it is refused (without --overwrite)
    monkeypatch.undo()
    with pytest.raises(InputError, match="not empty"):
        ps.personalize(out, resume=True, **kw)


@pytest.mark.filterwarnings("ignore:.*without a hand")
def test_resume_inside_the_geometry_stage(mono, tmp_path, monkeypatch):
    """Stopped during the 'shape' stage: --resume starts from the checkpoint after 'pose' (root and pose are
    not run again)."""
    out = tmp_path / "hand"
    kw = dict(video=mono / "frames", keypoints=mono / "keypoints.json", masks=mono / "masks",
              intrinsics=mono / "intrinsics.json", holdout_every=0, progress=False,
              geometry_settings=hf.FitSettings(iterations_scale=0.05), appearance_settings=_fast_appearance())
    real = hf._run_stage
    ran, crashed = [], []

    def stage(name, *a, **k):
        ran.append(name)
        if name == "shape" and not crashed:
            crashed.append(name)
            raise RuntimeError("power cut")
        return real(name, *a, **k)

    monkeypatch.setattr(hf, "_run_stage", stage)
    with pytest.raises(RuntimeError, match="power cut"):
        ps.personalize(out, **kw)
    done = json.loads((tmp_path / "hand.partial" / "progress.json").read_text())["done"]
    assert done == ["geometry:root", "geometry:pose"]
    ran.clear()
    summary = ps.personalize(out, resume=True, **kw)
    assert ran == ["shape", "displacement"] and summary["resumed"]["geometry"]
    assert {r["stage"] for r in summary["losses"]} >= {"root", "pose", "shape", "displacement"}
    # without --resume a stale partial folder is replaced, not resumed
    (tmp_path / "other.partial").mkdir()
    (tmp_path / "other.partial" / "progress.json").write_text(json.dumps({"kind": "personalize-partial",
                                                                          "signature": "x", "done": ["geometry"]}))
    ran.clear()
    ps.personalize(tmp_path / "other", **kw)
    assert ran[:4] == ["hypotheses_fingers", "hypotheses", "root", "pose"]     # initialised afresh, then fitted
