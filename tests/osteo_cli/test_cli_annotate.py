"""`osteo annotate worklist` and `osteo refresh --annotation-map`: the summary, --json, and each mistake
as one line (exit 2) before any database or Prefect is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from osteo_cli.main import main
from tests.helpers import isolated_settings


@pytest.fixture
def home(tmp_path):
    with isolated_settings(tmp_path / "home", OSTEO_WORKERS="1"):
        yield tmp_path / "home"


def refused(capsys, argv: list[str], reason: str) -> str:
    """The human line and the --json object of one mistake; returns the detail."""
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1 and out.err.startswith("osteo: ")
    assert main([*argv, "--json"]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["reason"] == reason, payload
    assert out.err.strip() == f"osteo: {payload['detail']}"
    return payload["detail"]


def test_worklist_with_no_database_yet_writes_nothing_and_says_so(home, tmp_path, capsys):
    out = tmp_path / "wl"
    assert main(["annotate", "worklist", "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload == {"ok": True, "out_dir": str(out.resolve()), "max_size": 1024, "waiting": 0, "written": 0,
                       "proposals": 0, "kept": 0, "unrenderable": {}}
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt"]
    assert main(["annotate", "worklist", "--out", str(out), "--max-size", "0"]) == 0
    text = capsys.readouterr().out
    assert "0 PNGs (full size) of 0 images waiting for a box" in text and "LabelImg" not in text


def test_worklist_mistakes_are_one_line(home, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    assert "is a file" in refused(capsys, ["annotate", "worklist", "--out", str(tmp_path / "a-file")], "not_a_folder")
    assert "at least 64" in refused(capsys, ["annotate", "worklist", "--out", str(tmp_path / "wl"),
                                             "--max-size", "10"], "bad_max_size")
    refused(capsys, ["annotate", "worklist", "--out", str(tmp_path / "wl"), "--max-size", "-1"], "bad_option")
    refused(capsys, ["annotate", "worklist"], "bad_option")
    assert not (tmp_path / "wl").exists() and not (home / "var").exists()  # refused before the database


@pytest.fixture
def folders(tmp_path):
    for name in ("dicom", "dexa", "ann"):
        (tmp_path / name).mkdir()
    return tmp_path


def test_refresh_refuses_a_bad_annotation_map_before_prefect(home, folders, capsys, monkeypatch):
    def no_flow(*args, **kwargs):
        raise AssertionError("the refresh flow must not start")

    monkeypatch.setattr("osteo_cli.pipeline.configure_environment", no_flow)
    base = ["refresh", "--dicom", str(folders / "dicom"), "--dexa", str(folders / "dexa")]
    refused(capsys, [*base, "--annotation-map", str(folders / "map.csv")], "annotation_map_without_annotations")
    with_ann = [*base, "--annotations", str(folders / "ann"), "--annotation-map"]
    assert str(folders / "none.csv") in refused(capsys, [*with_ann, str(folders / "none.csv")], "no_such_file")
    (folders / "map.csv").write_text("hip_0012.png,1.2.3\n")
    assert "header" in refused(capsys, [*with_ann, str(folders / "map.csv")], "annotation_map_no_header")
    (folders / "map.json").write_text("[1, 2]")
    refused(capsys, [*with_ann, str(folders / "map.json")], "annotation_map_not_an_object")


def test_the_real_command_lists_annotate_and_refuses_in_one_line(tmp_path):
    """As a user runs it: a subprocess with none of the session's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSTEO_", "MLFLOW_", "PREFECT_"))}
    env.update({"OSTEO_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect")})
    run = subprocess.run([sys.executable, "-m", "osteo_cli.main", "annotate", "worklist", "--out", str(tmp_path),
                          "--max-size", "5", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr == "", run.stderr
    assert json.loads(run.stdout)["reason"] == "bad_max_size"
    helped = subprocess.run([sys.executable, "-m", "osteo_cli.main", "annotate", "worklist", "--help"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--max-size PX" in helped.stdout and "default: 1024" in helped.stdout
