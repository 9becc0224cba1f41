"""A parametric 3D model of the pelvis, both proximal femora, the lower lumbar spine and the soft
tissue around them, built from convex solids (raycast.py) in the patient frame (mm; x towards the
patient's left, y towards the feet, z anterior to posterior; origin midway between the hip centres).

Each bone is two bodies, its outer surface and its marrow surface; the cortex is what lies between.
The femur: a spherical head (40-55 mm across) in the acetabulum, a neck of elliptic section at the
neck-shaft angle (120-140 deg) turned forward by the anteversion plus the leg's rotation (external
rotation foreshortens the neck on an AP film), the greater and lesser trochanters, the
intertrochanteric mass and a tubular shaft. The pelvis: the acetabulum (a socket with its sclerotic
roof and the teardrop of its medial wall), the iliac wings up to the crests, the pelvic brim, the
pubic rami and ischium around the obturator foramen, the symphysis, the sacrum with its foramina
and the sacroiliac joints, the coccyx; L3-L5 with pedicles and processes. The numbers are adult
norms (the issue's ranges); every one is drawn per patient.

Osteoporosis is put where DEXA measures it: the femoral neck's cortex thins and its trabecular
bone volume falls with the patient's BMD (bone_quality), nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from osteo.synth.raycast import Body, Solid, cyl, ell, frame_from_axis, rotation

BMD_LO, BMD_HI = 0.40, 0.90  # g/cm2 mapped to the bone quality q in [0, 1] (T -3.8 .. +0.3)


def bone_quality(bmd: float) -> float:
    return float(np.clip((bmd - BMD_LO) / (BMD_HI - BMD_LO), 0.0, 1.0))


@dataclass(frozen=True)
class Bone:
    name: str
    outer: Body
    inner: Body | None  # the marrow surface; None: solid cortical bone
    side: str = ""  # "L" | "R" for a paired bone


@dataclass(frozen=True)
class Femur:
    """What the rest of the simulator needs of one proximal femur (patient frame, mm)."""

    side: str
    head: np.ndarray  # head centre
    radius: float
    neck_dir: np.ndarray  # unit, from the neck base towards the head
    neck_len: float  # head centre to the shaft axis along the neck
    neck_radii: tuple[float, float]  # across the neck: in the plane of the femur, and front to back
    neck_frame: np.ndarray  # columns: across (in plane), across (front-back), along the neck
    shaft_dir: np.ndarray  # unit, down the shaft
    base: np.ndarray  # where the neck axis meets the shaft axis
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)

    def neck_region(self, n_along: int = 12, n_round: int = 24) -> np.ndarray:
        """Points on the surface of the femoral neck between the head-neck junction and the base of
        the neck (the region DEXA's neck box covers): the truth box is their projection."""
        t = np.linspace(0.85 * self.radius, self.neck_len - 0.45 * self.radius, n_along)
        a = np.linspace(0, 2 * np.pi, n_round, endpoint=False)
        tt, aa = np.meshgrid(t, a, indexing="ij")
        local = np.stack([self.neck_radii[0] * np.cos(aa), self.neck_radii[1] * np.sin(aa), -tt], -1).reshape(-1, 3)
        return self.head + local @ self.neck_frame.T


@dataclass(frozen=True)
class Anatomy:
    bones: tuple[Bone, ...]
    femora: dict[str, Femur]
    soft: Body  # skin outline
    muscle: Body  # inside the subcutaneous fat
    gas: tuple[Body, ...]
    params: dict[str, float]


def _shell(parts: list[Solid], by: list[float]) -> tuple[Body, Body]:
    return Body(tuple(parts)), Body(tuple(p.shrunk(t) for p, t in zip(parts, by, strict=True)))


def _femur(rng, side: str, head: np.ndarray, R: float, q: float, p: dict[str, float]) -> tuple[Bone, Femur]:
    s = 1.0 if side == "L" else -1.0  # lateral is +x for the left femur
    alpha = np.deg2rad(p["shaft_tilt"])  # the shaft runs down and towards the midline
    down = np.array([-s * np.sin(alpha), np.cos(alpha), 0.0])
    medial = np.array([-s * np.cos(alpha), -np.sin(alpha), 0.0])
    nsa = np.deg2rad(p[f"nsa_{side}"])
    neck = np.cos(nsa) * down + np.sin(nsa) * medial  # base -> head, in the coronal plane before turning
    # turn the femur about the shaft axis through the head: anteversion plus external leg rotation
    turn = p[f"anteversion_{side}"] + p[f"leg_rotation_{side}"]
    k = down
    th = np.deg2rad(turn) * s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * (kx @ kx)
    if (rot @ neck)[2] > 0:  # anteversion points the neck forward (towards -z)
        rot = rot.T
    neck = rot @ neck
    lat = rot @ (-medial)
    post = np.cross(neck, lat)
    post *= np.sign(post[2]) if post[2] != 0 else 1.0
    L = p[f"neck_len_{side}"]
    base = head - neck * L
    rn, rd = p["neck_r_si"], p["neck_r_ap"]
    # the neck's in-plane cross axis: orthogonal to the neck and to the front-back direction
    across = np.cross(post, neck)
    across /= np.linalg.norm(across)
    frame = np.stack([across, np.cross(neck, across), neck], axis=1)
    parts = [
        ell(head, (R, R, R)),
        Solid("cylinder", tuple(head - neck * (L * 0.5)), (rn, rd, 1.0), frame, (-L * 0.5, L * 0.5 - 0.3 * R)),
        # intertrochanteric mass and metaphysis: the neck flares into it
        Solid("ellipsoid", tuple(base + down * 16 + lat * 2), (rn * 1.2, 30.0, rd * 1.15),
              np.stack([lat, down, np.cross(lat, down)], axis=1)),
        ell(base + lat * 15 - down * 6 + post * 4, (12.0, 19.0, 14.0)),  # greater trochanter
        ell(base + down * 36 - lat * 15 + post * 9, (7.0, 11.0, 7.0)),  # lesser trochanter (posteromedial)
        cyl(base + down * 25, base + down * 420, 15.0, 14.0),  # shaft
    ]
    ct_neck = p["cortex_neck"]
    bone_outer, bone_inner = _shell(parts, [1.0, ct_neck, 1.6 + 0.8 * q, 1.0, 1.0, p["cortex_shaft"]])
    # the calcar: the inferomedial neck cortex is the thick one; the marrow cylinder sits high in the neck
    inner_neck = bone_inner.parts[1]
    shift = -across * (0.35 * ct_neck * (0.5 + q)) * (1 if across @ down > 0 else -1)
    inner_parts = list(bone_inner.parts)
    inner_parts[1] = Solid(inner_neck.kind, tuple(np.asarray(inner_neck.centre) + shift), inner_neck.radii,
                           inner_neck.rot, inner_neck.span)
    bone = Bone(f"femur_{side}", bone_outer, Body(tuple(inner_parts)), side)
    lm = {
        "head_top": head - down * R * 0.9 + lat * 0.2 * R,
        "head_bottom": head + down * R * 0.8,
        "calcar": base + down * 22 - lat * 10,
        "lateral": base + lat * 20 + down * 20,
        "ward": base + neck * 0.35 * L + down * 3,
        "troch": base + lat * 24 - down * 10,
    }
    return bone, Femur(side, head, R, neck, L, (rn, rd), frame, down, base, lm)


def _hemipelvis(side: str, head: np.ndarray, R: float, p: dict[str, float], si: tuple) -> list[Bone]:
    s = 1.0 if side == "L" else -1.0
    hx, hy, hz = head
    Rs = R + p["joint_space"]
    socket = ell(head, (Rs, Rs, Rs))
    si_n, si_h = si  # the ilium ends a few mm lateral of the sacrum's edge (the sacroiliac joint)
    wing_rot = rotation(ry=s * p["wing_angle"], rz=-s * 8)
    cw = p["crest_width"]
    wing = ell((s * (cw * 0.62), -65.0 - p["crest_height"] * 0.22, 18.0), (cw * 0.48, p["crest_height"] * 0.55, 5.5),
              wing_rot, [((0.0, 1.0, 0.0), -18.0), (si_n, si_h)])
    supra = ell((hx + s * 2, hy - R - 4, hz + 4), (34.0, 18.0, 26.0), rotation(rz=s * 15),
               [((0.0, 1.0, 0.0), hy - 0.3 * R)])
    body_il = cyl((hx + s * 2, hy - 30, hz + 8), (s * (cw * 0.45), -70.0, 22.0), 17.0, 9.0, planes=[(si_n, si_h)])
    parts = [wing, supra, body_il]
    outer, inner = _shell(parts, [1.3, 2.0, 2.0])
    ilium = Bone(f"ilium_{side}", Body(outer.parts, (socket,)), Body(inner.parts, (socket,)), side)
    # pubis and ischium around the obturator foramen
    pub_body = (s * 13.0, hy + 40, hz - 34)
    tub = (hx - s * 30, hy + 86, hz + 16)
    pparts = [
        cyl((hx - s * 16, hy + 8, hz - 14), (s * 15.0, hy + 22, hz - 32), 10.0, 7.5),  # superior pubic ramus
        ell(pub_body, (10.0, 22.0, 10.0), planes=[((-s, 0.0, 0.0), -p["symphysis"] / 2)]),
        cyl((s * 16.0, hy + 62, hz - 30), tub, 6.5, 6.0),  # inferior pubic and ischial rami
        cyl((hx - s * 12, hy + 16, hz + 12), tub, 14.0, 11.0),  # ischial body
        ell(tub, (13.0, 12.0, 12.0)),  # ischial tuberosity
    ]
    pouter, pinner = _shell(pparts, [1.5, 1.2, 1.3, 1.8, 1.5])
    pubis = Bone(f"pubis_{side}", Body(pouter.parts, (socket,)), Body(pinner.parts, (socket,)), side)
    # the acetabular roof (sourcil) and the pelvic brim: dense lines seen along the beam
    roof_cap = ell(head, (Rs + 3.2,) * 3, planes=[((0.0, 1.0, 0.0), hy - 0.25 * Rs),
                                                 ((-s, 0.0, 0.0), -(hx - s * 0.55 * Rs) * s)])
    roof = Bone(f"roof_{side}", Body((roof_cap,), (socket,)), None, side)
    brim = Bone(f"brim_{side}", Body((cyl((s * 44.0, -48.0, 34.0), (hx - s * 30, hy + 2, hz + 2), 4.0, 3.5),
                                      cyl((hx - s * 30, hy + 2, hz + 2), (s * 17.0, hy + 30, hz - 28), 3.5, 3.5))),
                None, side)
    teardrop = Bone(f"teardrop_{side}", Body((ell((hx - s * (Rs + 5.5), hy + 10, hz), (2.2, 13.0, 11.0)),)), None,
                    side)
    return [ilium, pubis, roof, brim, teardrop]


def _sacrum_and_spine(p: dict[str, float]) -> tuple[list[Bone], tuple]:
    top_w, top_y, bot_y = p["sacrum_width"], -98.0, -2.0
    # lateral edges of the sacrum: planes through (±top_w, top_y) and (±14, bot_y); the ilia stop 3 mm out
    def edge(s: float, gap: float):
        a, b = np.array([s * top_w, top_y]), np.array([s * 14.0, bot_y])
        t = b - a
        n = np.array([t[1], -t[0]]) * s
        n = n / np.linalg.norm(n)
        if n[0] * s < 0:
            n = -n
        return (float(n[0]), float(n[1]), 0.0), float(n @ a) + gap

    lat_planes = [edge(s, 0.0) for s in (1.0, -1.0)]
    sac = ell((0.0, -60.0, 52.0), (top_w + 4, 58.0, 26.0), rotation(rx=-p["sacral_tilt"]),
             [*lat_planes, ((0.0, -1.0, 0.0), -top_y + 4)])
    foramina = tuple(cyl((s * (20.0 - 2.2 * k), -82.0 + 19.0 * k, 15.0),
                          (s * (20.0 - 2.2 * k), -82.0 + 19.0 * k, 90.0), 5.2 - 0.6 * k, 4.6 - 0.5 * k)
                     for k in range(4) for s in (1.0, -1.0))
    sacrum = Bone("sacrum", Body((sac,), foramina), Body((sac.shrunk(1.6),), foramina))
    coccyx = Bone("coccyx", Body(tuple(ell((0.0, 6.0 + 11 * k, 62.0 - 5 * k), (9.0 - 2 * k, 5.5, 6.0))
                                       for k in range(3))), None)
    bones = [sacrum, coccyx]
    y = top_y - 6
    for name in ("L5", "L4", "L3"):
        h = p["vert_height"]
        yc = y - 7 - h / 2  # 7 mm: the disc above the last level's top plate
        zc = 38.0 + (-8.0 if name == "L5" else -14.0)
        vb = Solid("cylinder", (0.0, yc, zc), (p["vert_width"], 17.0, 1.0), frame_from_axis(np.array([0.0, 1.0, 0.0])),
                   (-h / 2, h / 2))
        ped = [cyl((s * 15.0, yc - h * 0.18, zc + 14), (s * 16.0, yc - h * 0.18, zc + 34), 4.2, 6.5,
                    up=np.array([0.0, 1.0, 0.0])) for s in (1.0, -1.0)]
        tp_len = 34.0 if name == "L5" else 30.0
        tps = [cyl((s * 14.0, yc - 2, zc + 30), (s * (14.0 + tp_len), yc - 4, zc + 32), 5.5, 4.5) for s in (1.0, -1.0)]
        lam = ell((0.0, yc + 2, zc + 40), (14.0, 13.0, 4.0))
        spinous = ell((0.0, yc + 8, zc + 55), (3.5, 12.0, 14.0))
        outer = Body((vb, *ped, *tps, lam, spinous))
        inner = Body((vb.shrunk(1.0, 1.0), *(q.shrunk(1.2) for q in ped), *(q.shrunk(1.0) for q in tps),
                      lam.shrunk(1.0), spinous.shrunk(1.0)))
        bones.append(Bone(name, outer, inner))
        y = yc - h / 2
    return bones, tuple(lat_planes)


def draw_params(rng: np.random.Generator, sex: str) -> dict[str, float]:
    f = sex != "M"
    p: dict[str, float] = {
        "head_r": rng.uniform(20.0, 24.5) if f else rng.uniform(22.5, 27.5),
        "hip_half": rng.uniform(82.0, 98.0) if f else rng.uniform(78.0, 94.0),
        "shaft_tilt": rng.uniform(5.0, 10.0),
        "joint_space": rng.uniform(2.0, 4.5),
        "crest_width": rng.uniform(115.0, 135.0) if f else rng.uniform(108.0, 128.0),
        "crest_height": rng.uniform(95.0, 120.0),
        "wing_angle": rng.uniform(30.0, 50.0),
        "symphysis": rng.uniform(3.5, 6.0),
        "sacrum_width": rng.uniform(48.0, 58.0),
        "sacral_tilt": rng.uniform(20.0, 40.0),
        "vert_height": rng.uniform(25.0, 30.0),
        "vert_width": rng.uniform(23.0, 28.0),
    }
    nsa = rng.uniform(120.0, 140.0)
    antev = rng.uniform(5.0, 25.0)
    for side in ("L", "R"):
        p[f"nsa_{side}"] = float(np.clip(nsa + rng.normal(0, 1.5), 120.0, 140.0))
        p[f"anteversion_{side}"] = float(np.clip(antev + rng.normal(0, 2.0), 3.0, 28.0))
        p[f"neck_len_{side}"] = p["head_r"] * rng.uniform(1.95, 2.25)
    p["neck_r_si"] = p["head_r"] * rng.uniform(0.62, 0.70)
    p["neck_r_ap"] = p["neck_r_si"] * rng.uniform(0.74, 0.86)
    return {k: float(v) for k, v in p.items()}


def build_anatomy(rng: np.random.Generator, *, sex: str, bmd: float, leg_rotation: tuple[float, float] | None = None,
                  habitus: float | None = None) -> Anatomy:
    """One patient's anatomy. ``leg_rotation`` (deg, external positive) per side (L, R); ``habitus`` in
    [0, 1] (thin to obese) sets the body outline and the fat."""
    p = draw_params(rng, sex)
    q = bone_quality(bmd)
    p["q"] = q
    lr = leg_rotation if leg_rotation is not None else tuple(rng.uniform(-12.0, 25.0, 2))
    p["leg_rotation_L"], p["leg_rotation_R"] = float(lr[0]), float(lr[1])
    # the femoral neck as DEXA sees it: thinner cortex, less trabecular bone at low BMD
    p["cortex_neck"] = float((0.9 + 2.1 * q) * rng.uniform(0.9, 1.1))
    p["cortex_shaft"] = float((4.0 + 3.0 * q) * rng.uniform(0.9, 1.1))
    p["bvtv"] = float(0.08 + 0.30 * q)
    p["bvtv_other"] = float(rng.uniform(0.20, 0.30))  # pelvis and spine: not where the label is measured
    hb = float(rng.uniform(0.0, 1.0) if habitus is None else habitus)
    p["habitus"] = hb
    R, hw = p["head_r"], p["hip_half"]
    bones: list[Bone] = []
    femora: dict[str, Femur] = {}
    spine, si_planes = _sacrum_and_spine(p)
    for side, s, si in (("L", 1.0, si_planes[0]), ("R", -1.0, si_planes[1])):
        head = np.array([s * hw, 0.0, 0.0])
        # the ilium keeps to the lateral side of the sacroiliac joint (a plane 3 mm out from the sacrum)
        n, h = si
        bone, femur = _femur(rng, side, head, R, q, p)
        bones.append(bone)
        femora[side] = femur
        bones.extend(_hemipelvis(side, head, R, p, ((-n[0], -n[1], -n[2]), -(h + 3.0))))
    bones.extend(spine)
    # soft tissue: the trunk down to the perineum and the two thighs, fat under the skin
    half_w = 150.0 + 75.0 * hb + rng.uniform(-10, 10)
    half_d = 105.0 + 60.0 * hb + rng.uniform(-8, 8)
    zc = 18.0
    thigh = 72.0 + 40.0 * hb
    trunk = cyl((0.0, -600.0, zc), (0.0, 10.0, zc), half_w, half_d, up=np.array([0.0, 0.0, 1.0]))
    thighs = [cyl((s * (hw + 18.0), -40.0, zc + 5), (s * (hw + 48.0), 700.0, zc + 5), thigh, thigh * 0.95,
                   up=np.array([0.0, 0.0, 1.0])) for s in (1.0, -1.0)]
    hips = ell((0.0, 10.0, zc), (half_w, 110.0, half_d))  # meets the trunk at its widest: no step
    fat = 8.0 + 35.0 * hb
    soft = Body((trunk, *thighs, hips))
    muscle = Body(tuple(s.shrunk(fat, 0.0) for s in soft.parts))
    p.update(half_w=half_w, half_d=half_d, z_body=zc, fat=fat)
    gas = tuple(_gas(rng, p) for _ in range(int(rng.integers(2, 9))))
    return Anatomy(tuple(bones), femora, soft, muscle, gas, p)


def _gas(rng: np.random.Generator, p: dict[str, float]) -> Body:
    """A pocket of bowel gas (or a loop of colon) in the lower abdomen and pelvis."""
    c = (rng.uniform(-130, 130), rng.uniform(-230, 10), rng.uniform(-70, 10))
    if rng.random() < 0.5:
        r = rng.uniform(6, 22, 3)
        return Body((ell(c, r, rotation(rz=rng.uniform(0, 180))),))
    a = np.asarray(c)
    b = a + np.array([rng.uniform(-90, 90), rng.uniform(-40, 40), rng.uniform(-10, 10)])
    rad = rng.uniform(8, 18)
    return Body((cyl(a, b, rad, rad * rng.uniform(0.7, 1.0)),))
