// Shared helpers, included by the compositor's shader loader (relit_hands.compositor.load_shader).
const float PI = 3.14159265358979323846;

// World direction -> equirect (u, v) per docs/conventions.md:
// d = (sin(phi) cos(el), sin(el), -cos(phi) cos(el)),  phi = 2 pi (u - 0.5),  el = pi (0.5 - v).
vec2 dir_to_equirect(vec3 d) {
    d = normalize(d);
    float phi = atan(d.x, -d.z);
    float el = asin(clamp(d.y, -1.0, 1.0));
    return vec2(phi / (2.0 * PI) + 0.5, 0.5 - el / PI);
}
