#version 330
#include "common.glsl"
// Hand shading. Modes: 0 pbr, 2 normal, 3 albedo, 4 uv (1, uv_texture, is hand_uv.vert/.frag).
// The exact PBR model is documented in relit_hands.compositor's module docstring.
#define MAX_LIGHTS 8

in vec3 v_pos;
in vec3 v_normal;
in vec4 v_tangent;
in vec2 v_uv;

uniform int u_mode;
uniform float u_hand_id;
uniform vec3 u_cam_pos;
uniform vec3 u_cam_rz;        // row 2 of the OpenCV R: depth z = dot(u_cam_rz, P) + u_cam_tz
uniform float u_cam_tz;

uniform sampler2D u_albedo;     // sRGB texture -> linear on sampling
uniform sampler2D u_normal_map; // tangent-space, 0.5 n + 0.5; T = +u, B = +v
uniform sampler2D u_rough;      // R: perceptual GGX roughness, G: F0 / 0.08

// k dominant directional lights, optionally shadow-mapped (atlas of k square tiles, side by side)
uniform int u_num_lights;
uniform vec3 u_light_dir[MAX_LIGHTS];   // unit, world, towards the light
uniform vec3 u_light_rgb[MAX_LIGHTS];   // irradiance at normal incidence
uniform mat4 u_light_mat[MAX_LIGHTS];   // world -> light clip (orthographic)
uniform float u_light_texel[MAX_LIGHTS];// world size of one shadow texel
uniform float u_light_bias[MAX_LIGHTS]; // constant depth bias in [0,1] depth units
uniform int u_shadows;
uniform sampler2DShadow u_shadow;
uniform float u_shadow_tile;            // tile side in texels

// residual environment
uniform vec3 u_sh_irr[9];               // irradiance SH coefficients (already times A_l)
uniform sampler3D u_prefilter;          // equirect x roughness-level prefiltered radiance
uniform float u_pf_r0;                  // roughness of the first level
uniform float u_pf_r1;                  // roughness of the last level
uniform float u_pf_levels;              // number of levels

layout(location = 0) out vec4 o_color;
layout(location = 1) out vec4 o_aux;

vec3 sh_irradiance(vec3 n) {
    float x = n.x, y = n.y, z = n.z;
    vec3 e = u_sh_irr[0] * 0.282095
           + u_sh_irr[1] * (0.488603 * y)
           + u_sh_irr[2] * (0.488603 * z)
           + u_sh_irr[3] * (0.488603 * x)
           + u_sh_irr[4] * (1.092548 * x * y)
           + u_sh_irr[5] * (1.092548 * y * z)
           + u_sh_irr[6] * (0.315392 * (3.0 * z * z - 1.0))
           + u_sh_irr[7] * (1.092548 * x * z)
           + u_sh_irr[8] * (0.546274 * (x * x - y * y));
    return max(e, vec3(0.0));
}

float shadow_visibility(int k, vec3 P, vec3 Ng) {
    vec3 L = u_light_dir[k];
    float NL = clamp(dot(Ng, L), 0.0, 1.0);
    // normal-offset bias: push the lookup point along the geometric normal, more at grazing angles
    vec3 Po = P + Ng * u_light_texel[k] * (1.0 + 2.0 * (1.0 - NL));
    vec3 ndc = (u_light_mat[k] * vec4(Po, 1.0)).xyz;
    vec2 tc = ndc.xy * 0.5 + 0.5;
    if (any(lessThan(tc, vec2(0.0))) || any(greaterThan(tc, vec2(1.0)))) return 1.0;
    float ref = ndc.z * 0.5 + 0.5 - u_light_bias[k];
    float ts = 1.0 / u_shadow_tile;
    float sum = 0.0;
    // 2x2 taps at +-0.5 texel, each a hardware 2x2 bilinear PCF: 3x3-texel tent footprint
    for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
            vec2 t = clamp(tc + (vec2(dx, dy) - 0.5) * ts, vec2(0.5 * ts), vec2(1.0 - 0.5 * ts));
            vec2 atlas = vec2((float(k) + t.x) / float(u_num_lights), t.y);
            sum += texture(u_shadow, vec3(atlas, ref));
        }
    }
    return sum * 0.25;
}

