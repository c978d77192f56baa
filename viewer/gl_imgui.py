"""Dear ImGui on moderngl: a renderer for imgui-bundle's draw data, and GLFW input plumbing.

Why not ``imgui_bundle.python_backends.glfw_backend``: it draws through PyOpenGL (one more
dependency) and only into a GLFW window. This renderer draws with moderngl into whatever
framebuffer is bound, so the same UI renders into a GLFW window *or* into an offscreen
framebuffer of a headless EGL context (``relit-hands view --headless`` screenshots keep their
UI on machines without any display). It is a port of imgui's ``imgui_impl_opengl3`` and honours
``ImGuiBackendFlags_RendererHasTextures`` (imgui >= 1.92 dynamic font atlas).

User textures (the rendered frame, overlays, UV maps) are moderngl textures registered with
:meth:`ImguiRenderer.texture_ref`.
"""
from __future__ import annotations

import ctypes

import moderngl
import numpy as np
from imgui_bundle import imgui

_VERT = """
#version 330
uniform mat4 ProjMtx;
in vec2 Position;
in vec2 UV;
in vec4 Color;
out vec2 Frag_UV;
out vec4 Frag_Color;
void main() {
    Frag_UV = UV;
    Frag_Color = Color;
    gl_Position = ProjMtx * vec4(Position.xy, 0.0, 1.0);
}
"""
_FRAG = """
#version 330
uniform sampler2D Texture;
in vec2 Frag_UV;
in vec4 Frag_Color;
out vec4 Out_Color;
void main() { Out_Color = Frag_Color * texture(Texture, Frag_UV.st); }
"""


