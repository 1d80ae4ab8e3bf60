"""``kill -9`` of a worker mid-batch loses no message, and repeats only the documented window.

A real ``carepost worker`` child process delivers to an aiosmtpd receiver that
counts every message it accepts (by its X-Carepost-Message header). The worker
is killed with SIGKILL while it is sending; a second worker takes over once the
dead one's lease has expired. Every message must arrive, and a message may
arrive twice only if it was in flight (state ``sending``) when the first worker
died: the window between the receiver's 250 and our commit (docs/email-delivery.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.core import migrations
from carepost.core.config import Settings
from carepost.core.runtime import Runtime, build_runtime
from carepost.messages.models import Message
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages
from carepost.tenancy import service as tenancy
from tests.conftest import TEST_SENDING_DOMAINS, add_verified_domains
from tests.environment import carepost_command, child_environment, own_database
from tests.messages.smtp_sink import SmtpSink

MESSAGES = 400
CONCURRENCY = 4
LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def crash_settings(tmp_path_factory, log_file) -> Iterator[Settings]:
    # A database of its own: a killed process must not share the suite's SQLite file.
    with own_database(tmp_path_factory.mktemp("outbox-crash"), log_file, "outbox_crash") as s:
        yield s


@pytest.fixture(scope="module")
def crash_runtime(crash_settings: Settings) -> Iterator[Runtime]:
    built = build_runtime(crash_settings)
    migrations.upgrade(built.database.engine)
    yield built
    built.close()


def _states(runtime: Runtime) -> dict[str, set[str]]:
    with runtime.database.session() as session:
        rows = session.execute(select(Message.id, Message.state)).all()
    states: dict[str, set[str]] = {}
    for message_id, state in rows:
        states.setdefault(state, set()).add(str(message_id))
    return states


def _worker(settings: Settings, port: int, log_path) -> subprocess.Popen:
    env = child_environment(
        settings,
        CAREPOST_SMTP_MODE="smarthost",
        CAREPOST_SMARTHOST_HOST="127.0.0.1",
        CAREPOST_SMARTHOST_PORT=str(port),
        CAREPOST_SMARTHOST_TLS="none",
        CAREPOST_OUTBOX_LEASE_SECONDS=str(LEASE_SECONDS),
        CAREPOST_OUTBOX_CLAIM_BATCH="50",
        CAREPOST_OUTBOX_CONCURRENCY=str(CONCURRENCY),
        CAREPOST_WORKER_POLL_SECONDS="0.2",
    )
    with log_path.open("a") as output:
        return subprocess.Popen(
            carepost_command("worker", "--job", "messages.deliver"),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_only_the_window(
    crash_settings, crash_runtime, tmp_path
):
    with crash_runtime.database.session() as session:
        _tenant, keys = tenancy.create_tenant(
            session, crash_runtime.keyring, slug=f"crash-{uuid.uuid4().hex[:8]}", name="Crash"
        )
        add_verified_domains(session, _tenant.id, TEST_SENDING_DOMAINS)
    requests = [
        (
            MessageIn.model_validate(
                {
                    "to": f"p{n}@example.org",
                    "from": "care@clinic.example",
                    "subject": "Hi",
                    "text": "x",
                }
            ),
            None,
        )
        for n in range(MESSAGES)
    ]
    with crash_runtime.bound_session(keys) as session:
        send_messages(
            session, keys, requests, SendContext(SYSTEM, SendLimits(1024, "https://testserver"))
        )
    sink = SmtpSink(delay_seconds=0.003, hold_after=MESSAGES // 4).start()
    log_path = tmp_path / "worker.out"
    try:
        first = _worker(crash_settings, sink.port, log_path)
        try:
            deadline = time.monotonic() + 240
            # The receiver holds its answers once a quarter arrived: the worker is
            # then waiting for a 250, mid-batch, when it is killed.
            while not sink.handler.holding.is_set():
                assert first.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the worker never delivered"
                time.sleep(0.01)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        at_kill = _states(crash_runtime)
        in_flight = at_kill.get("sending", set())
        assert in_flight, "the worker was not killed mid-batch"
        assert len(sink.received) < MESSAGES
        sink.handler.hold_after = None
        sink.handler.release.set()

        second = _worker(crash_settings, sink.port, log_path)
        try:
            deadline = time.monotonic() + 240
            while len(_states(crash_runtime).get("delivered", set())) < MESSAGES:
                assert second.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, (
                    f"not all delivered: {_states(crash_runtime).keys()}"
                )
                time.sleep(0.2)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    finally:
        sink.stop()

    counts = Counter(received.carepost_id for received in sink.received)
    with crash_runtime.database.session() as session:
        all_ids = {str(i) for i in session.scalars(select(Message.id))}
        assert session.scalar(select(func.count()).select_from(Message)) == MESSAGES
    assert set(counts) == all_ids, "a message never arrived"
    duplicated = {message_id for message_id, count in counts.items() if count > 1}
    # Repeats only of messages in flight at the kill, and never more than the lanes in flight.
    assert duplicated <= in_flight
    assert len(duplicated) <= CONCURRENCY
    assert max(counts.values()) <= 2
