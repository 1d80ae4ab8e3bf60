"""The segment builder in the console: the visual form converted to the rule for every
condition kind, faults shown at the row they point into, the live count, the JSON tab
round trip, saving, the detail page (members, PHI on request and audited, export and
its audit, snapshots), editing, deleting, and what each role may do."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import UTC, datetime, timedelta

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.contacts import custom_fields, events, lists, upserts
from carepost.contacts.tokens import FieldType
from carepost.contacts.values import FieldSpec
from carepost.segments import service as segment_service
from carepost.web import segments_builder as sb
from tests.canaries import phi_value

FIELDS = {
    "conditions": FieldSpec("conditions", FieldType.MULTI_CHOICE, choices=("e11", "i10")),
    "a1c": FieldSpec("a1c", FieldType.NUMBER, granularity="0.1"),
    "enrolled": FieldSpec("enrolled", FieldType.DATE, granularity="day"),
    "smoker": FieldSpec("smoker", FieldType.BOOLEAN),
    "zip": FieldSpec("zip", FieldType.STRING, phi=False),
}


def make_patients(runtime, tenant) -> dict:
    """Four contacts; only the first matches the issue's five conditions (e11, age 50-75,
    in the list, email marketing granted, a portal login in the last 90 days)."""
    tenant_row, keys = tenant
    today = datetime.now(UTC).date()
    born_60 = today.replace(year=today.year - 60, day=1).isoformat()
    born_30 = today.replace(year=today.year - 30, day=1).isoformat()
    names = [phi_value("first") for _ in range(4)]
    with runtime.bound_session(keys) as session:
        custom_fields.create_field(
            session,
            tenant_row.id,
            key="conditions",
            label="Conditions",
            type="multi_choice",
            choices=["e11", "i10", "j45"],
            actor=SYSTEM,
        )
        custom_fields.create_field(
            session, tenant_row.id, key="zip", label="ZIP", type="string", phi=False, actor=SYSTEM
        )
        plan = [("e11", born_60), ("e11", born_60), ("i10", born_60), ("e11", born_30)]
        items = [
            {
                "email": f"{name.lower()}@example.org",
                "first_name": name,
                "birth_date": born,
                "custom": {"conditions": [code], "zip": "78701"},
            }
            for name, (code, born) in zip(names, plan, strict=True)
        ]
        ids = [
            r.id for r in upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
        ]
        outreach = lists.create_list(
            session, tenant_row.id, name="Outreach", description="", actor=SYSTEM
        )
        lists.change_members(session, tenant_row.id, outreach.id, add=ids, remove=[], actor=SYSTEM)
        for contact_id in ids:
            change = consent.ConsentChange("email", "marketing", "granted", "api")
            consent.record_consent(
                session, tenant_row.id, contact_id=contact_id, change=change, actor=SYSTEM
            )
        at = (datetime.now(UTC) - timedelta(days=10)).isoformat()
        events.record_events(
            session,
            keys,
            [
                {"contact_id": str(ids[0]), "kind": "portal_login", "occurred_at": at},
                {"contact_id": str(ids[2]), "kind": "portal_login", "occurred_at": at},
                {"contact_id": str(ids[3]), "kind": "portal_login", "occurred_at": at},
            ],
            actor=SYSTEM,
        )
    return {"ids": ids, "names": names, "list_id": str(outreach.id)}


def five_conditions(list_id: str) -> dict:
    """The issue's segment as the builder's form posts it."""
    return {
        "mode": "visual",
        "match": "all",
        "row": ["1", "2", "3", "4", "5"],
        "r1_kind": "field",
        "r1_field": "conditions",
        "r1_op": "contains_any",
        "r1_values": "e11",
        "r2_kind": "field",
        "r2_field": "birth_date",
        "r2_op": "age_between",
        "r2_v1": "50",
        "r2_v2": "75",
        "r3_kind": "list",
        "r3_list": list_id,
        "r4_kind": "consent",
        "r4_channel": "email",
        "r4_purpose": "marketing",
        "r4_status": "granted",
        "r5_kind": "event",
        "r5_event_kind": "portal_login",
        "r5_count_op": "at_least",
        "r5_times": "1",
        "r5_window": "days",
        "r5_days": "90",
    }


def five_rule(list_id: str) -> dict:
    return {
        "all": [
            {"field": "conditions", "op": "contains_any", "value": ["e11"]},
            {"field": "birth_date", "op": "age_between", "value": [50, 75]},
            {"list": list_id},
            {"consent": {"channel": "email", "purpose": "marketing", "status": "granted"}},
            {"event": {"kind": "portal_login", "at_least": 1, "within_last_days": 90}},
        ]
    }


def count_in(text: str) -> int | None:
    match = re.search(r'<span class="live-count__value">([\d,]+)</span>', text)
    return int(match.group(1).replace(",", "")) if match else None


# --- the form -> the rule (pure) -------------------------------------------------------


def _rule(data: dict) -> dict:
    return sb.to_rule(sb.read_form(data), FIELDS)


def test_every_condition_kind_becomes_its_rule():
    list_id = "0190f4c2-7a1e-7c3b-9d7a-2f1e5a6b7c8d"
    assert _rule(five_conditions(list_id)) == five_rule(list_id)
    cases = [
        (
            {"r1_kind": "stage", "r1_values": ["active", "new"]},
            {"field": "journey_stage", "op": "in", "value": ["active", "new"]},
        ),
        ({"r1_kind": "suppressed", "r1_suppressed": "sms"}, {"suppressed": "sms"}),
        (
            {
                "r1_kind": "field",
                "r1_field": "a1c",
                "r1_op": "between",
                "r1_v1": "7",
                "r1_v2": "9.5",
            },
            {"field": "a1c", "op": "between", "value": [7, 9.5]},
        ),
        (
            {"r1_kind": "field", "r1_field": "a1c", "r1_op": "equals", "r1_v1": "7.2"},
            {"field": "a1c", "op": "equals", "value": 7.2},
        ),
        (
            {
                "r1_kind": "field",
                "r1_field": "enrolled",
                "r1_op": "between",
                "r1_v1": "2024-01-01",
                "r1_v2": "2024-12-31",
            },
            {"field": "enrolled", "op": "between", "value": ["2024-01-01", "2024-12-31"]},
        ),
        (
            {"r1_kind": "field", "r1_field": "enrolled", "r1_op": "before", "r1_v1": "2024-01-01"},
            {"field": "enrolled", "op": "before", "value": "2024-01-01"},
        ),
        (
            {
                "r1_kind": "field",
                "r1_field": "enrolled",
                "r1_op": "within_last_days",
                "r1_v1": "30",
            },
            {"field": "enrolled", "op": "within_last_days", "value": 30},
        ),
        (
            {"r1_kind": "field", "r1_field": "smoker", "r1_op": "equals", "r1_v1": "false"},
            {"field": "smoker", "op": "equals", "value": False},
        ),
        (
            {"r1_kind": "field", "r1_field": "zip", "r1_op": "in", "r1_values": "78701, 78702"},
            {"field": "zip", "op": "in", "value": ["78701", "78702"]},
        ),
        (
            {"r1_kind": "field", "r1_field": "email", "r1_op": "is_not_set"},
            {"field": "email", "op": "is_not_set"},
        ),
        # an operator the field does not offer falls back to its first one
        (
            {"r1_kind": "field", "r1_field": "conditions", "r1_op": "between", "r1_values": "i10"},
            {"field": "conditions", "op": "contains_any", "value": ["i10"]},
        ),
        (
            {
                "r1_kind": "event",
                "r1_event_kind": "",
                "r1_campaign": "c-1",
                "r1_count_op": "at_most",
                "r1_times": "0",
                "r1_window": "since",
                "r1_since": "2026-01-01",
            },
            {"event": {"campaign_id": "c-1", "at_most": 0, "since": "2026-01-01"}},
        ),
        (
            {
                "r1_kind": "event",
                "r1_event_kind": "email_opened",
                "r1_times": "2",
                "r1_window": "ever",
            },
            {"event": {"kind": "email_opened", "at_least": 2}},
        ),
        (
            {
                "r1_kind": "field",
                "r1_field": "birth_date",
                "r1_op": "age_between",
                "r1_v1": "abc",
                "r1_v2": "75",
            },
            {"field": "birth_date", "op": "age_between", "value": ["abc", 75]},
        ),
    ]
    for fields, expected in cases:
        assert _rule({"row": "1", **fields}) == {"all": [expected]}, fields


def test_not_groups_and_pointers():
    data = {
        "match": "all",
        "row": ["1", "3", "4"],
        "group": "2",
        "g2_match": "any",
        "r1_kind": "suppressed",
        "r1_not": "1",
        "r1_suppressed": "any",
        "r3_kind": "list",
        "r3_group": "2",
        "r3_list": "a",
        "r4_kind": "list",
        "r4_group": "2",
        "r4_not": "1",
        "r4_list": "b",
    }
    builder = sb.read_form(data)
    rule = sb.to_rule(builder, FIELDS)
    assert rule == {
        "all": [
            {"not": {"suppressed": "any"}},
            {"any": [{"list": "a"}, {"not": {"list": "b"}}]},
        ]
    }
    rows = {row.id: row for row in builder.rows()}
    assert rows[1].pointer == "rule/all/0/not"
    assert rows[4].pointer == "rule/all/1/any/1/not"
    assert builder.row_for("rule/all/1/any/1/not/list") is rows[4]
    assert builder.row_for("rule/all/1/any/0/list") is rows[3]
    assert builder.row_for("rule/all/9") is None
    # the rule comes back into the same rows
    again = sb.from_rule(rule)
    assert again is not None and sb.to_rule(again, FIELDS) == rule
    assert sb.from_rule({"all": [{"all": [{"any": [{"list": "a"}]}]}]}) is None  # too deep
    assert sb.from_rule({"event": {"kind": ["a", "b"]}}) is None  # several kinds


def test_buttons_add_and_remove_rows_and_groups():
    builder = sb.read_form({"row": "1", "r1_kind": "suppressed"})
    sb.apply_action(builder, "add")
    sb.apply_action(builder, "add_group")
    assert [type(i).__name__ for i in builder.items] == ["Row", "Row", "Group"]
    group = builder.items[2]
    assert isinstance(group, sb.Group) and group.match == "any" and len(group.rows) == 2
    sb.apply_action(builder, f"add_to:{group.id}")
    assert len(group.rows) == 3
    sb.apply_action(builder, "remove:1")
    sb.apply_action(builder, f"remove:{group.id}")
    assert [type(i).__name__ for i in builder.items] == ["Row"]


def test_the_rule_in_words():
    words = sb.describe(five_rule("L1"), {"L1": "Outreach"})
    assert words == (
        "(conditions contains any of e11 and birth_date age is between 50 and 75 and "
        "in the list “Outreach” and email marketing consent is granted and "
        "portal_login at least 1 time in the last 90 days)"
    )
    assert sb.describe({"not": {"suppressed": "any"}}, {}) == "not suppressed on any channel"


# --- the builder over HTTP -----------------------------------------------------------------


def test_the_builder_counts_the_five_conditions(tenant, make_person, sign_in, runtime):
    data = make_patients(runtime, tenant)
    b = sign_in(make_person(tenant, "marketer"))
    page = b.get("/segments/new")
    assert page.status_code == 200 and 'hx-post="/segments/builder"' in page.text
    assert 'id="save-segment"' in page.text
    answer = b.post("/segments/builder", five_conditions(data["list_id"]), htmx=True)
    assert answer.status_code == 200 and answer.text.lstrip().startswith('<div id="builder"')
    assert count_in(answer.text) == 1
    shown = json.loads(
        html.unescape(re.search(r'id="rule-json">(.*?)</code>', answer.text, re.S).group(1))
    )
    assert shown == five_rule(data["list_id"])
    # without the event, the second patient matches too; negated, the other three
    fewer = five_conditions(data["list_id"])
    fewer["row"] = ["1", "2", "3", "4"]
    assert count_in(b.post("/segments/builder", fewer, htmx=True).text) == 2
    negated = {**fewer, "row": ["1"], "r1_not": "1"}
    assert count_in(b.post("/segments/builder", negated, htmx=True).text) == 1


def test_faults_are_shown_at_the_row_they_point_into(tenant, make_person, sign_in, runtime):
    data = make_patients(runtime, tenant)
    b = sign_in(make_person(tenant, "marketer"))
    b.get("/segments/new")
    form = five_conditions(data["list_id"])
    form["r2_v1"] = "abc"
    form["r3_list"] = "not-a-list"
    answer = b.post("/segments/builder", form, htmx=True)
    text = html.unescape(answer.text)
    assert count_in(answer.text) is None
    row2 = text[text.index('id="row-2"') : text.index('id="row-3"')]
    assert 'id="row-2-error"' in row2 and "Must be a whole number from 0 to 130" in row2
    row3 = text[text.index('id="row-3"') : text.index('id="row-4"')]
    assert "No such list" in row3
    assert 'id="row-1-error"' not in text and 'id="row-5-error"' not in text
    # an empty builder says what to do
    empty = b.post("/segments/builder", {"mode": "visual", "match": "all"}, htmx=True)
    assert "Add a condition" in empty.text


def test_buttons_and_the_json_tab_round_trip(tenant, make_person, sign_in, runtime):
    data = make_patients(runtime, tenant)
    b = sign_in(make_person(tenant, "marketer"))
    b.get("/segments/new")
    form = five_conditions(data["list_id"])
    added = b.post("/segments/builder", {**form, "action": "add_group"}, htmx=True)
    assert 'id="group-6"' in added.text and 'id="row-7"' in added.text
    as_json = b.post("/segments/builder", {**form, "action": "mode:json"}, htmx=True)
    text = html.unescape(as_json.text)
    assert 'name="rule"' in text and 'id="row-1"' not in text
    rule = json.loads(re.search(r"<textarea[^>]*>(.*?)</textarea>", text, re.S).group(1))
    assert rule == five_rule(data["list_id"])
    rule["all"].append({"not": {"suppressed": "any"}})
    back = b.post(
        "/segments/builder",
        {"mode": "json", "rule": json.dumps(rule), "action": "mode:visual"},
        htmx=True,
    )
    assert 'id="row-6"' in back.text and 'id="r6-not" name="r6_not" value="1" checked' in back.text
    assert count_in(back.text) == 1
    deep = {"all": [{"any": [{"all": [{"suppressed": "any"}]}]}]}
    stays = b.post(
        "/segments/builder",
        {"mode": "json", "rule": json.dumps(deep), "action": "mode:visual"},
        htmx=True,
    )
    assert "does not fit the visual builder" in stays.text and 'name="rule"' in stays.text
    broken = b.post("/segments/builder", {"mode": "json", "rule": '{"all": ['}, htmx=True)
    assert "Not valid JSON" in broken.text


# --- saving, the detail page -----------------------------------------------------------------


def _save(b, data, name="Diabetics 50-75") -> str:
    b.get("/segments/new")
    saved = b.post("/segments", {**five_conditions(data["list_id"]), "name": name})
    assert saved.status_code == 303, saved.text
    location = saved.headers["location"]
    assert location.endswith("?done=created")
    return location.split("?")[0]


def test_save_open_and_see_members_without_phi(tenant, make_person, sign_in, runtime, audit_trail):
    data = make_patients(runtime, tenant)
    b = sign_in(make_person(tenant, "marketer"))
    path = _save(b, data)
    page = b.get(path + "?done=created")
    assert page.status_code == 200 and "Segment saved." in page.text
    assert "in the list “Outreach”" in page.text and count_in(page.text) == 1
    assert str(data["ids"][0]) in page.text and str(data["ids"][1]) not in page.text
    for name in data["names"]:
        assert name not in page.text
    assert audit_trail(tenant, "contact.view_phi") == []
    listed = b.get("/segments")
    assert f'href="{path}"' in listed.text
    # names on request, audited with the ids
    shown = b.post(path + "/members", htmx=True)
    assert shown.status_code == 200 and data["names"][0] in shown.text
    [viewed] = audit_trail(tenant, "contact.view_phi")
    assert viewed.details["via"] == "segment" and viewed.details["contact_ids"] == [
        str(data["ids"][0])
    ]
    assert data["names"][0] not in json.dumps(viewed.details)
    # a name taken, or missing, is refused with the builder kept
    again = b.post("/segments", {**five_conditions(data["list_id"]), "name": "Diabetics 50-75"})
    assert again.status_code == 409 and 'id="segment-name-error"' in again.text
    assert 'id="row-5"' in again.text
    nameless = b.post("/segments", {**five_conditions(data["list_id"]), "name": " "})
    assert nameless.status_code == 422 and 'id="segment-name-error"' in nameless.text
    bad = {**five_conditions(data["list_id"]), "name": "Bad", "r2_v2": "200"}
    refused = b.post("/segments", bad)
    assert refused.status_code == 422 and 'id="row-2-error"' in refused.text
    assert 'value="Bad"' in refused.text


def test_export_is_audited_and_phi_needs_phi_export(
    tenant, make_person, sign_in, runtime, audit_trail
):
    data = make_patients(runtime, tenant)
    marketer = sign_in(make_person(tenant, "marketer"))
    path = _save(marketer, data)
    page = marketer.get(path)
    assert 'value="email"' not in page.text  # no PHI column offered without phi:export
    plain = marketer.post(path + "/export", {"columns": ["id", "journey_stage", "custom.zip"]})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(plain.text)))
    assert rows == [["id", "journey_stage", "custom.zip"], [str(data["ids"][0]), "new", "78701"]]
    [exported] = audit_trail(tenant, "segment.export")
    assert exported.details == {
        "rows": 1,
        "columns": ["id", "journey_stage", "custom.zip"],
        "phi_columns": [],
    }
    refused = marketer.post(path + "/export", {"columns": ["id", "email"]})
    assert refused.status_code == 403
    assert len(audit_trail(tenant, "segment.export")) == 1
    owner = sign_in(make_person(tenant, "owner"))
    assert 'value="email"' in owner.get(path).text
    with_phi = owner.post(path + "/export", {"columns": ["id", "email"]})
    assert with_phi.status_code == 200
    assert data["names"][0].lower() in with_phi.text
    last = audit_trail(tenant, "segment.export")[-1]
    assert last.details["phi_columns"] == ["email"]
    assert data["names"][0].lower() not in json.dumps(last.details)
    unknown = owner.post(path + "/export", {"columns": ["id", "nope"]})
    assert unknown.status_code == 422 and "Not a column" in unknown.text


def test_snapshots_edit_and_delete(tenant, make_person, sign_in, runtime, audit_trail):
    data = make_patients(runtime, tenant)
    b = sign_in(make_person(tenant, "marketer"))
    path = _save(b, data)
    b.get(path)
    blank = b.post(path + "/snapshots", {"reason": ""})
    assert blank.status_code == 422 and 'id="snapshot-reason-error"' in blank.text
    taken = b.post(path + "/snapshots", {"reason": "November newsletter"})
    assert taken.status_code == 303
    page = b.follow(taken)
    assert "Snapshot taken." in page.text and "November newsletter" in page.text
    snapshots = page.text[page.text.index('id="snapshots"') :]
    assert '<td class="numeric">1</td>' in snapshots
    assert len(audit_trail(tenant, "segment.snapshot")) == 1
    # edit: the builder comes back filled in; dropping the event widens it
    edit = b.get(path + "/edit")
    assert edit.status_code == 200 and 'id="row-5"' in edit.text
    assert 'value="Diabetics 50-75"' in edit.text
    changed = five_conditions(data["list_id"])
    changed["row"] = ["1", "2", "3", "4"]
    updated = b.post(path, {**changed, "name": "Diabetics, any activity"})
    assert updated.status_code == 303 and updated.headers["location"] == path + "?done=updated"
    assert count_in(b.follow(updated).text) == 2
    # delete, with a confirmation first
    confirm = b.get(path + "/delete")
    assert confirm.status_code == 200 and "Delete segment" in confirm.text
    deleted = b.post(path + "/delete")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/segments?done=deleted"
    assert b.get(path).status_code == 404
    with runtime.bound_session(tenant[1]) as session:
        assert segment_service.list_segments(session, tenant[0].id, after=None, limit=5) == []


def test_an_analyst_counts_and_exports_plain_columns_but_saves_nothing(
    tenant, make_person, sign_in, runtime
):
    data = make_patients(runtime, tenant)
    path = _save(sign_in(make_person(tenant, "marketer")), data)
    b = sign_in(make_person(tenant, "analyst"))
    new = b.get("/segments/new")
    assert new.status_code == 200 and 'id="save-segment"' not in new.text
    assert 'id="segment-name"' not in new.text
    assert (
        count_in(b.post("/segments/builder", five_conditions(data["list_id"]), htmx=True).text) == 1
    )
    refused = b.post("/segments", {**five_conditions(data["list_id"]), "name": "X"})
    assert refused.status_code == 403
    page = b.get(path)
    assert (
        page.status_code == 200 and "Edit" not in page.text and 'id="show-names"' not in page.text
    )
    assert 'id="take-snapshot"' not in page.text
    assert b.post(path + "/members").status_code == 403
    assert b.post(path + "/snapshots", {"reason": "x"}).status_code == 403
    assert b.get(path + "/edit").status_code == 403
    assert b.post(path + "/export", {"columns": ["id"]}).status_code == 200
    assert b.post(path + "/export", {"columns": ["id", "first_name"]}).status_code == 403


def test_the_json_preview_still_counts(tenant, make_person, sign_in, runtime):
    data = make_patients(runtime, tenant)
    b = sign_in(make_person(tenant, "analyst"))
    b.get("/segments")
    counted = b.post(
        "/segments/preview", {"rule": json.dumps(five_rule(data["list_id"]))}, htmx=True
    )
    assert count_in(counted.text) == 1
    broken = b.post("/segments/preview", {"rule": '{"all": [\n  {"list": 12'}, htmx=True)
    assert "not valid JSON" in broken.text and "line 2" in broken.text


def test_without_javascript_the_buttons_return_the_whole_page(
    tenant, make_person, sign_in, runtime
):
    data = make_patients(runtime, tenant)
    b = sign_in(make_person(tenant, "marketer"))
    path = _save(b, data)
    edit = b.get(path + "/edit")
    assert f'name="target" value="{path}"' in edit.text
    form = {**five_conditions(data["list_id"]), "name": "Kept", "target": path, "action": "add"}
    page = b.post("/segments/builder", form)
    assert page.status_code == 200 and "<html" in page.text and 'id="row-6"' in page.text
    assert f'action="{path}"' in page.text and 'value="Kept"' in page.text
    forged = b.post("/segments/builder", {**form, "target": "https://elsewhere.example/"})
    assert 'action="/segments"' in forged.text
