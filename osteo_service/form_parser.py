"""The form parser: a request's form, size-capped and parsed in memory.

Starlette's own form parsing spools a file part to a temporary file (patient data on disk), so the
body is parsed here with python-multipart's streaming parser into memory, counting bytes as they
arrive. Refusals (osteo_service.limits.UploadError): too_large (413), not_a_form (415), bad_form (400).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, QuerystringParser, parse_options_header
from starlette.requests import Request

from osteo_service.limits import UploadError

if TYPE_CHECKING:  # python_multipart defines its callback types for the checker only
    from python_multipart.multipart import MultipartCallbacks, QuerystringCallbacks


@dataclass(frozen=True)
class Form:
    fields: dict[str, str]
    files: dict[str, bytes]  # the first file of each field name; file names are never kept


def _too_large() -> UploadError:
    return UploadError(413, "too_large", "The upload is larger than the service accepts.")


def _bad_form(message: str) -> UploadError:
    return UploadError(400, "bad_form", message)


class _Collector:
    """python-multipart callbacks that gather the parts in memory (BytesIO), never on disk."""

    def __init__(self, max_fields: int) -> None:
        self.max_fields, self.parts, self.ended = max_fields, 0, False
        self.fields: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        self._buf = {key: io.BytesIO() for key in ("header", "header_value", "name", "value")}
        self._disposition, self._name, self._is_file = b"", "", False

    def _into(self, key: str) -> Callable[[bytes, int, int], None]:
        def write(data: bytes, start: int, end: int) -> None:
            self._buf[key].write(data[start:end])

        return write

    def _take(self, key: str) -> bytes:
        value, self._buf[key] = self._buf[key].getvalue(), io.BytesIO()
        return value

    def _count(self) -> None:
        self.parts += 1
        if self.parts > self.max_fields:
            raise _bad_form("The form has too many fields.")

    def _header_end(self) -> None:
        name, value = self._take("header"), self._take("header_value")
        if name.strip().lower() == b"content-disposition":
            self._disposition = value

    def _headers_finished(self) -> None:
        self._count()
        kind, options = parse_options_header(self._disposition)
        if kind != b"form-data" or b"name" not in options:
            raise _bad_form("A form part has no field name.")
        self._name = options[b"name"].decode("utf-8", "replace")
        self._is_file = b"filename" in options  # only its presence: the file name itself is dropped
        self._disposition = b""

    def _part_end(self) -> None:
        value = self._take("value")
        if self._is_file:
            self.files.setdefault(self._name, value)
        else:
            self.fields.setdefault(self._name, value.decode("utf-8", "replace"))

    def _field_end(self) -> None:  # urlencoded: the parser splits, the %-escapes are decoded here
        def unquote(raw: bytes) -> str:
            return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")
        self.fields.setdefault(unquote(self._take("name")), unquote(self._take("value")))

    def _end(self) -> None:
        self.ended = True

    def multipart(self) -> MultipartCallbacks:
        return {"on_header_field": self._into("header"), "on_header_value": self._into("header_value"),
                "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
                "on_part_data": self._into("value"), "on_part_end": self._part_end, "on_end": self._end}

    def querystring(self) -> QuerystringCallbacks:
        return {"on_field_start": self._count, "on_field_name": self._into("name"),
                "on_field_data": self._into("value"), "on_field_end": self._field_end}


def _check_declared_length(request: Request, limit: int) -> None:
    """413 at once on a Content-Length above the limit, before a byte of the body is read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdecimal():  # what int() accepts, nothing else
            raise _bad_form("The Content-Length header is not a number.")
        if int(declared) > limit:
            raise _too_large()


def _parser_for(request: Request, collector: _Collector) -> MultipartParser | QuerystringParser:
    """The streaming parser of the request's content type: 415 for a body that is no form."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype == b"multipart/form-data":
        if not params.get(b"boundary"):
            raise _bad_form("The multipart form has no boundary.")
        try:
            return MultipartParser(params[b"boundary"], collector.multipart())
        except FormParserError:  # a boundary longer than the parser allows
            raise _bad_form("The multipart boundary is invalid.") from None
    if ctype == b"application/x-www-form-urlencoded":
        return QuerystringParser(collector.querystring())
    raise UploadError(415, "not_a_form", "Send the upload as multipart/form-data.")


async def read_form(request: Request, limit: int, *, max_fields: int = 50) -> Form:
    """The request's form, read into memory: 413 once the body passes `limit` bytes (at once on a
    Content-Length above it, else as the chunks arrive), 415 for a body that is no form, 400 for a bad one."""
    _check_declared_length(request, limit)
    collector = _Collector(max_fields)
    parser = _parser_for(request, collector)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:  # a chunked body, or one longer than it declared
                raise _too_large()
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise _bad_form("The form data could not be parsed.") from None
    if isinstance(parser, MultipartParser) and not collector.ended:
        raise _bad_form("The form data ends before its closing boundary.")
    return Form(fields=collector.fields, files=collector.files)