class ImguiRenderer:
    """Draws ``imgui.get_draw_data()`` with moderngl into the currently bound framebuffer."""

    def __init__(self, ctx: moderngl.Context):
        if not imgui.get_current_context():
            raise RuntimeError("create the imgui context (imgui.create_context()) before the renderer")
        self.ctx = ctx
        self.io = imgui.get_io()
        self.prog = ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
        self.prog["Texture"].value = 0
        self.vbo = ctx.buffer(reserve=1 << 16, dynamic=True)
        self.ibo = ctx.buffer(reserve=1 << 15, dynamic=True)
        self.vao = ctx.vertex_array(self.prog, [(self.vbo, "2f 2f 4f1", "Position", "UV", "Color")],
                                    index_buffer=self.ibo, index_element_size=imgui.INDEX_SIZE)
        self._textures: dict[int, moderngl.Texture] = {}  # GL name -> texture (imgui's and user's)
        self._own: set[int] = set()  # textures created for imgui's own ImTextureData
        self.io.backend_flags |= imgui.BackendFlags_.renderer_has_textures
        pio = imgui.get_platform_io()
        max_size = int(ctx.info.get("GL_MAX_TEXTURE_SIZE", 8192))
        pio.renderer_texture_max_width = max_size
        pio.renderer_texture_max_height = max_size

    # ------------------------------------------------------------------ textures
    def texture_ref(self, tex: moderngl.Texture) -> imgui.ImTextureRef:
        """An ImTextureRef for a moderngl texture (registered so draw commands can bind it)."""
        self._textures[tex.glo] = tex
        return imgui.ImTextureRef(tex.glo)

    def forget(self, tex: moderngl.Texture) -> None:
        self._textures.pop(tex.glo, None)

    def _update_textures(self):
        for tex in imgui.get_platform_io().textures:
            if tex.status != imgui.ImTextureStatus.ok:
                self._update_texture(tex)

    def _update_texture(self, tex):
        st = tex.status
        if st in (imgui.ImTextureStatus.want_create, imgui.ImTextureStatus.want_updates):
            pixels = np.ascontiguousarray(tex.get_pixels_array()).reshape(tex.height, tex.width, 4)
            if st == imgui.ImTextureStatus.want_create or tex.tex_id not in self._textures:
                t = self.ctx.texture((tex.width, tex.height), 4, pixels.tobytes())
                t.filter = (moderngl.LINEAR, moderngl.LINEAR)
                t.repeat_x = t.repeat_y = False
                self._textures[t.glo] = t
                self._own.add(t.glo)
                tex.set_tex_id(t.glo)
            else:
                t = self._textures[tex.tex_id]
                for r in tex.updates:  # upload only the changed rectangles
                    block = np.ascontiguousarray(pixels[r.y:r.y + r.h, r.x:r.x + r.w])
                    t.write(block.tobytes(), viewport=(r.x, r.y, r.w, r.h))
            tex.status = imgui.ImTextureStatus.ok
        elif st == imgui.ImTextureStatus.want_destroy:
            t = self._textures.pop(tex.tex_id, None)
            if t is not None:
                self._own.discard(t.glo)
                t.release()
            tex.set_tex_id(0)
            tex.status = imgui.ImTextureStatus.destroyed

    # ------------------------------------------------------------------ draw
    def render(self, draw_data, fbo: moderngl.Framebuffer | None = None) -> None:
        self._update_textures()
        io = self.io
        dw, dh = io.display_size.x, io.display_size.y
        sx, sy = io.display_framebuffer_scale.x, io.display_framebuffer_scale.y
        fb_w, fb_h = int(dw * sx), int(dh * sy)
        if fb_w <= 0 or fb_h <= 0:
            return
        ctx = self.ctx
        if fbo is not None:
            fbo.use()
        ctx.viewport = (0, 0, fb_w, fb_h)
        ctx.enable(moderngl.BLEND)
        ctx.blend_equation = moderngl.FUNC_ADD
        ctx.blend_func = (moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA, moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA)
        ctx.disable(moderngl.CULL_FACE | moderngl.DEPTH_TEST)
        proj = np.array([[2.0 / dw, 0, 0, 0], [0, -2.0 / dh, 0, 0], [0, 0, -1, 0], [-1, 1, 0, 1]], np.float32)
        self.prog["ProjMtx"].write(proj.tobytes())
        ox, oy = draw_data.display_pos.x, draw_data.display_pos.y
        for cl in draw_data.cmd_lists:
            vsize = cl.vtx_buffer.size() * imgui.VERTEX_SIZE
            isize = cl.idx_buffer.size() * imgui.INDEX_SIZE
            if vsize == 0 or isize == 0:
                continue
            if self.vbo.size < vsize:
                self.vbo.orphan(max(vsize, 2 * self.vbo.size))
            if self.ibo.size < isize:
                self.ibo.orphan(max(isize, 2 * self.ibo.size))
            self.vbo.write(ctypes.string_at(cl.vtx_buffer.data_address(), vsize))
            self.ibo.write(ctypes.string_at(cl.idx_buffer.data_address(), isize))
            for cmd in cl.cmd_buffer:
                tex = self._textures.get(cmd.tex_ref.get_tex_id())
                if tex is None:
                    continue
                x0, y0, x1, y1 = cmd.clip_rect.x, cmd.clip_rect.y, cmd.clip_rect.z, cmd.clip_rect.w
                x0, x1 = (x0 - ox) * sx, (x1 - ox) * sx
                y0, y1 = (y0 - oy) * sy, (y1 - oy) * sy
                if x1 <= x0 or y1 <= y0:
                    continue
                ctx.scissor = (int(x0), int(fb_h - y1), int(x1 - x0), int(y1 - y0))
                tex.use(0)
                self.vao.render(moderngl.TRIANGLES, vertices=cmd.elem_count, first=cmd.idx_offset)
        ctx.scissor = None
        ctx.disable(moderngl.BLEND)

    def draw_image(self, tex: moderngl.Texture, rect, fb_height: int, fbo=None) -> None:
        """Draw ``tex`` (row 0 = top, as uploaded from a numpy image) opaque into ``rect``
        (x0, y0, x1, y1 framebuffer pixels, y down): no blending, one quad. Cheaper on CPU
        rasterisers than an imgui image (the view is the largest thing on screen)."""
        if not hasattr(self, "_blit"):
            self._blit = self.ctx.program(vertex_shader="""
#version 330
out vec2 uv;
void main() {
    vec2 p = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    uv = vec2(p.x, 1.0 - p.y);
    gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}""", fragment_shader="""
#version 330
uniform sampler2D tex;
in vec2 uv;
out vec4 color;
void main() { color = vec4(texture(tex, uv).rgb, 1.0); }""")
            self._blit_vao = self.ctx.vertex_array(self._blit, [])
        if fbo is not None:
            fbo.use()
        x0, y0, x1, y1 = (int(round(v)) for v in rect)
        self.ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        self.ctx.scissor = None
        self.ctx.viewport = (x0, fb_height - y1, x1 - x0, y1 - y0)
        tex.use(0)
        self._blit["tex"].value = 0
        self._blit_vao.render(moderngl.TRIANGLES, vertices=3)

    def release(self):
        for glo in list(self._own):
            t = self._textures.pop(glo, None)
            if t is not None:
                t.release()
        self._own.clear()
        for tex in imgui.get_platform_io().textures:
            if tex.status != imgui.ImTextureStatus.destroyed:
                tex.set_tex_id(0)
                tex.status = imgui.ImTextureStatus.destroyed
        for o in (self.vao, self.vbo, self.ibo, self.prog, getattr(self, "_blit_vao", None), getattr(self, "_blit", None)):
            if o is not None:
                o.release()
        self.io.backend_flags &= ~imgui.BackendFlags_.renderer_has_textures


