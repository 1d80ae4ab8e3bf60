"""The FHIR R4 import source: Patient resources from NDJSON, a Bundle or a single resource.

:func:`iter_fhir` reads a file as a stream and yields one
:class:`~carepost.imports.sources.SourceRow` per resource, in file order:

* NDJSON, as written by a FHIR Bulk Data export (one resource per line): the
  position is the byte offset just past the line, and ``line`` the line number;
* a JSON ``Bundle`` (collection, batch, transaction or searchset): its ``entry``
  array is parsed incrementally with ijson, one entry at a time; the position is
  the number of entries consumed and ``line`` the entry's 1-based index;
* a single resource (a pretty-printed ``Patient``): one row, position 1.

Memory stays flat whatever the file size: one record (at most
:data:`MAX_RECORD_BYTES`) is held at a time. Resuming from ``start`` never
decodes the records before it: NDJSON seeks to ``start`` when the stream can and
the line count there (``start_line``) is known, and otherwise counts the newlines
of the bytes before it (so that line numbers in the error report stay right); a Bundle
steps over the parser events of the entries already consumed.

Each ``Patient`` is validated with fhir.resources, FHIR R4 through its R4B
(4.3.0) models: R4B changed no element of Patient, and fhir.resources 8 (the
pydantic 2 line) no longer ships 4.0.1. A resource that fails is yielded with
no item and one error per invalid element (``Patient.birthDate``...); other
resource types are reported as "not a Patient resource: Observation", never
dropped silently. A problem that stops the file from being read any further
(not JSON, a truncated Bundle) is one last error row. Reasons never quote the
value: pydantic and ijson messages can echo input, so they are replaced by
our own (see :func:`validation_errors`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson
import ijson.common
from fhir.resources.R4B import fhirtypes
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from carepost.imports.fhir_patient import FhirOptions, is_deceased, map_patient
from carepost.imports.sources import RowError, SourceRow

__all__ = ["BUNDLE_TYPES", "MAX_RECORD_BYTES", "FhirOptions", "iter_fhir", "validation_errors"]

MAX_RECORD_BYTES = 16 * 1024 * 1024
# How much of the file is read to tell NDJSON from one JSON document.
DETECT_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024
BUNDLE_TYPES = frozenset({"collection", "batch", "transaction", "searchset"})
# The other Bundle.type codes: safe to name in an error because they are not input.
OTHER_BUNDLE_TYPES = frozenset(
    {
        "document",
        "message",
        "history",
        "transaction-response",
        "batch-response",
        "subscription-notification",
    }
)
MAX_ERRORS_PER_RECORD = 20
_BOM = b"\xef\xbb\xbf"
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_IDENTIFIER = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")
_ENTRY = "entry.item"
Events = Iterator[tuple[str, str, Any]]  # ijson's (prefix, event, value)


def iter_fhir(
    stream: BinaryIO,
    *,
    start: int = 0,
    options: FhirOptions | None = None,
    start_line: int = 0,
) -> Iterator[SourceRow]:
    """One row per resource of a FHIR NDJSON file, Bundle or single resource, from
    ``start`` (NDJSON: ``start_line`` lines precede it, when known)."""
    options = options or FhirOptions()
    prefix, stream = _rewound(stream)
    body = prefix[len(_BOM) :] if prefix.startswith(_BOM) else prefix
    if not body.strip():
        yield _file_error(1, 0, "the file is empty")
        return
    if body.lstrip()[:1] != b"{":
        yield _file_error(1, 0, "not FHIR JSON: expected a resource, a Bundle or NDJSON")
        return
    kind = _detect(body, complete=len(prefix) < DETECT_BYTES)
    if kind == "ndjson":
        yield from _ndjson_rows(stream, start, options, start_line)
    elif kind == "bundle":
        if prefix.startswith(_BOM):
            stream.read(len(_BOM))
        yield from _bundle_rows(stream, start, options)
    elif start < 1:
        yield _document_row(stream, options)


# --- reading the file -------------------------------------------------------------------


class _Replay(io.RawIOBase):
    """A stream that cannot seek, with the bytes already read from it put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def _rewound(stream: BinaryIO) -> tuple[bytes, BinaryIO]:
    """The first :data:`DETECT_BYTES` of the file, and the file to read from its start."""
    if stream.seekable():
        stream.seek(0)
        prefix = _read_up_to(stream, DETECT_BYTES)
        stream.seek(0)
        return prefix, stream
    prefix = _read_up_to(stream, DETECT_BYTES)
    return prefix, io.BufferedReader(_Replay(prefix, stream), CHUNK_BYTES)


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    parts, remaining = [], size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _detect(body: bytes, *, complete: bool) -> str:
    """ "ndjson", "bundle" or "document", from the start of the file.

    NDJSON when one of the first lines is a whole JSON object with a resourceType
    (no line of a pretty-printed document is), so that a broken first line does not
    hide the good ones after it. A file of one such line is NDJSON
    too, unless it is a Bundle, whose entries are then streamed like any Bundle.
    """
    lines = body.split(b"\n")
    whole_lines = lines if complete else lines[:-1]
    candidates = [line for line in whole_lines[:20] if line.strip()]
    # An NDJSON line starts with its brace; a pretty-printer indents nested objects.
    for line in (line for line in candidates if line.startswith(b"{")):
        resource = _loads(line)
        if isinstance(resource, dict) and "resourceType" in resource:
            if len(candidates) == 1 and resource["resourceType"] == "Bundle":
                return "bundle"
            return "ndjson"
    return "bundle" if _top_level_is_bundle(body) else "document"


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return None


