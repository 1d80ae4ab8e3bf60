"""Complaint parsing: RFC 5965 Abuse Reporting Format (ARF) feedback reports into a
:class:`ComplaintReport`.

An ARF report is a ``multipart/report; report-type=feedback-report`` with a human
part, a ``message/feedback-report`` part (``Feedback-Type``, ``User-Agent``,
``Version``, optional ``Original-Mail-From``, ``Original-Rcpt-To``,
``Arrival-Date``, ``Source-IP``, ``Reported-Domain``) and the complained-about
message or its headers (``message/rfc822`` / ``text/rfc822-headers``).

Feedback loops redact differently: Yahoo keeps the headers but may drop the
recipient, Microsoft's JMRP puts the recipient in ``Original-Rcpt-To`` only, some
remove ``To`` altogether. What survives that names *our* message -- the
``X-Carepost-Message`` header, the ``Message-ID``, the VERP ``Return-Path`` /
``Original-Mail-From`` -- is collected here; the listener maps it to the message.

Some older loops send the complained-about message as a plain ``message/rfc822``
attachment from a known feedback address, without the report part; those are
read as ``abuse`` complaints with ``standard`` False.

:func:`parse_arf` returns None for anything that is not a complaint and never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from carepost.delivery.reports import (
    OriginalMessage,
    field_blocks,
    header_text,
    is_report,
    original_message,
    parse_leniently,
    walk,
)

FEEDBACK_TYPES = ("abuse", "fraud", "virus", "other", "not-spam", "auth-failure")
# Senders of non-ARF feedback loops (the attachment is the complained-about mail).
_LOOP_SENDERS = re.compile(
    r"staff@hotmail\.com|feedbackloop@|fbl@|scomp@aol\.net|complaints@", re.IGNORECASE
)


@dataclass(frozen=True)
class ComplaintReport:
    """A recipient's complaint about one of our messages."""

    feedback_type: str
    original: OriginalMessage
    user_agent: str | None = None
    original_recipient: str | None = None  # an address (PHI): memory only
    original_mail_from: str | None = None
    arrival_date: str | None = None
    source_ip: str | None = None
    reported_domain: str | None = None
    standard: bool = True

    @property
    def return_path(self) -> str | None:
        """Our envelope sender as the report quotes it (the VERP address)."""
        return self.original.return_path or self.original_mail_from

    @property
    def is_complaint(self) -> bool:
        """``not-spam`` reports the opposite of a complaint."""
        return self.feedback_type != "not-spam"


def _address(value: str | None) -> str | None:
    if not value:
        return None
    match = re.search(r"<([^<>\s]+)>", value)
    text = match.group(1) if match else value.strip().split()[0] if value.strip() else ""
    return text or None


def _standard(message: Message) -> ComplaintReport | None:
    for part in walk(message):
        if part.get_content_type() != "message/feedback-report":
            continue
        blocks = field_blocks(part)
        fields: dict[str, str] = {}
        for block in blocks:
            for name, value in block.items():
                fields.setdefault(name, value)
        raw_type = (fields.get("feedback-type") or "").strip().lower()
        if not raw_type:
            return None
        feedback_type = raw_type if raw_type in FEEDBACK_TYPES else "other"
        original = original_message(message)
        recipient = _address(fields.get("original-rcpt-to")) or _address(original.to)
        return ComplaintReport(
            feedback_type=feedback_type,
            original=original,
            user_agent=fields.get("user-agent"),
            original_recipient=recipient,
            original_mail_from=_address(fields.get("original-mail-from")),
            arrival_date=fields.get("arrival-date") or fields.get("received-date"),
            source_ip=fields.get("source-ip"),
            reported_domain=fields.get("reported-domain"),
        )
    return None


def _loop_attachment(message: Message) -> ComplaintReport | None:
    if not _LOOP_SENDERS.search(header_text(message, "From") or ""):
        return None
    if not any(part.get_content_type() == "message/rfc822" for part in walk(message)):
        return None
    original = original_message(message)
    if original.message_id is None and original.carepost_message is None:
        return None
    return ComplaintReport(
        feedback_type="abuse",
        original=original,
        original_recipient=_address(original.to),
        standard=False,
    )


def _read_arf(message: Message) -> ComplaintReport | None:
    if is_report(message, "feedback-report"):
        return _standard(message)
    if message.get_content_type() == "multipart/report":
        return None
    return _loop_attachment(message)


def parse_arf(data: bytes) -> ComplaintReport | None:
    """The complaint in ``data`` (a whole message), or None when it is not one."""
    return parse_leniently(data, _read_arf)
