"""The audit trail browser: filters, cursor paging, tenant scoping, export links."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from sqlalchemy import update

from carepost.audit import service as audit
from carepost.audit.models import AuditEvent
from carepost.core.database import utcnow
from carepost.web.audit_source import AuditFilter, find_audit_events


def record(runtime, person, action, n=1, **fields):
    with runtime.database.session() as session:
        for _ in range(n):
            audit.record(
                session,
                tenant_id=person.tenant.id,
                actor=audit.Actor("user", str(person.id), person.email),
                action=action,
                **fields,
            )


def actions_on(page) -> list[str]:
    body = page.text.split('<tbody id="event-rows">', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<code>([a-z_.]+)</code>", body)


def test_browse_and_filter_by_action_user_object_and_outcome(
    owner, make_person, tenant, sign_in, runtime
):
    auditor = make_person(tenant, "auditor")
    record(runtime, owner, "contact.view", object_type="contact", object_id="c-1")
    record(runtime, auditor, "contact.export", object_type="contact", object_id="c-2")
    record(runtime, owner, "auth.sign_in", outcome="failure")
    b = sign_in(auditor)
    everything = b.get("/audit")
    assert everything.status_code == 200
    assert {"contact.view", "contact.export", "auth.sign_in", "tenant.create"} <= set(
        actions_on(everything)
    )
    assert actions_on(b.get("/audit?action=contact.view")) == ["contact.view"]
    assert set(actions_on(b.get("/audit?action=contact."))) == {"contact.view", "contact.export"}
    by_user = actions_on(b.get(f"/audit?actor_id={auditor.id}"))
    assert by_user == ["contact.export"]
    assert actions_on(b.get("/audit?object_type=contact&object_id=c-1")) == ["contact.view"]
    assert actions_on(b.get("/audit?action=auth.sign_in&outcome=failure")) == ["auth.sign_in"]
    # Prefix matching treats % and _ literally.
    assert actions_on(b.get("/audit?action=%25.")) == []


def test_filter_by_time_window(owner, sign_in, runtime):
    record(runtime, owner, "old.event")
    with runtime.database.session() as session:
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.action == "old.event", AuditEvent.tenant_id == owner.tenant.id)
            .values(occurred_at=utcnow() - timedelta(days=3))
        )
    b = sign_in(owner)
    since = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    recent = actions_on(b.get(f"/audit?since={since}"))
    assert "old.event" not in recent and "tenant.create" in recent
    until = actions_on(b.get(f"/audit?until={since}"))
    assert until == ["old.event"]
    bad = b.get("/audit?since=yesterday")
    assert bad.status_code == 422
    assert 'id="audit-filter-since-error"' in bad.text


def test_cursor_paging_newest_first(owner, sign_in, runtime):
    record(runtime, owner, "page.event", n=60)
    b = sign_in(owner)
    first = b.get("/audit?action=page.event")
    assert len(actions_on(first)) == 50
    older = re.search(r'href="(/audit\?[^"]*before=[\w-]+)"', first.text).group(1)
    second = b.get(html.unescape(older))
    assert len(actions_on(second)) == 10
    assert "Older events" not in second.text and "Newest events" in second.text
    with runtime.database.session() as session:
        page_one = find_audit_events(session, owner.tenant.id, AuditFilter(action="page.event"))
        page_two = find_audit_events(
            session, owner.tenant.id, AuditFilter(action="page.event"), cursor=page_one.next_cursor
        )
    seqs = [e.seq for e in page_one.events + page_two.events]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 60
    assert page_two.next_cursor is None
    assert b.get("/audit?before=not-a-number").status_code == 422


def test_another_organizations_events_never_show(
    owner, other_tenant, make_person, sign_in, runtime
):
    stranger = make_person(other_tenant, "owner")
    record(runtime, stranger, "secret.stranger_event")
    b = sign_in(owner)
    assert "secret.stranger_event" not in b.get("/audit").text
    assert "secret.stranger_event" not in b.get(f"/audit?actor_id={stranger.id}").text


def test_export_links_need_audit_export(owner, make_person, tenant, sign_in):
    page = sign_in(owner).get("/audit?action=auth.")
    assert 'href="/api/v1/audit/export?format=csv&amp;action=auth."' in page.text
    assert 'href="/api/v1/audit/export?format=jsonl&amp;action=auth."' in page.text


def test_details_are_escaped(owner, sign_in, runtime):
    record(runtime, owner, "odd.event", reason="<b>bold</b>", details={"note": "<img src=x>"})
    page = sign_in(owner).get("/audit?action=odd.event")
    assert "<img src=x>" not in page.text and "&lt;img src=x&gt;" in page.text
    assert "<b>bold</b>" not in page.text


def test_export_links_carry_the_filter_to_the_api(owner, sign_in, runtime):
    record(runtime, owner, "export.event", n=2)
    b = sign_in(owner)
    since = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    shown = b.get(f"/audit?action=export.event&since={since}")
    for fmt in ("csv", "jsonl"):
        link = re.search(rf'href="(/api/v1/audit/export\?format={fmt}[^"]*)"', shown.text)
        assert link is not None
        exported = b.get(html.unescape(link.group(1)))
        assert exported.status_code == 200, exported.text
        assert exported.text.count("export.event") == 2
