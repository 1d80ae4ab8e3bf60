"""Merging duplicate contacts: values, identifiers, lists, events, consent, tokens,
tombstones, the API and its errors (docs/contacts-data.md, "Merging duplicates")."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent.models import ConsentCurrent, ConsentRecord
from carepost.contacts import custom_fields, events, lists, merge, stages, sync, upserts
from carepost.contacts import service as contacts
from carepost.contacts.activity_models import ContactEvent, ListMembership
from carepost.contacts.models import ContactIdentifier, ContactMerge, ContactToken
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from tests.conftest import phi_value

V1 = "/api/v1"
WRITER = ["contacts:read", "contacts:write", "phi:read"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def email() -> str:
    return f"{phi_value('mail').lower()}@example.org"


def define_fields(runtime, tenant) -> None:
    with runtime.bound_session(tenant[1]) as session:
        custom_fields.create_field(
            session,
            tenant[0].id,
            key="conditions",
            label="Conditions",
            type="multi_choice",
            choices=["e11", "i10", "j45"],
            actor=SYSTEM,
        )
        custom_fields.create_field(
            session,
            tenant[0].id,
            key="a1c",
            label="A1c",
            type="number",
            granularity="0.1",
            actor=SYSTEM,
        )
        custom_fields.create_field(
            session, tenant[0].id, key="zip", label="ZIP", type="string", actor=SYSTEM
        )


def upsert(runtime, tenant, item: dict) -> uuid.UUID:
    keys = tenant[1]
    match = "email" if "email" in item else "external_id"
    with runtime.bound_session(keys) as session:
        [result] = upserts.upsert_contacts(session, keys, [item], match=match, actor=SYSTEM)
    assert result.status == "created", result.errors
    assert result.id is not None
    return result.id


def run_merge(runtime, tenant, survivor, duplicates, **kwargs):
    with runtime.bound_session(tenant[1]) as session:
        return merge.merge_contacts(
            session, tenant[1], survivor, duplicates, actor=SYSTEM, **kwargs
        )


def add_events(runtime, tenant, contact_id, count, kind="portal_login"):
    items = [
        {
            "contact_id": str(contact_id),
            "kind": kind,
            "occurred_at": (T0 + timedelta(minutes=n)).isoformat(),
        }
        for n in range(count)
    ]
    with runtime.bound_session(tenant[1]) as session:
        results = events.record_events(session, tenant[1], items, actor=SYSTEM)
    assert not any(r.errors for r in results)


def record_consent(runtime, tenant, contact_id, status, captured_at, purpose="marketing"):
    with runtime.bound_session(tenant[1]) as session:
        consent.record_consent(
            session,
            tenant[0].id,
            contact_id=contact_id,
            change=consent.ConsentChange("email", purpose, status, "api", captured_at=captured_at),
            actor=SYSTEM,
        )


def current_consent(runtime, tenant, contact_id):
    with runtime.database.session() as session:
        rows = session.execute(
            select(ConsentCurrent.purpose, ConsentCurrent.status, ConsentCurrent.captured_at)
            .where(ConsentCurrent.contact_id == contact_id)
            .order_by(ConsentCurrent.purpose)
        ).all()
    return {purpose: (status, at) for purpose, status, at in rows}


def tokens_of(runtime, contact_id):
    with runtime.database.session() as session:
        return sorted(
            session.execute(
                select(ContactToken.field_key, ContactToken.token).where(
                    ContactToken.contact_id == contact_id
                )
            ).all()
        )


# --- values ---------------------------------------------------------------------------


def test_survivor_keeps_its_values_and_fills_blanks_from_duplicates_in_order(runtime, tenant):
    define_fields(runtime, tenant)
    first_name = phi_value("first")
    survivor = upsert(
        runtime,
        tenant,
        {"email": email(), "first_name": first_name, "custom": {"conditions": ["e11"]}},
    )
    phone_dup = upsert(
        runtime,
        tenant,
        {
            "email": email(),
            "first_name": phi_value("other-first"),
            "phone": "+14155550123",
            "birth_date": "1960-05-04",
            "language": "es",
            "custom": {"conditions": ["i10"], "a1c": 7.2},
        },
    )
    later_dup = upsert(
        runtime,
        tenant,
        {"email": email(), "phone": "+14155550199", "custom": {"a1c": 9.9, "zip": "78701"}},
    )
    outcome = run_merge(runtime, tenant, survivor, [phone_dup, later_dup])
    assert outcome.merged_ids == [phone_dup, later_dup]
    assert outcome.filled == [
        "birth_date",
        "custom/a1c",
        "custom/zip",
        "language",
        "phone",
    ]
    with runtime.bound_session(tenant[1]) as session:
        merged = contacts.get_contact(session, tenant[0].id, survivor)
        assert merged.first_name == first_name
        assert merged.phone == "+14155550123"
        assert merged.birth_date == "1960-05-04"
        assert merged.language == "es"
        # The survivor's conditions stay; the first duplicate's A1c wins over the second's.
        assert merged.custom == {"conditions": ["e11"], "a1c": 7.2, "zip": "78701"}
        assert merged.updated_at is not None
        # The phone's blind index moved with it: look-ups find the survivor.
        found = contacts.find_contacts(session, tenant[1], field="phone", value="+14155550123")
        assert [c.id for c in found] == [survivor]


def test_tokens_are_recomputed_from_the_merged_values(runtime, tenant):
    define_fields(runtime, tenant)
    survivor = upsert(runtime, tenant, {"email": email(), "custom": {"conditions": ["e11"]}})
    duplicate = upsert(
        runtime,
        tenant,
        {"email": email(), "birth_date": "1950-01-02", "custom": {"a1c": 6.1, "zip": "10001"}},
    )
    run_merge(runtime, tenant, survivor, [duplicate])
    with runtime.bound_session(tenant[1]) as session:
        schema = custom_fields.load_schema(session, tenant[0].id)
        row = contacts.get_contact(session, tenant[0].id, survivor)
        expected = sorted(set(sync.contact_tokens(tenant[1], schema, row.custom, row.birth_date)))
    assert tokens_of(runtime, survivor) == expected
    assert {key for key, _ in expected} == {"conditions", "a1c", "zip", "birth_date"}
    assert tokens_of(runtime, duplicate) == []


def test_stage_is_the_survivors_and_the_history_of_both_is_kept(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email(), "journey_stage": "active"})
    duplicate = upsert(runtime, tenant, {"email": email(), "journey_stage": "at-risk"})
    run_merge(runtime, tenant, survivor, [duplicate])
    with runtime.bound_session(tenant[1]) as session:
        assert contacts.get_contact(session, tenant[0].id, survivor).journey_stage == "active"
        history = stages.stage_history(session, tenant[0].id, survivor)
    assert sorted(h.stage for h in history) == ["active", "at-risk"]


# --- identifiers ----------------------------------------------------------------------


def test_identifiers_move_to_a_survivor_without_one_and_unique_values_do_not_clash(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email(), "external_ids": {"crm": "CRM-1"}})
    dup_email = email()
    duplicate = upsert(
        runtime,
        tenant,
        {"email": dup_email, "external_id": "EXT-9", "external_ids": {"mrn": "MRN-7"}},
    )
    # The survivor has an email, so the duplicate's is dropped; external id and MRN move.
    outcome = run_merge(runtime, tenant, survivor, [duplicate])
    assert "external_id" in outcome.filled and "external_ids/mrn" in outcome.filled
    with runtime.bound_session(tenant[1]) as session:
        ids = sync.identifiers_of(session, tenant[0].id, [survivor])
        assert ids == {survivor: {"crm": "CRM-1", "mrn": "MRN-7"}}
        found = contacts.find_contacts(session, tenant[1], field="external_id", value="EXT-9")
        assert [c.id for c in found] == [survivor]
        assert contacts.find_contacts(session, tenant[1], field="email", value=dup_email) == []
    # An upsert by the moved MRN now updates the survivor instead of creating anew.
    with runtime.bound_session(tenant[1]) as session:
        [again] = upserts.upsert_contacts(
            session,
            tenant[1],
            [{"external_ids": {"mrn": "MRN-7"}, "last_name": phi_value("last")}],
            match="mrn",
            actor=SYSTEM,
        )
    assert (again.status, again.id) == ("updated", survivor)


def test_an_email_only_on_the_duplicate_moves_to_the_survivor(runtime, tenant):
    survivor = upsert(runtime, tenant, {"external_id": "EXT-1"})
    address = email()
    duplicate = upsert(runtime, tenant, {"email": address})
    run_merge(runtime, tenant, survivor, [duplicate])
    with runtime.bound_session(tenant[1]) as session:
        found = contacts.find_contacts(session, tenant[1], field="email", value=address)
    assert [c.id for c in found] == [survivor]


@pytest.mark.parametrize(
    ("survivor_item", "duplicate_item", "label"),
    [
        ({"external_ids": {"mrn": "MRN-1"}}, {"external_ids": {"mrn": "MRN-2"}}, "mrn"),
        ({"external_id": "EXT-1"}, {"external_id": "EXT-2"}, "external id"),
    ],
)
def test_conflicting_identifiers_refuse_the_merge_and_change_nothing(
    runtime, tenant, survivor_item, duplicate_item, label
):
    survivor = upsert(runtime, tenant, {"email": email(), **survivor_item})
    other = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email(), **duplicate_item})
    add_events(runtime, tenant, duplicate, 2)
    with pytest.raises(Conflict) as refused:
        run_merge(runtime, tenant, survivor, [other, duplicate])
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("#/body/duplicate_ids/1", f"holds another {label}")
    ]
    with runtime.bound_session(tenant[1]) as session:
        for contact_id in (survivor, other, duplicate):
            contacts.get_contact(session, tenant[0].id, contact_id)
        moved = session.scalar(
            select(func.count())
            .select_from(ContactEvent)
            .where(ContactEvent.contact_id == survivor)
        )
    assert moved == 0


def test_two_duplicates_with_different_mrns_conflict_with_each_other(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email()})
    first = upsert(runtime, tenant, {"email": email(), "external_ids": {"mrn": "A"}})
    second = upsert(runtime, tenant, {"email": email(), "external_ids": {"mrn": "B"}})
    with pytest.raises(Conflict) as refused:
        run_merge(runtime, tenant, survivor, [first, second])
    assert refused.value.errors[0].field == "#/body/duplicate_ids/1"


# --- lists, events, consent -----------------------------------------------------------


def test_list_stints_merge_into_one_current_and_keep_history(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email()})
    tenant_id = tenant[0].id
    with runtime.bound_session(tenant[1]) as session:
        both = lists.create_list(session, tenant_id, name="both", description="", actor=SYSTEM)
        only_dup = lists.create_list(session, tenant_id, name="dup", description="", actor=SYSTEM)
        left = lists.create_list(session, tenant_id, name="left", description="", actor=SYSTEM)
        # The duplicate joined "both" first: its stint is the earlier, kept one.
        lists.change_members(session, tenant_id, both.id, add=[duplicate], remove=[], actor=SYSTEM)
        lists.change_members(session, tenant_id, left.id, add=[duplicate], remove=[], actor=SYSTEM)
        lists.change_members(session, tenant_id, left.id, add=[], remove=[duplicate], actor=SYSTEM)
        lists.change_members(
            session, tenant_id, only_dup.id, add=[duplicate], remove=[], actor=SYSTEM
        )
        session.flush()
        first_join = session.scalar(
            select(ListMembership.joined_at).where(
                ListMembership.list_id == both.id, ListMembership.contact_id == duplicate
            )
        )
    with runtime.bound_session(tenant[1]) as session:
        lists.change_members(session, tenant_id, both.id, add=[survivor], remove=[], actor=SYSTEM)
    outcome = run_merge(runtime, tenant, survivor, [duplicate])
    assert outcome.list_stints == 3  # "both" lost the later stint; the others moved
    with runtime.database.session() as session:
        stints = session.execute(
            select(ListMembership.list_id, ListMembership.joined_at, ListMembership.left_at)
            .where(ListMembership.contact_id.in_([survivor, duplicate]))
            .order_by(ListMembership.id)
        ).all()
    by_list = {}
    for list_id, joined, left_at in stints:
        by_list.setdefault(list_id, []).append((joined, left_at))
    assert by_list[both.id] == [(first_join, None)]
    assert [left_at is None for _, left_at in by_list[left.id]] == [False]
    assert [left_at is None for _, left_at in by_list[only_dup.id]] == [True]


def test_events_are_repointed_in_one_statement_whatever_their_number(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email()})
    small = upsert(runtime, tenant, {"email": email()})
    add_events(runtime, tenant, small, 3)
    big = [upsert(runtime, tenant, {"email": email()}) for _ in range(3)]
    for contact_id in big:
        add_events(runtime, tenant, contact_id, 400)

    def statements_of(duplicates):
        seen: list[str] = []

        def remember(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)

        engine = runtime.database.engine
        event.listen(engine, "before_cursor_execute", remember)
        try:
            outcome = run_merge(runtime, tenant, survivor, duplicates)
        finally:
            event.remove(engine, "before_cursor_execute", remember)
        return outcome, seen

    one, few_statements = statements_of([small])
    many, many_statements = statements_of(big)
    assert (one.events, many.events) == (3, 1200)
    assert len(many_statements) == len(few_statements) <= 40, many_statements
    event_updates = [s for s in many_statements if s.startswith("UPDATE contact_events")]
    assert len(event_updates) == 1
    with runtime.database.session() as session:
        count = session.scalar(
            select(func.count())
            .select_from(ContactEvent)
            .where(ContactEvent.contact_id == survivor)
        )
    assert count == 1203


def test_consent_current_is_the_latest_record_of_both_contacts(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email()})
    record_consent(runtime, tenant, survivor, "granted", T0)
    record_consent(runtime, tenant, duplicate, "granted", T0 + timedelta(days=3), "research")
    record_consent(runtime, tenant, duplicate, "revoked", T0 + timedelta(days=1), "research")
    outcome = run_merge(runtime, tenant, survivor, [duplicate])
    assert outcome.consent_records == 2
    current = current_consent(runtime, tenant, survivor)
    assert current == {
        "marketing": ("granted", T0),
        "research": ("granted", T0 + timedelta(days=3)),
    }
    with runtime.database.session() as session:
        history = session.scalar(
            select(func.count())
            .select_from(ConsentRecord)
            .where(ConsentRecord.contact_id == survivor)
        )
    assert history == 3


@pytest.mark.parametrize("revoked_on", ["survivor", "duplicate"])
def test_an_opt_out_newer_than_the_other_grant_is_never_lost(runtime, tenant, revoked_on):
    survivor = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email()})
    revoker, granter = (survivor, duplicate) if revoked_on == "survivor" else (duplicate, survivor)
    record_consent(runtime, tenant, revoker, "granted", T0)
    record_consent(runtime, tenant, revoker, "revoked", T0 + timedelta(days=2))
    # The other record's grant is older than the revocation, but newer than the first grant.
    record_consent(runtime, tenant, granter, "granted", T0 + timedelta(days=1))
    run_merge(runtime, tenant, survivor, [duplicate])
    assert current_consent(runtime, tenant, survivor) == {
        "marketing": ("revoked", T0 + timedelta(days=2))
    }


def test_a_revocation_at_the_same_moment_as_a_grant_wins(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email()})
    record_consent(runtime, tenant, duplicate, "revoked", T0)
    record_consent(runtime, tenant, survivor, "granted", T0)
    run_merge(runtime, tenant, survivor, [duplicate])
    assert current_consent(runtime, tenant, survivor) == {"marketing": ("revoked", T0)}


# --- tombstones and bad input ---------------------------------------------------------


def test_a_merged_id_points_to_the_survivor_and_follows_later_merges(runtime, tenant):
    first = upsert(runtime, tenant, {"email": email()})
    second = upsert(runtime, tenant, {"email": email()})
    third = upsert(runtime, tenant, {"email": email()})
    run_merge(runtime, tenant, second, [first])
    run_merge(runtime, tenant, third, [second])
    with runtime.bound_session(tenant[1]) as session:
        for gone in (first, second):
            with pytest.raises(merge.ContactMerged) as merged:
                contacts.get_contact(session, tenant[0].id, gone)
            assert merged.value.merged_into == third
        rows = session.execute(select(ContactMerge.merged_id, ContactMerge.survivor_id)).all()
    assert {(m, s) for m, s in rows if m in (first, second)} == {(first, third), (second, third)}
    # Deleting the survivor ends the trail: the ids are then simply unknown.
    with runtime.bound_session(tenant[1]) as session:
        contacts.delete_contact(session, tenant_id=tenant[0].id, contact_id=third, actor=SYSTEM)
    with runtime.bound_session(tenant[1]) as session, pytest.raises(NotFound) as unknown:
        contacts.get_contact(session, tenant[0].id, first)
    assert not isinstance(unknown.value, merge.ContactMerged)


def test_self_merge_repeats_and_unknown_ids_are_refused_with_pointers(runtime, tenant):
    survivor = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email()})
    with pytest.raises(ValidationFailed) as invalid:
        run_merge(runtime, tenant, survivor, [duplicate, survivor, duplicate])
    assert [(e.field, e.message) for e in invalid.value.errors] == [
        ("#/body/duplicate_ids/1", "a contact cannot be merged into itself"),
        ("#/body/duplicate_ids/2", "repeats item 0: name each once"),
    ]
    with pytest.raises(NotFound) as missing:
        run_merge(runtime, tenant, survivor, [duplicate, uuid.uuid4()])
    assert [e.field for e in missing.value.errors] == ["#/body/duplicate_ids/1"]
    with pytest.raises(ValidationFailed):
        run_merge(runtime, tenant, survivor, [])
    with runtime.bound_session(tenant[1]) as session:
        contacts.get_contact(session, tenant[0].id, duplicate)


# --- API ------------------------------------------------------------------------------


def test_merge_over_the_api_answers_counts_and_audits_ids_only(
    client, runtime, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant, WRITER)
    last_name = phi_value("last")
    survivor = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email(), "last_name": last_name})
    add_events(runtime, tenant, duplicate, 2)
    answer = client.post(
        f"{V1}/contacts/{survivor}/merge",
        json={"duplicate_ids": [str(duplicate)]},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "survivor_id": str(survivor),
        "merged_ids": [str(duplicate)],
        "filled": ["last_name"],
        "events": 2,
        "consent_records": 0,
        "list_stints": 0,
    }
    [entry] = audit_trail(tenant, "contact.merge")
    assert entry.object_id == str(survivor)
    assert entry.details["merged_ids"] == [str(duplicate)]
    assert last_name not in str(entry.details)
    shown = client.get(f"{V1}/contacts/{survivor}", headers=headers).json()
    assert shown["last_name"] == last_name

    gone = client.get(f"{V1}/contacts/{duplicate}", headers=headers)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
    problem = gone.json()
    assert problem["type"].endswith("/contact-merged")
    assert problem["merged_into"] == str(survivor)
    assert str(survivor) in problem["detail"]
    # Writes to the merged id are refused the same way (never silently redirected).
    patched = client.patch(f"{V1}/contacts/{duplicate}", json={"first_name": "X"}, headers=headers)
    assert patched.status_code == 404 and patched.json()["merged_into"] == str(survivor)


def test_api_refuses_bad_merges_with_pointers(client, runtime, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    survivor = upsert(runtime, tenant, {"email": email()})
    duplicate = upsert(runtime, tenant, {"email": email()})
    path = f"{V1}/contacts/{survivor}/merge"
    repeated = client.post(
        path, json={"duplicate_ids": [str(duplicate), str(duplicate)]}, headers=headers
    )
    assert repeated.status_code == 422
    assert repeated.json()["errors"] == [
        {"pointer": "#/body/duplicate_ids/1", "detail": "repeats item 0: name each once"}
    ]
    itself = client.post(path, json={"duplicate_ids": [str(survivor)]}, headers=headers)
    assert itself.status_code == 422
    assert itself.json()["errors"][0]["pointer"] == "#/body/duplicate_ids/0"
    too_many = client.post(
        path, json={"duplicate_ids": [str(uuid.uuid4()) for _ in range(101)]}, headers=headers
    )
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["pointer"] == "#/body/duplicate_ids"
    empty = client.post(path, json={"duplicate_ids": []}, headers=headers)
    assert empty.status_code == 422
    reader = make_api_key(tenant, ["contacts:read", "phi:read"])
    denied = client.post(path, json={"duplicate_ids": [str(duplicate)]}, headers=reader)
    assert denied.status_code == 403


def test_another_tenants_contacts_cannot_be_merged_either_way(
    client, runtime, make_tenant, make_api_key
):
    mine, theirs = make_tenant(), make_tenant()
    headers = make_api_key(mine, WRITER)
    my_contact = upsert(runtime, mine, {"email": email()})
    their_contact = upsert(runtime, theirs, {"email": email()})
    into_theirs = client.post(
        f"{V1}/contacts/{their_contact}/merge",
        json={"duplicate_ids": [str(my_contact)]},
        headers=headers,
    )
    assert into_theirs.status_code == 404
    take_theirs = client.post(
        f"{V1}/contacts/{my_contact}/merge",
        json={"duplicate_ids": [str(their_contact)]},
        headers=headers,
    )
    assert take_theirs.status_code == 404
    assert take_theirs.json()["errors"] == [
        {"pointer": "#/body/duplicate_ids/0", "detail": "no such contact"}
    ]
    with runtime.bound_session(theirs[1]) as session:
        contacts.get_contact(session, theirs[0].id, their_contact)
    with runtime.bound_session(mine[1]) as session:
        contacts.get_contact(session, mine[0].id, my_contact)
    with runtime.database.session() as session:
        identifiers = session.scalar(
            select(func.count())
            .select_from(ContactIdentifier)
            .where(ContactIdentifier.contact_id == their_contact)
        )
    assert identifiers == 0
