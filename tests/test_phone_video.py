"""make-phone-video (issue #21, step 2): the seeded person asset, a tiny monocular and multi-view
capture (Mitsuba 3 on the CPU, 64x64 / 48x48 at 4 spp), and its refusals of bad input.

Runs in about a minute on 2 CPU cores."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from relit_hands.hand_model import HandAsset, HandModel, asset_path, shape_rest, vertex_normals
from relit_hands.image_io import linear_to_srgb, read_albedo_linear, read_hdr_image, read_png
from relit_hands.tools import phone_video as pv
from relit_hands.tools.cli import main as cli_main

BASE = asset_path(pv.BASE_ASSET)
TOPOLOGY = ("render_faces", "render_uvs", "render_uv_faces", "render_weights", "proxy_faces", "proxy_uvs",
            "proxy_uv_faces", "proxy_weights", "render_proxy_face", "render_proxy_bary", "render_face_parent",
            "parents", "tip_vertex_ids", "proxy_tip_vertex_ids", "render_region")


def _npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ person


@pytest.fixture(scope="module")
def person():
    return pv.make_person(3, "light")


@pytest.fixture(scope="module")
def person_dir(tmp_path_factory, person):
    return pv.write_person_asset(person, tmp_path_factory.mktemp("person") / "asset")


def test_person_is_seeded(person):
    again = pv.make_person(3, "light")
    assert all(np.array_equal(person.arrays[k], again.arrays[k]) for k in person.arrays)
    assert np.array_equal(person.albedo_srgb8, again.albedo_srgb8) and np.array_equal(person.shape, again.shape)
    other = pv.make_person(4, "light")
    assert not np.array_equal(person.arrays["render_vertices"], other.arrays["render_vertices"])
    assert not np.array_equal(person.shape, other.shape)
    assert not np.array_equal(person.albedo_srgb8, other.albedo_srgb8)


def test_person_shape_and_displacement_bounds(person):
    length, girth = person.shape[:, 0], person.shape[:, 1]
    assert person.shape.shape == (16, 2) and person.shape.dtype == np.float32
    assert np.all(np.abs(length - 1) <= 0.08 + 1e-6) and np.all(np.abs(girth - 1) <= 0.12 + 1e-6)
    assert np.abs(person.shape - 1).max() > 0.01                       # really a different hand
    d = person.render_displacement_m
    assert np.abs(d).max() <= 1.5e-3 + 1e-9 and np.abs(d).max() >= 0.8e-3 - 1e-9
    assert abs(float(d.mean())) < 0.2e-3                               # zero-mean-ish
    assert np.abs(person.proxy_displacement_m).max() <= person.displacement_amplitude_m + 1e-9
    # the person's rest mesh = the base shaped by person.shape + displacement along the shaped normals
    base = HandAsset.load(BASE)
    dt = torch.float64
    J, (rv,) = shape_rest(torch.as_tensor(person.shape, dtype=dt)[None], torch.as_tensor(base.joints, dtype=dt),
                          torch.as_tensor(base.tip_points(), dtype=dt), [int(p) for p in base.parents],
                          [(torch.as_tensor(base.render_weights, dtype=dt),
                            torch.as_tensor(base.render_vertices, dtype=dt))])
    offset = person.arrays["render_vertices"].astype(np.float64) - rv[0].numpy()
    assert np.linalg.norm(offset, axis=1).max() <= 1.5e-3 + 1e-6
    normals = vertex_normals(rv[0], base.render_faces).numpy()
    np.testing.assert_allclose((offset * normals).sum(1), d, atol=2e-6)   # along the normals
    np.testing.assert_allclose(person.arrays["joints"], J[0].numpy(), atol=1e-6)


def test_person_asset_folder_keeps_topology(person_dir, person):
    for name in ("right_hand.npz", "albedo.png", "normal.png", "roughness.png", "asset.json", "person.json"):
        assert (person_dir / name).is_file(), name
    asset = HandAsset.load(person_dir)                                    # the folder loads as an asset
    assert asset.source == str(person_dir / "right_hand.npz")
    assert asset_path(str(person_dir)) == person_dir / "right_hand.npz"
    base, mine = _npz(BASE), _npz(person_dir / "right_hand.npz")
    assert list(mine) == list(base)                                       # same keys, same order
    assert all(mine[k].dtype == base[k].dtype and mine[k].shape == base[k].shape for k in base)
    for k in TOPOLOGY:
        assert np.array_equal(mine[k], base[k]), k
    for k in ("render_vertices", "proxy_vertices", "joints"):
        assert not np.array_equal(mine[k], base[k]), k
    assert asset.render_vertices.shape == HandAsset.load(BASE).render_vertices.shape
    info = json.loads((person_dir / "asset.json").read_text())
    pj = json.loads((person_dir / "person.json").read_text())
    for d in (info["person"], pj):
        assert d["seed"] == 3 and d["tone"] == "light" and d["base_asset"] == pv.BASE_ASSET
        assert np.array_equal(np.asarray(d["shape"], np.float32), person.shape)
        assert 0.8e-3 <= d["displacement_amplitude_m"] <= 1.5e-3
    # the shape is the ground truth in the base asset's shape space: same joints for any pose
    pose = np.random.default_rng(0).normal(0, 0.2, 45)
    a = HandModel(BASE)(pose, shape=person.shape, meshes=()).joints
    b = HandModel(asset)(pose, meshes=()).joints
    assert torch.allclose(a, b, atol=1e-5)


def test_person_albedo_marks_and_nails(person_dir):
    base = read_albedo_linear(BASE.parent / "albedo.png")
    mine = read_albedo_linear(person_dir / "albedo.png")
    look = pv._texel_lookup(str(BASE.resolve()), base.shape[0])
    b, m = base.reshape(-1, 3)[look.flat], mine.reshape(-1, 3)[look.flat]
    nail = look.region[:, 4] >= 0.5
    assert nail.sum() > 1000
    assert np.abs(m[nail] - b[nail]).mean() > 0.05                      # painted nails
    skin = look.region[:, 4] < 0.05
    lum = lambda x: x @ np.array([0.2126, 0.7152, 0.0722])              # noqa: E731
    ratio = lum(m[skin]) / np.maximum(lum(b[skin]), 1e-6)
    assert (ratio < 0.5).sum() > 50                                      # a birthmark / dark freckles
    assert np.median(ratio) > 0.9                                        # 'light': most skin not darker


def test_skin_tones_order():
    from relit_hands.tools.phone_video import _skin_ratio

    lum = [float(_skin_ratio(t, 0.35) @ np.array([0.2126, 0.7152, 0.0722])) for t in ("light", "medium", "dark")]
    assert lum[0] > lum[1] > lum[2] and lum[2] < 0.5


# ------------------------------------------------------------------------------------ capture


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    out = tmp_path_factory.mktemp("phone") / "mono"
    summary = pv.make_phone_video(out, frames=3, resolution=64, spp=4, person_seed=5, tone="dark", seed=2,
                                  progress=False)
    return out, summary


def test_monocular_capture_writes_every_file(mono):
    out, s = mono
    for name in ("capture.json", "contact_sheet.png", "keypoints.json", "intrinsics.json",
                 "ground_truth/frames.json", "ground_truth/environment.json", "ground_truth/environment.exr",
                 "ground_truth/albedo.exr", "ground_truth/asset/right_hand.npz", "ground_truth/asset/albedo.png",
                 "ground_truth/asset/person.json"):
        assert (out / name).is_file(), name
    assert not (out / "views.json").exists()
    assert not list(out.parent.glob(".mono.tmp*"))                        # the temporary folder is gone
    for i in range(3):
        png = read_png(out / f"frames/{i:06d}.png")
        assert png.shape == (64, 64, 3) and png.dtype == np.uint8
        exr = read_hdr_image(out / f"frames_linear/{i:06d}.exr")
        assert exr.shape == (64, 64, 3) and np.isfinite(exr).all() and exr.min() >= 0
        # the 8-bit frame is the documented camera response of the linear one
        expect = np.rint(linear_to_srgb(np.clip(exr * s["exposure"], 0, 1)) * 255)
        assert np.abs(png.astype(float) - expect).max() <= 1.0
        for m in (out / f"masks/{i:06d}.png", out / f"ground_truth/masks/{i:06d}.png"):
            mask = read_png(m)[..., 0]
            assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    cap = json.loads((out / "capture.json").read_text())
    assert cap["format"] == pv.FORMAT_NAME and cap["counts"]["images"] == 3 and cap["settings"]["views"] == 1
    assert cap["seeds"] == {**cap["seeds"], "seed": 2, "person_seed": 5} and cap["exposure"] > 0
    intr = json.loads((out / "intrinsics.json").read_text())
    assert np.asarray(intr["K"]).shape == (3, 3) and intr["width"] == intr["height"] == 64
    env = json.loads((out / "ground_truth/environment.json").read_text())
    assert env["kind"] == "library" and env["split"] == "test" and env["family"] == "color"
    assert np.asarray(env["rotation_world_from_map"]).shape == (3, 3)
    alb = read_hdr_image(out / "ground_truth/albedo.exr")
    np.testing.assert_allclose(alb, read_albedo_linear(out / "ground_truth/asset/albedo.png"), atol=1e-6)
    sheet = read_png(out / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[0] >= 64


def test_keypoints_are_21_finite_with_confidences(mono):
    out, _ = mono
    text = (out / "keypoints.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    kp = json.loads(text)
    assert kp["order"] == "mediapipe" and kp["names"] == pv.KEYPOINT_NAMES and len(kp["names"]) == 21
    assert [r["frame"] for r in kp["records"]] == [0, 1, 2]
    for r in kp["records"]:
        xy, c = np.asarray(r["keypoints"]), np.asarray(r["confidence"])
        assert xy.shape == (21, 2) and c.shape == (21,) and np.isfinite(xy).all()
        assert c.min() >= 0 and c.max() <= 1
        assert r["image"] == f"frames/{r['frame']:06d}.png"


def test_ground_truth_keypoints_reproject(mono):
    out, _ = mono
    gt = json.loads((out / "ground_truth/frames.json").read_text())
    kp = json.loads((out / "keypoints.json").read_text())
    assert len(gt["frames"]) == 3
    for f, rec in zip(gt["frames"], kp["records"]):
        X = np.asarray(f["keypoints_3d"])
        assert X.shape == (21, 3) and np.asarray(f["shape"]).shape == (16, 2)
        assert len(f["pose"]) == 45 and len(f["global_orient"]) == 3 and len(f["transl"]) == 3
        (v,) = f["views"]
        K, R, t = np.asarray(v["K"]), np.asarray(v["R"]), np.asarray(v["t"])
        cam = R @ X.T + t[:, None]                                  # OpenCV: x_cam = R x + t
        uv = (K @ cam)[:2] / cam[2]
        np.testing.assert_allclose(uv.T, np.asarray(v["keypoints_2d"]), atol=1e-3)
        np.testing.assert_allclose(cam[2], v["depth"], atol=1e-5)
        assert np.all(cam[2] > 0.25) and np.all(cam[2] < 0.6)        # hand-held: 0.35-0.5 m away
        # the 3-D keypoints are the person model's, MediaPipe order
        from relit_hands.tracking import KP21_TO_KEYPOINT

        model = HandModel(str(out / "ground_truth/asset/right_hand.npz"))
        mk = model(np.asarray(f["pose"]), np.asarray(f["global_orient"]), np.asarray(f["transl"]),
                   meshes=()).keypoints[0].numpy()[KP21_TO_KEYPOINT]
        np.testing.assert_allclose(mk, X, atol=1e-5)
        # the joints sit inside the rendered hand: most project into the (slightly dilated) true mask
        true = read_png(out / f"ground_truth/masks/{f['frame']:06d}.png")[..., 0] > 0
        from scipy import ndimage

        grown = ndimage.binary_dilation(true, iterations=1)
        px = np.floor(uv.T).astype(int)
        inside = [grown[y, x] for x, y in px if 0 <= x < 64 and 0 <= y < 64]
        assert np.mean(inside) > 0.8
        # the tracker's keypoints are the true ones plus noise where it did not fail
        ok = np.array([s_ == "ok" for s_ in v["tracker"]])
        if ok.any():
            err = np.linalg.norm(np.asarray(rec["keypoints"])[ok] - uv.T[ok], axis=1)
            assert np.median(err) < 5.0


def test_masks_are_close_but_not_identical(mono):
    out, _ = mono
    for i in range(3):
        noisy = read_png(out / f"masks/{i:06d}.png")[..., 0] > 0
        true = read_png(out / f"ground_truth/masks/{i:06d}.png")[..., 0] > 0
        assert true.sum() > 30
        iou = (noisy & true).sum() / (noisy | true).sum()
        assert 0.4 < iou < 1.0


def test_tracker_never_writes_nan():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 64, (21, 2))
    noise = pv.TrackerNoise(dropout_rate=0.3, outlier_rate=0.3, lost_frame_rate=0.2)
    prev, seen = None, set()
    for _ in range(60):
        xy, c, status = pv.simulate_tracker(true, rng.random(21) < 0.7, 64, 64, rng, prev, noise)
        assert np.isfinite(xy).all() and c.min() >= 0 and c.max() <= 1 and len(status) == 21
        assert np.all(c[[s in ("dropout", "lost") for s in status]] == 0)
        seen.update(status)
        prev = xy
    assert seen == {"ok", "occluded", "dropout", "outlier", "lost"}
    xy, c, _ = pv.simulate_tracker(np.full((21, 2), np.nan), np.ones(21, bool), 64, 64, rng, None)
    assert np.isfinite(xy).all() and np.all(c == 0)                 # behind the camera: held, not NaN


def test_multi_view_capture(tmp_path):
    out = tmp_path / "mv"
    s = pv.make_phone_video(out, frames=2, resolution=48, spp=4, views=2, seed=1, progress=False)
    views = json.loads((out / "views.json").read_text())
    assert sorted(views["cameras"]) == ["cam00", "cam01"] and not (out / "intrinsics.json").exists()
    for cid in ("cam00", "cam01"):
        for i in range(2):
            assert read_png(out / f"frames/{cid}/{i:06d}.png").shape == (48, 48, 3)
            assert read_hdr_image(out / f"frames_linear/{cid}/{i:06d}.exr").shape == (48, 48, 3)
            assert (out / f"masks/{cid}/{i:06d}.png").is_file()
    kp = json.loads((out / "keypoints.json").read_text())
    assert [(r["frame"], r["camera"]) for r in kp["records"]] == [(0, "cam00"), (0, "cam01"), (1, "cam00"),
                                                                 (1, "cam01")]
    gt = json.loads((out / "ground_truth/frames.json").read_text())
    for f in gt["frames"]:
        assert [v["camera"] for v in f["views"]] == ["cam00", "cam01"]
        for v in f["views"]:                                         # static, calibrated: as in views.json
            c = views["cameras"][v["camera"]]
            assert np.allclose(v["R"], c["R"]) and np.allclose(v["t"], c["t"]) and np.allclose(v["K"], c["K"])
    assert s["settings"]["mode"] == "multi-view" and s["counts"]["images"] == 4


# ------------------------------------------------------------------------------------ bad input


def _run_cli(capsys, *argv) -> tuple:
    rc = cli_main(["make-phone-video", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_missing_or_corrupt_env_file_is_one_clear_error(tmp_path, capsys):
    out = tmp_path / "never"
    rc, err = _run_cli(capsys, "--out", out, "--env", tmp_path / "nope.hdr", "--frames", 1, "--no-progress")
    assert rc == 2 and len(err.splitlines()) == 1 and "nope.hdr" in err and "not found" in err
    bad = tmp_path / "broken.hdr"
    bad.write_bytes(b"this is not a radiance file")
    rc, err = _run_cli(capsys, "--out", out, "--env", bad, "--frames", 1, "--no-progress")
    assert rc == 2 and len(err.splitlines()) == 1 and "broken.hdr" in err
    assert not out.exists() and not list(tmp_path.glob(".never.tmp*"))


def test_trained_on_library_map_is_refused(tmp_path, capsys):
    from relit_hands.tools.light_library import split_of

    seed = next(s for s in range(100) if split_of("sun", s) == "train")
    rc, err = _run_cli(capsys, "--out", tmp_path / "x", "--env", f"sun:{seed}", "--frames", 1, "--no-progress")
    assert rc == 2 and "train" in err and not (tmp_path / "x").exists()


def test_non_empty_out_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    (out / "frames").mkdir()
    (out / "frames" / "note.txt").write_text("also mine")
    before = _listing(out)
    rc, err = _run_cli(capsys, "--out", out, "--frames", 1, "--resolution", 32, "--spp", 2, "--no-progress")
    assert rc == 2 and len(err.splitlines()) == 1 and "--overwrite" in err and "not empty" in err
    assert _listing(out) == before and not list(tmp_path.glob(".mine.tmp*"))
    # with --overwrite the capture's entries replace same-named ones; other files stay
    rc, err = _run_cli(capsys, "--out", out, "--frames", 1, "--resolution", 32, "--spp", 2, "--no-progress",
                       "--overwrite")
    assert rc == 0, err
    assert (out / "keep.txt").read_text() == "precious"
    assert (out / "frames" / "000000.png").is_file() and not (out / "frames" / "note.txt").exists()
    assert (out / "capture.json").is_file() and not list(out.glob(f".{pv.FOLDER_KIND}.old*"))


def test_engine_loads_the_person_folder(person_dir):
    """``Engine(asset=folder)`` takes the asset folder itself (the personalized-asset format)."""
    from relit_hands.engine import Engine

    eng = Engine(asset=person_dir, device="cpu")
    np.testing.assert_array_equal(eng.asset.render_vertices, HandAsset.load(person_dir).render_vertices)
    assert eng.asset.source == str(person_dir / "right_hand.npz")
