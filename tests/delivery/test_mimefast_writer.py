"""The direct writer (carepost.delivery.mime.build_bytes) writes what the email
package writes (build_message + message_bytes): the same header block, the same
structure and boundaries, the same decoded content, the same refusals; its
quoted-printable is binascii's (lines of at most 76 octets, RFC 2045 section 6.7)."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carepost.delivery.mime import (
    Attachment,
    HeaderInjection,
    MessageError,
    build_bytes,
    build_message,
    message_bytes,
)
from tests.delivery.test_mime import (
    EXPECTED_SAMPLE,
    assert_wire_format,
    body,
    display_name,
    expected_body,
    header_text,
    outgoing,
    parse,
    single_line,
)

NOW = datetime(2026, 12, 4, 7, 30, tzinfo=UTC)


def both(message) -> tuple[bytes, bytes]:
    """What the email package writes, and what the writer writes."""
    return message_bytes(build_message(message, now=NOW)), build_bytes(message, now=NOW)


def head(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[0]


def parts(data: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Each MIME part: its type, its headers and its decoded content."""
    return [
        (
            part.get_content_type(),
            {k: str(v) for k, v in part.items()},
            part.get_payload(decode=True) or b"",
        )
        for part in email.message_from_bytes(data, policy=email.policy.default).walk()
    ]


def test_sample_message_is_written_byte_for_byte():
    """The sample of test_mime.py; a lone dot is =2E here (binascii), the only
    difference, and as correct (RFC 2045 section 6.7 rule 1 allows encoding any octet)."""
    message = outgoing(
        from_name="Clínica Müller",
        subject="Résultats disponibles",
        text="Bonjour à vous\n.",
        html="<p>Bonjour à vous</p>",
        attachments=(Attachment("letter.pdf", "application/pdf", b"%PDF-1.4\n\xff"),),
        list_unsubscribe_mailto="mailto:u-x1@clinic.example",
        list_unsubscribe_url="https://clinic.example/u/x1",
        headers={"X-Carepost-Message": "0b7c"},
    )
    expected = EXPECTED_SAMPLE.replace(b"vous\r\n.\r\n", b"vous\r\n=2E\r\n")
    assert build_bytes(message, now=NOW) == expected
    slow, fast = both(message)
    assert parts(slow) == parts(fast)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"html": None},
        {"html": None, "reply_to": None, "to_name": None},
        {"from_name": "Dr. Lee, MD"},
        {"to_name": "Lee (home)"},
        {"from_name": None, "to_name": ""},
        {"text": "", "html": ""},
        {"attachments": (Attachment("a b.txt", "text/plain", b"hello"),)},
        {"html": None, "attachments": (Attachment("x.bin", "Application/X-Thing", b""),)},
        {"attachments": (Attachment("Befund Müller.pdf", "application/pdf", b"%PDF" * 40),)},
        {"list_unsubscribe_url": "https://clinic.example/u/" + "t" * 150},
        {"list_unsubscribe_mailto": "mailto:u@clinic.example"},
        {"headers": {"X-Carepost-Message": "a" * 52, "X-Tag": "reminder"}},
        {"subject": "=?utf-8?q?looks_encoded?="},
        {"subject": "a long subject " * 10},
        {"from_name": 'A "quoted" name\\'},
        {"attachments": (Attachment('we"ird\\name.pdf', "application/pdf", b"x"),)},
        {"attachments": (Attachment("a" * 90 + ".pdf", "application/pdf", b"x"),)},
    ],
)
def test_the_writer_agrees_with_the_email_package(changes):
    slow, fast = both(outgoing(**changes))
    assert_wire_format(fast)
    assert head(fast) == head(slow)
    assert parts(fast) == parts(slow)


def test_a_generated_message_id_is_random_on_the_sender_domain():
    first = build_bytes(outgoing(message_id=None, from_address="a@Mail.Clinic.Example"))
    second = build_bytes(outgoing(message_id=None, from_address="a@mail.clinic.example"))
    ids = [parse(data)["Message-ID"] for data in (first, second)]
    assert all(re.fullmatch(r"<[0-9a-f]{32}@mail\.clinic\.example>", i) for i in ids)
    assert ids[0] != ids[1]


