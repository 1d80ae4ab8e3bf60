"""What DSN (RFC 3464) and ARF (RFC 5965) parsing share: the multipart/report
container (RFC 6522), field blocks, the returned message's identity, and a parse
that never raises on hostile bytes.

Reports arrive from the Internet, so everything here is lenient: the ``compat32``
policy (no strict header parsing), size caps, and every failure of the standard
library's parser turned into "not a report" rather than an exception.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32
from typing import TypeVar

T = TypeVar("T")
# A report bigger than this is not parsed (a DSN returning a whole attachment is
# truncated by the listener's size limit long before; this guards direct callers).
MAX_REPORT_BYTES = 10 * 1024 * 1024
MAX_PARTS = 200
# The header of ours that names the message (an opaque id, never PHI).
CAREPOST_HEADER = "X-Carepost-Message"
_HEADER_LINE = re.compile(r"^(?P<name>[A-Za-z0-9-]{1,60}):[ \t]*(?P<value>.*)$")
# Exceptions the stdlib parser and decoders raise on malformed input.
PARSE_ERRORS = (
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    IndexError,
    UnicodeError,
    AssertionError,
    RecursionError,
    email.errors.MessageError,
)


@dataclass(frozen=True)
class OriginalMessage:
    """What a report quotes of the message it is about (its headers only)."""

    message_id: str | None = None
    carepost_message: str | None = None
    return_path: str | None = None
    to: str | None = None
    subject_present: bool = False


def load_message(data: bytes) -> Message | None:
    if not data or len(data) > MAX_REPORT_BYTES:
        return None
    try:
        return email.message_from_bytes(data, policy=compat32)
    except PARSE_ERRORS:
        return None


def parse_leniently(data: bytes, read: Callable[[Message], T | None]) -> T | None:
    """``read`` applied to the message in ``data``; None for anything unparseable.

    Both parsers run through here, so "never raises on hostile bytes" holds in one place.
    """
    message = load_message(data)
    if message is None:
        return None
    try:
        return read(message)
    except PARSE_ERRORS:
        return None


def header_text(message: Message, name: str) -> str | None:
    """A header's value, RFC 2047 words decoded, unfolded; None when absent."""
    raw = message.get(name)
    if raw is None:
        return None
    try:
        parts = email.header.decode_header(str(raw))
        text = "".join(
            chunk.decode(charset or "ascii", errors="replace")
            if isinstance(chunk, bytes)
            else chunk
            for chunk, charset in parts
        )
    except PARSE_ERRORS:
        text = str(raw)
    return " ".join(text.split())


def walk(message: Message) -> Iterator[Message]:
    """The parts of a message, depth first, at most ``MAX_PARTS``."""
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            return
        yield part


def payload_text(part: Message) -> str:
    """A leaf part's body as text (transfer encoding undone, charset applied)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        inner = part.get_payload()
        if isinstance(inner, list):
            return "\n\n".join(_fields_text(item) for item in inner if isinstance(item, Message))
        return str(inner or "")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _fields_text(message: Message) -> str:
    return "\n".join(f"{name}: {value}" for name, value in message.items())


def field_blocks(part: Message) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status or message/feedback-report part.

    The stdlib parses these as a list of header blocks when the part is clean; when it
    is not (base64 transfer encoding, stray lines) the text is split here. Names are
    lower case; a repeated field keeps its first value.
    """
    inner = part.get_payload()
    if isinstance(inner, list) and inner and part.get("Content-Transfer-Encoding") is None:
        blocks = []
        for item in inner:
            if isinstance(item, Message):
                fields: dict[str, str] = {}
                for name, value in item.items():
                    fields.setdefault(name.lower(), " ".join(str(value).split()))
                if fields:
                    blocks.append(fields)
        if blocks:
            return blocks
    return parse_field_text(payload_text(part))


def parse_field_text(text: str) -> list[dict[str, str]]:
    """``Name: value`` lines in blank-line separated groups, continuation lines folded."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] = f"{current[last]} {line.strip()}".strip()
            continue
        match = _HEADER_LINE.match(line)
        if match is None:
            last = None
            continue
        last = match["name"].lower()
        current.setdefault(last, match["value"].strip())
    if current:
        blocks.append(current)
    return blocks


def is_report(message: Message, report_type: str) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and (message.get_param("report-type") or "").__str__().lower() == report_type
    )


def original_message(message: Message) -> OriginalMessage:
    """The identity of the returned message: from a message/rfc822 or
    text/rfc822-headers part, else from header lines quoted in any text part."""
    for part in walk(message):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return _identity(inner[0])
            return _identity_from_text(payload_text(part))
        if kind in ("text/rfc822-headers", "text/global-headers"):
            return _identity_from_text(payload_text(part))
    # Non-standard bounces paste the headers into the text.
    return _identity_from_text(all_text(message))


def _identity(returned: Message) -> OriginalMessage:
    return OriginalMessage(
        message_id=_angle(header_text(returned, "Message-ID")),
        carepost_message=_token(header_text(returned, CAREPOST_HEADER)),
        return_path=_angle(header_text(returned, "Return-Path")),
        to=header_text(returned, "To"),
        subject_present=returned.get("Subject") is not None,
    )


_QUOTED = {
    "message-id": re.compile(r"^[ \t>]*Message-ID:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE),
    "carepost": re.compile(r"^[ \t>]*X-Carepost-Message:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE),
    "return-path": re.compile(r"^[ \t>]*Return-Path:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE),
    "to": re.compile(r"^[ \t>]*To:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE),
}


def _identity_from_text(text: str) -> OriginalMessage:
    def first(key: str) -> str | None:
        match = _QUOTED[key].search(text)
        return match.group(1).strip() if match else None

    return OriginalMessage(
        message_id=_angle(first("message-id")),
        carepost_message=_token(first("carepost")),
        return_path=_angle(first("return-path")),
        to=first("to"),
    )


def human_parts(message: Message) -> Iterator[Message]:
    """The leaf parts a person reads: never inside an attached (returned) message,
    whose text would otherwise be mistaken for the report's own words."""
    pending = [message]
    seen = 0
    while pending and seen < MAX_PARTS:
        part = pending.pop(0)
        seen += 1
        if part.get_content_maintype() == "message":
            continue
        if part.is_multipart():
            inner = part.get_payload()
            if isinstance(inner, list):
                pending[0:0] = [item for item in inner if isinstance(item, Message)]
            continue
        yield part


def all_text(message: Message, *, limit: int = 200_000) -> str:
    """The text/plain (else text/html, tags dropped) parts joined, at most ``limit`` chars."""
    texts: list[str] = []
    html: list[str] = []
    for part in human_parts(message):
        kind = part.get_content_type()
        if kind == "text/plain":
            texts.append(payload_text(part))
        elif kind == "text/html":
            html.append(re.sub(r"<[^>]{0,2000}>", " ", payload_text(part)))
    return "\n".join(texts or html)[:limit]


def _angle(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    match = re.search(r"<([^<>\s]{1,998})>", text)
    if match:
        return match.group(1)
    return text.split()[0] if text.split() else None


def _token(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip().strip("<>")
    return text[:200] if text and re.fullmatch(r"[A-Za-z0-9._:=+-]{1,200}", text) else None
