"""Build the RFC 5322 message that goes on the wire, with the stdlib ``email`` package.

What comes out, for an :class:`OutgoingMessage`:

- ``From`` (display name RFC 2047-encoded when not ASCII), ``To``, ``Reply-To``,
  ``Subject`` (RFC 2047 when not ASCII), ``Date``, ``Message-ID`` on the sender's
  domain and ``MIME-Version``;
- the body as ``text/plain`` alone, or ``multipart/alternative`` (text first, then
  HTML: RFC 2046 section 5.1.4 puts the preferred part last), wrapped in
  ``multipart/mixed`` when there are attachments;
- quoted-printable for the text parts (UTF-8, lines of any length stay under 78
  octets; RFC 2045 section 6.7) and base64 for attachments;
- ``List-Unsubscribe`` with ``mailto:`` and HTTPS URIs (RFC 2369) and
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` with the HTTPS one (RFC 8058).

:func:`message_bytes` serializes with ``policy.SMTP``: CRLF line ends and folded
headers, so no line exceeds the 998 octets of RFC 5322 section 2.1.1.

Header injection is refused, not cleaned: a CR or LF in any value that becomes a
header raises :class:`HeaderInjection` (the caller's input is wrong; silently
dropping part of it would send something else than was asked). The errors name
the field, never its value (a recipient's name may be PHI).
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import hashlib
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from types import MappingProxyType

from email_validator import EmailNotValidError, validate_email

from carepost.core.emails import is_plain_email
from carepost.core.errors import ValidationFailed


class _HeaderClasses(HeaderRegistry):
    """email's registry, remembering the classes it makes.

    ``HeaderRegistry.__getitem__`` creates a new class (``type(...)``) on every
    header set or parsed: about a third of the time of building a message, which
    the delivery worker does for every message. The classes depend on the name only.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


# Line ends we write; the SMTP transport sends these bytes as they are.
POLICY = email.policy.SMTP.clone(header_factory=_HeaderClasses())
# What message_bytes writes with: raw values (set_raw) as they were folded here.
WRITE_POLICY = POLICY.clone(refold_source="none")
# RFC 5322 section 3.6.8: printable US-ASCII except the colon.
FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")
# RFC 6838 section 4.2 type and subtype names.
RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
CONTENT_TYPE = re.compile(rf"^{RESTRICTED_NAME}/{RESTRICTED_NAME}$")
# RFC 5322 section 3.6.4 msg-id, without the angle brackets: dot-atom-text "@" dot-atom-text.
MESSAGE_ID = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,200}@[A-Za-z0-9.-]{1,253}$")
# Header values longer than this are refused: a folded header stays readable and
# every line stays far under 998 octets.
MAX_HEADER_VALUE = 2000
# A List-Unsubscribe URI alone on its folded line stays under 998 octets.
MAX_URI = 900
# Headers carepost writes itself: extra headers may not replace or double them.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Sender",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "DKIM-Signature",
        "Return-Path",
        "Received",
    )
)
ONE_CLICK = "List-Unsubscribe=One-Click"
LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_LINE_BREAK = re.compile("[" + "".join(sorted(LINE_BREAKS)) + "]")
CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class MessageError(ValidationFailed):
    """The message cannot be built as given."""

    code = "invalid-message"
    title = "Invalid message"


class HeaderInjection(MessageError):
    """A header value contains a line break (CR, LF or another): refused to prevent
    header injection."""

    code = "header-injection"
    title = "Header injection refused"


