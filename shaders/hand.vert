#version 330
in vec3 in_pos;
in vec3 in_normal;
in vec4 in_tangent;   // xyz: tangent (+u direction), w: handedness (B = w * cross(N, T))
in vec2 in_uv;
uniform mat4 u_view_proj;
out vec3 v_pos;
out vec3 v_normal;
out vec4 v_tangent;
out vec2 v_uv;
void main() {
    v_pos = in_pos;
    v_normal = in_normal;
    v_tangent = in_tangent;
    v_uv = in_uv;
    gl_Position = u_view_proj * vec4(in_pos, 1.0);
}
