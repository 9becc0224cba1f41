"""PACS tasks: a decorator and one call. A PACS that does not answer raises PacsUnavailable, a ConnectionError,
which the policy retries with its backoff."""

from __future__ import annotations

from prefect import task

from osteo.pacs import pull
from osteo.pacs.pull import PullCounts
from osteo.settings import get_settings, session_factory
from tasks.policy import RETRY


@task(name="pull-from-pacs", **RETRY)
def pull_from_pacs(into: str | None = None, since: str | None = None, until: str | None = None) -> PullCounts | None:
    s = get_settings()
    return pull.pull_from_settings(s, session_factory(s, create=True), into=into, since=since, until=until)
