"""The `osteo` command line: --json prints one object, render writes a viewable PNG."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from osteo_cli.main import main


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cohort"
    assert main(["synth", "--out", str(out), "--patients", "8", "--seed", "3"]) == 0
    return out


def test_synth_json(small_cohort, tmp_path, capsys):
    out = tmp_path / "again"
    capsys.readouterr()
    assert main(["synth", "--out", str(out), "--patients", "8", "--seed", "3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["patients"] == 8 and payload["images"] > 0 and (out / "truth.csv").exists()


def test_render_one_dicom(small_cohort, tmp_path, capsys):
    dcm = next(p for p in sorted((small_cohort / "dicom").rglob("*.dcm")) if p.stat().st_size > 10_000)
    png = tmp_path / "whole.png"
    assert main(["render", str(dcm), "--out", str(png), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] and png.exists()
    with Image.open(png) as im:
        assert im.mode == "L" and im.size == (info["cols"], info["rows"]) and not im.info


def test_render_refuses_a_non_dicom_with_a_reason(small_cohort, tmp_path, capsys):
    assert main(["render", str(small_cohort / "dicom" / "README.txt"), "--out", str(tmp_path / "x.png"),
                 "--json"]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload == payload | {"ok": False, "reason": "not_dicom"}
    assert not (tmp_path / "x.png").exists()
