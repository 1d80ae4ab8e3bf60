"""Split an RFC 5322 message into the headers that stay outside the protection
and the MIME entity that is signed and/or encrypted, and join them again.

RFC 8551 section 3.1 and RFC 3156 section 3: what is protected is a MIME entity
(its ``Content-*`` headers and body) in canonical form: CRLF line ends and, for
signing, 7-bit content. The envelope headers (From, To, Cc, Reply-To, Subject,
Date, Message-ID, List-Unsubscribe, ...) stay in the clear outer header, where
the MTAs need them; carepost never puts PHI in a subject, so nothing leaks there.

Everything is bytes with CRLF line ends: a signed entity must reach the
receiver exactly as it was signed, so it is never parsed and serialized again.
"""

from __future__ import annotations

import base64
import copy
import secrets
from email.message import EmailMessage

from carepost.delivery.mime import POLICY
from carepost.e2ee.errors import ProtectionFailed

CRLF = b"\r\n"


def _is_entity_header(name: str) -> bool:
    # Content-Type, Content-Transfer-Encoding, Content-Disposition, Content-ID, ...:
    # the headers that describe the body move inside the protected entity.
    return name.lower().startswith("content-")


def inner_entity(message: EmailMessage) -> bytes:
    """The message's body as a MIME entity (its Content-* headers and body), CRLF,
    7-bit: the bytes that are signed and/or encrypted."""
    entity = copy.deepcopy(message)
    for name in {key.lower() for key in entity}:
        if not _is_entity_header(name):
            del entity[name]
    if entity.get("Content-Type") is None:
        entity["Content-Type"] = 'text/plain; charset="us-ascii"'
    data = entity.as_bytes(policy=POLICY)
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        # RFC 8551 section 3.1.2 (and RFC 3156 section 3): 7-bit before signing.
        raise ProtectionFailed("the message body is not 7-bit; encode it first") from None
    return data


def outer_headers(message: EmailMessage) -> bytes:
    """The header fields that stay outside, folded as policy SMTP writes them."""
    lines = [
        POLICY.fold_binary(name, value)
        for name, value in message.items()
        if not _is_entity_header(name) and name.lower() != "mime-version"
    ]
    return b"".join(lines) + b"MIME-Version: 1.0" + CRLF


def new_boundary() -> str:
    # Never found in base64 or quoted-printable text: "=_" cannot appear there.
    return "=_cp_" + secrets.token_hex(16)


def assemble(headers: bytes, content_headers: list[str], body: bytes) -> bytes:
    """Outer headers, the new Content-* headers, a blank line, the body (CRLF)."""
    head = headers + b"".join(line.encode("ascii") + CRLF for line in content_headers)
    if not body.endswith(CRLF):
        body += CRLF
    return head + CRLF + body


def base64_lines(data: bytes) -> bytes:
    """RFC 2045 section 6.8 base64 in lines of 76 characters, CRLF ends."""
    text = base64.b64encode(data)
    return b"".join(text[i : i + 76] + CRLF for i in range(0, len(text), 76))
