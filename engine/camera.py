"""Pinhole camera in the OpenCV convention, and its exact OpenGL equivalent.

Convention (binding, see docs/conventions.md):

* ``x_cam = R @ x_world + t``; camera axes: x right, y down, z forward.
* ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` maps camera coordinates to *continuous pixel
  coordinates* ``(u, v) = (K x_cam)[:2] / z``.
* Pixel convention: the pixel in image row ``r`` / column ``c`` (row 0 = top of the image)
  covers ``[c, c+1) x [r, r+1)``; its **centre is at (c + 0.5, r + 0.5)**.  So a centred
  principal point is ``(cx, cy) = (W/2, H/2)``.  This is exactly OpenGL's window-coordinate
  convention (pixel centres at +0.5) with the y axis flipped: ``y_gl = H - v``.  Images
  read back from OpenGL are flipped vertically once (row 0 = top) by the compositor.

OpenGL matrices (column vectors, right-handed eye space looking down -z, y up):

* view ``V = diag(1, -1, -1, 1) @ [R | t]`` (eye = OpenCV camera frame with y and z negated);
* projection built from K *exactly* (focal lengths, skew and principal point), so a point
  projected with :meth:`Camera.project` lands at the same pixel position as the rasterised
  vertex: with eye coordinates ``(xe, ye, ze)`` (``ze = -z``)::

      x_clip = 2 fx/W xe - 2 s/W ye + (1 - 2 cx/W) ze
      y_clip =               2 fy/H ye + (2 cy/H - 1) ze
      z_clip = -(f + n)/(f - n) ze - 2 f n/(f - n)
      w_clip = -ze
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["Camera"]


DEFAULT_IPD_M = 0.064  # interpupillary distance of an average adult (metres)


def _as_array(name: str, value, shape: tuple) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Camera.{name} must be numeric with shape {shape}: {exc}") from None
    if arr.shape != shape:
        raise ValueError(f"Camera.{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Camera.{name} contains non-finite values")
    return arr


def _field(obj, name: str):
    """``obj.name`` or ``obj[name]`` (pyopenxr structs / plain objects / dicts)."""
    if isinstance(obj, dict):
        if name not in obj:
            raise ValueError(f"from_openxr: missing key {name!r} in {sorted(obj)}")
        return obj[name]
    if not hasattr(obj, name):
        raise ValueError(f"from_openxr: {type(obj).__name__} has no field {name!r}")
    return getattr(obj, name)


def _xr_vector(value, names: str, what: str) -> np.ndarray:
    """A sequence of len(names) numbers, or an object / dict with those fields -> float64 array."""
    if isinstance(value, dict) or not isinstance(value, (list, tuple, np.ndarray)):
        value = [_field(value, n) for n in names]
    return _as_array(f"from_openxr {what}", value, (len(names),))


def _xr_pose(pose) -> tuple:
    """``XrPosef`` (object / dict with orientation, position; or a (orientation, position) pair) ->
    (unit quaternion [4] x, y, z, w, position [3])."""
    if isinstance(pose, (list, tuple)) and len(pose) == 2:
        orientation, position = pose
    else:
        orientation, position = _field(pose, "orientation"), _field(pose, "position")
    q = _xr_vector(orientation, "xyzw", "pose orientation")
    n = np.linalg.norm(q)
    if n < 1e-6:
        raise ValueError("from_openxr: pose orientation is a zero quaternion")
    return q / n, _xr_vector(position, "xyz", "pose position")


def _xr_fov(fov) -> np.ndarray:
    """``XrFovf`` (object / dict with angleLeft, angleRight, angleUp, angleDown -- or pyopenxr's
    angle_left ... angle_down -- or a 4-tuple) -> [4] radians."""
    if isinstance(fov, dict) or not isinstance(fov, (list, tuple, np.ndarray)):
        has = (lambda n: n in fov) if isinstance(fov, dict) else (lambda n: hasattr(fov, n))
        names = ("angleLeft", "angleRight", "angleUp", "angleDown")
        if not has("angleLeft"):
            names = ("angle_left", "angle_right", "angle_up", "angle_down")
        fov = [_field(fov, n) for n in names]
    a = _as_array("from_openxr fov", fov, (4,))
    if np.any(np.abs(a) >= math.pi / 2):
        raise ValueError(f"from_openxr: fov angles must lie in (-pi/2, pi/2), got {a.tolist()}")
    return a


@dataclass
class Camera:
    """OpenCV pinhole camera: intrinsics ``K``, world-to-camera rotation ``R`` and translation ``t``."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        self.K = _as_array("K", self.K, (3, 3))
        self.R = _as_array("R", self.R, (3, 3))
        self.t = _as_array("t", self.t, (3,))
        try:
            w, h = int(self.width), int(self.height)
        except (TypeError, ValueError):
            raise ValueError(f"Camera width/height must be integers, got {self.width!r}, {self.height!r}") from None
        if w != self.width or h != self.height or w <= 0 or h <= 0:
            raise ValueError(f"Camera width/height must be positive integers, got {self.width!r}, {self.height!r}")
        self.width, self.height = w, h
        K = self.K
        if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or K[1, 0] != 0.0:
            raise ValueError(f"Camera.K must be upper triangular with last row [0, 0, 1], got\n{K}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"Camera.K focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        err = np.abs(self.R @ self.R.T - np.eye(3)).max()
        if err > 1e-4:
            raise ValueError(f"Camera.R must be orthonormal (max |R R^T - I| = {err:.3g})")
        if np.linalg.det(self.R) < 0:
            raise ValueError("Camera.R must be a proper rotation (det = +1), got a reflection")

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> np.ndarray:
        """Square-pixel K with vertical field of view ``fov_y_deg`` and a centred principal point."""
        if not 0.0 < float(fov_y_deg) < 180.0:
            raise ValueError(f"fov_y_deg must be in (0, 180), got {fov_y_deg}")
        f = 0.5 * height / math.tan(math.radians(fov_y_deg) * 0.5)
        return np.array([[f, 0.0, width * 0.5], [0.0, f, height * 0.5], [0.0, 0.0, 1.0]])

    @classmethod
    def from_fov(cls, fov_y_deg: float = 45.0, width: int = 640, height: int = 480,
                 R=None, t=None) -> "Camera":
        """Camera with square pixels, a centred principal point and pose ``(R, t)`` (default identity)."""
        K = cls.intrinsics_from_fov(fov_y_deg, width, height)
        R = np.eye(3) if R is None else R
        t = np.zeros(3) if t is None else t
        return cls(K=K, R=R, t=t, width=width, height=height)

    @classmethod
    def look_at(cls, eye, target, up=(0.0, 1.0, 0.0), fov_y_deg: float = 45.0,
                width: int = 640, height: int = 480) -> "Camera":
        """Camera at ``eye`` looking at ``target``; ``up`` (world) appears up in the image."""
        eye = _as_array("look_at eye", eye, (3,))
        target = _as_array("look_at target", target, (3,))
        up = _as_array("look_at up", up, (3,))
        z = target - eye
        nz = np.linalg.norm(z)
        if nz < 1e-12:
            raise ValueError("look_at: eye and target coincide")
        z /= nz
        x = np.cross(z, up)  # camera x (right) = forward x up
        nx = np.linalg.norm(x)
        if nx < 1e-9 * max(np.linalg.norm(up), 1e-30):
            raise ValueError("look_at: viewing direction is parallel to the up vector")
        x /= nx
        y = np.cross(z, x)  # camera y points down in the image
        R = np.stack([x, y, z])
        t = -R @ eye
        return cls.from_fov(fov_y_deg, width, height, R=R, t=t)

    @classmethod
    def from_openxr(cls, pose, fov, width: int, height: int, near: float = 0.05, far: float = 100.0) -> "Camera":
        """Camera of one OpenXR view (``XrView``): ``pose`` an ``XrPosef`` (view -> reference space:
        orientation quaternion x, y, z, w and position, metres), ``fov`` an ``XrFovf`` (angleLeft,
        angleRight, angleUp, angleDown, radians; left / down usually negative), ``width`` x ``height``
        the swapchain image size.

        The OpenXR view looks down -Z with +Y up and +X right (the reference space is right-handed, +Y
        up, like our world: no change of axes).  So ``R = diag(1, -1, -1) R_pose^T`` and ``t = -R p``,
        and the asymmetric frustum gives an off-centre principal point::

            fx = W / (tan R - tan L)   cx = -fx tan L
            fy = H / (tan U - tan D)   cy =  fy tan U

        With this K, :meth:`gl_projection_matrix` ``(near, far)`` equals OpenXR's
        ``XrMatrix4x4f_CreateProjectionFov(GRAPHICS_OPENGL, fov, near, far)`` (xr_linear.h) and
        :meth:`gl_view_matrix` the inverse of the pose.  ``near`` / ``far`` are not stored by the
        camera (pass them to :meth:`gl_projection_matrix`); they are checked here.  ``pose`` / ``fov``
        may be pyopenxr structs or any object with those attributes, dicts with the same keys, or
        tuples ``((x, y, z, w), (px, py, pz))`` / ``(left, right, up, down)``.
        """
        q, p = _xr_pose(pose)
        left, right, up, down = _xr_fov(fov)
        if not (0.0 < near < far):
            raise ValueError(f"from_openxr: need 0 < near < far, got near={near}, far={far}")
        tl, tr, tu, td = (math.tan(a) for a in (left, right, up, down))
        if not (tr > tl and tu > td):
            raise ValueError(f"from_openxr: empty field of view (angleLeft={left}, angleRight={right}, "
                             f"angleUp={up}, angleDown={down}); need right > left and up > down, within (-pi/2, pi/2)")
        fx, fy = width / (tr - tl), height / (tu - td)
        K = np.array([[fx, 0.0, -fx * tl], [0.0, fy, fy * tu], [0.0, 0.0, 1.0]])
        R = np.diag([1.0, -1.0, -1.0]) @ Rotation.from_quat(np.asarray(q, np.float64)).as_matrix().T
        return cls(K=K, R=R, t=-R @ p, width=width, height=height)

    # ------------------------------------------------------------------ properties
    def stereo_pair(self, ipd: float = DEFAULT_IPD_M) -> list:
        """[left, right] eye cameras: this camera moved by -/+ ``ipd`` / 2 (metres) along its own
        x axis (the first row of R), same intrinsics and orientation (parallel eyes)."""
        if not (np.isfinite(ipd) and 0.0 <= ipd <= 1.0):
            raise ValueError(f"ipd must be a distance in metres within 0..1, got {ipd!r}")
        return [Camera(self.K, self.R, -self.R @ (self.center + s * ipd * self.R[0]), self.width, self.height)
                for s in (-0.5, 0.5)]

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, ``-R^T t``."""
        return -self.R.T @ self.t

    @property
    def forward(self) -> np.ndarray:
        """Viewing direction (camera +z) in world coordinates."""
        return self.R[2].copy()

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def world_to_camera(self, points_world) -> np.ndarray:
        p = np.asarray(points_world, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise ValueError(f"points must have shape [..., 3], got {p.shape}")
        return p @ self.R.T + self.t

    # ------------------------------------------------------------------ projection
    def project(self, points_world, return_depth: bool = False):
        """Continuous pixel coordinates ``[..., 2]`` (u right, v down; pixel centres at +0.5).

        With ``return_depth`` also returns the camera-space depth ``z`` ``[...]``.  Points
        behind the camera (z <= 0) give non-finite or mirrored coordinates; check the depth.
        """
        pc = self.world_to_camera(points_world)
        z = pc[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uvw = pc @ self.K.T
            pix = uvw[..., :2] / z[..., None]
        return (pix, z) if return_depth else pix

    def pixel_rays(self) -> np.ndarray:
        """Unit world-space ray directions through every pixel centre, ``[H, W, 3]`` float32."""
        u = np.arange(self.width, dtype=np.float64) + 0.5
        v = np.arange(self.height, dtype=np.float64) + 0.5
        uu, vv = np.meshgrid(u, v)
        pix = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
        d_cam = pix @ np.linalg.inv(self.K).T
        d_world = d_cam @ self.R  # R^T d  (row vectors)
        d_world /= np.linalg.norm(d_world, axis=-1, keepdims=True)
        return d_world.astype(np.float32)

    # ------------------------------------------------------------------ OpenGL
    def gl_view_matrix(self) -> np.ndarray:
        """4x4 OpenGL view matrix (world -> GL eye space), float64, for column vectors."""
        M = np.eye(4)
        M[:3, :3] = self.R
        M[:3, 3] = self.t
        return np.diag([1.0, -1.0, -1.0, 1.0]) @ M

    def gl_projection_matrix(self, near: float = 0.01, far: float = 100.0) -> np.ndarray:
        """4x4 OpenGL projection matrix derived exactly from K (see module docstring)."""
        if not (0.0 < near < far):
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
        W, H = float(self.width), float(self.height)
        fx, s, cx = self.K[0]
        fy, cy = self.K[1, 1], self.K[1, 2]
        P = np.zeros((4, 4))
        P[0, 0] = 2.0 * fx / W
        P[0, 1] = -2.0 * s / W
        P[0, 2] = 1.0 - 2.0 * cx / W
        P[1, 1] = 2.0 * fy / H
        P[1, 2] = 2.0 * cy / H - 1.0
        P[2, 2] = -(far + near) / (far - near)
        P[2, 3] = -2.0 * far * near / (far - near)
        P[3, 2] = -1.0
        return P

    def gl_view_projection(self, near: float = 0.01, far: float = 100.0) -> np.ndarray:
        return self.gl_projection_matrix(near, far) @ self.gl_view_matrix()
