"""Event kinds' ids are kept per process once committed, never from a rollback."""

from __future__ import annotations

import uuid

from sqlalchemy import event, select

from carepost.contacts import events
from carepost.contacts.activity_models import EventKind


def _lookups(runtime):
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        if "event_kinds" in statement:
            seen.append(statement)

    event.listen(runtime.database.engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(runtime.database.engine, "before_cursor_execute", record)


def test_a_committed_kind_is_looked_up_once_and_a_rolled_back_one_again(runtime, tenant):
    tenant_id = tenant[1].tenant_id
    name, lost = f"kind_{uuid.uuid4().hex[:8]}", f"lost_{uuid.uuid4().hex[:8]}"
    with runtime.database.session() as session:
        first = events.kind_ids(session, tenant_id, {name})
    with runtime.database.session() as session:  # rolled back: its kind is gone
        events.kind_ids(session, tenant_id, {lost})
        session.rollback()

    seen, stop = _lookups(runtime)
    try:
        with runtime.database.session() as session:
            again = events.kind_ids(session, tenant_id, {name})
        assert again == first and seen == []  # from the process's memory
        with runtime.database.session() as session:
            made = events.kind_ids(session, tenant_id, {lost, name})
            stored = session.scalar(
                select(EventKind.id).where(EventKind.tenant_id == tenant_id, EventKind.key == lost)
            )
        assert seen and made == {name: first[name], lost: stored}
    finally:
        stop()


def test_a_kind_made_in_a_savepoint_is_kept_only_once_the_whole_transaction_commits(
    runtime, tenant
):
    """A savepoint's release is a commit to SQLAlchemy's events, not to the database:
    the transaction around it rolled back, so its kind must be looked up again."""
    tenant_id = tenant[1].tenant_id
    name = f"nested_{uuid.uuid4().hex[:8]}"
    with runtime.database.session() as session:
        with session.begin_nested():
            events.kind_ids(session, tenant_id, {name})
        session.rollback()
    assert (tenant_id, name) not in events._KIND_IDS

    with runtime.database.session() as session:
        with session.begin_nested():
            made = events.kind_ids(session, tenant_id, {name})
        assert (tenant_id, name) not in events._KIND_IDS  # not yet
    assert events._KIND_IDS[(tenant_id, name)] == made[name]
    with runtime.database.session() as session:
        assert session.get(EventKind, made[name]) is not None
