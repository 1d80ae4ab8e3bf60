"""The gateway reads two headers of every message it relays, From (whose domain must
be one of the client's) and Subject, by a fast path for the plain forms nearly every
mail server writes; the email package's parsers read the rest. Either way the result
must be the same: these properties hold the fast path to the parsers' answers."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.message import Message as MimeMessage
from email.utils import getaddresses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.contacts.fields import normalize_email
from carepost.core.errors import ValidationFailed
from carepost.gateway.server import MessageRefused, _header_from, _subject

_ATOM_CHARS = st.sampled_from("abcXYZ09.!#$%&'*+/=?^_`{|}~-")
_LOCAL = st.text(_ATOM_CHARS, min_size=1, max_size=12)
_LABEL = st.text(st.sampled_from("abz09-"), min_size=1, max_size=8)
_DOMAIN = st.lists(_LABEL, min_size=2, max_size=3).map(".".join)
# Display names with the characters that make a header ambiguous among the rest.
_NAME = st.text(st.sampled_from('ab Z."<>,;:()\\@[]=?é'), max_size=14)


def _message(**headers: str) -> MimeMessage:
    message = MimeMessage()
    for name, value in headers.items():
        message[name] = value
    return message


def _by_parser(value: str) -> str | None:
    """What the email package's parser makes of the header: its one address,
    normalized, or None where the gateway must refuse it."""
    addresses = [a for _n, a in getaddresses([value]) if a]
    if len(addresses) != 1:
        return None
    try:
        return normalize_email(addresses[0])
    except ValidationFailed:
        return None


def _read(value: str) -> str | None:
    try:
        return _header_from(_message(From=value))
    except MessageRefused:
        return None


@given(name=_NAME, local=_LOCAL, domain=_DOMAIN, bare=st.booleans())
def test_from_reads_as_the_email_package_reads_it(name, local, domain, bare):
    value = f"{local}@{domain}" if bare else f"{name}<{local}@{domain}>"
    assert _read(value) == _by_parser(value)


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("Riverside Clinic <care@clinic.example>", "care@clinic.example"),
        ("care@clinic.example", "care@clinic.example"),
        ('"Doe, Jane" <jane@clinic.example>', "jane@clinic.example"),
        ("=?utf-8?q?Cl=C3=ADnica?= <care@clinic.example>", "care@clinic.example"),
        ("care@clinic.example (Riverside)", "care@clinic.example"),
    ],
)
def test_from_forms(value, address):
    assert _header_from(_message(From=value)) == address


@pytest.mark.parametrize(
    "value",
    ["a@clinic.example, b@clinic.example", "Team: a@clinic.example, b@other.example;", "nobody"],
)
def test_a_from_without_exactly_one_address_is_refused(value):
    with pytest.raises(MessageRefused):
        _header_from(_message(From=value))


@given(st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=80))
def test_a_subject_reads_as_decoded(value):
    assert _subject(_message(Subject=value)) == str(make_header(decode_header(value)))[:998]


def test_an_encoded_subject_is_decoded():
    assert _subject(_message(Subject="=?utf-8?q?Caf=C3=A9?=")) == "Café"
