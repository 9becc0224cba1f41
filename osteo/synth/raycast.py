"""Cone-beam line integrals through convex solids: the physics core of the simulator.

Every ray runs from the focal spot to one detector pixel. A solid is an ellipsoid or an elliptic
cylinder, optionally cut by half-spaces; a ray meets it in one interval [t0, t1] (mm along the
ray). A body (a bone, the soft-tissue outline, a gas pocket) is a union of solids less some holes,
and its path length per ray is computed exactly from the intervals: the union by a sweep over the
intervals sorted by entry, a convex hole by clipping every interval to it. A bone with a cortex is
two bodies: its outer surface and its marrow surface (the solids shrunk by the cortical thickness);
the cortex path is the difference, which is what makes a bone's edge bright where the beam runs
along its shell.

Coordinates are in mm in the patient frame: x towards the patient's left, y towards the feet, z
from anterior to posterior (the beam of an AP film runs along +z to the detector).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from osteo.synth.raykernel import body_paths, solid_windows

EMPTY_T0, EMPTY_T1 = np.float32(np.inf), np.float32(-np.inf)


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z (applied in that order)."""
    ax, ay, az = np.deg2rad([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def frame_from_axis(axis: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """A rotation whose third column is ``axis`` (unit), the first as close to ``up`` x axis as allowed."""
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    ref = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    if abs(float(ref @ z)) > 0.95:
        ref = np.array([1.0, 0.0, 0.0])
    x = np.cross(ref, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def ell(c, r, rot=None, planes=()) -> Solid:
    """Ellipsoid at centre c with semi-axes r (mm) in the frame ``rot``, cut by ``planes``."""
    return Solid("ellipsoid", tuple(float(v) for v in c), tuple(float(v) for v in r),  # type: ignore[arg-type]
                 np.eye(3) if rot is None else rot, (0.0, 0.0), tuple(planes))


def cyl(a, b, r0: float, r1: float, up=None, planes=()) -> Solid:
    """Elliptic cylinder from point a to point b, radii r0 (towards ``up`` x axis) and r1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ax = b - a
    half = float(np.linalg.norm(ax)) / 2
    return Solid("cylinder", tuple((a + b) / 2), (float(r0), float(r1), 1.0),  # type: ignore[arg-type]
                 frame_from_axis(ax, up), (-half, half), tuple(planes))


@dataclass(frozen=True)
class Solid:
    """An ellipsoid (``kind`` "ellipsoid": semi-axes ``radii``) or an elliptic cylinder ("cylinder":
    radii[0], radii[1] across, local z from ``span[0]`` to ``span[1]`` mm) centred at ``centre`` with
    its local axes the columns of ``rot``; ``planes`` keep the side n . p <= h."""

    kind: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))
    span: tuple[float, float] = (0.0, 0.0)
    planes: tuple[tuple[tuple[float, float, float], float], ...] = ()

    def shrunk(self, by: float, along: float | None = None) -> Solid:
        """The solid moved in by ``by`` mm across (and ``along`` mm at a cylinder's ends)."""
        r = tuple(max(0.3, v - by) for v in self.radii)
        a = by if along is None else along
        span = (self.span[0] + a, self.span[1] - a) if self.kind == "cylinder" else self.span
        return Solid(self.kind, self.centre, r, self.rot, span, self.planes)  # type: ignore[arg-type]

    def bound(self) -> float:
        """Radius of a sphere about ``centre`` that holds the solid."""
        if self.kind == "cylinder":
            return float(np.hypot(max(self.radii[:2]), max(abs(self.span[0]), abs(self.span[1]))))
        return float(max(self.radii))

    def interval(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry and exit (t0, t1) of rays o + t d (o: (3,), d: (3, n)); empty as (inf, -inf)."""
        ft = d.dtype  # float32 rays, or float64 for the reference the compiled kernel is checked against
        inv = (self.rot.T / np.asarray(self.radii, dtype=np.float64)[:, None]).astype(ft)
        oc = (inv @ (o - np.asarray(self.centre))).astype(ft)
        dl = inv @ d
        if self.kind == "cylinder":
            a = dl[0] * dl[0] + dl[1] * dl[1]
            b = 2 * (oc[0] * dl[0] + oc[1] * dl[1])
            c = oc[0] * oc[0] + oc[1] * oc[1] - 1
        else:
            a = (dl * dl).sum(0)
            b = 2 * (oc[:, None] * dl).sum(0)
            c = float(oc @ oc) - 1
        disc = b * b - 4 * a * c
        hit = disc > 0
        sq = np.sqrt(np.where(hit, disc, 0))
        a2 = np.where(a > 1e-12, 2 * a, 1)
        t0 = np.where(hit, (-b - sq) / a2, EMPTY_T0)
        t1 = np.where(hit, (-b + sq) / a2, EMPTY_T1)
        if self.kind == "cylinder":  # the ends: the local z (in mm) between span[0] and span[1]
            zr = self.rot[:, 2].astype(ft)
            t0, t1 = _clip_planes(t0, t1, o, d, ((tuple(zr), self.span[1] + float(zr @ self.centre)),
                                                 (tuple(-zr), -self.span[0] - float(zr @ self.centre))))
        if self.planes:
            t0, t1 = _clip_planes(t0, t1, o, d, self.planes)
        return t0, t1


def _interval_on(solid: Solid, o, d, idx, n: int) -> tuple[np.ndarray, np.ndarray]:
    if idx is None:
        return solid.interval(o, d)
    t0 = np.full(n, EMPTY_T0, dtype=d.dtype)
    t1 = np.full(n, EMPTY_T1, dtype=d.dtype)
    if idx.size:
        t0[idx], t1[idx] = solid.interval(o, d[:, idx])
    return t0, t1


def _clip_planes(t0, t1, o, d, planes):
    for n, h in planes:
        n = np.asarray(n, dtype=d.dtype)
        no = float(n @ o)
        nd = n @ d
        with np.errstate(divide="ignore", invalid="ignore"):
            tb = (h - no) / nd
        pos, neg = nd > 1e-9, nd < -1e-9
        t1 = np.where(pos, np.minimum(t1, tb), t1)
        t0 = np.where(neg, np.maximum(t0, tb), t0)
        if no > h:  # parallel rays outside the half-space see nothing
            par = ~(pos | neg)
            t0 = np.where(par, EMPTY_T0, t0)
    return t0, t1


def union_length(t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Length of the union of k intervals per ray: t0, t1 of shape (k, n). Rays inside at most one
    interval are summed; only the others are sorted and swept."""
    seg = np.maximum(t1 - t0, 0)
    if t0.shape[0] == 1:
        return seg[0]
    total = seg.sum(0)
    multi = np.flatnonzero((seg > 0).sum(0) > 1)
    if multi.size == 0:
        return total
    a, b = t0[:, multi].T, t1[:, multi].T  # (m, k): sorting along the contiguous axis
    order = np.argsort(a, axis=1)
    a = np.take_along_axis(a, order, 1)
    b = np.take_along_axis(b, order, 1)
    acc = np.zeros(multi.size, dtype=t0.dtype)
    end = np.full(multi.size, -np.inf, dtype=t0.dtype)
    for j in range(a.shape[1]):
        start = np.maximum(a[:, j], end)
        acc += np.maximum(b[:, j] - start, 0)
        end = np.maximum(end, b[:, j])
    total[multi] = acc
    return total


@dataclass(frozen=True)
class Body:
    """A union of solids less convex holes (holes must not overlap one another along a ray)."""

    parts: tuple[Solid, ...]
    holes: tuple[Solid, ...] = ()

    def length(self, o: np.ndarray, d: np.ndarray, subsets: list | None = None) -> np.ndarray:
        """Path length per ray; ``subsets`` (one per part, then one per hole): the indices of the rays
        that can meet that solid (None: all)."""
        n = d.shape[1]
        solids = self.parts + self.holes
        subsets = subsets or [None] * len(solids)
        iv = [_interval_on(p, o, d, idx, n) for p, idx in zip(solids, subsets, strict=True)]
        k = len(self.parts)
        t0 = np.stack([i[0] for i in iv[:k]])
        t1 = np.stack([i[1] for i in iv[:k]])
        total = union_length(t0, t1)
        for h0, h1 in iv[k:]:
            total -= union_length(np.maximum(t0, h0), np.minimum(t1, h1))
        return np.maximum(total, 0)

    def bound(self) -> tuple[np.ndarray, float]:
        """Centre and radius of a sphere that holds every part."""
        cs = np.array([p.centre for p in self.parts], dtype=np.float64)
        rs = np.array([p.bound() for p in self.parts])
        lo, hi = (cs - rs[:, None]).min(0), (cs + rs[:, None]).max(0)
        c = (lo + hi) / 2
        return c, float(np.linalg.norm(hi - lo) / 2)


@dataclass(frozen=True)
class Camera:
    """A cone-beam AP exposure: focal spot, detector plane z = ``z_det`` with its pixel grid (``x0``,
    ``y0``: centre of pixel (0, 0), ``spacing`` mm), and the patient's pose (``pose`` rotates the
    patient frame into the room about ``pivot``)."""

    source: tuple[float, float, float]
    z_det: float
    x0: float
    y0: float
    spacing: float
    rows: int
    cols: int
    pose: np.ndarray = field(default_factory=lambda: np.eye(3))
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def rays(self, r0: int, r1: int, c0: int, c1: int, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Origin (3,) and unit directions (3, n) of the pixels [r0:r1, c0:c1], in the patient frame."""
        ys = self.y0 + self.spacing * np.arange(r0, r1, dtype=np.float64)
        xs = self.x0 + self.spacing * np.arange(c0, c1, dtype=np.float64)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        s = np.asarray(self.source)
        d = np.stack([gx.ravel() - s[0], gy.ravel() - s[1], np.full(gx.size, self.z_det - s[2])])
        d /= np.linalg.norm(d, axis=0)
        rt = self.pose.T
        o = rt @ (s - np.asarray(self.pivot)) + np.asarray(self.pivot)
        return o.astype(dtype), (rt @ d).astype(dtype)

    def coarse(self, f: int) -> Camera:
        """The same exposure sampled every ``f`` pixels (pixel i of it is pixel f i + (f - 1) / 2 here)."""
        off = (f - 1) / 2 * self.spacing
        return Camera(self.source, self.z_det, self.x0 + off, self.y0 + off, self.spacing * f,
                      -(-self.rows // f), -(-self.cols // f), self.pose, self.pivot)

    def project(self, p: np.ndarray) -> np.ndarray:
        """Patient-frame points (n, 3) -> detector pixel coordinates (n, 2) as (col, row)."""
        p = np.atleast_2d(np.asarray(p, dtype=np.float64))
        piv = np.asarray(self.pivot)
        w = (self.pose @ (p - piv).T).T + piv
        s = np.asarray(self.source)
        k = (self.z_det - s[2]) / (w[:, 2] - s[2])
        x = s[0] + (w[:, 0] - s[0]) * k
        y = s[1] + (w[:, 1] - s[1]) * k
        return np.stack([(x - self.x0) / self.spacing, (y - self.y0) / self.spacing], axis=1)

    def magnification(self, z: float = 0.0) -> float:
        return float((self.z_det - self.source[2]) / (z - self.source[2]))

    def window(self, centre: np.ndarray, radius: float) -> tuple[int, int, int, int] | None:
        """The pixel rectangle (r0, r1, c0, c1) that can see a sphere, or None when off the detector."""
        uv = self.project(np.asarray(centre)[None])[0]
        piv = np.asarray(self.pivot)
        z_room = float((self.pose @ (np.asarray(centre) - piv))[2] + piv[2])
        if z_room - radius <= self.source[2] + 10:  # a sphere around the focal spot: every ray may meet it
            return (0, self.rows, 0, self.cols)
        rad = radius * self.magnification(z_room - radius) / self.spacing * 1.02 + 2  # the nearest point to the source
        c0, c1 = int(max(0, np.floor(uv[0] - rad))), int(min(self.cols, np.ceil(uv[0] + rad) + 1))
        r0, r1 = int(max(0, np.floor(uv[1] - rad))), int(min(self.rows, np.ceil(uv[1] + rad) + 1))
        return None if c0 >= c1 or r0 >= r1 else (r0, r1, c0, c1)


def path_image(camera: Camera, body: Body, win: tuple[int, int, int, int] | None = None
               ) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """The body's path length (mm) over the pixel rectangle that can see it (or ``win``), and that
    rectangle. Cast by the compiled kernel (osteo/synth/raykernel.py); :func:`reference_path_image`
    is the same in NumPy, the form the kernel is checked against."""
    if win is None:
        centre, radius = body.bound()
        win = camera.window(centre, radius)
    if win is None:
        return np.zeros((0, 0), dtype=np.float32), None
    return body_paths(camera, body, win), win


def reference_path_image(camera: Camera, body: Body, win: tuple[int, int, int, int], dtype: type = np.float64
                         ) -> np.ndarray:
    """:func:`path_image` in NumPy: every solid's interval on every ray that can see it, then the union
    and the holes (Body.length); in float64, as the kernel casts (float32 loses a tenth of a mm where a
    ray grazes a solid 1 m from the focal spot)."""
    r0, r1, c0, c1 = win
    o, d = camera.rays(r0, r1, c0, c1, dtype)
    subsets = []
    for a0, a1, b0, b1 in solid_windows(camera, body, win):
        if a0 >= a1 or b0 >= b1:
            subsets.append(np.zeros(0, dtype=np.int64))
        elif (a0, a1, b0, b1) == (0, r1 - r0, 0, c1 - c0):
            subsets.append(None)
        else:
            rr, cc = np.mgrid[a0:a1, b0:b1]
            subsets.append((rr * (c1 - c0) + cc).ravel())
    return body.length(o, d, subsets).reshape(r1 - r0, c1 - c0)


def accumulate(target: np.ndarray, camera: Camera, body: Body, weight: float | np.ndarray) -> None:
    """target += weight * path length of the body (weight: a scalar, or an array of target's shape)."""
    lp, win = path_image(camera, body)
    if win is None:
        return
    r0, r1, c0, c1 = win
    w = weight[r0:r1, c0:c1] if isinstance(weight, np.ndarray) else np.float32(weight)
    target[r0:r1, c0:c1] += lp * w


def smooth_path(camera: Camera, body: Body, f: int = 4) -> np.ndarray:
    """A smooth body's path length over the whole detector, cast on every f-th pixel and interpolated
    (soft tissue and gas: their paths change over centimetres, and casting them at full resolution is
    most of a film's cost)."""
    from scipy import ndimage

    small = np.zeros((-(-camera.rows // f), -(-camera.cols // f)), dtype=np.float32)
    accumulate(small, camera.coarse(f), body, 1.0)
    rr = (np.arange(camera.rows, dtype=np.float32) - (f - 1) / 2) / f
    cc = (np.arange(camera.cols, dtype=np.float32) - (f - 1) / 2) / f
    gy, gx = np.meshgrid(rr, cc, indexing="ij")
    return ndimage.map_coordinates(small, [gy, gx], order=1, mode="nearest").astype(np.float32)
