"""A training that cannot finish is refused before any fold trains; the operating point for a target recall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from osteo.errors import UserError
from osteo.training.folds import check_training_inputs, choose_threshold, operating_point
from osteo.training.results import FoldResult
from osteo_model.config import get_preset


def _exports(patients_per_class: int = 4, test_labels=(0, 1), test_year: int = 2022) -> pd.DataFrame:
    rows = []
    for label in (0, 1):
        for i in range(patients_per_class):
            rows.append({"patient_key": f"train-{label}-{i}", "laterality": "L", "study_year": 2020, "label": label})
            rows.append({"patient_key": f"train-{label}-{i}", "laterality": "R", "study_year": 2020, "label": label})
    for i, label in enumerate(test_labels):
        rows.append({"patient_key": f"test-{i}", "laterality": "L", "study_year": test_year, "label": label})
    return pd.DataFrame(rows)


def _config(**kw):
    return get_preset("demo", folds=3, **kw)


def test_a_feasible_training_passes():
    check_training_inputs(_exports(), _config(), 2022)


def test_a_test_year_without_images_is_refused_in_one_line():
    with pytest.raises(UserError) as err:
        check_training_inputs(_exports(), _config(), 2030)
    assert err.value.reason == "test_year_unusable"
    assert "test year 2030 has 0 left-femur images" in err.value.detail and "2020, 2022" in err.value.detail
    assert "\n" not in err.value.detail


def test_a_test_year_with_one_class_is_refused():
    with pytest.raises(UserError, match="none labelled osteoporosis") as err:
        check_training_inputs(_exports(test_labels=(0, 0)), _config(), 2022)
    assert err.value.reason == "test_year_unusable"


def test_too_few_patients_of_a_class_for_the_folds_is_refused():
    check_training_inputs(_exports(patients_per_class=3), _config(), 2022)
    with pytest.raises(UserError, match="2 patients with .* too few for 3 stratified folds") as err:
        check_training_inputs(_exports(patients_per_class=2), _config(), 2022)
    assert err.value.reason == "too_few_patients" and "--folds 2 would do" in err.value.detail
    # a test patient's earlier images are not training images
    exports = _exports(patients_per_class=3)
    exports.loc[exports["patient_key"] == "test-1", "patient_key"] = "train-1-0"
    with pytest.raises(UserError, match="2 patients with osteoporosis"):
        check_training_inputs(exports, _config(), 2022)


def test_pretrained_weights_must_exist_and_fit_the_arch(tmp_path):
    import torch

    from osteo_model.models import build_model

    with pytest.raises(UserError, match="nosuch.pth: no such file") as err:
        check_training_inputs(_exports(), _config(pretrained_weights=str(tmp_path / "nosuch.pth")), 2022)
    assert err.value.reason == "pretrained_weights_missing"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(UserError, match="do not load as a resnet18 state dict") as err:
        check_training_inputs(_exports(), _config(pretrained_weights=str(junk)), 2022)
    assert err.value.reason == "pretrained_weights_unusable" and "\n" not in err.value.detail
    r18 = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18", in_channels=3).state_dict(), r18)
    check_training_inputs(_exports(), _config(pretrained_weights=str(r18)), 2022)
    with pytest.raises(UserError, match="do not load as a resnet34 state dict"):
        check_training_inputs(_exports(), _config(arch="resnet34", pretrained_weights=str(r18)), 2022)


def test_the_threshold_is_the_highest_that_reaches_the_target_recall():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[0] = 1
        probs = np.round(rng.random(n), 2)  # ties on purpose
        target = float(rng.choice([0.5, 0.8, 0.9, 0.95, 1.0]))
        point = choose_threshold(labels, probs, target)
        recall = (probs[labels == 1] >= point.threshold).mean()
        assert recall >= target and point.val_recall == pytest.approx(recall)
        higher = probs[probs > point.threshold]
        if len(higher):  # any higher threshold misses the target
            assert (probs[labels == 1] >= higher.min()).mean() < target


def test_the_operating_point_pools_every_folds_out_of_fold_predictions():
    def fold(k, labels, probs):
        return FoldResult(fold=k, arch="resnet18", checkpoint="x", best_epoch=1, val_loss=0.1, val_auc=0.9,
                          val_recall=0.9, n_train=1, n_val=len(labels), val_metrics={}, seconds=0.0,
                          val_probs=probs, val_labels=labels)

    point = operating_point([fold(0, [1, 1, 0], [0.9, 0.8, 0.1]), fold(1, [1, 0, 1], [0.3, 0.2, 0.7])], 0.75)
    assert point.threshold == pytest.approx(0.7)  # 3 of the 4 positives (0.9, 0.8, 0.7) are at or above it
    assert point.val_recall == pytest.approx(0.75) and point.n_val == 6 and point.val_positives == 4
    assert FoldResult.from_dict(fold(0, [1], [0.5]).to_dict()).val_probs == [0.5]


def test_a_target_recall_outside_0_1_is_refused():
    with pytest.raises(UserError, match="must be in"):
        choose_threshold([1, 0], [0.6, 0.4], 1.5)


def test_a_fold_finished_before_its_validation_predictions_were_kept_gets_them_on_resume(tmp_path):
    """An old fold-k.json (no val_probs) resumes without training: its validation images are scored again."""
    import json

    import torch
    from PIL import Image

    from osteo.training.folds import run_fold
    from osteo_model.models import build_model
    from osteo_model.predict import save_checkpoint
    from tests.model_toy import toy_image

    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        Image.fromarray(toy_image(i % 2, rng, size=40)).save(path)
        rows.append({"member_id": i, "path": str(path), "label": i % 2, "patient_key": f"p{i}", "laterality": "L",
                     "split": "train", "fold": i % 2})
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "fold-0.pth", build_model("resnet18").eval(),
                           {"arch": "resnet18", "image_size": 32}, {"threshold": 0.5})
    old = FoldResult(fold=0, arch="resnet18", checkpoint=str(ckpt), best_epoch=1, val_loss=0.1, val_auc=0.9,
                     val_recall=0.9, n_train=4, n_val=4, val_metrics={}, seconds=0.0).to_dict()
    del old["val_probs"], old["val_labels"]
    (tmp_path / "fold-0.json").write_text(json.dumps(old))
    result = run_fold(pd.DataFrame(rows), 0, get_preset("demo"), tmp_path)
    assert result.resumed and result.val_labels == [0, 0, 0, 0] and len(result.val_probs) == 4
    assert all(0 <= p <= 1 for p in result.val_probs)
