"""The identity question set with the message (``portal`` of ``POST /api/v1/messages``
and of each batch item): the answer is hashed before anything is stored, never kept in
the message or its metadata nor logged, and becomes the item's question at hand-off."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select, text

from carepost.audit.models import AuditEvent
from carepost.messages.models import Message
from carepost.portal.models import PortalEvent, PortalItem, PortalPreset
from carepost.portal.presets import normal_answer
from tests.canaries import phi_value, secret_value
from tests.portal.conftest import LINK, csrf_of, handoff, notices
from tests.security.test_no_phi_in_logs import LogWindow

QUESTION = "What is the name of your first school?"


def _message(address: str, name: str, **extra) -> dict:
    return {
        "to": address,
        "from": "care@clinic.example",
        "subject": f"Results for {name}",
        "text": f"Dear {name}, your results are normal.",
        **extra,
    }


def _everything_stored(session) -> list[str]:
    shown = []
    for table in ("messages", "portal_presets", "portal_items", "portal_events", "audit_events"):
        for row in session.execute(text(f"SELECT * FROM {table}")).all():
            for value in row:
                shown.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return shown


def _open_with_answer(client, path: str, answer: str):
    page = client.get(path)
    assert page.status_code == 200
    return page, client.post(
        f"{path}/answer", data={"answer": answer, "csrf_token": csrf_of(page.text)}
    )


def test_a_question_sent_with_the_message_opens_the_portal(
    client, runtime, tenant, make_api_key, log_file: Path
):
    window = LogWindow(log_file)
    headers = make_api_key(tenant)
    name = phi_value("name")
    answer = secret_value(f"Oak  Street {uuid.uuid4().hex[:6]}")
    sent = client.post(
        "/api/v1/messages",
        json=_message(
            f"p-{uuid.uuid4().hex[:8]}@patients.example",
            name,
            metadata={"case": "42"},
            portal={"question": QUESTION, "answer": answer},
        ),
        headers=headers,
    )
    assert sent.status_code == 201, sent.text
    assert answer not in sent.text
    message_id = uuid.UUID(sent.json()["id"])
    keys = tenant[1]
    with runtime.bound_session(keys) as session:
        message = session.get(Message, message_id)
        assert message is not None and message.meta == {"case": "42"}
        preset = session.scalar(select(PortalPreset).where(PortalPreset.message_id == message_id))
        assert preset is not None and preset.question == QUESTION
        assert len(preset.answer_hash) <= 64
        for shown in _everything_stored(session):
            assert answer not in shown and normal_answer(answer) not in shown
    item_id = handoff(runtime, keys, message_id)
    [notice] = notices(runtime, keys, item_id)
    [path] = LINK.findall(notice.body["text"])
    with runtime.bound_session(keys) as session:
        # One copy: the item's; the preset is gone.
        assert (
            session.scalar(select(PortalPreset).where(PortalPreset.message_id == message_id))
            is None
        )
        item = session.get(PortalItem, item_id)
        assert item is not None and item.question == QUESTION and item.answer_hash
        kinds = list(
            session.scalars(
                select(PortalEvent.kind)
                .where(PortalEvent.item_id == item_id)
                .order_by(PortalEvent.id)
            )
        )
        assert kinds == ["deposited", "question_set"]
    page, wrong = _open_with_answer(client, path, "Elm Street")
    assert "What is the name of your first school?" in page.text
    assert wrong.status_code == 400 and name not in wrong.text
    _page, opened = _open_with_answer(client, path, "  " + answer.upper() + " ")
    assert opened.status_code == 200 and name in opened.text
    with runtime.bound_session(keys) as session:
        actions = list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.object_id == str(item_id))
                .order_by(AuditEvent.seq)
            )
        )
        assert actions[-2:] == ["portal.answer_failed", "portal.opened"]
        for shown in _everything_stored(session):
            assert answer not in shown and normal_answer(answer) not in shown
    window.assert_clean(answer, normal_answer(answer), name)


def test_each_batch_item_may_carry_its_own_question(client, runtime, tenant, make_api_key):
    headers = make_api_key(tenant)
    name = phi_value("name")
    answers = [secret_value(f"answer {uuid.uuid4().hex[:6]}") for _ in range(2)]
    items = [
        {**_message(f"b{i}-{uuid.uuid4().hex[:6]}@patients.example", name),
         "portal": {"question": f"Question {i}?", "answer": answers[i]}}
        for i in range(2)
    ] + [_message(f"b2-{uuid.uuid4().hex[:6]}@patients.example", name)]  # fmt: skip
    batch = client.post("/api/v1/messages/batch", json={"items": items}, headers=headers)
    assert batch.status_code in (200, 201, 207), batch.text
    ids = [uuid.UUID(r["id"]) for r in batch.json()["items"]]
    keys = tenant[1]
    item_ids = [handoff(runtime, keys, m) for m in ids]
    with runtime.bound_session(keys) as session:
        questions = [session.get(PortalItem, i).question for i in item_ids]
    assert questions == ["Question 0?", "Question 1?", None]
    # The second item's answer does not open the first: each is bound to its message.
    paths = []
    for item_id in item_ids[:2]:
        [notice] = notices(runtime, keys, item_id)
        paths.append(LINK.findall(notice.body["text"])[0])
    _page, crossed = _open_with_answer(client, paths[0], answers[1])
    assert crossed.status_code == 400
    _page, right = _open_with_answer(client, paths[1], answers[1])
    assert right.status_code == 200 and name in right.text


def test_a_bad_question_or_answer_is_refused_naming_the_field_never_the_value(
    client, tenant, make_api_key
):
    headers = make_api_key(tenant)
    name = phi_value("name")
    cases = [
        ({"question": QUESTION, "answer": "  Q   "}, "#/body/portal/answer"),
        ({"question": QUESTION, "answer": "Zebra\x00Cross"}, "#/body/portal/answer"),
        ({"question": "", "answer": "long enough"}, "#/body/portal/question"),
        ({"question": QUESTION}, "#/body/portal/answer"),
        ({"question": QUESTION, "answer": "Xy" * 101}, "#/body/portal/answer"),
        ({"question": QUESTION, "answer": "fine one", "hint": "no"}, "#/body/portal/hint"),
    ]
    for portal, pointer in cases:
        response = client.post(
            "/api/v1/messages",
            json=_message("p@patients.example", name, portal=portal),
            headers=headers,
        )
        assert response.status_code == 422, (pointer, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        pointers = [e["pointer"] for e in response.json()["errors"]]
        assert pointer in pointers, (pointer, pointers)
        if len(portal.get("answer", "")) > 3:
            assert portal["answer"].split("\x00")[0] not in response.text
    batch = client.post(
        "/api/v1/messages/batch",
        json={
            "items": [
                _message("p@patients.example", name, portal={"question": "Q?", "answer": "a"})
            ]
        },
        headers=headers,
    )
    assert batch.status_code == 422
    assert "#/body/items/0/portal/answer" in [e["pointer"] for e in batch.json()["errors"]]


def test_a_question_set_after_hand_off_still_replaces_the_one_sent(
    client, runtime, tenant, make_api_key
):
    headers = make_api_key(tenant)
    name = phi_value("name")
    first, second = secret_value("first answer"), secret_value("second answer")
    sent = client.post(
        "/api/v1/messages",
        json=_message("r@patients.example", name, portal={"question": "Q1?", "answer": first}),
        headers=headers,
    )
    message_id = uuid.UUID(sent.json()["id"])
    item_id = handoff(runtime, tenant[1], message_id)
    replaced = client.post(
        f"/api/v1/portal/messages/{item_id}/question",
        json={"question": "Q2?", "answer": second},
        headers=headers,
    )
    assert replaced.status_code == 200 and replaced.json()["has_question"] is True
    [notice] = notices(runtime, tenant[1], item_id)
    [path] = LINK.findall(notice.body["text"])
    _page, old = _open_with_answer(client, path, first)
    assert old.status_code == 400
    _page, new = _open_with_answer(client, path, second)
    assert new.status_code == 200 and name in new.text
