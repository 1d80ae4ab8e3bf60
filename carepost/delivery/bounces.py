"""Bounce parsing: RFC 3464 delivery status notifications, and the plain-text
bounces some MTAs still send, into one :class:`DsnReport`.

A standard DSN is a ``multipart/report; report-type=delivery-status`` (RFC 6522)
whose ``message/delivery-status`` part holds per-message fields and one block of
per-recipient fields (``Final-Recipient``, ``Action``, ``Status``,
``Diagnostic-Code``). Status codes follow RFC 3463: ``class.subject.detail``,
class 5 permanent, 4 transient, 2 success.

Classification (what the inbound handler does with a recipient):

* ``hard`` -- a permanent failure that says the address will never work: class 5,
  except the codes in :data:`SOFT_PERMANENT` (a full mailbox, our own give-up).
  It suppresses the address at once.
* ``soft`` -- class 4, ``Action: delayed``, or a soft permanent code: recorded only.
* ``success`` -- ``delivered``/``relayed``/``expanded`` notices: not a bounce.

Non-standard bounces (plain-text Postfix/qmail notices, old Exchange NDRs, Gmail's
text notices) are recognized by their sender and subject and read by heuristics:
the enhanced status code (``5.1.1``) or the SMTP reply code in the text, and the
address the text names; ``standard`` is False on those reports.

:func:`parse_dsn` returns None for anything that is not a bounce and never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from typing import Literal

from carepost.delivery.reports import (
    OriginalMessage,
    all_text,
    field_blocks,
    header_text,
    is_report,
    original_message,
    parse_leniently,
    walk,
)

Kind = Literal["hard", "soft", "success"]
# Permanent by class, yet not a sign that the address is dead.
SOFT_PERMANENT = frozenset(
    {
        "5.2.2",  # mailbox full
        "5.4.7",  # delivery time expired (a relay gave up retrying)
        "5.3.4",  # message too big for the system
    }
)
# What each well-known code means, for the event detail and the console.
KNOWN_CODES = {
    "5.1.1": "bad destination mailbox address",
    "5.1.2": "bad destination system address",
    "5.1.10": "recipient address has a null MX",
    "5.2.1": "mailbox disabled",
    "5.2.2": "mailbox full",
    "5.4.4": "unable to route",
    "5.7.1": "delivery not authorized, message refused",
    "5.7.26": "authentication (SPF/DKIM/DMARC) failed",
    "4.2.2": "mailbox full",
    "4.4.1": "no answer from host",
    "4.7.0": "temporary policy failure (greylisting)",
}
DELIVERY_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"(?<![\d.])([245])(\d)(\d)(?:[ -]|$)")
_ADDRESS = re.compile(
    r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63})>?"
)
_BOUNCE_SENDERS = re.compile(r"mailer-daemon|postmaster|mail delivery (sub)?system", re.IGNORECASE)
_BOUNCE_SUBJECTS = re.compile(
    r"undeliver|undelivered mail|delivery status notification|returned mail|failure notice"
    r"|delivery failure|mail delivery failed|delivery has failed|non.?delivery"
    r"|could not be delivered"
    r"|warning: could not send|delayed mail|delivery delayed",
    re.IGNORECASE,
)
_DELAY_WORDS = re.compile(
    r"will (continue to )?(retry|try)|has been delayed|delayed mail|temporar"
    r"|not yet been delivered",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's outcome. ``recipient`` is an address (PHI): keep it in memory."""

    recipient: str | None
    action: str
    status: str
    diagnostic: str | None
    kind: Kind
    original_recipient: str | None = None
    remote_mta: str | None = None

    @property
    def description(self) -> str:
        return KNOWN_CODES.get(self.status, "")


@dataclass(frozen=True)
class DsnReport:
    """A parsed bounce: per-recipient outcomes and what it quotes of our message."""

    recipients: tuple[RecipientStatus, ...]
    original: OriginalMessage
    reporting_mta: str | None = None
    original_envelope_id: str | None = None
    standard: bool = True

    @property
    def failures(self) -> tuple[RecipientStatus, ...]:
        return tuple(r for r in self.recipients if r.kind != "success")

    @property
    def hard(self) -> bool:
        return any(r.kind == "hard" for r in self.recipients)


def classify(status: str, action: str) -> Kind:
    """hard / soft / success from an RFC 3463 status and an RFC 3464 action."""
    if action in ("delivered", "relayed", "expanded") or status.startswith("2."):
        return "success"
    if action == "delayed" or status.startswith("4."):
        return "soft"
    if status.startswith("5.") and status not in SOFT_PERMANENT:
        return "hard"
    return "soft"


def _strip_type(value: str | None) -> str | None:
    """``rfc822; user@example.org`` -> ``user@example.org`` (RFC 3464 address-type)."""
    if not value:
        return None
    text = value.split(";", 1)[1] if ";" in value else value
    text = text.strip().strip("<>").strip()
    return text or None


