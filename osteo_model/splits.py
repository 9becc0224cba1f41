"""Train / validation / test splits with no patient crossing a boundary (docs/design.md, Splits).

Scheme (columns added by :func:`assign_splits`):

``split``
    ``'test'``   left-femur images of ``test_year``;
    ``'train'``  images (left and right) of earlier years, of patients with no test image;
    ``'unused'`` everything else: images after the test year, right femurs of the test year,
    and every image of a patient who has any test image (so no patient crosses the test
    boundary).

``fold`` (int)
    ``0..k-1`` for a train image of a patient who has at least one LEFT train image: the
    patient's fold, from ``StratifiedGroupKFold`` over the left train images (grouped by
    ``patient_key``, stratified by ``label``). Right images of that patient carry the same
    fold number, but they are never evaluated: in fold ``f`` they are neither trained on nor
    validated (see :func:`fold_frames`), so the patient stays entirely on one side.
    ``-2`` (:data:`FOLD_ALWAYS_TRAIN`) for train images of a patient with right images only:
    they are in the train part of every fold.
    ``-1`` (:data:`FOLD_NONE`) for test and unused images.

Augmented copies (rows with a non-null ``source_member_id``) inherit split and fold from their
source image; like right femurs they are train-only and never validated: in fold ``f`` a copy
whose fold is ``f`` is dropped (it is a copy of a validation image).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

SPLIT_TRAIN = "train"
SPLIT_TEST = "test"
SPLIT_UNUSED = "unused"
FOLD_NONE = -1
FOLD_ALWAYS_TRAIN = -2

REQUIRED_COLUMNS = ("member_id", "label", "patient_key", "laterality", "study_year")


class SplitLeakError(ValueError):
    """A patient (or an augmented copy) crosses a split boundary."""

    def __init__(self, message: str, patient_keys: Iterable[str] = ()):
        self.patient_keys = sorted({str(k) for k in patient_keys})
        if self.patient_keys:
            message = f"{message}: {', '.join(self.patient_keys)}"
        super().__init__(message)


def _is_copy(manifest: pd.DataFrame) -> pd.Series:
    if "source_member_id" not in manifest.columns:
        return pd.Series(False, index=manifest.index)
    return manifest["source_member_id"].notna()


def _check_columns(manifest: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise KeyError(f"manifest lacks column(s) {missing}")


def _group_codes(rows: pd.DataFrame) -> np.ndarray:
    """One integer per patient, numbered in an order that the data fixes.

    StratifiedGroupKFold sorts the group labels before it shuffles them with the seed. Sorted
    pseudonyms would tie the folds to the site's secret key (a fresh install draws a new one), so
    the same data and seed gave other folds, and another model, on every install. With a
    ``sha256`` column (snapshots always have it: the PNG digest) patients are numbered by their
    smallest image digest, which depends on the pixels only; without one, by pseudonym.
    """
    keys = rows["patient_key"].astype(str)
    first = rows.groupby(keys)["sha256"].transform("min").astype(str) if "sha256" in rows.columns else keys
    # np.unique sorts: patients in digest order; the pseudonym only breaks a tie (one identical image)
    _, codes = np.unique((first + "|" + keys).to_numpy(), return_inverse=True)
    return codes


def patient_folds(left_train: pd.DataFrame, folds: int, seed: int) -> dict[str, int]:
    """Each patient's validation fold, from StratifiedGroupKFold over the left train images (grouped by
    patient, stratified by label); empty when there are none."""
    if not len(left_train):
        return {}
    keys = left_train["patient_key"].astype(str).to_numpy()
    groups = _group_codes(left_train)
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise ValueError(
            f"{n_groups} patients with left train images: too few for {folds} folds"
        )
    from sklearn.model_selection import StratifiedGroupKFold

    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    patient_fold: dict[str, int] = {}
    y = left_train["label"].astype(int).to_numpy()
    for k, (_, val_idx) in enumerate(sgkf.split(np.zeros(len(y)), y, groups)):
        for key in np.unique(keys[val_idx]):
            patient_fold[str(key)] = k
    return patient_fold


def split_originals(orig: pd.DataFrame, *, test_year: int, folds: int, seed: int) -> tuple[pd.Series, pd.Series]:
    """(split, fold) of the original (not augmented) rows, on their index (see module doc)."""
    lat = orig["laterality"].astype(str).str.upper()
    year = orig["study_year"].astype(int)
    patient = orig["patient_key"].astype(str)

    is_test = (lat == "L") & (year == test_year)
    test_patients = set(patient[is_test])
    is_train = (year < test_year) & ~patient.isin(test_patients)

    split = pd.Series(SPLIT_UNUSED, index=orig.index, dtype=object)
    split[is_test] = SPLIT_TEST
    split[is_train] = SPLIT_TRAIN
    fold = pd.Series(FOLD_NONE, index=orig.index, dtype=int)

    patient_fold = patient_folds(orig.loc[is_train & (lat == "L")], folds, seed)
    train_idx = orig.index[is_train]
    fold[train_idx] = np.array([
        patient_fold.get(str(p), FOLD_ALWAYS_TRAIN) for p in patient[is_train]
    ], dtype=int)
    return split, fold


def inherit_from_sources(out: pd.DataFrame, is_copy: pd.Series, member_id: pd.Series, split: pd.Series,
                         fold: pd.Series) -> None:
    """Give each augmented copy in `out` the split and fold of its source row (KeyError for a copy whose
    source is not there)."""
    by_id = pd.DataFrame({"split": split, "fold": fold}).set_index(member_id)
    src = out.loc[is_copy, "source_member_id"]
    missing = ~src.isin(by_id.index)
    if missing.any():
        raise KeyError(f"augmented copies without a source row: {src[missing].tolist()}")
    out.loc[is_copy, "split"] = by_id.loc[src, "split"].to_numpy()
    out.loc[is_copy, "fold"] = by_id.loc[src, "fold"].to_numpy()


def assign_splits(
    manifest: pd.DataFrame, *, test_year: int = 2022, folds: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Return a copy of ``manifest`` with ``split`` and ``fold`` columns (see module doc).

    Rows that are augmented copies (non-null ``source_member_id``) take the split and fold of
    their source row, which must be in the same frame.
    """
    _check_columns(manifest, REQUIRED_COLUMNS)
    if folds < 2:
        raise ValueError("folds must be >= 2")
    out = manifest.copy()
    is_copy = _is_copy(out)
    orig = out.loc[~is_copy]
    split, fold = split_originals(orig, test_year=test_year, folds=folds, seed=seed)
    out["split"] = SPLIT_UNUSED
    out["fold"] = FOLD_NONE
    out.loc[orig.index, "split"] = split
    out.loc[orig.index, "fold"] = fold
    if is_copy.any():
        inherit_from_sources(out, is_copy, orig["member_id"], split, fold)
    out["fold"] = out["fold"].astype(int)
    return out


