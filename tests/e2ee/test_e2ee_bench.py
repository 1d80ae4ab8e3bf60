"""The encryption benchmark runs on a small count and measures every method."""

from __future__ import annotations

from bench.e2ee_encrypt import measure


def test_every_method_is_measured():
    results = measure(2)
    assert set(results) == {"smime_sign_encrypt", "pgp_sign_encrypt", "clear_serialize"}
    assert all(messages > 0 and raw > 0 for messages, raw in results.values())
