"""The cohort plan's images: studies and films per patient, the edge case of patient 4, both lateralities in
every year, the AP pelvis views and each film's condition (metal, blur, rotation, annotation).

Each function draws from the plan's one generator; make_plan (plan.py) calls them in a fixed order, so a seed
fixes every draw.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from osteo.synth.records import YEAR_WEIGHTS, YEARS, Image, Patient, draw_day


def draw_studies(patients: list[Patient], rng: np.random.Generator) -> tuple[list[Image], dict[int, list[int]]]:
    """Each patient's studies (one film each, or the other hip in the same study) at least 60 days apart; the
    first five patients (the edge cases) have one film. Returns the images and study -> image idxs."""
    images: list[Image] = []
    studies: dict[int, list[int]] = {}
    n_study = 0
    for p in patients:
        k = 1 if p.idx < 5 else int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        dates: list[dt.date] = []
        j = 0
        while j < k:
            if dates and j < k and rng.random() < 0.4 and len(studies[n_study - 1]) == 1:
                # the other hip in the same study
                first = images[-1]
                images.append(Image(len(images), p.idx, first.study, first.date,
                                    "R" if first.laterality == "L" else "L", instance=2))
                studies[first.study].append(images[-1].idx)
                j += 1
                continue
            for _ in range(50):
                y = int(rng.choice(YEARS, p=YEAR_WEIGHTS))
                day = draw_day(rng, dt.date(y, 1, 1), dt.date(y, 12, 31))
                if all(abs((day - d0).days) >= 60 for d0 in dates):
                    break
            dates.append(day)
            lat = "L" if rng.random() < 0.5 else "R"
            images.append(Image(len(images), p.idx, n_study, day, lat))
            studies[n_study] = [images[-1].idx]
            n_study += 1
            j += 1
    return images, studies


def move_patient_4_film(images: list[Image]) -> None:
    """Edge case: patient 4's X-ray lies 30 days from patient 3's X-ray (patient 4 gets a DEXA exam on patient
    3's X-ray day, which must not pair with patient 3's image)."""
    d3 = next(im.date for im in images if im.patient == 3)
    im4 = next(im for im in images if im.patient == 4)
    im4.date = d3 + dt.timedelta(days=30) if d3 <= dt.date(2022, 11, 30) else d3 - dt.timedelta(days=30)


def balance_lateralities(images: list[Image], studies: dict[int, list[int]]) -> None:
    """Both lateralities in every year (flip a single-image study where one is missing)."""
    for y in YEARS:
        for lat in ("L", "R"):
            in_year = [im for im in images if im.date.year == y]
            if not any(im.laterality == lat for im in in_year):
                singles = [im for im in in_year if len(studies[im.study]) == 1 and im.patient >= 5]
                if not singles:
                    singles = [im for im in in_year if len(studies[im.study]) == 1]
                if singles:
                    singles[0].laterality = lat


def choose_pelvis_views(images: list[Image], studies: dict[int, list[int]], rng: np.random.Generator) -> None:
    """AP pelvis views (~15%): single-image studies, never patients 0..4, and never the last hip view of a
    laterality in a year."""
    n_pelvis = int(round(0.15 * len(images)))
    for i in rng.permutation(len(images)):
        im = images[int(i)]
        if n_pelvis == 0:
            break
        if im.patient < 5 or len(studies[im.study]) != 1:
            continue
        if not any(o is not im and o.view == "hip" and o.laterality == im.laterality and o.date.year == im.date.year
                   for o in images):
            continue
        im.view, im.laterality, im.mirrored = "pelvis", "B", bool(rng.random() < 0.25)
        n_pelvis -= 1


def draw_conditions(images: list[Image], rng: np.random.Generator) -> None:
    """Metal, blur and bad rotation (disjoint; hip views only), every other film's rotation, the films without
    annotation (two of them with a malformed XML) and those written without the .dcm suffix."""
    n = len(images)
    hips = [im.idx for im in images if im.view == "hip"]
    order = [hips[int(i)] for i in rng.permutation(len(hips))]
    n_metal = max(1, int(round(0.05 * n)))
    n_blur = max(1, int(round(0.05 * n)))
    n_rot = max(1, int(round(0.02 * n)))
    for i in order[:n_metal]:
        images[i].exclusion = "metal"
        images[i].implant = "screw" if rng.random() < 0.5 else "stem"
    for i in order[n_metal:n_metal + n_blur]:
        images[i].exclusion = "blur"
    for i in order[n_metal + n_blur:n_metal + n_blur + n_rot]:
        images[i].rotation = float(rng.uniform(20, 35) * (1 if rng.random() < 0.5 else -1))
    for im in images:
        if abs(im.rotation) < 1e-9:
            im.rotation = float(rng.uniform(-15, 15))
    n_unann = max(3, int(round(0.10 * n)))
    for i in rng.permutation(n)[:n_unann]:
        images[i].annotated = False
    unann = [im for im in images if not im.annotated]
    for im in unann[:2]:
        im.malformed_xml = True
    for i in rng.permutation(n)[: max(1, int(round(0.03 * n)))]:
        images[i].no_extension = True
