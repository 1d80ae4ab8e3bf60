"""The inbound listener end to end: a real aiosmtpd server on loopback receives
bounces and complaints sent with aiosmtplib, maps them to their message through the
VERP return path, suppresses at once on hard bounces and complaints, and records
the message events (and their webhooks)."""

from __future__ import annotations

import asyncio
import socket

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from carepost.consent.suppression import suppression_match
from carepost.delivery import verp
from carepost.delivery.inbound import BounceHandler, inbound_controller, process_report
from carepost.webhooks import service as webhooks
from carepost.webhooks.models import WebhookDelivery
from tests.canaries import phi_value
from tests.delivery.samples import BOUNCE_DOMAIN, SECRET, fill
from tests.feedback_ledger import ledger_fixture


@pytest.fixture(scope="module")
def feedback_ledger(runtime):
    yield from ledger_fixture(runtime)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def listener(runtime, feedback_ledger):
    handler = BounceHandler(runtime, bounce_domain=BOUNCE_DOMAIN, secret=SECRET)
    controller = Controller(
        handler, hostname="127.0.0.1", port=_free_port(), data_size_limit=64 * 1024
    )
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def message(runtime, tenant, feedback_ledger):
    """A sent message of the tenant, to a patient address (PHI)."""
    address = f"{phi_value('mail').lower()}@patients.example"
    with runtime.bound_session(tenant[1]) as session:
        message_id = feedback_ledger.add_message(session, tenant[1], to_address=address)
    return message_id, address


def _send(listener, data: bytes, recipient: str):
    """Send as a reporting MTA does: the null sender (``MAIL FROM:<>``), one recipient.
    Returns (refused recipients, the DATA reply text) like ``aiosmtplib.send``."""

    async def transaction():
        async with aiosmtplib.SMTP(hostname=listener.hostname, port=listener.port) as smtp:
            await smtp.mail("")
            try:
                await smtp.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as refused:
                raise aiosmtplib.SMTPRecipientsRefused([refused]) from None
            reply = await smtp.data(data)
            return {}, reply.message

    return asyncio.run(transaction())


def _state(runtime, tenant, ledger, message_id, address):
    with runtime.bound_session(tenant[1]) as session:
        match = suppression_match(session, tenant[1], address)
        return match, ledger.events(session, message_id)


def test_hard_bounce_suppresses_address(runtime, tenant, listener, message, feedback_ledger):
    message_id, address = message
    sample = fill("postfix_dsn_user_unknown.eml", message_id=message_id, recipient=address)
    errors, reply = _send(listener, sample.data, sample.return_path)
    assert errors == {} and reply.startswith("2.0.0")
    match, events = _state(runtime, tenant, feedback_ledger, message_id, address)
    assert match is not None and (match.reason, match.scope) == ("hard_bounce", "all")
    [(kind, detail)] = events
    assert kind == "bounced"
    assert (detail["bounce"], detail["status"], detail["action"]) == ("hard", "5.1.1", "failed")
    # The server's reply quoted the address: the event keeps the reply without it.
    assert address not in str(detail) and "<address>" in detail["diagnostic"]


@pytest.mark.parametrize(
    ("sample_name", "event", "bounce"),
    [
        ("postfix_dsn_delayed.eml", "deferred", "soft"),
        ("postfix_dsn_mailbox_full.eml", "bounced", "soft"),
    ],
)
def test_soft_bounce_records_an_event_only(
    runtime, tenant, listener, message, feedback_ledger, sample_name, event, bounce
):
    message_id, address = message
    sample = fill(sample_name, message_id=message_id, recipient=address)
    _send(listener, sample.data, sample.return_path)
    match, events = _state(runtime, tenant, feedback_ledger, message_id, address)
    assert match is None
    assert [(kind, detail["bounce"]) for kind, detail in events] == [(event, bounce)]


def test_complaint_suppresses_address(runtime, tenant, listener, message, feedback_ledger):
    message_id, address = message
    # Feedback loops send to the address registered with them, not to the VERP path.
    sample = fill("yahoo_arf.eml", message_id=message_id, recipient=address)
    _send(listener, sample.data, f"fbl@{BOUNCE_DOMAIN}")
    match, events = _state(runtime, tenant, feedback_ledger, message_id, address)
    assert match is not None and match.reason == "complaint"
    [(kind, detail)] = events
    assert kind == "complained" and detail["feedback_type"] == "abuse"


