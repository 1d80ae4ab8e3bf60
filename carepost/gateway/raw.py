"""The bytes of a gateway message at delivery: the customer's MIME as it came, with
carepost's own headers put in front only where needed.

* ``X-Carepost-Message`` (the signed token that finds the message again from a
  bounce that quotes only the headers); any such header the customer sent is
  dropped, so nobody can forge one;
* ``Message-ID`` when the message has none (stable across retries).

The delivery loop DKIM-signs the result with the tenant's keys for the From domain,
like every other message (:func:`carepost.messages.delivery.prepare_envelopes`).
"""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any

_HEADER_END = re.compile(rb"\r\n\r\n")
_OWN_HEADER = re.compile(rb"^x-carepost-message:", re.IGNORECASE)


def is_raw(body: dict[str, Any]) -> bool:
    return "raw" in body


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines) and the rest."""
    found = _HEADER_END.search(raw)
    head, rest = (raw[: found.start() + 2], raw[found.start() + 2 :]) if found else (raw, b"")
    fields: list[bytes] = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, rest


def gateway_message_bytes(
    message_id: uuid.UUID, body: dict[str, Any], *, from_domain: str, token: str
) -> bytes:
    """The relayed bytes as they go out, with ``token`` (the message's return token,
    made once for this header and the return path) in ``X-Carepost-Message``."""
    raw = base64.b64decode(body["raw"])
    fields, rest = _split(raw)
    kept = [f for f in fields if not _OWN_HEADER.match(f)]
    added = [b"X-Carepost-Message: " + token.encode("ascii")]
    if not any(f.lower().startswith(b"message-id:") for f in kept):
        added.append(f"Message-ID: <{message_id}@{from_domain}>".encode("ascii"))
    return b"\r\n".join(added + kept) + b"\r\n" + rest
