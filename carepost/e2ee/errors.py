"""Errors of end-to-end encryption. Messages name the field or the check that
failed, never an address or a message's content (both may be PHI)."""

from __future__ import annotations

from carepost.core.errors import CarepostError, ValidationFailed


class KeyRejected(ValidationFailed):
    """The certificate or key cannot be used (expired, revoked, wrong address, weak)."""

    code = "key-rejected"
    title = "Certificate or key rejected"


class CertificateUntrusted(KeyRejected):
    """Every S/MIME certificate of the recipient failed the organization's chain or
    revocation checks; ``trust_code`` says how (``revoked``, ``untrusted``,
    ``revocation_unknown``) for the delivery decision's reasons."""

    code = "certificate-untrusted"
    title = "Certificate not trusted"

    def __init__(self, detail: str, *, trust_code: str, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.trust_code = trust_code


class ProtectionFailed(CarepostError):
    """The message could not be signed or encrypted."""

    code = "protection-failed"
    status = 422
    title = "Message protection failed"
