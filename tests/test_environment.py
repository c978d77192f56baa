"""Tests for relit_hands.environment: orientation (docs/conventions.md), rotation, exposure,
N directional lights (energy, direction), SH irradiance, input validation, shipped maps."""
import math
from pathlib import Path

import numpy as np
import pytest

from relit_hands.environment import (
    EnvironmentMap,
    EnvironmentMapError,
    luminance,
    rotation_yaw_pitch,
)
from relit_hands.image_io import ImageReadError, write_hdr_image

H, W = 64, 128
PX = np.array([1.0, 0.0, 0.0])
NX = -PX
PY = np.array([0.0, 1.0, 0.0])
NY = -PY
PZ = np.array([0.0, 0.0, 1.0])
NZ = -PZ
SHIPPED = ["night", "overcast", "sky_sun", "studio", "sunset", "window"]


def _angle_deg(a, b):
    a = np.asarray(a, float) / np.linalg.norm(a)
    b = np.asarray(b, float) / np.linalg.norm(b)
    return math.degrees(math.acos(np.clip(a @ b, -1, 1)))


def _block_map(target, value=100.0, h=H, w=W):
    """Black map with a 2x2 block of ``value`` centred exactly on ``target`` (a direction whose
    u*W and v*H are integers), or the whole top / bottom row for +-Y."""
    img = np.zeros((h, w, 3), np.float32)
    if abs(target[1]) > 0.999:
        img[0 if target[1] > 0 else -1, :] = value
        return EnvironmentMap(img, "block")
    u, v = EnvironmentMap(img).direction_to_uv(target)
    c, r = int(round(u * w)), int(round(v * h))
    for rr in (r - 1, r):
        for cc in (c - 1, c):
            img[rr, cc % w] = value
    return EnvironmentMap(img, "block")


def _brute_irradiance(env, normals):
    d = env.pixel_directions().reshape(-1, 3)
    om = np.repeat(env.pixel_solid_angles(), env.width)
    L = env.image.reshape(-1, 3).astype(np.float64) * env.scale
    cos = np.maximum(normals @ d.T, 0.0) * om  # [N, P]
    return cos @ L


# ------------------------------------------------------------------------------ orientation


