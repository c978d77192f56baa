#version 330
#include "common.glsl"
// Final pass: (environment background,) exposure, tone mapping (ACES Narkowicz fit | Hable filmic |
// none), sRGB encoding.
uniform sampler2D u_hdr;     // resolved linear radiance, alpha = hand coverage (the draw target is
                             // cleared to 0 and hands write alpha 1); premultiplied by coverage
                             // for 'transparent' and for u_env_bg
uniform int u_env_bg;        // 1: u_hdr holds the hands only: add the environment where alpha < 1
uniform sampler2D u_env;     // as in background.frag
uniform mat3 u_ray_from_pix;
uniform float u_height;
uniform float u_scale;
uniform float u_exposure;    // 2^EV
uniform int u_tonemap;       // 0 none, 1 aces, 2 filmic
uniform int u_transparent;   // 1: alpha = coverage and colour is un-premultiplied
uniform int u_linear_out;    // 1: write linear radiance * exposure (a float host target): no tone
                             // mapping, no encoding
out vec4 o_color;

vec3 aces_narkowicz(vec3 x) {
    const float a = 2.51, b = 0.03, c = 2.43, d = 0.59, e = 0.14;
    return clamp((x * (a * x + b)) / (x * (c * x + d) + e), 0.0, 1.0);
}
vec3 hable_partial(vec3 x) {
    const float A = 0.15, B = 0.50, C = 0.10, D = 0.20, E = 0.02, F = 0.30;
    return ((x * (A * x + C * B) + D * E) / (x * (A * x + B) + D * F)) - E / F;
}
vec3 hable_filmic(vec3 x) {
    const float W = 11.2;
    const float exposure_bias = 2.0;
    return clamp(hable_partial(x * exposure_bias) / hable_partial(vec3(W)), 0.0, 1.0);
}
vec3 srgb_encode(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    return mix(c * 12.92, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(vec3(0.0031308), c));
}
void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 h = texelFetch(u_hdr, p, 0);
    vec3 c = h.rgb;
    if (u_env_bg == 1 && h.a < 1.0)
        c += (1.0 - h.a) * env_background(u_env, u_ray_from_pix, u_height, gl_FragCoord.xy) * u_scale;
    float alpha = 1.0;
    if (u_transparent == 1) {
        alpha = clamp(h.a, 0.0, 1.0);
        c = alpha > 0.0 ? c / alpha : vec3(0.0);
    }
    c = max(c, vec3(0.0)) * u_exposure;
    if (u_linear_out == 1) {
        o_color = vec4(c, alpha);
        return;
    }
    if (u_tonemap == 1) c = aces_narkowicz(c);
    else if (u_tonemap == 2) c = hable_filmic(c);
    o_color = vec4(srgb_encode(c), alpha);
}
