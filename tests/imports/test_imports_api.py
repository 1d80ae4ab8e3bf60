"""The /imports API: streamed uploads, progress, paged and CSV error reports, cancel."""

from __future__ import annotations

import csv
import io
import json
import uuid

from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.imports import service as import_service
from carepost.imports import storage
from carepost.imports.models import ImportChunk, ImportJob
from carepost.imports.tasks import run_imports
from tests.canaries import phi_value
from tests.imports.clinic import contacts_by_email

V1 = "/api/v1"
FORMULA = "=SUM(A1:A9)"


def upload(client, headers, body: bytes, **params):
    query = {k: (json.dumps(v) if k == "mapping" else v) for k, v in params.items()}
    return client.post(
        f"{V1}/imports",
        params=query,
        content=body,
        headers={**headers, "content-type": "text/csv"},
    )


def chunks_of(runtime, job_id) -> int:
    with runtime.database.session() as session:
        return session.scalar(
            select(func.count())
            .select_from(ImportChunk)
            .where(ImportChunk.job_id == uuid.UUID(str(job_id)))
        )


def test_an_upload_is_imported_by_the_worker_with_its_error_report(
    runtime, client, clinic, make_api_key
):
    headers = make_api_key(clinic)
    secret = phi_value("cell")
    body = (
        f"email,first_name,{FORMULA},zip\n"
        "ann@clinic.example,Ann,7.1,02139\n"
        f"bob@clinic.example,Bob,{secret},10001\n"
        f"{secret}@,Cy,5,10002\n"
    ).encode()
    response = upload(client, headers, body, match="email", mapping={"columns": {FORMULA: "a1c"}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["file_size"] == len(body)
    assert chunks_of(runtime, job["id"]) == 1

    run_imports(runtime, budget_seconds=30)

    done = client.get(f"{V1}/imports/{job['id']}", headers=headers).json()
    assert done["status"] == "completed" and done["progress_percent"] == 100.0
    assert (done["rows_read"], done["created"], done["errored"]) == (3, 1, 2)
    assert chunks_of(runtime, job["id"]) == 0  # the upload is gone, the counts stay
    assert contacts_by_email(runtime, clinic)["ann@clinic.example"].custom == {
        "a1c": 7.1,
        "zip": "02139",
    }

    page = client.get(f"{V1}/imports/{job['id']}/errors?limit=1", headers=headers).json()
    assert page["items"] == [{"line": 3, "column": FORMULA, "reason": "must be a number"}]
    rest = client.get(
        f"{V1}/imports/{job['id']}/errors?cursor={page['next_cursor']}", headers=headers
    ).json()
    assert [(e["line"], e["column"]) for e in rest["items"]] == [(4, "email")]
    assert rest["next_cursor"] is None

    report = client.get(f"{V1}/imports/{job['id']}/errors.csv", headers=headers)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.text)))
    assert rows[0] == ["line", "column", "reason"]
    assert rows[1] == ["3", "'" + FORMULA, "must be a number"]
    assert secret not in report.text and secret not in json.dumps([page, rest, done])

    listed = client.get(f"{V1}/imports", headers=headers).json()
    assert job["id"] in [item["id"] for item in listed["items"]]


def test_a_multipart_upload_with_fields_before_the_file(runtime, client, clinic, make_api_key):
    headers = make_api_key(clinic)
    response = client.post(
        f"{V1}/imports",
        headers=headers,
        data={"match": "mrn", "mapping": json.dumps({"columns": {"Record": "mrn"}})},
        files={"file": ("people.csv", b"Record,Email\nM-1,m1@clinic.example\n", "text/csv")},
    )
    assert response.status_code == 202, response.text
    run_imports(runtime, budget_seconds=30)
    job = client.get(f"{V1}/imports/{response.json()['id']}", headers=headers).json()
    assert (job["status"], job["created"]) == ("completed", 1)
    assert "m1@clinic.example" in contacts_by_email(runtime, clinic)


