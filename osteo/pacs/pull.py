"""`osteo pacs pull`: the hip and pelvis radiographs of a date range, from the PACS into the inbox.

Find the studies of the range with a radiograph (CR, DX: the scope's modalities), their series, and keep the
series the refresh would take (found.py); of those, retrieve the instances not yet held (db/pacs.py), each
written atomically and recorded after its write, every RECORD_EVERY files and when the pull stops, whatever
stops it. So a second night fetches nothing twice and a killed pull, run again, fetches only the rest."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from db.pacs import Retrieved, already_held, record_instances
from osteo.errors import UserError
from osteo.pacs.found import SeriesFound, out_of_scope_reason
from osteo.pacs.inbox import file_instance, sweep_stale_temporaries
from osteo.pacs.target import PacsTarget, pacs_target

RECORD_EVERY = 25  # files written between two records: a kill refetches at most these


@dataclass(frozen=True)
class PullCounts:
    """Instances: found (every instance of every series the query found) = retrieved + already_retrieved +
    out_of_scope (+ unlisted: the instances of out-of-scope series whose count the PACS did not give)."""

    transport: str
    pacs: str
    since: str
    until: str
    into: str
    series_found: int = 0
    series_in_scope: int = 0
    found: int = 0
    retrieved: int = 0
    already_retrieved: int = 0
    out_of_scope: int = 0
    out_of_scope_by_reason: dict[str, int] = field(default_factory=dict)  # series by reason

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.out_of_scope_by_reason.items())) or "none"
        return (f"pulled from {self.pacs} ({self.transport}), studies of {self.since} to {self.until}, into "
                f"{self.into}\n  {self.series_found} series found, {self.series_in_scope} in scope; instances: "
                f"{self.found} found, {self.retrieved} retrieved, {self.already_retrieved} already retrieved, "
                f"{self.out_of_scope} out of scope (series out of scope: {reasons})")


def parse_date(value: dt.date | str | None, option: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError("bad_date", f"{option} {value!r} is not a date: write it as YYYY-MM-DD") from None


def date_window(since: dt.date | str | None, until: dt.date | str | None, lookback_days: int,
                today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The studies' date range: until today, since `lookback_days` before `until`, unless given."""
    until = parse_date(until, "--until") or today or dt.date.today()
    since = parse_date(since, "--since") or until - dt.timedelta(days=lookback_days)
    if since > until:
        raise UserError("bad_dates", f"--since {since} is after --until {until}")
    return since, until


def open_transport(target: PacsTarget) -> AbstractContextManager:
    if target.transport == "dicomweb":
        from osteo.pacs.dicomweb import dicomweb_transport

        return dicomweb_transport(target)
    from osteo.pacs.dimse import dimse_transport

    return dimse_transport(target)


def pull_from_settings(settings, sessions, *, into: str | None = None, since: dt.date | str | None = None,
                       until: dt.date | str | None = None, after_write: Callable[[Path], object] | None = None
                       ) -> PullCounts | None:
    """The pull with the settings' PACS, scope and inbox; None when no PACS is configured."""
    target = pacs_target(settings)
    if target is None:
        return None
    return pull_from_target(settings, target, sessions, into=into, since=since, until=until, after_write=after_write)


def pull_from_target(settings, target: PacsTarget, sessions, *, into: str | None = None,
                     since: dt.date | str | None = None, until: dt.date | str | None = None,
                     after_write: Callable[[Path], object] | None = None) -> PullCounts:
    """The pull from `target` (pacs_target(settings), checked by the caller) with the settings' scope and inbox."""
    since, until = date_window(since, until, settings.pacs_lookback_days)
    inbox = Path(into or settings.pacs_inbox)
    with open_transport(target) as transport:
        return pull(transport, sessions, inbox, since, until, settings.scope_rules(), pacs=target.where(),
                    after_write=after_write)


def pull(transport, sessions, inbox: Path, since: dt.date, until: dt.date, rules, *, pacs: str = "",
         after_write: Callable[[Path], object] | None = None) -> PullCounts:
    """Find, filter, retrieve and record (module doc); `after_write(path)` is called after each file (tests
    stop a pull there)."""
    inbox.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(inbox)
    found = transport.find_series(since, until, rules.modalities)
    n: Counter = Counter()
    reasons: Counter = Counter()
    wanted: list[tuple[SeriesFound, list[str]]] = []
    for series in found:
        reason = out_of_scope_reason(series, rules)
        if reason:
            reasons[reason] += 1
            n["out_of_scope"] += series.instances or 0
        else:
            wanted.append((series, list(series.sop_uids) if series.sop_uids is not None
                           else transport.instance_uids(series)))
    with sessions() as session:  # one look-up (IN chunks) for every instance found
        held = already_held(session, [u for _, uids in wanted for u in uids])
    recorder = _Recorder(sessions, transport.name)
    try:
        for series, uids in wanted:
            todo = [u for u in uids if u not in held]
            if todo:
                transport.retrieve(series, todo, partial(recorder.store, inbox, series, after_write))
    finally:  # what is written is recorded, however the pull stops (a kill -9 refetches one batch at most)
        recorder.close()
    return PullCounts(transport.name, pacs, since.isoformat(), until.isoformat(), str(inbox), len(found),
                      len(wanted), recorder.recorded + len(held) + n["out_of_scope"], recorder.recorded, len(held),
                      n["out_of_scope"], dict(reasons))


class _Recorder:
    """Files each instance as it arrives, on a writer thread (the write's fsync overlaps the next retrieve),
    and records RECORD_EVERY of them a transaction, once their writes are done."""

    def __init__(self, sessions, transport: str):
        self.sessions, self.transport = sessions, transport
        self.pending: list[Future] = []
        self.recorded = 0
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pacs-write")

    def store(self, inbox: Path, series: SeriesFound, after_write, sop_uid: str, data: bytes) -> None:
        self.pending.append(self.writer.submit(_write, inbox, series, sop_uid, data))
        if after_write:  # the hook sees the file written
            after_write(Path(self.pending[-1].result().path))
        if len(self.pending) >= RECORD_EVERY:
            self.flush()

    def flush(self) -> None:
        """Record every write that finished (a failed write is raised after the others are recorded)."""
        done, error = [], None
        for future in self.pending:
            try:
                done.append(future.result())
            except Exception as exc:  # noqa: BLE001 - raised below, once what was written is recorded
                error = error or exc
        self.pending.clear()
        if done:
            with self.sessions() as session:
                self.recorded += record_instances(session, done, self.transport)
                session.commit()
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.writer.shutdown(wait=True)


def _write(inbox: Path, series: SeriesFound, sop_uid: str, data: bytes) -> Retrieved:
    path = file_instance(inbox, series.study_uid, series.series_uid, sop_uid, data)
    return Retrieved(series.study_uid, series.series_uid, sop_uid, str(path))
