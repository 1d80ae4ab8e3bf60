"""What the portal keeps of a message: subject, bodies and attachments, taken from the
rendered outbox row or, for mail relayed as is (``{"raw": base64}``), from its MIME."""

from __future__ import annotations

import base64
import binascii
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import nh3

from carepost.messages.models import Message

# Tags and attributes a portal reader may see; links open in a new context without
# the referrer, and nothing active (scripts, forms, styles with URLs) survives.
SAFE_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "div", "em", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s", "small", "span",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=SAFE_TAGS,
        attributes={"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan"}},
        url_schemes={"https", "http", "mailto", "tel"},
        link_rel="noopener noreferrer nofollow",
    )


def _from_mime(raw: bytes) -> dict[str, Any]:
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    html_part = parsed.get_body(preferencelist=("html",))
    text_part = parsed.get_body(preferencelist=("plain",))
    attachments = []
    for part in parsed.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        attachments.append(
            {
                "filename": part.get_filename() or "attachment",
                "content_type": part.get_content_type(),
                "content": base64.b64encode(payload).decode("ascii"),
            }
        )
    return {
        "subject": str(parsed.get("subject", "")),
        "html": html_part.get_content() if html_part is not None else None,
        "text": text_part.get_content() if text_part is not None else "",
        "attachments": attachments,
    }


def snapshot(message: Message) -> dict[str, Any]:
    """The content to keep for pickup (sealed by the caller's column)."""
    body = message.body or {}
    if body.get("html") is None and not body.get("text") and body.get("raw"):
        try:
            found = _from_mime(base64.b64decode(body["raw"]))
        except (binascii.Error, ValueError):
            found = {"subject": "", "html": None, "text": "", "attachments": []}
        found["subject"] = found["subject"] or message.subject
        found["attachments"] = found["attachments"] + list(message.attachments or [])
        return found
    return {
        "subject": message.subject,
        "html": body.get("html"),
        "text": body.get("text") or "",
        "attachments": list(message.attachments or []),
    }


def attachment_meta(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "filename": a.get("filename", "attachment"),
            "content_type": a.get("content_type", "application/octet-stream"),
            "size": len(base64.b64decode(a.get("content", ""))),
        }
        for a in content.get("attachments") or []
    ]