@pytest.mark.parametrize(
    "sample_name",
    ["exchange_legacy_plain.eml", "gmail_plain_legacy.eml", "qmail_plain.eml", "gmail_dsn.eml"],
)
def test_bounces_of_other_mtas_suppress_too(
    runtime, tenant, listener, message, feedback_ledger, sample_name
):
    message_id, address = message
    sample = fill(sample_name, message_id=message_id, recipient=address)
    _send(listener, sample.data, sample.return_path)
    match, events = _state(runtime, tenant, feedback_ledger, message_id, address)
    assert match is not None and match.reason == "hard_bounce"
    assert [kind for kind, _ in events] == ["bounced"]


def test_header_token_maps_a_bounce_sent_elsewhere(
    runtime, tenant, listener, message, feedback_ledger
):
    """A bounce sent to a plain address of the bounce domain (some MTAs answer the
    From domain's postmaster) still maps through the returned headers."""
    message_id, address = message
    sample = fill("postfix_dsn_user_unknown.eml", message_id=message_id, recipient=address)
    _send(listener, sample.data, f"postmaster@{BOUNCE_DOMAIN}")
    match, _events = _state(runtime, tenant, feedback_ledger, message_id, address)
    assert match is not None


def test_bounce_reaches_the_tenants_webhooks(runtime, tenant, listener, message, feedback_ledger):
    message_id, address = message
    with runtime.bound_session(tenant[1]) as session:
        webhooks.create_endpoint(
            session,
            tenant[0].id,
            url="https://hooks.example.org/x",
            event_types=["message.bounced"],
            actor=webhooks_actor(),
        )
    sample = fill("postfix_dsn_user_unknown.eml", message_id=message_id, recipient=address)
    _send(listener, sample.data, sample.return_path)
    with runtime.bound_session(tenant[1]) as session:
        [delivery] = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant[0].id)
        ).all()
        assert delivery.event_type == "message.bounced"
        assert delivery.payload["data"]["message_id"] == str(message_id)
        assert address not in str(delivery.payload)


def webhooks_actor():
    from carepost.audit.service import SYSTEM

    return SYSTEM


def test_other_domains_are_relay_denied(listener):
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        _send(listener, b"Subject: hi\r\n\r\nhello\r\n", "someone@elsewhere.example")
    [(code, text)] = [(e.code, e.message) for e in refused.value.recipients]
    assert code == 550 and "Relaying denied" in text


def test_oversized_messages_are_refused(listener):
    data = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 1000
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        _send(listener, data, f"b-x@{BOUNCE_DOMAIN}")
    assert refused.value.code == 552


def test_forged_return_paths_do_nothing(runtime, tenant, listener, message, feedback_ledger):
    message_id, address = message
    sample = fill("postfix_plain.eml", message_id=message_id, recipient=address)
    token = verp.return_token(message_id, secret=SECRET)
    forged_token = ("a" if token[5] != "a" else "b").join([token[:5], token[6:]])
    forged = sample.data.replace(token.encode(), forged_token.encode())
    errors, _ = _send(listener, forged, f"b-{forged_token}@{BOUNCE_DOMAIN}")
    assert errors == {}
    match, events = _state(runtime, tenant, feedback_ledger, message_id, address)
    assert match is None and events == []


def test_not_a_report_is_accepted_and_dropped(listener, runtime, feedback_ledger):
    errors, _reply = _send(
        listener, fill("vacation_autoreply.eml").data, f"b-anything@{BOUNCE_DOMAIN}"
    )
    assert errors == {}
    outcome = process_report(
        runtime, fill("vacation_autoreply.eml").data, envelope_recipients=[], secret=SECRET
    )
    assert outcome.kind == "ignored"


def test_unknown_messages_are_unmatched(runtime, feedback_ledger):
    sample = fill("postfix_dsn_user_unknown.eml")
    outcome = process_report(
        runtime, sample.data, envelope_recipients=[sample.return_path], secret=SECRET
    )
    assert outcome.kind == "unmatched" and not outcome.suppressed


def test_controller_from_settings(runtime):
    controller = inbound_controller(runtime, host="127.0.0.1", port=_free_port())
    handler = controller.handler
    assert isinstance(handler, BounceHandler)
    assert handler.bounce_domain == runtime.settings.bounce_domain
