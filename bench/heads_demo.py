"""The optional heads of issue 16 on an existing trained checkpoint and its database, without retraining.

    .venv/bin/python -m bench.heads_demo [--checkpoint PATH] [--db URL] [--manifest CSV] [--out DIR]
                                         [--clinical age,sex] [--pca K] [--json]

Defaults come from the settings (OSTEO_HOME, OSTEO_DATABASE_URL, OSTEO_DATA_DIR): the database of the
settings; the checkpoint whose SHA-256 the newest training_run row records, found under
<data>/training/; the manifest of that run's snapshot (else the newest snapshot). Prints the fusion AUC
with and without the clinical variables (same folds, same images), BMD and T-score Pearson r and MAE,
and the 3-class accuracy and macro F1 on the test year, and writes the CSV, JSON and PNGs to --out
(default <data>/heads/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from sqlalchemy import select


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_inputs(factory, data_dir: Path, checkpoint: str | None, manifest: str | None) -> tuple[Path, str]:
    """(checkpoint, manifest path): as given, else the newest training run's checkpoint and snapshot."""
    from db.models import Snapshot, TrainingRun

    with factory() as session:
        runs = session.execute(select(TrainingRun.checkpoint_sha256, Snapshot.manifest_path)
                               .join(Snapshot, Snapshot.id == TrainingRun.snapshot_id)
                               .order_by(TrainingRun.id.desc())).all()
        newest_snapshot = session.scalar(select(Snapshot.manifest_path).order_by(Snapshot.id.desc()))
    by_sha = {sha: path for sha, path in reversed(runs) if sha}  # the newest run wins
    if checkpoint is None:
        wanted = next((sha for sha, _ in runs if sha), None)
        found = [p for p in sorted((data_dir / "training").glob("*/fold-*.pth")) if wanted and _sha256(p) == wanted]
        if not found:
            raise SystemExit(f"no checkpoint given and none under {data_dir / 'training'} matches the newest "
                             "training run: pass --checkpoint")
        checkpoint = str(found[0])
    ckpt = Path(checkpoint)
    if manifest is None:
        manifest = by_sha.get(_sha256(ckpt)) or newest_snapshot
        if manifest is None:
            raise SystemExit("no snapshot in the database: run `osteo train` first, or pass --manifest")
    return ckpt, manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.heads_demo", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--checkpoint", help="a trained fold's .pth (default: the newest training run's)")
    p.add_argument("--db", help="SQLAlchemy URL (default: the settings' database)")
    p.add_argument("--manifest", help="the snapshot manifest CSV (default: the checkpoint's training run's)")
    p.add_argument("--out", help="output folder (default: <data>/heads)")
    p.add_argument("--clinical", default="age,sex", help="clinical variables for the fusion (default: age,sex)")
    p.add_argument("--pca", type=int, default=0, help="PCA components of the embedding beside the logit (default 0)")
    p.add_argument("--fit-on", choices=("train", "validation"), default="train",
                   help="fit the heads on every training image, or on the checkpoint's validation fold only")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    from db.session import session_factory
    from osteo.errors import UserError
    from osteo.settings import get_settings
    from osteo.training.heads import heads_report

    settings = get_settings()
    factory = session_factory(args.db or settings.resolved_database_url())
    checkpoint, manifest = find_inputs(factory, Path(settings.data_dir), args.checkpoint, args.manifest)
    out = Path(args.out) if args.out else Path(settings.data_dir) / "heads"
    try:
        rep = heads_report(factory, manifest, checkpoint, out, args.clinical, device=args.device,
                           n_components=args.pca, fit_on=args.fit_on)
    except UserError as exc:
        print(f"refused ({exc.reason}): {exc.detail}", file=sys.stderr)
        return 2
    result = {"checkpoint": str(checkpoint), "manifest": str(manifest), **rep.to_dict()}
    if args.json:
        print(json.dumps(result, default=float))
        return 0
    m = rep.metrics
    print(f"heads on {checkpoint.name} ({int(m['heads_n_fit'])} {args.fit_on} images to fit, "
          f"{int(m['heads_n_test'])} test)")
    if rep.clinical:
        print(f"  AUC image {m['fusion_auc_image']:.3f}  with {'+'.join(rep.clinical)} "
              f"{m['fusion_auc_with_clinical']:.3f}  clinical only {m['fusion_auc_clinical_only']:.3f}")
    print(f"  neck BMD  r {m['bmd_pearson_r']:.3f}  MAE {m['bmd_mae']:.3f} g/cm2 (n {int(m['bmd_n_test'])})")
    print(f"  T-score   r {m['tscore_pearson_r']:.3f}  MAE {m['tscore_mae']:.2f}")
    print(f"  3 classes accuracy {m['class3_accuracy']:.3f}  macro F1 {m['class3_macro_f1']:.3f}  "
          f"confusion {rep.confusion3}")
    print(f"  files in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
