"""Whole-message scans: every part, attachments of each kind, and the bounds that keep
a hostile attachment from hanging the scan or filling memory."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from carepost.dlp.extraction import DOCX_TYPE, Attachment, MessageContent, ScanLimits
from carepost.dlp.findings import Severity
from carepost.dlp.scanner import TenantRules, scan_message
from carepost.dlp.tenant_rules import Dictionary, MrnRule, compile_mrn_pattern
from tests.dlp.dlp_samples import docx_with_text, fresh_ssn, pdf_with_text, tenant_keys


def _parts(result):
    return sorted(
        {(f.detector, f.location.part, f.location.attachment_index) for f in result.findings}
    )


def test_every_part_is_scanned_and_located():
    ssn = fresh_ssn()
    message = MessageContent(
        subject=f"About SSN {ssn}",
        text="Dx: E11.9",
        html="<p>Born on <b>March 14, 1975</b></p>",
        attachments=[
            Attachment("notes.txt", "text/plain; charset=utf-8", f"ssn {ssn}".encode()),
            Attachment("page.html", "text/html", b"<div>MBI 1EG4-TE5-MK73</div>"),
            Attachment("lab.pdf", "application/pdf", pdf_with_text("Patient SSN", ssn)),
            Attachment(
                "letter.docx", DOCX_TYPE, docx_with_text("Hello", table=[["DEA", "AB1234563"]])
            ),
        ],
    )
    result = scan_message(message, keys=tenant_keys())
    assert _parts(result) == [
        ("date_of_birth", "html", None),
        ("dea", "attachment", 3),
        ("icd10", "text", None),
        ("mbi", "attachment", 1),
        ("ssn", "attachment", 0),
        ("ssn", "attachment", 2),
        ("ssn", "subject", None),
    ]
    subject = next(f for f in result.findings if f.location.part == "subject")
    assert message.subject[subject.location.start : subject.location.end] == ssn
    assert result.summary.counts == {"date_of_birth": 1, "dea": 1, "icd10": 1, "mbi": 1, "ssn": 3}
    assert result.summary.highest_severity == Severity.CRITICAL
    assert result.summary.phi and result.summary.complete


def test_attachment_names_are_scanned_too():
    ssn = fresh_ssn()
    message = MessageContent(attachments=[Attachment(f"SSN {ssn}.png", "image/png", b"\x89PNG")])
    result = scan_message(message, keys=tenant_keys())
    assert _parts(result) == [("ssn", "attachment_name", 0)]
    # An image cannot be read: the scan says it is incomplete.
    assert [(s.part, s.reason) for s in result.skipped] == [("attachment", "unsupported_type")]
    assert not result.summary.complete


def test_a_zip_bomb_docx_is_refused_before_inflating():
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/document.xml", "w") as member,
    ):
        chunk = b"\0" * (1 << 20)
        for _ in range(80):  # 80 MB of zeros, about 80 KB compressed
            member.write(chunk)
    bomb = buffer.getvalue()
    assert len(bomb) < 1 << 20
    message = MessageContent(attachments=[Attachment("bomb.docx", DOCX_TYPE, bomb)])
    result = scan_message(message, keys=tenant_keys())
    assert [(s.attachment_index, s.reason) for s in result.skipped] == [(0, "too_large")]
    assert not result.summary.complete


def test_a_docx_of_many_members_or_a_broken_one_is_skipped():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(30):
            archive.writestr(f"x/{index}", b"x")
    limits = ScanLimits(max_zip_members=10)
    many = scan_message(
        MessageContent(attachments=[Attachment("a.docx", DOCX_TYPE, buffer.getvalue())]),
        keys=tenant_keys(),
        limits=limits,
    )
    assert [s.reason for s in many.skipped] == ["too_large"]
    broken = scan_message(
        MessageContent(attachments=[Attachment("b.docx", DOCX_TYPE, b"PK\x03\x04nonsense")]),
        keys=tenant_keys(),
    )
    assert [s.reason for s in broken.skipped] == ["unreadable"]


def test_a_20_mb_attachment_is_bounded_not_hung():
    big_text = Attachment("big.txt", "text/plain", b"lorem ipsum " * (20 * 1024 * 1024 // 12))
    big_pdf = Attachment("big.pdf", "application/pdf", b"%PDF-1.4\n" + b"0" * (20 * 1024 * 1024))
    started = time.monotonic()
    result = scan_message(MessageContent(attachments=[big_text, big_pdf]), keys=tenant_keys())
    # Bounded by ScanLimits (max_part_chars, the parsers' refusal): seconds, not minutes.
    assert time.monotonic() - started < 60
    assert sorted((s.attachment_index, s.reason) for s in result.skipped) == [
        (0, "too_large"),
        (1, "unreadable"),
    ]


def test_oversized_attachments_and_too_many_are_skipped():
    limits = ScanLimits(max_attachment_bytes=10, max_attachments=1)
    message = MessageContent(
        attachments=[
            Attachment("a.txt", "text/plain", b"x" * 11),
            Attachment("b.txt", "text/plain", b"x"),
        ]
    )
    result = scan_message(message, keys=tenant_keys(), limits=limits)
    assert [(s.attachment_index, s.reason) for s in result.skipped] == [
        (0, "too_large"),
        (1, "too_large"),
    ]


def test_the_deadline_stops_the_scan_and_marks_it_incomplete():
    message = MessageContent(subject="a", text="b")
    result = scan_message(message, keys=tenant_keys(), limits=ScanLimits(max_seconds=0))
    assert result.skipped and not result.summary.complete


def test_tenant_mrn_patterns_and_dictionaries_are_found_whole_word_any_case():
    rules = TenantRules(
        mrn=[MrnRule("clinic", compile_mrn_pattern(r"MRN[-: ]?\d{7}"))],
        dictionaries=[
            Dictionary("drugs", ["Oxycodone", "buprenorphine"], Severity.HIGH),
            Dictionary("programs", ["HIV clinic"]),
        ],
    )
    text = "MRN-0012345 on OXYCODONE; oxycodoneX no; seen at the hiv clinic."
    result = scan_message(MessageContent(text=text), keys=tenant_keys(), rules=rules)
    assert [(f.detector, text[f.location.start : f.location.end]) for f in result.findings] == [
        ("mrn:clinic", "MRN-0012345"),
        ("keyword:drugs", "OXYCODONE"),
        ("keyword:programs", "hiv clinic"),
    ]


def test_a_pattern_that_runs_out_of_time_marks_the_part_incomplete():
    import regex

    rules = TenantRules(mrn=[MrnRule("slow", regex.compile(r"(a|aa)+$"))])
    result = scan_message(MessageContent(text="a" * 5000 + "!"), keys=tenant_keys(), rules=rules)
    assert [(s.part, s.reason) for s in result.skipped] == [("text", "pattern_timeout")]
    assert not result.summary.complete


@pytest.mark.parametrize(
    "pattern",
    [r"(a|aa)+$", r"(\w+\s?)+$", r"(\d|\d\d)+$"],
)
def test_catastrophic_patterns_are_refused_when_saved(pattern):
    from carepost.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as caught:
        compile_mrn_pattern(pattern)
    assert caught.value.errors[0].field == "pattern"


@pytest.mark.parametrize("pattern", ["", "a?", "x" * 201, "(unclosed"])
def test_empty_long_or_invalid_patterns_are_refused(pattern):
    from carepost.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        compile_mrn_pattern(pattern)


def test_thousands_of_terms_match_in_one_pass():
    terms = [f"term{index}" for index in range(5000)]
    rules = TenantRules(dictionaries=[Dictionary("big", terms)])
    text = " ".join(f"term{index}" for index in range(0, 5000, 7))
    result = scan_message(MessageContent(text=text), keys=tenant_keys(), rules=rules)
    assert result.summary.counts == {"keyword:big": len(range(0, 5000, 7))}


def _pdf_with_stream(stream: bytes) -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 6\n0000000000 65535 f \n")
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def test_a_pdf_whose_stream_inflates_enormously_is_refused():
    import zlib

    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(b"BT /F1 12 Tf 72 720 Td ")]
    for _ in range(120):  # about 110 MB of content once inflated, 150 KB compressed
        chunks.append(compressor.compress(b"(a) Tj " * (1 << 17)))
    chunks.append(compressor.compress(b" ET") + compressor.flush())
    bomb = _pdf_with_stream(b"".join(chunks))
    message = MessageContent(attachments=[Attachment("b.pdf", "application/pdf", bomb)])
    result = scan_message(message, keys=tenant_keys())
    assert [(s.attachment_index, s.reason) for s in result.skipped] in (
        [(0, "unreadable")],  # pypdf's own inflation limit
        [(0, "too_large")],  # or ours, on the extracted text
    )


def test_a_docx_with_an_entity_bomb_is_not_expanded():
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            b'<!ENTITY lol%d "%s">' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
            for n in range(1, 10)
        )
        + b"]>"
    )
    original = io.BytesIO(docx_with_text("hello"))
    patched = io.BytesIO()
    with (
        zipfile.ZipFile(original) as source,
        zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "word/document.xml":
                data = laughs + data[data.index(b"<w:document") :].replace(b"hello", b"&lol9;")
            target.writestr(item, data)
    message = MessageContent(attachments=[Attachment("l.docx", DOCX_TYPE, patched.getvalue())])
    started = time.monotonic()
    result = scan_message(message, keys=tenant_keys())
    assert time.monotonic() - started < 30
    # Either refused or read without expanding the entities; never a billion laughs.
    assert result.summary.counts == {}


def test_the_summary_round_trips_as_a_record():
    ssn = fresh_ssn()
    result = scan_message(MessageContent(text=f"SSN {ssn}"), keys=tenant_keys())
    record = result.summary.as_record()
    assert ssn not in str(record) and ssn.replace("-", "") not in str(record)
    from carepost.dlp.findings import ScanSummary

    assert ScanSummary.from_record(record) == result.summary


def test_offsets_hold_when_lower_case_changes_length():
    rules = TenantRules(dictionaries=[Dictionary("d", ["istanbul"])])
    text = "İzmir then Istanbul"
    result = scan_message(MessageContent(text=text), keys=tenant_keys(), rules=rules)
    [finding] = result.findings
    assert text[finding.location.start : finding.location.end] == "Istanbul"


def test_scans_write_nothing_matched_to_the_logs(client, tenant, make_api_key, log_file):
    ssn = fresh_ssn()
    before = log_file.stat().st_size if log_file.exists() else 0
    response = client.post(
        "/api/v1/dlp/scan", json={"text": f"SSN {ssn}"}, headers=make_api_key(tenant)
    )
    assert response.status_code == 200
    with log_file.open("rb") as handle:
        handle.seek(before)
        written = handle.read().decode("utf-8", "replace")
    assert ssn not in written and ssn.replace("-", "") not in written
