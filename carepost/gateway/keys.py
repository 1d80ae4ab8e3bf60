"""Key discovery from mail relayed through the gateway.

A relayed message that is S/MIME-signed (``multipart/signed`` with an
``application/pkcs7-signature`` part, or an opaque ``application/pkcs7-mime;
smime-type=signed-data``) or carries an ``Autocrypt`` header offers its sender's
certificate or key to the tenant's key directory (source ``gateway``), through the
directory's own :func:`~carepost.e2ee.directory.import_from_message`.

It runs after the message is committed and after the client heard ``250``
(:class:`~carepost.gateway.server.GatewayHandler` hands it to a worker thread):
nothing here can fail, delay or roll back the relay. An S/MIME signature is
checked with ``openssl cms -verify`` (the signature over the content, not the
chain: the directory checks the certificate itself); a certificate whose signature
does not verify is not imported, and the reason is logged without any address or
content.
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from email.message import Message as MimeMessage
from pathlib import Path

from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.errors import ValidationFailed
from carepost.core.logging import get_logger
from carepost.e2ee import directory

log = get_logger(__name__)

SOURCE = "gateway"
OPENSSL_SECONDS = 20
_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_OPAQUE_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")


def smime_signed(parsed: MimeMessage) -> bool:
    """Whether the message is S/MIME-signed (detached or opaque), at its top level."""
    content_type = parsed.get_content_type()
    if content_type == "multipart/signed":
        protocol = str(parsed.get_param("protocol", "")).lower()
        return protocol in _SIGNATURE_TYPES
    if content_type in _OPAQUE_TYPES:
        return str(parsed.get_param("smime-type", "")).lower() == "signed-data"
    return False


def offers_keys(parsed: MimeMessage) -> bool:
    """Whether the message may carry a key for its sender (cheap: headers only)."""
    return smime_signed(parsed) or parsed.get("Autocrypt") is not None


def signature_problem(raw: bytes) -> str | None:
    """None when the S/MIME signature over the content verifies, else a short reason
    (no PHI): ``bad_signature``, ``verify_timeout``."""
    with tempfile.TemporaryDirectory(prefix="carepost-gwkeys-") as directory_name:
        path = Path(directory_name) / "message.eml"
        path.write_bytes(raw)
        try:
            result = subprocess.run(
                ["openssl", "cms", "-verify", "-noverify", "-in", str(path),
                 "-out", "/dev/null"],
                capture_output=True, timeout=OPENSSL_SECONDS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "verify_timeout"
    return None if result.returncode == 0 else "bad_signature"


def discover(
    session: Session,
    tenant_id: uuid.UUID,
    raw: bytes,
    parsed: MimeMessage,
    *,
    actor: audit.Actor,
    client_id: uuid.UUID,
) -> int:
    """Offer the keys a relayed message carries to the tenant's directory; the number
    of keys added or refreshed. Never raises for what the message holds."""
    include_smime = smime_signed(parsed)
    if include_smime:
        problem = signature_problem(raw)
        if problem is not None:
            log.warning("gateway.keys_signature_refused", client=str(client_id), reason=problem)
            include_smime = False
    if not include_smime and parsed.get("Autocrypt") is None:
        return 0
    try:
        rows = directory.import_from_message(
            session, tenant_id, raw, actor=actor, source=SOURCE, include_smime=include_smime
        )
    except ValidationFailed:
        log.warning("gateway.keys_refused", client=str(client_id), reason="no_valid_from")
        return 0
    log.info("gateway.keys_discovered", client=str(client_id), keys=len(rows))
    return len(rows)
