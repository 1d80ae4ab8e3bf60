"""Fixtures for the accounts tests: a controllable clock for the sign-in services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


class Clock:
    """The time the accounts services see; starts at the real time, moves on demand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from carepost.accounts import apikeys, service, sessions, totp, webauthn

    fake = Clock()
    for module in (service, sessions, apikeys, totp, webauthn):
        monkeypatch.setattr(module, "utcnow", fake)
    return fake
