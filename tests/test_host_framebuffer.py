"""The Engine draws into framebuffers / textures the host application owns (its own moderngl
context), without a CPU read-back: the pixels equal the read-back path's (the reference), stereo
eye by eye, and the host's GL state is as the host left it."""
import numpy as np
import pytest

moderngl = pytest.importorskip("moderngl")

from relit_hands.compositor import create_headless_context  # noqa: E402
from relit_hands.engine import Engine  # noqa: E402
from relit_hands.environment import EnvironmentMap  # noqa: E402
from relit_hands.scene import scene_preset  # noqa: E402

W, H = 160, 120


@pytest.fixture(scope="module")
def host():
    """The host application's context and an Engine made with it (shipped asset and student)."""
    try:
        ctx = create_headless_context()
    except RuntimeError as exc:
        pytest.skip(f"no EGL OpenGL context: {exc}")
    engine = Engine(ctx=ctx, shadow_map_size=256, raycast="embree")
    yield ctx, engine
    engine.release()
    with ctx:  # a host releases its context after making it not current (leaving `with ctx:` does)
        pass
    ctx.release()


@pytest.fixture(scope="module")
def env():
    return EnvironmentMap.from_name_or_path("sky_sun").rotate(160.0)


@pytest.fixture(scope="module")
def scene():
    return scene_preset("clasp")


