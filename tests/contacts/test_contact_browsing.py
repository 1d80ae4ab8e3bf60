"""The service queries behind the console's contact pages, on both engines: the list
narrowed by stage and list, look-up by MRN, a contact's memberships and suppressions,
each within its own organization."""

from __future__ import annotations

import pytest

from carepost.audit.service import SYSTEM
from carepost.consent import suppression
from carepost.contacts import lists, service, upserts
from carepost.core.errors import ValidationFailed
from tests.canaries import phi_value


def _upsert(runtime, tenant, items):
    _row, keys = tenant
    with runtime.bound_session(keys) as session:
        results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
    return [r.id for r in results]


def _person(**extra):
    return {"email": f"{phi_value('mail').lower()}@example.org", **extra}


def test_list_contacts_narrows_by_stage_and_current_list_membership(runtime, tenant):
    active, overdue, left = _upsert(
        runtime,
        tenant,
        [_person(journey_stage="active"), _person(journey_stage="overdue"), _person()],
    )
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        vip = lists.create_list(session, tenant_row.id, name="VIP", description="", actor=SYSTEM)
        lists.change_members(
            session, tenant_row.id, vip.id, add=[active, left], remove=[], actor=SYSTEM
        )
        lists.change_members(session, tenant_row.id, vip.id, add=[], remove=[left], actor=SYSTEM)
        by_stage = service.list_contacts(session, tenant_row.id, journey_stage="overdue")
        in_list = service.list_contacts(session, tenant_row.id, list_id=vip.id, with_phi=False)
        both = service.list_contacts(
            session, tenant_row.id, list_id=vip.id, journey_stage="overdue"
        )
    assert [c.id for c in by_stage] == [overdue]
    assert [c.id for c in in_list] == [active]  # a member who left is not listed
    assert both == []


def test_another_organizations_list_selects_nobody(runtime, tenant, make_tenant):
    [mine] = _upsert(runtime, tenant, [_person()])
    other = make_tenant("Other")
    with runtime.bound_session(tenant[1]) as session:
        mine_list = lists.create_list(
            session, tenant[0].id, name="Mine", description="", actor=SYSTEM
        )
        lists.change_members(
            session, tenant[0].id, mine_list.id, add=[mine], remove=[], actor=SYSTEM
        )
    with runtime.bound_session(other[1]) as session:
        assert service.list_contacts(session, other[0].id, list_id=mine_list.id) == []


def test_find_contacts_by_mrn_is_exact_and_tenant_scoped(runtime, tenant, make_tenant):
    mrn = phi_value("mrn")
    [contact_id] = _upsert(runtime, tenant, [_person(external_ids={"mrn": mrn})])
    other = make_tenant("Other")
    _upsert(runtime, other, [_person(external_ids={"mrn": mrn})])
    with runtime.bound_session(tenant[1]) as session:
        found = service.find_contacts(session, tenant[1], field="mrn", value=f"  {mrn} ")
        assert [c.id for c in found] == [contact_id]
        assert service.find_contacts(session, tenant[1], field="mrn", value=mrn[:-1]) == []
        assert service.find_contacts(session, tenant[1], field="crm", value=mrn) == []
        with pytest.raises(ValidationFailed) as refused:
            service.find_contacts(session, tenant[1], field="mrn", value="  ")
        assert refused.value.errors[0].field == "mrn"


def test_memberships_of_lists_current_first_then_past(runtime, tenant):
    [contact_id] = _upsert(runtime, tenant, [_person()])
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        old = lists.create_list(session, tenant_row.id, name="Old", description="", actor=SYSTEM)
        new = lists.create_list(session, tenant_row.id, name="New", description="", actor=SYSTEM)
        for row in (old, new):
            lists.change_members(
                session, tenant_row.id, row.id, add=[contact_id], remove=[], actor=SYSTEM
            )
        lists.change_members(
            session, tenant_row.id, old.id, add=[], remove=[contact_id], actor=SYSTEM
        )
        found = lists.memberships_of(session, tenant_row.id, contact_id)
    assert [(m.list_name, m.current) for m in found] == [("New", True), ("Old", False)]


def test_suppressions_of_contact_match_by_blind_index_per_channel(runtime, tenant, make_tenant):
    email = f"{phi_value('mail').lower()}@example.org"
    [contact_id] = _upsert(runtime, tenant, [{"email": email, "phone": "+14155552671"}])
    other = make_tenant("Other")
    with runtime.bound_session(other[1]) as session:  # another organization's entry
        suppression.add_suppression(
            session, other[1], address=email, reason="complaint", source="api", actor=SYSTEM
        )
    with runtime.bound_session(tenant[1]) as session:
        assert suppression.suppressions_of_contact(session, tenant[0].id, contact_id) == []
        suppression.add_suppression(
            session,
            tenant[1],
            address=email.upper(),
            reason="unsubscribe",
            source="api",
            actor=SYSTEM,
        )
        suppression.add_suppression(
            session,
            tenant[1],
            address="+1 415 555 2671",
            reason="hard_bounce",
            source="api",
            actor=SYSTEM,
        )
        found = suppression.suppressions_of_contact(session, tenant[0].id, contact_id)
    assert [(s.channel, s.reason, s.scope) for s in found] == [
        ("email", "unsubscribe", "marketing"),
        ("sms", "hard_bounce", "all"),
    ]
