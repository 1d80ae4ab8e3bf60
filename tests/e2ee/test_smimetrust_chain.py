"""Chain validation and revocation of S/MIME recipient certificates against real
components: a root, an intermediate and leaves made with ``cryptography``, CRLs
and an OCSP responder served on 127.0.0.1, and ``openssl verify`` as an
independent judge of the chain decisions."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from carepost.e2ee import trust
from carepost.e2ee.errors import KeyRejected
from tests.e2ee.smimetrust_pki import NOW, Authority, Responder, dead_url, make_ca, make_leaf, serve

ADDRESS = "bob@patient.example"


@pytest.fixture(scope="module")
def root() -> Authority:
    return make_ca("carepost trust test root")


@pytest.fixture(scope="module")
def intermediate(root: Authority) -> Authority:
    return make_ca("carepost trust test intermediate", root)


@pytest.fixture
def responder(intermediate: Authority) -> Iterator[Responder]:
    with serve(Responder(intermediate)) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


def _evaluate(
    leaf: x509.Certificate,
    intermediate: Authority,
    root: Authority,
    client: httpx.Client,
    **options: object,
) -> trust.TrustDecision:
    return trust.evaluate(
        leaf,
        [intermediate.certificate],
        [root.certificate],
        NOW,
        client=client,
        use_system_store=False,
        cache=trust.CrlCache(),
        **options,  # type: ignore[arg-type]
    )


def test_good_chain_is_accepted_and_status_comes_from_ocsp(
    root: Authority, intermediate: Authority, responder: Responder, client: httpx.Client
) -> None:
    leaf, _ = make_leaf(
        intermediate, ADDRESS, ocsp_url=f"{responder.url}/ocsp", crl_url=f"{responder.url}/crl"
    )
    decision = _evaluate(leaf, intermediate, root, client)
    assert decision.usable, decision.reason
    assert [c.subject for c in decision.chain] == [
        leaf.subject,
        intermediate.certificate.subject,
        root.certificate.subject,
    ]
    assert decision.revocation is not None and decision.revocation.source == "ocsp"
    assert responder.requests == ["POST /ocsp"]


def test_good_chain_with_crl_only(
    root: Authority, intermediate: Authority, responder: Responder, client: httpx.Client
) -> None:
    leaf, _ = make_leaf(intermediate, ADDRESS, crl_url=f"{responder.url}/crl")
    cache = trust.CrlCache()
    for _ in range(3):
        decision = trust.evaluate(
            leaf,
            [intermediate.certificate],
            [root.certificate],
            NOW,
            client=client,
            use_system_store=False,
            cache=cache,
        )
        assert decision.usable and decision.reason == "not revoked (CRL)"
    # Cached until its nextUpdate: fetched once.
    assert responder.requests == ["GET /crl"]


def test_unknown_ca_is_refused_with_a_clear_reason(
    intermediate: Authority, responder: Responder, client: httpx.Client
) -> None:
    stranger = make_ca("someone else's root")
    leaf, _ = make_leaf(intermediate, ADDRESS, crl_url=f"{responder.url}/crl")
    with pytest.raises(KeyRejected) as caught:
        trust.verify_chain(
            leaf, [intermediate.certificate], [stranger.certificate], NOW, use_system_store=False
        )
    assert caught.value.detail == "the certificate does not chain to a trusted CA"
    # Nor does the system bundle know our test root.
    decision = trust.evaluate(leaf, [intermediate.certificate], [], NOW, client=client)
    assert not decision.usable
    assert decision.reason == "the certificate does not chain to a trusted CA"
    assert responder.requests == []  # no revocation lookup for an untrusted certificate


def test_expired_intermediate_is_refused(
    root: Authority, responder: Responder, client: httpx.Client
) -> None:
    expired = make_ca(
        "expired intermediate",
        root,
        not_before=NOW - timedelta(days=400),
        not_after=NOW - timedelta(days=1),
    )
    leaf, _ = make_leaf(expired, ADDRESS)
    decision = _evaluate(leaf, expired, root, client)
    assert not decision.usable
    assert decision.reason == "an intermediate certificate of the chain has expired"


def test_leaf_revoked_by_crl_is_refused(
    root: Authority, intermediate: Authority, responder: Responder, client: httpx.Client
) -> None:
    leaf, _ = make_leaf(intermediate, ADDRESS, crl_url=f"{responder.url}/crl")
    intermediate.revoked.add(leaf.serial_number)
    try:
        decision = _evaluate(leaf, intermediate, root, client, revocation_mode="soft")
    finally:
        intermediate.revoked.discard(leaf.serial_number)
    assert not decision.usable
    assert decision.reason == "the certificate is revoked (CRL)"


def test_leaf_revoked_by_ocsp_is_refused(
    root: Authority, intermediate: Authority, responder: Responder, client: httpx.Client
) -> None:
    leaf, _ = make_leaf(intermediate, ADDRESS, ocsp_url=f"{responder.url}/ocsp")
    intermediate.revoked.add(leaf.serial_number)
    try:
        decision = _evaluate(leaf, intermediate, root, client, revocation_mode="soft")
    finally:
        intermediate.revoked.discard(leaf.serial_number)
    assert not decision.usable
    assert decision.reason == "the certificate is revoked (OCSP)"
    assert responder.requests == ["POST /ocsp"]


def test_a_crl_signed_by_another_key_is_not_believed(
    root: Authority, intermediate: Authority, client: httpx.Client
) -> None:
    impostor = Authority(intermediate.certificate, make_ca("impostor").key)
    with serve(Responder(impostor)) as fake:
        leaf, _ = make_leaf(intermediate, ADDRESS, crl_url=f"{fake.url}/crl")
        decision = _evaluate(leaf, intermediate, root, client)
    assert not decision.usable
    assert "CRL: the CRL is not signed by the certificate's issuer" in decision.reason


def test_an_ocsp_answer_signed_by_another_key_is_not_believed(
    root: Authority, intermediate: Authority, client: httpx.Client
) -> None:
    # Answers for the right certificate, signed by a key the issuer never delegated to.
    with serve(Responder(make_ca("impostor"))) as fake:
        leaf, _ = make_leaf(intermediate, ADDRESS, ocsp_url=f"{fake.url}/ocsp")
        decision = _evaluate(leaf, intermediate, root, client)
    assert not decision.usable
    assert "OCSP: the signature does not verify" in decision.reason


@pytest.mark.parametrize(("mode", "usable"), [("hard", False), ("soft", True)])
def test_responder_down_fails_per_policy(
    root: Authority, intermediate: Authority, client: httpx.Client, mode: str, usable: bool
) -> None:
    down = dead_url()
    leaf, _ = make_leaf(intermediate, ADDRESS, ocsp_url=f"{down}/ocsp", crl_url=f"{down}/crl")
    decision = _evaluate(leaf, intermediate, root, client, revocation_mode=mode)
    assert decision.usable is usable
    assert decision.reason.startswith("revocation status unknown: ")
    assert "OCSP: the server could not be reached" in decision.reason
    assert "CRL: the server could not be reached" in decision.reason
    assert decision.reason.endswith("(soft-fail)") is (mode == "soft")


def test_administrator_vouched_certificate_without_a_chain(
    intermediate: Authority, responder: Responder, client: httpx.Client
) -> None:
    leaf, _ = make_leaf(intermediate, ADDRESS, crl_url=f"{responder.url}/crl")
    vouched = trust.evaluate(
        leaf,
        [intermediate.certificate],
        [],
        NOW,
        client=client,
        require_chain=False,
        use_system_store=False,
        cache=trust.CrlCache(),
    )
    # No anchor: the chain fails, yet the issuer is known, so revocation is still checked.
    assert vouched.usable and vouched.reason == "not revoked (CRL)"
    intermediate.revoked.add(leaf.serial_number)
    try:
        revoked = trust.evaluate(
            leaf,
            [intermediate.certificate],
            [],
            NOW,
            client=client,
            require_chain=False,
            use_system_store=False,
            cache=trust.CrlCache(),
        )
    finally:
        intermediate.revoked.discard(leaf.serial_number)
    assert not revoked.usable  # vouching never overrides a revocation


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_openssl_verify_agrees_with_the_chain_decisions(root: Authority, tmp_path: Path) -> None:
    good_intermediate = make_ca("openssl intermediate", root)
    expired = make_ca(
        "openssl expired intermediate",
        root,
        not_before=NOW - timedelta(days=400),
        not_after=NOW - timedelta(days=1),
    )
    stranger = make_ca("openssl stranger root")
    cases = {
        "good": (good_intermediate, root),
        "expired-intermediate": (expired, root),
        "unknown-ca": (good_intermediate, stranger),
    }
    for name, (issuer, anchor) in cases.items():
        leaf, _ = make_leaf(issuer, ADDRESS)
        (tmp_path / f"{name}-ca.pem").write_bytes(anchor.pem)
        (tmp_path / f"{name}-inter.pem").write_bytes(issuer.pem)
        (tmp_path / f"{name}-leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-purpose",
                "smimeencrypt",
                "-CAfile",
                str(tmp_path / f"{name}-ca.pem"),
                "-untrusted",
                str(tmp_path / f"{name}-inter.pem"),
                str(tmp_path / f"{name}-leaf.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        try:
            trust.verify_chain(
                leaf, [issuer.certificate], [anchor.certificate], NOW, use_system_store=False
            )
            ours = True
        except KeyRejected:
            ours = False
        assert (result.returncode == 0) is ours, (name, result.stdout, result.stderr)
        assert ours is (name == "good")


def test_the_leaf_and_intermediates_of_a_received_signature(
    root: Authority, intermediate: Authority
) -> None:
    leaf, _ = make_leaf(intermediate, ADDRESS)
    carried = [intermediate.certificate, root.certificate, leaf]
    found = trust.leaf_and_intermediates(carried, "Bob@Patient.example")
    assert found == (leaf, [intermediate.certificate, root.certificate])
    assert trust.leaf_and_intermediates(carried, "eve@elsewhere.example") is None
    assert trust.verify_chain(found[0], found[1], [root.certificate], NOW, use_system_store=False)
