"""The ray caster's inner loop, compiled (Numba): one pass per detector pixel over a body's solids.

:mod:`osteo.synth.raycast` states the geometry in NumPy (``Solid.interval``, ``union_length``,
``Body.length``) and stays the reference: the kernel here computes the same path lengths (tests
compare the two on random bodies and whole films). The NumPy form builds a (solids x rays) array
of entries and exits per body and sorts them; most of a film's time went there. Here each ray is
cast from its pixel, its intervals are kept in a small local array, sorted by insertion and swept,
in float64, so that a film costs a fraction of the NumPy form's time and memory.

A body is packed into flat arrays (:func:`pack`): per solid its kind, the inverse of its frame
scaled by its radii, its centre, its planes (a cylinder's two ends first, as ``Solid.interval``
clips them) and the pixel rectangle that can see it (rays outside it miss the solid, as the
NumPy form's ``subsets`` say).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:  # raycast imports this module to cast with it
    from osteo.synth.raycast import Body, Camera, Solid

ELLIPSOID, CYLINDER = 0, 1


def _planes_of(s: Solid) -> list[tuple[np.ndarray, float]]:
    out = []
    if s.kind == "cylinder":
        zr = s.rot[:, 2].astype(np.float64)
        zc = float(zr @ np.asarray(s.centre))
        out += [(zr, s.span[1] + zc), (-zr, -s.span[0] - zc)]
    out += [(np.asarray(n, dtype=np.float64), float(h)) for n, h in s.planes]
    return out


def pack(camera: Camera, body: Body, win: tuple[int, int, int, int]):
    """The body's solids as the kernel's arrays; the rectangles are relative to ``win``."""
    solids = body.parts + body.holes
    n = len(solids)
    kind = np.zeros(n, dtype=np.int64)
    inv = np.zeros((n, 3, 3), dtype=np.float64)
    centre = np.zeros((n, 3), dtype=np.float64)
    rect = np.array(solid_windows(camera, body, win), dtype=np.int64).reshape(n, 4)
    start = np.zeros(n + 1, dtype=np.int64)
    normals: list[np.ndarray] = []
    heights: list[float] = []
    for i, s in enumerate(solids):
        kind[i] = CYLINDER if s.kind == "cylinder" else ELLIPSOID
        inv[i] = s.rot.T / np.asarray(s.radii, dtype=np.float64)[:, None]
        centre[i] = s.centre
        for nv, h in _planes_of(s):
            normals.append(nv)
            heights.append(h)
        start[i + 1] = len(heights)
    pn = np.array(normals, dtype=np.float64).reshape(-1, 3)
    ph = np.array(heights, dtype=np.float64)
    return kind, inv, centre, rect, start, pn, ph


def solid_windows(camera: Camera, body: Body, win: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """Per solid (parts, then holes) the pixels of ``win`` that can see it, relative to ``win``, as (r0, r1,
    c0, c1); empty (a0 >= a1 or b0 >= b1) when it sees none of them."""
    r0, r1, c0, c1 = win
    out = []
    for solid in body.parts + body.holes:
        sw = camera.window(np.asarray(solid.centre), solid.bound())
        out.append((0, 0, 0, 0) if sw is None else
                   (max(sw[0], r0) - r0, min(sw[1], r1) - r0, max(sw[2], c0) - c0, min(sw[3], c1) - c0))
    return out


def _origin_and_frame(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(camera.source, dtype=np.float64)
    piv = np.asarray(camera.pivot, dtype=np.float64)
    rt = np.ascontiguousarray(camera.pose.T, dtype=np.float64)
    return rt @ (s - piv) + piv, rt, s


def body_paths(camera: Camera, body: Body, win: tuple[int, int, int, int]) -> np.ndarray:
    """The body's path length (mm, float32) on every pixel of ``win`` = (r0, r1, c0, c1)."""
    o, rt, s = _origin_and_frame(camera)
    kind, inv, centre, rect, start, pn, ph = pack(camera, body, win)
    r0, r1, c0, c1 = win
    out = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    _cast(out, o, rt, s, float(camera.z_det), float(camera.x0), float(camera.y0), float(camera.spacing), r0, c0,
          len(body.parts), kind, inv, centre, rect, start, pn, ph)
    return out