def test_a_long_unsubscribe_uri_is_folded_between_uris_never_encoded():
    url = "https://clinic.example/u/" + "t" * 150
    message = outgoing(list_unsubscribe_mailto="mailto:u@clinic.example", list_unsubscribe_url=url)
    slow, fast = both(message)
    assert head(slow) == head(fast)
    assert f"List-Unsubscribe: <mailto:u@clinic.example>,\r\n <{url}>\r\n".encode() in fast
    assert parse(fast)["List-Unsubscribe"] == f"<mailto:u@clinic.example>, <{url}>"
    with pytest.raises(MessageError):
        build_bytes(outgoing(list_unsubscribe_url="https://clinic.example/u/" + "t" * 900))


def test_quoted_printable_lines_stay_within_76_octets():
    fast = build_bytes(outgoing(text="word " * 400 + "é" * 300, html="<p>" + "x" * 3000), now=NOW)
    assert_wire_format(fast)
    body_lines = fast.partition(b"\r\n\r\n")[2].split(b"\r\n")
    assert max(len(line) for line in body_lines) <= 76


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hello\r\nBcc: victim@example.org"},
        {"from_name": "Clinic\u2028Bcc: victim@example.org"},
        {"headers": {"X-Carepost-Message": "1\r\nBcc: victim@example.org"}},
        {"attachments": (Attachment("a\n.pdf", "application/pdf", b""),)},
    ],
)
def test_header_injection_is_refused_the_same_way(changes):
    with pytest.raises(HeaderInjection) as refused:
        build_bytes(outgoing(**changes))
    assert "victim" not in refused.value.detail


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": {"Bcc": "x@example.org"}},
        {"to_address": "not an address"},
        {"message_id": "<m@clinic.example>"},
        {"attachments": (Attachment("a.pdf", "pdf", b""),)},
        {"list_unsubscribe_url": "http://clinic.example/u/t"},
    ],
)
def test_malformed_input_is_refused_the_same_way(changes):
    with pytest.raises(MessageError) as fast:
        build_bytes(outgoing(**changes))
    with pytest.raises(MessageError) as slow:
        build_message(outgoing(**changes))
    assert (fast.value.code, fast.value.detail) == (slow.value.code, slow.value.detail)


@settings(max_examples=150)
@given(name=header_text, subject=header_text, text=body, html=body)
def test_round_trip_over_arbitrary_content(name, subject, text, html):
    message = outgoing(from_name=name, to_name=name, subject=subject, text=text, html=html)
    slow, fast = both(message)
    assert_wire_format(fast)
    assert head(fast) == head(slow)
    parsed = parse(fast)
    assert display_name(fast, "From") == display_name(fast, "To") == single_line(name)
    assert parsed["Subject"] == single_line(subject)
    assert parsed.get_body(("plain",)).get_content() == expected_body(text)
    assert parsed.get_body(("html",)).get_content() == expected_body(html)
    assert parts(fast) == parts(slow)


def read_back_filename(filename: str) -> str:
    """What the email package reads back: its ``get_filename`` unquotes a parameter
    as an address too (``email.utils.unquote``), so ``filename="<>"``, written so,
    reads as an empty name."""
    written = single_line(filename)
    if written.startswith("<") and written.endswith(">"):
        written = written[1:-1]
    return written.strip()


@settings(max_examples=50)
@given(content=st.binary(max_size=5000), filename=header_text)
@example(content=b"x", filename="<>")
def test_round_trip_over_arbitrary_attachments(content, filename):
    message = outgoing(attachments=(Attachment(filename, "application/octet-stream", content),))
    slow, fast = both(message)
    assert_wire_format(fast)
    assert parts(fast) == parts(slow)
    attachment = next(iter(parse(fast).iter_attachments()))
    assert attachment.get_content() == content
    assert attachment.get_filename() == read_back_filename(filename)
