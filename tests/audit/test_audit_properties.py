"""Properties: whatever is appended, an untouched chain verifies, and any single
tampering with the stored trail is detected and located where it happened."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from carepost.audit import service as audit
from carepost.audit.models import AuditEvent
from carepost.audit.query import export_events
from carepost.audit.verify import ProblemKind, verify_chains, verify_export_lines
from carepost.core.database import new_id
from tests.audit.tampering import Tamper

short_text = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    max_size=20,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**62), max_value=2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=6,
)
events = st.fixed_dictionaries(
    {
        "actor": st.builds(
            audit.Actor,
            type=st.sampled_from(["user", "api_key", "system", "recipient"]),
            id=short_text,
            label=short_text,
            client_address=st.sampled_from(["", "10.0.0.1", "2001:db8::1"]),
        ),
        "action": st.sampled_from(
            ["auth.sign_in", "contact.view", "contact.export", "keys.rotate"]
        ),
        "object_type": st.sampled_from(["", "contact", "user", "message"]),
        "object_id": short_text,
        "outcome": st.sampled_from(["success", "failure", "denied"]),
        "reason": short_text,
        "details": st.dictionaries(short_text, json_values, max_size=4),
    }
)
EDITABLE = (
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "outcome",
    "object_type",
    "object_id",
    "client_address",
    "reason",
    "details",
    "occurred_at",
    "tenant_id",
    "id",
)


@st.composite
def tamperings(draw: st.DrawFn, count: int) -> tuple[object, ...]:
    seq = st.integers(min_value=1, max_value=count)
    options = [
        st.tuples(st.just("edit"), seq, st.sampled_from(EDITABLE)),
        st.tuples(st.just("delete"), seq),
        st.tuples(st.just("relink"), seq),
        st.tuples(st.just("rehash"), seq),
        st.tuples(st.just("rewrite"), seq),
        st.tuples(st.just("move_chain"), seq),
        st.tuples(st.just("head_hash")),
        st.tuples(st.just("head_seq"), st.integers(min_value=-count, max_value=3).filter(bool)),
        st.tuples(st.just("drop_head")),
        st.tuples(st.just("forge_after")),
    ]
    if count >= 2:
        pair = st.lists(seq, min_size=2, max_size=2, unique=True).map(sorted)
        options.append(st.tuples(st.just("swap"), pair))
    return draw(st.one_of(options))


def stored_row(session, chain: str, seq: int):
    columns = AuditEvent.__table__.columns
    return session.execute(
        select(*columns).where(AuditEvent.chain == chain, AuditEvent.seq == seq)
    ).one()


def changed(column: str, old: object) -> object:
    if column == "occurred_at":
        return old + timedelta(milliseconds=1)
    if column in {"id", "tenant_id"}:
        return uuid.uuid4()
    if column == "details":
        return '{"tampered": true}' if old != {"tampered": True} else "{}"
    return "tampered" if old != "tampered" else "tampered!"


def apply(session, tamper: Tamper, operation: tuple, count: int) -> list[tuple[ProblemKind, int]]:
    """Tamper as ``operation`` says; return the (kind, seq) verification must report."""
    name, *args = operation
    chain = tamper.chain
    if name == "edit":
        seq, column = args
        tamper.set(seq, column, changed(column, getattr(stored_row(session, chain, seq), column)))
        return [(ProblemKind.CONTENT_EDITED, seq)]
    if name == "delete":
        (seq,) = args
        tamper.delete(seq)
        return [(ProblemKind.TRUNCATED if seq == count else ProblemKind.MISSING, seq)]
    if name == "relink":
        (seq,) = args
        tamper.set(seq, "prev_hash", "f" * 64)
        return [(ProblemKind.PREV_HASH_ALTERED, seq)]
    if name == "rehash":
        (seq,) = args
        tamper.set(seq, "hash", "e" * 64)
        return [(ProblemKind.HASH_ALTERED, seq)]
    if name == "rewrite":
        (seq,) = args
        content = audit.event_content(stored_row(session, chain, seq))
        content["reason"] = changed("reason", content["reason"])
        tamper.set(seq, "reason", content["reason"])
        tamper.set(seq, "hash", audit.content_hash(content))
        if seq == count:
            return [(ProblemKind.HEAD_FORGED, seq)]
        return [(ProblemKind.LINK_BROKEN, seq + 1)]
    if name == "move_chain":
        (seq,) = args
        tamper.set(seq, "chain", "elsewhere")
        return [(ProblemKind.TRUNCATED if seq == count else ProblemKind.MISSING, seq)]
    if name == "swap":
        ((first, second),) = args
        tamper.swap(first, second)
        return [(ProblemKind.REORDERED, first), (ProblemKind.REORDERED, second)]
    if name == "head_hash":
        tamper.set_head(last_hash="a" * 64)
        return [(ProblemKind.HEAD_FORGED, count)]
    if name == "head_seq":
        (delta,) = args
        tamper.set_head(seq=count + delta)
        if delta < 0:
            return [(ProblemKind.BEYOND_HEAD, count + delta + 1)]
        return [(ProblemKind.TRUNCATED, count + 1)]
    if name == "drop_head":
        tamper.delete_head()
        return [(ProblemKind.HEAD_MISSING, None)]
    if name == "forge_after":
        last = stored_row(session, chain, count)
        forged = AuditEvent(
            **{**last._mapping, "id": new_id(), "seq": count + 1, "prev_hash": last.hash}
        )
        forged.hash = audit.event_hash(forged)
        session.add(forged)
        session.flush()
        return [(ProblemKind.BEYOND_HEAD, count + 1)]
    raise AssertionError(f"unknown tampering {name}")


def record_all(session, tenant_id: uuid.UUID, drawn: list[dict]) -> None:
    for event in drawn:
        audit.record(session, tenant_id=tenant_id, **event)


PROPERTY_SETTINGS = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(drawn=st.lists(events, min_size=1, max_size=12))
def test_any_appended_chain_verifies_and_reverifies_from_its_export(runtime, drawn):
    tenant_id = uuid.uuid4()
    session = runtime.database.sessionmaker()
    try:
        record_all(session, tenant_id, drawn)
        report = verify_chains(session, chain=audit.chain_for(tenant_id))
        assert report.ok, report.describe()
        assert report.events_checked == len(drawn)
        offline = verify_export_lines(export_events(session, tenant_id, None, "jsonl"))
        assert offline.ok, offline.describe()
        assert offline.heads == report.heads
    finally:
        session.rollback()
        session.close()


@PROPERTY_SETTINGS
@given(data=st.data(), drawn=st.lists(events, min_size=1, max_size=20))
def test_any_single_tampering_is_detected_and_located(runtime, data, drawn):
    operation = data.draw(tamperings(len(drawn)), label="tampering")
    tenant_id = uuid.uuid4()
    chain = audit.chain_for(tenant_id)
    session = runtime.database.sessionmaker()
    try:
        record_all(session, tenant_id, drawn)
        expected = apply(session, Tamper(session, chain), operation, len(drawn))
        report = verify_chains(session, chain=chain)
        assert not report.ok
        assert [(p.kind, p.seq) for p in report.problems] == expected, report.describe()
        assert {p.chain for p in report.problems} == {chain}
    finally:
        session.rollback()
        session.close()


def same_json(first: str, second: str) -> bool:
    try:
        return bool(json.loads(first) == json.loads(second))
    except ValueError:
        return False


@PROPERTY_SETTINGS
@given(data=st.data(), drawn=st.lists(events, min_size=2, max_size=12))
def test_any_single_edit_of_an_export_line_is_detected(runtime, data, drawn):
    tenant_id = uuid.uuid4()
    session = runtime.database.sessionmaker()
    try:
        record_all(session, tenant_id, drawn)
        lines = "".join(export_events(session, tenant_id, None, "jsonl")).splitlines()
    finally:
        session.rollback()
        session.close()
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1), label="line")
    position = data.draw(st.integers(min_value=0, max_value=len(lines[index]) - 1))
    replacement = data.draw(st.characters(blacklist_categories=("Cs",)), label="character")
    line = lines[index]
    tampered = line[:position] + replacement + line[position + 1 :]
    if tampered == line or same_json(tampered, line):
        return  # e.g. "\u001f" -> "\u001F": the same content, nothing was tampered with
    lines[index] = tampered
    report = verify_export_lines(lines)
    assert not report.ok
    # The finding is on the tampered line, or on the next one when only its link changed.
    assert {p.line for p in report.problems} & {index + 1, index + 2}
