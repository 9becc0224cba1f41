import math

import numpy as np
import pytest
from model_toy import toy_image, write_png
from PIL import Image

from osteo_model.metrics import (
    classification_report_text,
    compute_metrics,
    mean_intensity_baseline,
    plot_confusion_matrix,
    plot_loss_curves,
    plot_pr,
    plot_reliability,
    plot_roc,
    reliability_table,
)
from osteo_model.stats import EpochRecord

Y = [0, 0, 1, 1, 1, 0]
P = [0.1, 0.6, 0.8, 0.4, 0.9, 0.2]


def test_hand_computed_example():
    m = compute_metrics(Y, P, threshold=0.5)
    # predictions 0 1 1 0 1 0 -> tn 2, fp 1, fn 1, tp 2
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    for k in ("sensitivity", "specificity", "ppv", "npv", "precision_1", "recall_0", "f1_1", "f1_0"):
        assert m[k] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)  # 8 of 9 positive/negative pairs ordered
    assert m["brier"] == pytest.approx(0.82 / 6)
    # average precision: ranks 0.9(+) 0.8(+) 0.6(-) 0.4(+) -> (1 + 1 + 3/4) / 3
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert m["n"] == 6 and m["n_pos"] == 3
    assert compute_metrics(Y, P, threshold=0.85)["tp"] == 1


def test_one_class_is_safe():
    m = compute_metrics([0, 0, 0], [0.2, 0.7, 0.1])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert math.isnan(m["sensitivity"]) and m["specificity"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[2, 1], [0, 0]]
    m1 = compute_metrics([1, 1], [0.9, 0.8])
    assert m1["sensitivity"] == 1.0 and math.isnan(m1["specificity"]) and math.isnan(m1["roc_auc"])
    empty = compute_metrics([], [])
    assert empty["n"] == 0 and math.isnan(empty["accuracy"])
    assert "osteoporosis" in classification_report_text([0, 0], [0.1, 0.2])


def test_plots_write_pngs(tmp_path):
    nan = math.nan
    hist = [EpochRecord(epoch=1, train_loss=0.7, train_accuracy=nan, val_loss=0.69, val_auc=nan, val_recall=nan,
                        val_accuracy=nan, lr=0.001, seconds=1.0),
            EpochRecord(epoch=2, train_loss=0.5, train_accuracy=nan, val_loss=0.6, val_auc=nan, val_recall=nan,
                        val_accuracy=nan, lr=0.001, seconds=1.0)]
    files = [
        plot_confusion_matrix(Y, P, tmp_path / "cm.png"),
        plot_roc(Y, P, tmp_path / "roc.png"),
        plot_pr(Y, P, tmp_path / "pr.png"),
        plot_loss_curves(hist, tmp_path / "loss.png"),
        plot_reliability(Y, P, tmp_path / "rel.png"),
        plot_roc([0, 0], [0.1, 0.2], tmp_path / "roc1.png"),
        plot_pr([0, 0], [0.1, 0.2], tmp_path / "pr1.png"),
    ]
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size[0] > 100
    rows = reliability_table(Y, P, n_bins=5)
    assert sum(r["count"] for r in rows) == 6
    assert "ROC AUC 0.889" in classification_report_text(Y, P)


def test_mean_intensity_baseline(tmp_path):
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(40):
        y = i % 2
        img = np.full((32, 32), 150 if y else 100, np.uint8) + rng.integers(0, 20, (32, 32)).astype(np.uint8)
        paths.append(str(write_png(tmp_path / f"e{i}.png", img)))
        labels.append(y)
    res = mean_intensity_baseline(paths[:20], labels[:20], paths[20:], labels[20:])
    assert res["auc"] == 1.0  # exposure alone gives it away here
    # on texture-only toys the exposure carries no label
    tpaths, tlabels = [], []
    for i in range(120):
        tpaths.append(str(write_png(tmp_path / f"t{i}.png", toy_image(i % 2, rng, 64))))
        tlabels.append(i % 2)
    res = mean_intensity_baseline(tpaths[:80], tlabels[:80], tpaths[80:], tlabels[80:])
    assert 0.2 < res["auc"] < 0.8
