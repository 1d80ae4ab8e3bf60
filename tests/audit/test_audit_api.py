"""The audit trail over the REST API: browse, filter, page, export, verify, scoped."""

from __future__ import annotations

import csv
import io
import json

from carepost.audit.verify import verify_export_lines


def _make_events(client, headers, count=3):
    for n in range(count):
        response = client.post(
            "/api/v1/users",
            json={"email": f"audited{n}@clinic.example", "role": "analyst"},
            headers=headers,
        )
        assert response.status_code == 201


def test_list_filters_and_pages_without_gaps(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    _make_events(client, headers, 5)
    seen = []
    cursor = None
    while True:
        params = {"action": "user.create", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/audit/events", params=params, headers=headers).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5
    assert all(e["action"] == "user.create" for e in seen)
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 5
    prefix = client.get("/api/v1/audit/events", params={"action": "user.*"}, headers=headers)
    assert {e["action"] for e in prefix.json()["items"]} == {"user.create"}


def test_time_window_needs_a_time_zone_and_names_the_field(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    response = client.get(
        "/api/v1/audit/events", params={"since": "2026-01-01T00:00:00"}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/query/since"
    backwards = client.get(
        "/api/v1/audit/events",
        params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        headers=headers,
    )
    assert backwards.status_code == 422


def test_a_unix_timestamp_is_not_taken_for_a_date_time(client, tenant, make_api_key):
    # Pydantic alone would read these as seconds since 1970 and answer 200.
    headers = make_api_key(tenant, scopes=["audit:read"])
    for value in ("1700000000", "1.3460074039964167e-61", "-5"):
        response = client.get("/api/v1/audit/events", params={"since": value}, headers=headers)
        assert response.status_code == 422, value
        error = response.json()["errors"][0]
        assert error["pointer"] == "#/query/since" and "ISO 8601" in error["detail"]


def test_a_filter_with_a_control_character_is_refused_before_the_database(
    client, tenant, make_api_key
):
    # The API fuzzer's case: PostgreSQL cannot even bind a NUL in a text parameter.
    headers = make_api_key(tenant)
    for route in ("/api/v1/audit/events", "/api/v1/audit/export"):
        for name in ("action", "actor_id", "object_type", "object_id", "outcome"):
            response = client.get(route, params={name: "a\x00b"}, headers=headers)
            assert response.status_code == 422, (route, name)
            assert response.json()["errors"][0]["pointer"] == f"#/query/{name}"


def test_a_cursor_beyond_a_64_bit_sequence_is_refused(client, tenant, make_api_key):
    # "merged_into" decodes to 8 bytes over 2**63: SQLite could not even bind it.
    headers = make_api_key(tenant, scopes=["audit:read"])
    for cursor in ("merged_into", "__________8", "AAAAAAAAAAA"):
        response = client.get("/api/v1/audit/events", params={"cursor": cursor}, headers=headers)
        assert response.status_code == 422, cursor
        assert response.json()["errors"][0]["pointer"] == "#/query/cursor"


def test_another_tenants_event_is_not_found(client, make_tenant, make_api_key):
    tenant_a, tenant_b = make_tenant(), make_tenant()
    headers_a, headers_b = make_api_key(tenant_a), make_api_key(tenant_b)
    event_b = client.get("/api/v1/audit/events", headers=headers_b).json()["items"][0]
    assert client.get(f"/api/v1/audit/events/{event_b['id']}", headers=headers_b).status_code == 200
    assert client.get(f"/api/v1/audit/events/{event_b['id']}", headers=headers_a).status_code == 404
    listed_a = client.get("/api/v1/audit/events", params={"limit": 500}, headers=headers_a).json()
    assert all(e["tenant_id"] == str(tenant_a[0].id) for e in listed_a["items"])


def test_jsonl_export_reverifies_offline_and_is_recorded(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    _make_events(client, headers, 2)
    response = client.get("/api/v1/audit/export", params={"format": "jsonl"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    report = verify_export_lines(lines)
    assert report.ok, report.describe()
    assert json.loads(lines[-1])["action"] == "audit.export"


def test_csv_export_has_a_header_and_every_event(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    _make_events(client, headers, 2)
    response = client.get("/api/v1/audit/export", params={"format": "csv"}, headers=headers)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert "attachment" in response.headers["content-disposition"]
    assert sum(1 for r in rows if r["action"] == "user.create") == 2


def test_verify_reports_the_chain_intact(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    body = client.get("/api/v1/audit/verify", headers=headers).json()
    assert body["ok"] is True and body["problems"] == [] and len(body["head_hash"]) == 64


def test_reading_and_exporting_need_their_scopes(client, tenant, make_api_key):
    reader = make_api_key(tenant, ["audit:read"])
    assert client.get("/api/v1/audit/events", headers=reader).status_code == 200
    assert client.get("/api/v1/audit/export", headers=reader).status_code == 403
    sender = make_api_key(tenant, ["messages:send"])
    assert client.get("/api/v1/audit/events", headers=sender).status_code == 403
