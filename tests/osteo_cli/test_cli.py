"""The `osteo` command line: --json prints one object, render writes a viewable PNG."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
from PIL import Image

from osteo_cli.main import build_parser, main
from osteo_cli.output import refuse


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
    scope = [r["expected_scope"] for r in csv.DictReader(open(out / "truth.csv", encoding="utf-8"))]
    assert payload["images"] == scope.count("in_scope") and payload["unknown_body_part"] == scope.count(
        "unknown_body_part")
    assert payload["out_of_scope"] == len(scope) - payload["images"] - payload["unknown_body_part"] > 0


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


def parsers(parser: argparse.ArgumentParser, path: str = "osteo"):
    """(command path, parser) of the top level and every subcommand, nested ones included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def test_every_option_says_what_it_does_and_its_default():
    missing, no_default, commands = [], [], []
    for path, parser in parsers(build_parser()):
        commands.append(path)
        parser.format_help()  # renders (a %(default)s that does not expand would raise here)
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            name = f"{path} {'/'.join(action.option_strings)}"
            if not action.help or action.help == argparse.SUPPRESS or not action.help.strip():
                missing.append(name)
            elif (action.default not in (None, False, argparse.SUPPRESS) and not action.required
                  and "default" not in action.help):
                no_default.append(name)
    assert {"osteo synth", "osteo refresh", "osteo train", "osteo ui", "osteo lineage model"} <= set(commands)
    assert missing == [] and no_default == [], {"without help": missing, "default not said": no_default}


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["ui", "--help"], ["lineage", "model", "--help"]])
def test_help_prints_and_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: osteo")
    assert "--json" in out if len(argv) > 1 else all(c in out for c in ("synth", "refresh", "train", "ui"))


def test_a_user_error_is_one_line_even_when_its_message_is_not(capsys):
    assert refuse(False, "unknown_model", "no such model:\n  osteo-classifier\n") == 2
    captured = capsys.readouterr()
    assert captured.err == "osteo: no such model: osteo-classifier\n" and captured.out == ""
    assert refuse(True, "unknown_model", "a\nb") == 2
    assert json.loads(capsys.readouterr().out) == {"ok": False, "reason": "unknown_model", "detail": "a b"}