def _status_from(text: str | None) -> str | None:
    if not text:
        return None
    match = _STATUS.search(text)
    if match:
        return ".".join(match.groups())
    code = _SMTP_CODE.search(text)
    if code:
        return f"{code.group(1)}.0.0"
    return None


def _recipient(fields: dict[str, str]) -> RecipientStatus | None:
    final = _strip_type(fields.get("final-recipient"))
    original = _strip_type(fields.get("original-recipient"))
    if final is None and original is None:
        return None
    diagnostic = fields.get("diagnostic-code")
    action = (fields.get("action") or "").split()[0].lower() if fields.get("action") else ""
    status = _status_from(fields.get("status")) or _status_from(diagnostic)
    if status is None:
        status = {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")
    if action not in ACTIONS:
        action = {"5": "failed", "4": "delayed"}.get(status[0], "delivered")
    return RecipientStatus(
        recipient=final or original,
        action=action,
        status=status,
        diagnostic=_strip_type(diagnostic) if diagnostic else None,
        kind=classify(status, action),
        original_recipient=original,
        remote_mta=_strip_type(fields.get("remote-mta")),
    )


def _standard(message: Message) -> DsnReport | None:
    for part in walk(message):
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        blocks = field_blocks(part)
        if not blocks:
            return None
        per_message = blocks[0] if "final-recipient" not in blocks[0] else {}
        recipients = tuple(r for r in map(_recipient, blocks) if r is not None)
        if not recipients:
            return None
        return DsnReport(
            recipients=recipients,
            original=original_message(message),
            reporting_mta=_strip_type(per_message.get("reporting-mta")),
            original_envelope_id=per_message.get("original-envelope-id"),
        )
    return None


def _looks_like_bounce(message: Message) -> bool:
    sender = header_text(message, "From") or ""
    subject = header_text(message, "Subject") or ""
    return bool(_BOUNCE_SENDERS.search(sender)) or bool(_BOUNCE_SUBJECTS.search(subject))


def _heuristic(message: Message) -> DsnReport | None:
    """Plain-text bounces: find a status code and the address it is about.

    Only the human-readable text is read, up to the returned message, whose headers
    would otherwise offer our own From address as "the recipient".
    """
    if not _looks_like_bounce(message):
        return None
    text = all_text(message)
    cut = re.search(
        r"^-+ ?(original message|this is a copy of|returned message|message headers)"
        r"|^Original message headers:|^Received: ",
        text,
        re.IGNORECASE | re.MULTILINE,
    )
    human = text[: cut.start()] if cut else text
    status = _status_from(_exchange_or_gmail_reply(human) or human)
    if status is None:
        return None
    delayed = bool(_DELAY_WORDS.search(human)) or status.startswith("4.")
    action = "delayed" if delayed else "failed"
    if delayed and status.startswith("5."):
        status = "4" + status[1:]
    addresses = [a for a in _ADDRESS.findall(human) if not _BOUNCE_SENDERS.search(a)]
    diagnostic = _diagnostic_line(human)
    return DsnReport(
        recipients=(
            RecipientStatus(
                recipient=addresses[0] if addresses else None,
                action=action,
                status=status,
                diagnostic=diagnostic,
                kind=classify(status, action),
            ),
        ),
        original=original_message(message),
        standard=False,
    )


def _exchange_or_gmail_reply(text: str) -> str | None:
    """The remote server's reply as Exchange ("Remote Server returned '550 5.1.1 ...'")
    and Gmail ("The response from the remote server was: ...") quote it."""
    match = re.search(
        r"Remote Server returned '([^']{1,500})'|response from the remote server was:\s*(.{1,500})"
        r"|said:\s*(.{1,500})|(#\d\.\d{1,3}\.\d{1,3})",
        text,
        re.IGNORECASE,
    )
    if match is None:
        return None
    return next(group for group in match.groups() if group)


def _diagnostic_line(text: str) -> str | None:
    for line in text.splitlines():
        if _STATUS.search(line) or _SMTP_CODE.search(line.strip()):
            return " ".join(line.split())[:500]
    return None


def _read_dsn(message: Message) -> DsnReport | None:
    if is_report(message, "delivery-status"):
        report = _standard(message)
        if report is not None:
            return report
    if is_report(message, "feedback-report"):
        return None
    return _heuristic(message)


def parse_dsn(data: bytes) -> DsnReport | None:
    """The bounce in ``data`` (a whole message), or None when it is not one."""
    return parse_leniently(data, _read_dsn)


def redact_addresses(text: str | None) -> str | None:
    """A server reply with every address in it replaced: replies often quote the
    recipient ("<jane@example.org>: user unknown"), which is PHI."""
    if text is None:
        return None
    return _ADDRESS.sub("<address>", text)[:500]
