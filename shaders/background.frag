#version 330
#include "common.glsl"
// Background: per-pixel world ray through the pixel centre -> equirect lookup.
uniform sampler2D u_env;      // world-frame equirect (rotation + exposure already baked in)
uniform mat3 u_ray_from_pix;  // R^T K^-1 : OpenCV pixel (u, v, 1) -> world ray
uniform float u_height;       // image height in pixels (GL y is bottom-up)
uniform float u_scale;        // extra radiance scale (1.0 by default)
layout(location = 0) out vec4 o_color;
layout(location = 1) out vec4 o_aux;
void main() {
    o_color = vec4(env_background(u_env, u_ray_from_pix, u_height, gl_FragCoord.xy) * u_scale, 1.0);
    o_aux = vec4(0.0);
}
