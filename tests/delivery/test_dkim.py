"""DKIM signatures made by carepost.delivery.dkim verify with dkimpy (its DNS
lookups answered from the key records the test generated) and with two independent
implementations, OpenDKIM's opendkim-testmsg (RSA and Ed25519) and Perl's Mail::DKIM
(RSA: the Debian 12 release lacks Ed25519), which ask a real DNS server on loopback."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import dkim as dkimpy
import pytest

from carepost.delivery.dkim import DkimSigner, SigningError, sign, sign_all
from carepost.delivery.mime import OutgoingMessage, build_message, message_bytes
from carepost.domains.keys import generate_key, key_record_value, txt_strings
from tests.dns_server import dns_server

DOMAIN = "clinic.example"
VERIFIER = Path(__file__).with_name("mail_dkim_verify.pl")


@pytest.fixture(scope="module")
def signers() -> dict[str, tuple[DkimSigner, str]]:
    """One signer per algorithm, with the TXT value its selector publishes."""
    made = {}
    for algorithm, selector in (("rsa-sha256", "cp-rsa-1"), ("ed25519-sha256", "cp-ed-1")):
        pair = generate_key(algorithm)
        signer = DkimSigner(DOMAIN, selector, algorithm, pair.private_key_pem)
        made[algorithm] = (signer, key_record_value(algorithm, pair.public_key))
    return made


def dnsfunc_for(records: dict[str, str]):
    """dkimpy's DNS hook answered from the records we publish (the DNS data, not a mock
    of the verifier: dkimpy parses and checks them as it would a real answer)."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return "".join(txt_strings(value)).encode() if value else None

    return lookup


def published(signers, *algorithms: str) -> dict[str, str]:
    return {f"{signers[a][0].selector}._domainkey.{DOMAIN}": signers[a][1] for a in algorithms}


def sample_message(**changes) -> bytes:
    values = {
        "from_address": f"news@{DOMAIN}",
        "from_name": "Clínica Müller",
        "to_address": "pat@example.org",
        "to_name": None,
        "reply_to": f"help@{DOMAIN}",
        "subject": "Résultats disponibles: " + "long subject " * 10,
        "html": "<p>Hello</p>\n" + "x" * 2000 + "\n.\n",
        "text": "Hello\n.\nFrom here\n  trailing blanks   \n",
        "list_unsubscribe_mailto": f"mailto:u-1@{DOMAIN}",
        "list_unsubscribe_url": f"https://{DOMAIN}/u/1",
        "headers": {"X-Carepost-Message": "42"},
    }
    return message_bytes(build_message(OutgoingMessage(**(values | changes))))


def signature_tags(data: bytes, index: int = 0) -> dict[str, str]:
    headers = data.split(b"\r\n\r\n", 1)[0].decode()
    fields = re.findall(r"^DKIM-Signature:(.*?)(?=^\S)", headers + "\r\nX:", re.M | re.S)
    value = re.sub(r"\s+", "", fields[index])
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_signature_verifies_with_dkimpy(signers, algorithm):
    signer, _record = signers[algorithm]
    message = sample_message()
    signed = signer.sign(message)
    assert signed.endswith(message) and signed.startswith(b"DKIM-Signature: ")
    assert dkimpy.verify(signed, dnsfunc=dnsfunc_for(published(signers, algorithm)))
    tags = signature_tags(signed)
    assert tags["a"] == algorithm and tags["c"] == "relaxed/relaxed"
    assert tags["d"] == DOMAIN and tags["s"] == signer.selector


def test_recommended_headers_are_signed_and_from_is_oversigned(signers):
    signed = signers["rsa-sha256"][0].sign(sample_message())
    signed_names = signature_tags(signed)["h"].split(":")
    assert signed_names.count("from") == 2
    for name in (
        "reply-to",
        "subject",
        "date",
        "to",
        "message-id",
        "mime-version",
        "content-type",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ):
        assert name in signed_names, name
    # Our own opaque header is not part of the recommendation.
    assert "x-carepost-message" not in signed_names


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data.replace(b"Subject: ", b"Subject: Re: ", 1),
        lambda data: data.replace(b"Hello", b"Hellp", 1),
        # A second From added on the way: the oversigned From catches it.
        lambda data: data.replace(b"\r\nFrom: ", b"\r\nFrom: evil@attacker.example\r\nFrom: ", 1),
        lambda data: data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
    ],
)
def test_a_changed_message_fails_verification(signers, tamper):
    signed = signers["rsa-sha256"][0].sign(sample_message())
    tampered = tamper(signed)
    assert tampered != signed
    assert not dkimpy.verify(tampered, dnsfunc=dnsfunc_for(published(signers, "rsa-sha256")))


