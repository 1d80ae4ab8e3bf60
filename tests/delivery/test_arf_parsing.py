"""ARF (RFC 5965) complaint parsing on real-world-shaped feedback-loop samples."""

from __future__ import annotations

import pytest

from carepost.delivery import verp
from carepost.delivery.arf import parse_arf
from tests.delivery.samples import SECRET, fill

# sample -> (user agent, recipient kept in the report)
COMPLAINTS = {
    "arf_rfc5965.eml": ("SomeGenerator/1.0", True),
    "yahoo_arf.eml": ("Yahoo!-Mail-Feedback/2.0", True),
    "microsoft_jmrp.eml": ("Hotmail FBL", True),
}


@pytest.mark.parametrize("name", sorted(COMPLAINTS))
def test_complaint_samples_parse(name: str) -> None:
    sample = fill(name)
    report = parse_arf(sample.data)
    assert report is not None
    assert report.feedback_type == "abuse" and report.is_complaint
    assert report.user_agent == COMPLAINTS[name][0]
    assert report.original_recipient == sample.recipient
    assert report.original.message_id == sample.header_message_id
    assert report.return_path is not None
    assert verp.message_of_return_path(report.return_path, secret=SECRET) == sample.message_id
    token = report.original.carepost_message
    assert token is not None and verp.message_of_token(token, secret=SECRET) == sample.message_id


def test_rfc5965_fields() -> None:
    report = parse_arf(fill("arf_rfc5965.eml").data)
    assert report is not None
    assert report.source_ip == "192.0.2.1"
    assert report.reported_domain == "clinic.example"
    assert report.arrival_date == "Thu, 8 Mar 2005 14:00:00 EDT"
    assert report.standard


def test_not_spam_is_not_a_complaint() -> None:
    data = fill("arf_rfc5965.eml").data.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    report = parse_arf(data)
    assert report is not None and report.feedback_type == "not-spam" and not report.is_complaint


def test_unknown_feedback_type_is_other() -> None:
    data = fill("arf_rfc5965.eml").data.replace(b"Feedback-Type: abuse", b"Feedback-Type: weird")
    report = parse_arf(data)
    assert report is not None and report.feedback_type == "other"


def test_legacy_loop_without_report_part() -> None:
    sample = fill("exchange_legacy_plain.eml")
    data = sample.data.replace(
        b"From: System Administrator <postmaster@legacy-hospital.example>",
        b"From: staff@hotmail.com",
    )
    report = parse_arf(data)
    assert report is not None and not report.standard and report.feedback_type == "abuse"
    assert report.original.message_id == sample.header_message_id


@pytest.mark.parametrize(
    "name",
    [
        "vacation_autoreply.eml",
        "ordinary_mail.eml",
        "postfix_dsn_user_unknown.eml",
        "gmail_dsn.eml",
    ],
)
def test_non_complaints_are_none(name: str) -> None:
    assert parse_arf(fill(name).data) is None
