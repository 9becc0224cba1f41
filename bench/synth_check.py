"""Self-check of the synthetic cohort: contracts, exclusion measures, and the label signal.

    .venv/bin/python bench/synth_check.py --patients 250 --seed 0 [--out DIR] [--cnn]

Measures, on every hip and pelvis image of truth.csv (expected_scope in_scope), per box (a pelvis has two):
  * the stored-value contract (anatomy within 5%..80% of the stored range in display
    polarity, metal >= 97%);
  * metal_fraction and blur_score on the femoral-neck box (osteo.etl.imaging's definitions) per
    expected_exclusion class;
and, on paired images without exclusion (every crop oriented as a left hip, resized to 112 px):
  (a) ROC AUC of a logistic regression on the mean crop intensity (must be <= 0.65);
  (b) ROC AUC of gradient boosting on simple texture statistics, out-of-fold over
      patient-grouped folds (target >= 0.9); optionally (--cnn) a tiny CNN on a held-out
      patient split.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from scipy import ndimage

from osteo.synth import generate_cohort


def modality_display(ds) -> tuple[np.ndarray, np.ndarray]:
    """(display-polarity modality values, same scaled to [0,1] over the stored range)."""
    arr = ds.pixel_array.astype(np.float64)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    icpt = float(getattr(ds, "RescaleIntercept", 0) or 0)
    maxv = 2 ** int(ds.BitsStored) - 1
    mod = arr * slope + icpt
    lo, hi = icpt, maxv * slope + icpt
    if ds.PhotometricInterpretation == "MONOCHROME1":
        mod = lo + hi - mod
    return mod, (mod - lo) / (hi - lo)


def texture_features(x: np.ndarray) -> np.ndarray:
    """x: 112x112 float crop in 0..1."""
    f = []
    x = x - x.mean()
    for s in (1, 2, 4):
        sm = ndimage.gaussian_filter(x, s)
        lv = ndimage.uniform_filter((x - sm) ** 2, 9)
        f += [np.sqrt(lv.mean()), np.sqrt(lv).std()]
    lap = ndimage.laplace(x)
    f += [lap.std(), np.abs(lap).mean() / (x.std() + 1e-9)]
    F = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2
    yy, xx = np.mgrid[-56:56, -56:56]
    r = np.sqrt(xx**2 + yy**2)
    tot = F[(r > 2) & (r < 56)].sum() + 1e-9
    edges = [2, 5, 8, 11, 14, 18, 23, 30, 40, 56]
    bands = [F[(r >= a) & (r < b)].sum() / tot for a, b in zip(edges[:-1], edges[1:])]
    f += bands
    rr = r[(r > 2) & (r < 56)]
    f.append(float((F[(r > 2) & (r < 56)] * rr).sum() / tot))  # spectral centroid
    gy, gx = np.gradient(ndimage.gaussian_filter(x, 1))
    ang = np.arctan2(gy, gx)
    mag = np.hypot(gx, gy)
    f.append(float(np.abs((mag * np.exp(2j * ang)).sum()) / (mag.sum() + 1e-9)))  # anisotropy
    return np.array(f, dtype=np.float64)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="reuse/generate the cohort here")
    ap.add_argument("--no-generate", action="store_true")
    ap.add_argument("--cnn", action="store_true", help="also train a tiny CNN (needs torch)")
    args = ap.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="synth_check_"))
    report: dict = {"cohort": str(out)}
    if not args.no_generate:
        t0 = time.time()
        summary = generate_cohort(out, patients=args.patients, seed=args.seed)
        report["generate_s"] = round(time.time() - t0, 1)
        report["summary"] = summary

    from osteo.etl import imaging  # the export's own normalisation and measures


    truth = [r for r in csv.DictReader(open(out / "truth.csv", encoding="utf-8"))
             if r["expected_scope"] == "in_scope"]  # the hip radiographs (the rest are never exported)
    per_class: dict[str, dict[str, list[float]]] = {}
    contract_bad = []
    X_mean, X_tex, y, groups, crops = [], [], [], [], []
    for row in truth:
        ds = pydicom.dcmread(out / row["file"])
        _, frac = modality_display(ds)
        dm = imaging.prepare_display(ds)
        disp = dm.display() * 255.0
        cls = row["expected_exclusion"]
        anat = frac[frac < 0.9]
        if anat.min() < 0.05 - 1e-3 or anat.max() > 0.80 + 1e-3 or (cls == "metal") != bool((frac >= 0.97).any()):
            contract_bad.append(row["sop_instance_uid"])
        for side, (x0, y0, x1, y1) in json.loads(row["boxes"]).items():  # one box a side (a pelvis: two)
            sl = (slice(y0, y1), slice(x0, x1))  # max exclusive, as the export reads VOC boxes
            q = imaging.measure_quality(dm.unit(sl), dm.display(sl))
            mf, bs = q["metal_fraction"], q["blur_score"]
            d = per_class.setdefault(cls, {"metal_fraction": [], "blur_score": []})
            d["metal_fraction"].append(mf)
            d["blur_score"].append(bs)
            measured = "metal" if mf > 0.005 else ("blur" if bs < 6.0 else "none")
            if measured != cls:
                report.setdefault("exclusion_mismatches", []).append([row["sop_instance_uid"], side, cls, measured])
            if row["expected_pair"] == "1" and cls == "none":
                crop = disp[sl] / 255.0
                if (side == "R") != (row["orientation"] == "R\\F"):  # every crop as a left hip
                    crop = crop[:, ::-1]
                small = Image.fromarray((crop * 255).astype(np.uint8)).resize((112, 112), Image.Resampling.BILINEAR)
                im = np.asarray(small, dtype=np.float64) / 255.0
                X_mean.append([im.mean()])
                X_tex.append(texture_features(im))
                y.append(int(row["expected_label"]))
                groups.append(row["patient_id"])
                crops.append(im.astype(np.float32))

    report["contract_violations"] = len(contract_bad)
    report["exclusion_mismatch_count"] = len(report.get("exclusion_mismatches", []))
    report["measures"] = {
        cls: {k: {"min": round(min(v), 4), "max": round(max(v), 4), "n": len(v)} for k, v in d.items()}
        for cls, d in sorted(per_class.items())
    }

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    y_arr = np.array(y)
    g_arr = np.array(groups)
    Xm = np.array(X_mean)
    Xt = np.array(X_tex)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    report["n_learn"] = int(len(y_arr))
    report["positive_rate"] = round(float(y_arr.mean()), 3)
    p_mean = np.asarray(cross_val_predict(LogisticRegression(), Xm, y_arr, groups=g_arr, cv=cv,
                                          method="predict_proba"))[:, 1]
    lr_in = LogisticRegression().fit(Xm, y_arr).predict_proba(Xm)[:, 1]
    report["auc_mean_intensity_lr_oof"] = round(float(roc_auc_score(y_arr, p_mean)), 3)
    report["auc_mean_intensity_lr_insample"] = round(float(roc_auc_score(y_arr, lr_in)), 3)
    p_tex = np.asarray(cross_val_predict(HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05), Xt, y_arr,
                                         groups=g_arr, cv=cv, method="predict_proba"))[:, 1]
    report["auc_texture_gb_oof"] = round(float(roc_auc_score(y_arr, p_tex)), 3)

    if args.cnn:
        report["auc_cnn_heldout"] = tiny_cnn(np.stack(crops), y_arr, g_arr)

    print(json.dumps(report, indent=1))
    ok = (report["auc_mean_intensity_lr_oof"] <= 0.65 and report["auc_mean_intensity_lr_insample"] <= 0.65
          and report["auc_texture_gb_oof"] >= 0.9 and report["contract_violations"] == 0
          and not report.get("exclusion_mismatches"))
    return 0 if ok else 1


def tiny_cnn(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    import torch
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    torch.manual_seed(0)
    tr, te = next(GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=0).split(X, y, groups))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 1),
    ).to(dev)
    xt = torch.tensor(X[:, None]).to(dev)
    yt = torch.tensor(y, dtype=torch.float32).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    lossf = torch.nn.BCEWithLogitsLoss()
    tr_t = torch.tensor(tr)
    for _epoch in range(25):
        net.train()
        perm = tr_t[torch.randperm(len(tr_t))]
        for i in range(0, len(perm), 32):
            b = perm[i:i + 32].to(dev)
            xb = xt[b]
            if torch.rand(1).item() < 0.5:
                xb = torch.flip(xb, dims=[2])
            xb = xb * (0.8 + 0.4 * torch.rand(len(b), 1, 1, 1, device=dev))  # brightness jitter
            opt.zero_grad()
            loss = lossf(net(xb).squeeze(1), yt[b])
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        p = torch.sigmoid(net(xt[torch.tensor(te).to(dev)]).squeeze(1)).cpu().numpy()
    return round(float(roc_auc_score(y[te], p)), 3)


if __name__ == "__main__":
    raise SystemExit(main())
