"""Fixtures of the delivery tests: async tests on asyncio (anyio's pytest plugin) and
transports built from settings, with short timeouts so failures show quickly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from carepost.core.config import load_settings
from carepost.delivery.smtp import SmtpTransport
from carepost.delivery.transport import transport_from_settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


FAST = {
    "smtp_helo_name": "sender.carepost.test",
    "smtp_connect_timeout": 2.0,
    "smtp_command_timeout": 2.0,
    "smtp_data_timeout": 2.0,
}


@pytest.fixture
def make_transport() -> Callable[..., SmtpTransport]:
    """``make_transport(smtp_mode="smarthost", smarthost_host=..., ...)``: settings over
    fast timeouts, through the public ``transport_from_settings``."""

    def make(**overrides: Any) -> SmtpTransport:
        transport = transport_from_settings(load_settings(**{**FAST, **overrides}))
        assert isinstance(transport, SmtpTransport)
        return transport

    return make
