"""The registered classifier's description: a short model card (Markdown, shown by MLflow's registry page)."""

from __future__ import annotations

import math
from typing import Any

from osteo.etl.synthetic import DEMO_NOTICE, MIXED, SYNTHETIC


def _f(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.3f}"


def model_card(*, arch: str, preset: str, folds: int, snapshot_digest: str, n_train: int, n_test: int,
               test_positives: int, test_year: Any, threshold: float, target_recall: float | None,
               at_threshold: dict[str, float], at_half: dict[str, float], trained_on: str, synthetic_images: int,
               n_images: int) -> str:
    """What the version is, how it did on the test year (at its operating threshold and at 0.5), and its limits;
    a version that learned from any synthetic image (`trained_on` synthetic or mixed) says so first, plainly."""
    def row(name: str, m: dict[str, float]) -> str:
        return (f"| {name} | {_f(m.get('roc_auc'))} | {_f(m.get('accuracy'))} | {_f(m.get('recall_1'))} | "
                f"{_f(m.get('specificity'))} | {_f(m.get('precision_1'))} |")

    aim = f"chosen on the folds' out-of-fold validation predictions for osteoporosis recall >= {target_recall:.2f}" \
        if target_recall else "the training configuration's"
    data = {SYNTHETIC: "the synthetic demo cohort (osteo synth): NOT real patients, for demonstration only",
            MIXED: f"hip radiographs of which {synthetic_images} of {n_images} are synthetic (osteo synth), the rest "
                   "the hospital's, paired with DEXA within the pairing window"}.get(
        trained_on, "the hospital's exported hip radiographs paired with DEXA within the pairing window")
    notice = [f"**{DEMO_NOTICE}** (trained on: {trained_on}; {synthetic_images} of {n_images} snapshot images "
              "are synthetic)", ""] if trained_on in (SYNTHETIC, MIXED) else []
    return "\n".join([
        *notice,
        f"**Osteoporosis screening classifier** ({arch}, preset {preset}, {folds}-fold cross-validation grouped by "
        "patient; the best fold).",
        "",
        f"- Snapshot: `{snapshot_digest}` ({n_train} train/validation images, {n_test} test images of {test_year}, "
        f"{test_positives} with osteoporosis)",
        f"- Operating threshold: **{threshold:.4f}**, {aim}",
        "",
        "| test year | ROC AUC | accuracy | osteoporosis recall | specificity | precision |",
        "|---|---|---|---|---|---|",
        row(f"at threshold {threshold:.3f}", at_threshold),
        row("at 0.5", at_half),
        "",
        "**Intended use**: a screening aid on adults' hip radiographs (a femoral-neck crop, or a whole hip/pelvis "
        "radiograph located by the registered localiser), to suggest a DEXA referral. It is not a diagnosis and "
        "cannot rule osteoporosis out.",
        "",
        f"**Limits**: trained on {data}; label = DEXA femoral-neck T-score <= -2.5; left femurs of the test year "
        "held out; images with metal implants or poor clarity excluded; not validated on other sites, scanners, "
        "children or other body parts.",
    ])
