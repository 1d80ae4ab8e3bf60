"""DKIM over the direct writer's bytes (build_bytes): both signatures of one message,
computed from one canonicalization (dkim.Canonical), verify with dkimpy, OpenDKIM and
Mail::DKIM; the relaxed forms are dkimpy's, byte for byte."""

from __future__ import annotations

import dkim as dkimpy
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.delivery import dkim
from carepost.delivery.dkim import Canonical, sign_all
from carepost.delivery.mime import Attachment, OutgoingMessage, build_bytes
from tests.delivery.test_dkim import (  # noqa: F401 - fixtures
    DOMAIN,
    dnsfunc_for,
    loopback_dns,
    mail_dkim_verify,
    opendkim_dns,
    opendkim_verify,
    published,
    signers,
)


def written(**changes) -> bytes:
    values = {
        "from_address": f"news@{DOMAIN}",
        "from_name": "Clínica Müller",
        "to_address": "pat@example.org",
        "to_name": "Pat Doe",
        "reply_to": f"help@{DOMAIN}",
        "subject": "Résultats disponibles",
        "html": "<p>Hello</p>\n" + "x" * 2000 + "\n.\n",
        "text": "Hello\n.\nFrom here\n  trailing blanks   \n",
        "list_unsubscribe_mailto": f"mailto:u-1@{DOMAIN}",
        "list_unsubscribe_url": f"https://{DOMAIN}/u/" + "t" * 120,
        "headers": {"X-Carepost-Message": "42"},
        "attachments": (Attachment("letter.pdf", "application/pdf", bytes(range(256)) * 9),),
        "message_id": f"m-1@{DOMAIN}",
    }
    return build_bytes(OutgoingMessage(**(values | changes)))


def both_signed(signers, data: bytes) -> bytes:  # noqa: F811
    return sign_all(data, [signers["rsa-sha256"][0], signers["ed25519-sha256"][0]])


@pytest.mark.parametrize("changes", [{}, {"html": None, "attachments": ()}, {"attachments": ()}])
def test_both_signatures_verify_with_dkimpy(signers, changes):  # noqa: F811
    signed = both_signed(signers, written(**changes))
    records = dnsfunc_for(published(signers, "rsa-sha256", "ed25519-sha256"))
    verifier = dkimpy.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=records)
    assert verifier.verify(idx=1, dnsfunc=records)
    tampered = dkimpy.DKIM(signed.replace(b"Hello", b"Hellp", 1))
    for index in (0, 1):
        with pytest.raises(dkimpy.ValidationError, match="body hash mismatch"):
            tampered.verify(idx=index, dnsfunc=records)


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_each_signature_verifies_with_opendkim(signers, opendkim_dns, algorithm):  # noqa: F811
    other = "ed25519-sha256" if algorithm == "rsa-sha256" else "rsa-sha256"
    # opendkim-testmsg checks the first signature: the one of ``algorithm``.
    signed = sign_all(written(), [signers[other][0], signers[algorithm][0]])
    result = opendkim_verify(signed, opendkim_dns)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    result = opendkim_verify(signed.replace(b"Hello", b"Hellp", 1), opendkim_dns)
    assert result.returncode != 0 and b"Bad signature" in result.stderr


def test_rsa_signature_verifies_with_mail_dkim(signers, loopback_dns):  # noqa: F811
    lines = sorted(mail_dkim_verify(both_signed(signers, written()), *loopback_dns))
    assert lines[1] == f"rsa-sha256 {DOMAIN} cp-rsa-1 pass"


def test_one_canonicalization_serves_every_signer(signers, monkeypatch):  # noqa: F811
    made = []
    original = Canonical.of.__func__  # type: ignore[attr-defined]

    def counting(cls, data):
        made.append(data)
        return original(cls, data)

    monkeypatch.setattr(Canonical, "of", classmethod(counting))
    both_signed(signers, written())
    assert len(made) == 1


blanks = st.text(st.sampled_from(" \t\r\nab:"), max_size=60).map(lambda s: s.encode())


@settings(max_examples=300)
@given(name=st.sampled_from([b"Subject", b"FROM ", b"x-a"]), value=blanks, body=blanks)
def test_relaxed_forms_are_dkimpys(name, value, body):
    [(lowered, canonical)] = Relaxed.canonicalize_headers([(name, value)])
    assert dkim._relaxed_header(name, value) == bytes(lowered) + b":" + bytes(canonical)[:-2]
    crlf = dkim._BARE_LF.sub(b"\r\n", body)
    assert dkim._relaxed_body(crlf) == bytes(Relaxed.canonicalize_body(crlf))


@settings(max_examples=300)
@given(data=st.text(st.sampled_from("\r\nab: "), max_size=80).map(lambda s: s.encode()))
def test_line_ends_are_made_crlf_as_the_substitution_makes_them(data):
    """The shortcut for messages without bare LFs gives what the substitution gives."""
    assert dkim._with_crlf(data) == dkim._BARE_LF.sub(b"\r\n", data)