def _check_test_and_train(patient: pd.Series, split: pd.Series) -> None:
    """Known split values only, and no patient in both test and train."""
    bad_split = ~split.isin([SPLIT_TRAIN, SPLIT_TEST, SPLIT_UNUSED])
    if bad_split.any():
        raise SplitLeakError(f"unknown split values {sorted(set(split[bad_split]))}")
    crossing = set(patient[split == SPLIT_TEST]) & set(patient[split == SPLIT_TRAIN])
    if crossing:
        raise SplitLeakError("patients in both test and train", crossing)


def _check_folds(manifest: pd.DataFrame, patient: pd.Series, split: pd.Series, fold: pd.Series) -> None:
    """One validation fold a patient (never also always-train); a fold on train rows only."""
    in_folds = manifest.loc[(split == SPLIT_TRAIN) & (fold >= 0)]
    n_folds = in_folds.groupby(in_folds["patient_key"].astype(str))["fold"].nunique()
    multi = n_folds[n_folds > 1].index
    if len(multi):
        raise SplitLeakError("patients in more than one validation fold", multi)
    # a patient with fold-k images must not also have always-train (-2) images
    always = set(patient[(split == SPLIT_TRAIN) & (fold == FOLD_ALWAYS_TRAIN)])
    mixed = always & set(in_folds["patient_key"].astype(str))
    if mixed:
        raise SplitLeakError("patients both in a fold and always-train", mixed)

    bad_fold = (split != SPLIT_TRAIN) & (fold != FOLD_NONE)
    if bad_fold.any():
        raise SplitLeakError("test/unused rows with a fold", patient[bad_fold])
    bad_train_fold = (split == SPLIT_TRAIN) & ((fold < FOLD_ALWAYS_TRAIN) | (fold == FOLD_NONE))
    if bad_train_fold.any():
        raise SplitLeakError("train rows without a fold", patient[bad_train_fold])