@dataclass(frozen=True)
class Attachment:
    """A file sent with the message; always base64 on the wire."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class OutgoingMessage:
    """Everything the message on the wire is built from (see the module docstring)."""

    from_address: str
    from_name: str | None
    to_address: str
    to_name: str | None
    reply_to: str | None
    subject: str
    html: str | None
    text: str
    attachments: tuple[Attachment, ...] = ()
    # Without <>; generated on the From domain when None.
    message_id: str | None = None
    list_unsubscribe_mailto: str | None = None
    # The HTTPS one-click URI (RFC 8058): adds List-Unsubscribe-Post.
    list_unsubscribe_url: str | None = None
    # E.g. X-Carepost-Message (an opaque id, never PHI).
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _no_line_breaks(value: str, field_name: str) -> str:
    # Every character str.splitlines() breaks at: the email package folds on those too.
    if _LINE_BREAK.search(value):
        raise HeaderInjection(
            f"{field_name} contains a line break (CR or LF), which would start a new header",
            field=field_name,
        )
    if len(value) > MAX_HEADER_VALUE:
        raise MessageError(
            f"{field_name} is longer than {MAX_HEADER_VALUE} characters", field=field_name
        )
    return value


def _single_line(value: str, field_name: str) -> str:
    """A display name or subject: no line breaks; other controls and runs of blanks
    become one space, because header folding would not keep them anyway."""
    _no_line_breaks(value, field_name)
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", value).split())


def _address(value: str, field_name: str) -> str:
    """An address in the ASCII form SMTP without SMTPUTF8 carries (IDN domains in punycode)."""
    _no_line_breaks(value, field_name)
    if is_plain_email(value):  # email-validator's answer, without its cost
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise MessageError(f"{field_name} is not a valid email address", field=field_name) from None
    return checked.ascii_email or checked.normalized


def domain_of(address: str) -> str:
    """The domain part of an address, lower-cased (what DKIM ``d=`` and Message-IDs use)."""
    return address.rpartition("@")[2].lower()


def _mailbox(address: str, name: str | None, field_name: str) -> Address:
    checked = _address(address, field_name)
    local, _, domain = checked.rpartition("@")
    display = _single_line(name, f"{field_name}_name") if name else ""
    return Address(display_name=display, username=local, domain=domain)


def _encoded_words(header: str, value: str) -> str:
    """``value`` as RFC 2047 encoded-words only, folded at 78 octets (section 2).

    The email package's own folder can leave an encoded-word next to plain text
    when it splits a long non-ASCII phrase, and the white space it adds there is
    then part of the decoded text (section 6.2); between encoded-words it is not.
    """
    return Header(value, "utf-8", header_name=header).encode(linesep="\n", maxlinelen=78)


def _set_header(message: EmailMessage, header: str, value: str | Address) -> None:
    """Set a header; non-ASCII display names and subjects go in as encoded-words
    that the SMTP policy then keeps as they are (it refolds only over-long lines)."""
    if isinstance(value, Address):
        if value.display_name.isascii():
            message[header] = value
            return
        encoded = _encoded_words(header, value.display_name)
        last = encoded.rpartition("\n")[2]
        prefix = len(header) + 2 if last == encoded else 0
        # The address on the last line when it fits, else on a line of its own.
        fold = " " if prefix + len(last) + len(value.addr_spec) + 3 <= 78 else "\n "
        message.set_raw(header, f"{encoded}{fold}<{value.addr_spec}>")
    elif value.isascii():
        message[header] = value
    else:
        message.set_raw(header, _encoded_words(header, value))


def _message_id(message: OutgoingMessage, from_address: str) -> str:
    if message.message_id is None:
        # Random, so it tells nothing about the host, the process or the time.
        return f"<{uuid.uuid4().hex}@{domain_of(from_address)}>"
    _no_line_breaks(message.message_id, "message_id")
    if not MESSAGE_ID.match(message.message_id):
        raise MessageError(
            "message_id must look like local@domain, without angle brackets or spaces",
            field="message_id",
        )
    return f"<{message.message_id}>"


def _list_unsubscribe(message: OutgoingMessage) -> list[str]:
    uris = []
    if message.list_unsubscribe_mailto is not None:
        mailto = _no_line_breaks(message.list_unsubscribe_mailto, "list_unsubscribe_mailto")
        if not mailto.startswith("mailto:") or re.search(r"[\s<>,]", mailto):
            raise MessageError(
                "list_unsubscribe_mailto must be a mailto: URI without spaces, <, > or commas",
                field="list_unsubscribe_mailto",
            )
        uris.append(f"<{mailto}>")
    if message.list_unsubscribe_url is not None:
        url = _no_line_breaks(message.list_unsubscribe_url, "list_unsubscribe_url")
        # RFC 8058 section 3.1: the one-click URI must be HTTPS.
        if not url.startswith("https://") or re.search(r"[\s<>,]", url):
            raise MessageError(
                "list_unsubscribe_url must be an https:// URL without spaces, <, > or commas",
                field="list_unsubscribe_url",
            )
        uris.append(f"<{url}>")
    if any(len(uri) > MAX_URI for uri in uris):
        raise MessageError(
            f"a List-Unsubscribe URI is longer than {MAX_URI} characters",
            field="list_unsubscribe_url",
        )
    return uris


def _extra_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    checked = []
    for name, value in headers.items():
        if not FIELD_NAME.match(name):
            raise MessageError("a header name must be printable ASCII without ':'", field="headers")
        if name.lower() in RESERVED_HEADERS:
            raise MessageError(f"the {name} header is set by carepost itself", field="headers")
        clean = _no_line_breaks(value, f"headers.{name}")
        if CONTROLS.search(clean):
            raise MessageError(f"the {name} header contains control characters", field="headers")
        checked.append((name, clean))
    return checked


def _attachment_parts(attachment: Attachment, index: int) -> tuple[str, str, str]:
    where = f"attachments.{index}"
    filename = _single_line(attachment.filename, f"{where}.filename")
    if not filename:
        raise MessageError("an attachment needs a file name", field=f"{where}.filename")
    content_type = _no_line_breaks(attachment.content_type, f"{where}.content_type")
    if not CONTENT_TYPE.match(content_type):
        raise MessageError(
            "content_type must look like type/subtype", field=f"{where}.content_type"
        )
    maintype, _, subtype = content_type.lower().partition("/")
    return filename, maintype, subtype


def build_message(message: OutgoingMessage, *, now: datetime | None = None) -> EmailMessage:
    """The message, checked and structured; see the module docstring for the shape."""
    sender = _mailbox(message.from_address, message.from_name, "from_address")
    result = EmailMessage(policy=POLICY)
    _set_header(result, "From", sender)
    _set_header(result, "To", _mailbox(message.to_address, message.to_name, "to_address"))
    if message.reply_to is not None:
        result["Reply-To"] = _mailbox(message.reply_to, None, "reply_to")
    _set_header(result, "Subject", _single_line(message.subject, "subject"))
    result["Date"] = format_datetime(now or datetime.now(UTC))
    result["Message-ID"] = _message_id(message, sender.addr_spec)
    result["MIME-Version"] = "1.0"
    unsubscribe = _list_unsubscribe(message)
    if unsubscribe:
        # Raw, folded between the URIs only: refolded by the policy, a long URI would
        # become encoded-words, which no reader takes for a URI (RFC 2369).
        result.set_raw("List-Unsubscribe", unsubscribe_field(unsubscribe))
    if message.list_unsubscribe_url is not None:
        result["List-Unsubscribe-Post"] = ONE_CLICK
    for name, value in _extra_headers(message.headers):
        result[name] = value
    # Quoted-printable even for plain ASCII: a line longer than 998 octets or a
    # trailing blank survives any relay, and 8BITMIME is never needed.
    result.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if message.html is not None:
        result.add_alternative(
            message.html, subtype="html", charset="utf-8", cte="quoted-printable"
        )
    for index, attachment in enumerate(message.attachments):
        filename, maintype, subtype = _attachment_parts(attachment, index)
        # Bytes content is always base64 (email.contentmanager), text types included.
        result.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=filename
        )
    _finish_parts(result)
    return result


def _finish_parts(message: EmailMessage) -> None:
    """MIME-Version only at the top (RFC 2045 section 4), and boundaries derived from
    the Message-ID, so the same message serializes to the same bytes. ``=_`` cannot
    occur in quoted-printable or base64 content (RFC 2045 section 5.1 advises it)."""
    seed = hashlib.sha256(str(message["Message-ID"]).encode()).hexdigest()[:24]
    for index, part in enumerate(message.walk()):
        if part is not message:
            del part["MIME-Version"]
        if part.is_multipart():
            part.set_boundary(f"=_{seed}_{index}")


def message_bytes(message: EmailMessage) -> bytes:
    """The message as SMTP DATA carries it: CRLF line ends, headers folded (policy
    SMTP); the raw values set here (encoded-words, URI lists) are written as folded."""
    return message.as_bytes(policy=WRITE_POLICY)


# --- The direct writer ---------------------------------------------------------------
#
# The delivery worker builds every message it sends: through the email package that
# costs more than both DKIM signatures (header objects parsed and refolded, the
# generator, quoted-printable in Python). :func:`build_bytes` writes the same layout
# straight to bytes: the same checks (the helpers above, in the same order, so the
# same errors), the same header order and boundaries, quoted-printable and base64
# from ``binascii`` (C). A header it would have to fold, other than the lists of
# URIs it folds itself, goes through :func:`build_message` instead (which folds
# it the email package's way); tests/delivery/test_mimefast_writer.py checks the
# two agree, part by part, as the email parser reads them.

_CRLF = b"\r\n"
# ASCII display names the writer takes as they are, or as a quoted-string when they
# hold one of RFC 5322's specials (``.`` and ``,`` are common: "Dr. Lee, MD").
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]*$")
_QUOTABLE_NAME = re.compile(r"^[A-Za-z0-9 !#$%&'*+/=?^_`{|}~.,()<>@:;\[\]-]*$")
# ASCII file names written as a quoted parameter value without escapes.
_PLAIN_FILENAME = re.compile(r"^[A-Za-z0-9 ._()+,-]+$")
# Printable ASCII, blanks included: a header value the writer puts as it is.
_PLAIN_VALUE = re.compile(r"^[ -~]*$")
MAX_LINE = 78  # RFC 5322 section 2.1.1's recommended limit, which folding keeps


class _Unusual(Exception):
    """Something the writer leaves to the email package (a header to refold)."""


def _plain(name: str, value: str) -> bytes:
    """``Name: value`` for a printable-ASCII value that fits on one line."""
    line = f"{name}: {value}"
    if len(line) > MAX_LINE or "=?" in value or not _PLAIN_VALUE.match(value):
        raise _Unusual(name)
    return line.encode("ascii") + _CRLF


def _raw_lines(name: str, folded: str) -> bytes:
    """A value already folded with LF (encoded-words): as the SMTP policy writes a
    raw value whose lines all fit."""
    lines = folded.splitlines()
    if len(lines[0]) + len(name) + 2 > MAX_LINE or any(len(x) > MAX_LINE for x in lines[1:]):
        raise _Unusual(name)
    return (f"{name}: " + "\r\n".join(lines)).encode("ascii") + _CRLF


def _mailbox_field(name: str, address: Address) -> bytes:
    display = address.display_name
    if not display:
        return _plain(name, address.addr_spec)
    if display.isascii():
        if _PLAIN_NAME.match(display):
            return _plain(name, f"{display} <{address.addr_spec}>")
        if _QUOTABLE_NAME.match(display):
            return _plain(name, f'"{display}" <{address.addr_spec}>')
        raise _Unusual(name)
    encoded = _encoded_words(name, display)
    last = encoded.rpartition("\n")[2]
    prefix = len(name) + 2 if last == encoded else 0
    fold = " " if prefix + len(last) + len(address.addr_spec) + 3 <= 78 else "\n "
    return _raw_lines(name, f"{encoded}{fold}<{address.addr_spec}>")


def _uri_list(name: str, uris: list[str]) -> bytes:
    """``<uri>, <uri>`` (RFC 2369), each URI on a line of its own when they do not
    fit on one: a URI is never split or encoded (a reader must find it as it is)."""
    line = f"{name}: " + ", ".join(uris)
    if len(line) > MAX_LINE:
        line = f"{name}: " + ",\r\n ".join(uris)
    return line.encode("ascii") + _CRLF


def unsubscribe_field(uris: list[str]) -> str:
    """The List-Unsubscribe value, folded (LF) between URIs when it does not fit on
    one line: what :func:`build_message` sets raw (the SMTP policy would otherwise
    turn a long URI into encoded-words, which no reader takes for a URI)."""
    value = ", ".join(uris)
    if len("List-Unsubscribe: ") + len(value) > MAX_LINE:
        return ",\n ".join(uris)
    return value


def _quoted_printable(text: str) -> bytes:
    """``text`` as UTF-8 quoted-printable with CRLF line ends (RFC 2045 section 6.7:
    lines of at most 76 octets, trailing blanks encoded), by ``binascii``. The line
    breaks are those the email package sees in the UTF-8 bytes (CR, LF, CRLF)."""
    body = _CRLF.join(text.encode("utf-8").splitlines()) + _CRLF
    return binascii.b2a_qp(body, istext=True)


def _base64(content: bytes) -> bytes:
    """base64 in lines of 76 characters (57 octets), CRLF line ends."""
    return base64.encodebytes(content).replace(b"\n", _CRLF)


def _text_part(subtype: str, text: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii") + _quoted_printable(text)


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> tuple[bytes, bytes]:
    """The Content-Type field and the body of a multipart, as the email generator
    lays them out (no preamble or epilogue)."""
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n'.encode("ascii")
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    body = (
        f"--{boundary}\r\n".encode("ascii")
        + delimiter.join(parts)
        + f"\r\n--{boundary}--\r\n".encode("ascii")
    )
    return head, body


def _attachment_bytes(attachment: Attachment, index: int) -> bytes:
    filename, maintype, subtype = _attachment_parts(attachment, index)
    if filename.isascii():
        if not _PLAIN_FILENAME.match(filename):
            raise _Unusual("Content-Disposition")
        disposition = f'attachment; filename="{filename}"'
    else:
        disposition = "attachment; filename*=utf-8''" + urllib.parse.quote(filename, safe="")
    if len(disposition) + len("Content-Disposition: ") > MAX_LINE:
        raise _Unusual("Content-Disposition")
    return (
        f"Content-Type: {maintype}/{subtype}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: {disposition}\r\n\r\n"
    ).encode("ascii") + _base64(attachment.content)


@lru_cache(maxsize=256)
def _from_field(address: str, name: str | None) -> tuple[bytes, str]:
    """The From header and its address: a worker sends batch after batch from the same
    few senders, so each is checked and written once."""
    sender = _mailbox(address, name, "from_address")
    return _mailbox_field("From", sender), sender.addr_spec


@lru_cache(maxsize=4)
def _date_field(now: datetime) -> bytes:
    """The Date header of a second (RFC 5322 dates have no fractions of one): the
    messages of a batch mostly share it."""
    return _plain("Date", format_datetime(now))


def _written(message: OutgoingMessage, now: datetime | None) -> bytes:
    from_field, sender_address = _from_field(message.from_address, message.from_name)
    head = [from_field]
    recipient = _mailbox(message.to_address, message.to_name, "to_address")
    head.append(_mailbox_field("To", recipient))
    if message.reply_to is not None:
        head.append(_plain("Reply-To", _mailbox(message.reply_to, None, "reply_to").addr_spec))
    subject = _single_line(message.subject, "subject")
    if subject.isascii():
        head.append(_plain("Subject", subject))
    else:
        head.append(_raw_lines("Subject", _encoded_words("Subject", subject)))
    head.append(_date_field((now or datetime.now(UTC)).replace(microsecond=0)))
    message_id = _message_id(message, sender_address)
    head.append(_plain("Message-ID", message_id))
    head.append(b"MIME-Version: 1.0\r\n")
    unsubscribe = _list_unsubscribe(message)
    if unsubscribe:
        head.append(_uri_list("List-Unsubscribe", unsubscribe))
    if message.list_unsubscribe_url is not None:
        head.append(b"List-Unsubscribe-Post: " + ONE_CLICK.encode("ascii") + _CRLF)
    for name, value in _extra_headers(message.headers):
        head.append(_plain(name, value))
    attachments = [_attachment_bytes(a, i) for i, a in enumerate(message.attachments)]
    # The same boundaries as _finish_parts: parts numbered in walk() order.
    seed = hashlib.sha256(message_id.encode("ascii")).hexdigest()[:24]
    text = _text_part("plain", message.text)
    if message.html is None:
        content_head, _, content_body = text.partition(b"\r\n\r\n")
        content_head += _CRLF
    else:
        html = _text_part("html", message.html)
        alternative_number = 1 if attachments else 0
        content_head, content_body = _multipart(
            "alternative", f"=_{seed}_{alternative_number}", [text, html]
        )
    if attachments:
        inner = content_head + _CRLF + content_body
        content_head, content_body = _multipart("mixed", f"=_{seed}_0", [inner, *attachments])
    return b"".join(head) + content_head + _CRLF + content_body


def build_bytes(message: OutgoingMessage, *, now: datetime | None = None) -> bytes:
    """The message as SMTP DATA carries it, written directly (see above); the same
    checks and layout as ``message_bytes(build_message(message))``."""
    try:
        return _written(message, now)
    except _Unusual:
        return message_bytes(build_message(message, now=now))
