"""A site on the release before migrations (82910aa) upgrades and goes on: `osteo db upgrade` keeps its
audit trail, the old model's lineage still verifies against its files, and the current training trains,
registers and verifies on the upgraded database."""

from __future__ import annotations

import json

import pytest

from tests.db.migration_support import extract_old_release, fill_with_old_release, table_contents

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

OLD_MODEL = {"name": "osteo-classifier", "version": "1", "run_id": "r" * 32, "tags": {}}  # the fill's record


def verify_old_model(settings) -> dict:
    """The old release registered no MLflow model in the fill, so its version is looked up as the registry
    would give it; the lineage (snapshot, exports, source files) is the database's and the files' own."""
    from osteo.lineage import model_lineage, verify_lineage
    from osteo.settings import session_factory

    with session_factory(settings)() as session:
        lineage = model_lineage(session, OLD_MODEL)
    return verify_lineage(lineage)


def test_an_old_release_site_upgrades_then_trains(tmp_path, prefect_harness, capsys):
    from db import make_engine
    from flows.train import train_flow
    from osteo.training.params import TrainParams
    from osteo_cli.main import main
    from tests.helpers import isolated_settings

    home = tmp_path / "home"
    url = f"sqlite:///{home / 'var' / 'osteo.sqlite'}"
    fill_with_old_release(extract_old_release(tmp_path / "old"), home, url, patients=40)
    before = table_contents(make_engine(url))

    # a model name of its own: the old release's version 1 keeps its name and number in the audit trail
    with isolated_settings(home, OSTEO_REGISTERED_MODEL="osteo-after-upgrade") as settings:
        folders = ["--dicom", str(home / "cohort" / "dicom"), "--dexa", str(home / "cohort" / "dexa")]
        assert main(["refresh", *folders, "--json"]) == 2  # refused in one line: the database is behind the code
        refusal = json.loads(capsys.readouterr().out)
        assert refusal["ok"] is False and "osteo db upgrade" in refusal["detail"], refusal

        assert main(["db", "upgrade", "--json"]) == 0
        upgraded = json.loads(capsys.readouterr().out)
        assert upgraded["backup"] and upgraded["stamped"] == "0001"
        assert upgraded["after"] == upgraded["before"]["head"] and upgraded["applied"][0] == "0002"
        after = table_contents(make_engine(url))
        assert {t: c for t, (c, _) in after.items() if t in before} == {t: c for t, (c, _) in before.items()}

        old = verify_old_model(settings)
        assert old["ok"] and old["checked"] > 40 and not old["missing"] and not old["changed"], old

        trained = train_flow(params=TrainParams(preset="demo", epochs=1, folds=2))
        ref = f"osteo-after-upgrade/{trained.registration.model_version}"
        assert main(["lineage", "verify", ref, "--json"]) == 0
        new = json.loads(capsys.readouterr().out)
        assert new["ok"] and new["by_role"]["checkpoint"] == 1, new
        assert verify_old_model(settings)["ok"]  # the new training left the old trail as it was
