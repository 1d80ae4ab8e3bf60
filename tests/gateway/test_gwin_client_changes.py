"""Changing a gateway client (PATCH, CLI ``update``) and rotating its secret (API, CLI):
checked like a new client, audited by field name, and in force for the next SMTP
session: a rotated secret is refused at once even by a gateway that verified the old
one before (its remembered verifications are keyed by the stored hash)."""

from __future__ import annotations

import re
import smtplib
import subprocess
import uuid

import pytest

from carepost.gateway import service
from tests.environment import carepost_command, child_environment
from tests.gateway.conftest import ADMIN

MIME = (
    b"From: care@clinic.example\r\nTo: pat@example.org\r\nSubject: Hello\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
)


def test_patch_changes_fields_and_audits_their_names(
    client, make_api_key, tenant, make_client, audit_trail
):
    made = make_client(tenant, networks=["192.0.2.0/24"])
    headers = make_api_key(tenant)
    response = client.patch(
        f"/api/v1/gateway/clients/{made.client_id}",
        json={
            "name": "Postfix relay",
            "networks": ["198.51.100.0/24", "203.0.113.7"],
            "cert_fingerprints": ["AB:" * 31 + "AB"],
            "max_recipients": 9,
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Postfix relay"
    assert body["networks"] == ["198.51.100.0/24", "203.0.113.7/32"]
    assert body["cert_fingerprints"] == ["ab" * 32]
    assert body["max_recipients"] == 9
    assert body["sender_domains"] == ["clinic.example"]  # untouched
    assert "secret" not in body
    [entry] = audit_trail(tenant, "gateway.client.update")
    assert entry.details["changed"] == [
        "cert_fingerprints", "max_recipients", "name", "networks"
    ]  # fmt: skip
    assert "198.51.100.0" not in str(entry.details)  # counts, not the networks


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"networks": ["0.0.0.0/0"]}, "networks"),
        ({"networks": ["not a network"]}, "networks"),
        ({"sender_domains": ["unverified.example"]}, "sender_domains"),
        ({"sender_domains": []}, "sender_domains"),
        ({"cert_fingerprints": ["abc"]}, "cert_fingerprints"),
        ({"max_recipients": 0}, "max_recipients"),
        ({"username": "gw-mine"}, "username"),
    ],
)
def test_patch_refuses_bad_input_with_the_field(
    client, make_api_key, tenant, make_client, body, field
):
    made = make_client(tenant)
    response = client.patch(
        f"/api/v1/gateway/clients/{made.client_id}", json=body, headers=make_api_key(tenant)
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text


def test_patch_of_another_tenants_client_is_not_found(
    client, make_api_key, make_tenant, make_client
):
    mine, theirs = make_tenant(), make_tenant()
    made = make_client(theirs)
    response = client.patch(
        f"/api/v1/gateway/clients/{made.client_id}",
        json={"name": "mallory"},
        headers=make_api_key(mine),
    )
    assert response.status_code == 404


def test_rotated_secret_works_and_the_old_one_is_refused_at_once(
    gateway, client, make_api_key, tenant, make_client, audit_trail
):
    made = make_client(tenant)
    # The old secret verifies once: the gateway remembers that verification.
    with gateway.connect() as smtp:
        smtp.login(made.username, made.secret)
        smtp.sendmail("care@clinic.example", ["pat@example.org"], MIME)
    response = client.post(
        f"/api/v1/gateway/clients/{made.client_id}/secret", headers=make_api_key(tenant)
    )
    assert response.status_code == 200, response.text
    new_secret = response.json()["secret"]
    assert new_secret != made.secret and response.json()["username"] == made.username
    with gateway.connect() as smtp, pytest.raises(smtplib.SMTPAuthenticationError):
        smtp.login(made.username, made.secret)
    with gateway.connect() as smtp:
        smtp.login(made.username, new_secret)
        assert smtp.sendmail("care@clinic.example", ["pat@example.org"], MIME) == {}
    assert len(audit_trail(tenant, "gateway.client.rotate_secret")) == 1
    listed = client.get(f"/api/v1/gateway/clients/{made.client_id}", headers=make_api_key(tenant))
    assert new_secret not in listed.text


def test_patched_limits_and_domains_apply_to_the_next_session(
    gateway, runtime, make_tenant, make_client
):
    tenant = make_tenant(verified_senders=("clinic.example", "lab.example"))
    made = make_client(tenant)
    with runtime.database.session() as session:
        service.update_client(
            session,
            tenant[0].id,
            uuid.UUID(made.client_id),
            actor=ADMIN,
            sender_domains=["lab.example"],
            max_recipients=1,
        )
    with gateway.connect() as smtp:
        smtp.login(made.username, made.secret)
        code, _ = smtp.mail("care@clinic.example")
        assert code == 550  # clinic.example was taken off the client
        smtp.rset()
        assert smtp.mail("care@lab.example")[0] == 250
        assert smtp.rcpt("a@example.org")[0] == 250
        assert smtp.rcpt("b@example.org")[0] == 452


def test_cli_update_and_rotate_secret(settings, runtime, tenant, make_client):
    made = make_client(tenant, networks=["192.0.2.0/24"])
    environment = child_environment(settings)
    updated = subprocess.run(
        carepost_command(
            "gateway", "update", "--tenant", tenant[0].slug, made.client_id,
            "--name", "Renamed", "--no-networks", "--max-recipients", "3",
        ),
        env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    with runtime.database.session() as session:
        row = service.get_client(session, tenant[0].id, uuid.UUID(made.client_id))
        assert (row.name, row.networks, row.max_recipients) == ("Renamed", [], 3)
    refused = subprocess.run(
        carepost_command(
            "gateway", "update", "--tenant", tenant[0].slug, made.client_id,
            "--network", "0.0.0.0/0",
        ),
        env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0
    rotated = subprocess.run(
        carepost_command("gateway", "rotate-secret", "--tenant", tenant[0].slug, made.client_id),
        env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    secret = re.search(r"secret:\s+(\S+)", rotated.stdout).group(1)
    with runtime.database.session() as session:
        assert service.by_username(session, made.username, secret) is not None
        assert service.by_username(session, made.username, made.secret) is None
