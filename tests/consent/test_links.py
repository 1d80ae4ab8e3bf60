"""Recipient link tokens: every token round-trips, and any change to one is rejected."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from carepost.consent import links
from carepost.consent.links import InvalidLink, LinkKind
from carepost.crypto.keyring import TenantKeys

KEYS = TenantKeys(uuid.uuid4(), {1: b"d" * 32}, 1, b"i" * 32)
OTHER = TenantKeys(KEYS.tenant_id, {1: b"d" * 32}, 1, b"j" * 32)
NOW = datetime(2026, 11, 23, tzinfo=UTC)

tokens = st.builds(
    lambda kind, contact, channel, days: (
        kind,
        contact,
        channel,
        links.make_token(KEYS, kind, contact, channel, now=NOW, ttl=timedelta(days=days)),
    ),
    st.sampled_from(list(LinkKind)),
    st.uuids(),
    st.sampled_from(["email", "sms"]),
    st.integers(min_value=1, max_value=400),
)


@given(tokens)
def test_a_token_opens_its_link_and_nothing_else(token):
    kind, contact, channel, value = token
    link = links.verify(KEYS, value, kind, now=NOW)
    assert (link.contact_id, link.channel, link.tenant_id) == (contact, channel, KEYS.tenant_id)
    other_kind = LinkKind.PREFERENCES if kind is LinkKind.UNSUBSCRIBE else LinkKind.UNSUBSCRIBE
    for keys, wanted, now in (
        (OTHER, kind, NOW),
        (KEYS, other_kind, NOW),
        (KEYS, kind, link.expires_at),
    ):
        try:
            links.verify(keys, value, wanted, now=now)
        except InvalidLink:
            continue
        raise AssertionError("accepted a token it should not")


@given(tokens, st.data())
def test_any_flipped_bit_is_rejected(token, data):
    kind, _contact, _channel, value = token
    raw = bytearray(base64.urlsafe_b64decode(value + "=="))
    position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    raw[position] ^= 1 << bit
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    try:
        links.verify(KEYS, forged, kind, now=NOW)
    except InvalidLink:
        return
    raise AssertionError("accepted a tampered token")


@given(st.text(max_size=300))
def test_garbage_is_an_invalid_link_never_a_crash(garbage):
    try:
        links.verify(KEYS, garbage, LinkKind.UNSUBSCRIBE, now=NOW)
    except InvalidLink:
        return
    raise AssertionError("accepted garbage")
