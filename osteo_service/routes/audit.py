"""`GET /api/v1/audit/predictions`: the service's audit rows for the audit role (who asked, which version
answered, the upload's SHA-256, the box and the result; no patient data), as `osteo lineage predictions`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from osteo_service.auth.guards import AuditRole
from osteo_service.deps import State
from osteo_service.limits import UploadError
from osteo_service.schemas import PROBLEM

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses={401: PROBLEM, 403: PROBLEM, 503: PROBLEM})


class PredictionRow(BaseModel):
    id: int
    at: str
    channel: str
    asked_by: str | None
    model: str
    localiser: str | None
    input_sha256: str
    input_kind: str
    box: list[int] | None
    box_source: str
    side: str | None
    probability: float
    label: int
    threshold: float


class PredictionsOut(BaseModel):
    predictions: list[PredictionRow]
    count: int


@router.get("/predictions", response_model=PredictionsOut)
async def audit_predictions(state: State, who: AuditRole, last: Annotated[int, Query(ge=1, le=1000)] = 50,
                            user: Annotated[str | None, Query(max_length=136)] = None) -> PredictionsOut:
    """The newest answers (and who asked), optionally of one user or token:NAME."""
    audit = state.audit
    if audit is None:
        raise UploadError(503, "no_audit", "the service keeps no audit rows (OSTEO_SERVE_AUDIT is off)")
    from osteo.lineage import predictions

    def read():
        with audit() as session:
            return predictions(session, last, user=user)

    rows = await run_in_threadpool(read)
    return PredictionsOut(predictions=[PredictionRow(**r) for r in rows], count=len(rows))
