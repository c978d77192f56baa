"""Camera: OpenCV projection math, validation, and agreement with OpenGL rasterisation."""
import numpy as np
import pytest

from relit_hands.camera import Camera


def _rot(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(deg)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * Kx @ Kx


def _skewed_camera():
    K = np.array([[150.0, 3.0, 83.5], [0.0, 140.0, 57.25], [0.0, 0.0, 1.0]])
    R = _rot([0.3, 1.0, 0.2], 25.0)
    return Camera(K=K, R=R, t=np.array([0.1, -0.05, 2.0]), width=160, height=120)


def test_project_matches_K_math():
    cam = _skewed_camera()
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(20, 3)) * 0.3
    pc = pts @ cam.R.T + cam.t
    expect = np.stack([(cam.K[0, 0] * pc[:, 0] + cam.K[0, 1] * pc[:, 1]) / pc[:, 2] + cam.K[0, 2],
                       cam.K[1, 1] * pc[:, 1] / pc[:, 2] + cam.K[1, 2]], -1)
    pix, z = cam.project(pts, return_depth=True)
    np.testing.assert_allclose(pix, expect, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(z, pc[:, 2])
    assert cam.project(pts.reshape(4, 5, 3)).shape == (4, 5, 2)


def test_look_at_orientation_and_center():
    cam = Camera.look_at(eye=(0, 0, 3), target=(0, 0, 0), fov_y_deg=60, width=160, height=120)
    np.testing.assert_allclose(cam.center, [0, 0, 3], atol=1e-12)
    np.testing.assert_allclose(cam.forward, [0, 0, -1], atol=1e-12)
    # target at the image centre (pixel centres at +0.5 -> centre is W/2, H/2)
    np.testing.assert_allclose(cam.project([0, 0, 0]), [80.0, 60.0], atol=1e-9)
    # world +Y is up in the image (smaller v), world +X is right
    assert cam.project([0, 0.5, 0])[1] < 60 and cam.project([0.5, 0, 0])[0] > 80
    f = 60.0 / np.tan(np.radians(30))
    np.testing.assert_allclose(cam.K[0, 0], f)
    np.testing.assert_allclose(cam.project([0, 1.0, 0])[1], 60 - f / 3.0)


def test_pixel_rays_hit_projected_points():
    cam = _skewed_camera()
    rays = cam.pixel_rays()
    assert rays.shape == (120, 160, 3) and rays.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0, atol=1e-6)
    for r, c in [(0, 0), (37, 101), (119, 159)]:
        p = cam.center + 1.7 * rays[r, c].astype(np.float64)
        np.testing.assert_allclose(cam.project(p), [c + 0.5, r + 0.5], atol=2e-4)


def test_gl_matrices_match_project():
    cam = _skewed_camera()
    pts = np.array([[0.1, 0.2, -0.1], [-0.3, 0.1, 0.2], [0.0, 0.0, 0.0]])
    near, far = 0.5, 10.0
    M = cam.gl_projection_matrix(near, far) @ cam.gl_view_matrix()
    clip = np.c_[pts, np.ones(3)] @ M.T
    ndc = clip[:, :3] / clip[:, 3:]
    # GL window coords: x_w = (ndc_x + 1) W / 2, y_w = (ndc_y + 1) H / 2 (bottom-up) -> v = H - y_w
    u = (ndc[:, 0] + 1) * cam.width / 2
    v = cam.height - (ndc[:, 1] + 1) * cam.height / 2
    np.testing.assert_allclose(np.c_[u, v], cam.project(pts), atol=1e-9)
    z = (cam.world_to_camera(pts))[:, 2]
    expect_ndc_z = (far + near) / (far - near) - 2 * far * near / ((far - near) * z)
    np.testing.assert_allclose(ndc[:, 2], expect_ndc_z, atol=1e-9)
    # eye space: right-handed, camera looks down -z
    V = cam.gl_view_matrix()
    np.testing.assert_allclose(np.linalg.det(V[:3, :3]), 1.0)


