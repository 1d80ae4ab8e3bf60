"""Scanning a whole RFC 5322 message: the one carepost builds, nested messages,
encrypted parts, and the bounds on parts and depth."""

from __future__ import annotations

from email.message import EmailMessage

from carepost.dlp import mime
from carepost.dlp.mime import content_from_mime, scan_mime
from tests.dlp.dlp_samples import fresh_ssn, pdf_with_text, tenant_keys


def _message(ssn: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "Your results"
    message["From"] = "care@clinic.example"
    message["To"] = "patient@example.org"
    message.set_content(f"Dear patient, SSN {ssn}.")
    message.add_alternative("<p>DOB: 03/14/1975</p>", subtype="html")
    message.add_attachment(
        pdf_with_text("MBI 1EG4-TE5-MK73"), maintype="application", subtype="pdf", filename="r.pdf"
    )
    return message


def test_a_built_message_is_scanned_part_by_part():
    ssn = fresh_ssn()
    result = scan_mime(_message(ssn).as_bytes(), keys=tenant_keys())
    found = sorted(
        (f.detector, f.location.part, f.location.attachment_index) for f in result.findings
    )
    assert found == [
        ("date_of_birth", "html", None),
        ("mbi", "attachment", 0),
        ("ssn", "text", None),
    ]
    assert result.summary.complete


def test_a_forwarded_message_inside_is_walked():
    ssn = fresh_ssn()
    outer = EmailMessage()
    outer["Subject"] = "Fwd"
    outer.set_content("see below")
    outer.add_attachment(_message(ssn))
    content = content_from_mime(outer.as_bytes()).content
    result = scan_mime(outer, keys=tenant_keys())
    assert content.text == "see below\n"
    assert "ssn" in result.summary.counts


def test_encrypted_parts_make_the_scan_incomplete():
    message = EmailMessage()
    message["Subject"] = "Encrypted"
    message.set_content(b"\x30\x82garbage", maintype="application", subtype="pkcs7-mime",
                        filename="smime.p7m")  # fmt: skip
    result = scan_mime(message, keys=tenant_keys())
    assert [s.reason for s in result.skipped] == ["unsupported_type"]
    assert not result.summary.complete


def test_too_many_parts_or_too_deep_are_reported(monkeypatch):
    monkeypatch.setattr(mime, "MAX_PARTS", 3)
    message = EmailMessage()
    message.set_content("x")
    for index in range(5):
        message.add_attachment(b"x", maintype="text", subtype="plain", filename=f"{index}.txt")
    parsed = content_from_mime(message)
    assert parsed.skipped and not scan_mime(message, keys=tenant_keys()).summary.complete
