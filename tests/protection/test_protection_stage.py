"""The send-time protection stage inside ``prepare_envelopes``: which method each
message gets from its DLP findings, the template's PHI flag, the recipient's keys,
the domain's known TLS and the tenant's policy; what is recorded (message row,
audit entry, events) and what goes on (envelope TLS requirement, encrypted bytes)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from email import message_from_bytes
from email.policy import SMTP as SMTP_POLICY

import pytest
from sqlalchemy import update

from carepost.audit.service import SYSTEM, chain_for
from carepost.audit.verify import verify_chains
from carepost.core.database import utcnow
from carepost.delivery.mime import Attachment, OutgoingMessage, build_message
from carepost.delivery.transport import DeliveryReport, RecipientOutcome
from carepost.e2ee import directory
from carepost.messages.delivery import claim_due_messages, prepare_envelopes, record_results
from carepost.messages.models import Message
from carepost.messages.service import message_out
from carepost.policy.documents import PolicyDocument
from carepost.policy.service import put_policy
from carepost.protection import facts as facts_module
from carepost.protection import stage as stage_module
from carepost.protection.models import DomainTlsRecord
from tests.canaries import phi_value
from tests.protection.protection_support import (
    decisions,
    events,
    message,
    portal_notices,
    send,
)

SSN = "536-22-8145"  # passes the SSN rules (area, group, serial, not a published one)
CARD = "4111 1111 1111 1111"  # a Visa test number (Luhn)

OWNER = "stage-test"
pytestmark = pytest.mark.usefixtures("empty_queue")


def prepare(runtime, tenant, ids, **changes):
    settings = runtime.settings.model_copy(update={"mta_sts_enabled": False, **changes})
    with runtime.database.session() as session:
        claim_due_messages(
            session, owner=OWNER, limit=100, now=utcnow(), lease=timedelta(minutes=5)
        )
    with runtime.bound_session(tenant[1]) as session:
        prepared = prepare_envelopes(session, tenant[1], ids, settings=settings)
    # What goes on has its decision written with its outcome: here, as if a receiver
    # took every envelope (the SMTP side is tests/protection/test_protection_delivery.py).
    taken = [
        (
            outgoing,
            DeliveryReport(
                tuple(RecipientOutcome(r, "delivered", 250, None, "ok") for r in outgoing.messages),
                host="receiver.test",
                tls=False,
            ),
        )
        for outgoing in prepared
    ]
    with runtime.bound_session(tenant[1]) as session:
        record_results(session, tenant[1], taken, owner=OWNER, lifetime=timedelta(days=1))
    return {next(iter(o.messages.values())).id: o.envelope for o in prepared}


def patient() -> str:
    return f"pat-{uuid.uuid4().hex[:8]}@patient.example"


def set_policy(runtime, tenant, document: dict) -> None:
    with runtime.bound_session(tenant[1]) as session:
        put_policy(
            session, tenant[1].tenant_id, PolicyDocument.model_validate(document), actor=SYSTEM
        )


def test_a_message_without_phi_goes_by_opportunistic_tls_and_is_audited(runtime, tenant):
    message_id = send(runtime, tenant, to=patient(), text="See you at the open day.")
    envelopes = prepare(runtime, tenant, [message_id])

    assert envelopes[message_id].tls == "opportunistic"
    stored = message(runtime, tenant, message_id)
    assert (stored.protection_method, stored.protection_tls) == (
        "tls_opportunistic",
        "opportunistic",
    )
    assert stored.protection_reasons == ["phi.none", "tls.opportunistic"]
    [audited] = decisions(runtime, message_id)
    assert audited == {
        "method": "tls_opportunistic",
        "tls": "opportunistic",
        "phi": False,
        "reasons": ["phi.none", "tls.opportunistic"],
    }


def test_phi_without_key_or_guaranteed_tls_goes_to_the_portal(runtime, tenant):
    canary = phi_value("name")
    to = patient()
    message_id = send(runtime, tenant, to=to, text=f"{canary}, your SSN {SSN} is on file.")
    envelopes = prepare(runtime, tenant, [message_id])

    assert message_id not in envelopes  # nothing goes out by SMTP
    stored = message(runtime, tenant, message_id)
    assert stored.state == "delivered"
    assert stored.state_reason == "held for secure portal pickup"
    assert stored.protection_method == "portal"
    assert "phi.dlp:ssn" in stored.protection_reasons
    assert "fallback.portal" in stored.protection_reasons
    assert "portal" in events(runtime, message_id)
    notices = [n for n in portal_notices(runtime, tenant) if n.to_address == to]
    assert len(notices) == 1
    [audited] = decisions(runtime, message_id)
    assert audited["method"] == "portal" and audited["phi"] is True
    for text in (str(audited), stored.state_reason, str(stored.protection_reasons)):
        assert SSN not in text and canary not in text


def test_a_blocking_detector_fails_the_message_with_a_clear_reason(runtime, tenant):
    message_id = send(runtime, tenant, to=patient(), text=f"Card on file: {CARD}")
    envelopes = prepare(runtime, tenant, [message_id])

    assert message_id not in envelopes
    stored = message(runtime, tenant, message_id)
    assert stored.state == "failed"
    assert stored.state_reason == "blocked by the protection policy (dlp.block:credit_card)"
    assert CARD not in stored.state_reason
    assert "failed" in events(runtime, message_id)
    [audited] = decisions(runtime, message_id)
    assert audited["method"] == "block"


def test_the_template_phi_flag_alone_makes_a_message_phi(runtime, tenant):
    message_id = send(runtime, tenant, to=patient(), text="Your results are ready.")
    with runtime.database.session() as session:
        # As a template that reads a PHI contact field marks it (tests/messages cover that).
        session.execute(update(Message).where(Message.id == message_id).values(uses_phi=True))
    prepare(runtime, tenant, [message_id])

    stored = message(runtime, tenant, message_id)
    assert stored.protection_method == "portal"
    assert stored.protection_reasons[0] == "phi.template"


def test_a_valid_smime_certificate_encrypts_phi(runtime, tenant, test_ca):
    to = patient()
    with runtime.bound_session(tenant[1]) as session:
        directory.add_key(
            session,
            tenant[1].tenant_id,
            address=to,
            material=test_ca.issue(to).cert_pem,
            source="upload",
            actor=SYSTEM,
        )
    message_id = send(runtime, tenant, to=to, text=f"SSN {SSN}")
    envelopes = prepare(runtime, tenant, [message_id])

    wire = envelopes[message_id].data
    assert SSN.encode() not in wire
    outer = message_from_bytes(wire, policy=SMTP_POLICY)
    assert outer.get_content_type() == "application/pkcs7-mime"
    stored = message(runtime, tenant, message_id)
    assert stored.protection_method == "smime"
    assert "e2e.smime:valid" in stored.protection_reasons


def test_expired_and_revoked_keys_are_never_used(runtime, tenant, test_ca):
    to = patient()
    with runtime.bound_session(tenant[1]) as session:
        row = directory.add_key(
            session,
            tenant[1].tenant_id,
            address=to,
            material=test_ca.issue(to).cert_pem,
            source="upload",
            actor=SYSTEM,
        )
        directory.revoke_key(session, tenant[1].tenant_id, row.id, actor=SYSTEM)
    message_id = send(runtime, tenant, to=to, text=f"SSN {SSN}")
    prepare(runtime, tenant, [message_id])

    stored = message(runtime, tenant, message_id)
    assert stored.protection_method == "portal"
    assert "e2e.smime:revoked" in stored.protection_reasons


def test_a_domain_override_can_block_phi_that_tls_cannot_carry(runtime, tenant):
    set_policy(runtime, tenant, {"domains": {"strict.example": {"phi_without_tls": "block"}}})
    to = f"pat-{uuid.uuid4().hex[:8]}@strict.example"
    message_id = send(runtime, tenant, to=to, text=f"SSN {SSN}")
    prepare(runtime, tenant, [message_id])

    stored = message(runtime, tenant, message_id)
    assert stored.state == "failed"
    assert "override.domain:strict.example" in stored.protection_reasons
    assert "fallback.block" in stored.state_reason


def test_the_sender_can_force_the_portal_and_treat_everything_as_phi(runtime, tenant):
    set_policy(runtime, tenant, {"senders": {"care@clinic.example": {"force_portal": True}}})
    message_id = send(runtime, tenant, to=patient(), text="Nothing sensitive")
    prepare(runtime, tenant, [message_id])
    assert message(runtime, tenant, message_id).protection_method == "portal"

    set_policy(runtime, tenant, {"senders": {"*": {"treat_as_phi": True}}})
    other = send(runtime, tenant, to=patient(), text="Nothing sensitive either")
    prepare(runtime, tenant, [other])
    stored = message(runtime, tenant, other)
    assert stored.protection_method == "portal"
    assert "phi.sender" in stored.protection_reasons


def test_phi_to_a_domain_with_an_enforced_mta_sts_policy_requires_verified_tls(runtime, tenant):
    domain = f"sts-{uuid.uuid4().hex[:8]}.example"
    now = utcnow()
    with runtime.database.session() as session:
        session.add(
            DomainTlsRecord(
                domain=domain,
                mta_sts_id="20261204",
                mta_sts_mode="enforce",
                mta_sts_mx=[f"*.{domain}"],
                mta_sts_max_age=86400,
                mta_sts_expires_at=now + timedelta(days=1),
                dane_usable=False,
                starttls_seen=False,
                checked_at=now,
                next_check_at=now + timedelta(hours=1),
            )
        )
    message_id = send(runtime, tenant, to=f"pat@{domain}", text=f"SSN {SSN}")
    envelopes = prepare(runtime, tenant, [message_id], mta_sts_enabled=True)

    envelope = envelopes[message_id]
    assert (envelope.tls, envelope.mx_patterns) == ("verified", (f"*.{domain}",))
    stored = message(runtime, tenant, message_id)
    assert (stored.protection_method, stored.protection_tls) == ("tls_required", "verified")
    assert "tls.mta_sts:enforce" in stored.protection_reasons


def test_portal_notices_are_never_sent_to_the_portal_again(runtime, tenant):
    to = patient()
    original = send(runtime, tenant, to=to, text=f"SSN {SSN}")
    prepare(runtime, tenant, [original])
    [notice] = [n for n in portal_notices(runtime, tenant) if n.to_address == to]
    envelopes = prepare(runtime, tenant, [notice.id])

    assert envelopes[notice.id].tls == "opportunistic"
    stored = message(runtime, tenant, notice.id)
    assert stored.protection_reasons == ["portal.notice"]
    assert len([n for n in portal_notices(runtime, tenant) if n.to_address == to]) == 1


def test_identical_content_is_scanned_once_and_personalized_parts_each_time(
    runtime, tenant, monkeypatch
):
    scanned: list[str] = []
    real = facts_module.scan_message

    def counting(content, **kwargs):
        scanned.append("subject" if content.subject else "text" if content.text else "other")
        return real(content, **kwargs)

    monkeypatch.setattr(facts_module, "scan_message", counting)
    text = f"Campaign text {uuid.uuid4().hex}"
    same = [send(runtime, tenant, to=patient(), text=text) for _ in range(3)]
    personal = send(runtime, tenant, to=patient(), text=text + " for Ann")
    prepare(runtime, tenant, [*same, personal])

    # subject, text and html of the first; only the personalized text of the last.
    assert scanned.count("text") == 2
    assert scanned.count("subject") == 1


def test_the_message_log_shows_the_decision(runtime, tenant):
    message_id = send(runtime, tenant, to=patient(), text=f"Card {CARD}")
    prepare(runtime, tenant, [message_id])
    shown = message_out(message(runtime, tenant, message_id), show_phi=False)

    assert shown.protection is not None
    assert shown.protection.model_dump() == {
        "method": "block",
        "tls": "none",
        "reasons": ["dlp.block:credit_card"],
    }


def test_a_batch_of_decisions_keeps_the_audit_chain_intact(runtime, tenant):
    ids = [send(runtime, tenant, to=patient(), text=f"Note {n}") for n in range(5)]
    ids.append(send(runtime, tenant, to=patient(), text=f"SSN {SSN}"))
    prepare(runtime, tenant, ids)

    assert all(len(decisions(runtime, message_id)) == 1 for message_id in ids)
    with runtime.database.session() as session:
        report = verify_chains(session, chain=chain_for(tenant[1].tenant_id))
    assert report.ok, report.describe()


def test_only_detectors_some_rule_reads_run_at_send_time(runtime, tenant):
    default = {d.name for d in facts_module.used_detectors(PolicyDocument())}
    assert default == {"ssn", "mbi", "icd10", "date_of_birth", "credit_card"}
    document = {"domains": {"phones.example": {"phi_detectors": ["us_phone"]}}}
    set_policy(runtime, tenant, document)
    assert "us_phone" in {
        d.name for d in facts_module.used_detectors(PolicyDocument.model_validate(document))
    }
    to_phones = send(
        runtime, tenant, to="pat@phones.example", text="Call us back at (415) 555-2671."
    )
    elsewhere = send(runtime, tenant, to=patient(), text="Call us back at (415) 555-2671.")
    prepare(runtime, tenant, [to_phones, elsewhere])

    assert message(runtime, tenant, to_phones).protection_method == "portal"
    assert "phi.dlp:us_phone" in message(runtime, tenant, to_phones).protection_reasons
    assert message(runtime, tenant, elsewhere).protection_method == "tls_opportunistic"


def test_a_message_stored_as_raw_mime_is_scanned_from_the_built_message(runtime, tenant):
    relayed = build_message(
        OutgoingMessage(
            from_address="care@clinic.example", from_name=None, to_address=patient(),
            to_name=None, reply_to=None, subject="Forwarded", html=None, text="See attached.",
            attachments=(Attachment("chart.txt", "text/plain", f"SSN {SSN}".encode()),),
        )
    )  # fmt: skip
    stored = Message(
        tenant_id=tenant[1].tenant_id, to_address=patient(), subject="Forwarded", body={},
        from_address="care@clinic.example", purpose="transactional", uses_phi=False,
    )  # fmt: skip
    with runtime.bound_session(tenant[1]) as session:
        stage = stage_module.ProtectionStage.for_batch(
            session, tenant[1], [stored], settings=runtime.settings, now=utcnow()
        )
        summary = stage.scan(stored, relayed)
    assert summary.counts.get("ssn") == 1


def test_phi_the_policy_would_block_without_tls_goes_by_verified_tls_where_known(runtime, tenant):
    set_policy(runtime, tenant, {"defaults": {"phi_without_tls": "block"}})
    domain = f"sts-{uuid.uuid4().hex[:8]}.example"
    now = utcnow()
    with runtime.database.session() as session:
        session.add(
            DomainTlsRecord(
                domain=domain, mta_sts_id="1", mta_sts_mode="enforce", mta_sts_mx=[f"mx.{domain}"],
                mta_sts_max_age=86400, mta_sts_expires_at=now + timedelta(days=1),
                dane_usable=False, starttls_seen=False, checked_at=now,
                next_check_at=now + timedelta(hours=1),
            )
        )  # fmt: skip
    known = send(runtime, tenant, to=f"pat@{domain}", text=f"SSN {SSN}")
    unknown = send(runtime, tenant, to=patient(), text=f"SSN {SSN}")
    envelopes = prepare(runtime, tenant, [known, unknown], mta_sts_enabled=True)

    assert envelopes[known].tls == "verified"
    assert message(runtime, tenant, unknown).state == "failed"


def test_html_and_the_text_made_from_it_are_scanned_once_and_other_text_apart(
    runtime, tenant, monkeypatch
):
    """A text part made from the HTML holds its words: the stored body says so and the
    scan reads them once, without making the text again; an HTML part whose text
    part says something else is scanned too."""
    made: list[str] = []
    real = facts_module.html_to_text

    def counting(html: str) -> str:
        made.append(html)
        return real(html)

    monkeypatch.setattr(facts_module, "html_to_text", counting)
    derived = send(runtime, tenant, to=patient(), html=f"<p>SSN {SSN}</p>", text=None)
    apart = send(runtime, tenant, to=patient(), html=f"<p>Your SSN: {SSN}</p>", text="Hi.")
    stored = message(runtime, tenant, derived).body
    assert stored["text"].strip() == f"SSN {SSN}" and stored["text_from_html"] is True
    assert "text_from_html" not in message(runtime, tenant, apart).body
    prepare(runtime, tenant, [derived, apart])

    assert made == [f"<p>Your SSN: {SSN}</p>"]  # compared only where the text was given
    for message_id in (derived, apart):
        assert "phi.dlp:ssn" in message(runtime, tenant, message_id).protection_reasons


def test_each_distinct_case_of_a_batch_is_decided_once_and_alike(runtime, tenant, monkeypatch):
    """Messages decided on the same facts share one decision; a message with other
    findings, or to another domain, is decided on its own and gets its own reasons."""
    calls: list[str] = []
    real = stage_module.decide_protection

    def counting(**kwargs):
        calls.append(kwargs["recipient_domain"])
        return real(**kwargs)

    monkeypatch.setattr(stage_module, "decide_protection", counting)
    alike = [send(runtime, tenant, to=patient(), text=f"Note {n}") for n in range(4)]
    other_domain = send(runtime, tenant, to="someone@elsewhere.example", text="Note 9")
    with_ssn = send(runtime, tenant, to=patient(), text=f"SSN {SSN}")
    prepare(runtime, tenant, [*alike, other_domain, with_ssn])

    assert sorted(calls) == ["elsewhere.example", "patient.example", "patient.example"]
    reasons = {m: message(runtime, tenant, m).protection_reasons for m in alike}
    assert len({tuple(r) for r in reasons.values()}) == 1
    assert "phi.dlp:ssn" in message(runtime, tenant, with_ssn).protection_reasons
    assert "phi.dlp:ssn" not in next(iter(reasons.values()))


def test_the_decision_key_reads_every_fact_the_decision_can_read():
    """A field added to the facts or the scan summary must be added to the key, or two
    messages differing only in it would share a decision."""
    from dataclasses import fields

    from carepost.dlp.findings import ScanSummary
    from carepost.policy.decision import MessageFacts

    assert [f.name for f in fields(MessageFacts)] == ["dlp", "template_phi", "template_id"]
    assert [f.name for f in fields(ScanSummary)] == [
        "counts",
        "max_confidence",
        "highest_severity",
        "phi",
        "complete",
    ]
    base = MessageFacts()
    variants = [
        MessageFacts(template_phi=True),
        MessageFacts(template_id="t"),
        MessageFacts(dlp=ScanSummary(counts={"ssn": 1})),
        MessageFacts(dlp=ScanSummary(max_confidence={"ssn": 0.5})),
        MessageFacts(dlp=ScanSummary(phi=True)),
        MessageFacts(dlp=ScanSummary(complete=False)),
    ]
    keys = {stage_module._facts_key(f) for f in [base, *variants]}
    assert len(keys) == len(variants) + 1
