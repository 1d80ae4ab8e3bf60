"""A received or built RFC 5322 message as the :class:`MessageContent` a scan reads.

For the SMTP gateway and the sending path: the subject, the first ``text/plain`` and
``text/html`` bodies that are not attachments, and every other leaf part as an
attachment (its decoded bytes, type and file name). Nested messages
(``message/rfc822``) are walked like the rest. Bounds: the number of parts and the
nesting depth; what lies beyond them is reported as skipped, so the scan says it is
incomplete. Encrypted parts (S/MIME ``application/pkcs7-mime``, PGP/MIME
``application/pgp-encrypted``) have no readable text and count as unscannable
attachments, like images.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage, Message

from carepost.dlp.extraction import Attachment, MessageContent, ScanLimits
from carepost.dlp.findings import Fingerprinter, ScanResult, SkippedPart
from carepost.dlp.scanner import NO_RULES, TenantRules, scan_message

MAX_PARTS = 200
MAX_DEPTH = 10


@dataclass(frozen=True)
class MimeContent:
    content: MessageContent
    skipped: tuple[SkippedPart, ...]


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def content_from_mime(raw: bytes | Message) -> MimeContent:
    """The parts of a message, ready to scan (the caller bounds the raw size)."""
    message = (
        raw
        if isinstance(raw, Message)
        else email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    )
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    skipped: list[SkippedPart] = []
    count = 0

    def walk(part: Message, depth: int) -> None:
        nonlocal text, html, count
        count += 1
        if count > MAX_PARTS or depth > MAX_DEPTH:
            skipped.append(SkippedPart("attachment", "too_large"))
            return
        if part.is_multipart():
            for child in part.get_payload() or []:
                if isinstance(child, Message):
                    walk(child, depth + 1)
            return
        content_type = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        name = part.get_filename() or ""
        if disposition != "attachment" and not name:
            if content_type == "text/plain" and text is None:
                text = _text(part)
                return
            if content_type == "text/html" and html is None:
                html = _text(part)
                return
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        charset = part.get_content_charset()
        full_type = f"{content_type}; charset={charset}" if charset else content_type
        attachments.append(Attachment(name, full_type, data))

    walk(message, 0)
    subject = str(message.get("subject", "") or "")
    return MimeContent(
        MessageContent(subject=subject, text=text, html=html, attachments=attachments),
        tuple(skipped),
    )


def scan_mime(
    raw: bytes | Message,
    *,
    keys: Fingerprinter,
    rules: TenantRules = NO_RULES,
    limits: ScanLimits | None = None,
) -> ScanResult:
    """Scan a whole RFC 5322 message (the gateway's and the sending path's entry)."""
    parsed = content_from_mime(raw)
    return scan_message(
        parsed.content, keys=keys, rules=rules, limits=limits, skipped_before=parsed.skipped
    )
