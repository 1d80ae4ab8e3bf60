"""The sender-set question, an alternative to the emailed code: set through the API
(the answer kept only as a keyed hash of its normal form), answered on the recipient's
page (case and spaces ignored), wrong answers sharing the item's lockout counter,
every step an event and audit entry, and the answer never in the logs or in clear in
the database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, text

from carepost.audit.models import AuditEvent
from carepost.portal import service
from carepost.portal.models import PortalEvent
from tests.canaries import secret_value
from tests.portal.conftest import csrf_of, notices
from tests.security.test_no_phi_in_logs import LogWindow


def _kinds(runtime, keys, item_id) -> list[str]:
    with runtime.bound_session(keys) as session:
        return list(
            session.scalars(
                select(PortalEvent.kind)
                .where(PortalEvent.item_id == item_id)
                .order_by(PortalEvent.id)
            )
        )


def _set(client, deposit, answer: str, question: str = "Your pet's name?"):
    return client.post(
        f"/api/v1/portal/messages/{deposit.item_id}/question",
        json={"question": question, "answer": answer},
        headers=deposit.headers,
    )


def test_the_senders_question_opens_instead_of_a_code(client, runtime, deposit, log_file: Path):
    window = LogWindow(log_file)
    answer = secret_value("Rex  Dog" + deposit.name[-4:])
    set_ = _set(client, deposit, answer)
    assert set_.status_code == 200 and set_.json()["has_question"] is True
    page = client.get(deposit.path)
    assert "Your pet&#39;s name?" in page.text and f"{deposit.path}/answer" in page.text
    csrf = csrf_of(page.text)
    forged = client.post(f"{deposit.path}/answer", data={"answer": answer, "csrf_token": "x"})
    assert forged.status_code == 403 and deposit.name not in forged.text
    wrong = client.post(f"{deposit.path}/answer", data={"answer": "Tom", "csrf_token": csrf})
    assert wrong.status_code == 400 and "answer is not right" in wrong.text
    assert deposit.name not in wrong.text
    typed = "  " + " ".join(answer.upper().split()) + " "
    opened = client.post(f"{deposit.path}/answer", data={"answer": typed, "csrf_token": csrf})
    assert opened.status_code == 200 and deposit.name in opened.text
    assert _kinds(runtime, deposit.keys, deposit.item_id) == [
        "deposited", "question_set", "answer_failed", "opened",
    ]  # fmt: skip
    # No code email was needed: only the pickup notice went out.
    assert len(notices(runtime, deposit.keys, deposit.item_id)) == 1
    with runtime.bound_session(deposit.keys) as session:
        actions = list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.object_id == str(deposit.item_id))
                .order_by(AuditEvent.seq)
            )
        )
        assert actions[-3:] == ["portal.question_set", "portal.answer_failed", "portal.opened"]
        # Neither the answer nor its normal form is stored in clear anywhere we wrote.
        normal = service.normal_answer(answer)
        for table in ("portal_items", "portal_events", "audit_events"):
            for row in session.execute(text(f"SELECT * FROM {table}")).all():
                for value in row:
                    shown = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    assert answer not in shown and normal not in shown
                    assert normal.upper() not in shown
    window.assert_clean(answer, normal, deposit.name)


def test_wrong_answers_share_the_lockout(client, runtime, deposit):
    assert _set(client, deposit, "blue heron").status_code == 200
    csrf = csrf_of(client.get(deposit.path).text)
    for _ in range(service.MAX_FAILURES - 1):
        wrong = client.post(f"{deposit.path}/answer", data={"answer": "red", "csrf_token": csrf})
        assert wrong.status_code == 400
    # The fifth failure, a wrong code, locks the item: the same counter.
    client.post(f"{deposit.path}/code", data={"csrf_token": csrf})
    locked = client.post(f"{deposit.path}/verify", data={"code": "000000", "csrf_token": csrf})
    assert locked.status_code == 429
    refused = client.post(
        f"{deposit.path}/answer", data={"answer": "Blue Heron", "csrf_token": csrf}
    )
    assert refused.status_code == 429 and "locked for 15 minutes" in refused.text
    assert deposit.name not in refused.text
    kinds = _kinds(runtime, deposit.keys, deposit.item_id)
    assert kinds.count("answer_failed") == service.MAX_FAILURES - 1 and "locked" in kinds
    assert "opened" not in kinds


def test_the_question_is_checked_and_only_on_live_items(client, deposit):
    assert _set(client, deposit, "  a ").status_code == 422
    assert _set(client, deposit, "heron", question="   ").status_code == 422
    page = client.get(deposit.path)
    assert f"{deposit.path}/answer" not in page.text
    no_question = client.post(
        f"{deposit.path}/answer", data={"answer": "x", "csrf_token": csrf_of(page.text)}
    )
    assert no_question.status_code == 400
    recall = client.post(
        f"/api/v1/portal/messages/{deposit.item_id}/recall", headers=deposit.headers
    )
    assert recall.status_code == 200
    assert _set(client, deposit, "heron").status_code == 409
