"""The suppression list: add (in the body, never the URL), check, list, lift with a
reason (bounces and complaints only by an admin), import a CSV streaming with
line-numbered errors. Addresses are PHI: encrypted at rest, absent from errors and
from the audit trail, shown only with phi:read."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text

from carepost.audit.service import SYSTEM
from carepost.consent import suppression as suppressions
from carepost.consent.models import Suppression
from tests.canaries import phi_value

V1 = "/api/v1"


def new_address() -> str:
    return f"{phi_value('addr').lower()}@example.org"


def suppress(client, clinic, address, **body):
    return client.post(
        f"{V1}/suppressions", json={"address": address} | body, headers=clinic.headers
    )


def check(client, clinic, address, purpose="marketing"):
    response = client.post(
        f"{V1}/suppressions/check",
        json={"address": address, "purpose": purpose},
        headers=clinic.headers,
    )
    assert response.status_code == 200
    return response.json()


def test_a_suppressed_address_is_blocked_at_once(client, clinic, audit_trail):
    address = new_address()
    assert check(client, clinic, address)["suppressed"] is False
    created = suppress(client, clinic, address, reason="complaint")
    assert created.status_code == 201
    assert created.json()["scope"] == "all" and created.json()["address"] == address
    assert check(client, clinic, address.upper(), "transactional") == {
        "suppressed": True,
        "listed": True,
        "reason": "complaint",
        "scope": "all",
    }
    event = audit_trail(clinic.tenant, "suppression.create")[-1]
    assert address not in str(event.details) and event.details["reason"] == "complaint"


def test_an_unsubscribe_blocks_marketing_only(client, clinic):
    address = new_address()
    assert suppress(client, clinic, address, reason="unsubscribe").json()["scope"] == "marketing"
    assert check(client, clinic, address, "marketing")["suppressed"] is True
    assert check(client, clinic, address, "flu-shots")["suppressed"] is True
    assert check(client, clinic, address, "transactional")["suppressed"] is False


def test_adding_again_keeps_one_entry_and_widens_its_scope(client, clinic, audit_trail):
    address = new_address()
    first = suppress(client, clinic, address, reason="unsubscribe").json()
    again = suppress(client, clinic, address, reason="unsubscribe")
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    bounced = suppress(client, clinic, address, reason="hard_bounce")
    assert bounced.status_code == 200
    assert bounced.json()["scope"] == "all" and bounced.json()["reason"] == "hard_bounce"
    assert len(audit_trail(clinic.tenant, "suppression.widen")) == 1
    narrower = suppress(client, clinic, address, reason="unsubscribe")
    assert narrower.json()["reason"] == "hard_bounce"


def test_phone_numbers_are_suppressed_in_e164(client, clinic):
    created = suppress(client, clinic, "+1 415 555 0199", reason="manual")
    assert created.status_code == 201 and created.json()["channel"] == "sms"
    assert created.json()["address"] == "+14155550199"
    assert check(client, clinic, "+14155550199", "transactional")["suppressed"] is True


def test_addresses_are_encrypted_at_rest(runtime, client, clinic):
    address = new_address()
    suppress(client, clinic, address)
    with runtime.database.engine.connect() as connection:
        rows = connection.execute(text("SELECT address, address_index FROM suppressions")).all()
    assert rows
    for sealed, index in rows:
        assert address.encode() not in bytes(sealed) and address not in index


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"address": "not an address"}, "#/body/address"),
        ({"address": "4155550123"}, "#/body/address"),
        ({"address": "+1 000"}, "#/body/address"),
        ({"address": ""}, "#/body/address"),
        ({"address": "a@b.example", "reason": "bored"}, "#/body/reason"),
        ({"address": "a@b.example", "scope": "some"}, "#/body/scope"),
        ({"address": "a\x00@b.example"}, "#/body/address"),
        ({"address": "a@b.example", "extra": 1}, "#/body/extra"),
        ({}, "#/body/address"),
    ],
)
def test_bad_suppressions_are_refused(client, clinic, body, pointer):
    response = client.post(f"{V1}/suppressions", json=body, headers=clinic.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in [e["pointer"] for e in response.json()["errors"]]
    if body.get("address"):
        assert body["address"] not in response.json()["detail"]


def test_an_invalid_address_is_never_repeated_in_the_error(client, clinic):
    address = f"{phi_value('bad')}@@example.org"
    for path in ("/suppressions", "/suppressions/check"):
        response = client.post(f"{V1}{path}", json={"address": address}, headers=clinic.headers)
        assert response.status_code == 422 and address not in response.text


def test_an_address_in_the_query_string_is_refused(client, clinic):
    address = new_address()
    response = client.get(f"{V1}/suppressions", params={"address": address}, headers=clinic.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/query/address"
    assert address not in response.text


def test_the_list_shows_addresses_only_with_phi_read_and_audits_it(
    client, clinic, make_api_key, audit_trail
):
    address = new_address()
    suppress(client, clinic, address)
    reader = make_api_key(clinic.tenant, ["suppressions:read"])
    hidden = client.get(f"{V1}/suppressions", headers=reader)
    assert hidden.status_code == 200 and address not in hidden.text
    assert hidden.json()["items"][0]["address"] is None
    assert audit_trail(clinic.tenant, "suppression.view_phi") == []
    shown = client.get(f"{V1}/suppressions", headers=clinic.headers)
    assert shown.json()["items"][0]["address"] == address
    assert len(audit_trail(clinic.tenant, "suppression.view_phi")) == 1


def test_the_list_pages_with_a_cursor(client, clinic):
    for _ in range(3):
        suppress(client, clinic, new_address())
    first = client.get(f"{V1}/suppressions", params={"limit": 2}, headers=clinic.headers).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = client.get(
        f"{V1}/suppressions",
        params={"limit": 2, "cursor": first["next_cursor"]},
        headers=clinic.headers,
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    bad = client.get(f"{V1}/suppressions", params={"cursor": "!!"}, headers=clinic.headers)
    assert bad.status_code == 422


def _lift(client, headers, entry_id, body):
    return client.request("DELETE", f"{V1}/suppressions/{entry_id}", json=body, headers=headers)


def test_lifting_needs_a_reason_and_is_audited(client, clinic, audit_trail):
    address = new_address()
    entry = suppress(client, clinic, address).json()
    assert _lift(client, clinic.headers, entry["id"], None).status_code == 422
    assert _lift(client, clinic.headers, entry["id"], {"reason": ""}).status_code == 422
    assert _lift(client, clinic.headers, entry["id"], {"reason": "  "}).status_code == 422
    assert check(client, clinic, address)["listed"] is True
    lifted = _lift(client, clinic.headers, entry["id"], {"reason": "added by mistake"})
    assert lifted.status_code == 204
    assert check(client, clinic, address)["listed"] is False
    event = audit_trail(clinic.tenant, "suppression.delete")[-1]
    assert event.reason == "added by mistake" and event.object_id == entry["id"]
    again = _lift(client, clinic.headers, entry["id"], {"reason": "twice"})
    assert again.status_code == 404


@pytest.mark.parametrize("reason", ["hard_bounce", "complaint"])
def test_bounces_and_complaints_are_lifted_only_by_an_admin(
    reason, client, clinic, make_user, sign_in, audit_trail
):
    entry = suppress(client, clinic, new_address(), reason=reason).json()
    marketer = sign_in(clinic.tenant, make_user(clinic.tenant, "marketer")[0])
    refused = _lift(client, marketer, entry["id"], {"reason": "patient says it works"})
    assert refused.status_code == 403
    assert "suppressions:override" in refused.json()["detail"]
    assert audit_trail(clinic.tenant, "suppression.delete") == []
    admin = sign_in(clinic.tenant, make_user(clinic.tenant, "admin")[0])
    assert _lift(client, admin, entry["id"], {"reason": "mailbox fixed"}).status_code == 204


def test_a_marketer_may_lift_a_manual_entry(client, clinic, make_user, sign_in):
    entry = suppress(client, clinic, new_address(), reason="manual").json()
    marketer = sign_in(clinic.tenant, make_user(clinic.tenant, "marketer")[0])
    assert _lift(client, marketer, entry["id"], {"reason": "asked again"}).status_code == 204


def test_is_suppressed_service(runtime, clinic):
    address = new_address()
    with runtime.bound_session(clinic.keys) as session:
        assert not suppressions.is_suppressed(session, clinic.keys, address, "marketing")
        suppressions.add_suppression(
            session, clinic.keys, address=address, reason="unsubscribe", source="api", actor=SYSTEM
        )
        assert suppressions.is_suppressed(session, clinic.keys, address, "marketing")
        assert not suppressions.is_suppressed(session, clinic.keys, address, "transactional")


def test_the_suppression_index_matches_the_contact_index(runtime, clinic):
    """A join on the index columns finds suppressed contacts without decrypting anything."""
    from carepost.contacts.models import Contact

    with runtime.bound_session(clinic.keys) as session:
        suppressions.add_suppression(
            session, clinic.keys, address=clinic.email, reason="manual", source="api", actor=SYSTEM
        )
        joined = session.scalars(
            select(Contact.id)
            .join(
                Suppression,
                (Suppression.tenant_id == Contact.tenant_id)
                & (Suppression.address_index == Contact.email_index),
            )
            .where(Contact.tenant_id == clinic.tenant_id)
        ).all()
    assert joined == [clinic.contact_id]


# --- import -----------------------------------------------------------------------------


def upload(client, clinic, content: bytes, **form):
    return client.post(
        f"{V1}/suppressions/import",
        files={"file": ("list.csv", content, "text/csv")},
        data=form,
        headers=clinic.headers,
    )


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(client, clinic, audit_trail):
    good = [new_address() for _ in range(3)]
    bad = f"{phi_value('bad')}-no-at-sign"
    lines = [
        "Address,Reason,Scope",
        f"{good[0]},hard_bounce,",
        f"{bad},,",
        f"{good[1]},bored,",
        f"{good[1]},,marketing",
        "",
        f"{good[2]},unsubscribe",
        f"{good[0]},complaint,",
        f"{good[2]},,all,extra",
    ]
    response = upload(client, clinic, ("\r\n".join(lines) + "\r\n").encode())
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["imported"] == 2 and report["already_listed"] == 1 and report["rejected"] == 4
    assert [(e["line"], e["column"]) for e in report["errors"]] == [
        (3, "address"),
        (4, "reason"),
        (7, ""),
        (9, ""),
    ]
    assert bad not in response.text
    assert check(client, clinic, good[0], "transactional")["reason"] == "hard_bounce"
    assert check(client, clinic, good[1], "transactional")["suppressed"] is False
    assert check(client, clinic, good[1], "marketing")["suppressed"] is True
    event = audit_trail(clinic.tenant, "suppression.import")[-1]
    assert event.details == {"imported": 2, "already_listed": 1, "rejected": 4}


def test_import_default_reason_and_byte_order_mark(client, clinic):
    address = new_address()
    response = upload(client, clinic, f"\ufeffaddress\n{address}\n".encode(), reason="manual")
    assert response.json()["imported"] == 1
    assert check(client, clinic, address)["reason"] == "manual"


def test_import_in_batches(client, clinic, monkeypatch):
    monkeypatch.setattr(suppressions, "IMPORT_BATCH", 7)
    addresses = [f"bulk-{uuid.uuid4().hex[:12]}@example.org" for _ in range(30)]
    content = "address\n" + "\n".join(addresses + addresses[:5]) + "\n"
    report = upload(client, clinic, content.encode()).json()
    assert report["imported"] == 30 and report["already_listed"] == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"email,reason\na@b.example,manual\n", "address"),
    ],
)
def test_import_without_an_address_column_is_refused(client, clinic, content, message):
    response = upload(client, clinic, content)
    assert response.status_code == 422 and message in response.json()["detail"]
    assert response.json()["errors"][0]["pointer"] == "#/body/file"


def test_import_survives_bad_encoding_and_nul_bytes(client, clinic):
    address = new_address()
    content = b"address\n\xff\xfe@example.org\nnul\x00@example.org\n" + address.encode() + b"\n"
    report = upload(client, clinic, content).json()
    assert report["imported"] == 1 and report["rejected"] == 2
    assert [e["line"] for e in report["errors"]] == [2, 3]


def test_import_needs_a_file(client, clinic):
    response = client.post(f"{V1}/suppressions/import", headers=clinic.headers)
    assert response.status_code == 422
    bad_reason = upload(client, clinic, b"address\n", reason="bored")
    assert bad_reason.status_code == 422
