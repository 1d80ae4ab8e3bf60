"""The message log in the console: filters, newest-first paging, the recipient search
(phi:read only, POSTed, audited, never in a URL or a log line), a message's page with
its event history and SMTP replies, and the audited reveal of recipient and content."""

from __future__ import annotations

import re

import pytest

from tests.canaries import phi_value
from tests.web.sent_messages import make_message

DELIVERED = {
    "attempt": 1,
    "code": 250,
    "enhanced": "2.0.0",
    "reply": "250 2.0.0 Ok: queued as 4XyZ",
    "host": "mx.example.org",
    "tls": True,
}
DEFERRED = {"attempt": 1, "code": 451, "enhanced": "4.7.1", "reply": "451 4.7.1 Greylisted"}


@pytest.fixture
def patient_address() -> str:
    return f"{phi_value('mail').lower()}@patients.example"


def _ids_in(html: str) -> list[str]:
    return re.findall(r'href="/messages/([0-9a-f-]{36})"', html)


def test_the_log_lists_newest_first_without_phi_and_filters(
    runtime, tenant, make_person, sign_in, patient_address
):
    subject = f"Results for {phi_value('subject')}"
    older = make_message(runtime, tenant, to=patient_address, subject=subject, tags=("lab",))
    newer = make_message(runtime, tenant, tags=("reminder",), events=[("delivered", DELIVERED)])
    marketer = sign_in(make_person(tenant, "marketer"))

    page = marketer.get("/messages")
    assert page.status_code == 200
    ids = _ids_in(page.text)
    assert ids.index(str(newer)) < ids.index(str(older))
    assert patient_address not in page.text and subject not in page.text
    assert 'href="/messages"' in page.text  # in the console navigation

    by_tag = marketer.get("/messages?tag=lab")
    assert _ids_in(by_tag.text) == [str(older)]
    by_state = marketer.get("/messages?state=delivered")
    assert _ids_in(by_state.text) == [str(newer)]
    bad = marketer.get("/messages?state=nonsense&campaign=nope")
    assert bad.status_code == 200
    assert "Status: choose one of the listed statuses." in bad.text
    assert "Campaign: paste the campaign" in bad.text


def test_paging_goes_to_older_messages(runtime, tenant, make_person, sign_in):
    from carepost.web import messages as log

    made = [make_message(runtime, tenant, tags=("paging",)) for _ in range(3)]
    analyst = sign_in(make_person(tenant, "analyst"))
    before, log.PAGE_SIZE = log.PAGE_SIZE, 2
    try:
        first = analyst.get("/messages?tag=paging")
        assert _ids_in(first.text) == [str(made[2]), str(made[1])]
        [next_url] = re.findall(r'href="(/messages\?[^"]*after=[^"]*)" rel="next"', first.text)
        second = analyst.get(next_url.replace("&amp;", "&"))
        assert _ids_in(second.text) == [str(made[0])]
        assert 'rel="next"' not in second.text
    finally:
        log.PAGE_SIZE = before


def test_recipient_search_is_posted_audited_and_only_for_phi_readers(
    runtime, tenant, make_person, sign_in, patient_address, audit_trail, log_file
):
    mine = make_message(runtime, tenant, to=patient_address)
    make_message(runtime, tenant)  # someone else's
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get("/messages")
    assert 'id="recipient-search"' not in page.text
    assert "needs the <code>phi:read</code> permission" in page.text
    refused = analyst.post("/messages/search", {"to": patient_address})
    assert refused.status_code == 403

    marketer = sign_in(make_person(tenant, "marketer"))
    marketer.get("/messages")
    found = marketer.post("/messages/search", {"to": patient_address.upper()}, htmx=True)
    assert found.status_code == 200
    assert _ids_in(found.text) == [str(mine)]
    assert patient_address in found.text
    assert "This search is recorded in the audit trail" in found.text
    [event] = audit_trail(tenant, "message.view_phi")
    assert event.details["via"] == "console_search" and event.details["ids"] == [str(mine)]
    assert patient_address not in str(event.details)

    # The address is in no URL the page links to, and in no log line.
    assert not re.search(r'(href|action|hx-get)="[^"]*' + re.escape(patient_address), found.text)
    assert patient_address not in log_file.read_text(encoding="utf-8")

    nothing = marketer.post("/messages/search", {"to": "nobody@example.org"})
    assert nothing.status_code == 200 and "No messages to this address." in nothing.text
    invalid = marketer.post("/messages/search", {"to": "not an address"})
    assert "Recipient: not a valid email address." in invalid.text
    assert "not an address" not in invalid.text.replace('value="not an address"', "")


def test_the_address_never_goes_in_a_query_string(runtime, tenant, make_person, sign_in):
    marketer = sign_in(make_person(tenant, "marketer"))
    page = marketer.get("/messages")
    form = re.search(r'<form[^>]*id="recipient-search"[^>]*>', page.text)
    assert form is not None and 'method="post"' in form.group(0)
    filter_form = re.search(r'<form[^>]*id="message-filter"[^>]*>.*?</form>', page.text, re.S)
    assert filter_form is not None and 'name="to"' not in filter_form.group(0)


def test_a_message_page_shows_its_history_and_reveals_content_audited(
    runtime, tenant, make_person, sign_in, patient_address, audit_trail
):
    subject = f"Results for {phi_value('subject')}"
    body_name = phi_value("name")
    message_id = make_message(
        runtime,
        tenant,
        to=patient_address,
        subject=subject,
        html=f"<p>Dear {body_name}</p>",
        text=f"Dear {body_name}",
        events=[
            ("deferred", DEFERRED),
            ("delivered", DELIVERED),
            ("opened", {"machine": "apple-mpp"}),
            ("clicked", {"link": 0}),
        ],
    )
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get(f"/messages/{message_id}")
    assert page.status_code == 200
    kinds = re.findall(r'data-kind="([a-z]+)"', page.text)
    assert kinds == ["queued", "deferred", "delivered", "opened", "clicked"]
    assert "451 4.7.1 Greylisted" in page.text and "250 2.0.0 Ok: queued as 4XyZ" in page.text
    assert "mx.example.org" in page.text
    for secret in (patient_address, subject, body_name):
        assert secret not in page.text
    assert "Reveal recipient and content" not in page.text
    assert analyst.post(f"/messages/{message_id}/reveal").status_code == 403
    assert audit_trail(tenant, "message.view_phi") == []

    marketer = sign_in(make_person(tenant, "marketer"))
    hidden = marketer.get(f"/messages/{message_id}")
    assert "Reveal recipient and content" in hidden.text and body_name not in hidden.text
    shown = marketer.post(f"/messages/{message_id}/reveal", htmx=True)
    assert shown.status_code == 200
    assert patient_address in shown.text and subject in shown.text and body_name in shown.text
    assert 'sandbox srcdoc="' in shown.text  # the HTML part runs no script
    [event] = audit_trail(tenant, "message.view_phi")
    assert event.details["via"] == "console" and event.object_id == str(message_id)


def test_another_organizations_message_is_not_found(
    runtime, tenant, other_tenant, make_person, sign_in
):
    theirs = make_message(runtime, other_tenant)
    owner = sign_in(make_person(tenant, "marketer"))
    assert owner.get(f"/messages/{theirs}").status_code == 404
    assert owner.post(f"/messages/{theirs}/reveal").status_code == 404
    assert owner.get("/messages/not-an-id").status_code == 404
