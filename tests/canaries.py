"""The log canaries: every seeded PHI value and every secret the tests use.

No log line may contain one; ``pytest_sessionfinish`` in tests/conftest.py scans
the whole suite's log file for all of them at the end of the run.
"""

from __future__ import annotations

import re
import secrets

# Every PHI value a test seeds is registered here; no log line may contain one.
PHI_CANARIES: set[str] = set()
# Every secret a test uses (API keys, passwords, session tokens, TOTP secrets and
# codes, recovery codes) is registered here too; no log line may contain one.
SECRET_CANARIES: set[str] = set()
# Canaries shorter than this (six-digit TOTP codes) only count as whole words, so
# that a code does not "leak" by matching the digits of a timestamp or request id.
SHORT_CANARY = 10


def phi_value(kind: str = "name") -> str:
    """A unique, recognisable fake PHI value, registered for the log scan."""
    value = f"Phi{kind.capitalize()}{secrets.token_hex(4)}"
    PHI_CANARIES.add(value)
    return value


def secret_value(value: str) -> str:
    """Register a secret that a test uses, for the log scan; returns it unchanged."""
    if value:
        SECRET_CANARIES.add(value)
    return value


def new_password() -> str:
    """A strong password for a test user, registered for the log scan."""
    return secret_value(f"Pw-{secrets.token_urlsafe(12)}")


def leaked_canaries(content: str, canaries: set[str]) -> list[str]:
    """The canaries found in ``content`` (short ones only as whole tokens)."""
    leaked = []
    for canary in canaries:
        if len(canary) >= SHORT_CANARY:
            found = canary in content
        else:
            found = re.search(rf"(?<![\w.:]){re.escape(canary)}(?![\w])", content) is not None
        if found:
            leaked.append(canary)
    return sorted(leaked)