def test_relaxed_canonicalization_survives_refolding_and_trailing_blanks(signers):
    signed = signers["ed25519-sha256"][0].sign(sample_message())
    refolded = signed.replace(b"Subject: ", b"Subject:   ", 1).replace(
        b"Hello\r\n", b"Hello  \r\n", 1
    )
    assert dkimpy.verify(refolded, dnsfunc=dnsfunc_for(published(signers, "ed25519-sha256")))


def test_dual_signature_both_verify(signers):
    signed = sign_all(sample_message(), [signers["rsa-sha256"][0], signers["ed25519-sha256"][0]])
    verifier = dkimpy.DKIM(signed)
    records = dnsfunc_for(published(signers, "rsa-sha256", "ed25519-sha256"))
    assert verifier.verify(idx=0, dnsfunc=records)
    assert verifier.verify(idx=1, dnsfunc=records)
    assert {signature_tags(signed, i)["a"] for i in (0, 1)} == {"rsa-sha256", "ed25519-sha256"}


def test_an_unpublished_key_does_not_verify(signers):
    signed = signers["rsa-sha256"][0].sign(sample_message())
    assert not dkimpy.verify(signed, dnsfunc=dnsfunc_for({}))


def test_wrong_key_for_the_algorithm_is_a_clear_error(signers):
    rsa_key = signers["rsa-sha256"][0].private_key_pem
    with pytest.raises(SigningError):
        sign(
            sample_message(),
            domain=DOMAIN,
            selector="x",
            private_key_pem=rsa_key,
            algorithm="ed25519-sha256",
        )


def test_signer_repr_never_shows_the_private_key(signers):
    signer = signers["rsa-sha256"][0]
    assert "PRIVATE" not in repr(signer) and "private_key_pem" not in repr(signer)


# --- the independent verifier: Perl's Mail::DKIM against a loopback DNS server --------


