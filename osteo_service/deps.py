"""The routes' dependencies (FastAPI `Depends`): the service's state from `app.state`, and the form of a
request read in memory under the upload limit.

Both are coroutines: FastAPI runs a plain function dependency in a worker thread, a hop per request
that the screening's one hop (osteo_service.routes.steps) exists to avoid."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from osteo_service.form_parser import Form, read_form
from osteo_service.state import ServiceState


async def service_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]


async def request_form(request: Request, state: State) -> Form:
    """The request's form (osteo_service.form_parser): refused with problem details when too large or no form."""
    return await read_form(request, state.limit_bytes)


RequestForm = Annotated[Form, Depends(request_form)]
