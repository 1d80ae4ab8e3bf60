"""Listing, filtering, paginating and exporting a tenant's trail, and re-verifying exports."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError

from carepost.audit import service as audit
from carepost.audit.query import (
    CSV_COLUMNS,
    decode_cursor,
    encode_cursor,
    export_events,
    list_events,
    neutralise_cell,
    verify_export_lines,
)
from carepost.audit.schemas import AuditEventOut, AuditEventPage, AuditFilters
from carepost.audit.verify import ProblemKind
from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from tests.audit.tampering import ALICE, API, BOB, append


@pytest.fixture
def two_tenants(make_tenant):
    first, _ = make_tenant("Clinic A")
    second, _ = make_tenant("Clinic B")
    return first.id, second.id


@pytest.fixture
def trail(session, two_tenants):
    """Tenant A: 1 tenant.create + 30 mixed events; tenant B: 1 + 5."""
    tenant_a, tenant_b = two_tenants
    append(session, tenant_a, 10, actor=ALICE, action="auth.sign_in")
    append(session, tenant_a, 5, actor=BOB, action="auth.sign_in", outcome="failure")
    append(session, tenant_a, 10, actor=API, action="contact.view", object_id="c-42")
    append(session, tenant_a, 5, actor=BOB, action="contact.export", object_type="list")
    append(session, tenant_b, 5, actor=ALICE, action="auth.sign_in")
    return tenant_a, tenant_b


def every_page(session, tenant_id, filters=None, limit=7):
    events, cursor, pages = [], None, 0
    while True:
        page = list_events(session, tenant_id, filters, cursor=cursor, limit=limit)
        events.extend(page.events)
        pages += 1
        if page.next_cursor is None:
            return events, pages
        cursor = page.next_cursor


def test_pages_cover_the_chain_newest_first_without_gaps_or_repeats(session, trail):
    tenant_a, _ = trail
    events, pages = every_page(session, tenant_a)
    assert [event.seq for event in events] == list(range(31, 0, -1))
    assert pages == 5


def test_a_page_as_large_as_the_rest_has_no_next_cursor(session, trail):
    tenant_a, _ = trail
    page = list_events(session, tenant_a, limit=31)
    assert len(page.events) == 31
    assert page.next_cursor is None


def test_appends_between_pages_neither_shift_nor_repeat_events(session, trail):
    tenant_a, _ = trail
    first = list_events(session, tenant_a, limit=10)
    append(session, tenant_a, 3)
    rest, _pages = every_page_from(session, tenant_a, first.next_cursor)
    assert [e.seq for e in first.events + rest] == list(range(31, 0, -1))


def every_page_from(session, tenant_id, cursor):
    events, pages = [], 0
    while cursor is not None:
        page = list_events(session, tenant_id, cursor=cursor, limit=10)
        events.extend(page.events)
        cursor, pages = page.next_cursor, pages + 1
    return events, pages


def test_a_tenant_never_sees_another_tenants_events(session, trail):
    tenant_a, tenant_b = trail
    events_b, _ = every_page(session, tenant_b, limit=2)
    assert len(events_b) == 6
    assert {event.tenant_id for event in events_b} == {tenant_b}
    everything_a, _ = every_page(session, tenant_a, limit=50)
    assert {event.tenant_id for event in everything_a} == {tenant_a}
    # A cursor carried over from tenant A's listing stays inside tenant B's chain.
    cursor_a = list_events(session, tenant_a, limit=1).next_cursor
    assert {e.tenant_id for e in list_events(session, tenant_b, cursor=cursor_a).events} <= {
        tenant_b
    }


def test_a_tenant_without_events_sees_nothing(session, trail):
    assert list_events(session, uuid.uuid4()).events == []


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"actor_id": "u-bob"}, 10),
        ({"actor_type": "api_key"}, 10),
        ({"action": "auth.sign_in"}, 15),
        ({"action": "auth."}, 15),
        ({"action": "contact.*"}, 15),
        ({"action": "contact."}, 15),
        ({"action": "contact"}, 0),
        ({"action": "*"}, 31),
        ({"object_type": "list"}, 5),
        ({"object_type": "contact", "object_id": "c-42"}, 10),
        ({"outcome": "failure"}, 5),
        ({"actor_id": "u-bob", "action": "auth."}, 5),
        ({"actor_id": "u-mallory"}, 0),
    ],
)
def test_filters_select_matching_events(session, trail, filters, expected):
    tenant_a, _ = trail
    chosen = AuditFilters(**filters)
    events, _pages = every_page(session, tenant_a, chosen, limit=4)
    assert len(events) == expected
    assert len({event.id for event in events}) == expected
    for event in events:
        for name, value in filters.items():
            if name == "action" and chosen.action_prefix is not None:
                assert event.action.startswith(chosen.action_prefix)
            else:
                assert getattr(event, name) == value


def test_action_prefixes_treat_wildcards_literally(session, two_tenants):
    tenant_a, _ = two_tenants
    append(session, tenant_a, 2, action="auth_x.sign_in")
    assert list_events(session, tenant_a, AuditFilters(action="auth_.")).events == []
    assert list_events(session, tenant_a, AuditFilters(action="auth%")).events == []


def test_a_time_window_selects_events_inside_it(session, trail):
    tenant_a, _ = trail
    events, _ = every_page(session, tenant_a, limit=50)
    middle = sorted(events, key=lambda e: e.seq)[15].occurred_at
    before, _ = every_page(session, tenant_a, AuditFilters(until=middle))
    after, _ = every_page(session, tenant_a, AuditFilters(since=middle))
    assert len(before) + len(after) == 31
    assert all(e.occurred_at < middle for e in before)
    assert all(e.occurred_at >= middle for e in after)
    window = AuditFilters(since=utcnow() + timedelta(days=1), until=utcnow() + timedelta(days=2))
    assert list_events(session, tenant_a, window).events == []


def test_a_malformed_cursor_is_a_validation_error(session, trail):
    tenant_a, _ = trail
    for cursor in ("not-a-cursor", "AAAAAAAAAAA", encode_cursor(1)[:-2], "!!!"):
        with pytest.raises(ValidationFailed) as raised:
            list_events(session, tenant_a, cursor=cursor)
        assert raised.value.errors[0].field == "#/query/cursor"


def test_cursors_round_trip():
    for seq in (1, 42, 2**40):
        assert decode_cursor(encode_cursor(seq)) == seq
    assert decode_cursor(None) is None


def test_page_size_is_bounded(session, trail):
    tenant_a, _ = trail
    for limit in (0, 501):
        with pytest.raises(ValidationFailed):
            list_events(session, tenant_a, limit=limit)


def test_filters_refuse_unknown_fields_and_naive_times():
    with pytest.raises(ValidationError):
        AuditFilters(tenant_id=str(uuid.uuid4()))  # the tenant comes from the principal
    with pytest.raises(ValidationError):
        AuditFilters(since="2026-01-01T00:00:00")
    with pytest.raises(ValidationError):
        AuditFilters(since=utcnow(), until=utcnow() - timedelta(seconds=1))
    assert AuditFilters(since="2026-01-01T00:00:00Z").since is not None


def test_events_shape_into_the_api_schema(session, trail):
    tenant_a, _ = trail
    page = list_events(session, tenant_a, limit=2)
    shaped = AuditEventPage(
        items=[AuditEventOut.model_validate(event) for event in page.events],
        next_cursor=page.next_cursor,
    )
    first = shaped.items[0]
    assert (first.seq, first.tenant_id, first.chain) == (31, tenant_a, str(tenant_a))
    assert len(first.hash) == 64
    assert json.loads(shaped.model_dump_json())["next_cursor"] == page.next_cursor


def read_csv(chunks):
    return list(csv.reader(io.StringIO("".join(chunks))))


def test_csv_export_has_a_header_and_every_matching_event(session, trail):
    tenant_a, _ = trail
    rows = read_csv(export_events(session, tenant_a, AuditFilters(action="auth."), "csv"))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + 15
    seqs = [int(row[0]) for row in rows[1:]]
    assert seqs == sorted(seqs)  # oldest first


def test_csv_export_of_nothing_is_just_the_header(session, trail):
    rows = read_csv(export_events(session, uuid.uuid4(), None, "csv"))
    assert rows == [list(CSV_COLUMNS)]


@pytest.mark.parametrize("dangerous", ["=HYPERLINK(1)", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_csv_export_neutralises_formulas(session, two_tenants, dangerous):
    tenant_a, _ = two_tenants
    audit.record(
        session,
        tenant_id=tenant_a,
        actor=audit.Actor(type="user", id=dangerous, label=dangerous),
        action="contact.view",
        reason=dangerous,
        details={"note": "x"},
    )
    rows = read_csv(export_events(session, tenant_a, AuditFilters(action="contact.view"), "csv"))
    row = dict(zip(rows[0], rows[-1], strict=True))
    for column in ("actor_id", "actor_label", "reason"):
        assert row[column] == f"'{dangerous}"
    assert row["details"] == '{"note": "x"}'


def test_neutralise_cell_leaves_ordinary_values_alone():
    assert neutralise_cell("auth.sign_in") == "auth.sign_in"
    assert neutralise_cell("") == ""
    assert neutralise_cell("a=b") == "a=b"


def test_jsonl_export_reverifies_offline(session, trail):
    tenant_a, _ = trail
    lines = "".join(export_events(session, tenant_a, None, "jsonl")).splitlines()
    assert len(lines) == 31
    first = json.loads(lines[0])
    assert {"seq", "prev_hash", "hash"} <= first.keys()
    assert first["prev_hash"] == audit.GENESIS_HASH
    report = verify_export_lines(lines)
    assert report.ok, report.describe()
    assert (report.chains_checked, report.events_checked) == (1, 31)
    assert report.heads[str(tenant_a)].hash == json.loads(lines[-1])["hash"]


def test_export_chunks_verify_as_they_come(session, trail):
    tenant_a, _ = trail
    assert verify_export_lines(export_events(session, tenant_a, None, "jsonl")).ok


def test_a_filtered_jsonl_export_reverifies_as_partial(session, trail):
    tenant_a, _ = trail
    chunks = list(export_events(session, tenant_a, AuditFilters(actor_id="u-bob"), "jsonl"))
    report = verify_export_lines(chunks, partial=True)
    assert report.ok, report.describe()
    assert report.events_checked == 10
    # Without partial=True the missing stretches are named.
    assert {p.kind for p in verify_export_lines(chunks).problems} == {ProblemKind.MISSING}


def exported(session, tenant_id):
    return "".join(export_events(session, tenant_id, None, "jsonl")).splitlines()


def test_an_edited_export_line_is_named(session, trail):
    tenant_a, _ = trail
    lines = exported(session, tenant_a)
    record = json.loads(lines[11])
    record["actor_id"] = "u-mallory"
    lines[11] = json.dumps(record)
    report = verify_export_lines(lines)
    assert [(p.line, p.seq, p.event_id, p.kind) for p in report.problems] == [
        (12, 12, record["id"], ProblemKind.CONTENT_EDITED)
    ]
    assert report.problems[0].describe() == (
        f"line 12: chain {tenant_a} seq 12 (event {record['id']}): "
        "content edited after it was written"
    )


def test_a_deleted_export_line_is_named(session, trail):
    tenant_a, _ = trail
    lines = exported(session, tenant_a)
    del lines[20]
    problems = verify_export_lines(lines).problems
    assert [(p.seq, p.kind) for p in problems] == [(21, ProblemKind.MISSING)]


def test_a_deleted_first_export_line_is_named(session, trail):
    tenant_a, _ = trail
    problems = verify_export_lines(exported(session, tenant_a)[1:]).problems
    assert [(p.seq, p.kind) for p in problems] == [(1, ProblemKind.MISSING)]


def test_reordered_export_lines_are_named(session, trail):
    tenant_a, _ = trail
    lines = exported(session, tenant_a)
    lines[4], lines[5] = lines[5], lines[4]
    problems = verify_export_lines(lines).problems
    # Read in order, seq 5 is first missing, then turns up late.
    assert [(p.line, p.seq, p.kind) for p in problems] == [
        (5, 5, ProblemKind.MISSING),
        (6, 5, ProblemKind.OUT_OF_ORDER),
    ]
    assert problems[1].message == "comes after seq 6"


def test_an_export_line_with_an_extra_field_is_refused(session, trail):
    tenant_a, _ = trail
    lines = exported(session, tenant_a)
    record = json.loads(lines[3])
    record["note"] = "trust me"
    lines[3] = json.dumps(record)
    problems = verify_export_lines(lines).problems
    assert problems[0].kind is ProblemKind.MALFORMED
    assert problems[0].line == 4
    assert "not covered by the hash: note" in problems[0].message


def test_garbage_in_an_export_is_named(session, trail):
    report = verify_export_lines(["{not json", "[1, 2]", '{"seq": 1}', ""])
    assert [(p.line, p.kind) for p in report.problems] == [
        (1, ProblemKind.MALFORMED),
        (2, ProblemKind.MALFORMED),
        (3, ProblemKind.MALFORMED),
    ]


def test_an_unknown_export_format_is_refused(session, trail):
    tenant_a, _ = trail
    with pytest.raises(ValidationFailed):
        export_events(session, tenant_a, None, "xml")  # type: ignore[arg-type]


def test_exports_with_line_separators_inside_values_reverify(session, two_tenants):
    """Regression: U+2028 and U+0085 in a value once split an export line in two."""
    tenant_a, _ = two_tenants
    append(session, tenant_a, 2, reason="one\u2028two\x85three\r\nfour")
    chunks = list(export_events(session, tenant_a, None, "jsonl"))
    assert "".join(chunks).isascii()
    assert verify_export_lines(chunks).ok
    as_read_from_a_windows_file = [f"{line}\r\n" for line in "".join(chunks).split("\n") if line]
    assert verify_export_lines(as_read_from_a_windows_file).ok


def test_an_export_line_with_a_broken_escape_is_malformed_not_a_crash(session, two_tenants):
    """Regression: one changed digit in an escaped emoji left a lone surrogate."""
    tenant_a, _ = two_tenants
    append(session, tenant_a, 1, reason="\U0001f600")
    lines = exported(session, tenant_a)
    assert "\\ud83d\\ude00" in lines[-1]
    lines[-1] = lines[-1].replace("\\ud83d\\ude00", "\\ud83d\\u0041")
    problems = verify_export_lines(lines).problems
    assert [(p.line, p.kind) for p in problems] == [(len(lines), ProblemKind.MALFORMED)]
