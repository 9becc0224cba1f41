"""The flows' typed parameters (RefreshOptions, TrainParams): refused when unknown or wrongly typed, by pydantic,
by Prefect before a run and by a deployment's parameter schema; `osteo train`'s options made from the same fields."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from osteo.errors import UserError
from osteo.ingest.options import RefreshOptions
from osteo.training import params as train_params
from osteo.training.params import TrainParams


@pytest.mark.parametrize("make", [
    lambda: TrainParams(epochs="many"),  # type: ignore[arg-type]
    lambda: TrainParams(heads="often"),  # type: ignore[arg-type]
    lambda: TrainParams(preset="nosuch"),  # type: ignore[arg-type]
    lambda: TrainParams(target_recall=1.5),
    lambda: TrainParams(clinical=("age", "weight")),  # type: ignore[arg-type]
    lambda: TrainParams(epoch=2),  # type: ignore[call-arg]  # a misspelt field is refused, not ignored
    lambda: RefreshOptions(dicom_dir="/x"),  # type: ignore[call-arg]  # dexa_dir is required
    lambda: RefreshOptions(dicom_dir="/x", dexa_dir="/y", rehash="often"),  # type: ignore[arg-type]
    lambda: RefreshOptions(dicom_dir="/x", dexa_dir="/y", annotation_dir="/z"),  # type: ignore[call-arg]
], ids=["int", "bool", "choice", "range", "clinical", "unknown", "required", "refresh-bool", "refresh-unknown"])
def test_a_wrong_parameter_is_refused(make):
    with pytest.raises(ValidationError):
        make()


def test_parameters_are_frozen_and_the_defaults_are_the_preset():
    params = TrainParams()
    with pytest.raises(ValidationError):
        params.epochs = 3  # type: ignore[misc]
    from osteo_model.config import PRESETS

    assert params.config() == PRESETS["demo"]
    assert TrainParams(preset="paper", epochs=2, augment="none").config() == PRESETS["paper"].replace(
        epochs=2, augment="none")
    options = RefreshOptions(dicom_dir="/x", dexa_dir="/y")
    assert options.inputs() == {"dicom_dir": "/x", "dexa_dir": "/y", "annotations_dir": None, "column_map_file": None,
                                "annotation_map_file": None, "retry_quarantined": False, "rehash": False}


def test_prefect_refuses_a_wrong_parameter_before_the_run():
    from prefect.exceptions import ParameterTypeError

    from flows.refresh import refresh_flow
    from flows.train import train_flow

    with pytest.raises(ParameterTypeError, match="epochs"):
        train_flow.validate_parameters({"params": {"epochs": "many"}})
    with pytest.raises(ParameterTypeError, match="bogus"):
        train_flow.validate_parameters({"params": {"bogus": 1}})
    with pytest.raises(ParameterTypeError, match="rehash"):
        refresh_flow.validate_parameters({"options": {"dicom_dir": "/x", "dexa_dir": "/y", "rehash": "often"}})
    # a deployment's JSON becomes the object
    assert train_flow.validate_parameters({"params": {"preset": "paper", "clinical": ["age"]}}) == {
        "params": TrainParams(preset="paper", clinical=("age",))}


def test_the_deployment_schema_shows_and_checks_every_field():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate
    from prefect.utilities.schema_tools.validation import ValidationError as SchemaError

    from flows.refresh import refresh_flow
    from flows.train import train_flow

    for flow, name, model in ((train_flow, "params", TrainParams), (refresh_flow, "options", RefreshOptions)):
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        assert schema["properties"][name]["$ref"] == f"#/definitions/{model.__name__}"
        fields = schema["definitions"][model.__name__]["properties"]
        assert set(fields) == set(model.model_fields) and all(f.get("description") for f in fields.values())
    schema = parameter_schema(train_flow.fn).model_dump_for_openapi()
    assert validate({"params": {"preset": "paper", "seed": 0}}, schema, raise_on_error=True) == []
    for bad in ({"epochs": "many"}, {"bogus": 1}, {"amp": "fp8"}):
        with pytest.raises(SchemaError):
            validate({"params": bad}, schema, raise_on_error=True)


def test_the_choices_are_the_training_code_s():
    from osteo.training.clinical import CLINICAL_VARIABLES
    from osteo_model import config
    from osteo_model.models import ARCHS

    assert get_args(train_params.Preset) == tuple(sorted(config.PRESETS))
    assert get_args(train_params.Arch) == ARCHS
    assert get_args(train_params.SelectBy) == config.SELECT_BY
    assert get_args(train_params.Augment) == config.AUGMENT
    assert get_args(train_params.Device) == config.DEVICES
    assert get_args(train_params.Amp) == config.AMP
    assert get_args(train_params.ChannelsLast) == config.CHANNELS_LAST
    assert get_args(train_params.Clinical) == CLINICAL_VARIABLES


def _parsed(*argv: str) -> TrainParams:
    from osteo_cli.main import build_parser
    from osteo_cli.train import train_params as from_args

    return from_args(build_parser().parse_args(["train", *argv]))


def test_the_train_command_s_options_are_the_fields():
    assert _parsed() == TrainParams()
    every = ["--preset", "paper", "--arch", "resnet34", "--folds", "4", "--epochs", "2", "--test-year", "2021",
             "--select-by", "val_auc", "--pretrained-weights", "w.pth", "--augment", "none", "--seed", "3",
             "--box-source", "any", "--no-register", "--target-recall", "0.8", "--heads", "--clinical", "sex, age",
             "--device", "cpu", "--amp", "off", "--channels-last", "off"]
    assert _parsed(*every) == TrainParams(
        preset="paper", arch="resnet34", folds=4, epochs=2, test_year=2021, select_by="val_auc",
        pretrained_weights="w.pth", augment="none", seed=3, box_source="any", register_version=False,
        target_recall=0.8, heads=True, clinical=("sex", "age"), device="cpu", amp="off", channels_last="off")
    for argv, says in ((["--target-recall", "1.5"], "less than or equal to 1"), (["--epochs", "two"], "not an integer"),
                       (["--amp", "fp8"], "invalid choice")):
        with pytest.raises(UserError, match=says) as info:
            _parsed(*argv)
        assert info.value.reason == "bad_option"
