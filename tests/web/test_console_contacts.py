"""The contacts console: the list (no PHI by default, audited when shown), exact
blind-index search, the contact page (masked until an audited reveal), consent,
list membership, the timeline, lists and the contact field schema."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from carepost.audit.service import SYSTEM
from carepost.consent import suppression
from carepost.contacts import custom_fields, events, lists, stages, upserts
from carepost.contacts.models import CustomField
from tests.canaries import phi_value


@pytest.fixture
def marketer(tenant, make_person):
    return make_person(tenant, "marketer")


@pytest.fixture
def analyst(tenant, make_person):
    return make_person(tenant, "analyst")


def add_contacts(runtime, tenant, items: list[dict]) -> list[uuid.UUID]:
    _row, keys = tenant
    with runtime.bound_session(keys) as session:
        results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
    assert all(r.status == "created" for r in results), [r.errors for r in results]
    return [r.id for r in results]


def person_item(**extra) -> dict:
    return {
        "email": f"{phi_value('mail').lower()}@example.org",
        "first_name": phi_value("first"),
        "last_name": phi_value("last"),
        **extra,
    }


def define_field(runtime, tenant, **values) -> CustomField:
    with runtime.bound_session(tenant[1]) as session:
        return custom_fields.create_field(session, tenant[0].id, actor=SYSTEM, **values)


def contact_ids(page) -> list[str]:
    return re.findall(r'href="/contacts/([0-9a-f-]{36})"', page.text)


def view_phi_events(audit_trail, tenant):
    return audit_trail(tenant, "contact.view_phi")


# --- the list ---------------------------------------------------------------------------


def test_the_list_shows_no_phi_by_default_and_audits_each_page_that_does(
    tenant, marketer, sign_in, runtime, audit_trail
):
    item = person_item()
    [contact_id] = add_contacts(runtime, tenant, [item])
    b = sign_in(marketer)
    plain = b.get("/contacts")
    assert plain.status_code == 200
    assert str(contact_id) in contact_ids(plain)
    assert item["first_name"] not in plain.text and item["email"] not in plain.text
    assert view_phi_events(audit_trail, tenant) == []

    shown = b.get("/contacts?show=phi")
    assert item["first_name"] in shown.text and item["email"] in shown.text
    assert "this page view is recorded in the audit trail" in shown.text
    [event] = view_phi_events(audit_trail, tenant)
    assert event.details["via"] == "list" and event.details["contact_ids"] == [str(contact_id)]
    assert item["email"] not in json.dumps(event.details)


def test_an_analyst_never_sees_names_even_when_asking(
    tenant, analyst, sign_in, runtime, audit_trail
):
    item = person_item()
    add_contacts(runtime, tenant, [item])
    page = sign_in(analyst).get("/contacts?show=phi")
    assert page.status_code == 200
    assert item["first_name"] not in page.text
    assert "Show names and emails" not in page.text
    assert 'action="/contacts/search"' not in page.text
    assert "needs the <code>phi:read</code> permission" in page.text
    assert view_phi_events(audit_trail, tenant) == []


def test_filter_by_journey_stage_and_list(tenant, marketer, sign_in, runtime):
    active, overdue, listed = add_contacts(
        runtime,
        tenant,
        [
            person_item(journey_stage="active"),
            person_item(journey_stage="overdue"),
            person_item(journey_stage="active"),
        ],
    )
    with runtime.bound_session(tenant[1]) as session:
        vip = lists.create_list(session, tenant[0].id, name="VIP", description="", actor=SYSTEM)
        lists.change_members(session, tenant[0].id, vip.id, add=[listed], remove=[], actor=SYSTEM)
    b = sign_in(marketer)
    assert sorted(contact_ids(b.get("/contacts?stage=active"))) == sorted(
        [str(active), str(listed)]
    )
    assert contact_ids(b.get("/contacts?stage=overdue")) == [str(overdue)]
    assert contact_ids(b.get(f"/contacts?list={vip.id}")) == [str(listed)]
    assert contact_ids(b.get(f"/contacts?list={vip.id}&stage=overdue")) == []
    unknown = b.get("/contacts?stage=nonsense")
    assert unknown.status_code == 422 and 'id="contact-filter-stage-error"' in unknown.text
    foreign = b.get(f"/contacts?list={uuid.uuid4()}")
    assert foreign.status_code == 422 and 'id="contact-filter-list-error"' in foreign.text


def test_the_list_pages_by_cursor(tenant, marketer, sign_in, runtime):
    ids = sorted(add_contacts(runtime, tenant, [person_item() for _ in range(55)]))
    b = sign_in(marketer)
    first = b.get("/contacts")
    assert contact_ids(first) == [str(i) for i in ids[:50]]
    next_url = html.unescape(re.search(r'href="(/contacts\?after=[^"]+)"', first.text).group(1))
    second = b.get(next_url)
    assert contact_ids(second) == [str(i) for i in ids[50:]]
    assert "Next page" not in second.text and "First page" in second.text
    assert b.get("/contacts?after=!!").status_code == 422


# --- search -----------------------------------------------------------------------------


def test_search_is_an_exact_blind_index_match_and_is_audited(
    tenant, marketer, sign_in, runtime, audit_trail
):
    item = person_item(phone="+14155552671", external_ids={"mrn": phi_value("mrn")})
    [contact_id] = add_contacts(runtime, tenant, [item])
    add_contacts(runtime, tenant, [person_item()])
    b = sign_in(marketer)
    b.get("/contacts")
    for by, value in (
        ("email", item["email"].upper()),
        ("phone", "+14155552671"),
        ("mrn", item["external_ids"]["mrn"]),
    ):
        found = b.post("/contacts/search", {"by": by, "value": value})
        assert found.status_code == 200, found.text
        assert contact_ids(found) == [str(contact_id)], by
        assert item["first_name"] in found.text
    partial = b.post("/contacts/search", {"by": "email", "value": item["email"][:-4] + ".com"})
    assert contact_ids(partial) == [] and "0 contacts found" in partial.text
    lookups = [e for e in view_phi_events(audit_trail, tenant) if e.details["via"] == "lookup"]
    assert len(lookups) == 3  # a search that finds nobody discloses nobody
    assert all(item["email"] not in json.dumps(e.details) for e in lookups)


def test_search_errors_stand_next_to_the_value(tenant, marketer, sign_in):
    b = sign_in(marketer)
    b.get("/contacts")
    bad_phone = b.post("/contacts/search", {"by": "phone", "value": "555-0100"})
    assert bad_phone.status_code == 422
    assert 'id="contact-search-value-error"' in bad_phone.text
    assert "international format" in bad_phone.text
    empty = b.post("/contacts/search", {"by": "email", "value": ""})
    assert empty.status_code == 422 and 'id="contact-search-value-error"' in empty.text
    wrong_kind = b.post("/contacts/search", {"by": "first_name", "value": "x"})
    assert wrong_kind.status_code == 422 and 'id="contact-search-by-error"' in wrong_kind.text


# --- the contact page -------------------------------------------------------------------


def test_the_contact_page_masks_phi_until_an_audited_reveal(
    tenant, marketer, sign_in, runtime, audit_trail
):
    define_field(
        runtime,
        tenant,
        key="conditions",
        label="Conditions",
        type="multi_choice",
        choices=["diabetes_t2", "asthma"],
    )
    define_field(runtime, tenant, key="vip", label="VIP", type="boolean", phi=False)
    item = person_item(
        phone="+14155552671",
        birth_date="1961-04-02",
        external_ids={"mrn": phi_value("mrn")},
        custom={"conditions": ["asthma"], "vip": True},
        journey_stage="active",
    )
    [contact_id] = add_contacts(runtime, tenant, [item])
    b = sign_in(marketer)
    masked = b.get(f"/contacts/{contact_id}")
    assert masked.status_code == 200
    for value in (item["first_name"], item["email"], item["external_ids"]["mrn"], "asthma"):
        assert value not in masked.text
    assert "Reveal PHI" in masked.text and "Conditions" in masked.text
    assert '<span class="badge badge--stage" id="current-stage">active</span>' in masked.text
    assert view_phi_events(audit_trail, tenant) == []

    revealed = b.post(f"/contacts/{contact_id}/reveal")
    assert revealed.status_code == 200
    for value in (item["first_name"], item["email"], item["external_ids"]["mrn"], "asthma"):
        assert value in revealed.text
    assert "1961-04-02" in revealed.text and "+14155552671" in revealed.text
    [event] = view_phi_events(audit_trail, tenant)
    assert event.details == {"via": "console"} and event.object_id == str(contact_id)
    # HTMX swaps the page body in place; the answer is the same page.
    swapped = b.post(f"/contacts/{contact_id}/reveal", htmx=True)
    assert 'id="contact-detail"' in swapped.text and item["email"] in swapped.text


def test_people_without_phi_read_cannot_reveal(tenant, analyst, sign_in, runtime, audit_trail):
    item = person_item()
    [contact_id] = add_contacts(runtime, tenant, [item])
    b = sign_in(analyst)
    page = b.get(f"/contacts/{contact_id}")
    assert page.status_code == 200 and "Reveal PHI" not in page.text
    refused = b.post(f"/contacts/{contact_id}/reveal")
    assert refused.status_code == 403 and item["first_name"] not in refused.text
    assert view_phi_events(audit_trail, tenant) == []


def test_stage_history_and_suppression_state(tenant, marketer, sign_in, runtime):
    item = person_item(phone="+14155552671")
    [contact_id] = add_contacts(runtime, tenant, [item])
    with runtime.bound_session(tenant[1]) as session:
        upserts.upsert_contacts(
            session,
            tenant[1],
            [{"email": item["email"], "journey_stage": "overdue"}],
            match="email",
            actor=SYSTEM,
        )
    b = sign_in(marketer)
    page = b.get(f"/contacts/{contact_id}")
    assert "new → <strong>overdue</strong>" in page.text
    assert "not suppressed" in page.text
    with runtime.bound_session(tenant[1]) as session:
        suppression.add_suppression(
            session,
            tenant[1],
            address="+1 415 555 2671",
            reason="manual",
            source="console",
            actor=SYSTEM,
        )
    page = b.get(f"/contacts/{contact_id}")
    assert "Text (SMS): manual, all messages" in page.text
    assert "+14155552671" not in page.text


def test_change_the_journey_stage_with_htmx_and_see_its_history(
    tenant, marketer, analyst, sign_in, runtime, audit_trail
):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    with runtime.bound_session(tenant[1]) as session:
        stages.define_stage(session, tenant[0].id, key="post-op", label="After surgery")
    b = sign_in(marketer)
    page = b.get(f"/contacts/{contact_id}")
    assert '<option value="post-op">After surgery</option>' in page.text
    assert '<option value="new" selected>' in page.text
    changed = b.post(f"/contacts/{contact_id}/stage", {"stage": "post-op"}, htmx=True)
    assert changed.status_code == 200
    notice = json.loads(changed.headers["HX-Trigger"])["carepost:notice"]
    assert notice == "Stage changed to post-op."
    assert 'id="current-stage">post-op<' in changed.text
    assert "new → <strong>post-op</strong>" in changed.text
    again = b.post(f"/contacts/{contact_id}/stage", {"stage": "overdue"})
    assert again.headers["location"] == f"/contacts/{contact_id}?done=stage#stage"
    page = b.get(f"/contacts/{contact_id}?done=stage")
    assert "Journey stage changed." in page.text
    history = page.text[page.text.index('id="stage-history"') :]
    # Newest first.
    assert history.index("post-op → <strong>overdue</strong>") < history.index(
        "new → <strong>post-op</strong>"
    )
    unknown = b.post(f"/contacts/{contact_id}/stage", {"stage": "nonsense"}, htmx=True)
    assert unknown.status_code == 422 and 'id="stage-stage-error"' in unknown.text
    events = audit_trail(tenant, "contact.update")
    assert [e.details for e in events] == [{"fields": ["journey_stage"]}] * 2
    # Reading is not writing.
    read_only = sign_in(analyst).get(f"/contacts/{contact_id}")
    assert "Change stage" not in read_only.text and "post-op → " in read_only.text


# --- consent ----------------------------------------------------------------------------


def test_record_consent_with_htmx_and_see_it_in_grid_and_history(
    tenant, marketer, sign_in, runtime, audit_trail
):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    evidence = phi_value("evidence")
    b = sign_in(marketer)
    b.get(f"/contacts/{contact_id}")
    answer = b.post(
        f"/contacts/{contact_id}/consents",
        {
            "channel": "sms",
            "purpose": "marketing",
            "status": "granted",
            "source": "paper",
            "evidence": evidence,
            "captured_at": "2024-05-01T09:30",
        },
        htmx=True,
    )
    assert answer.status_code == 200, answer.text
    assert answer.text.lstrip().startswith('<section class="panel" aria-labelledby="consent-title"')
    assert "Recorded: sms marketing granted." in answer.headers["HX-Trigger"]
    assert "2024-05-01 09:30 UTC" in answer.text
    assert evidence not in answer.text  # evidence is PHI: shown on a revealed page only
    [record] = audit_trail(tenant, "consent.record")
    assert record.details["evidence"] is True and evidence not in json.dumps(record.details)
    revealed = b.post(f"/contacts/{contact_id}/reveal")
    assert evidence in revealed.text


def test_consent_errors_stand_next_to_their_field(tenant, marketer, sign_in, runtime):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    b = sign_in(marketer)
    b.get(f"/contacts/{contact_id}")
    future = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    answer = b.post(
        f"/contacts/{contact_id}/consents",
        {
            "channel": "email",
            "purpose": "marketing",
            "status": "granted",
            "source": "paper",
            "captured_at": future,
        },
        htmx=True,
    )
    assert answer.status_code == 422
    assert 'id="consent-captured_at-error"' in answer.text and "in the future" in answer.text
    unknown = b.post(
        f"/contacts/{contact_id}/consents",
        {"channel": "fax", "purpose": "marketing", "status": "granted", "source": "paper"},
    )
    assert unknown.status_code == 422 and 'id="consent-channel-error"' in unknown.text
    assert "<html" in unknown.text  # without HTMX: the whole page, with the form open


def test_an_analyst_sees_consent_but_cannot_record_it(tenant, analyst, sign_in, runtime):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    page = sign_in(analyst).get(f"/contacts/{contact_id}")
    assert "Current consent by purpose and channel" in page.text
    assert "Record consent" not in page.text and "Add to list" not in page.text


# --- lists ------------------------------------------------------------------------------


def test_add_to_and_remove_from_a_list_with_htmx(tenant, marketer, sign_in, runtime):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    with runtime.bound_session(tenant[1]) as session:
        vip = lists.create_list(session, tenant[0].id, name="VIP", description="", actor=SYSTEM)
    b = sign_in(marketer)
    page = b.get(f"/contacts/{contact_id}")
    assert f'<option value="{vip.id}">VIP</option>' in page.text
    added = b.post(f"/contacts/{contact_id}/lists", {"list_id": str(vip.id)}, htmx=True)
    assert (
        added.status_code == 200
        and "Added to “VIP”" in json.loads(added.headers["HX-Trigger"])["carepost:notice"]
    )
    assert f'href="/lists/{vip.id}">VIP</a>' in added.text
    assert "1</td>" in b.get("/lists").text.replace(" ", "")
    removed = b.post(f"/contacts/{contact_id}/lists/{vip.id}/remove", htmx=True)
    assert "Not in any list." in removed.text and "Earlier memberships (1)" in removed.text
    no_choice = b.post(f"/contacts/{contact_id}/lists", {"list_id": ""}, htmx=True)
    assert no_choice.status_code == 422 and 'id="membership-list_id-error"' in no_choice.text
    plain = b.post(f"/contacts/{contact_id}/lists", {"list_id": str(vip.id)})
    assert plain.headers["location"] == f"/contacts/{contact_id}?done=list-added#lists"


def test_another_organizations_list_cannot_be_joined(
    tenant, other_tenant, marketer, sign_in, runtime, audit_trail
):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    with runtime.bound_session(other_tenant[1]) as session:
        theirs = lists.create_list(
            session, other_tenant[0].id, name="Theirs", description="", actor=SYSTEM
        )
    b = sign_in(marketer)
    b.get(f"/contacts/{contact_id}")
    answer = b.post(f"/contacts/{contact_id}/lists", {"list_id": str(theirs.id)}, htmx=True)
    assert answer.status_code == 422 and "choose one of your lists" in answer.text.lower()
    assert audit_trail(other_tenant, "list.members") == []
    assert audit_trail(tenant, "list.members") == []


def test_create_rename_and_delete_a_list(tenant, marketer, sign_in, runtime):
    b = sign_in(marketer)
    b.get("/lists")
    created = b.post("/lists", {"name": "Diabetes outreach", "description": "Type 2, 2024"})
    assert created.status_code == 303
    page = b.follow(created)
    assert "List created." in page.text and "0</strong> current members" in page.text
    list_path = created.headers["location"].split("?")[0]
    duplicate = b.post("/lists", {"name": "Diabetes outreach"})
    assert duplicate.status_code == 409 and 'id="list-name-error"' in duplicate.text
    blank = b.post("/lists", {"name": "  "})
    assert blank.status_code == 422 and 'id="list-name-error"' in blank.text
    renamed = b.post(list_path, {"name": "Diabetes 2025", "description": ""})
    assert renamed.headers["location"] == f"{list_path}?done=renamed"
    assert "<h1>Diabetes 2025</h1>" in b.follow(renamed).text
    confirm = b.get(f"{list_path}/delete")
    assert "Delete the list “Diabetes 2025”?" in html.unescape(confirm.text)
    deleted = b.post(f"{list_path}/delete")
    assert deleted.headers["location"] == "/lists?done=deleted"
    assert "Diabetes 2025" not in b.follow(deleted).text
    assert b.get(list_path).status_code == 404


def test_list_members_are_paged(tenant, marketer, sign_in, runtime):
    ids = add_contacts(runtime, tenant, [person_item() for _ in range(52)])
    with runtime.bound_session(tenant[1]) as session:
        big = lists.create_list(session, tenant[0].id, name="Big", description="", actor=SYSTEM)
        lists.change_members(session, tenant[0].id, big.id, add=ids, remove=[], actor=SYSTEM)
    b = sign_in(marketer)
    first = b.get(f"/lists/{big.id}")
    assert "52</strong> current members" in first.text
    assert len(contact_ids(first)) == 50
    next_url = html.unescape(re.search(r'href="(/lists/[^"]+\?after=[^"]+)"', first.text).group(1))
    assert len(contact_ids(b.get(next_url))) == 2


# --- contact fields ---------------------------------------------------------------------


def test_define_a_field_and_see_it_listed(tenant, marketer, sign_in, runtime):
    b = sign_in(marketer)
    b.get("/contact-fields")
    created = b.post(
        "/contact-fields",
        {
            "label": "Conditions",
            "key": "conditions",
            "type": "multi_choice",
            "choices": "diabetes_t2\nasthma\n\n",
            "options": ["phi"],
        },
    )
    assert created.status_code == 303, created.text
    page = b.follow(created)
    assert "Field created." in page.text and "<code>conditions</code>" in page.text
    with runtime.bound_session(tenant[1]) as session:
        [row] = custom_fields.list_fields(session, tenant[0].id)
    assert row.choices == ["diabetes_t2", "asthma"] and row.phi and not row.sealed


def test_field_errors_stand_next_to_their_field(tenant, marketer, sign_in, runtime):
    b = sign_in(marketer)
    b.get("/contact-fields")
    cases = [
        ({"label": "X", "key": "Bad Key", "type": "string"}, "key", 422, "lower-case"),
        ({"label": "X", "key": "email", "type": "string"}, "key", 422, "standard contact field"),
        ({"label": "", "key": "x", "type": "string"}, "label", 422, "enter the label"),
        ({"label": "X", "key": "x", "type": "choice"}, "choices", 422, "list of choices"),
        (
            {"label": "X", "key": "x", "type": "choice", "choices": "ok\nnot ok"},
            "choices",
            422,
            "line 2",
        ),
        (
            {"label": "X", "key": "x", "type": "string", "granularity": "day"},
            "granularity",
            422,
            "has no granularity",
        ),
        ({"label": "X", "key": "x", "type": "nonsense"}, "type", 422, "choose one of the types"),
    ]
    for data, name, status, message in cases:
        answer = b.post("/contact-fields", data)
        assert answer.status_code == status, (data, answer.status_code)
        text = html.unescape(answer.text)
        assert f'id="field-{name}-error"' in text, data
        assert message in text.lower(), (data, message)
        # Good input is kept for the person to fix the rest.
        assert f'value="{data["label"]}"' in text
    define_field(runtime, tenant, key="weight", label="Weight", type="number")
    taken = b.post("/contact-fields", {"label": "W", "key": "weight", "type": "number"})
    assert taken.status_code == 409 and 'id="field-key-error"' in taken.text


def test_seal_with_htmx_then_delete_after_confirmation(
    tenant, marketer, sign_in, runtime, audit_trail
):
    row = define_field(runtime, tenant, key="insurance", label="Insurance", type="string")
    add_contacts(runtime, tenant, [person_item(custom={"insurance": "medicare"})])
    b = sign_in(marketer)
    b.get("/contact-fields")
    sealed = b.post(f"/contact-fields/{row.id}/seal", htmx=True)
    assert sealed.text.lstrip().startswith(f'<tr id="field-{row.id}">')
    assert '<span class="badge badge--sealed">sealed</span>' in sealed.text
    assert "no longer usable in segments" in sealed.headers["HX-Trigger"]
    confirm = b.get(f"/contact-fields/{row.id}/delete")
    assert "Contacts hold values of this field" in confirm.text
    deleted = b.post(f"/contact-fields/{row.id}/delete")
    assert deleted.headers["location"] == "/contact-fields?done=deleted"
    assert "Insurance" not in b.follow(deleted).text.split("<table", 1)[1]
    assert [e.action for e in audit_trail(tenant) if e.action.startswith("contact_field.")] == [
        "contact_field.create",
        "contact_field.update",
        "contact_field.delete",
    ]


def test_an_analyst_reads_the_schema_but_cannot_change_it(tenant, analyst, sign_in, runtime):
    define_field(runtime, tenant, key="insurance", label="Insurance", type="string")
    page = sign_in(analyst).get("/contact-fields")
    assert page.status_code == 200 and "Insurance" in page.text
    assert "Define a field" not in page.text and "Seal<span" not in page.text


# --- the timeline -----------------------------------------------------------------------


def _post_events(runtime, tenant, contact_id, n, properties=None):
    now = datetime.now(UTC)
    items = [
        {
            "contact_id": str(contact_id),
            "kind": "portal_login",
            "occurred_at": (now - timedelta(minutes=i)).isoformat(),
            **({"properties": properties} if properties else {}),
        }
        for i in range(n)
    ]
    with runtime.bound_session(tenant[1]) as session:
        results = events.record_events(session, tenant[1], items, actor=SYSTEM)
    assert not any(r.errors for r in results)


def test_timeline_loads_more_with_htmx_and_hides_properties_until_revealed(
    tenant, marketer, sign_in, runtime, audit_trail
):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    detail = phi_value("detail")
    _post_events(runtime, tenant, contact_id, 30, properties={"note": detail})
    b = sign_in(marketer)
    page = b.get(f"/contacts/{contact_id}")
    assert page.text.count('class="timeline__item"') == 25
    assert detail not in page.text and "Details hidden" in page.text
    more = html.unescape(re.search(r'hx-get="([^"]+)"', page.text).group(1))
    assert "phi=1" not in more
    rest = b.get(more, headers={"HX-Request": "true"})
    assert rest.text.count('class="timeline__item"') == 5 and "<html" not in rest.text
    assert "Load more" not in rest.text
    assert view_phi_events(audit_trail, tenant) == []

    revealed = b.post(f"/contacts/{contact_id}/reveal")
    assert detail in revealed.text
    more = html.unescape(re.search(r'hx-get="([^"]+)"', revealed.text).group(1))
    assert "phi=1" in more
    rest = b.get(more, headers={"HX-Request": "true"})
    assert detail in rest.text
    assert [e.details["via"] for e in view_phi_events(audit_trail, tenant)] == ["console", "events"]
    # Without JavaScript the link opens a page of older events.
    assert "<h1>Timeline</h1>" in b.get(more).text


def test_an_analyst_cannot_unhide_event_properties(tenant, analyst, sign_in, runtime, audit_trail):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    detail = phi_value("detail")
    _post_events(runtime, tenant, contact_id, 1, properties={"note": detail})
    page = sign_in(analyst).get(f"/contacts/{contact_id}/timeline?phi=1")
    assert page.status_code == 200 and detail not in page.text
    assert view_phi_events(audit_trail, tenant) == []
