"""Calibrated confidence of the localiser: a box of confidence c is right (IoU >= 0.5 with the neck)
about a share c of the time, and a view with no femoral neck gets a low c.

The raw scores (osteo_model.roi_train.predict_scores) are the presence probability (the
presence head), the test-time agreement (the box follows known shifts and zooms) and the heat
map's peak mass. They are mapped to a confidence by a logistic (Platt) model over
[logit(presence), agreement, peak] with non-negative weights, so the confidence never falls when a
raw score rises. By default (``USE``) the agreement is left out: measured on the demo cohort's
held-out views (docs/design.md), it added 0.002 of AUROC to presence and peak at five times the
network's cost (and, as the only confidence, it gave 9.5 % of negatives 0.8 or more).

The mapping is fitted on held-out views under heavy perturbation (:func:`perturbed_set`: the
training randomisation, stronger) mixed with negatives: a hip view counts as right when its box
has IoU >= 0.5 with the truth, a negative (another film, a crop away from the neck, a mirrored hip,
noise, text) is wrong whatever box it gets. It lives in the model's ``calibration`` buffer
([fitted, bias, w_presence, w_agreement, w_peak]), so the checkpoint carries it as a plain tensor;
a zero agreement weight means no test-time copies are needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

FEATURES = ("presence", "agreement", "peak")
USE = (True, False, True)  # the features the mapping uses by default: presence and peak
IOU_RIGHT = 0.5
BINS = 10


def feature_matrix(scores: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 3]: logit(presence) (clipped to +-9), agreement, peak; a missing score is 0."""
    p = np.clip(np.asarray(scores["presence"], dtype=np.float64), 1e-4, 1 - 1e-4)
    n = len(p)
    cols = [np.log(p / (1 - p))]
    for name in FEATURES[1:]:
        v = scores.get(name)
        cols.append(np.zeros(n) if v is None else np.nan_to_num(np.asarray(v, dtype=np.float64)))
    return np.stack(cols, 1)