def test_validation_errors():
    K = np.array([[100.0, 0, 50], [0, 100, 50], [0, 0, 1]])
    with pytest.raises(ValueError, match="shape"):
        Camera(K=np.eye(2), R=np.eye(3), t=np.zeros(3), width=10, height=10)
    with pytest.raises(ValueError, match="orthonormal"):
        Camera(K=K, R=np.eye(3) * 1.1, t=np.zeros(3), width=10, height=10)
    with pytest.raises(ValueError, match="det"):
        Camera(K=K, R=np.diag([1.0, 1.0, -1.0]), t=np.zeros(3), width=10, height=10)
    with pytest.raises(ValueError, match="shape"):
        Camera(K=K, R=np.eye(3), t=np.zeros(4), width=10, height=10)
    with pytest.raises(ValueError, match="positive"):
        Camera(K=K, R=np.eye(3), t=np.zeros(3), width=0, height=10)
    with pytest.raises(ValueError, match="focal"):
        Camera(K=np.diag([-1.0, 1.0, 1.0]), R=np.eye(3), t=np.zeros(3), width=10, height=10)
    with pytest.raises(ValueError, match="parallel"):
        Camera.look_at((0, 3, 0), (0, 0, 0))
    with pytest.raises(ValueError, match="near"):
        Camera.from_fov(45, 10, 10).gl_projection_matrix(1.0, 0.5)


def _gl_raster_centroid(cam, point):
    """Rasterise a tiny quad around `point` (facing the camera) with llvmpipe; return the
    centroid of covered pixels in the OpenCV pixel convention (row 0 = top, centres +0.5)."""
    moderngl = pytest.importorskip("moderngl")
    from relit_hands.compositor import create_headless_context
    try:
        ctx = create_headless_context()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    prog = ctx.program(
        vertex_shader="#version 330\nin vec3 p; uniform mat4 m; void main(){gl_Position = m * vec4(p, 1.0);}",
        fragment_shader="#version 330\nout vec4 c; void main(){c = vec4(1.0);}")
    x, y = cam.R[0], cam.R[1]  # camera right / down in world
    h = 1.5 * np.linalg.norm(cam.world_to_camera(point)) / cam.K[0, 0]  # ~3 px wide
    P = np.asarray(point, float)
    quad = np.array([P - h * x - h * y, P + h * x - h * y, P + h * x + h * y,
                     P - h * x - h * y, P + h * x + h * y, P - h * x + h * y], np.float32)
    vbo = ctx.buffer(quad.tobytes())
    vao = ctx.vertex_array(prog, [(vbo, "3f", "p")])
    M = cam.gl_projection_matrix(0.1, 10.0) @ cam.gl_view_matrix()
    prog["m"].write(np.ascontiguousarray(M.T, np.float32).tobytes())
    tex = ctx.texture((cam.width, cam.height), 1, dtype="f4")
    fbo = ctx.framebuffer([tex])
    fbo.use()
    fbo.clear()
    vao.render(moderngl.TRIANGLES)
    img = np.frombuffer(tex.read(), np.float32).reshape(cam.height, cam.width)[::-1]
    rows, cols = np.nonzero(img > 0.5)
    ctx.release()
    assert len(rows) > 0
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


def test_gl_rasterised_position_matches_project():
    cam = _skewed_camera()
    for p in ([0.05, 0.1, -0.2], [-0.25, -0.1, 0.1]):
        c = _gl_raster_centroid(cam, p)
        np.testing.assert_allclose(c, cam.project(p), atol=0.35)


# ---------------------------------------------------------------------------------- OpenXR views
# Reference: OpenXR-SDK-Source src/common/xr_linear.h (column-major XrMatrix4x4f, float m[16]),
# transcribed line by line; returned as a row-major 4x4 numpy matrix for column vectors.

