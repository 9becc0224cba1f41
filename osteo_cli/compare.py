"""`osteo compare`: the seed's architecture comparison (the compare flow)."""

from __future__ import annotations

import argparse

from osteo.runtime import configure_environment
from osteo.settings import get_settings
from osteo_cli.output import emit
from osteo_cli.train import ARCHS, _recall, check_trainable
from osteo_model.config import PRESETS


def compare(args: argparse.Namespace):
    from osteo.training.compare import parse_archs

    archs = parse_archs(args.archs)  # a bad name is a one-line refusal before anything starts
    check_trainable()
    configure_environment(get_settings())
    from flows.compare import compare_flow

    return compare_flow(archs=list(archs), preset=args.preset, folds=args.folds, epochs=args.epochs, seed=args.seed,
                        register_best=args.register, test_year=args.test_year, box_source=args.box_source,
                        target_recall=args.target_recall)


def cmd_compare(args: argparse.Namespace) -> int:
    report = compare(args)
    emit(args, report.to_dict(), report.summary())
    return 0


def register(add) -> None:
    p = add("compare", cmd_compare, "the seed's architecture comparison: every network on one snapshot and its "
            "folds, one MLflow parent run with the table")
    p.add_argument("--archs", default=",".join(ARCHS),
                   help="comma-separated networks to compare (default: %(default)s)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                   help="demo: small and fast on a CPU; paper: the seed study's recipe (default: %(default)s)")
    p.add_argument("--folds", type=int, help="cross-validation folds, grouped by patient (default: the preset's)")
    p.add_argument("--epochs", type=int, help="epochs per fold (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, augmentation and weights (default: 0)")
    p.add_argument("--test-year", type=int, help="held-out year of left-femur images (default: OSTEO_TEST_YEAR, 2022)")
    p.add_argument("--box-source", choices=("human", "any"), default="human",
                   help="crops used: a person's boxes only, or the localiser's confident boxes too "
                        "(default: %(default)s)")
    p.add_argument("--target-recall", type=_recall, metavar="R",
                   help="osteoporosis recall each architecture's operating threshold is chosen for on its "
                        "out-of-fold validation (default: OSTEO_TARGET_RECALL, 0.90)")
    p.add_argument("--register", action="store_true",
                   help="register the best architecture (chosen on validation) through the champion gate "
                        "(default: off)")
