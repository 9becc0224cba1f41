"""`osteo users` and `osteo tokens` (issue 26), and `osteo lineage predictions --user`: each with --json,
user errors in one line with exit 2, secrets never stored."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select

from osteo_cli.main import main
from tests.helpers import isolated_settings


@pytest.fixture
def home(tmp_path):
    with isolated_settings(tmp_path) as settings:
        yield settings


def run_json(capsys, monkeypatch, *argv: str, stdin: str = "") -> tuple[int, dict]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1, out
    return code, json.loads(out[0])


def test_users_add_list_disable_reset(home, capsys, monkeypatch):
    from db.access import Account
    from osteo.settings import session_factory

    ok = "a long enough password\n"
    assert run_json(capsys, monkeypatch, "users", "add", "ana", "--role", "audit", "--password-stdin", stdin=ok) == (
        0, {"ok": True, "user": "ana", "role": "audit"})
    code, again = run_json(capsys, monkeypatch, "users", "add", "ana", "--role", "audit", "--password-stdin", stdin=ok)
    assert code == 2 and again["reason"] == "user_exists"
    code, weak = run_json(capsys, monkeypatch, "users", "add", "bo", "--role", "admin", "--password-stdin",
                          stdin="short\n")
    assert code == 2 and weak["reason"] == "weak_password"
    code, bad = run_json(capsys, monkeypatch, "users", "add", "bo", "--role", "boss", "--password-stdin", stdin=ok)
    assert code == 2 and bad["reason"] == "bad_option"
    code, users = run_json(capsys, monkeypatch, "users", "list")
    assert code == 0 and [(u["name"], u["role"], u["disabled"]) for u in users["users"]] == [("ana", "audit", False)]
    with session_factory(home)() as session:
        stored = session.scalar(select(Account.password_hash))
    assert stored.startswith("$argon2id$") and "long enough" not in stored
    assert run_json(capsys, monkeypatch, "users", "disable", "ana")[1]["disabled"] is True
    code, reset = run_json(capsys, monkeypatch, "users", "reset", "ana", "--password-stdin",
                           stdin="another good one!\n")
    assert code == 0 and reset["disabled"] is False
    code, none = run_json(capsys, monkeypatch, "users", "disable", "nobody")
    assert code == 2 and none["reason"] == "no_such_user"


def test_tokens_create_list_revoke(home, capsys, monkeypatch):
    from db.access import ApiToken
    from osteo.settings import session_factory

    code, made = run_json(capsys, monkeypatch, "tokens", "create", "lis", "--role", "screening", "--expires", "30")
    assert code == 0 and made["token"].startswith("osteo_") and made["expires_at"]
    with session_factory(home)() as session:
        assert made["token"] not in {session.scalar(select(ApiToken.secret_sha256))}
    code, listed = run_json(capsys, monkeypatch, "tokens", "list")
    assert [(t["name"], t["role"], t["state"]) for t in listed["tokens"]] == [("lis", "screening", "active")]
    assert "token" not in listed["tokens"][0] and made["token"] not in json.dumps(listed)
    assert run_json(capsys, monkeypatch, "tokens", "revoke", "lis")[1]["revoked"] is True
    assert run_json(capsys, monkeypatch, "tokens", "list")[1]["tokens"][0]["state"] == "revoked"
    code, again = run_json(capsys, monkeypatch, "tokens", "create", "lis", "--role", "audit")
    assert code == 2 and again["reason"] == "token_exists"
    code, bad = run_json(capsys, monkeypatch, "tokens", "create", "x", "--role", "audit", "--expires", "-1")
    assert code == 2 and bad["reason"] == "bad_option"


def test_lineage_predictions_by_user(home, capsys, monkeypatch):
    from db.models import PredictionAudit
    from osteo.settings import session_factory

    row = {"channel": "api", "model_name": "osteo-classifier", "model_version": "3", "input_sha256": "0" * 64,
           "input_kind": "png", "box_source": "model", "probability": 0.7, "label": 1, "threshold": 0.5}
    with session_factory(home, create=True).begin() as session:
        session.add_all([PredictionAudit(**row, asked_by="ana"), PredictionAudit(**row, asked_by="token:lis"),
                         PredictionAudit(**row)])
    code, out = run_json(capsys, monkeypatch, "lineage", "predictions", "--user", "token:lis")
    assert code == 0 and out["count"] == 1 and out["predictions"][0]["asked_by"] == "token:lis"
    assert run_json(capsys, monkeypatch, "lineage", "predictions")[1]["count"] == 3
    assert main(["lineage", "predictions", "--user", "ana"]) == 0
    assert "ana" in capsys.readouterr().out
