"""Which version of a source file a model read: the one its path held when the model was trained.

A DEXA row or a person's box met again unchanged in a new version of its file (fixed or saved again in
place) names that version from then on (db/store.py), so a model trained after the fix verifies against
the file as it is. A model trained before it must still name the version it read: a row's version first
seen after the training gives way to the newest ingested version of the same path seen by then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import SourceFile
from db.values import SourceStatus
from osteo_common.chunks import chunks


def versions_at(session: Session, files: Iterable[SourceFile | None],
                as_of: dt.datetime | None) -> dict[int, SourceFile]:
    """source_file id -> the version of its path recorded at `as_of`, for the files first seen after it
    (the others, and every file when `as_of` is None, are their own version and are left out)."""
    late = {sf.id: sf for sf in files if sf is not None and as_of is not None and sf.first_seen > as_of}
    if not late:
        return {}
    held: dict[tuple[str, str], SourceFile] = {}
    for chunk in chunks(sorted({sf.path for sf in late.values()})):
        for sf in session.scalars(select(SourceFile).where(SourceFile.path.in_(chunk), SourceFile.first_seen <= as_of,
                                                           SourceFile.status == SourceStatus.INGESTED)
                                  .order_by(SourceFile.id)):
            held[(sf.path, sf.kind)] = sf  # ascending ids: the newest stays
    # none recorded by then (a clock set back): the row's own version is all there is to name
    return {i: held.get((sf.path, sf.kind), sf) for i, sf in late.items()}
