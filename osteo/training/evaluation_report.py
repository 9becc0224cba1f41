"""The test year beyond the headline numbers: results per acquisition subgroup, and calibration.

`acquisition_table` gathers each test image's acquisition (modality, photometric interpretation, whether
its transfer syntax is compressed), the patient's sex and the age band at the exam from the database;
`extra_test_report` writes subgroups.csv / subgroups.md (osteo_model.subgroups) and calibration.json
(osteo_model.calibration: ECE before and after a temperature fitted on validation) and returns a few
flat numbers for the run's metrics. Only aggregates are written: no member id, patient key or age.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import DicomImage, Export, Patient
from osteo_common.chunks import chunks
from osteo_common.files import atomic_write_text, write_json
from osteo_model.calibration import calibration_report
from osteo_model.subgroups import age_band, subgroup_markdown, subgroup_table

ACQUISITION_COLUMNS = ["member_id", "modality", "photometric", "transfer_syntax", "compressed", "sex", "age_band"]


def is_compressed(transfer_syntax: str | None) -> bool | None:
    """True for an encapsulated (compressed) transfer syntax: JPEG, JPEG 2000, JPEG-LS, RLE, ...; the
    native little/big-endian syntaxes and deflate (a zipped native data set) are not."""
    from pydicom.uid import UID

    if not transfer_syntax:
        return None
    uid = UID(transfer_syntax)
    return bool(uid.is_compressed) if uid.is_transfer_syntax else None


def acquisition_table(factory: sessionmaker[Session], member_ids: Sequence[int]) -> pd.DataFrame:
    """One row per snapshot member (an export id), in the order given: its image's acquisition, the
    patient's sex and age band. Unknown ids are rows of missing values (never dropped)."""
    ids = [int(i) for i in member_ids]
    found: dict[int, tuple] = {}
    with factory() as session:
        for chunk in chunks(ids):
            for row in session.execute(
                select(Export.id, DicomImage.modality, DicomImage.photometric, DicomImage.transfer_syntax,
                       Patient.sex, DicomImage.age_at_exam)
                .join(DicomImage, DicomImage.id == Export.image_id)
                .join(Patient, Patient.id == DicomImage.patient_id)
                .where(Export.id.in_(chunk))
            ):
                found[int(row[0])] = tuple(row[1:])
    rows = []
    for i in ids:
        modality, photometric, syntax, sex, age = found.get(i, (None,) * 5)
        rows.append({"member_id": i, "modality": modality, "photometric": photometric, "transfer_syntax": syntax,
                     "compressed": None if syntax is None else ("compressed" if is_compressed(syntax)
                                                                else "uncompressed"),
                     "sex": sex, "age_band": age_band(age)})
    return pd.DataFrame(rows, columns=ACQUISITION_COLUMNS)


@dataclass(frozen=True)
class TestReportExtras:
    """Flat numbers of the subgroup and calibration report (for the run's metrics) and its files."""

    n_subgroups: int
    n_subgroups_auc_undefined: int
    n_subgroups_auc_off: int  # AUC more than 0.05 from the overall AUC
    min_subgroup_auc: float
    ece_before: float
    ece_after: float
    temperature: float
    files: tuple[str, ...] = ()

    def metrics(self) -> dict[str, float]:
        """The numbers as finite floats (an undefined one is left out)."""
        out = {k: float(v) for k, v in asdict(self).items() if k != "files"}
        return {k: v for k, v in out.items() if not math.isnan(v)}


def extra_test_report(factory: sessionmaker[Session], test_frame: pd.DataFrame, labels, probs, threshold: float,
                      out_dir: str | Path, val_labels=None, val_probs=None, *, n_boot: int = 2000, seed: int = 0,
                      n_bins: int = 10) -> TestReportExtras:
    """Subgroups (from `test_frame`'s member_id through the database) and calibration, written to out_dir.

    `labels`/`probs` are aligned with `test_frame`'s rows; `threshold` is the operating threshold;
    `val_labels`/`val_probs` (the validation set the threshold and the temperature are fitted on) are
    optional: without them the temperature stays 1.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acquisition = acquisition_table(factory, test_frame["member_id"].tolist())
    table = subgroup_table(acquisition, labels, probs, threshold, n_boot=n_boot, seed=seed)
    atomic_write_text(out / "subgroups.csv", table.to_csv(index=False))
    atomic_write_text(out / "subgroups.md", f"Test year by acquisition subgroup (threshold {threshold:g}; AUC 95 % "
                      f"CI: bootstrap, {n_boot} resamples, seed {seed}; recall and specificity: Wilson)\n\n"
                      + subgroup_markdown(table) + "\n")
    cal = calibration_report(labels, probs, val_labels, val_probs, n_bins=n_bins)
    write_json(out / "calibration.json", cal.to_dict())
    groups = table[table["attribute"] != "overall"]
    aucs = groups["auc"].dropna()
    return TestReportExtras(
        n_subgroups=int(len(groups)), n_subgroups_auc_undefined=int(groups["auc"].isna().sum()),
        n_subgroups_auc_off=int((groups["auc_within_0_05"] == False).sum()),  # noqa: E712 - None is not False
        min_subgroup_auc=float(aucs.min()) if len(aucs) else math.nan,
        ece_before=cal.ece_before, ece_after=cal.ece_after, temperature=cal.temperature,
        files=tuple(str(out / n) for n in ("subgroups.csv", "subgroups.md", "calibration.json")))


@dataclass(frozen=True)
class TestYearExtras:
    """A training's test year beyond its headline: the subgroup and calibration report (None when the evaluation
    kept no per-image probabilities) and the optional heads' metrics (osteo.training.heads, NaN left out)."""

    report: TestReportExtras | None = None
    heads: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat, as logged on the parent run: the report's numbers as test_*, then the heads'."""
        flat = {f"test_{k}": v for k, v in self.report.metrics().items()} if self.report else {}
        return flat | self.heads


def extras_summary(extras: TestYearExtras) -> list[str]:
    """The training summary's lines for its test-year extras."""
    nan, rep, x = math.nan, extras.report, extras.heads
    lines = []
    if rep is not None and not math.isnan(rep.ece_before):
        lines.append(f"calibration     ECE {rep.ece_before:.3f}, {rep.ece_after:.3f} after "
                     f"temperature {rep.temperature:.2f} (fitted on validation)")
    if rep is not None:
        lines.append(f"subgroups       {rep.n_subgroups:.0f}, {rep.n_subgroups_auc_off:.0f} with AUC more than 0.05 "
                     f"from the overall; lowest AUC {rep.min_subgroup_auc:.3f}")
    if "bmd_pearson_r" in x:
        lines.append(f"heads           BMD r {x['bmd_pearson_r']:.3f} (MAE {x.get('bmd_mae', nan):.3f} g/cm2), "
                     f"T-score r {x.get('tscore_pearson_r', nan):.3f}, 3 classes accuracy "
                     f"{x.get('class3_accuracy', nan):.3f}")
    if "fusion_auc_with_clinical" in x:
        lines.append(f"clinical        AUC {x.get('fusion_auc_image', nan):.3f} image only, "
                     f"{x['fusion_auc_with_clinical']:.3f} with the clinical variables")
    return lines
