"""`osteo demo --pacs`: the screening loop on the embedded defaults, against a PACS of its own.

Orthanc (Debian's, started as the tests start it: bench/orthanc.py) listens on 127.0.0.1 with its storage in
`<data>/demo-pacs`, loaded once with the synthetic hospital's files (`<data>/demo-cohort`, the demo's, with its
screening population); then one night: pull the hip radiographs into the inbox -> refresh the inbox -> the
champion classifier (trained first, as `osteo demo` trains, when none is registered) -> screen -> push the SR and
SC (OSTEO_SCREEN_PUSH) into the patients' studies; and what it did: the pull's and screening's counts, the
referral list and the outcomes against the DEXA that followed. Orthanc stops when the demo ends; its storage stays,
so that the next `osteo demo --pacs` pulls, screens and pushes nothing new."""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

from osteo.errors import UserError
from osteo.settings import get_settings, session_factory, settings_from
from osteo_cli.output import emit

REFERRALS_SHOWN = 15  # lines of the referral list in the summary (--json has them all)


def cmd_demo_pacs(args: argparse.Namespace) -> int:
    from bench.orthanc import OrthancMissing, check_installed, start_orthanc
    from osteo_cli.pipeline import demo_cohort

    try:
        check_installed()
    except OrthancMissing as exc:
        raise UserError("orthanc_missing", str(exc)) from None
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    cohort = demo_cohort(args)
    rows = _truth(cohort)
    folder = _pacs_folder(cohort)
    clock.lap("synth_s")
    with start_orthanc(folder) as orthanc, settings_from(orthanc.env("dicomweb")):
        loaded = _load_once(orthanc, cohort, rows, folder)
        clock.lap("pacs_load_s")
        payload = run_night(args, cohort, rows, clock)
        payload["pacs"] = {"server": "Orthanc", "dicomweb_url": orthanc.dicomweb_url, "folder": str(folder),
                           "loaded_now": loaded, "instances": orthanc.instance_count()}
    payload["timings"] = timings
    emit(args, payload, human(payload))
    return 0


def run_night(args: argparse.Namespace, cohort: Path, rows: list[dict], clock) -> dict[str, Any]:
    """pull -> refresh -> champion (trained when none) -> screen and push -> referrals and outcomes."""
    from osteo.pacs.pull import pull_from_settings
    from osteo.screening.referrals import list_referrals
    from osteo_cli.pipeline import refresh
    from osteo_cli.screen import outcomes_of, run_screen

    settings = get_settings()
    factory = session_factory(settings, create=True)
    days = sorted(r["study_date"] for r in rows)  # every study of the hospital
    pulled = pull_from_settings(settings, factory, since=days[0], until=days[-1])
    clock.lap("pull_s")
    refreshed = refresh(str(settings.pacs_inbox), str(cohort / "dexa"), str(cohort / "annotations"))
    clock.lap("refresh_s")
    name, version, model = champion_or_train(args, cohort)
    clock.lap("train_s")
    with settings_from({"OSTEO_SCREEN_MODEL": f"models:/{name}/{version}"}):
        screened = run_screen()
        clock.lap("screen_s")
        referrals = [r.to_dict() for r in list_referrals(factory, positive=True)]
        outcomes = outcomes_of(get_settings(), factory, name, version)
    return {"pull": pulled.to_dict() if pulled else None, "refresh": refreshed.to_dict(), "model": model,
            "screening": screened.to_dict(), "screening_summary": screened.summary(), "referrals": referrals,
            "outcomes": outcomes.to_dict(), "outcomes_summary": _outcomes_summary(outcomes)}