# ---------------------------------------------------------------------- GLFW input
def glfw_key_map() -> dict:
    """GLFW key code -> imgui.Key for the keys the viewer (and text fields) use."""
    import glfw

    m = {glfw.KEY_TAB: imgui.Key.tab, glfw.KEY_BACKSPACE: imgui.Key.backspace, glfw.KEY_ENTER: imgui.Key.enter,
         glfw.KEY_ESCAPE: imgui.Key.escape, glfw.KEY_DELETE: imgui.Key.delete, glfw.KEY_SPACE: imgui.Key.space,
         glfw.KEY_LEFT: imgui.Key.left_arrow, glfw.KEY_RIGHT: imgui.Key.right_arrow,
         glfw.KEY_UP: imgui.Key.up_arrow, glfw.KEY_DOWN: imgui.Key.down_arrow, glfw.KEY_HOME: imgui.Key.home,
         glfw.KEY_END: imgui.Key.end, glfw.KEY_PAGE_UP: imgui.Key.page_up, glfw.KEY_PAGE_DOWN: imgui.Key.page_down,
         glfw.KEY_INSERT: imgui.Key.insert, glfw.KEY_KP_ENTER: imgui.Key.keypad_enter,
         glfw.KEY_LEFT_CONTROL: imgui.Key.left_ctrl, glfw.KEY_RIGHT_CONTROL: imgui.Key.right_ctrl,
         glfw.KEY_LEFT_SHIFT: imgui.Key.left_shift, glfw.KEY_RIGHT_SHIFT: imgui.Key.right_shift,
         glfw.KEY_LEFT_ALT: imgui.Key.left_alt, glfw.KEY_RIGHT_ALT: imgui.Key.right_alt,
         glfw.KEY_LEFT_SUPER: imgui.Key.left_super, glfw.KEY_RIGHT_SUPER: imgui.Key.right_super,
         glfw.KEY_MINUS: imgui.Key.minus, glfw.KEY_PERIOD: imgui.Key.period, glfw.KEY_SLASH: imgui.Key.slash,
         glfw.KEY_COMMA: imgui.Key.comma, glfw.KEY_EQUAL: imgui.Key.equal}
    for i in range(26):
        m[glfw.KEY_A + i] = getattr(imgui.Key, chr(ord("a") + i))
    for i in range(10):
        m[glfw.KEY_0 + i] = getattr(imgui.Key, f"_{i}")
    for i in range(12):
        m[glfw.KEY_F1 + i] = getattr(imgui.Key, f"f{i + 1}")
    return m


class GlfwInput:
    """Forwards a GLFW window's events to imgui's input queue (the only input path: the
    viewer reads mouse and keys back from imgui, so scripted events take the same route)."""

    _MODS = None

    def __init__(self, window):
        import glfw

        self.window = window
        self.io = imgui.get_io()
        self.key_map = glfw_key_map()
        self._mods = {imgui.Key.left_ctrl: imgui.Key.mod_ctrl, imgui.Key.right_ctrl: imgui.Key.mod_ctrl,
                      imgui.Key.left_shift: imgui.Key.mod_shift, imgui.Key.right_shift: imgui.Key.mod_shift,
                      imgui.Key.left_alt: imgui.Key.mod_alt, imgui.Key.right_alt: imgui.Key.mod_alt,
                      imgui.Key.left_super: imgui.Key.mod_super, imgui.Key.right_super: imgui.Key.mod_super}
        glfw.set_key_callback(window, self._key)
        glfw.set_char_callback(window, self._char)
        glfw.set_cursor_pos_callback(window, self._cursor)
        glfw.set_mouse_button_callback(window, self._button)
        glfw.set_scroll_callback(window, self._scroll)
        glfw.set_cursor_enter_callback(window, self._enter)

    def _key(self, window, key, scancode, action, mods):
        k = self.key_map.get(key)
        if k is None:
            return
        import glfw

        down = action != glfw.RELEASE
        self.io.add_key_event(k, down)
        if k in self._mods:
            self.io.add_key_event(self._mods[k], down)

    def _char(self, window, char):
        if 0 < char < 0x10000:
            self.io.add_input_character(char)

    def _cursor(self, window, x, y):
        self.io.add_mouse_pos_event(float(x), float(y))

    def _enter(self, window, entered):
        if not entered:
            self.io.add_mouse_pos_event(-3.4e38, -3.4e38)

    def _button(self, window, button, action, mods):
        import glfw

        if 0 <= button < 5:
            self.io.add_mouse_button_event(button, action == glfw.PRESS)

    def _scroll(self, window, dx, dy):
        self.io.add_mouse_wheel_event(float(dx), float(dy))
