"""Files on the recipient's reply: limits, types judged by their bytes, names made safe,
sealed like the message, scanned by DLP; listed to the sender (names only with
phi:read), downloaded in the console (phi:read, CSRF, audited); the recipient sees
what they sent."""

from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select, text

from carepost.audit.models import AuditEvent
from carepost.portal import reply_files
from carepost.portal.models import PortalEvent, PortalReply
from tests.canaries import phi_value
from tests.portal.conftest import csrf_of, sign_in_with_code
from tests.security.test_no_phi_in_logs import LogWindow

SSN = "536-22-8145"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


def _reply(client, deposit, reply: str, files: list[tuple[str, bytes, str]]):
    csrf = csrf_of(client.get(deposit.path).text)
    return client.post(
        f"{deposit.path}/reply",
        data={"reply": reply, "csrf_token": csrf},
        files=[("files", f) for f in files],
    )


def test_safe_filenames_and_sniffed_types():
    assert reply_files.safe_filename("../../etc/passwd") == "passwd"
    assert reply_files.safe_filename("C:\\Users\\x\\scan.pdf") == "scan.pdf"
    hostile = reply_files.safe_filename('<img src=x onerror="alert(1)">; rm -rf.txt')
    assert not set(hostile) & set('<>"=;/\\') and hostile.endswith(".txt")
    assert reply_files.safe_filename("a\x00b\r\nc.txt") == "abc.txt"
    assert reply_files.safe_filename("...") == "attachment"
    long = reply_files.safe_filename("x" * 500 + ".pdf")
    assert len(long) <= reply_files.MAX_NAME and long.endswith(".pdf")
    assert reply_files.safe_filename("Résumé café.pdf") == "Résumé café.pdf"
    assert reply_files.sniff(PDF, "a.pdf") == "application/pdf"
    assert reply_files.sniff(PDF, "a.png") is None  # the name must agree with the bytes
    assert reply_files.sniff(PNG, "a.png") == "image/png"
    assert reply_files.sniff(b"\xff\xd8\xff\xe0rest", "a.JPG") == "image/jpeg"
    assert reply_files.sniff(_docx(), "a.docx") == reply_files.DOCX_TYPE
    assert reply_files.sniff(b"PK\x03\x04junk", "a.docx") is None
    assert reply_files.sniff(b"hello", "a.txt") == "text/plain"
    assert reply_files.sniff(b"\x00\x01", "a.txt") is None
    assert reply_files.sniff(b"<html><script>", "a.html") is None
    assert reply_files.sniff(b"MZ\x90\x00", "setup.exe") is None
    disposition = reply_files.content_disposition("Résumé.pdf")
    assert disposition.startswith('attachment; filename="R_sum_.pdf"')
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9.pdf" in disposition


