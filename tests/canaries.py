"""The suite's PHI and secret canaries: every value registered here is searched for in
the logs of the whole run (see ``pytest_sessionfinish`` in conftest.py)."""

from __future__ import annotations

import secrets

PHI_CANARIES: set[str] = set()


def phi_value(kind: str = "name") -> str:
    """A unique, recognisable fake PHI value, registered for the log scan."""
    value = f"Phi{kind.capitalize()}{secrets.token_hex(4)}"
    PHI_CANARIES.add(value)
    return value


def register_secret(value: str) -> str:
    """Register a secret (password, API key, TOTP code) that must never be logged."""
    PHI_CANARIES.add(value)
    return value