// Karis, "Physically Based Shading on Mobile" (2014): analytic split-sum environment BRDF.
vec3 env_brdf_approx(vec3 F0, float roughness, float NoV) {
    const vec4 c0 = vec4(-1.0, -0.0275, -0.572, 0.022);
    const vec4 c1 = vec4(1.0, 0.0425, 1.04, -0.04);
    vec4 r = roughness * c0 + c1;
    float a004 = min(r.x * r.x, exp2(-9.28 * NoV)) * r.x + r.y;
    vec2 AB = vec2(-1.04, 1.04) * a004 + r.zw;
    return F0 * AB.x + AB.y;
}

void main() {
    vec2 uv = v_uv;
    vec3 Ng = normalize(v_normal);
    vec3 color;
    if (u_mode == 4) {
        color = vec3(uv, 0.0);
    } else {
        // tangent frame: T = +u, B = +v (w = handedness), both orthogonal to the normal
        vec3 T = v_tangent.xyz - Ng * dot(Ng, v_tangent.xyz);
        float tl = length(T);
        vec3 n = Ng;
        if (tl > 1e-8) {
            T /= tl;
            vec3 B = (v_tangent.w < 0.0 ? -1.0 : 1.0) * cross(Ng, T);
            vec3 nm = texture(u_normal_map, uv).xyz * 2.0 - 1.0;
            n = normalize(T * nm.x + B * nm.y + Ng * nm.z);
        }
        vec3 albedo = texture(u_albedo, uv).rgb;  // GL_SRGB8 texture: decoded to linear by the sampler
        if (u_mode == 2) {
            color = n * 0.5 + 0.5;
        } else if (u_mode == 3) {
            color = albedo;
        } else {
            vec4 rs = texture(u_rough, uv);
            float rough = clamp(rs.r, 0.045, 1.0);
            float a = rough * rough;
            float a2 = a * a;
            vec3 F0 = vec3(rs.g * 0.08);
            vec3 V = normalize(u_cam_pos - v_pos);
            float NoV = max(dot(n, V), 1e-4);
            vec3 diffuse = vec3(0.0);
            vec3 spec = vec3(0.0);
            for (int k = 0; k < u_num_lights; ++k) {
                vec3 L = u_light_dir[k];
                float NoL = dot(n, L);
                if (NoL <= 0.0) continue;
                float vis = (u_shadows == 1) ? shadow_visibility(k, v_pos, Ng) : 1.0;
                // L = -V (a light straight behind the hand, seen through a back-facing shading
                // normal) has no half vector: normalize would give NaN; use n (NoH = 1)
                vec3 LV = L + V;
                float lv = length(LV);
                vec3 H = lv > 1e-6 ? LV / lv : n;
                float NoH = max(dot(n, H), 0.0);
                float VoH = clamp(dot(V, H), 0.0, 1.0);  // 1 - VoH < 0 (rounding) would make pow() NaN
                float dd = NoH * NoH * (a2 - 1.0) + 1.0;
                float D = a2 / (PI * dd * dd);
                // Smith height-correlated visibility  G / (4 NoL NoV)
                float Vis = 0.5 / (NoL * sqrt(NoV * NoV * (1.0 - a2) + a2) + NoV * sqrt(NoL * NoL * (1.0 - a2) + a2));
                vec3 F = F0 + (1.0 - F0) * pow(1.0 - VoH, 5.0);
                vec3 E = u_light_rgb[k] * (NoL * vis);
                diffuse += E;
                spec += D * Vis * F * E;
            }
            diffuse += sh_irradiance(n);
            vec3 R = reflect(-V, n);
            float lvl = (clamp(rough, u_pf_r0, u_pf_r1) - u_pf_r0) / max(u_pf_r1 - u_pf_r0, 1e-6) * (u_pf_levels - 1.0);
            vec3 pf = textureLod(u_prefilter, vec3(dir_to_equirect(R), (lvl + 0.5) / u_pf_levels), 0.0).rgb;
            spec += pf * env_brdf_approx(F0, rough, NoV);
            color = albedo / PI * diffuse + spec;
        }
    }
    float z = dot(u_cam_rz, v_pos) + u_cam_tz;
    o_color = vec4(color, 1.0);
    o_aux = vec4(u_hand_id + 1.0, z, 0.0, 1.0);
}
