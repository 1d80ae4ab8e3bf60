"""Bounce and complaint samples (tests/delivery/samples/*.eml) with their placeholders
filled: our VERP return path, our X-Carepost-Message token, the Message-ID and the
recipient. The samples follow RFC 3464 / RFC 5965 examples and the shapes Postfix,
qmail, Exchange (Online and legacy), Gmail, Yahoo and Microsoft's JMRP send; names,
hosts and ids are anonymized."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from carepost.delivery import verp

SAMPLES = Path(__file__).parent / "samples"
SECRET = b"test-feedback-secret-0123456789abcdef"
BOUNCE_DOMAIN = "bounces.clinic.example"


@dataclass(frozen=True)
class Filled:
    data: bytes
    message_id: uuid.UUID
    return_path: str
    recipient: str
    header_message_id: str


def fill(
    name: str,
    *,
    message_id: uuid.UUID | None = None,
    recipient: str = "jane.patient@patients.example",
    secret: bytes = SECRET,
    bounce_domain: str = BOUNCE_DOMAIN,
    fbl_address: str = "fbl@bounces.clinic.example",
) -> Filled:
    message_id = message_id or uuid.uuid4()
    return_path = verp.return_path(message_id, bounce_domain=bounce_domain, secret=secret)
    header_id = f"{uuid.uuid4().hex}@clinic.example"
    text = (SAMPLES / name).read_text()
    for placeholder, value in {
        "__RETURN_PATH__": return_path,
        "__CAREPOST_ID__": verp.return_token(message_id, secret=secret),
        "__MESSAGE_ID__": header_id,
        "__RECIPIENT__": recipient,
        "__FBL_ADDRESS__": fbl_address,
    }.items():
        text = text.replace(placeholder, value)
    return Filled(text.encode(), message_id, return_path, recipient, header_id)
