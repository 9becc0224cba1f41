"""What `osteo screen` did to an image (its results by version, and what was pushed for each), and what a
version screened (counts by status, objects pushed): read by `osteo lineage image` and `osteo lineage model`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.screening import ScreeningPush, ScreeningResult
from osteo.lineage.records import iso

SIDE_COLUMNS = ("box", "box_source", "confidence", "probability")


def image_screening(session: Session, image_id: int) -> list[dict[str, Any]]:
    """Each version's result for the image (oldest version first) with the SR and SC pushed for it."""
    out = []
    for r in session.scalars(select(ScreeningResult).where(ScreeningResult.image_id == image_id)
                             .order_by(ScreeningResult.id)):
        pushes = session.scalars(select(ScreeningPush).where(ScreeningPush.result_id == r.id)
                                 .order_by(ScreeningPush.kind)).all()
        out.append({"model": f"{r.model_name}/{r.model_version}",
                    "localiser": f"{r.localiser_name}/{r.localiser_version}" if r.localiser_name else None,
                    "status": r.status, "side": r.side, "probability": r.probability, "label": r.label,
                    "threshold": r.threshold, "screened_at": iso(r.screened_at),
                    "sides": {s: {c: getattr(r, f"{c}_{s.lower()}") for c in SIDE_COLUMNS}
                              for s in ("L", "R") if getattr(r, f"box_{s.lower()}") is not None},
                    "pushed": [{"kind": p.kind, "sop_instance_uid": p.sop_instance_uid,
                                "series_instance_uid": p.series_instance_uid, "target": p.target,
                                "transport": p.transport, "status": p.status, "detail": p.detail,
                                "at": iso(p.pushed_at)} for p in pushes]})
    return out


def version_screening(session: Session, name: str | None, version: str | None) -> dict[str, Any]:
    """Images the version screened by status, how many it flagged, and the objects pushed by kind and status."""
    mine = (ScreeningResult.model_name == name, ScreeningResult.model_version == str(version))
    statuses = dict(session.execute(select(ScreeningResult.status, func.count()).where(*mine)
                                    .group_by(ScreeningResult.status)).all())
    flagged = session.scalar(select(func.count()).where(*mine, ScreeningResult.label == 1)) or 0
    pushed = session.execute(select(ScreeningPush.kind, ScreeningPush.status, func.count())
                             .join(ScreeningResult, ScreeningResult.id == ScreeningPush.result_id).where(*mine)
                             .group_by(ScreeningPush.kind, ScreeningPush.status)).all()
    return {"images": sum(statuses.values()), "by_status": statuses, "flagged": int(flagged),
            "pushed": {f"{kind} {status}": n for kind, status, n in pushed}}
