"""What `osteo pacs pull` retrieved and `osteo pacs receive` was sent (issue 27, migration 0005): one row per
instance, written after its file is in the inbox, so a second night fetches nothing twice and a killed pull
fetches again only what it had not recorded.

UIDs, the transport and the time only: a UID names an object, not a patient; no name, patient ID or date of
birth is kept. On db.models' Base (db.models imports this module last)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import DateTime, Identity, String, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from db.models import PATH, UID, Base, _now
from db.values import PacsTransport, one_of
from osteo_common.chunks import chunks


class PacsInstance(Base):
    __tablename__ = "pacs_instance"
    __table_args__ = (one_of("pacs_instance", "transport", PacsTransport),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID))
    transport: Mapped[str] = mapped_column(String(8))  # dicomweb | dimse (the pull) | c-store (the receiver)
    path: Mapped[str] = mapped_column(String(PATH))  # where the file was written (a path of UIDs)
    retrieved_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now, index=True)


class Retrieved(NamedTuple):
    """One instance written to the inbox, as recorded."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    path: str


def already_held(session: Session, sop_uids: Sequence[str]) -> set[str]:
    """The SOP Instance UIDs of `sop_uids` already retrieved or received (one query per IN chunk)."""
    held: set[str] = set()
    for chunk in chunks(sop_uids):
        held.update(session.scalars(select(PacsInstance.sop_instance_uid)
                                    .where(PacsInstance.sop_instance_uid.in_(chunk))))
    return held


def record_instances(session: Session, rows: Iterable[Retrieved], transport: str) -> int:
    """Record instances written to the inbox; one already recorded (a rerun, a second push) is left as it
    was. The caller commits. Returns the rows added."""
    rows = list({r.sop_instance_uid: r for r in rows}.values())
    new = [r for r in rows if r.sop_instance_uid not in already_held(session, [r.sop_instance_uid for r in rows])]
    if new:
        now = _now()
        session.execute(insert(PacsInstance), [{**r._asdict(), "transport": transport, "retrieved_at": now}
                                               for r in new])
    return len(new)
