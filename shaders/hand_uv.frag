#version 330
// 'uv_texture' shading: the hand's HDR radiance texture sampled at the mesh UV, displayed as is;
// aux as in hand.frag (hand id + 1, camera depth z, -, coverage).
in vec2 v_uv;
in float v_z;
uniform sampler2D u_radiance;
uniform float u_hand_id;
layout(location = 0) out vec4 o_color;
layout(location = 1) out vec4 o_aux;
void main() {
    o_color = vec4(texture(u_radiance, v_uv).rgb, 1.0);
    o_aux = vec4(u_hand_id + 1.0, v_z, 0.0, 1.0);
}
