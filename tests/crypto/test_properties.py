"""Properties of the envelope: round-trips, random nonces, bindings, blind indexes."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from carepost.core.errors import CryptoError
from carepost.crypto.fields import EncryptedJSON, EncryptedString
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys


def tenant_keys(versions: int = 2) -> TenantKeys:
    data = {version: AESGCM.generate_key(bit_length=256) for version in range(1, versions + 1)}
    return TenantKeys(uuid.uuid4(), data, versions, os.urandom(32))


KEYS = tenant_keys()
OTHER_TENANT = tenant_keys()
DIALECT = sqlite.dialect()
NAME = EncryptedString("properties.name")
DOCUMENT = EncryptedJSON("properties.document")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
labels = st.sampled_from(["contacts.first_name", "contacts.last_name", "users.totp_secret"])


@given(st.text())
def test_encrypted_string_round_trips(value):
    with bind_tenant_keys(KEYS):
        stored = NAME.process_bind_param(value, DIALECT)
        assert NAME.process_result_value(stored, DIALECT) == value
    assert value.encode() not in stored or len(value.encode()) < 8


@given(json_values)
def test_encrypted_json_round_trips(value):
    with bind_tenant_keys(KEYS):
        stored = DOCUMENT.process_bind_param(value, DIALECT)
        loaded = DOCUMENT.process_result_value(stored, DIALECT)
    assert json.dumps(loaded, sort_keys=True) == json.dumps(value, sort_keys=True)


@given(st.binary(), labels)
def test_equal_values_seal_to_different_ciphertexts(plaintext, label):
    first, second = KEYS.encrypt(label, plaintext), KEYS.encrypt(label, plaintext)
    assert first != second
    assert KEYS.decrypt(label, first) == KEYS.decrypt(label, second) == plaintext


@given(st.binary(), st.sampled_from([1, 2]))
def test_every_key_version_a_tenant_holds_opens_its_values(plaintext, version):
    sealed = KEYS.encrypt("contacts.phone", plaintext, version=version)
    assert KEYS.decrypt("contacts.phone", sealed) == plaintext


@given(st.binary(), st.data())
def test_flipping_any_bit_fails_closed(plaintext, data):
    sealed = KEYS.encrypt("contacts.email", plaintext)
    position = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    altered = sealed[:position] + bytes([sealed[position] ^ (1 << bit)]) + sealed[position + 1 :]
    with pytest.raises(CryptoError):
        KEYS.decrypt("contacts.email", altered)


@given(st.binary(), labels, labels)
def test_a_value_opens_only_under_its_own_label_and_tenant(plaintext, label, other_label):
    sealed = KEYS.encrypt(label, plaintext)
    with pytest.raises(CryptoError):
        OTHER_TENANT.decrypt(label, sealed)
    if other_label != label:
        with pytest.raises(CryptoError):
            KEYS.decrypt(other_label, sealed)


@given(st.text(), labels)
def test_blind_index_is_deterministic_per_tenant_and_differs_across_tenants(value, label):
    index = KEYS.blind_index(label, value)
    assert index == KEYS.blind_index(label, value)
    assert index != OTHER_TENANT.blind_index(label, value)
    assert value not in index or len(value) < 8


@given(st.text(), st.text())
def test_blind_index_differs_for_different_values(value, other):
    if value != other:
        assert KEYS.blind_index("contacts.email", value) != KEYS.blind_index(
            "contacts.email", other
        )