def read_rgb8(obj) -> np.ndarray:
    """uint8 [H, W, 3], row 0 = top, of a host framebuffer or RGBA8 texture."""
    if isinstance(obj, moderngl.Framebuffer):
        data = obj.read(components=3, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(obj.height, obj.width, 3)[::-1]
    return np.frombuffer(obj.read(alignment=1), np.uint8).reshape(obj.height, obj.width, 4)[::-1, :, :3]


def read_float(tex) -> np.ndarray:
    dt = {"f2": np.float16, "f4": np.float32}[tex.dtype]
    return np.frombuffer(tex.read(alignment=1), dt).reshape(tex.height, tex.width, 4)[::-1, :, :3].astype(np.float32)


def max_lsb(a, b) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_pbr_into_host_targets_equals_readback(host, env, scene):
    ctx, engine = host
    cam = engine.default_camera(scene, W, H)
    ref = engine.render(scene, env, cam, shading="pbr", return_linear=True)
    fbo = ctx.framebuffer([ctx.texture((W, H), 4)], ctx.depth_renderbuffer((W, H)))  # a host's eye buffer
    tex8 = ctx.texture((W, H), 4)
    texf = ctx.texture((W, H), 4, dtype="f4")
    for tgt in (fbo, tex8, texf):
        f = engine.render(scene, env, cam, shading="pbr", target=tgt)
        assert f.image is None and f.mask is None and f.linear is None and f.timings_ms["composite"] > 0
    assert max_lsb(read_rgb8(fbo), ref.image) <= 1
    assert max_lsb(read_rgb8(tex8), ref.image) <= 1
    # float targets: linear radiance (exposure 0), background included
    np.testing.assert_allclose(read_float(texf), ref.linear, rtol=1e-5, atol=1e-6)
    # camera None: the framing camera takes the target's size
    f = engine.render(scene, env, shading="pbr", target=tex8)
    assert (f.camera.width, f.camera.height) == (W, H)


def test_student_stereo_into_host_targets_equals_readback_eyes(host, env, scene):
    ctx, engine = host
    left, right = engine.default_camera(scene, W, H).stereo_pair()
    ref = engine.render_student(scene, env, [left, right], n_lights=32)
    t_left = ctx.framebuffer([ctx.renderbuffer((W, H), 4)])
    t_right = ctx.texture((W, H), 4)
    sf = engine.render_student(scene, env, [left, right], n_lights=32, targets=[t_left, t_right])
    assert [f.image for f in sf.frames] == [None, None] and len(sf.timings_ms["composite_per_view"]) == 2
    for side in ref.textures:
        np.testing.assert_array_equal(sf.textures[side], ref.textures[side])
    assert max_lsb(read_rgb8(t_left), ref.frames[0].image) <= 1
    assert max_lsb(read_rgb8(t_right), ref.frames[1].image) <= 1
    assert max_lsb(read_rgb8(t_left), read_rgb8(t_right)) > 0, "the eyes see different images"
    # mono into a half-float target: the linear image (to half precision)
    ref_mono = engine.render_student(scene, env, right, n_lights=32, return_linear=True)
    t_half = ctx.texture((W, H), 4, dtype="f2")
    engine.render_student(scene, env, right, n_lights=32, targets=t_half)
    np.testing.assert_allclose(read_float(t_half), ref_mono.frames[0].linear, rtol=1e-3, atol=1e-4)


HOST_VS = """#version 330
uniform float u_z;
void main() {
    vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2)) * 2.0 - 1.0;
    gl_Position = vec4(p, u_z, 1.0);
}"""
HOST_FS = """#version 330
uniform vec4 u_color;
out vec4 o;
void main() { o = u_color; }"""


def test_host_gl_state_is_left_as_it_was(host, env, scene):
    """Unusual host state before the engine's calls (read-back and into-target, PBR and student);
    afterwards the host draws without re-binding anything and gets exactly what that state gives:
    its framebuffer, viewport, scissor, additive blending, depth test with depth func '<='."""
    ctx, engine = host
    S = (64, 48)
    fbo = ctx.framebuffer([ctx.texture(S, 4)], ctx.depth_renderbuffer(S))
    prog = ctx.program(vertex_shader=HOST_VS, fragment_shader=HOST_FS)
    vao = ctx.vertex_array(prog, [])
    fbo.use()
    fbo.clear(0.0, 0.0, 0.0, 0.0, depth=0.4)
    ctx.viewport = (3, 5, 40, 30)
    ctx.scissor = (1, 2, 30, 25)
    ctx.enable_only(moderngl.BLEND | moderngl.DEPTH_TEST)
    ctx.blend_func = moderngl.ONE, moderngl.ONE
    ctx.depth_func = "<="
    ctx.front_face = "cw"

    cam = engine.default_camera(scene, W, H)
    other = ctx.texture((W, H), 4)
    engine.render(scene, env, cam, shading="pbr")
    engine.render(scene, env, cam, shading="pbr", target=other)
    engine.render_student(scene, env, cam, n_lights=32, targets=[other])
    engine.render_student(scene, env, cam, n_lights=32, readback="rgb")

    assert ctx.fbo is fbo and ctx.viewport == (3, 5, 40, 30) and ctx.scissor == (1, 2, 30, 25)
    assert ctx.front_face == "cw"
    for z, color in ((0.0, (0.25, 0.0, 0.0, 0.0)), (-0.5, (0.0, 0.25, 0.0, 0.0))):
        prog["u_z"].value, prog["u_color"].value = z, color
        vao.render(vertices=3)  # depth 0.5: fails the depth test against 0.4; depth 0.25: passes
        vao.render(vertices=3)  # again: passes only with '<=', adds only with BLEND ONE, ONE
    img = np.frombuffer(fbo.read(components=4, alignment=1), np.uint8).reshape(S[1], S[0], 4)  # GL rows
    expect = np.zeros_like(img)
    expect[5:27, 3:31, 1] = 128  # viewport (3, 5, 40, 30) within scissor (1, 2, 30, 25): x 3..31, y 5..27
    assert np.abs(img.astype(int) - expect).max() <= 1


def test_bad_targets_are_clear_errors(host, env, scene):
    ctx, engine = host
    cam = engine.default_camera(scene, W, H)
    with pytest.raises(ValueError, match="target: size 100x80 does not match the camera's 160x120"):
        engine.render(scene, env, cam, target=ctx.texture((100, 80), 4))
    with pytest.raises(ValueError, match="target: dtype 'u1'"):
        engine.render(scene, env, cam, target=ctx.texture((W, H), 4, dtype="u1"))
    with pytest.raises(ValueError, match="target: 2 components"):
        engine.render(scene, env, cam, target=ctx.texture((W, H), 2))
    with pytest.raises(ValueError, match="not read back"):
        engine.render(scene, env, cam, target=ctx.texture((W, H), 4), readback="all")
    with pytest.raises(TypeError, match="moderngl.Framebuffer or moderngl.Texture"):
        engine.render(scene, env, cam, target=np.zeros((H, W, 4), np.uint8))
    left, right = cam.stereo_pair()
    with pytest.raises(ValueError, match=r"targets\[1\]: size 80x60"):
        engine.render_student(scene, env, [left, right], n_lights=32,
                              targets=[ctx.texture((W, H), 4), ctx.texture((80, 60), 4)])
    with pytest.raises(ValueError, match="one per camera"):
        engine.render_student(scene, env, [left, right], n_lights=32, targets=[ctx.texture((W, H), 4)])
