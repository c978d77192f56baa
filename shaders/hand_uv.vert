#version 330
// 'uv_texture' shading (the student's frames): position + UV only. A separate program from
// hand.vert/hand.frag because on llvmpipe the full PBR program costs ~3x as much per fragment
// even when it takes its texture-only branch (measured at 1280x720: ~21 vs ~61 ms for two hands).
in vec3 in_pos;
in vec2 in_uv;
uniform mat4 u_view_proj;
uniform vec3 u_cam_rz;        // row 2 of the OpenCV R: depth z = dot(u_cam_rz, P) + u_cam_tz
uniform float u_cam_tz;
out vec2 v_uv;
out float v_z;
void main() {
    v_uv = in_uv;
    v_z = dot(u_cam_rz, in_pos) + u_cam_tz;
    gl_Position = u_view_proj * vec4(in_pos, 1.0);
}