def _top_level_is_bundle(body: bytes) -> bool:
    """Whether the document's resourceType is Bundle (or it has entries before saying)."""
    try:
        for prefix, event, value in ijson.parse(io.BytesIO(body)):
            if prefix == "resourceType" and event == "string":
                return bool(value == "Bundle")
            if prefix == "" and event == "map_key" and value == "entry":
                return True
    except ijson.JSONError:
        pass  # the prefix ends mid-document, or the document is broken: not a Bundle then
    return False


def _file_error(line: int, position: int, reason: str, column: str = "") -> SourceRow:
    return SourceRow(line=line, position=position, item=None, errors=[RowError(column, reason)])


def _ndjson_rows(
    stream: BinaryIO, start: int, options: FhirOptions, start_line: int = 0
) -> Iterator[SourceRow]:
    line_number = offset = 0
    if start and start_line and stream.seekable():
        stream.seek(start)
        line_number, offset = start_line, start
    while offset < start:  # skip what a previous run consumed, counting its lines
        chunk = stream.read(min(CHUNK_BYTES, start - offset))
        if not chunk:
            return
        line_number += chunk.count(b"\n")
        offset += len(chunk)
    while raw := stream.readline(MAX_RECORD_BYTES + 1):
        line_number += 1
        offset += len(raw)
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            offset += _skip_line(stream)
            yield _file_error(
                line_number, offset, f"the line is longer than {MAX_RECORD_BYTES // 2**20} MiB"
            )
            continue
        if offset == len(raw) and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if not raw.strip():
            continue
        try:
            resource = json.loads(raw)
        except UnicodeDecodeError:
            yield _file_error(line_number, offset, "the line is not UTF-8 text")
            continue
        except json.JSONDecodeError as failed:
            # The parser's own message names the problem, never the text around it.
            reason = f"not valid JSON: {failed.msg.lower()} at character {failed.pos + 1}"
            yield _file_error(line_number, offset, reason)
            continue
        yield _resource_row(line_number, offset, resource, options)


def _skip_line(stream: BinaryIO) -> int:
    skipped = 0
    while part := stream.readline(CHUNK_BYTES):
        skipped += len(part)
        if part.endswith(b"\n"):
            break
    return skipped


