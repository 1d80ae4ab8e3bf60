"""Reading a ``multipart/form-data`` body (RFC 7578) as it arrives, for file uploads.

The API's ``POST /imports`` and the console's import wizard both take a file
that may be gigabytes: the body is fed piece by piece to python-multipart's
streaming parser, each piece of the ``file`` part goes to the caller at once
(to be sealed into chunks), and the other parts are kept as short text fields.
Nothing beyond one network piece is buffered here, nothing is spooled to disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from carepost.core.errors import ValidationFailed

MAX_FIELD_BYTES = 64 * 1024
FILE_PART = "file"


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, or None for another type."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    return boundary if kind == b"multipart/form-data" and boundary else None


async def read_multipart(
    body: AsyncIterator[bytes],
    boundary: bytes,
    *,
    on_file: Callable[[bytes], Awaitable[None]],
    fields: dict[str, str] | None = None,
    malformed: tuple[str, str] = ("the multipart body is malformed", "body"),
) -> None:
    """Stream ``body``: ``on_file`` gets each piece of the ``file`` part in order (an
    empty one too: a form sent without a file has an empty file part); the other
    parts go to ``fields`` (name -> text, each at most :data:`MAX_FIELD_BYTES`), or
    are dropped when ``fields`` is None. A broken body raises
    ValidationFailed(``malformed`` = (message, field))."""
    state: dict[str, Any] = {"name": "", "field": bytearray(), "header": b"", "headers": {}}
    file_pieces: list[bytes] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = state["header"].lower()
        state["headers"][key] = state["headers"].get(key, b"") + data[start:end]

    def on_header_end() -> None:
        state["header"] = b""

    def on_headers_finished() -> None:
        _, params = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = params.get(b"name", b"").decode("latin-1")
        state["field"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == FILE_PART:
            file_pieces.append(data[start:end])
        elif fields is not None:
            state["field"] += data[start:end]
            if len(state["field"]) > MAX_FIELD_BYTES:
                raise ValidationFailed("a form field is too long", field=state["name"] or "form")

    def on_part_end() -> None:
        if state["name"] != FILE_PART and fields is not None:
            fields[state["name"]] = state["field"].decode("utf-8", "replace")
        state["headers"] = {}

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    message, field = malformed
    async for piece in body:
        try:
            parser.write(piece)
        except MultipartParseError:
            raise ValidationFailed(message, field=field) from None
        for data in file_pieces:
            await on_file(data)
        file_pieces.clear()
    try:
        parser.finalize()
    except MultipartParseError:
        raise ValidationFailed(message, field=field) from None
