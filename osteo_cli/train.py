"""`osteo train`: augmentation, k-fold training, test-year evaluation, MLflow registration (the train flow)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError

from osteo.errors import UserError
from osteo.runtime import configure_environment
from osteo.settings import get_settings
from osteo.training.params import Arch, TrainParams
from osteo_cli.output import emit
from osteo_model.config import PRESETS

ARCHS: tuple[str, ...] = get_args(Arch)


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


def train_params(args: argparse.Namespace) -> TrainParams:
    """The training the options ask for: TrainParams's fields, read from their options (built from the
    same fields by train_options); --clinical's comma-separated names parsed."""
    from osteo.training.clinical import parse_clinical

    values = {name: getattr(args, name) for name in TrainParams.model_fields}
    values["clinical"] = parse_clinical(args.clinical)  # an unknown variable or bmi is refused here, in one line
    try:
        return TrainParams(**values)
    except ValidationError as exc:  # argparse checked each option already; a rule across options, if any
        error = exc.errors()[0]
        raise UserError("bad_option", f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None


def check_accel(params: TrainParams) -> None:
    """--device/--amp/--channels-last against this machine, before anything else (one line, exit 2)."""
    from osteo_model.accel import check_accel

    try:
        check_accel(params.config())
    except ValueError as exc:
        raise UserError("bad_accel", str(exc)) from None


def check_inputs(params: TrainParams) -> None:
    """The training's inputs checked before any fold trains (a UserError, one line, exit 2)."""
    from osteo.settings import session_factory
    from osteo.training import folds, snapshot

    settings = get_settings()
    with session_factory(settings)() as session:
        exports = snapshot.current_exports(session, params.box_source)
    folds.check_training_inputs(exports, params.config(), params.test_year or settings.test_year)


def train(args: argparse.Namespace):
    params = train_params(args)
    check_accel(params)
    check_trainable()
    check_inputs(params)
    configure_environment(get_settings())
    from flows.train import train_flow

    return train_flow(params=params)


def cmd_train(args: argparse.Namespace) -> int:
    report = train(args)
    emit(args, report.to_dict(), report.summary())
    return 0


def _recall(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


# What the command line adds to TrainParams's fields: a flag other than --<field>, a metavar, and the default
# a person reads where the field's None stands for the preset's or a setting's value.
FLAGS = {"register_version": "--register"}
METAVARS = {"folds": "K", "epochs": "N", "test_year": "YEAR", "pretrained_weights": "FILE", "target_recall": "R",
            "clinical": "VARS"}


def shown_defaults() -> dict[str, str]:
    demo, paper, settings = PRESETS["demo"], PRESETS["paper"], get_settings()
    return {"arch": f"the preset's, {demo.arch}", "folds": f"the preset's, demo {demo.folds}, paper {paper.folds}",
            "epochs": f"the preset's, demo {demo.epochs}, paper {paper.epochs}",
            "test_year": f"OSTEO_TEST_YEAR, {settings.test_year}", "select_by": f"the preset's, {demo.select_by}",
            "pretrained_weights": "none, random weights",
            "augment": f"the preset's, demo {demo.augment}, paper {paper.augment}",
            "target_recall": f"OSTEO_TARGET_RECALL, {settings.target_recall}", "register_version": "register",
            "heads": "off", "clinical": "none; comma-separated, e.g. age,sex; implies --heads"}


def train_options(p: argparse.ArgumentParser) -> None:
    """One option per TrainParams field, its choices, type and help from the field."""
    shown = shown_defaults()
    for name, field in TrainParams.model_fields.items():
        help_text = re.sub(r" \(none: [^)]*\)$", "", field.description or "")
        help_text += f" (default: {shown.get(name, '%(default)s')})"
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        p.add_argument(flag, dest=name, help=help_text, **_option_kind(name, field.annotation, field.default))


def _option_kind(name: str, annotation: Any, default: Any) -> dict[str, Any]:
    """argparse's action, choices or type for a field: bool a switch (on by default: --no-X too), a Literal
    its choices, a number parsed and checked by the field's own rules; a tuple (--clinical) is read as text."""
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction if default else "store_true", "default": default}
    if get_origin(annotation) is tuple:
        return {"default": None, "metavar": METAVARS.get(name)}
    optional = get_origin(annotation) in (Union, UnionType)
    kind = next(a for a in get_args(annotation) if a is not type(None)) if optional else annotation
    if get_origin(kind) is Literal:
        return {"choices": get_args(kind), "default": default}
    if kind in (int, float):
        return {"type": _parsed_by(name, kind), "default": default, "metavar": METAVARS.get(name)}
    return {"default": default, "metavar": METAVARS.get(name)}


def _parsed_by(name: str, kind: type) -> Callable[[str], Any]:
    """An option's text as the field's type, checked by the field's own rules (target_recall in (0, 1])."""
    def parse(text: str) -> Any:
        try:
            return getattr(TrainParams.model_validate({name: kind(text)}), name)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{text}: {exc.errors()[0]['msg']}") from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} is not {'an integer' if kind is int else 'a number'}") from None
    return parse


def register(add) -> None:
    p = add("train", cmd_train, "augmentation, k-fold training, test-year evaluation, MLflow registration")
    train_options(p)
