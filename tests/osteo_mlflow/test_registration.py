"""Registration an ML engineer controls: one version per configuration and snapshot, the operating threshold in
the model, a model card, a fair champion comparison, and failed trainings marked FAILED (a toy model, no training)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

N_IMAGES, MIN_TEST = 8, 4


def _crops(folder: Path) -> pd.DataFrame:
    from PIL import Image

    from tests.model_toy import toy_image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, N_IMAGES + 1):
        label = i % 2
        path = folder / f"crop-{i}.png"
        Image.fromarray(toy_image(label, rng, size=48)).save(path)
        rows.append({"member_id": i, "path": str(path), "label": label, "patient_key": f"p{i}", "laterality": "L",
                     "study_year": 2022, "split": "test", "fold": -1})
    return pd.DataFrame(rows)


def _snapshot(s, manifest: pd.DataFrame, name: str, synthetic_images: int = 0):
    from osteo.training.snapshot import SnapshotInfo

    digest = (name * 64)[:64]
    path = Path(s.data_dir) / "snapshots" / f"{digest}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False)
    test = manifest[manifest["split"] == "test"]
    return SnapshotInfo(snapshot_id=1, digest=digest, manifest_path=str(path), n_members=len(manifest),
                        n_train=int((manifest["split"] == "train").sum()), n_test=len(test),
                        test_positives=int(test["label"].sum()), params={"test_year": 2022},
                        synthetic_images=synthetic_images)


@contextmanager
def _toy_store(home: Path):
    """A store of its own and a toy resnet18 checkpoint on 8 crops; yields (settings, client, crops, probs, register)
    where register(manifest, name, digest) registers the checkpoint through register_best. The crops' labels are
    declared from the toy weights' ranking, lowest four 0 and highest four 1 (a perfect ranker on paper, so that a
    version clears the champion gate on its merits; tests/osteo_mlflow/test_champion.py tests the gate itself), and
    crops 1..4 are the two lowest and two highest: a perfect ranking on them too."""
    import torch

    import osteo.training.snapshot
    from osteo.settings import session_factory
    from osteo.training import results
    from osteo_mlflow import registry
    from osteo_mlflow.client import client, experiment_id
    from osteo_model.metrics import compute_metrics
    from osteo_model.models import build_model
    from osteo_model.predict import Predictor, save_checkpoint
    from osteo_model.subgroups import bootstrap_auc_ci
    from tests.helpers import isolated_settings

    with isolated_settings(home, OSTEO_MIN_TEST_IMAGES=str(MIN_TEST)) as s, pytest.MonkeyPatch.context() as mp:
        # the database side is not ours here
        mp.setattr(osteo.training.snapshot, "record_training_run", lambda *a, **k: None)
        factory = session_factory(s, create=True)
        crops = _crops(home)
        torch.manual_seed(0)
        model = build_model("resnet18")
        model.train()
        with torch.no_grad():
            model(torch.randn(4, 1, 32, 32))  # BatchNorm statistics, so probabilities differ per image
        ckpt = save_checkpoint(home / "run" / "fold-0.pth", model.eval(), {"arch": "resnet18", "image_size": 32},
                               {"threshold": 0.5})
        probs = [r["probability"] for r in Predictor.from_checkpoint(ckpt).predict(crops["path"].tolist(),
                                                                                  heatmaps=False)]
        assert len(set(probs)) == N_IMAGES
        rank = list(np.argsort(probs))
        order = rank[:2] + rank[-2:] + rank[2:-2]
        crops = crops.iloc[order].reset_index(drop=True).assign(member_id=range(1, N_IMAGES + 1),
                                                                label=[0, 0, 1, 1, 0, 0, 1, 1])
        probs = [probs[i] for i in order]
        best = results.FoldResult(fold=0, arch="resnet18", checkpoint=str(ckpt), best_epoch=1, val_loss=0.5,
                                   val_auc=0.5, val_recall=0.5, n_train=8, n_val=4, val_metrics={}, seconds=1.0)
        c = client(s)
        threshold = sorted(probs)[-3]

        def evaluation(frame):
            """As osteo.training.evaluation.evaluate_on_test scores a test year (mean-intensity baseline: chance)."""
            p = [probs[i - 1] for i in frame["member_id"]]
            y = frame["label"].tolist()
            flat = {k: v for k, v in compute_metrics(y, p, threshold).items() if isinstance(v, int | float)}
            half = {k: v for k, v in compute_metrics(y, p, 0.5).items() if isinstance(v, int | float)}
            return results.Evaluation(metrics=flat, confusion_matrix=None, baseline_auc=0.5, n_test=len(frame),
                                       test_positives=int(sum(y)), threshold=threshold, metrics_at_half=half,
                                       test_member_ids=frame["member_id"].tolist(), test_probs=p,
                                       auc_ci=bootstrap_auc_ci(y, p))

        def register(manifest, name, digest, synthetic_images=0):
            snap = _snapshot(s, manifest, name, synthetic_images)
            parent = c.create_run(experiment_id(c, s), tags={"preset": "demo"}).info.run_id
            test = manifest[manifest["split"] == "test"]
            return registry.register_best(c, s, factory, best, evaluation(test), snap, parent, digest=digest,
                                          target_recall=0.9, folds=2), parent

        yield {"settings": s, "client": c, "crops": crops, "probs": probs, "threshold": threshold,
               "checkpoint": ckpt, "best": best, "register": register, "monkeypatch": mp}


@pytest.fixture(scope="module")
def toy_registry(tmp_path_factory):
    """Version 1 at threshold = the 3rd highest probability, then the same training again (nothing new), then a
    challenger on a test set half of which the champion trained on."""
    from osteo_mlflow import registry

    with _toy_store(tmp_path_factory.mktemp("registration")) as toy:
        register, crops, mp = toy["register"], toy["crops"], toy["monkeypatch"]
        # version 1: trained on crops 5..8, tested on 1..4
        first_manifest = crops.assign(split=["test"] * 4 + ["train"] * 4, fold=[-1] * 4 + [0, 1, 0, 1])
        first, _ = register(first_manifest, "a", "digest-1")
        again, _ = register(first_manifest, "a", "digest-1")
        calls = []
        real_score = registry.score_version
        mp.setattr(registry, "score_version", lambda n, v, t: calls.append(t["member_id"].tolist()) or
                   real_score(n, v, t))
        challenger, _ = register(crops, "b", "digest-2", synthetic_images=3)  # tested on all 8; 3 synthetic
        yield toy | {"first": first, "again": again, "challenger": challenger, "scored": calls}


def test_first_version_is_champion_and_the_same_training_registers_nothing_new(toy_registry):
    first, again = toy_registry["first"], toy_registry["again"]
    assert first.model_version == "1" and first.champion and not first.already_registered
    assert again.already_registered and again.model_version == "1" and again.champion
    assert "already registered as version 1" in again.decision
    c, name = toy_registry["client"], toy_registry["settings"].registered_model
    assert sorted(int(v.version) for v in c.search_model_versions(f"name = '{name}'")) == [1, 2]
    assert c.get_model_version(name, "1").tags["training_digest"] == "digest-1"


def test_the_champion_is_judged_only_on_test_images_it_did_not_train_on(toy_registry):
    """The user's bug: a champion from another snapshot was scored on the challenger's test images, some of which
    it had trained on (AUC 0.0 on 6 images decided the promotion). Now the images it trained on are left out."""
    (scored,) = toy_registry["scored"]
    assert scored == [1, 2, 3, 4]  # crops 5..8 were version 1's training images
    challenger = toy_registry["challenger"]
    assert challenger.model_version == "2" and "the champion did not train on" in challenger.decision
    # on the same 4 images, the same weights: equal AUC and recall, so no promotion
    assert not challenger.champion and challenger.champion_version == "1"


def test_score_version_scores_crops_as_crops(toy_registry):
    from osteo_mlflow.registry import score_version
    from osteo_model.metrics import compute_metrics

    crops, probs, thr = toy_registry["crops"], toy_registry["probs"], toy_registry["threshold"]
    got = score_version(toy_registry["settings"].registered_model, "1", crops)
    want = compute_metrics(crops["label"].tolist(), probs, thr)
    assert "error" not in got and got["n"] == N_IMAGES
    assert got["roc_auc"] == pytest.approx(want["roc_auc"]) and got["recall_1"] == pytest.approx(want["recall_1"])


def test_pyfunc_labels_at_the_registered_operating_threshold(toy_registry):
    import mlflow

    s, thr, probs = toy_registry["settings"], toy_registry["threshold"], toy_registry["probs"]
    model = mlflow.pyfunc.load_model(f"models:/{s.registered_model}/1")
    assert model.metadata.metadata["threshold"] == pytest.approx(thr)
    params = {p.name: p.default for p in model.metadata.get_params_schema().params}
    assert params["threshold"] == pytest.approx(thr)
    frame = pd.DataFrame({"image": [Path(p).read_bytes() for p in toy_registry["crops"]["path"]]})
    out = model.predict(frame, params={"cropped": True, "heatmap": False})
    assert out["probability"].to_numpy() == pytest.approx(probs, abs=1e-5)
    assert out["label"].tolist() == [int(p >= thr) for p in out["probability"]]
    assert out["label"].tolist() != [int(p >= 0.5) for p in out["probability"]] or thr == 0.5
    assert sum(out["label"]) == 3  # the threshold is the 3rd highest probability
    tags = toy_registry["client"].get_model_version(s.registered_model, "1").tags
    assert float(tags["threshold"]) == pytest.approx(thr) and tags["target_recall"] == "0.9"
    # the threshold is the model's config, not a rewritten checkpoint: lineage hashes the fold's own file
    from osteo_common.files import sha256_file

    assert tags["checkpoint_sha256"] == sha256_file(toy_registry["checkpoint"])


def test_each_version_has_a_model_card(toy_registry):
    s = toy_registry["settings"]
    card = toy_registry["client"].get_model_version(s.registered_model, "1").description
    for want in ("resnet18", "preset demo", "2-fold", "Snapshot: `aaaa", f"{toy_registry['threshold']:.4f}",
                 "recall >= 0.90", "at 0.5", "screening aid", "not a diagnosis", "Limits"):
        assert want in card, (want, card)


def test_a_version_says_what_it_learned_from(toy_registry):
    """Version 1 learned from real images only, version 2 from a snapshot with 3 synthetic images of 8: the
    tag, the model card, the registration and every prediction of the pyfunc say so."""
    import mlflow

    from osteo.etl.synthetic import DEMO_NOTICE

    c, s = toy_registry["client"], toy_registry["settings"]
    real, mixed = (c.get_model_version(s.registered_model, v) for v in ("1", "2"))
    assert (real.tags["trained_on"], real.tags["synthetic_images"]) == ("real", "0")
    assert (mixed.tags["trained_on"], mixed.tags["synthetic_images"]) == ("mixed", "3")
    assert DEMO_NOTICE not in real.description and "hospital's exported hip radiographs" in real.description
    assert mixed.description.startswith(f"**{DEMO_NOTICE}**") and "3 of 8" in mixed.description
    assert toy_registry["first"].trained_on == "real" and toy_registry["again"].trained_on == "real"
    assert toy_registry["challenger"].trained_on == "mixed"
    frame = pd.DataFrame({"image": [Path(toy_registry["crops"]["path"].iloc[0]).read_bytes()]})
    for version, trained_on, flag in (("1", "real", False), ("2", "mixed", True)):
        out = mlflow.pyfunc.load_model(f"models:/{s.registered_model}/{version}").predict(
            frame, params={"cropped": True, "heatmap": False})
        assert out["trained_on"].tolist() == [trained_on] and out["synthetic_training"].tolist() == [flag]


def test_the_experiment_is_a_model_training_experiment(toy_registry):
    from osteo_mlflow.client import experiment_id

    c, s = toy_registry["client"], toy_registry["settings"]
    assert c.get_experiment_by_name(s.mlflow_experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    old = c.create_experiment("made-before-the-tag")
    assert "mlflow.experimentKind" not in c.get_experiment(old).tags
    assert experiment_id(c, s, "made-before-the-tag") == old
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_failed_training_marks_the_parent_and_its_open_fold_runs_failed(toy_registry, tmp_path):
    from osteo_mlflow import runs
    from osteo_mlflow.client import experiment_id

    c, s = toy_registry["client"], toy_registry["settings"]
    parent = c.create_run(experiment_id(c, s)).info.run_id
    done, open_ = (runs.fold_run(c, parent, k, tmp_path) for k in (0, 1))
    c.set_terminated(done, "FINISHED")
    with pytest.raises(RuntimeError, match="injected"), runs.failing_marks_runs(c, parent, tmp_path):
        raise RuntimeError("injected fault in fold 1")
    status = {r: c.get_run(r).info.status for r in (parent, done, open_)}
    assert status == {parent: "FAILED", done: "FINISHED", open_: "FAILED"}
    with runs.failing_marks_runs(c, parent, tmp_path):
        pass  # no error: nothing marked
    assert c.get_run(done).info.status == "FINISHED"
