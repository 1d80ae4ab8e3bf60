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
import re
import secrets
from email.message import EmailMessage

from carepost.delivery.mime import POLICY
from carepost.e2ee.errors import ProtectionFailed

CRLF = b"\r\n"


# A header field ends at a CRLF that no folding white space follows (RFC 5322 2.2.3).
FIELD_END = re.compile(rb"\r\n(?![ \t])")
DEFAULT_CONTENT_TYPE = b'Content-Type: text/plain; charset="us-ascii"'


def _is_entity_header(field: bytes) -> bool:
    # Content-Type, Content-Transfer-Encoding, Content-Disposition, Content-ID, ...:
    # the fields that describe the body move inside the protected entity.
    return field[:8].lower() == b"content-"


def split_message(message: EmailMessage) -> tuple[bytes, bytes]:
    """(outer header fields, protected entity) of the message as it goes on the wire.

    The message is serialized once, as :func:`carepost.delivery.mime.message_bytes`
    does, and its header fields are sorted without being folded again: the entity
    is byte for byte the body part of the plain message.
    """
    data = message.as_bytes(policy=POLICY)
    head, _, body = data.partition(CRLF + CRLF)
    fields = FIELD_END.split(head)
    inner = [field for field in fields if _is_entity_header(field)] or [DEFAULT_CONTENT_TYPE]
    outer = [
        field
        for field in fields
        if not _is_entity_header(field) and field[:13].lower() != b"mime-version:"
    ]
    entity = CRLF.join(inner) + CRLF + CRLF + body
    try:
        entity.decode("ascii")
    except UnicodeDecodeError:
        # RFC 8551 section 3.1.2 (and RFC 3156 section 3): 7-bit before signing.
        raise ProtectionFailed("the message body is not 7-bit; encode it first") from None
    return b"".join(field + CRLF for field in outer) + b"MIME-Version: 1.0" + CRLF, entity


def inner_entity(message: EmailMessage) -> bytes:
    """The message's body as a MIME entity (its Content-* headers and body), CRLF,
    7-bit: the bytes that are signed and/or encrypted."""
    return split_message(message)[1]


def outer_headers(message: EmailMessage) -> bytes:
    """The header fields that stay outside, as the wire carries them."""
    return split_message(message)[0]


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