def xr_matrix_create_projection_fov_gl(angle_left, angle_right, angle_up, angle_down, near_z, far_z):
    """XrMatrix4x4f_CreateProjectionFov(result, GRAPHICS_OPENGL, fov, nearZ, farZ), finite far plane."""
    tan_left, tan_right = np.tan(angle_left), np.tan(angle_right)
    tan_down, tan_up = np.tan(angle_down), np.tan(angle_up)
    tan_width = tan_right - tan_left
    tan_height = tan_up - tan_down          # GRAPHICS_OPENGL: clip space +Y up
    offset_z = near_z                       # GRAPHICS_OPENGL: [-1, 1] clip z
    m = np.zeros(16)
    m[0] = 2 / tan_width
    m[4] = 0
    m[8] = (tan_right + tan_left) / tan_width
    m[12] = 0
    m[1] = 0
    m[5] = 2 / tan_height
    m[9] = (tan_up + tan_down) / tan_height
    m[13] = 0
    m[2] = 0
    m[6] = 0
    m[10] = -(far_z + offset_z) / (far_z - near_z)
    m[14] = -(far_z * (near_z + offset_z)) / (far_z - near_z)
    m[3] = 0
    m[7] = 0
    m[11] = -1
    m[15] = 0
    return m.reshape(4, 4).T  # column-major -> row-major


def xr_matrix_view_from_pose(q, p):
    """inverse(XrMatrix4x4f_CreateTranslationRotationScale(p, q, 1)) with XrMatrix4x4f_CreateFromQuaternion."""
    x, y, z, w = q
    x2, y2, z2 = x + x, y + y, z + z
    m = np.zeros(16)
    m[0], m[1], m[2] = 1 - y * y2 - z * z2, x * y2 + w * z2, x * z2 - w * y2
    m[4], m[5], m[6] = x * y2 - w * z2, 1 - x * x2 - z * z2, y * z2 + w * x2
    m[8], m[9], m[10] = x * z2 + w * y2, y * z2 - w * x2, 1 - x * x2 - y * y2
    m[12], m[13], m[14], m[15] = p[0], p[1], p[2], 1.0
    return np.linalg.inv(m.reshape(4, 4).T)


# Quest-like asymmetric eye frusta (radians) and a head pose turned and tilted.
_FOVS = [(-0.9, 0.75, 0.8, -0.95), (-0.75, 0.9, 0.8, -0.95), (-0.4, 0.2, 0.1, -0.6)]
_Q = np.array([0.1, -0.35, 0.05, 0.93]) / np.linalg.norm([0.1, -0.35, 0.05, 0.93])
_P = np.array([0.03, 1.6, 0.2])


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.mark.parametrize("fov", _FOVS)
def test_from_openxr_projection_equals_xr_linear(fov):
    near, far = 0.05, 100.0
    cam = Camera.from_openxr((_Q, _P), fov, 1832, 1920, near, far)
    ref = xr_matrix_create_projection_fov_gl(*fov, near, far)
    np.testing.assert_allclose(cam.gl_projection_matrix(near, far), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cam.gl_view_matrix(), xr_matrix_view_from_pose(_Q, _P), atol=1e-12)
    # principal point off-centre exactly as the frustum is asymmetric
    if fov[0] + fov[1] != 0:
        assert abs(cam.K[0, 2] - 916) > 10


@pytest.mark.parametrize("fov", _FOVS)
def test_from_openxr_projects_like_openxr_view_projection(fov):
    W, H, near, far = 1832, 1920, 0.05, 100.0
    cam = Camera.from_openxr((_Q, _P), fov, W, H, near, far)
    rng = np.random.default_rng(1)
    # points in front of the view: view-space -Z forward, spread inside the frustum
    tl, tr, tu, td = np.tan(fov)
    depth = rng.uniform(0.2, 5.0, 50)
    xv = rng.uniform(tl, tr, 50) * depth
    yv = rng.uniform(td, tu, 50) * depth
    pv = np.stack([xv, yv, -depth], -1)
    world = np.c_[pv, np.ones(50)] @ np.linalg.inv(xr_matrix_view_from_pose(_Q, _P)).T
    clip = world @ (xr_matrix_create_projection_fov_gl(*fov, near, far) @ xr_matrix_view_from_pose(_Q, _P)).T
    ndc = clip[:, :3] / clip[:, 3:]
    # GL window coordinates (y up) -> OpenCV pixels (v down)
    expect = np.stack([(ndc[:, 0] + 1) * W / 2, H - (ndc[:, 1] + 1) * H / 2], -1)
    pix, z = cam.project(world[:, :3], return_depth=True)
    np.testing.assert_allclose(pix, expect, atol=1e-6)
    np.testing.assert_allclose(z, depth, atol=1e-9)
    # the frustum edges map to the image edges
    corner = np.array([tl, tu, -1.0])
    w = np.append(corner, 1.0) @ np.linalg.inv(xr_matrix_view_from_pose(_Q, _P)).T
    np.testing.assert_allclose(cam.project(w[:3]), [0.0, 0.0], atol=1e-6)


