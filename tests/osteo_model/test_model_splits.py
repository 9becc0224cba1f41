import numpy as np
import pandas as pd
import pytest
from model_toy import toy_manifest

from osteo_model.splits import (
    FOLD_ALWAYS_TRAIN,
    FOLD_NONE,
    SplitLeakError,
    assign_splits,
    check_splits,
    fold_frames,
    holdout_frame,
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    m = toy_manifest(tmp_path_factory.mktemp("png"), n_patients=200, seed=3, write=False)
    return assign_splits(m, test_year=2022, folds=5, seed=0)


def test_split_rules(manifest):
    m = manifest
    test = m[m.split == "test"]
    assert len(test) and (test.laterality == "L").all() and (test.study_year == 2022).all()
    assert (test.fold == FOLD_NONE).all()
    train = m[m.split == "train"]
    assert (train.study_year < 2022).all()
    assert set(train.patient_key).isdisjoint(test.patient_key)
    # everything after the test year and right femurs of the test year are unused
    assert (m[m.study_year > 2022].split == "unused").all()
    assert (m[(m.study_year == 2022) & (m.laterality == "R")].split == "unused").all()
    # earlier images of a test patient are removed from train
    tp = set(test.patient_key)
    assert (m[m.patient_key.isin(tp) & (m.study_year < 2022)].split == "unused").all()
    assert (m[m.split == "unused"].fold == FOLD_NONE).all()
    check_splits(m)


def test_folds_group_by_patient_and_stratify(manifest):
    m = manifest
    left = m[(m.split == "train") & (m.laterality == "L")]
    assert set(left.fold) == set(range(5))
    assert (left.groupby("patient_key").fold.nunique() == 1).all()
    # right femurs carry their patient's fold, or -2 when the patient has no left image
    train = m[m.split == "train"]
    per_patient = train[train.fold >= 0].groupby("patient_key").fold.nunique()
    assert (per_patient == 1).all()
    right_only = train[train.fold == FOLD_ALWAYS_TRAIN]
    assert (right_only.laterality == "R").all()
    assert set(right_only.patient_key).isdisjoint(left.patient_key)
    overall = left.label.mean()
    for k in range(5):
        assert abs(left[left.fold == k].label.mean() - overall) < 0.15


def test_fold_frames(manifest):
    m = manifest
    seen_val = set()
    for k in range(5):
        tr, va = fold_frames(m, k)
        assert (va.laterality == "L").all() and (va.split == "train").all()
        assert set(tr.patient_key).isdisjoint(va.patient_key)
        assert (tr.split == "train").all()
        assert (tr.fold != k).all() and (va.fold == k).all()
        # right-only patients are trained on in every fold
        assert set(m[m.fold == FOLD_ALWAYS_TRAIN].member_id) <= set(tr.member_id)
        assert seen_val.isdisjoint(va.member_id)
        seen_val |= set(va.member_id)
    left_train = m[(m.split == "train") & (m.laterality == "L")]
    assert seen_val == set(left_train.member_id)
    assert set(holdout_frame(m).member_id) == set(m[m.split == "test"].member_id)


def test_copies_follow_source(manifest):
    m = manifest
    src = m[m.split == "train"].head(20)
    copies = src.drop(columns="member_id").assign(
        source_member_id=src.member_id.to_numpy(), path="x.png"
    )
    full = pd.concat([m.assign(source_member_id=pd.NA), copies], ignore_index=True)
    check_splits(full)
    # assign_splits on a frame with copies propagates the sources' split/fold
    redone = assign_splits(full.drop(columns=["split", "fold"]), folds=5, seed=0)
    pd.testing.assert_frame_equal(redone[["split", "fold"]], full[["split", "fold"]],
                                  check_dtype=False)
    # a copy of a validation image is not trained on in that fold
    k = int(src.iloc[0].fold)
    if k >= 0:
        tr, va = fold_frames(full, k)
        assert src.iloc[0].member_id not in set(tr.source_member_id.dropna())
        assert va.source_member_id.isna().all()
    # a copy whose fold differs from its source's is a leak
    bad = full.copy()
    i = bad.index[bad.source_member_id.notna()][0]
    bad.loc[i, "fold"] = (int(bad.loc[i, "fold"]) + 1) % 5
    with pytest.raises(SplitLeakError) as exc:
        check_splits(bad)
    assert bad.loc[i, "patient_key"] in exc.value.patient_keys


def test_check_splits_names_leaking_patients(manifest):
    m = manifest.copy()
    victim = m[(m.split == "train") & (m.fold >= 0)].patient_key.iloc[0]
    # same patient in test and train
    leak = m.copy()
    extra = leak[leak.patient_key == victim].iloc[[0]].assign(
        member_id=10**6, split="test", fold=-1, laterality="L", study_year=2022)
    leak = pd.concat([leak, extra], ignore_index=True)
    with pytest.raises(SplitLeakError, match=victim) as exc:
        check_splits(leak)
    assert exc.value.patient_keys == [victim]
    # same patient in two validation folds
    two = m.copy()
    rows = two.index[two.patient_key == victim]
    extra = two.loc[[rows[0]]].assign(member_id=10**6 + 1,
                                      fold=(int(two.loc[rows[0], "fold"]) + 1) % 5)
    two = pd.concat([two, extra], ignore_index=True)
    with pytest.raises(SplitLeakError, match=victim):
        check_splits(two)
    # a right femur in the test set
    right = m.copy()
    j = right.index[right.split == "test"][0]
    right.loc[j, "laterality"] = "R"
    with pytest.raises(SplitLeakError, match="right femurs"):
        check_splits(right)


def test_assign_splits_is_deterministic_and_needs_enough_patients(tmp_path):
    m = toy_manifest(tmp_path, n_patients=80, seed=1, write=False)
    a = assign_splits(m, seed=7)
    b = assign_splits(m.sample(frac=1, random_state=0).sort_index(), seed=7)
    assert a.fold.tolist() == b.fold.tolist()
    with pytest.raises(ValueError):
        assign_splits(m.head(3), folds=5)
    assert np.issubdtype(a.fold.dtype, np.integer)


def test_folds_follow_the_data_not_the_pseudonym_key(tmp_path):
    """Another site key gives every patient another pseudonym; the folds must not move, or the
    same data and seed train another model on every install."""
    import hashlib

    m = toy_manifest(tmp_path, n_patients=80, seed=3, write=False)
    m["sha256"] = [hashlib.sha256(f"png-{i}".encode()).hexdigest() for i in m["member_id"]]
    other = m.assign(patient_key=[hashlib.sha256(f"other-key|{k}".encode()).hexdigest()[:16]
                                  for k in m["patient_key"]])
    a, b = assign_splits(m, folds=5, seed=0), assign_splits(other, folds=5, seed=0)
    assert a["fold"].tolist() == b["fold"].tolist() and a["split"].tolist() == b["split"].tolist()
    assert set(a.loc[a["fold"] >= 0, "fold"]) == set(range(5))
    # without image digests the order is the pseudonyms' (and so it moves): the digest is what fixes it
    c, d = assign_splits(m.drop(columns="sha256"), folds=5, seed=0), assign_splits(other.drop(columns="sha256"),
                                                                                    folds=5, seed=0)
    assert c["fold"].tolist() != d["fold"].tolist()
