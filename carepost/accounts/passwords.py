"""Password hashing with argon2id (RFC 9106 parameters via argon2-cffi) and strength rules."""

from __future__ import annotations

import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from carepost.core.errors import ValidationFailed

_hasher = PasswordHasher()  # argon2id, RFC 9106 "low memory" profile
MIN_LENGTH = 12
# A valid hash of a random password, verified against when the user doesn't exist,
# so that sign-in takes the same time whether or not the email is known.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    check_password_strength(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValidationFailed(
            f"the password must be at least {MIN_LENGTH} characters", field="password"
        )
    if len(password) > 256:
        raise ValidationFailed("the password must be at most 256 characters", field="password")
    if len(set(password)) < 5:
        raise ValidationFailed("the password is too repetitive", field="password")


def generate_password() -> str:
    """A one-time password for a new user: 20 characters, easy to type."""
    alphabet = string.ascii_letters + string.digits
    groups = ["".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4)]
    return "-".join(groups)
