"""The recipient's journey through the portal: the notice without PHI, the one-time
code (right, wrong, expired, locked, throttled), reading with sanitized HTML, the
attachment, a reply (sealed, the sender told without PHI), a password for later
visits, CSRF on every POST, and 410 after recall or expiry."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text

from carepost.audit.models import AuditEvent
from carepost.core.database import utcnow
from carepost.portal import service
from carepost.portal.models import PortalChallenge, PortalEvent, PortalItem, PortalReply
from tests.canaries import new_password
from tests.portal.conftest import (
    csrf_of,
    handoff,
    latest_code,
    notices,
    sign_in_with_code,
)


def _events(runtime, keys, item_id) -> list[str]:
    with runtime.bound_session(keys) as session:
        return list(
            session.scalars(
                select(PortalEvent.kind)
                .where(PortalEvent.item_id == item_id)
                .order_by(PortalEvent.id)
            )
        )


def _audit_actions(runtime, keys, item_id) -> list[str]:
    with runtime.bound_session(keys) as session:
        return list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.object_id == str(item_id))
                .order_by(AuditEvent.seq)
            )
        )


def test_handoff_is_idempotent_and_the_notice_carries_no_phi(runtime, deposit):
    again = handoff(runtime, deposit.keys, deposit.message_id)
    assert again == deposit.item_id
    [notice] = notices(runtime, deposit.keys, deposit.item_id)
    assert notice.purpose == "transactional" and notice.created_by_type == "portal"
    assert notice.to_address == deposit.address
    visible = " ".join([notice.subject, notice.body["text"], notice.body["html"], deposit.path])
    for phi in (deposit.name, deposit.subject, deposit.filename, deposit.address):
        assert phi not in visible
    assert "Test Clinic" in notice.subject
    assert str(deposit.item_id) not in deposit.path and str(deposit.message_id) not in deposit.path
    assert _events(runtime, deposit.keys, deposit.item_id) == ["deposited"]
    assert _audit_actions(runtime, deposit.keys, deposit.item_id) == ["portal.deposited"]
    # The content is sealed at rest, and only the token's hash is stored.
    with runtime.database.engine.connect() as connection:
        raw = connection.execute(
            text("SELECT content, token_hash FROM portal_items WHERE id = :id"),
            {"id": deposit.item_id.hex if runtime.settings.is_sqlite else deposit.item_id},
        ).one()
    assert deposit.name.encode() not in bytes(raw[0])
    assert raw[1] != deposit.path.rsplit("/", 1)[1]


def test_code_opens_the_message_sanitized_and_attachment_downloads(client, runtime, deposit):
    page = client.get(deposit.path)
    assert page.status_code == 200
    assert deposit.subject not in page.text and deposit.name not in page.text
    assert 'name="viewport"' in page.text and '<main id="main"' in page.text
    sign_in_with_code(client, runtime, deposit)
    opened = client.get(deposit.path)
    assert deposit.name in opened.text and "<script>" not in opened.text
    code_notice = notices(runtime, deposit.keys, deposit.item_id)[-1]
    assert (
        deposit.subject not in code_notice.subject and deposit.name not in code_notice.body["text"]
    )

    download = client.get(f"{deposit.path}/attachments/0")
    assert download.status_code == 200 and download.content == deposit.attachment
    assert "attachment;" in download.headers["content-disposition"]
    assert client.get(f"{deposit.path}/attachments/5").status_code == 404
    kinds = _events(runtime, deposit.keys, deposit.item_id)
    assert kinds == ["deposited", "code_sent", "opened", "downloaded"]
    actions = _audit_actions(runtime, deposit.keys, deposit.item_id)
    assert "portal.opened" in actions and "portal.downloaded" in actions


def test_nothing_is_shown_without_proof(client, runtime, deposit):
    assert client.get(f"{deposit.path}/attachments/0").status_code == 401
    assert client.get("/s/not-a-real-token").status_code == 404
    refused = client.post(f"{deposit.path}/reply", data={"reply": "hello", "csrf_token": "x"})
    assert refused.status_code == 401
    # A forged session cookie is refused too.
    client.cookies.set("carepost_portal", "9999999999.deadbeef", path=deposit.path)
    assert deposit.name not in client.get(deposit.path).text


def test_posts_need_the_csrf_token(client, runtime, deposit):
    client.get(deposit.path)
    refused = client.post(f"{deposit.path}/code", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert _events(runtime, deposit.keys, deposit.item_id) == ["deposited"]


def test_wrong_codes_are_counted_then_locked(client, runtime, deposit):
    page = client.get(deposit.path)
    csrf = csrf_of(page.text)
    client.post(f"{deposit.path}/code", data={"csrf_token": csrf})
    code = latest_code(runtime, deposit.keys, deposit.item_id)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(1, service.MAX_FAILURES):
        answer = client.post(f"{deposit.path}/verify", data={"code": wrong, "csrf_token": csrf})
        assert answer.status_code == 400 and "not right" in answer.text
    locked = client.post(f"{deposit.path}/verify", data={"code": wrong, "csrf_token": csrf})
    assert locked.status_code == 429 and "locked for 15 minutes" in locked.text
    # Even the right code is refused while locked, and no new code is sent.
    refused = client.post(f"{deposit.path}/verify", data={"code": code, "csrf_token": csrf})
    assert refused.status_code == 429 and deposit.name not in refused.text
    assert client.post(f"{deposit.path}/code", data={"csrf_token": csrf}).status_code == 429
    kinds = _events(runtime, deposit.keys, deposit.item_id)
    assert kinds.count("code_failed") == service.MAX_FAILURES and kinds[-1] == "locked"
    assert "portal.code_failed" in _audit_actions(runtime, deposit.keys, deposit.item_id)
    # After the lockout a new code works.
    with runtime.bound_session(deposit.keys) as session:
        item = session.get(PortalItem, deposit.item_id)
        assert item is not None
        item.locked_until = utcnow() - timedelta(seconds=1)
    sign_in_with_code(client, runtime, deposit)


def test_an_expired_code_asks_for_a_new_one(client, runtime, deposit):
    page = client.get(deposit.path)
    csrf = csrf_of(page.text)
    client.post(f"{deposit.path}/code", data={"csrf_token": csrf})
    code = latest_code(runtime, deposit.keys, deposit.item_id)
    with runtime.bound_session(deposit.keys) as session:
        for challenge in session.scalars(
            select(PortalChallenge).where(PortalChallenge.item_id == deposit.item_id)
        ):
            challenge.expires_at = utcnow() - timedelta(seconds=1)
    answer = client.post(f"{deposit.path}/verify", data={"code": code, "csrf_token": csrf})
    assert answer.status_code == 400 and "expired" in answer.text
    assert deposit.name not in answer.text


def test_codes_are_throttled_per_hour(client, runtime, deposit):
    csrf = csrf_of(client.get(deposit.path).text)
    for _ in range(service.CODES_PER_HOUR):
        assert client.post(f"{deposit.path}/code", data={"csrf_token": csrf}).status_code == 200
    refused = client.post(f"{deposit.path}/code", data={"csrf_token": csrf})
    assert refused.status_code == 429 and "wait an hour" in refused.text


def test_reply_is_sealed_and_the_sender_is_told_without_phi(client, runtime, deposit):
    sign_in_with_code(client, runtime, deposit)
    csrf = csrf_of(client.get(deposit.path).text)
    reply = f"Thanks, {deposit.name} here, see you soon"
    answer = client.post(f"{deposit.path}/reply", data={"reply": reply, "csrf_token": csrf})
    assert answer.status_code == 200 and "reply was sent" in answer.text
    with runtime.bound_session(deposit.keys) as session:
        [row] = session.scalars(select(PortalReply).where(PortalReply.item_id == deposit.item_id))
        assert row.body == reply
    with runtime.database.engine.connect() as connection:
        [sealed] = connection.execute(
            text("SELECT body FROM portal_replies WHERE item_id = :id"),
            {"id": deposit.item_id.hex if runtime.settings.is_sqlite else deposit.item_id},
        ).scalars()
    assert deposit.name.encode() not in bytes(sealed)
    told = notices(runtime, deposit.keys, deposit.item_id)[-1]
    assert told.to_address == "care@clinic.example"
    assert f"/portal/messages/{deposit.message_id}" in told.body["text"]
    for phi in (deposit.name, deposit.subject, deposit.address, reply):
        assert phi not in told.subject and phi not in told.body["text"]
    assert _events(runtime, deposit.keys, deposit.item_id)[-1] == "replied"
    empty = client.post(f"{deposit.path}/reply", data={"reply": "  ", "csrf_token": csrf})
    assert "Write a reply first" in empty.text


def test_a_registered_password_opens_later_visits(client, app, runtime, deposit):
    from fastapi.testclient import TestClient

    sign_in_with_code(client, runtime, deposit)
    csrf = csrf_of(client.get(deposit.path).text)
    password = new_password()
    short = client.post(
        f"{deposit.path}/set-password",
        data={"password": "short", "confirm": "short", "csrf_token": csrf},
    )
    assert "at least 10 characters" in short.text
    saved = client.post(
        f"{deposit.path}/set-password",
        data={"password": password, "confirm": password, "csrf_token": csrf},
    )
    assert "password is set" in saved.text
    with TestClient(app, base_url="https://testserver") as later:
        page = later.get(deposit.path)
        assert "Or use your password" in page.text
        csrf = csrf_of(page.text)
        wrong = later.post(
            f"{deposit.path}/password", data={"password": "nope-nope-nope", "csrf_token": csrf}
        )
        assert wrong.status_code == 400 and deposit.name not in wrong.text
        opened = later.post(
            f"{deposit.path}/password", data={"password": password, "csrf_token": csrf}
        )
        assert opened.status_code == 200 and deposit.name in opened.text
    assert "password_set" in _events(runtime, deposit.keys, deposit.item_id)


def test_recall_and_expiry_answer_410_without_content(client, runtime, deposit, tenant):
    sign_in_with_code(client, runtime, deposit)
    with runtime.bound_session(deposit.keys) as session:
        item = session.get(PortalItem, deposit.item_id)
        assert item is not None
        assert service.recall(session, item, now=utcnow(), actor=service.PORTAL_ACTOR)
    gone = client.get(deposit.path)
    assert gone.status_code == 410 and "withdrew" in gone.text
    assert deposit.name not in gone.text and deposit.subject not in gone.text
    assert client.get(f"{deposit.path}/attachments/0").status_code == 410
    with runtime.bound_session(deposit.keys) as session:
        item = session.get(PortalItem, deposit.item_id)
        assert item is not None and item.content is None and item.state == "recalled"


def test_the_expiry_job_purges_content(client, runtime, deposit):
    later = utcnow() + timedelta(days=31)
    with runtime.database.session() as session:
        assert service.expire_due(session, now=later) >= 1
    with runtime.bound_session(deposit.keys) as session:
        item = session.get(PortalItem, deposit.item_id)
        assert item is not None and item.content is None and item.state == "expired"
    gone = client.get(deposit.path)
    assert gone.status_code == 410 and "expired" in gone.text
    assert _events(runtime, deposit.keys, deposit.item_id)[-1] == "expired"
    assert _audit_actions(runtime, deposit.keys, deposit.item_id)[-1] == "portal.expired"
