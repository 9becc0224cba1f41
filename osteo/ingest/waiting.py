"""What waits, by name: the box files whose image is not ingested yet (`osteo waiting`; the refresh
summary counts them as waiting.unmatched_box_files). Such a file is not an error, so it is not in the
quarantine; every refresh reads it again until its image (or its --annotation-map entry) arrives
(osteo/ingest/boxes.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import SourceFile
from osteo.etl.annotations import parse_voc
from osteo.etl.errors import InputError
from osteo.ingest.boxes import WAITING


@dataclass(frozen=True)
class WaitingFile:
    path: str
    first_seen: dt.datetime
    names: str | None  # the SOP Instance UID the file names; None: it names none by itself
    why: str  # in words

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def waiting_box_files(factory: sessionmaker[Session]) -> list[WaitingFile]:
    """Each box file waiting for its image, by path, with the image it names (read from the file now)."""
    with factory() as session:
        rows = session.execute(select(SourceFile.path, SourceFile.first_seen)
                               .where(SourceFile.kind == "annotation", SourceFile.status == WAITING)
                               .order_by(SourceFile.path)).all()
    return [_waiting(path, first_seen) for path, first_seen in rows]


def _waiting(path: str, first_seen: dt.datetime) -> WaitingFile:
    try:
        voc = parse_voc(Path(path).read_bytes(), PurePath(path).name)
    except OSError:
        return WaitingFile(path, first_seen, None, "the file is gone: the next refresh forgets it")
    except InputError as exc:  # changed since the refresh read it
        return WaitingFile(path, first_seen, None, f"the file changed and no longer reads ({exc.detail})")
    if voc.sop_instance_uid:
        return WaitingFile(path, first_seen, voc.sop_instance_uid,
                           "no image with this SOP Instance UID is ingested yet (is its DICOM in the --dicom folder?)")
    return WaitingFile(path, first_seen, None, "names no image by itself (neither <filename> nor the file name is a "
                                               "SOP Instance UID): it waits for an --annotation-map entry, or for the "
                                               "DICOM its entry names")
