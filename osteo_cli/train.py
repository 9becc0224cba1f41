"""`osteo train`: augmentation, k-fold training, test-year evaluation, MLflow registration (the train flow)."""

from __future__ import annotations

import argparse

from osteo.errors import UserError
from osteo.runtime import configure_environment
from osteo.settings import get_settings
from osteo_cli.output import emit
from osteo_model.config import AMP, AUGMENT, CHANNELS_LAST, DEVICES, PRESETS, SELECT_BY

ARCHS = ("resnet18", "resnet34", "googlenet", "densenet121", "vgg16")


def check_trainable() -> None:
    """Training needs exported images; say so in one line instead of failing inside the flow."""
    from sqlalchemy import func, select

    from db.models import Export
    from db.values import ExportStatus
    from osteo.settings import session_factory

    with session_factory(get_settings(), create=True)() as session:
        exported = session.scalar(select(func.count(Export.id)).where(Export.status == ExportStatus.EXPORTED))
    if not exported:
        raise UserError("nothing_exported", "no exported images to train on yet: run `osteo refresh --dicom DIR "
                        "--dexa DIR --annotations DIR` (or `osteo demo`) first")


def accel_options(args: argparse.Namespace) -> dict[str, str]:
    return {"device": args.device, "amp": args.amp, "channels_last": args.channels_last}


def check_accel(args: argparse.Namespace) -> None:
    """--device/--amp/--channels-last against this machine, before anything else (one line, exit 2)."""
    from osteo_model.accel import check_accel
    from osteo_model.config import get_preset

    try:
        check_accel(get_preset(args.preset, **accel_options(args)))
    except ValueError as exc:
        raise UserError("bad_accel", str(exc)) from None


def check_inputs(args: argparse.Namespace) -> None:
    """The training's inputs checked before any fold trains (a UserError, one line, exit 2)."""
    from osteo.settings import session_factory
    from osteo.training import folds, snapshot
    from osteo.training.clinical import parse_clinical
    from osteo_model.config import get_preset

    config = get_preset(args.preset, **{k: v for k, v in dict(
        arch=args.arch, folds=args.folds, epochs=args.epochs, select_by=args.select_by,
        pretrained_weights=args.pretrained_weights, augment=args.augment, seed=args.seed).items() if v is not None},
        **accel_options(args))
    settings = get_settings()
    with session_factory(settings)() as session:
        exports = snapshot.current_exports(session, args.box_source)
    folds.check_training_inputs(exports, config, args.test_year or settings.test_year)
    parse_clinical(args.clinical)  # an unknown variable or bmi is refused here, in one line


def train(args: argparse.Namespace):
    from osteo.training.clinical import parse_clinical

    check_accel(args)
    check_trainable()
    check_inputs(args)
    configure_environment(get_settings())
    from flows.train import train_flow

    return train_flow(preset=args.preset, arch=args.arch, folds=args.folds, epochs=args.epochs,
                      test_year=args.test_year, select_by=args.select_by,
                      pretrained_weights=args.pretrained_weights, augment=args.augment, seed=args.seed,
                      box_source=args.box_source, register_version=args.register, target_recall=args.target_recall,
                      heads=args.heads, clinical=list(parse_clinical(args.clinical)) or None, **accel_options(args))


def cmd_train(args: argparse.Namespace) -> int:
    report = train(args)
    emit(args, report.to_dict(), report.summary())
    return 0


def _recall(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def train_options(p: argparse.ArgumentParser) -> None:
    demo, paper = PRESETS["demo"], PRESETS["paper"]
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                   help="demo: small and fast on a CPU; paper: the seed study's recipe (default: %(default)s)")
    p.add_argument("--arch", choices=ARCHS,
                   help=f"network, trained from scratch unless --pretrained-weights (default: the preset's, "
                        f"{demo.arch})")
    p.add_argument("--folds", type=int, metavar="K",
                   help=f"cross-validation folds, stratified and grouped by patient; each class needs K patients "
                        f"(default: the preset's, demo {demo.folds}, paper {paper.folds})")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"epochs per fold (default: the preset's, demo {demo.epochs}, paper {paper.epochs})")
    p.add_argument("--test-year", type=int, metavar="YEAR",
                   help="held-out year whose left-femur images are the test set; it needs images of both "
                        "classes, and training uses the years before it (default: OSTEO_TEST_YEAR, "
                        f"{get_settings().test_year})")
    p.add_argument("--select-by", choices=SELECT_BY,
                   help=f"rule for the best epoch and the best fold (default: the preset's, {demo.select_by})")
    p.add_argument("--pretrained-weights", metavar="FILE",
                   help="a local torchvision state dict of the arch to start from; checked before training, "
                        "nothing is downloaded (default: none, random weights)")
    p.add_argument("--augment", choices=AUGMENT,
                   help=f"offline: one recorded copy per training image (the seed's); online: new draws every "
                        f"epoch; none (default: the preset's, demo {demo.augment}, paper {paper.augment})")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, augmentation and weights (default: 0)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the folds train: auto, CUDA when torch sees one, else the CPU (default: %(default)s)")
    p.add_argument("--amp", choices=AMP, default="auto",
                   help="mixed precision: auto, on CUDA the fastest of off/fp16/bf16 measured over a few steps "
                        "(a non-finite loss rules one out), off on the CPU; fp16 needs CUDA (default: %(default)s)")
    p.add_argument("--channels-last", choices=CHANNELS_LAST, default="auto",
                   help="channels-last memory format: auto, measured together with --amp on CUDA, off on the CPU "
                        "(default: %(default)s)")
    p.add_argument("--box-source", choices=("human", "any"), default="human",
                   help="crops a training may use: human, from a person's boxes only; any, the localiser's "
                        "confident boxes too (default: %(default)s)")
    p.add_argument("--target-recall", type=_recall, metavar="R",
                   help="osteoporosis recall the operating threshold aims at: the highest threshold whose "
                        "out-of-fold validation recall is >= R (default: OSTEO_TARGET_RECALL, "
                        f"{get_settings().target_recall})")
    p.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                   help="register the best fold in the MLflow registry as challenger (champion when it beats "
                        "the champion on at least OSTEO_MIN_TEST_IMAGES test images); the same configuration "
                        "on the same snapshot is never registered twice (default: register)")
    p.add_argument("--heads", action="store_true",
                   help="also fit the optional heads on the best fold's frozen features: femoral-neck BMD and "
                        "T-score regression (Pearson r, MAE) and normal/osteopenia/osteoporosis; test-year "
                        "figures on the parent run, the classifier is unchanged (default: off)")
    p.add_argument("--clinical", metavar="VARS",
                   help="comma-separated clinical variables (age, sex; bmi needs height and weight, which the "
                        "DEXA exports do not carry) fused with the image logit; reports the test-year AUC with "
                        "and without them on the same folds, and implies --heads (default: none)")


def register(add) -> None:
    p = add("train", cmd_train, "augmentation, k-fold training, test-year evaluation, MLflow registration")
    train_options(p)