def test_a_bad_mapping_is_refused_with_pointers_and_leaves_no_job(
    runtime, client, clinic, make_api_key
):
    headers = make_api_key(clinic)
    with runtime.database.session() as session:
        before = session.scalar(select(func.count()).select_from(ImportJob))
    bad = upload(
        client, headers, b"email\nx@y.org\n", match="email", mapping={"columns": {"a": "nope"}}
    )
    assert bad.status_code == 422
    assert [e["pointer"] for e in bad.json()["errors"]] == ["#/body/mapping/columns/a"]
    missing = upload(
        client,
        headers,
        b"email\nx@y.org\n",
        match="email",
        mapping={"columns": {"DOB": "birth_date"}},
    )
    assert missing.status_code == 422 and "mapping/columns/DOB" in missing.text
    not_utf8 = upload(client, headers, b"\xff\xfee\x00", match="email")
    assert not_utf8.status_code == 422 and "UTF-16" in not_utf8.text
    no_match = upload(client, headers, b"email\nx@y.org\n", match="phone_number")
    assert no_match.status_code == 422
    with runtime.database.session() as session:
        assert session.scalar(select(func.count()).select_from(ImportJob)) == before


def test_a_big_upload_is_stored_in_chunks_and_cancelling_drops_them(
    runtime, client, settings, clinic, make_api_key
):
    headers = make_api_key(clinic)
    line = b"someone@clinic.example,First,Last\n"
    body = b"email,first_name,last_name\n" + line * (settings.max_request_bytes // len(line) + 10)
    assert len(body) > settings.max_request_bytes  # uploads have a limit of their own
    response = upload(client, headers, body, match="email")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert chunks_of(runtime, job_id) == len(body) // (1024 * 1024) + 1
    cancelled = client.post(f"{V1}/imports/{job_id}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert chunks_of(runtime, job_id) == 0
    again = client.post(f"{V1}/imports/{job_id}/cancel", headers=headers)
    assert again.status_code == 409


def test_uploading_needs_contacts_write(client, clinic, make_api_key):
    reader = make_api_key(clinic, ["contacts:read"])
    response = upload(client, reader, b"email\nx@y.org\n", match="email")
    assert response.status_code == 403
    assert client.get(f"{V1}/imports", headers=reader).status_code == 200


def test_a_bad_error_cursor_is_a_clear_error(runtime, client, clinic, make_api_key):
    headers = make_api_key(clinic)
    job = upload(client, headers, b"email\nann@clinic.example\n", match="email").json()
    for cursor in ("x", "\u00b2", "9" * 30, "-1"):
        response = client.get(
            f"{V1}/imports/{job['id']}/errors", params={"cursor": cursor}, headers=headers
        )
        assert response.status_code == 422, cursor
        assert response.json()["errors"][0]["pointer"] == "#/query/cursor"


def test_an_uploaded_file_reads_back_from_any_offset_and_seeks(runtime, tenant, monkeypatch):
    """A resumed upload job seeks to its position: only the chunk it lands in is fetched."""
    monkeypatch.setattr(storage, "CHUNK_BYTES", 16)
    _row, keys = tenant
    data = bytes(range(256)) * 3 + b"tail"
    with runtime.bound_session(keys) as session:
        job_id = import_service.create_job(
            session, keys.tenant_id, format="csv", mapping={}, match="email", actor=SYSTEM
        ).id
    writer = storage.ChunkWriter(runtime, keys, job_id)
    for start in range(0, len(data), 50):
        writer.write(data[start : start + 50])
    writer.close()
    for offset in (0, 1, 15, 16, 17, 400, len(data) - 1, len(data), len(data) + 20):
        assert storage.open_upload(runtime, keys, job_id, start=offset).read() == data[offset:]
    stream = storage.open_upload(runtime, keys, job_id)
    assert stream.seekable() and stream.read(5) == data[:5]
    for offset in (700, 3, 32, len(data)):
        assert stream.seek(offset) == offset and stream.tell() == offset
        assert stream.read(20) == data[offset : offset + 20]
