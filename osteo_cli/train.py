"""`osteo train`: augmentation, k-fold training, test-year evaluation, MLflow registration (the train flow)."""

from __future__ import annotations

import argparse

from osteo.errors import UserError
from osteo.runtime import configure_environment
from osteo.settings import get_settings
from osteo_cli.output import emit
from osteo_model.config import AUGMENT, PRESETS, SELECT_BY

ARCHS = ("resnet18", "resnet34", "googlenet", "densenet121", "vgg16")


def check_trainable() -> None:
    """Training needs exported images; say so in one line instead of failing inside the flow."""
    from sqlalchemy import func, select

    from db.models import Export
    from osteo.settings import session_factory

    with session_factory(get_settings(), create=True)() as session:
        exported = session.scalar(select(func.count(Export.id)).where(Export.status == "exported"))
    if not exported:
        raise UserError("nothing_exported", "no exported images to train on yet: run `osteo refresh --dicom DIR "
                        "--dexa DIR --annotations DIR` (or `osteo demo`) first")


def train(args: argparse.Namespace):
    check_trainable()
    configure_environment(get_settings())
    from flows.train import train_flow

    return train_flow(preset=args.preset, arch=args.arch, folds=args.folds, epochs=args.epochs,
                      test_year=args.test_year, select_by=args.select_by,
                      pretrained_weights=args.pretrained_weights, augment=args.augment, seed=args.seed,
                      box_source=args.box_source)


def cmd_train(args: argparse.Namespace) -> int:
    report = train(args)
    emit(args, report.to_dict(), report.summary())
    return 0


def train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                   help="demo: small and fast on a CPU; paper: the seed study's recipe (default: %(default)s)")
    p.add_argument("--arch", choices=ARCHS, help="network (default: the preset's, resnet18)")
    p.add_argument("--folds", type=int, help="cross-validation folds, grouped by patient (default: the preset's)")
    p.add_argument("--epochs", type=int, help="epochs per fold (default: the preset's)")
    p.add_argument("--test-year", type=int, help="held-out year of left-femur images (default: OSTEO_TEST_YEAR, 2022)")
    p.add_argument("--select-by", choices=SELECT_BY,
                   help="rule for the best epoch and the best fold (default: the preset's, val_loss)")
    p.add_argument("--pretrained-weights", metavar="FILE",
                   help="a local torchvision state dict to start from (nothing is downloaded; default: none)")
    p.add_argument("--augment", choices=AUGMENT,
                   help="offline: one recorded copy per training image (the seed's); online: new draws every "
                        "epoch; none (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, augmentation and weights (default: 0)")
    p.add_argument("--box-source", choices=("human", "any"), default="human",
                   help="crops a training may use: human, from a person's boxes only; any, the localiser's "
                        "confident boxes too (default: %(default)s)")


def register(add) -> None:
    p = add("train", cmd_train, "augmentation, k-fold training, test-year evaluation, MLflow registration")
    train_options(p)
