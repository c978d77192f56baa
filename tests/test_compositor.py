"""Compositor: real llvmpipe (EGL) renders checked against analytic numbers."""
import numpy as np
import pytest
import torch

from relit_hands.camera import Camera
from relit_hands.environment import EnvironmentMap

W, H = 160, 120


@pytest.fixture(scope="module")
def comp():
    from relit_hands.compositor import Compositor
    try:
        c = Compositor(shadow_map_size=512, msaa=4)
    except RuntimeError as exc:
        pytest.skip(f"no EGL OpenGL context: {exc}")
    yield c
    c.release()


def uv_sphere(radius=0.5, center=(0, 0, 0), n_lat=24, n_lon=48, mirror_x=False):
    """Lat-long sphere with a separate UV topology (seam column and poles duplicated in UV only).
    UV (u, v) -> direction per the equirect convention, so v = 0 is the north pole (+Y)."""
    def d(u, v):
        phi, el = 2 * np.pi * (u - 0.5), np.pi * (0.5 - v)
        return np.stack([np.sin(phi) * np.cos(el), np.sin(el), -np.cos(phi) * np.cos(el)], -1)

    pos = [d(0.0, 0.0)]
    pid = np.zeros((n_lat + 1, n_lon + 1), int)
    for i in range(1, n_lat):
        for j in range(n_lon):
            pid[i, j] = len(pos)
            pos.append(d(j / n_lon, i / n_lat))
        pid[i, n_lon] = pid[i, 0]
    pid[n_lat, :] = len(pos)
    pos.append(d(0.0, 1.0))
    uid = np.arange((n_lat + 1) * (n_lon + 1)).reshape(n_lat + 1, n_lon + 1)
    jj, ii = np.meshgrid(np.arange(n_lon + 1) / n_lon, np.arange(n_lat + 1) / n_lat)
    uvs = np.stack([jj, ii], -1).reshape(-1, 2)
    faces, ufaces = [], []
    for i in range(n_lat):
        for j in range(n_lon):
            for tri in (((i, j), (i + 1, j), (i + 1, j + 1)), ((i, j), (i + 1, j + 1), (i, j + 1))):
                f = [pid[a] for a in tri]
                if len(set(f)) == 3:
                    faces.append(f)
                    ufaces.append([uid[a] for a in tri])
    pos = np.array(pos) * radius
    faces, ufaces = np.array(faces), np.array(ufaces)
    # orient CCW = outward
    p = pos[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    if np.mean(np.sum(n * p.mean(1), 1)) < 0:
        faces, ufaces = faces[:, ::-1], ufaces[:, ::-1]
    if mirror_x:
        pos = pos * [-1, 1, 1]
        faces, ufaces = faces[:, ::-1], ufaces[:, ::-1]
    normals = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    return (pos + np.asarray(center, float)).astype(np.float32), faces, uvs.astype(np.float32), ufaces, normals


NO_SPEC = np.tile(np.array([128, 0, 0], np.uint8), (4, 4, 1))  # roughness 0.5, F0 = 0


def make_hand(comp, mirror_x=False, **kw):
    pos, faces, uvs, ufaces, normals = uv_sphere(mirror_x=mirror_x, **kw)
    return comp.add_hand(pos, faces, uvs, ufaces, normals=normals, roughness=NO_SPEC)


def const_env(L=0.5):
    return EnvironmentMap(np.full((32, 64, 3), L, np.float32))


def interior(mask, r=2):
    m = mask.copy()
    for ax in (0, 1):
        for s in range(1, r + 1):
            m &= np.roll(mask, s, ax) & np.roll(mask, -s, ax)
    return m


CAM = Camera.look_at(eye=(0, 0, -3), target=(0, 0, 0), fov_y_deg=30, width=W, height=H)


def test_lambert_constant_environment(comp):
    hand = make_hand(comp)
    L = 0.5
    out = comp.render([hand], const_env(L), CAM, tonemap="none", shadows=False, return_linear=True)
    lin = out["linear"]
    assert lin.shape == (H, W, 3) and lin.dtype == np.float32
    # white albedo, F0 = 0: radiance = albedo * L everywhere on the sphere
    np.testing.assert_allclose(lin[H // 2, W // 2], L, rtol=0.02)
    inner = interior(out["mask"])
    assert abs(np.median(lin[inner]) - L) < 0.01 * L
    # away from the silhouette (n.v > ~0.8, where Schlick Fresnel with F0 = 0 stays negligible)
    f, r, D = CAM.K[0, 0], 0.5, 3.0
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    central = np.hypot(xx - W / 2, yy - H / 2) < 0.6 * f * r / np.sqrt(D * D - r * r)
    assert central.sum() > 1000
    assert np.all(np.abs(lin[central] - L) < 0.02 * L), np.abs(lin[central] - L).max()
    # background = env radiance; tone map 'none' = sRGB encoding only
    np.testing.assert_allclose(lin[2, 2], L, rtol=1e-5)
    srgb = 1.055 * L ** (1 / 2.4) - 0.055
    assert abs(int(out["rgb"][H // 2, W // 2, 0]) - srgb * 255) <= 1.5
    brighter = comp.render([hand], const_env(L), CAM, tonemap="none", shadows=False, exposure_ev=-1.0)
    srgb_half = 1.055 * (L / 2) ** (1 / 2.4) - 0.055
    assert abs(int(brighter["rgb"][2, 2, 0]) - srgb_half * 255) <= 1.5
    # hand id / depth at the centre
    assert out["hand_id"][H // 2, W // 2] == 0 and out["hand_id"][0, 0] == -1
    np.testing.assert_allclose(out["depth"][H // 2, W // 2], 2.5, atol=0.01)
    assert np.isinf(out["depth"][0, 0])


def _grey_sphere_median(comp, value, **render_kw):
    pos, faces, uvs, ufaces, normals = uv_sphere()
    hand = comp.add_hand(pos, faces, uvs, ufaces, normals=normals, roughness=NO_SPEC,
                         albedo=np.full((8, 8, 3), value, np.uint8))
    try:
        out = comp.render([hand], camera=CAM, **render_kw)
        return float(np.median(out["linear"][interior(out["mask"])]))
    finally:
        hand.release()
        comp.hands.remove(hand)


@pytest.mark.parametrize("srgb", [64, 128, 200])
def test_albedo_texture_is_decoded_from_srgb_once(comp, srgb):
    """A grey albedo texture of sRGB value ``srgb`` reflects exactly its linear value under a
    constant environment (a white albedo cannot tell a double decode from a single one). The
    split-sum specular term, which does not vanish at F0 = 0, is measured on a black albedo and
    subtracted."""
    L = 0.5
    kw = dict(env=const_env(L), tonemap="none", shadows=False, return_linear=True)
    c = srgb / 255.0
    linear = ((c + 0.055) / 1.055) ** 2.4
    diffuse = _grey_sphere_median(comp, srgb, **kw) - _grey_sphere_median(comp, 0, **kw)
    assert abs(diffuse - linear * L) < 0.01 * linear * L, (diffuse, linear * L)
    alb = _grey_sphere_median(comp, srgb, shading="albedo", tonemap="none", background="none", return_linear=True)
    assert abs(alb - linear) < 0.01 * linear


def test_environment_rotation_changes_shading(comp):
    hand = make_hand(comp)
    img = np.full((32, 64, 3), 0.05, np.float32)
    img[12:20, 44:52] = 50.0  # bright region around u = 0.75 -> +X (map frame)
    env = EnvironmentMap(img)
    cols = {}
    for name, e in (("base", env), ("rot", env.rotate(180.0))):
        out = comp.render([hand], e, CAM, tonemap="none", return_linear=True, background="none")
        lum = out["linear"].mean(-1)
        m = interior(out["mask"])
        # camera at -Z looking +Z: world +X appears on the image's left half
        left = lum[m & (np.arange(W)[None, :] < W // 2 - 10)].mean()
        right = lum[m & (np.arange(W)[None, :] > W // 2 + 10)].mean()
        cols[name] = (left, right)
    assert CAM.project([0.5, 0, 0])[0] < W / 2
    assert cols["base"][0] > 3 * cols["base"][1]
    assert cols["rot"][1] > 3 * cols["rot"][0]


def test_nearer_sphere_occludes_farther(comp):
    near = make_hand(comp, radius=0.3, center=(0.1, 0.0, -0.6))
    far = make_hand(comp, radius=0.5, center=(-0.1, 0.0, 0.5))
    env = const_env(1.0)
    for order in ([near, far], [far, near]):
        out = comp.render(order, env, CAM, shading="albedo", tonemap="none", background="none")
        hid = out["hand_id"]
        u, v = CAM.project([0.1, 0.0, -0.6])
        assert hid[int(v), int(u)] == order.index(near)
        u2, v2 = CAM.project([-0.5, 0.0, 0.5])  # only the far sphere there
        assert hid[int(v2), int(u2)] == order.index(far)
        np.testing.assert_allclose(out["depth"][int(v), int(u)], 3 - 0.6 - 0.3, atol=0.02)
        assert set(np.unique(hid)) == {-1, 0, 1}


def plane_hand(comp, size=2.0, n=16, y=0.0):
    g = np.linspace(-size / 2, size / 2, n + 1)
    xx, zz = np.meshgrid(g, g)
    pos = np.stack([xx, np.full_like(xx, y), zz], -1).reshape(-1, 3).astype(np.float32)
    uvs = ((pos[:, [0, 2]] / size) + 0.5).astype(np.float32)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([a, d, c], 1)])
    p = pos[faces]
    assert np.all(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 1] > 0)  # CCW seen from +Y
    normals = np.tile([0.0, 1.0, 0.0], (len(pos), 1))
    return comp.add_hand(pos, faces, uvs, faces, normals=normals, roughness=NO_SPEC)


def test_shadow_of_one_hand_on_the_other(comp):
    ball = make_hand(comp, radius=0.2, center=(0.0, 0.5, 0.0))
    slab = plane_hand(comp)
    img = np.full((64, 128, 3), 0.02, np.float32)
    img[0:4, :] = 200.0  # bright cap around +Y (overhead light)
    env = EnvironmentMap(img)
    cam = Camera.look_at(eye=(0.0, 2.2, -2.2), target=(0, 0, 0), fov_y_deg=45, width=W, height=H)
    res = {}
    for sh in (True, False):
        res[sh] = comp.render([ball, slab], env, cam, tonemap="none", shadows=sh, return_linear=True,
                              background="none")
    on, off = res[True], res[False]
    np.testing.assert_array_equal(on["hand_id"], off["hand_id"])
    # world position of every slab pixel from depth
    rays = cam.pixel_rays()
    zdir = rays @ cam.R[2].astype(np.float32)
    P = cam.center[None, None] + rays * (on["depth"] / zdir)[..., None]
    slab_px = interior(on["hand_id"] == 1, 1)
    rxz = np.hypot(P[..., 0], P[..., 2])
    under = slab_px & (rxz < 0.08)
    away = slab_px & (rxz > 0.45)
    assert under.sum() > 5 and away.sum() > 500
    lum_on, lum_off = on["linear"].mean(-1), off["linear"].mean(-1)
    assert lum_on[under].mean() < 0.3 * lum_off[under].mean()
    rel = np.abs(lum_on[away] - lum_off[away]) / lum_off[away]
    assert np.percentile(rel, 99) < 0.03, np.percentile(rel, 99)
    # the ball itself: its lit top is not self-shadowed (no acne)
    ball_px = interior(on["hand_id"] == 0, 1)
    assert np.median(lum_on[ball_px] / lum_off[ball_px]) > 0.97


def test_uv_texture_reproduces_texture(comp):
    hand = make_hand(comp)
    env = const_env(1.0)
    uvo = comp.render([hand], env, CAM, shading="uv", tonemap="none", background="none", return_linear=True)
    uv = uvo["linear"][..., :2]
    R = 64
    c = (np.arange(R) + 0.5) / R
    uu, vv = np.meshgrid(c, c)  # texel (row, col) = (v R, u R)

    def f(u, v):
        return np.stack([3.0 * u, 2.0 * v, 0.5 + u - 0.5 * v], -1)

    comp.set_radiance_texture(comp.hands.index(hand), f(uu, vv).astype(np.float32))
    out = comp.render([hand], env, CAM, shading="uv_texture", tonemap="none", background="none",
                      return_linear=True)
    m = interior(uvo["mask"], 2)
    m &= (uv[..., 0] > 1 / R) & (uv[..., 0] < 1 - 1 / R) & (uv[..., 1] > 1 / R) & (uv[..., 1] < 1 - 1 / R)
    assert m.sum() > 2000
    err = np.abs(out["linear"][m] - f(uv[m, 0], uv[m, 1]))
    assert err.max() < 5e-3, err.max()
    # float16 upload path
    comp.set_radiance_texture(comp.hands.index(hand), f(uu, vv).astype(np.float16))
    out16 = comp.render([hand], env, CAM, shading="uv_texture", tonemap="none", return_linear=True)
    assert np.abs(out16["linear"][m] - f(uv[m, 0], uv[m, 1])).max() < 1e-2


def test_normal_map_tangent_frame_and_mirroring(comp):
    # tilt towards +u: n = (sin 30) T + (cos 30) N ; at the visible centre T = +X (or -X mirrored)
    nm = np.tile(np.round((np.array([0.5, 0.0, 0.8660254]) * 0.5 + 0.5) * 255).astype(np.uint8), (8, 8, 1))
    nmv = np.tile(np.round((np.array([0.0, 0.5, 0.8660254]) * 0.5 + 0.5) * 255).astype(np.uint8), (8, 8, 1))
    for mirror, tex, expect in ((False, nm, [0.5, 0, -0.866]), (True, nm, [-0.5, 0, -0.866]),
                                (False, nmv, [0, -0.5, -0.866]), (True, nmv, [0, -0.5, -0.866])):
        hand = make_hand(comp, mirror_x=mirror)
        hand.set_textures(normal_map=tex)
        out = comp.render([hand], const_env(), CAM, shading="normal", tonemap="none", return_linear=True)
        n = out["linear"][H // 2 - 1:H // 2 + 1, W // 2 - 1:W // 2 + 1].reshape(-1, 3).mean(0) * 2 - 1
        np.testing.assert_allclose(n, expect, atol=0.03, err_msg=f"mirror={mirror}")


def test_tangent_frame_follows_vertex_updates(comp):
    # The tangent frame is recomputed lazily (only for normal-mapped shadings): after a pose change
    # drawn first with 'uv_texture' (which skips it), 'normal' must match a hand built at that pose.
    nm = np.tile(np.round((np.array([0.5, 0.0, 0.8660254]) * 0.5 + 0.5) * 255).astype(np.uint8), (8, 8, 1))
    pos, faces, uvs, ufaces, normals = uv_sphere()
    c, s = np.cos(0.7), np.sin(0.7)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)  # roll about the view axis: +u turns
    moved = comp.add_hand(pos, faces, uvs, ufaces, normals=normals, roughness=NO_SPEC, normal_map=nm)
    first = comp.render([moved], const_env(), CAM, shading="normal", tonemap="none", return_linear=True)
    moved.update_vertices(pos @ rot.T, normals @ rot.T)
    moved.set_radiance_texture(np.ones((4, 4, 3), np.float32))
    comp.render([moved], const_env(), CAM, shading="uv_texture", tonemap="none")
    got = comp.render([moved], const_env(), CAM, shading="normal", tonemap="none", return_linear=True)
    fresh = comp.add_hand(pos @ rot.T, faces, uvs, ufaces, normals=normals @ rot.T, roughness=NO_SPEC, normal_map=nm)
    want = comp.render([fresh], const_env(), CAM, shading="normal", tonemap="none", return_linear=True)
    m = interior(want["mask"])
    assert np.abs(got["linear"][m] - want["linear"][m]).max() < 1e-5
    assert np.abs(first["linear"][m] - want["linear"][m]).max() > 0.1  # the pose change is visible


def test_readback_modes_draw_the_same_image(comp):
    # readback 'rgb' / 'none' draw into a radiance-only target, and an env background clears depth
    # only: the image must equal the full ('all') path's, frame after frame, with nothing left over
    # from the previous frame (the hand moves away between frames).
    hand = make_hand(comp)
    pos, _, _, _, normals = uv_sphere()
    env = EnvironmentMap(np.random.default_rng(0).uniform(0.1, 2.0, (32, 64, 3)).astype(np.float32))
    for shift in (0.0, 0.6, -0.6):
        hand.update_vertices(pos + np.float32([shift, 0, 0]), normals)
        full = comp.render([hand], env, CAM, readback="all")
        fast = comp.render([hand], env, CAM, readback="rgb")
        comp.render([hand], env, CAM, readback="none")
        with comp.ctx:
            tex = np.frombuffer(comp.output_texture.read(alignment=1), np.uint8).reshape(H, W, 4)[::-1, :, :3]
        assert np.array_equal(full["rgb"], fast["rgb"]) and np.array_equal(full["rgb"], tex)
        assert fast["mask"] is None
        again = comp.render([hand], env, CAM, readback="all")
        assert np.array_equal(again["mask"], full["mask"]) and np.array_equal(again["depth"], full["depth"])
        u, v = CAM.project(np.array([[shift, 0.0, 0.0]]))[0]
        assert full["mask"][int(v), int(u)]  # the mask follows the moved hand
    # 'uv_texture' draws with its own small program: same silhouette, hand ids and depth as 'pbr'
    other = make_hand(comp)
    other.update_vertices(pos * 0.5 + np.float32([0.0, 0.0, -0.6]), normals)  # in front of `hand`
    for h in (hand, other):
        h.set_radiance_texture(np.ones((4, 4, 3), np.float32))
    a = comp.render([hand, other], env, CAM, shading="pbr", readback="all")
    b = comp.render([hand, other], env, CAM, shading="uv_texture", readback="all")
    assert set(np.unique(b["hand_id"])) == {-1, 0, 1}
    assert np.array_equal(a["mask"], b["mask"]) and np.array_equal(a["hand_id"], b["hand_id"])
    np.testing.assert_allclose(a["depth"][a["mask"]], b["depth"][b["mask"]], rtol=1e-5)
    # a moved hand leaves no stale hand pixels: where the first frame had the hand and this one
    # has none, the image equals the background alone
    bg_only = comp.render([], env, CAM, readback="all")
    hand.update_vertices(pos + np.float32([0.6, 0, 0]), normals)
    out = comp.render([hand], env, CAM, readback="rgb")
    off = comp.render([hand], env, CAM, readback="all")["coverage"] == 0  # no sample of the hand
    assert np.array_equal(out["rgb"][off], bg_only["rgb"][off])
    assert np.abs(out["rgb"][~off].astype(int) - bg_only["rgb"][~off]).max() > 20  # and the hand is drawn


def test_frame_after_an_empty_frame_draws_its_hands(comp):
    # regression: a depth-only clear (colour writes masked on one framebuffer) left the colour mask
    # off for the next frame's other draw target, so after a frame without hands the next 'rgb'
    # frame showed the background alone
    hand = make_hand(comp)
    env = EnvironmentMap(np.random.default_rng(1).uniform(0.1, 2.0, (32, 64, 3)).astype(np.float32))
    bg = comp.render([], env, CAM, readback="all")["rgb"]
    want = comp.render([hand], env, CAM, readback="all")
    for first in ("all", "rgb", "none"):
        for readback, linear in (("rgb", False), ("all", False), ("rgb", True)):
            comp.render([], env, CAM, readback=first)
            got = comp.render([hand], env, CAM, readback=readback, return_linear=linear)["rgb"]
            assert np.array_equal(got, want["rgb"]), (first, readback, linear)
    assert np.abs(want["rgb"][want["mask"]].astype(int) - bg[want["mask"]]).max() > 20


def test_background_in_tonemap_pass_matches_background_pass(comp):
    # without return_linear the environment is added behind the hands' coverage by the tone-mapping
    # pass; with it, drawn by its own pass before the hands: the same picture (MSAA edges included)
    hand = make_hand(comp)
    env = EnvironmentMap(np.random.default_rng(2).uniform(0.1, 2.0, (32, 64, 3)).astype(np.float32)).rotate(40.0)
    for shading in ("pbr", "albedo"):
        a = comp.render([hand], env, CAM, shading=shading, readback="all")
        b = comp.render([hand], env, CAM, shading=shading, readback="all", return_linear=True)
        edge = (a["coverage"] > 0) & (a["coverage"] < 1)
        assert edge.sum() > 50  # the comparison covers anti-aliased silhouette pixels
        assert np.abs(a["rgb"].astype(int) - b["rgb"]).max() <= 1


def test_transparent_background_and_coverage(comp):
    hand = make_hand(comp)
    out = comp.render([hand], const_env(), CAM, background="transparent", tonemap="aces")
    rgba = out["rgb"]
    # the 'rgb' read-back draws without the aux target: alpha comes from the radiance target's coverage
    fast = comp.render([hand], const_env(), CAM, background="transparent", tonemap="aces", readback="rgb")
    assert np.array_equal(fast["rgb"], rgba)
    assert rgba.shape == (H, W, 4) and rgba.dtype == np.uint8
    assert np.all(rgba[..., 3][out["coverage"] == 0] == 0)
    assert np.all(rgba[..., 3][interior(out["mask"])] == 255)
    # analytic silhouette of a sphere: disc of radius f r / sqrt(D^2 - r^2) pixels
    f, r, D = CAM.K[0, 0], 0.5, 3.0
    frac = np.pi * (f * r / np.sqrt(D * D - r * r)) ** 2 / (W * H)
    assert abs(out["mask"].mean() - frac) < 0.02 * frac
    assert abs(out["coverage"].mean() - frac) < 0.02 * frac
    assert out["mask"].dtype == bool and out["hand_id"].dtype == np.int8
    opaque = comp.render([hand], const_env(), CAM, background="env", tonemap="filmic")
    assert opaque["rgb"].shape == (H, W, 3)


def test_errors(comp, monkeypatch):
    hand = make_hand(comp)
    with pytest.raises(ValueError, match="radiance texture"):
        comp.render([hand], const_env(), CAM, shading="uv_texture")
    with pytest.raises(ValueError, match="shading"):
        comp.render([hand], const_env(), CAM, shading="phong")
    with pytest.raises(ValueError, match="vertices"):
        hand.update_vertices(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="uv_faces"):
        comp.add_hand(np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((3, 2)), np.array([[0, 1]]))
    import moderngl
    from relit_hands import compositor as cm

    def boom(*a, **k):
        raise Exception("eglGetDisplay failed")
    monkeypatch.setattr(moderngl, "create_context", boom)
    with pytest.raises(RuntimeError, match="libegl1 libgl1-mesa-dri"):
        cm.create_headless_context()


def test_single_sample_path_and_shared_context():
    from relit_hands.compositor import Compositor, create_headless_context
    try:
        ctx = create_headless_context()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    c = Compositor(ctx=ctx, msaa=1, shadow_map_size=256)
    assert not c.owns_ctx and c.msaa == 1
    hand = make_hand(c)
    out = c.render([hand], const_env(0.5), CAM, tonemap="none", return_linear=True)
    np.testing.assert_allclose(out["linear"][H // 2, W // 2], 0.5, rtol=0.02)
    assert set(np.unique(out["coverage"])) <= {0.0, 1.0}
    f, r, D = CAM.K[0, 0], 0.5, 3.0
    frac = np.pi * (f * r / np.sqrt(D * D - r * r)) ** 2 / (W * H)
    assert abs(out["mask"].mean() - frac) < 0.03 * frac
    c.release()
    ctx.release()


def test_background_matches_environment_lookup(comp):
    """Background pass = env radiance along every pixel's world ray (orientation, rotation and
    exposure), compared with EnvironmentMap.lookup on the CPU."""
    h = 32
    v, u = np.mgrid[0:h, 0:2 * h] + 0.5
    u, v = u / (2 * h), v / h
    img = np.stack([1 + np.sin(2 * np.pi * u), 1 + np.cos(np.pi * v), 1 + 0.5 * np.sin(4 * np.pi * u) * np.sin(np.pi * v)], -1)
    env = EnvironmentMap(img.astype(np.float32)).rotate(37.0, 20.0).with_exposure(1.0)
    cam = Camera.look_at(eye=(0, 0, 0), target=(1.0, 0.3, -0.5), fov_y_deg=70, width=W, height=H)
    out = comp.render([], env, cam, tonemap="none", return_linear=True)
    expect = env.lookup(cam.pixel_rays())
    np.testing.assert_allclose(out["linear"], expect, atol=0.02 * expect.max())
    assert not out["mask"].any() and np.all(out["hand_id"] == -1)


def test_residual_environment_terms(comp):
    """Cached SH (rotated / rescaled instead of re-projected) equals the map's projection, and
    every prefiltered level conserves the residual lights' energy."""
    rng = np.random.default_rng(1)
    base = EnvironmentMap(rng.random((32, 64, 3)).astype(np.float32) ** 4 * 5)
    comp._map_sh(base)
    for e in (base.rotate(40.0, 25.0), base.rotate(-100.0, -60.0).with_exposure(1.5)):
        np.testing.assert_allclose(comp._map_sh(e), e.sh_coefficients(), atol=1e-5 * np.abs(e.sh_coefficients()).max())
    _, _, dr, rgbr = base.dominant_lights(4, 64)
    pf = comp._prefilter(dr.astype(np.float64), rgbr.astype(np.float64))
    from relit_hands.compositor import _equirect_dirs
    _, omega = _equirect_dirs(*pf.shape[1:3])
    for level in pf:
        np.testing.assert_allclose(omega @ level.reshape(-1, 3), rgbr.sum(0), rtol=1e-4)


def test_update_vertices_normals_and_bounds(comp):
    """Normals computed by the drawable = the model layer's area-weighted vertex normals (and, on a
    sphere, the radial direction); centre and radius bound the posed positions."""
    from relit_hands.hand_model import vertex_normals
    pos, faces, uvs, ufaces, _ = uv_sphere(radius=0.3, center=(0.2, -0.1, 0.4), n_lat=32, n_lon=64)
    hand = comp.add_hand(pos, faces, uvs, ufaces, roughness=NO_SPEC)
    moved = pos * np.float32([1.0, 1.5, 1.0])  # an ellipsoid: normals are no longer radial
    hand.update_vertices(moved)
    got = hand._pos_normal[:, 3:6]
    want = vertex_normals(torch.from_numpy(moved), np.ascontiguousarray(faces)).numpy()[hand.pos_index]
    np.testing.assert_allclose(got, want, atol=1e-5)
    hand.update_vertices(pos)
    radial = (pos - np.float32([0.2, -0.1, 0.4]))[hand.pos_index] / 0.3
    assert np.min(np.sum(hand._pos_normal[:, 3:6] * radial, axis=1)) > 0.995
    np.testing.assert_allclose(hand.center, [0.2, -0.1, 0.4], atol=1e-3)
    assert hand.radius == pytest.approx(0.3, rel=1e-4)


def test_pbr_has_no_nan_where_the_half_vector_meets_the_view():
    """Regression: V.H rounded above 1 made pow(1 - V.H, 5) NaN in one hand pixel of this view
    (clasp, sky_sun rotated 160 degrees, 640x480), a silently black pixel after tone mapping."""
    from relit_hands.engine import Engine
    from relit_hands.scene import scene_preset

    engine = Engine()
    try:
        scene = scene_preset("clasp")
        env = EnvironmentMap.from_name_or_path("sky_sun").rotate(160.0, 0.0)
        frame = engine.render(scene, env, engine.default_camera(scene, 640, 480), shading="pbr", return_linear=True)
        assert np.isfinite(frame.linear).all()
    finally:
        engine.release()
