// Shared helpers, included by the compositor's shader loader (relit_hands.compositor.load_shader).
const float PI = 3.14159265358979323846;

// World direction -> equirect (u, v) per docs/conventions.md:
// d = (sin(phi) cos(el), sin(el), -cos(phi) cos(el)),  phi = 2 pi (u - 0.5),  el = pi (0.5 - v).
vec2 dir_to_equirect(vec3 d) {
    d = normalize(d);
    float phi = (abs(d.x) + abs(d.z) > 0.0) ? atan(d.x, -d.z) : 0.0;  // atan(0, 0) is undefined
    float el = asin(clamp(d.y, -1.0, 1.0));
    return vec2(phi / (2.0 * PI) + 0.5, 0.5 - el / PI);
}

// The environment seen through pixel centre ``frag`` (gl_FragCoord.xy: GL pixel, bottom-up):
// ray_from_pix = R^T K^-1 maps the OpenCV pixel (u, v, 1) to a world ray; env is the world-frame
// equirect (rotation baked in). Used by the background pass and, for frames drawn without it, by
// the tone-mapping pass.
vec3 env_background(sampler2D env, mat3 ray_from_pix, float height, vec2 frag) {
    vec3 d = ray_from_pix * vec3(frag.x, height - frag.y, 1.0);
    return textureLod(env, dir_to_equirect(d), 0.0).rgb;
}
