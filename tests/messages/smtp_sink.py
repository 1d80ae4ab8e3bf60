"""A real SMTP receiver on loopback (aiosmtpd) that keeps what it accepts.

Recipients steer its answers, like a real server's mailboxes would: ``bounce-*``
are unknown users (550 5.1.1), ``grey-*`` are greylisted (451 4.7.1), ``policy-*``
are refused by policy (554 5.7.1); everything else is accepted (250).
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

from aiosmtpd.controller import Controller
from sqlalchemy import update

from carepost.core.runtime import Runtime
from carepost.messages.models import Message
from tests.environment import free_port


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def carepost_id(self) -> str:
        """The message's id, from its Message-ID (``<id@from-domain>``)."""
        return str(self.message["Message-ID"]).strip("<>").partition("@")[0]


@dataclass
class SinkHandler:
    received: list[Received] = field(default_factory=list)
    delay_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Once this many messages arrived, hold every answer to DATA until released:
    # the sender is then certainly mid-transaction (for crash tests).
    hold_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options):
        local = address.partition("@")[0]
        if local.startswith("bounce-"):
            return "550 5.1.1 <" + address + ">: user unknown"
        if local.startswith("grey-"):
            return "451 4.7.1 greylisted, try again later"
        if local.startswith("policy-"):
            return "554 5.7.1 message refused by policy"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)  # a slow disk: keeps a worker mid-batch
        if self.hold_after is not None and len(self.received) >= self.hold_after:
            self.holding.set()
            self.release.wait(timeout=300)
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 2.0.0 queued"


class SmtpSink:
    def __init__(self, delay_seconds: float = 0.0, hold_after: int | None = None) -> None:
        self.handler = SinkHandler(delay_seconds=delay_seconds, hold_after=hold_after)
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.handler.release.set()
        self.controller.stop()


def set_aside_queued(runtime: Runtime) -> None:
    """Nothing due in the shared database: a worker run in a test claims every
    tenant's messages, so earlier tests' queued messages are set aside first."""
    with runtime.database.session() as session:
        session.execute(
            update(Message)
            .where(Message.state.in_(("queued", "deferred", "sending")))
            .values(state="cancelled")
        )


class Listening(Protocol):
    port: int


def delivering_to(runtime: Runtime, sink: Listening, **settings: Any) -> Runtime:
    """The suite's runtime with its smarthost pointed at ``sink`` (and ``settings``
    changed), the queue emptied of earlier tests' messages first."""
    set_aside_queued(runtime)
    changed = runtime.settings.model_copy(
        update={
            "smtp_mode": "smarthost",
            "smarthost_host": "127.0.0.1",
            "smarthost_port": sink.port,
            "smarthost_tls": "none",
            **settings,
        }
    )
    return Runtime(changed, runtime.database, runtime.keyring)
