"""WKD: the hash of the draft's example, and lookups against a real HTTP server on
loopback (advanced method, fall back to direct only when the advanced host is
unreachable, 404 means no key)."""

from __future__ import annotations

import socket

import httpx
import pysequoia

from carepost.e2ee.wkd import fetch_wkd, wkd_hash, wkd_urls, zbase32
from tests.e2ee.wkd_server import serving


def test_hash_matches_the_drafts_example():
    # draft-koch-openpgp-webkey-service section 3.1: Joe.Doe@Example.ORG
    assert wkd_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
    assert wkd_urls("Joe.Doe@Example.ORG") == [
        (
            "openpgpkey.example.org",
            "/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe",
        ),
        ("example.org", "/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"),
    ]
    assert zbase32(b"") == "" and zbase32(b"\x00") == "yy"


def _closed_port_origin() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_advanced_method_then_direct_only_when_unreachable():
    cert = pysequoia.Tsk.generate("P <pat@patient.example>").extract_certificate()
    advanced, direct = wkd_urls("pat@patient.example")
    with httpx.Client(timeout=5) as client, serving({advanced[1]: bytes(cert)}) as (origin, asked):
        found = fetch_wkd("pat@patient.example", client, origins={advanced[0]: origin})
        assert found == bytes(cert) and asked == [advanced[1]]
    with httpx.Client(timeout=5) as client, serving({direct[1]: bytes(cert)}) as (origin, asked):
        origins = {advanced[0]: _closed_port_origin(), direct[0]: origin}
        assert fetch_wkd("pat@patient.example", client, origins=origins) == bytes(cert)
        assert asked == [direct[1]]
        # An advanced host that answers 404 is the WKD: no key, no direct lookup.
        origins = {advanced[0]: origin, direct[0]: origin}
        asked.clear()
        assert fetch_wkd("nobody@patient.example", client, origins=origins) is None
        assert len(asked) == 1 and "/openpgpkey/patient.example/hu/" in asked[0]