def _check_copies(manifest: pd.DataFrame, is_copy: pd.Series) -> None:
    """No augmented copy in the test set; each copy's source in the manifest, with its split, fold and patient."""
    _check_columns(manifest, ("member_id",))
    copies = manifest.loc[is_copy]
    if (copies["split"] == SPLIT_TEST).any():
        raise SplitLeakError(
            "augmented copies in the test set",
            copies.loc[copies["split"] == SPLIT_TEST, "patient_key"],
        )
    sources = manifest.loc[~is_copy].set_index("member_id")
    src_ids = copies["source_member_id"]
    orphan = ~src_ids.isin(sources.index)
    if orphan.any():
        raise SplitLeakError(
            "augmented copies whose source is not in the manifest",
            copies.loc[orphan, "patient_key"],
        )
    src = sources.loc[src_ids]
    differs = (src["split"].to_numpy() != copies["split"].to_numpy()) | (
        src["fold"].astype(int).to_numpy() != copies["fold"].astype(int).to_numpy()
    )
    if "patient_key" in src.columns:
        differs |= src["patient_key"].astype(str).to_numpy() != copies[
            "patient_key"
        ].astype(str).to_numpy()
    if differs.any():
        raise SplitLeakError(
            "augmented copies with a split/fold other than their source's",
            copies.loc[differs, "patient_key"],
        )


def check_splits(manifest: pd.DataFrame) -> None:
    """Raise :class:`SplitLeakError` when the split/fold columns break a rule.

    Checks: no patient in both test and train; no patient in two validation folds (left
    images in different folds, or a right image in a fold other than its patient's); no right
    femur and no augmented copy in the test set; test/unused rows have fold -1; every
    augmented copy has the split and fold of its source.
    """
    _check_columns(manifest, ("patient_key", "split", "fold"))
    is_copy = _is_copy(manifest)
    patient = manifest["patient_key"].astype(str)
    split = manifest["split"].astype(str)
    fold = manifest["fold"].astype(int)
    _check_test_and_train(patient, split)
    _check_folds(manifest, patient, split, fold)
    if "laterality" in manifest.columns:
        right_test = (split == SPLIT_TEST) & (
            manifest["laterality"].astype(str).str.upper() != "L"
        )
        if right_test.any():
            raise SplitLeakError("right femurs in the test set", patient[right_test])
    if is_copy.any():
        _check_copies(manifest, is_copy)


def fold_frames(manifest: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train_df, val_df) of fold ``fold``.

    val   = original LEFT train images whose fold is ``fold``;
    train = train rows (originals, right femurs, augmented copies) whose fold is neither
            ``fold`` nor -1, i.e. other folds plus always-train rows (-2).
    Right femurs and copies whose fold is ``fold`` are in neither frame.
    """
    _check_columns(manifest, ("split", "fold"))
    is_train = manifest["split"] == SPLIT_TRAIN
    f = manifest["fold"].astype(int)
    is_copy = _is_copy(manifest)
    if "laterality" in manifest.columns:
        is_left = manifest["laterality"].astype(str).str.upper() == "L"
    else:
        is_left = pd.Series(True, index=manifest.index)
    val = manifest.loc[is_train & (f == fold) & is_left & ~is_copy]
    train = manifest.loc[is_train & (f != fold) & (f != FOLD_NONE)]
    if val.empty:
        raise ValueError(f"fold {fold} has no validation images")
    return train.copy(), val.copy()


def holdout_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    """The test rows (left femurs of the test year, originals only)."""
    return manifest.loc[(manifest["split"] == SPLIT_TEST) & ~_is_copy(manifest)].copy()


def split_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts of images and positives per split/fold/laterality (for logs and reports)."""
    cols = ["split", "fold"] + (["laterality"] if "laterality" in manifest.columns else [])
    g = manifest.groupby(cols, dropna=False)
    return pd.DataFrame(
        {
            "images": g.size(),
            "positives": g["label"].sum(),
            "patients": g["patient_key"].nunique(),
        }
    ).reset_index()
