"""The steps the page and the API share: the form's image, one screening (decode, screen, keep the
upload when told, audit, draw) in one worker-thread hop, the audit row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread

from osteo_service.form_parser import Form
from osteo_service.image_decoding import Decoded, decode_upload
from osteo_service.limits import UploadError
from osteo_service.models import Served
from osteo_service.screening import Screening, screen
from osteo_service.state import ServiceState


def image_of(form: Form) -> bytes:
    data = form.files.get("image")
    if not data:
        raise UploadError(422, "no_image", "the request has no image (multipart field `image`)")
    return data


def keep_upload(state: ServiceState, decoded: Decoded, data: bytes) -> None:
    if state.settings.serve_store_uploads is not None:  # only when told to
        from osteo_common.files import atomic_write_bytes

        atomic_write_bytes(Path(state.settings.serve_store_uploads) / f"{decoded.sha256}.{decoded.kind}", data)


def record(state: ServiceState, channel: str, model: Served, decoded: Decoded, result: Screening,
           asked_by: str | None = None) -> None:
    """One prediction_audit row: no name, ID, date, header value, file name or pixel (docs/service.md); who
    asked is the signed-in user or token:NAME (None in OSTEO_AUTH_MODE=none)."""
    if state.audit is None:
        return
    from db.models import PredictionAudit

    with state.audit() as session, session.begin():
        session.add(PredictionAudit(
            channel=channel, model_name=model.name, model_version=model.version,
            localiser=model.localiser if result.box_source == "model" else None,
            input_sha256=decoded.sha256, input_kind=decoded.kind,
            box=list(result.box) if result.box else None, box_source=result.box_source,
            side=result.side or None, probability=result.probability, label=result.label,
            threshold=result.threshold, asked_by=asked_by))


async def run_screening(state: ServiceState, channel: str, data: bytes, fields: dict[str, str],
                        pictures: Callable[[Decoded, Screening], Any], asked_by: str | None = None):
    """Decode, screen, keep (when told), audit and draw the pictures in ONE worker-thread hop: each hop
    costs a context switch while the runtime's threads still spin from the last run."""
    model = state.served()
    if model is None:
        raise UploadError(503, "no_model", f"no model is registered as {state.settings.serve_model}: run `make demo` "
                                           "or `osteo train`")

    def work():
        decoded = decode_upload(data, state.limits)
        result = screen(decoded, model, box=fields.get("box", "").strip(), side=fields.get("side", ""),
                        cropped=fields.get("cropped", "") in ("true", "on", "1"))
        keep_upload(state, decoded, data)
        record(state, channel, model, decoded, result, asked_by)
        return model, decoded, result, pictures(decoded, result)

    return await anyio.to_thread.run_sync(work, limiter=state.infer)
