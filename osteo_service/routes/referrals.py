"""`GET /referrals` (the page) and `GET /api/v1/referrals` (JSON): the films `osteo screen` flagged, for the
fracture-liaison service, open only to the referrals role (osteo_service.auth). The same list as `osteo screen
list` (osteo.screening.referrals): no names, the accession number read from the film's file when asked."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from osteo_service.auth.guards import ReferralsRole
from osteo_service.deps import State
from osteo_service.limits import UploadError
from osteo_service.routes.page import render
from osteo_service.schemas import PROBLEM
from osteo_service.state import ServiceState

router = APIRouter(tags=["referrals"])


class ReferralRow(BaseModel):
    study_instance_uid: str
    accession_number: str | None
    study_date: str
    side: str
    probability: float
    flagged: bool
    model: str
    model_version: str
    screened_at: str


class ReferralsOut(BaseModel):
    referrals: list[ReferralRow]
    count: int


async def read_referrals(state: ServiceState, positive: bool) -> list[dict]:
    if state.audit is None:  # the pipeline's database is reached through the audit's sessions
        raise UploadError(503, "no_database", "the service has no database (OSTEO_SERVE_AUDIT is off)")
    from osteo.screening.referrals import list_referrals

    rows = await run_in_threadpool(list_referrals, state.audit, positive=positive)
    return [r.to_dict() for r in rows]


@router.get("/referrals", response_class=HTMLResponse, include_in_schema=False)
async def referrals_page(request: Request, state: State, who: ReferralsRole):
    positive = request.query_params.get("all") != "1"
    return render(request, state, "referrals.html", {"rows": await read_referrals(state, positive),
                                                     "positive": positive})


@router.get("/api/v1/referrals", response_model=ReferralsOut, responses={401: PROBLEM, 403: PROBLEM, 503: PROBLEM})
async def referrals_api(state: State, who: ReferralsRole, positive: bool = True) -> ReferralsOut:
    """The flagged films (positive=false: every screened film), newest films first."""
    rows = await read_referrals(state, positive)
    return ReferralsOut(referrals=[ReferralRow(**r) for r in rows], count=len(rows))