def fit_platt(features: np.ndarray, correct: np.ndarray, use: tuple[bool, ...] = (True, True, True),
              l2: float = 1e-3) -> list[float]:
    """Logistic fit of ``correct`` (0/1) on the chosen feature columns, weights >= 0 (softplus), a
    small ridge; deterministic (LBFGS on float64). Returns [1, bias, w_presence, w_agreement, w_peak]."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    y = torch.as_tensor(np.asarray(correct, dtype=np.float64))
    mask = torch.as_tensor(np.asarray(use, dtype=np.float64))
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    raw = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([bias, raw], lr=0.5, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        w = torch.nn.functional.softplus(raw) * mask
        loss = torch.nn.functional.binary_cross_entropy_with_logits(bias + x @ w, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = (torch.nn.functional.softplus(raw) * mask).detach().numpy()
    return [1.0, float(bias.detach()[0]), *(float(v) for v in w)]


def apply(calibration, scores: dict[str, np.ndarray]) -> np.ndarray:
    """Calibrated confidence [N] from the raw scores; uncalibrated (``calibration[0] == 0``):
    presence x agreement x peak, each factor 1 when missing."""
    cal = np.asarray(calibration, dtype=np.float64)
    if cal[0] < 0.5:
        out = np.ones(len(scores["presence"]))
        for name in FEATURES:
            if scores.get(name) is not None:
                out = out * np.nan_to_num(np.asarray(scores[name], dtype=np.float64), nan=1.0)
        return out
    z = cal[1] + feature_matrix(scores) @ cal[2:]
    return 1 / (1 + np.exp(-z))


def needs_agreement(calibration) -> bool:
    cal = np.asarray(calibration, dtype=np.float64)
    return bool(cal[0] < 0.5 or cal[3] > 0)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> tuple[float, list[dict]]:
    """Expected calibration error (equal-width bins, weighted by count) and the reliability table:
    per bin its range, count, mean confidence and share right."""
    c, y = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if len(c) == 0:
        return math.nan, []
    idx = np.minimum((c * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = idx == b
        if not sel.any():
            continue
        conf, acc = float(c[sel].mean()), float(y[sel].mean())
        ece += sel.sum() / len(c) * abs(acc - conf)
        table.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(sel.sum()), "confidence": conf, "right": acc})
    return float(ece), table


def perturbed_set(views: np.ndarray, boxes: np.ndarray, negatives: np.ndarray | None, *, seed: int,
                  draws: int = 3, strength: float = 1.5) -> dict[str, np.ndarray]:
    """Held-out views for calibration or its check: every hip view clean and ``draws`` times
    randomised at ``strength`` (some become crops away from the neck or mirrored: negatives), every
    given negative ``draws`` times randomised, and as many synthetic negatives (noise, text, ...)
    as hip views. Returns x [K, S, S], boxes [K, 4] (view pixels), target [K] (1 hip, 0 none, -1
    ambiguous) and kind [K] (hip, hip_cropped, hip_mirrored, negative, synthetic)."""
    from osteo_model.roi_augment import photometric, randomise, synthetic_negatives

    views = np.asarray(views, dtype=np.float32)
    size = views.shape[-1]
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    x = torch.as_tensor(views).reshape(-1, 1, size, size)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4) / size
    xs, bs, ts, kinds = [x], [b], [torch.ones(len(x))], ["hip"] * len(x)
    for _ in range(draws):
        rx, rb, rt = randomise(x, b, gen, strength)
        was = ["hip" if t == 1 else "hip_cropped" if t == 0 else "ambiguous" for t in rt.tolist()]
        xs, bs, ts, kinds = xs + [rx], bs + [rb], ts + [rt], kinds + was
    no_box = torch.zeros(1, 4)
    if negatives is not None and len(negatives):
        neg = torch.as_tensor(np.asarray(negatives, dtype=np.float32)).reshape(-1, 1, size, size)
        for _ in range(draws):
            rx, _, _ = randomise(neg, no_box.expand(len(neg), 4), gen, strength, crop_neg=0.0, mirror_neg=0.5)
            xs, bs, ts, kinds = xs + [rx], bs + [no_box.expand(len(neg), 4)], ts + [torch.zeros(len(neg))], \
                kinds + ["negative"] * len(neg)
    synth = photometric(synthetic_negatives(len(x), size, gen), None, gen, strength)
    xs, bs, ts, kinds = xs + [synth], bs + [no_box.expand(len(x), 4)], ts + [torch.zeros(len(x))], \
        kinds + ["synthetic"] * len(x)
    return {"x": torch.cat(xs)[:, 0].numpy(), "boxes": torch.cat(bs).numpy() * size,
            "target": torch.cat(ts).numpy(), "kind": np.asarray(kinds)}


def score_set(model, data: dict[str, np.ndarray], tta: bool = True) -> dict[str, np.ndarray]:
    """The raw scores of a :func:`perturbed_set` and whether each view's box is right (0/1; NaN for
    ambiguous views); ``tta=False``: no agreement (NaN)."""
    from osteo_model.roi_train import box_iou, predict_scores

    scores = predict_scores(model, data["x"], tta=tta)
    iou = box_iou(scores["boxes"], data["boxes"])
    right = np.where(data["target"] == 1, (iou >= IOU_RIGHT).astype(float), np.where(data["target"] == 0, 0.0, np.nan))
    return {**scores, "right": right, "iou": iou}


def calibrate_localiser(model, views: np.ndarray, boxes: np.ndarray, negatives: np.ndarray | None = None, *,
                        seed: int = 0, draws: int = 3, strength: float = 1.5,
                        use: tuple[bool, ...] = USE) -> dict:
    """Fit the model's calibration on held-out views (written to its ``calibration`` buffer) and
    return it with its in-sample ECE and size."""
    data = perturbed_set(views, boxes, negatives, seed=seed, draws=draws, strength=strength)
    scored = score_set(model, data, tta=use[1])
    keep = ~np.isnan(scored["right"])
    feats = feature_matrix({k: v[keep] for k, v in scored.items() if k in FEATURES})
    cal = fit_platt(feats, scored["right"][keep], use)
    model.calibration.copy_(torch.as_tensor(cal, dtype=model.calibration.dtype))
    right = scored["right"][keep]
    ece, _ = reliability(apply(cal, {k: v[keep] for k, v in scored.items() if k in FEATURES}), right)
    return {"calibration": cal, "fit_ece": ece, "fit_n": int(keep.sum()), "fit_right": float(right.mean())}