def test_a_reply_with_files_is_stored_sealed_and_shown_to_both_sides(
    client, runtime, deposit, make_user, make_api_key, sign_in, log_file: Path
):
    window = LogWindow(log_file)
    sign_in_with_code(client, runtime, deposit)
    secret = phi_value("reply")
    note = f"Note of {deposit.name}: SSN {SSN} {secret}".encode()
    filename = f"{phi_value('scan')}.txt"
    sent = _reply(
        client,
        deposit,
        f"Thanks, here are my files {secret}",
        [(f"../{filename}", note, "text/html"), ("scan.pdf", PDF, "application/pdf")],
    )
    assert sent.status_code == 200, sent.text
    assert "Your reply was sent securely." in sent.text
    # The recipient sees what they sent (sanitized names, sizes).
    assert 'id="sent-replies"' in sent.text and filename in sent.text and "scan.pdf" in sent.text
    assert f"{len(note)} bytes" in sent.text
    keys = deposit.keys
    with runtime.bound_session(keys) as session:
        row = session.scalar(select(PortalReply).where(PortalReply.item_id == deposit.item_id))
        assert row is not None
        assert [f["content_type"] for f in row.attachments] == ["text/plain", "application/pdf"]
        assert row.attachment_meta[0] == {
            "filename": filename, "content_type": "text/plain", "size": len(note),
        }  # fmt: skip
        assert row.dlp["counts"].get("ssn") == 1 and row.dlp["phi"] is True
        reply_id = row.id
        # Sealed: neither the file, its name nor the SSN in clear in any table we wrote.
        for table in ("portal_replies", "portal_events", "audit_events", "messages"):
            for values in session.execute(text(f"SELECT * FROM {table}")).all():
                for value in values:
                    shown = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    assert secret not in shown and filename not in shown and SSN not in shown
        detail = session.scalar(
            select(PortalEvent.detail).where(
                PortalEvent.item_id == deposit.item_id, PortalEvent.kind == "replied"
            )
        )
        assert detail["attachments"] == 2 and detail["delivery"] == "notice"

    # The API: sizes and types; names only with phi:read (audited).
    api = client.get(f"/api/v1/portal/messages/{deposit.item_id}", headers=deposit.headers)
    assert api.status_code == 200
    [listed] = api.json()["reply_list"]
    assert [(a["size"], a["content_type"]) for a in listed["attachments"]] == [
        (len(note), "text/plain"), (len(PDF), "application/pdf"),
    ]  # fmt: skip
    names = [a["name"] for a in listed["attachments"]]
    assert listed["dlp"]["counts"]["ssn"] == 1
    assert names == [filename, "scan.pdf"]  # the key holds phi:read: audited
    narrow = make_api_key(deposit.tenant, ["reports:read"])
    hidden = client.get(f"/api/v1/portal/messages/{deposit.item_id}", headers=narrow)
    assert hidden.status_code == 200 and filename not in hidden.text
    assert [a["name"] for a in hidden.json()["reply_list"][0]["attachments"]] == [None, None]

    # The console: a marketer (phi:read) reads the reply and downloads a file.
    user_id, _email, _password = make_user(deposit.tenant, role="marketer")
    headers = sign_in(deposit.tenant, user_id)
    page = client.get(f"/portal/messages/{deposit.message_id}", headers=headers)
    assert page.status_code == 200 and "2 files" in page.text and filename not in page.text
    read = client.post(
        f"/portal/messages/{deposit.message_id}/reveal",
        data={"csrf_token": headers["X-CSRF-Token"]},
        headers=headers,
    )
    assert read.status_code == 200 and filename in read.text
    url = f"/portal/messages/{deposit.message_id}/replies/{reply_id}/attachments/0"
    assert url in read.text
    cookies_only = {k: v for k, v in headers.items() if k != "X-CSRF-Token"}
    forged = client.post(url, data={"csrf_token": "forged"}, headers=cookies_only)
    assert forged.status_code in (401, 403) and note not in forged.content
    got = client.post(url, data={"csrf_token": headers["X-CSRF-Token"]}, headers=headers)
    assert got.status_code == 200 and got.content == note
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["content-type"] == "application/octet-stream"
    missing = client.post(
        url.replace("/attachments/0", "/attachments/9"),
        data={"csrf_token": headers["X-CSRF-Token"]},
        headers=headers,
    )
    assert missing.status_code == 404
    with runtime.bound_session(keys) as session:
        audited = list(
            session.scalars(
                select(AuditEvent.details).where(
                    AuditEvent.object_id == str(deposit.item_id),
                    AuditEvent.action == "portal.reply_attachment_download",
                )
            )
        )
    assert audited == [{"reply_id": str(reply_id), "attachment": 0}]
    with runtime.bound_session(keys) as session:
        views = list(
            session.scalars(
                select(AuditEvent.details).where(
                    AuditEvent.object_id == str(deposit.item_id),
                    AuditEvent.action == "portal.view_phi",
                )
            )
        )
    assert views == [{"reply_file_names": 2}]
    window.assert_clean(secret, filename, deposit.name, SSN)


