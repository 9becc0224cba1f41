"""`osteo roi locate` says what the localiser it used learned from: its registered version's `trained_on`
tag (osteo_mlflow/roi.py register_localiser), and "not known" (null), never "real", for a version without
one. A real MLflow store in tmp_path; the localiser is untrained (what it finds is not the point)."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np

from osteo.etl.synthetic import DEMO_NOTICE
from osteo_cli.main import main
from tests.dicom_factory import make_dicom
from tests.helpers import isolated_settings


def _register(c, s, folder, synthetic_images: int):
    """An untrained localiser registered as `osteo-roi` from a dataset of 6 images, `synthetic_images` of them
    synthetic (no test views to score the champion on again: each new version becomes champion)."""
    import torch

    from osteo.localiser.training import RoiDataset, RoiEvaluation
    from osteo_mlflow.client import experiment_id
    from osteo_mlflow.roi import register_localiser
    from osteo_model.roi import RoiConfig, build_localiser
    from osteo_model.roi_train import save_localiser

    torch.manual_seed(0)
    config = RoiConfig(input_size=32, width=4)
    checkpoint = save_localiser(build_localiser(config), config, folder / "localiser.pth")
    views = folder / "views.npz"
    np.savez(views, test_x=np.zeros((0, 32, 32), np.float16))
    dataset = RoiDataset(path=str(views), digest="d" * 64, input_size=32, test_year=2022, n_train=4, n_val=1,
                         n_test=0, n_images=6, pelvis_views=0, synthetic_images=synthetic_images)
    run = c.create_run(experiment_id(c, s, s.roi_experiment)).info.run_id
    evaluation = RoiEvaluation(metrics={"mean_iou": 0.5, "n": 1.0}, ms_per_view=1.0, seconds=1.0)
    return register_localiser(c, s, str(checkpoint), evaluation, dataset, run)


def locate(capsys, *args: str) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["roi", "locate", *args, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert main(["roi", "locate", *args]) == 0
    return payload, capsys.readouterr().out


def test_roi_locate_says_what_the_localiser_learned_from(tmp_path, capsys):
    from osteo_mlflow.client import client

    image = tmp_path / "hip.dcm"
    make_dicom(image, rows=96, cols=80)
    with isolated_settings(tmp_path / "home") as s:
        c = client(s)
        first = _register(c, s, tmp_path / "v1", synthetic_images=0)
        assert first.model_version == "1" and first.trained_on == "real"
        second = _register(c, s, tmp_path / "v2", synthetic_images=6)
        assert second.model_version == "2" and second.champion and second.trained_on == "synthetic"
        tags = c.get_model_version(s.roi_model, "2").tags
        assert (tags["trained_on"], tags["synthetic_images"]) == ("synthetic", "6")

        payload, summary = locate(capsys, str(image))  # the champion, version 2
        assert payload["model"] == f"{s.roi_model}/2" and payload["trained_on"] == "synthetic"
        assert payload["synthetic_training"] is True and payload["notice"] == DEMO_NOTICE
        assert DEMO_NOTICE in summary

        payload, summary = locate(capsys, str(image), "--model", f"models:/{s.roi_model}/1")
        assert (payload["trained_on"], payload["synthetic_training"], payload["notice"]) == ("real", False, None)
        assert DEMO_NOTICE not in summary

        c.delete_model_version_tag(s.roi_model, "1", "trained_on")  # as a version registered before the tag
        payload, summary = locate(capsys, str(image), "--model", f"models:/{s.roi_model}/1")
        assert payload["trained_on"] is None and payload["synthetic_training"] is None
        assert "not known" in summary and DEMO_NOTICE not in summary


def test_roi_registration_is_said_once_in_osteos_words(tmp_path, capfd):
    """MLflow's "Successfully registered model", "Created version" and its coloured input_example warning
    are not shown; the summary says which alias the version has, and why (issue 23, item 8)."""
    from osteo.localiser.training import _registered_line
    from osteo_mlflow.client import client
    from osteo_mlflow.roi import _gate

    with isolated_settings(tmp_path / "home") as s:
        c = client(s)
        capfd.readouterr()
        with warnings.catch_warnings(record=True) as caught:  # pytest would record them, not print them
            warnings.simplefilter("always")
            first = _register(c, s, tmp_path / "v1", synthetic_images=0)
        out, err = capfd.readouterr()
        said = out + err + "\n".join(str(w.message) for w in caught)
        for noise in ("Successfully registered", "Created version", "input example"):
            assert noise not in said, (noise, said)
        assert str(c.get_model_version_by_alias(s.roi_model, "champion").version) == "1"

    assert _registered_line(first) == (f"registered      {s.roi_model} version 1, now champion: the first "
                                       "version registered")
    promote, why = _gate(0.4, 0.5, "1")
    kept = replace(first, model_version="2", champion=False, champion_version="1", decision=why)
    assert not promote and _registered_line(kept) == (
        f"registered      {s.roi_model} version 2 as challenger; champion stays version 1: its test mean IoU "
        "0.4000 does not beat version 1's 0.5000")
