"""Fixtures of the messages tests: an SMTP sink on loopback and a runtime that delivers to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from carepost.core.runtime import Runtime
from carepost.messages.models import Message
from tests.messages.smtp_sink import SmtpSink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def empty_queue(runtime: Runtime) -> None:
    """Nothing due in the shared database: a worker run here claims every tenant's
    messages, so earlier tests' queued messages are set aside first."""
    with runtime.database.session() as session:
        session.execute(
            update(Message)
            .where(Message.state.in_(("queued", "deferred", "sending")))
            .values(state="cancelled")
        )


@pytest.fixture
def delivering(runtime: Runtime, smtp_sink: SmtpSink, empty_queue: None) -> Runtime:
    """The suite's runtime with its smarthost pointed at the sink."""
    settings = runtime.settings.model_copy(
        update={
            "smtp_mode": "smarthost",
            "smarthost_host": "127.0.0.1",
            "smarthost_port": smtp_sink.port,
            "smarthost_tls": "none",
        }
    )
    return Runtime(settings, runtime.database, runtime.keyring)