def test_viewer_without_phi_read_cannot_download_reply_files(
    client, runtime, deposit, make_user, sign_in
):
    sign_in_with_code(client, runtime, deposit)
    assert (
        _reply(client, deposit, "With a file", [("a.pdf", PDF, "application/pdf")]).status_code
        == 200
    )
    with runtime.bound_session(deposit.keys) as session:
        reply_id = session.scalar(
            select(PortalReply.id).where(PortalReply.item_id == deposit.item_id)
        )
    user_id, _email, _password = make_user(deposit.tenant, role="analyst")
    headers = sign_in(deposit.tenant, user_id)
    refused = client.post(
        f"/portal/messages/{deposit.message_id}/replies/{reply_id}/attachments/0",
        data={"csrf_token": headers["X-CSRF-Token"]},
        headers=headers,
    )
    assert refused.status_code == 403 and PDF not in refused.content


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([("evil.html", b"<script>alert(1)</script>", "text/html")], "is not a PDF"),
        ([("fake.pdf", b"MZ\x90\x00 not a pdf", "application/pdf")], "is not a PDF"),
        ([("big.txt", b"a" * (reply_files.MAX_FILE_BYTES + 1), "text/plain")], "larger than 4 MB"),
        ([("empty.txt", b"", "text/plain")], "is empty"),
        ([(f"f{i}.txt", b"ok", "text/plain") for i in range(6)], "at most 5 files"),
    ],
)
def test_refused_files_keep_the_reply_and_say_why_next_to_the_field(
    client, runtime, deposit, files, expected
):
    sign_in_with_code(client, runtime, deposit)
    draft = f"My draft {uuid.uuid4().hex[:6]}"
    refused = _reply(client, deposit, draft, files)
    assert refused.status_code == 400
    assert 'id="files-error"' in refused.text and expected in refused.text
    assert 'aria-describedby="files-hint files-error"' in refused.text
    assert 'aria-invalid="true"' in refused.text
    assert draft in refused.text  # the text is kept for another try
    with runtime.bound_session(deposit.keys) as session:
        assert (
            session.scalar(select(PortalReply.id).where(PortalReply.item_id == deposit.item_id))
            is None
        )


def test_an_empty_reply_is_tied_to_its_field(client, runtime, deposit):
    sign_in_with_code(client, runtime, deposit)
    refused = _reply(client, deposit, "   ", [])
    assert refused.status_code == 400 and 'id="reply-error"' in refused.text
    assert 'aria-describedby="reply-error"' in refused.text


def test_files_need_a_proven_visit_and_a_csrf_token(client, runtime, deposit):
    anonymous = client.post(
        f"{deposit.path}/reply",
        data={"reply": "x", "csrf_token": "x"},
        files=[("files", ("a.pdf", PDF, "application/pdf"))],
    )
    assert anonymous.status_code == 401
    sign_in_with_code(client, runtime, deposit)
    forged = client.post(
        f"{deposit.path}/reply",
        data={"reply": "x", "csrf_token": "forged"},
        files=[("files", ("a.pdf", PDF, "application/pdf"))],
    )
    assert "This form expired" in forged.text
    with runtime.bound_session(deposit.keys) as session:
        assert (
            session.scalar(select(PortalReply.id).where(PortalReply.item_id == deposit.item_id))
            is None
        )


def test_a_docx_and_an_image_are_accepted(client, runtime, deposit):
    sign_in_with_code(client, runtime, deposit)
    ok = _reply(
        client,
        deposit,
        "Two more",
        [("letter.docx", _docx(), "application/octet-stream"), ("photo.png", PNG, "image/png")],
    )
    assert ok.status_code == 200, ok.text
    with runtime.bound_session(deposit.keys) as session:
        row = session.scalar(select(PortalReply).where(PortalReply.item_id == deposit.item_id))
        assert [m["content_type"] for m in row.attachment_meta] == [
            reply_files.DOCX_TYPE, "image/png",
        ]  # fmt: skip
