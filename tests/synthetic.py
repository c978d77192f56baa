"""Synthetic meshes for the tests (kept out of the run-time package ``relit_hands``)."""
import numpy as np


def synthetic_uv_sphere(n_lat: int = 24, n_lon: int = 42, radius: float = 0.05,
                        two_charts: bool = True, margin: float = 0.03):
    """A watertight lat-long sphere with a *separate* UV topology, in the asset's layout
    (for the tests): returns ``vertices [V,3] float32, faces [F,3] int32 (CCW =
    outward), uvs [T,2] float32, uv_faces [F,3] int32``. With ``two_charts`` the northern
    hemisphere maps to u in [margin, 0.5 - margin] and the southern one to
    [0.5 + margin, 1 - margin] (a real seam at the equator plus the longitude seam), v in
    [margin, 1 - margin]. n_lat=24, n_lon=42 gives 968 vertices, 1932 triangles."""
    assert n_lat >= 2 and n_lon >= 3
    # positions: north pole, rings 1..n_lat-1, south pole
    th = np.pi * np.arange(1, n_lat) / n_lat
    ph = 2 * np.pi * np.arange(n_lon) / n_lon
    ring = np.stack([np.sin(th)[:, None] * np.cos(ph)[None], np.cos(th)[:, None] *
                     np.ones_like(ph)[None], -np.sin(th)[:, None] * np.sin(ph)[None]], -1)
    verts = np.concatenate([[[0, 1, 0]], ring.reshape(-1, 3), [[0, -1, 0]]]) * radius

    def pid(i, j):  # i in 0..n_lat (latitude index), j in 0..n_lon
        if i == 0:
            return 0
        if i == n_lat:
            return 1 + (n_lat - 1) * n_lon
        return 1 + (i - 1) * n_lon + (j % n_lon)

    # UV grid (n_lat+1) x (n_lon+1) with duplicated seam/pole vertices, per chart
    half = n_lat // 2 if two_charts else n_lat
    uvs = []
    uv_index = {}

    def uid(i, j, chart):
        k = (i, j, chart)
        if k not in uv_index:
            if two_charts:
                lo_u = margin if chart == 0 else 0.5 + margin
                span_u = 0.5 - 2 * margin
                i0, i1 = (0, half) if chart == 0 else (half, n_lat)
            else:
                lo_u, span_u, i0, i1 = margin, 1 - 2 * margin, 0, n_lat
            u = lo_u + span_u * j / n_lon
            v = margin + (1 - 2 * margin) * (i - i0) / (i1 - i0)
            uv_index[k] = len(uvs)
            uvs.append((u, v))
        return uv_index[k]

    faces, uv_faces = [], []
    for i in range(n_lat):
        chart = 0 if (not two_charts or i < half) else 1
        for j in range(n_lon):
            a, b = (i, j), (i, j + 1)
            c, d = (i + 1, j), (i + 1, j + 1)
            quads = []
            if i > 0:
                quads.append((a, c, b))
            if i < n_lat - 1:
                quads.append((b, c, d))
            for t in quads:
                faces.append([pid(*p) for p in t])
                uv_faces.append([uid(p[0], p[1], chart) for p in t])
    verts = verts.astype(np.float32)
    faces = np.asarray(faces, np.int32)
    # orient CCW = outward
    tri = verts[faces]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if (nrm * tri.mean(1)).sum() < 0:
        faces = faces[:, ::-1].copy()
        uv_faces_arr = np.asarray(uv_faces, np.int32)[:, ::-1].copy()
    else:
        uv_faces_arr = np.asarray(uv_faces, np.int32)
    return verts, faces, np.asarray(uvs, np.float32), uv_faces_arr
