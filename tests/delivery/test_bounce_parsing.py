"""DSN (RFC 3464) and non-standard bounce parsing on real-world-shaped samples."""

from __future__ import annotations

import pytest

from carepost.delivery import verp
from carepost.delivery.bounces import classify, parse_dsn, redact_addresses
from tests.delivery.samples import SECRET, fill

# sample -> (standard, action, status, kind)
EXPECTED = {
    "postfix_dsn_user_unknown.eml": (True, "failed", "5.1.1", "hard"),
    "postfix_dsn_delayed.eml": (True, "delayed", "4.4.1", "soft"),
    "postfix_dsn_mailbox_full.eml": (True, "failed", "5.2.2", "soft"),
    "exchange_online_ndr.eml": (True, "failed", "5.1.10", "hard"),
    "gmail_dsn.eml": (True, "failed", "5.1.1", "hard"),
    "policy_block_5.7.1.eml": (True, "failed", "5.7.1", "hard"),
    "exchange_legacy_plain.eml": (False, "failed", "5.1.1", "hard"),
    "postfix_plain.eml": (False, "failed", "5.1.1", "hard"),
    "gmail_plain_legacy.eml": (False, "failed", "5.1.1", "hard"),
    "qmail_plain.eml": (False, "failed", "5.1.1", "hard"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bounce_samples_parse_to_their_outcome(name: str) -> None:
    sample = fill(name)
    report = parse_dsn(sample.data)
    assert report is not None
    standard, action, status, kind = EXPECTED[name]
    assert report.standard is standard
    [recipient] = report.recipients
    assert (recipient.action, recipient.status, recipient.kind) == (action, status, kind)
    assert recipient.recipient is not None
    assert recipient.recipient.lower() == sample.recipient
    assert report.hard is (kind == "hard")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bounce_samples_name_our_message(name: str) -> None:
    sample = fill(name)
    report = parse_dsn(sample.data)
    assert report is not None
    assert report.original.message_id == sample.header_message_id
    token = report.original.carepost_message
    assert token is not None and verp.message_of_token(token, secret=SECRET) == sample.message_id
    if report.original.return_path is not None:
        assert verp.message_of_return_path(report.original.return_path, secret=SECRET) == (
            sample.message_id
        )


def test_standard_dsn_fields() -> None:
    report = parse_dsn(fill("postfix_dsn_user_unknown.eml").data)
    assert report is not None
    assert report.reporting_mta == "mail.clinic.example"
    [recipient] = report.recipients
    assert recipient.remote_mta == "mx1.patients.example"
    assert recipient.diagnostic is not None and "User unknown" in recipient.diagnostic
    assert recipient.description == "bad destination mailbox address"


def test_diagnostics_are_redacted_of_addresses() -> None:
    report = parse_dsn(fill("postfix_dsn_user_unknown.eml").data)
    assert report is not None
    redacted = redact_addresses(report.recipients[0].diagnostic)
    assert redacted is not None and "patients.example" not in redacted
    assert "<address>" in redacted


@pytest.mark.parametrize(
    "name",
    ["vacation_autoreply.eml", "ordinary_mail.eml", "arf_rfc5965.eml", "yahoo_arf.eml"],
)
def test_non_bounces_are_none(name: str) -> None:
    assert parse_dsn(fill(name).data) is None


@pytest.mark.parametrize(
    ("status", "action", "kind"),
    [
        ("5.1.1", "failed", "hard"),
        ("5.7.1", "failed", "hard"),
        ("5.2.2", "failed", "soft"),
        ("4.2.2", "delayed", "soft"),
        ("4.7.0", "failed", "soft"),
        ("5.0.0", "delayed", "soft"),
        ("2.0.0", "delivered", "success"),
    ],
)
def test_classification(status: str, action: str, kind: str) -> None:
    assert classify(status, action) == kind
