"""`osteo demo --pacs` (osteo_cli/demo_pacs.py): its own Orthanc on 127.0.0.1 loaded with the synthetic hospital,
then pull -> refresh -> the champion -> screen -> push, with the counts, the referral list and the outcomes; run
again, it loads, pulls, screens and pushes nothing new. On a fresh site beside a copy of the audit run's registry,
its classifier pinned by OSTEO_SCREEN_MODEL so that nothing trains (the training path is `osteo demo`'s own)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tests.helpers import isolated_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def site(audit_run, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(audit_run["home"] / "mlruns", home / "mlruns")  # the registry only: a fresh database
    return home, audit_run["ref"].split("/")[1]


def test_the_demo_runs_the_loop_against_its_own_pacs_and_again_finds_nothing_new(site, capsys):
    from osteo_cli.demo_pacs import human
    from osteo_cli.main import main

    home, version = site
    env = {"OSTEO_SCREEN_MODEL": f"models:/osteo-classifier/{version}", "OSTEO_SCREEN_PUSH": "all"}
    with isolated_settings(home, **env):
        assert main(["demo", "--pacs", "--patients", "6", "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert main(["demo", "--pacs", "--patients", "6", "--json"]) == 0
        second = json.loads(capsys.readouterr().out)
    with (home / "data" / "demo-cohort" / "truth.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    in_scope = [r for r in rows if r["expected_scope"] == "in_scope"]
    assert {r["screening"] for r in rows} > {""}  # the demo's hospital has its screening population

    assert first["pacs"]["loaded_now"] == len(rows) and first["pull"]["retrieved"] == len(in_scope)
    assert first["pull"]["out_of_scope"] == 3  # the chest, the knee, the radiograph of no known body part
    assert first["refresh"]["this_run"]["images"] == len(in_scope)
    assert first["model"]["model"] == f"osteo-classifier/{version}" and not first["model"]["trained_now"]
    screened = first["screening"]["this_run"]
    assert screened["images"] == len(in_scope) and screened["screened"] > 0
    assert first["screening"]["pushed"]["sr"] == first["screening"]["pushed"]["sc"] == screened["screened"]
    assert first["pacs"]["instances"] == len(rows) + 2 * screened["screened"]
    assert len(first["referrals"]) == screened["flagged"] and first["outcomes"]["screened"] == screened["screened"]
    text = human(first)
    assert f"{len(in_scope)} retrieved" in text and "referrals" in text and "PPV" in text

    assert (second["pacs"]["loaded_now"], second["pull"]["retrieved"]) == (0, 0)
    assert second["pull"]["already_retrieved"] == len(in_scope)
    assert (second["refresh"]["this_run"]["images"], second["screening"]["this_run"]["images"]) == (0, 0)
    assert second["screening"]["pushed"]["sr"] == 0 and second["pacs"]["instances"] == first["pacs"]["instances"]
