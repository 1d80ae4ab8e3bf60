"""Fixtures of the messages tests: an SMTP sink on loopback and a runtime that delivers to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from carepost.core.runtime import Runtime
from tests.messages.smtp_sink import SmtpSink, delivering_to, set_aside_queued


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def empty_queue(runtime: Runtime) -> None:
    """Nothing due in the shared database (a worker run claims every tenant's messages)."""
    set_aside_queued(runtime)


@pytest.fixture
def delivering(runtime: Runtime, smtp_sink: SmtpSink) -> Runtime:
    """The suite's runtime with its smarthost pointed at the sink."""
    return delivering_to(runtime, smtp_sink)