def champion_or_train(args: argparse.Namespace, cohort: Path) -> tuple[str, str, dict[str, Any]]:
    """The champion classifier when one is registered (OSTEO_SCREEN_MODEL), else the challenger (the newest
    version, which the gate did not promote: an earlier demo's); with neither, trained as `osteo demo` trains it
    (the localiser, the refresh that boxes what nobody boxed, the classifier), and the version it registered."""
    from osteo_cli.pipeline import refresh
    from osteo_cli.roi import train_roi
    from osteo_cli.train import train
    from osteo_mlflow.serving import registry_client, resolve_version

    settings = get_settings()
    for uri in (settings.screen_model, f"models:/{settings.registered_model}@challenger"):
        found = resolve_version(registry_client(settings), uri)
        if found is not None:
            return found[0], found[1], {"model": "/".join(found), "trained_now": False, "screen_model": uri}
    train_roi(seed=args.seed)
    refresh(str(settings.pacs_inbox), str(cohort / "dexa"), str(cohort / "annotations"))
    args.heads, args.clinical = True, args.clinical or "age,sex"
    reg = train(args).registration
    if reg.model_version is None:
        raise UserError("nothing_registered", f"the training registered no {reg.model_name} version to screen with "
                        f"({reg.decision}); see its run in `osteo ui`")
    return reg.model_name, reg.model_version, {"model": f"{reg.model_name}/{reg.model_version}", "trained_now": True,
                                               "champion": bool(reg.champion), "decision": reg.decision}


class _Clock:
    def __init__(self, timings: dict[str, float]):
        self.timings, self.t = timings, time.perf_counter()

    def lap(self, key: str) -> None:
        now = time.perf_counter()
        self.timings[key] = round(now - self.t, 2)
        self.t = now


def _truth(cohort: Path) -> list[dict]:
    with (cohort / "truth.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _pacs_folder(cohort: Path) -> Path:
    """The demo PACS's folder; emptied when it was loaded from another cohort than this one."""
    folder = Path(get_settings().data_dir) / "demo-pacs"
    stamp = folder / "loaded-from"
    if stamp.exists() and stamp.read_text() != _digest(cohort):
        shutil.rmtree(folder)
    return folder


def _digest(cohort: Path) -> str:
    return hashlib.sha256((cohort / "truth.csv").read_bytes()).hexdigest()


def _load_once(orthanc, cohort: Path, rows: list[dict], folder: Path) -> int:
    """Every file of the hospital (truth.csv: the hip films and the films out of scope) into Orthanc, the first
    time; the number loaded now."""
    stamp = folder / "loaded-from"
    if stamp.exists():
        return 0
    n = len(orthanc.load(cohort / r["file"] for r in rows))
    stamp.write_text(_digest(cohort))
    return n


def _outcomes_summary(outcomes) -> str:
    from osteo_cli.screen import summary

    return summary(outcomes)


def human(p: dict[str, Any]) -> str:
    from osteo_cli.screen import referral_line

    pacs, pull, model = p["pacs"], p["pull"], p["model"]
    how = (f"registered before: {model['screen_model']}" if not model["trained_now"] else
           "trained now, champion" if model["champion"] else f"trained now, not champion: {model['decision']}")
    lines = [f"PACS            Orthanc on 127.0.0.1, DICOMweb {pacs['dicomweb_url']}: {pacs['instances']} instances "
             f"({pacs['loaded_now']} loaded now from the synthetic hospital)",
             f"pulled          {pull['found']} instances found, {pull['retrieved']} retrieved, "
             f"{pull['already_retrieved']} already retrieved, {pull['out_of_scope']} out of scope, into {pull['into']}",
             f"refresh         {p['refresh']['this_run']['images']} new images ingested",
             f"model           {model['model']} ({how})",
             p["screening_summary"], "",
             f"referrals       {len(p['referrals'])} flagged films (no names: the PACS shows the patient)"]
    lines += ["  " + referral_line(r) for r in p["referrals"][:REFERRALS_SHOWN]]
    if len(p["referrals"]) > REFERRALS_SHOWN:
        lines.append(f"  ... {len(p['referrals']) - REFERRALS_SHOWN} more: osteo screen list --positive")
    lines += ["", p["outcomes_summary"], "",
              f"Orthanc stopped; its storage stays in {pacs['folder']} (the next `osteo demo --pacs` pulls, "
              "screens and pushes nothing new)"]
    return "\n".join(lines)
