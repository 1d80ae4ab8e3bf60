"""Messages built by carepost.delivery.mime parse back, with the stdlib parser, to
exactly what was asked; the bytes follow RFC 5322/2045 (CRLF, lines under 998
octets, the right transfer encodings); header injection is refused."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.delivery.mime import (
    Attachment,
    HeaderInjection,
    MessageError,
    OutgoingMessage,
    build_message,
    message_bytes,
)

NOW = datetime(2026, 12, 4, 7, 30, tzinfo=UTC)


def outgoing(**changes) -> OutgoingMessage:
    values = {
        "from_address": "news@clinic.example",
        "from_name": "Riverside Clinic",
        "to_address": "pat@example.org",
        "to_name": "Pat Doe",
        "reply_to": "help@clinic.example",
        "subject": "Your appointment",
        "html": "<p>See you soon.</p>",
        "text": "See you soon.",
        "message_id": "m-1@clinic.example",
    }
    return OutgoingMessage(**(values | changes))


def parse(data: bytes) -> email.message.EmailMessage:
    # As a mail store keeps it: local line ends (the wire format is checked apart).
    local = data.replace(b"\r\n", b"\n")
    return email.message_from_bytes(local, policy=email.policy.default)  # type: ignore[return-value]


def wire(message: OutgoingMessage) -> bytes:
    return message_bytes(build_message(message, now=NOW))


def assert_wire_format(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b""), "a bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "a bare CR"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert all(byte < 128 for byte in data), "8-bit data without 8BITMIME"


EXPECTED_SAMPLE = (
    b"From: =?utf-8?q?Cl=C3=ADnica_M=C3=BCller?= <news@clinic.example>\r\n"
    b"To: Pat Doe <pat@example.org>\r\n"
    b"Reply-To: help@clinic.example\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats_disponibles?=\r\n"
    b"Date: Fri, 04 Dec 2026 07:30:00 +0000\r\n"
    b"Message-ID: <m-1@clinic.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"List-Unsubscribe: <mailto:u-x1@clinic.example>, <https://clinic.example/u/x1>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Carepost-Message: 0b7c\r\n"
    b'Content-Type: multipart/mixed; boundary="=_e04bb6c0ae6fa924531e6453_0"\r\n'
    b"\r\n"
    b"--=_e04bb6c0ae6fa924531e6453_0\r\n"
    b'Content-Type: multipart/alternative; boundary="=_e04bb6c0ae6fa924531e6453_1"\r\n'
    b"\r\n"
    b"--=_e04bb6c0ae6fa924531e6453_1\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Bonjour =C3=A0 vous\r\n"
    b".\r\n"
    b"\r\n"
    b"--=_e04bb6c0ae6fa924531e6453_1\r\n"
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Bonjour =C3=A0 vous</p>\r\n"
    b"\r\n"
    b"--=_e04bb6c0ae6fa924531e6453_1--\r\n"
    b"\r\n"
    b"--=_e04bb6c0ae6fa924531e6453_0\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="letter.pdf"\r\n'
    b"\r\n"
    b"JVBERi0xLjQK/w==\r\n"
    b"\r\n"
    b"--=_e04bb6c0ae6fa924531e6453_0--\r\n"
)


def test_sample_message_has_exactly_the_expected_bytes():
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
    assert wire(message) == EXPECTED_SAMPLE


def test_text_only_message_is_a_single_quoted_printable_part():
    data = wire(outgoing(html=None, reply_to=None, to_name=None))
    parsed = parse(data)
    assert parsed.get_content_type() == "text/plain"
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert "Reply-To" not in parsed and "List-Unsubscribe" not in parsed
    assert parsed["To"] == "pat@example.org"
    assert parsed.get_content() == "See you soon.\n"


def test_html_and_text_are_alternatives_text_first():
    parsed = parse(wire(outgoing()))
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed.get_body(("html",)).get_content() == "<p>See you soon.</p>\n"


def test_attachments_go_in_multipart_mixed_as_base64():
    pdf = bytes(range(256)) * 40
    data = wire(
        outgoing(
            attachments=(
                Attachment("Befund Müller.pdf", "application/pdf", pdf),
                Attachment("notes.txt", "text/plain", "naïve\n".encode()),
            )
        )
    )
    assert_wire_format(data)
    parsed = parse(data)
    assert parsed.get_content_type() == "multipart/mixed"
    first, *attachments = list(parsed.iter_parts())
    assert first.get_content_type() == "multipart/alternative"
    assert [a.get_filename() for a in attachments] == ["Befund Müller.pdf", "notes.txt"]
    assert all(a["Content-Transfer-Encoding"] == "base64" for a in attachments)
    assert attachments[0].get_content() == pdf
    assert attachments[1].get_payload(decode=True) == "naïve\n".encode()
    # MIME-Version belongs to the top level only (RFC 2045 section 4).
    assert all("MIME-Version" not in part for part in parsed.walk() if part is not parsed)


def test_generated_message_id_is_random_on_the_sender_domain():
    first = build_message(outgoing(message_id=None, from_address="a@Mail.Clinic.Example"))
    second = build_message(outgoing(message_id=None, from_address="a@mail.clinic.example"))
    assert re.fullmatch(r"<[0-9a-f]{32}@mail\.clinic\.example>", first["Message-ID"])
    assert first["Message-ID"] != second["Message-ID"]


def test_one_click_header_only_with_an_https_uri():
    mailto_only = parse(wire(outgoing(list_unsubscribe_mailto="mailto:u@clinic.example")))
    assert mailto_only["List-Unsubscribe"] == "<mailto:u@clinic.example>"
    assert "List-Unsubscribe-Post" not in mailto_only
    both = parse(
        wire(
            outgoing(
                list_unsubscribe_mailto="mailto:u@clinic.example",
                list_unsubscribe_url="https://clinic.example/u/t",
            )
        )
    )
    assert both["List-Unsubscribe"] == "<mailto:u@clinic.example>, <https://clinic.example/u/t>"
    assert both["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with pytest.raises(MessageError):
        build_message(outgoing(list_unsubscribe_url="http://clinic.example/u/t"))


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hello\r\nBcc: victim@example.org"},
        {"subject": "Hello\nX-Evil: 1"},
        {"from_name": "Clinic\rBcc: x@example.org"},
        {"to_name": "Pat\n"},
        {"to_address": "pat@example.org\r\nBcc: x@example.org"},
        {"reply_to": "help@clinic.example\nX: y"},
        {"message_id": "m@clinic.example\r\nX: y"},
        {"list_unsubscribe_url": "https://clinic.example/u\r\nX: y"},
        {"headers": {"X-Carepost-Message": "1\r\nBcc: x@example.org"}},
        {"attachments": (Attachment("a\n.pdf", "application/pdf", b""),)},
    ],
)
def test_line_breaks_in_any_header_value_are_refused(changes):
    assert_refused_as_injection(changes)


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029"])
@pytest.mark.parametrize("field", ["subject", "from_name", "headers"])
def test_other_line_separators_are_refused_too(field, separator):
    """The email package folds at every str.splitlines() separator, so each could
    start a header of its own."""
    value = f"Hello{separator}Bcc: victim@example.org"
    changes = {"headers": {"X-Carepost-Message": value}} if field == "headers" else {field: value}
    assert_refused_as_injection(changes)


def assert_refused_as_injection(changes):
    with pytest.raises(HeaderInjection) as refused:
        build_message(outgoing(**changes))
    assert refused.value.code == "header-injection"
    # The error names the field, never the value (a name may be PHI).
    assert "victim" not in refused.value.detail and "Pat" not in refused.value.detail


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": {"Bcc": "x@example.org"}},
        {"headers": {"From": "x@example.org"}},
        {"headers": {"Bad Name": "1"}},
        {"headers": {"X-A:B": "1"}},
        {"headers": {"X-Carepost-Message": "a\x00b"}},
        {"to_address": "not an address"},
        {"from_address": "news@"},
        {"message_id": "<m@clinic.example>"},
        {"attachments": (Attachment("a.pdf", "pdf", b""),)},
    ],
)
def test_other_malformed_input_is_refused(changes):
    with pytest.raises(MessageError):
        build_message(outgoing(**changes))


def test_international_domain_is_sent_in_punycode():
    parsed = parse(wire(outgoing(to_address="pat@bücher.example")))
    assert parsed["To"].addresses[0].addr_spec == "pat@xn--bcher-kva.example"


# --- round trip over arbitrary content ------------------------------------------------

# Header text: anything printable (quotes, commas, angle brackets, emoji included).
header_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1,
    max_size=200,
).filter(lambda s: s.strip())
# Bodies: lines of any length, lone dots, "From " lines, trailing blanks, unicode.
body_line = st.one_of(
    st.just("."),
    st.just(".."),
    st.just("From here"),
    st.just("   "),
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
        max_size=1500,
    ),
)
body = st.lists(body_line, max_size=12).map("\n".join)


def expected_body(text: str) -> str:
    # Each line ends with a line break; a final line break does not start another line.
    # An empty body is one empty line.
    return "".join(line + "\n" for line in text.splitlines()) or "\n"


def display_name(data: bytes, header: str) -> str:
    """The display name as RFC 2047 section 6.2 reads it: white space between two
    encoded-words is dropped. (CPython's address parser keeps it, a known bug, so
    the phrase is decoded with the email.header decoder, which follows the RFC.)"""
    raw = email.message_from_bytes(data.replace(b"\r\n", b"\n"))[header]
    phrase = " ".join(raw.split()).rpartition(" <")[0]
    if "=?" not in phrase:
        return parse(data)[header].addresses[0].display_name
    return str(make_header(decode_header(phrase)))


def single_line(value: str) -> str:
    return " ".join(value.split())


@settings(max_examples=150)
@given(name=header_text, subject=header_text, text=body, html=body)
def test_round_trip_preserves_names_subject_and_bodies(name, subject, text, html):
    message = outgoing(from_name=name, to_name=name, subject=subject, text=text, html=html)
    data = wire(message)
    assert_wire_format(data)
    parsed = parse(data)
    assert display_name(data, "From") == single_line(name)
    assert parsed["From"].addresses[0].addr_spec == "news@clinic.example"
    assert display_name(data, "To") == single_line(name)
    assert parsed["To"].addresses[0].addr_spec == "pat@example.org"
    assert parsed["Subject"] == single_line(subject)
    assert parsed.get_body(("plain",)).get_content() == expected_body(text)
    assert parsed.get_body(("html",)).get_content() == expected_body(html)


@settings(max_examples=50)
@given(content=st.binary(max_size=5000), filename=header_text)
def test_round_trip_preserves_attachments(content, filename):
    data = wire(outgoing(attachments=(Attachment(filename, "application/octet-stream", content),)))
    assert_wire_format(data)
    attachment = next(iter(parse(data).iter_attachments()))
    assert attachment.get_content() == content
    assert attachment.get_filename() == single_line(filename)