def test_from_openxr_accepts_structs_dicts_and_tuples():
    fov = _FOVS[0]
    ref = Camera.from_openxr((_Q, _P), fov, 640, 480)
    q = _Obj(x=_Q[0], y=_Q[1], z=_Q[2], w=_Q[3])
    p = _Obj(x=_P[0], y=_P[1], z=_P[2])
    variants = [
        (_Obj(orientation=q, position=p), _Obj(angle_left=fov[0], angle_right=fov[1], angle_up=fov[2], angle_down=fov[3])),
        ({"orientation": {"x": _Q[0], "y": _Q[1], "z": _Q[2], "w": _Q[3]}, "position": list(_P)},
         {"angleLeft": fov[0], "angleRight": fov[1], "angleUp": fov[2], "angleDown": fov[3]}),
        ((tuple(_Q * 2.0), tuple(_P)), np.array(fov)),  # unnormalised quaternion
    ]
    for pose, f in variants:
        cam = Camera.from_openxr(pose, f, 640, 480)
        np.testing.assert_allclose(cam.K, ref.K, atol=1e-12)
        np.testing.assert_allclose(cam.R, ref.R, atol=1e-12)
        np.testing.assert_allclose(cam.t, ref.t, atol=1e-12)
    # identity pose: the view looks down world -Z with +Y up
    cam = Camera.from_openxr(((0, 0, 0, 1), (0, 0, 0)), (-0.5, 0.5, 0.5, -0.5), 100, 100)
    np.testing.assert_allclose(cam.forward, [0, 0, -1], atol=1e-12)
    assert cam.project([0, 0.1, -1])[1] < 50


def test_from_openxr_errors():
    with pytest.raises(ValueError, match="angleDown|angle_down"):
        Camera.from_openxr((_Q, _P), {"angleLeft": -0.5, "angleRight": 0.5, "angleUp": 0.5}, 64, 64)
    with pytest.raises(ValueError, match="empty field of view"):
        Camera.from_openxr((_Q, _P), (0.5, -0.5, 0.5, -0.5), 64, 64)
    with pytest.raises(ValueError, match="zero quaternion"):
        Camera.from_openxr(((0, 0, 0, 0), _P), _FOVS[0], 64, 64)
    with pytest.raises(ValueError, match="near"):
        Camera.from_openxr((_Q, _P), _FOVS[0], 64, 64, near=1.0, far=0.5)
    with pytest.raises(ValueError, match="shape"):
        Camera.from_openxr(((0, 0, 1), _P), _FOVS[0], 64, 64)


def test_stereo_pair_moves_the_eyes_along_the_camera_x_axis():
    cam = Camera.look_at([0.3, 0.2, 0.5], [0.0, 0.0, 0.0], width=64, height=48)
    left, right = cam.stereo_pair(0.07)
    np.testing.assert_allclose(right.center - left.center, 0.07 * cam.R[0], atol=1e-12)
    np.testing.assert_allclose((left.center + right.center) / 2, cam.center, atol=1e-12)
    for eye in (left, right):
        assert np.array_equal(eye.K, cam.K) and np.array_equal(eye.R, cam.R) and eye.size == cam.size
    # a point straight ahead of the head appears right of centre in the left eye, left in the right eye
    p = cam.center + 0.5 * cam.forward
    assert left.project(p[None])[0, 0] > 32 > right.project(p[None])[0, 0]
    with pytest.raises(ValueError, match="ipd"):
        cam.stereo_pair(float("nan"))
