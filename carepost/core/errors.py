"""The one error root of carepost and its per-domain families.

Every error carries a stable ``code`` (used as the problem ``type`` suffix at the
HTTP edge), an HTTP-ish ``status`` hint, and optionally the ``field`` at fault.
Messages never contain PHI: callers pass field *names*, never field values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One invalid input, located by a JSON pointer or a dotted field name."""

    field: str
    message: str


class CarepostError(Exception):
    """Something went wrong in carepost."""

    code = "error"
    status = 500
    title = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.errors: list[FieldError] = list(errors or [])
        # Extension members of the problem document (RFC 9457 section 3.2): ids, never PHI.
        self.extensions: dict[str, str] = {}
        if field is not None:
            self.errors.append(FieldError(field=field, message=self.detail))
        super().__init__(self.detail)


class ConfigError(CarepostError):
    """The configuration is invalid."""

    code = "invalid-configuration"
    status = 500
    title = "Invalid configuration"


class ValidationFailed(CarepostError):
    """The input is invalid."""

    code = "validation-failed"
    status = 422
    title = "Validation failed"


class NotFound(CarepostError):
    """The object does not exist (or belongs to another organization)."""

    code = "not-found"
    status = 404
    title = "Not found"


class Conflict(CarepostError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409
    title = "Conflict"


class AuthenticationFailed(CarepostError):
    """Authentication is required or has failed."""

    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class PermissionDenied(CarepostError):
    """You are not allowed to do this."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class RateLimited(CarepostError):
    """Too many attempts; try again later."""

    code = "rate-limited"
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class CryptoError(CarepostError):
    """A cryptographic operation failed (wrong key, tampered ciphertext, missing key)."""

    code = "crypto-error"
    status = 500
    title = "Cryptographic failure"
