"""A contact sheet of synthetic films, to look at the simulator rather than read about it
(docs/synthetic.md):

    python -m osteo.synth.sheet docs/synthetic/contact-sheet.png [--seed 0] [--boxes]

Twelve films: AP pelvis portrait, landscape and square, AP hips of both sides, implants, a motion
blur, with their true neck boxes drawn when asked; four non-hip films in a last row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from osteo.synth.film import ANATOMY_HI, render_film
from osteo.synth.nonhip import KINDS, render_nonhip

TILE_H = 300
FILMS = (  # view, laterality, width mm, height mm, bmd, implant, blur
    ("pelvis", "B", 350, 430, 0.95, None, 0.0), ("pelvis", "B", 430, 350, 0.55, None, 0.0),
    ("pelvis", "B", 430, 430, 0.75, None, 0.0), ("pelvis", "B", 390, 390, 0.45, None, 0.0),
    ("hip", "L", 245, 305, 0.9, None, 0.0), ("hip", "R", 245, 305, 0.5, None, 0.0),
    ("pelvis", "B", 350, 430, 0.65, None, 0.0), ("hip", "L", 240, 300, 0.7, "stem", 0.0),
    ("hip", "R", 250, 310, 0.6, "screw", 0.0), ("hip", "L", 240, 300, 0.55, "screw", 0.0),
    ("pelvis", "B", 430, 350, 0.85, None, 0.0), ("hip", "R", 245, 305, 0.8, None, 5.0),
)


def _tile(frac: np.ndarray, boxes: dict | None) -> Image.Image:
    im = Image.fromarray((np.clip(frac / ANATOMY_HI, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    if boxes:
        d = ImageDraw.Draw(im)
        for b in boxes.values():
            d.rectangle(b, outline=(255, 60, 60), width=2)
    return im.resize((round(im.width * TILE_H / im.height), TILE_H), Image.Resampling.LANCZOS)


def make_sheet(out: Path, seed: int = 0, boxes: bool = False) -> Path:
    rows: list[list[Image.Image]] = [[], [], [], []]
    for k, (view, lat, w_mm, h_mm, bmd, implant, blur) in enumerate(FILMS):
        rng = np.random.default_rng([seed, k])
        spacing = max(w_mm, h_mm) / 640
        r = render_film(rng, view=view, laterality=lat, rows=round(h_mm / spacing), cols=round(w_mm / spacing),
                        spacing=spacing, bmd=bmd, sex="F" if k % 3 else "M", modality="DX" if k % 2 else "CR",
                        rotation_deg=float(rng.uniform(-8, 8)), implant=implant, blur_sigma=blur,
                        mirrored=False)
        rows[k // 4].append(_tile(r.frac, r.boxes if boxes else None))
    for j, kind in enumerate(KINDS):
        frac = render_nonhip(kind, np.random.default_rng([seed, 100 + j]), 560, 460)
        rows[3].append(_tile(frac * ANATOMY_HI, None))
    gap = 6
    width = max(sum(t.width for t in r) + gap * (len(r) - 1) for r in rows)
    sheet = Image.new("RGB", (width, TILE_H * len(rows) + gap * (len(rows) - 1)), (255, 255, 255))
    y = 0
    for r in rows:
        x = 0
        for t in r:
            sheet.paste(t, (x, y))
            x += t.width + gap
        y += TILE_H + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--boxes", action="store_true", help="draw the true femoral-neck boxes")
    a = p.parse_args(argv)
    print(make_sheet(a.out, a.seed, a.boxes))


if __name__ == "__main__":
    main()
