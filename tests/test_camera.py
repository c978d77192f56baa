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
