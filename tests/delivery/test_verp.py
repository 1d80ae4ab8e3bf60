"""VERP return paths: round trip, tampering, case folding, no id in clear."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery import verp

SECRET = b"a-secret-of-at-least-32-bytes-long!!"


@given(st.uuids(), st.sampled_from(["bounces.example.org", "B.Example.COM"]))
def test_return_path_round_trips(message_id: uuid.UUID, domain: str) -> None:
    address = verp.return_path(message_id, bounce_domain=domain, secret=SECRET)
    assert verp.message_of_return_path(address, secret=SECRET) == message_id
    # Mail systems may fold the case of a local part; the token survives it.
    assert verp.message_of_return_path(address.upper(), secret=SECRET) == message_id
    assert verp.message_of_return_path(f"<{address}>", secret=SECRET) == message_id


@given(st.uuids())
def test_return_path_shows_no_id_and_fits_a_local_part(message_id: uuid.UUID) -> None:
    address = verp.return_path(message_id, bounce_domain="b.example", secret=SECRET)
    local = address.split("@")[0]
    assert len(local) <= 64
    assert message_id.hex not in address.lower() and str(message_id) not in address
    assert local == local.lower() and local.replace("-", "").isalnum()


@given(st.uuids(), st.data())
def test_any_changed_character_is_rejected(message_id: uuid.UUID, data: st.DataObject) -> None:
    token = verp.return_token(message_id, secret=SECRET)
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
    tampered = token[:position] + replacement + token[position + 1 :]
    if tampered != token:
        assert verp.message_of_token(tampered, secret=SECRET) is None


@given(st.uuids())
def test_another_secret_does_not_verify(message_id: uuid.UUID) -> None:
    address = verp.return_path(message_id, bounce_domain="b.example", secret=SECRET)
    assert verp.message_of_return_path(address, secret=b"x" * 32) is None


@given(st.text(max_size=120))
def test_arbitrary_addresses_never_raise(address: str) -> None:
    assert verp.message_of_return_path(address, secret=SECRET) is None


def test_other_addresses_are_not_return_paths() -> None:
    for address in ("", "care@clinic.example", "b-@x", "b-short@x", "<>", "b-" + "a" * 42):
        assert verp.message_of_return_path(address, secret=SECRET) is None


def test_tokens_made_in_many_threads_at_once_each_name_their_message():
    """One encryptor is kept per thread: tokens made concurrently are still right."""
    from concurrent.futures import ThreadPoolExecutor

    secret = b"s" * 32
    ids = [uuid.uuid4() for _ in range(2_000)]

    def tokens(chunk: list[uuid.UUID]) -> list[str]:
        return [verp.return_token(message_id, secret=secret) for message_id in chunk]

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = [t for part in pool.map(tokens, [ids[n::8] for n in range(8)]) for t in part]
    expected = [t for n in range(8) for t in tokens(ids[n::8])]
    assert made == expected
    assert {verp.message_of_token(t, secret=secret) for t in made} == set(ids)