def mail_dkim_verify(data: bytes, host: str, port: int) -> list[str]:
    if shutil.which("perl") is None:
        pytest.fail("perl is missing: `make dkim-verifier` installs Mail::DKIM")
    result = subprocess.run(
        ["perl", str(VERIFIER), host, str(port)],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


@pytest.fixture(scope="module")
def loopback_dns(signers):
    with dns_server() as (zone, host, port):
        for signer, record in signers.values():
            zone.txt(f"{signer.selector}._domainkey.{DOMAIN}.", record)
        yield host, port


def test_rsa_signature_verifies_with_mail_dkim(signers, loopback_dns):
    signer, _record = signers["rsa-sha256"]
    lines = mail_dkim_verify(signer.sign(sample_message()), *loopback_dns)
    assert lines == [f"rsa-sha256 {DOMAIN} {signer.selector} pass"]


def test_a_receiver_without_ed25519_still_passes_the_rsa_signature(signers, loopback_dns):
    """Mail::DKIM as Debian 12 ships it does not know Ed25519 (RFC 8463): like such a
    receiver, it sets that signature aside and the RSA one passes (why we dual-sign)."""
    signed = sign_all(sample_message(), [signers["rsa-sha256"][0], signers["ed25519-sha256"][0]])
    lines = sorted(mail_dkim_verify(signed, *loopback_dns))
    assert lines == [
        f"ed25519-sha256 {DOMAIN} cp-ed-1 invalid (unsupported algorithm ed25519-sha256)",
        f"rsa-sha256 {DOMAIN} cp-rsa-1 pass",
    ]


def test_mail_dkim_fails_a_tampered_message(signers, loopback_dns):
    signed = signers["rsa-sha256"][0].sign(sample_message())
    lines = mail_dkim_verify(signed.replace(b"Hello", b"Hellp", 1), *loopback_dns)
    assert len(lines) == 1 and lines[0].split()[3] == "fail"


# --- the independent verifier for both algorithms: OpenDKIM's opendkim-testmsg -------
#
# opendkim-testmsg has no option for a name server or a key file: it asks the system
# resolver (/etc/resolv.conf, port 53). Each run gets a mount namespace of its own in
# which a resolv.conf naming our loopback server is bound over /etc/resolv.conf, and
# the server listens on port 53 of a random 127.53.x.y address, so parallel runs and
# the machine's own resolver are untouched. Both need root (CI and `make test` run so).


@pytest.fixture(scope="module")
def opendkim_dns(signers, tmp_path_factory):
    if shutil.which("opendkim-testmsg") is None:
        pytest.fail("opendkim-testmsg is missing: `make dkim-verifier` installs opendkim-tools")
    if os.geteuid() != 0:
        pytest.skip("pointing opendkim-testmsg at the test DNS server needs root (mount namespace)")
    for _attempt in range(5):
        host = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"
        try:
            server = dns_server(host=host, port=53)
            zone, host, _port = server.__enter__()
        except OSError:
            continue
        break
    else:
        pytest.fail("no free loopback address for the test DNS server on port 53")
    resolv = tmp_path_factory.mktemp("opendkim") / "resolv.conf"
    resolv.write_text(f"nameserver {host}\noptions attempts:1 timeout:5\n")
    for signer, record in signers.values():
        zone.txt(f"{signer.selector}._domainkey.{DOMAIN}.", record)
    yield resolv
    server.__exit__(None, None, None)


def opendkim_verify(data: bytes, resolv: Path) -> subprocess.CompletedProcess[bytes]:
    """opendkim-testmsg verifies the (first) signature; exit 0 and no output is a pass."""
    script = f"mount --bind {resolv} /etc/resolv.conf && exec opendkim-testmsg"
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_signature_verifies_with_opendkim(signers, opendkim_dns, algorithm):
    signed = signers[algorithm][0].sign(sample_message())
    result = opendkim_verify(signed, opendkim_dns)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_opendkim_fails_a_tampered_message(signers, opendkim_dns, algorithm):
    signed = signers[algorithm][0].sign(sample_message())
    result = opendkim_verify(signed.replace(b"Hello", b"Hellp", 1), opendkim_dns)
    assert result.returncode != 0 and b"Bad signature" in result.stderr


def test_opendkim_really_asks_our_dns_server(signers, opendkim_dns):
    """A selector the server does not publish fails: the pass above came from our records."""
    pair = generate_key("ed25519-sha256")
    stranger = DkimSigner(DOMAIN, "unpublished", "ed25519-sha256", pair.private_key_pem)
    result = opendkim_verify(stranger.sign(sample_message()), opendkim_dns)
    assert result.returncode != 0, result.stderr


def test_signature_lines_stay_under_78_characters(signers):
    signed = sign_all(sample_message(), [signers["rsa-sha256"][0], signers["ed25519-sha256"][0]])
    head = signed.split(b"\r\n\r\n", 1)[0].decode()
    signature_lines = [
        line
        for field in re.findall(r"^DKIM-Signature:.*?(?=^\S)", head + "\r\nX:", re.M | re.S)
        for line in field.split("\r\n")
    ]
    assert signature_lines and max(len(line) for line in signature_lines) <= 78


def test_a_message_with_bare_line_feeds_is_signed_as_smtp_sends_it(signers):
    """aiosmtplib sends CRLF line ends; the signature covers that form."""
    signer, _record = signers["ed25519-sha256"]
    crlf = sample_message()
    signed = signer.sign(crlf.replace(b"\r\n", b"\n"))
    as_sent = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert dkimpy.verify(as_sent, dnsfunc=dnsfunc_for(published(signers, "ed25519-sha256")))


def test_a_message_without_from_cannot_be_signed(signers):
    with pytest.raises(SigningError):
        signers["rsa-sha256"][0].sign(b"Subject: no sender\r\n\r\nBody\r\n")
