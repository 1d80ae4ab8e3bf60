"""Fixtures of the messages tests: an SMTP sink on loopback and a runtime that delivers to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from carepost.core.runtime import Runtime
from tests.messages.smtp_sink import SmtpSink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def delivering(runtime: Runtime, smtp_sink: SmtpSink) -> Runtime:
    """The suite's runtime with its smarthost pointed at the sink."""
    settings = runtime.settings.model_copy(
        update={"outbox_smarthost_port": smtp_sink.port, "outbox_smarthost_host": "127.0.0.1"}
    )
    return Runtime(settings, runtime.database, runtime.keyring)