def _document_row(stream: BinaryIO, options: FhirOptions) -> SourceRow:
    data = _read_up_to(stream, MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        limit = MAX_RECORD_BYTES // 2**20
        return _file_error(1, 1, f"a single resource larger than {limit} MiB: use NDJSON")
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        resource = json.loads(data)
    except UnicodeDecodeError:
        return _file_error(1, 1, "the file is not UTF-8 text")
    except json.JSONDecodeError as failed:
        reason = f"not valid JSON: {failed.msg.lower()} at line {failed.lineno}"
        return _file_error(1, 1, reason)
    return _resource_row(1, 1, resource, options)


# --- Bundles --------------------------------------------------------------------------------


def _bundle_rows(stream: BinaryIO, start: int, options: FhirOptions) -> Iterator[SourceRow]:
    """Stream ``entry`` one entry at a time; ``Bundle.type`` and ``resourceType`` are
    checked when the parser meets them (before the entries in any usual file)."""
    events: Events = ijson.parse(stream, use_float=True)
    index, in_entries, in_entry = 0, False, False
    try:
        for prefix, event, value in events:
            if prefix == "entry" and event in ("start_array", "end_array"):
                in_entries = event == "start_array"
            elif prefix == _ENTRY and in_entries:
                index, in_entry = index + 1, True
                if index <= start:
                    _skip_value(events, event)
                else:
                    yield _entry_row(index, events, event, options)
                in_entry = False
            elif prefix == "resourceType" and event == "string" and value != "Bundle":
                yield _file_error(index + 1, index, "the document is not a Bundle", "resourceType")
                return
            elif prefix == "type" and event == "string" and value not in BUNDLE_TYPES:
                shown = f" {value}" if value in OTHER_BUNDLE_TYPES else ""
                reason = (
                    f"a Bundle of type{shown} is not imported: "
                    f"use one of {', '.join(sorted(BUNDLE_TYPES))}"
                )
                yield _file_error(index + 1, index, reason, "Bundle.type")
                return
    except ijson.JSONError:
        # ijson's message quotes the text around the fault: never repeat it.
        reason = "the file is not valid JSON from here on (cut short, or more text follows)"
        if in_entry:
            yield _file_error(index, index, reason, "Bundle.entry")
        else:
            yield _file_error(index + 1, index, reason)


def _next(events: Events) -> tuple[str, str, Any]:
    """The next parser event; ijson reports a cut-off file itself, this is a safety net."""
    for found in events:
        return found
    raise ijson.IncompleteJSONError("the document ends inside a value")


def _skip_value(events: Events, first: str) -> None:
    """Step over the rest of a value whose first event was ``first``, building nothing."""
    depth = 1 if first in ("start_map", "start_array") else 0
    while depth:
        _prefix, event, _value = _next(events)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1


def _entry_row(index: int, events: Events, first: str, options: FhirOptions) -> SourceRow:
    if first != "start_map":
        _skip_value(events, first)
        return _file_error(index, index, "the entry is not a JSON object", "Bundle.entry")
    # Build the entry from its events, but stop building (and only step over the
    # rest) once its resource turns out not to be a Patient: a Synthea bundle holds
    # thousands of Observations for each Patient.
    builder = ijson.common.ObjectBuilder()
    builder.event("start_map", None)
    depth, other_type = 1, None
    while depth:
        prefix, event, value = _next(events)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if other_type is None:
            builder.event(event, value)
            if prefix == "entry.item.resource.resourceType" and value != "Patient":
                other_type = value if isinstance(value, str) else ""
    if other_type is not None:
        return _resource_row(index, index, {"resourceType": other_type}, options)
    entry = builder.value
    if "resource" not in entry:
        return _file_error(index, index, "the entry has no resource", "Bundle.entry.resource")
    return _resource_row(index, index, entry["resource"], options)


# --- one resource -----------------------------------------------------------------------------


def _resource_row(line: int, position: int, resource: Any, options: FhirOptions) -> SourceRow:
    """The row of one decoded resource: validated, then mapped if it is a Patient."""
    if not isinstance(resource, dict):
        return _file_error(line, position, "not a FHIR resource: expected a JSON object")
    kind = resource.get("resourceType")
    if kind is None:
        return _file_error(line, position, "is required", "resourceType")
    if kind != "Patient":
        return _file_error(line, position, _not_a_patient(kind), "resourceType")
    try:
        patient = Patient.model_validate(resource)
    except ValidationError as failed:
        return SourceRow(line, position, None, validation_errors(failed))
    item, errors = map_patient(patient, options)
    suppress = options.suppress_deceased and is_deceased(patient)
    return SourceRow(line, position, item, errors, suppress_addresses=suppress)


def _not_a_patient(kind: Any) -> str:
    # Name the type only when it is a FHIR type name, never arbitrary input.
    if isinstance(kind, str) and _TYPE_NAME.match(kind) and hasattr(fhirtypes, f"{kind}Type"):
        return f"not a Patient resource: {kind}"
    return "not a Patient resource"


_TYPE_WORDS = {
    "string": "a string",
    "list": "an array",
    "dict": "an object",
    "model": "an object",
    "model_attributes": "an object",
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "decimal": "a number",
}


def validation_errors(failed: ValidationError) -> list[RowError]:
    """One error per invalid element, with its FHIR path and a reason of our own words.

    pydantic's messages can carry the input (custom validators, union tags), so only
    the error type and location are used; unknown element names are not repeated either.
    """
    errors: list[RowError] = []
    for error in failed.errors(include_url=False, include_context=False, include_input=False):
        location, kind = tuple(error["loc"]), error["type"]
        if kind == "extra_forbidden":
            found = RowError(_path(location[:-1]), "holds an element that FHIR R4 does not define")
        else:
            found = RowError(_path(location), _reason(kind, error["msg"]))
        if found not in errors:
            errors.append(found)
    if len(errors) > MAX_ERRORS_PER_RECORD:
        more = len(errors) - MAX_ERRORS_PER_RECORD
        errors = [*errors[:MAX_ERRORS_PER_RECORD], RowError("Patient", f"and {more} more errors")]
    return errors


def _path(location: tuple[Any, ...]) -> str:
    path = "Patient"
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.match(part):
            path += f".{part}"
    return path


def _reason(kind: str, message: str) -> str:
    if kind == "missing":
        return "is required"
    for prefix, words in _TYPE_WORDS.items():
        if kind.startswith(f"{prefix}_"):
            return f"must be {words}"
    if kind.startswith(("date_", "datetime_", "time_")) or "does not match spec regex" in message:
        return "does not have the format FHIR requires for this element"
    if kind == "string_pattern_mismatch":
        return "does not have the format FHIR requires for this element"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    if kind in ("string_too_long", "too_long"):
        return "is too long"
    if kind.startswith("url_"):
        return "is not a valid URI"
    if kind == "value_error" and "but got multiple" in message:
        return (
            "sets more than one form of a choice element, e.g. deceasedBoolean and deceasedDateTime"
        )
    if kind == "value_error":
        return "is not a valid value for this element"
    return f"is not valid ({kind})"