def test_documented_orientation_uv_to_direction():
    env = EnvironmentMap(np.zeros((H, W, 3), np.float32))
    cases = {(0.5, 0.5): NZ, (0.75, 0.5): PX, (0.25, 0.5): NX, (0.0, 0.5): PZ, (0.5, 0.0): PY, (0.5, 1.0): NY}
    for uv, d in cases.items():
        np.testing.assert_allclose(env.uv_to_direction(np.array(uv)), d, atol=1e-12)
    np.testing.assert_allclose(env.direction_to_uv(np.stack([NZ, PX, NX, PZ])),
                               [[0.5, 0.5], [0.75, 0.5], [0.25, 0.5], [0.0, 0.5]], atol=1e-12)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(500, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(env.uv_to_direction(env.direction_to_uv(d)), d, atol=1e-9)


def test_pixel_directions_and_solid_angles():
    env = EnvironmentMap(np.zeros((H, W, 3), np.float32))
    d = env.pixel_directions()
    assert d.shape == (H, W, 3)
    assert d[0, :, 1].min() > 0.99 and d[-1, :, 1].max() < -0.99  # row 0 is +Y
    # the two centre columns straddle -Z, column W*3/4 straddles +X
    assert _angle_deg(d[H // 2, W // 2], NZ) < 2.0 and _angle_deg(d[H // 2, 3 * W // 4], PX) < 2.0
    om = env.pixel_solid_angles()
    assert om.shape == (H,)
    assert om.sum() * W == pytest.approx(4 * math.pi, rel=1e-12)
    assert om[H // 2] > om[0] * 10  # sin-weighted: poles are small


# ----------------------------------------------------- bright pixel -> light and lookup direction


@pytest.mark.parametrize("target", [PX, NZ, PY, PZ, NX, NY], ids=["+X", "-Z", "+Y", "+Z", "-X", "-Y"])
def test_bright_block_gives_light_and_lookup_in_documented_direction(target):
    env = _block_map(target)
    dirs, rgb = env.directional_lights(64)
    lit = rgb[:, 0] > 0
    # energy-weighted mean of the lights that got the block is exactly the target direction
    mean = (dirs[lit] * rgb[lit, :1]).sum(0)
    assert _angle_deg(mean, target) < 0.05
    # the brightest light is within about a pixel of it
    assert _angle_deg(dirs[np.argmax(rgb[:, 0])], target) < 3.0
    np.testing.assert_allclose(rgb.sum(0), env.total_energy(), rtol=1e-5)
    np.testing.assert_allclose(env.lookup(target), [100.0] * 3, rtol=1e-5)
    assert env.lookup(-target)[0] == 0.0


@pytest.mark.parametrize("target", [PX, NZ, PZ], ids=["+X", "-Z", "+Z"])
def test_single_pixel_is_one_light_at_its_centre(target):
    img = np.zeros((H, W, 3), np.float32)
    env0 = EnvironmentMap(img)
    u, v = env0.direction_to_uv(target)
    r, c = min(int(v * H), H - 1), int(u * W) % W
    img[r, c] = [30.0, 20.0, 10.0]
    env = EnvironmentMap(img)
    dirs, rgb = env.directional_lights(128)
    lit = np.flatnonzero(rgb[:, 0] > 0)
    assert len(lit) == 1
    np.testing.assert_allclose(dirs[lit[0]], env.pixel_directions()[r, c], atol=1e-6)
    np.testing.assert_allclose(rgb[lit[0]], np.array([30.0, 20.0, 10.0]) * env.pixel_solid_angles()[r], rtol=1e-5)
    assert _angle_deg(dirs[lit[0]], target) < 2.0  # one pixel is 2.8 deg wide here


def test_sun_pixel_on_bright_background_is_one_light_at_its_direction():
    img = np.ones((H, W, 3), np.float32)  # sky of radiance 1
    r, c = H // 2, 3 * W // 4  # the pixel just right of / below +X
    img[r, c] = 5e4  # "sun" ~ 6x the sky's energy
    env = EnvironmentMap(img)
    pix = env.pixel_directions()[r, c]
    for n in (32, 256, 1024):
        dirs, rgb = env.directional_lights(n)
        i = np.argmax(luminance(rgb))
        assert _angle_deg(dirs[i], pix) < 0.5  # background barely pulls the centroid
        assert _angle_deg(dirs[i], PX) < 2.5
        sun_e = 5e4 * env.pixel_solid_angles()[r]
        assert sun_e <= rgb[i, 0] < sun_e + 4 * math.pi / n * 1.5  # sun + its region's sky


# ---------------------------------------------------------------------------------- rotation


def test_yaw_rotation_moves_directions_as_documented():
    env = _block_map(PX)
    r90 = env.rotate(90)  # right-handed about +Y: +X -> -Z
    np.testing.assert_allclose(r90.rotation @ PX, NZ, atol=1e-12)
    assert r90.image is env.image  # shares the pixels
    dirs, rgb = r90.directional_lights(64)
    assert _angle_deg(dirs[np.argmax(rgb[:, 0])], NZ) < 3.0
    np.testing.assert_allclose(r90.lookup(NZ), [100.0] * 3, rtol=1e-5)
    assert r90.lookup(PX)[0] == 0.0
    # composition: two yaws of 90 = 180 -> +X goes to -X; -90 undoes
    np.testing.assert_allclose(r90.rotate(90).lookup(NX), [100.0] * 3, rtol=1e-5)
    np.testing.assert_allclose(r90.rotate(-90).rotation, np.eye(3), atol=1e-12)
    # pitch about +X after yaw: +Y -> +Z
    np.testing.assert_allclose(rotation_yaw_pitch(0, 90) @ PY, PZ, atol=1e-12)
    up = _block_map(PY).rotate(0, 90)
    np.testing.assert_allclose(up.lookup(PZ), [100.0] * 3, rtol=1e-5)
    np.testing.assert_allclose(rotation_yaw_pitch(90, 90), rotation_yaw_pitch(0, 90) @ rotation_yaw_pitch(90, 0))


def test_rotated_pixel_directions_uv_and_resampled_image():
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 1, (H, W, 3)).astype(np.float32)
    env = EnvironmentMap(img)
    rot = env.rotate(90)
    np.testing.assert_allclose(rot.pixel_directions(), env.pixel_directions() @ rot.rotation.T, atol=1e-12)
    d = rng.normal(size=(50, 3))
    np.testing.assert_allclose(rot.uv_to_direction(rot.direction_to_uv(d)),
                               d / np.linalg.norm(d, axis=1, keepdims=True), atol=1e-9)
    # yaw 90: world column c shows map column c + W/4 (map +X at u=.75 appears at world -Z, u=.5)
    np.testing.assert_allclose(rot.resampled_image(), np.roll(img, -W // 4, axis=1), atol=1e-5)
    np.testing.assert_array_equal(env.resampled_image(), img)
    assert rot.resampled_image(16).shape == (16, 32, 3)


# ---------------------------------------------------------------------------------- exposure


def test_exposure_scales_every_radiance_output():
    rng = np.random.default_rng(4)
    env = EnvironmentMap(rng.uniform(0, 2, (H, W, 3)).astype(np.float32))
    e2 = env.with_exposure(1.0)
    assert e2.image is env.image and e2.scale == 2.0 and env.exposure == 0.0
    d = rng.normal(size=(10, 3))
    np.testing.assert_allclose(e2.lookup(d), 2 * env.lookup(d), rtol=1e-6)
    np.testing.assert_allclose(e2.directional_lights(64)[1], 2 * env.directional_lights(64)[1], rtol=1e-6)
    np.testing.assert_allclose(e2.total_energy(), 2 * env.total_energy(), rtol=1e-12)
    np.testing.assert_allclose(e2.sh_coefficients(), 2 * env.sh_coefficients(), rtol=1e-12)
    np.testing.assert_allclose(e2.resampled_image(), 2 * env.resampled_image(), rtol=1e-6)
    np.testing.assert_allclose(env.with_exposure(-2).total_energy(), env.total_energy() / 4, rtol=1e-12)


# ----------------------------------------------------------------------------- N lights energy


@pytest.fixture(scope="module")
def sky_sun():
    return EnvironmentMap.from_name_or_path("sky_sun")


@pytest.mark.parametrize("n", [32, 64, 256, 1024])
def test_light_energy_preserved_shipped_and_random(sky_sun, n):
    rng = np.random.default_rng(n)
    rand = EnvironmentMap(rng.exponential(1.0, (128, 256, 3)).astype(np.float32) ** 3).rotate(33, -20)
    for env in (sky_sun, rand):
        dirs, rgb = env.directional_lights(n)
        assert dirs.shape == (n, 3) and rgb.shape == (n, 3)
        assert dirs.dtype == np.float32 and rgb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-5)
        assert (rgb >= 0).all()
        np.testing.assert_allclose(rgb.sum(0), env.total_energy(), rtol=1e-2)
        np.testing.assert_allclose(rgb.sum(0), env.total_energy(), rtol=1e-4)  # actually exact


def test_constant_map_energy_and_lights():
    L = np.array([0.5, 1.0, 2.0], np.float32)
    env = EnvironmentMap(np.broadcast_to(L, (H, W, 3)))
    np.testing.assert_allclose(env.total_energy(), 4 * math.pi * L, rtol=1e-6)
    dirs, rgb = env.directional_lights(256)
    np.testing.assert_allclose(rgb.sum(0), 4 * math.pi * L, rtol=1e-5)
    # nearly equal-area regions: every light within a factor ~2 of 4 pi L / n
    assert rgb[:, 0].max() < 2.5 * rgb[:, 0].mean() and rgb[:, 0].min() > 0.3 * rgb[:, 0].mean()
    # the light directions cover the sphere evenly: their mean is ~0
    assert np.linalg.norm(dirs.mean(0)) < 0.05


def test_sun_of_shipped_sky_is_one_light_at_its_direction(sky_sun):
    from relit_hands.tools.make_environments import az_el_dir

    sun = az_el_dir(-35.0, 40.0)
    for n in (64, 256, 1024):
        dirs, rgb = sky_sun.directional_lights(n)
        i = np.argmax(luminance(rgb))
        assert _angle_deg(dirs[i], sun) < 0.5
        assert luminance(rgb[i]) > 0.4 * luminance(sky_sun.total_energy())
    dirs, rgb = sky_sun.rotate(90).directional_lights(256)
    assert _angle_deg(dirs[np.argmax(luminance(rgb))], rotation_yaw_pitch(90) @ sun) < 0.5


def test_lights_deterministic_and_n_validated(sky_sun):
    a = sky_sun.directional_lights(128)
    b = EnvironmentMap(sky_sun.image).directional_lights(128)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for bad in (16, 31, 1025, 64.5, True):
        with pytest.raises(ValueError, match="32, 1024"):
            sky_sun.directional_lights(bad)


def test_dominant_lights(sky_sun):
    k = 4
    dom = sky_sun.dominant_lights(k, n=64)
    d, rgb, rd, rrgb = dom
    assert d.shape == (k, 3) and rgb.shape == (k, 3) and rd.shape == (60, 3) and rrgb.shape == (60, 3)
    lum = luminance(rgb)
    assert np.all(np.diff(lum) <= 0)
    assert lum.min() >= luminance(rrgb).max()
    np.testing.assert_allclose(rgb.sum(0) + rrgb.sum(0), sky_sun.total_energy(), rtol=1e-4)
    assert sky_sun.dominant_lights(0).rgb.shape == (0, 3)
    with pytest.raises(ValueError):
        sky_sun.dominant_lights(65, n=64)


# ---------------------------------------------------------------------------------------- SH


def test_sh_constant_map_irradiance_is_pi_L():
    L = np.array([0.3, 1.0, 4.0], np.float32)
    rng = np.random.default_rng(5)
    n = rng.normal(size=(200, 3))
    for env in (EnvironmentMap(np.broadcast_to(L, (H, W, 3))),
                EnvironmentMap(np.broadcast_to(L, (H, W, 3))).rotate(40, 25)):
        c = env.sh_coefficients()
        assert c.shape == (9, 3)
        np.testing.assert_allclose(c[0], L * 0.282095 * 4 * math.pi, rtol=1e-5)
        assert np.abs(c[1:]).max() < 1e-3 * np.abs(c[0]).max()  # quadrature error only
        np.testing.assert_allclose(env.sh_irradiance(n), np.broadcast_to(math.pi * L, (200, 3)), rtol=1e-3)


def test_sh_irradiance_matches_brute_force_on_smooth_maps():
    rng = np.random.default_rng(6)
    normals = rng.normal(size=(64, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    # (a) quadratic radiance (exactly band <= 2): SH irradiance is exact up to quadrature
    base = EnvironmentMap(np.zeros((128, 256, 3), np.float32))
    d = base.pixel_directions()
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    quad = np.stack([1 + 0.5 * x + 0.3 * y * y, 1 + 0.4 * y - 0.2 * x * z, 1.5 - 0.5 * z + 0.3 * x * y], -1)
    env = EnvironmentMap(quad.astype(np.float32)).rotate(30, 10)
    np.testing.assert_allclose(env.sh_irradiance(normals), _brute_irradiance(env, normals), rtol=5e-3)
    # (b) a smooth sky-like map (not band-limited): within a few percent
    sky = np.stack([0.3 + 0.7 * np.clip(y, 0, 1) ** 0.5, 0.4 + 0.6 * np.clip(y, 0, 1), 0.5 + 0.8 * np.clip(y, 0, 1)], -1)
    sky = sky * (1 + 0.5 * np.exp(-3 * (1 - (d @ np.array([0.6, 0.6, -0.53])))))[..., None]
    env = EnvironmentMap(sky.astype(np.float32))
    sh = env.sh_irradiance(normals)
    ref = _brute_irradiance(env, normals)
    assert np.abs(sh / ref - 1).max() < 0.05
    # (c) the shipped overcast sky
    ov = EnvironmentMap.from_name_or_path("overcast").rotate(70)
    assert np.abs(ov.sh_irradiance(normals) / _brute_irradiance(ov, normals) - 1).max() < 0.05


def test_sh_is_in_world_frame():
    base = EnvironmentMap(np.zeros((H, W, 3), np.float32))
    x = base.pixel_directions()[..., 0]
    env = EnvironmentMap(np.repeat((1.0 + x)[..., None], 3, -1).astype(np.float32))  # bright at +X
    e = env.sh_irradiance(np.stack([PX, NX, NZ]))[:, 0]
    assert e[0] > 1.5 * e[1]
    r = env.rotate(90)  # bright side now at world -Z
    e = r.sh_irradiance(np.stack([NZ, PZ, PX]))[:, 0]
    assert e[0] > 1.5 * e[1]
    np.testing.assert_allclose(r.sh_irradiance(NZ), env.sh_irradiance(PX), rtol=1e-4)


# -------------------------------------------------------------------------------- bad inputs


def test_luminance_rec709():
    assert luminance(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(luminance(np.eye(3)), [0.2126, 0.7152, 0.0722], rtol=1e-6)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="nope.hdr"):
        EnvironmentMap.load(tmp_path / "nope.hdr")
    (tmp_path / "env.png").write_bytes(b"x")
    with pytest.raises(ImageReadError, match="unsupported extension"):
        EnvironmentMap.load(tmp_path / "env.png")
    good = tmp_path / "good.hdr"
    write_hdr_image(good, np.ones((32, 64, 3), np.float32))
    data = good.read_bytes()
    (tmp_path / "cut.hdr").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.hdr"):
        EnvironmentMap.load(tmp_path / "cut.hdr")
    (tmp_path / "bad.exr").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ImageReadError, match="bad.exr"):
        EnvironmentMap.load(tmp_path / "bad.exr")
    sq = tmp_path / "square.hdr"
    write_hdr_image(sq, np.ones((32, 32, 3), np.float32))
    with pytest.raises(EnvironmentMapError, match="square.hdr.*width = 2 \\* height"):
        EnvironmentMap.load(sq)
    assert issubclass(EnvironmentMapError, ValueError)


def test_array_shape_errors():
    with pytest.raises(EnvironmentMapError, match="RGB"):
        EnvironmentMap(np.zeros((32, 64), np.float32), "grey")
    with pytest.raises(EnvironmentMapError, match="RGB"):
        EnvironmentMap(np.zeros((32, 64, 4), np.float32), "rgba")
    with pytest.raises(EnvironmentMapError, match="'wide'.*2 \\* height"):
        EnvironmentMap(np.zeros((32, 96, 3), np.float32), "wide")


def test_nan_inf_negative_are_cleaned_with_warning_or_strict_raise(tmp_path):
    img = np.ones((H, W, 3), np.float32)
    img[1, 1, 0] = np.nan
    img[2, 2, 1] = np.inf
    img[3, 3, 2] = -np.inf
    img[4, 4] = -1.0
    img[5, 5, 0] = -0.5
    with pytest.warns(UserWarning, match=r"'dirty'.*3 pixel\(s\) with NaN/inf and 2 pixel\(s\) with negative"):
        env = EnvironmentMap(img, "dirty")
    assert np.isfinite(env.image).all() and env.image.min() >= 0
    assert env.image[1, 1, 0] == 0 and env.image[4, 4].sum() == 0 and env.image[1, 1, 1] == 1.0
    with pytest.raises(EnvironmentMapError, match="NaN/inf"):
        EnvironmentMap(img, "dirty", strict=True)
    # from a file: the warning names the file (EXR keeps NaN/inf; .hdr stores negatives as 0)
    from relit_hands.image_io import exr_supported

    if exr_supported():
        p = tmp_path / "dirty.exr"
        write_hdr_image(p, img)
        with pytest.warns(UserWarning, match="dirty.exr.*3 pixel"):
            EnvironmentMap.load(p)
        with pytest.raises(EnvironmentMapError, match="dirty.exr"):
            EnvironmentMap.load(p, strict=True)
    assert env.image.flags.writeable is False


# ------------------------------------------------------------------------------- shipped maps


def test_every_shipped_map_loads_small_and_finite():
    names = EnvironmentMap.list_shipped()
    assert set(SHIPPED) <= set(names)
    root = Path(__file__).resolve().parents[1] / "models" / "environments"
    for name in names:
        env = EnvironmentMap.from_name_or_path(name, strict=True)
        assert env.name == name
        assert env.image.shape == (256, 512, 3)
        assert np.isfinite(env.image).all() and env.image.min() >= 0
        assert env.image.max() < 65504  # fits float16
        assert luminance(env.total_energy()) > 0
        f = root / f"{name}.hdr"
        assert f.stat().st_size <= 2 * 1024 * 1024
    import json

    meta = json.loads((root / "environments.json").read_text())
    listed = {e["name"]: e for e in meta["environments"]}
    assert set(SHIPPED) <= set(listed)
    env = EnvironmentMap.from_name_or_path("studio.hdr")
    np.testing.assert_allclose(env.total_energy(), listed["studio"]["total_energy_rgb"], rtol=1e-4)


def test_from_name_or_path(tmp_path):
    p = tmp_path / "mine.hdr"
    write_hdr_image(p, np.full((16, 32, 3), 0.5, np.float32))
    env = EnvironmentMap.from_name_or_path(str(p))
    assert env.name == "mine" and env.source == p
    with pytest.raises(ValueError, match="sky_sun"):
        EnvironmentMap.from_name_or_path("no_such_environment")
