"""`osteo screen list | outcomes` on the command line: --json and --csv, user errors in one line with exit 2
(in this process: the screening flow itself is tests/flows/test_flow_screen.py)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from osteo_cli.main import main
from tests.helpers import isolated_settings


@pytest.fixture
def home(tmp_path):
    with isolated_settings(tmp_path) as settings:
        yield settings


def one_json(capsys) -> dict:
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_list_of_an_empty_database(home, capsys):
    assert main(["screen", "list", "--json"]) == 0
    assert one_json(capsys) == {"results": [], "count": 0}
    assert main(["screen", "list", "--csv", "--positive"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["study_instance_uid", "accession_number", "study_date", "side", "probability", "flagged", "model",
                     "model_version", "screened_at"]]


@pytest.mark.parametrize("argv, reason", [
    (["screen", "list", "--since", "2024-02-30"], "bad_date"),
    (["screen", "outcomes"], "no_champion"),
    (["screen", "--push", "sometimes"], "bad_option"),
])
def test_user_errors_are_one_line(home, capsys, argv, reason):
    assert main([*argv, "--json"]) == 2
    assert one_json(capsys)["reason"] == reason
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("osteo: ")