@njit(cache=True, fastmath=False)
def _interval(j, o, d, kind, inv, centre, start, pn, ph):  # pragma: no cover - compiled
    oc0 = o[0] - centre[j, 0]
    oc1 = o[1] - centre[j, 1]
    oc2 = o[2] - centre[j, 2]
    lo0 = inv[j, 0, 0] * oc0 + inv[j, 0, 1] * oc1 + inv[j, 0, 2] * oc2
    lo1 = inv[j, 1, 0] * oc0 + inv[j, 1, 1] * oc1 + inv[j, 1, 2] * oc2
    lo2 = inv[j, 2, 0] * oc0 + inv[j, 2, 1] * oc1 + inv[j, 2, 2] * oc2
    ld0 = inv[j, 0, 0] * d[0] + inv[j, 0, 1] * d[1] + inv[j, 0, 2] * d[2]
    ld1 = inv[j, 1, 0] * d[0] + inv[j, 1, 1] * d[1] + inv[j, 1, 2] * d[2]
    ld2 = inv[j, 2, 0] * d[0] + inv[j, 2, 1] * d[1] + inv[j, 2, 2] * d[2]
    if kind[j] == CYLINDER:
        a = ld0 * ld0 + ld1 * ld1
        b = 2.0 * (lo0 * ld0 + lo1 * ld1)
        c = lo0 * lo0 + lo1 * lo1 - 1.0
    else:
        a = ld0 * ld0 + ld1 * ld1 + ld2 * ld2
        b = 2.0 * (lo0 * ld0 + lo1 * ld1 + lo2 * ld2)
        c = lo0 * lo0 + lo1 * lo1 + lo2 * lo2 - 1.0
    disc = b * b - 4.0 * a * c
    if disc <= 0.0:
        return np.inf, -np.inf
    sq = np.sqrt(disc)
    a2 = 2.0 * a if a > 1e-12 else 1.0
    t0 = (-b - sq) / a2
    t1 = (-b + sq) / a2
    for p in range(start[j], start[j + 1]):
        no = pn[p, 0] * o[0] + pn[p, 1] * o[1] + pn[p, 2] * o[2]
        nd = pn[p, 0] * d[0] + pn[p, 1] * d[1] + pn[p, 2] * d[2]
        if nd > 1e-9:
            t1 = min(t1, (ph[p] - no) / nd)
        elif nd < -1e-9:
            t0 = max(t0, (ph[p] - no) / nd)
        elif no > ph[p]:  # parallel to the plane and outside it
            return np.inf, -np.inf
    return t0, t1


@njit(cache=True, fastmath=False)
def _union(a, b, m):  # pragma: no cover - compiled
    """Length of the union of the m intervals [a_i, b_i] (empty ones included), sorted here by entry."""
    for i in range(1, m):  # insertion sort: a ray meets a handful of solids
        x, y = a[i], b[i]
        k = i - 1
        while k >= 0 and a[k] > x:
            a[k + 1] = a[k]
            b[k + 1] = b[k]
            k -= 1
        a[k + 1] = x
        b[k + 1] = y
    acc = 0.0
    end = -np.inf
    for i in range(m):
        if b[i] <= a[i]:
            continue
        s = max(a[i], end)
        if b[i] > s:
            acc += b[i] - s
        end = max(end, b[i])
    return acc


@njit(cache=True, fastmath=False)
def _cast(out, o, rt, s, z_det, x0, y0, spacing, r0, c0, n_parts,
          kind, inv, centre, rect, start, pn, ph):  # pragma: no cover - compiled
    n = kind.shape[0]
    t0 = np.empty(n_parts)
    t1 = np.empty(n_parts)
    a = np.empty(n_parts)
    b = np.empty(n_parts)
    d = np.empty(3)
    gz = z_det - s[2]
    for r in range(out.shape[0]):
        gy = y0 + spacing * (r0 + r) - s[1]
        for c in range(out.shape[1]):
            gx = x0 + spacing * (c0 + c) - s[0]
            norm = np.sqrt(gx * gx + gy * gy + gz * gz)
            for i in range(3):
                d[i] = (rt[i, 0] * gx + rt[i, 1] * gy + rt[i, 2] * gz) / norm
            hits = 0
            for j in range(n_parts):
                if rect[j, 0] <= r < rect[j, 1] and rect[j, 2] <= c < rect[j, 3]:
                    t0[j], t1[j] = _interval(j, o, d, kind, inv, centre, start, pn, ph)
                else:
                    t0[j], t1[j] = np.inf, -np.inf
                if t1[j] > t0[j]:
                    hits += 1
            if hits == 0:
                continue
            for j in range(n_parts):
                a[j] = t0[j]
                b[j] = t1[j]
            total = _union(a, b, n_parts)
            for h in range(n_parts, n):
                if not (rect[h, 0] <= r < rect[h, 1] and rect[h, 2] <= c < rect[h, 3]):
                    continue
                h0, h1 = _interval(h, o, d, kind, inv, centre, start, pn, ph)
                if h1 <= h0:
                    continue
                for j in range(n_parts):
                    a[j] = max(t0[j], h0)
                    b[j] = min(t1[j], h1)
                total -= _union(a, b, n_parts)
            out[r, c] = max(total, 0.0)
