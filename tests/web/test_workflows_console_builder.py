"""The builder's model without the database: the graph as a tree of nested paths,
inserting, deleting and moving steps, forms rebuilt into steps by the step types'
own models, faults placed at their step, and a step type registered later getting a
working form from its schema (through the console too)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import Field

from carepost.core.errors import FieldError, ValidationFailed
from carepost.web import workflows_builder as wb
from carepost.workflows import steps as registry
from carepost.workflows.steps import Linear, register_step
from tests.web.test_workflows_console import _act, _create, graph_of

TEMPLATE = str(uuid.uuid4())


def ids(path: wb.Path) -> list[str]:
    return [item.id if isinstance(item, wb.Node) else f"->{item.target}" for item in path.items]


def journey() -> dict[str, Any]:
    return {
        "steps": [
            {"id": "hello", "type": "send_email", "template_id": TEMPLATE, "next": "open"},
            {
                "id": "open",
                "type": "wait_for_event",
                "event": {"kind": "opened"},
                "timeout": {"days": 2},
                "next": "choose",
                "timeout_next": "nudge",
            },
            {"id": "nudge", "type": "send_email", "template_id": TEMPLATE, "next": "choose"},
            {
                "id": "choose",
                "type": "branch",
                "conditions": [{"rule": {"suppressed": "any"}, "next": "stop"}],
                "fallback": "stage",
            },
            {"id": "stage", "type": "set_stage", "stage": "active", "next": None},
            {"id": "stop", "type": "exit"},
            {"id": "lost", "type": "exit"},
        ]
    }


def test_the_tree_nests_paths_and_draws_joins_once():
    tree = wb.build_tree(journey())
    assert ids(tree.main) == ["hello", "open", "choose"]
    open_node = tree.main.items[1]
    assert isinstance(open_node, wb.Node)
    [timeout] = open_node.paths
    assert timeout.label == "On timeout" and ids(timeout) == ["nudge", "->choose"]
    choose = tree.main.items[2]
    assert isinstance(choose, wb.Node)
    assert [p.label for p in choose.paths] == ["If condition 1 holds", "Otherwise (fallback)"]
    assert ids(choose.paths[0]) == ["stop"] and ids(choose.paths[1]) == ["stage"]
    assert [n.id for n in tree.detached] == ["lost"]
    assert open_node.can_move_up and tree.main.items[0].can_move_down


def test_insert_delete_and_move_rewire_the_paths():
    graph = journey()
    step = {"id": "wait-1", "type": "wait_duration", "duration": {"days": 3}}
    after = wb.insert_step(graph, wb.Slot(after="hello"), step)
    assert [s["id"] for s in after["steps"]][:2] == ["hello", "wait-1"]
    assert after["steps"][0]["next"] == "wait-1" and after["steps"][1]["next"] == "open"
    assert graph["steps"][0]["next"] == "open"  # the original is untouched
    first = wb.insert_step(graph, wb.Slot(), {**step, "id": "w0"})
    assert first["steps"][0]["id"] == "w0" and first["steps"][0]["next"] == "hello"
    on_path = wb.insert_step(
        graph, wb.Slot(owner="choose", path="conditions/0/next"), {**step, "id": "w2"}
    )
    branch = next(s for s in on_path["steps"] if s["id"] == "choose")
    assert branch["conditions"][0]["next"] == "w2"
    assert next(s for s in on_path["steps"] if s["id"] == "w2")["next"] == "stop"
    new_branch = wb.insert_step(
        graph,
        wb.Slot(after="stage"),
        {"id": "b2", "type": "branch", "conditions": [{"rule": {}, "next": ""}]},
    )
    made = next(s for s in new_branch["steps"] if s["id"] == "b2")
    assert made["conditions"][0]["next"].startswith("end-")
    assert made.get("fallback") is None  # validation asks for one
    # Deleting: what pointed at the step points at what followed it.
    gone = wb.delete_step(graph, "open")
    assert gone["steps"][0]["next"] == "choose"
    first_gone = wb.delete_step(graph, "hello")
    assert first_gone["steps"][0]["id"] == "open"
    stop_gone = wb.delete_step(graph, "stop")
    choose = next(s for s in stop_gone["steps"] if s["id"] == "choose")
    assert choose["conditions"][0]["next"].startswith("end-")  # a path is never left dangling
    moved = wb.move_step(after, "wait-1", "up")
    assert [s["id"] for s in moved["steps"]][:2] == ["wait-1", "hello"]
    assert moved["steps"][0]["next"] == "hello" and moved["steps"][1]["next"] == "open"
    assert wb.move_step(moved, "hello", "down") == wb.move_step(moved, "open", "up")


def test_forms_become_steps_checked_by_their_model():
    step, faults = wb.step_from_form(
        {"f.duration.days": "3", "f.duration.hours": "", "other": "x"}, "wait_duration", "w"
    )
    assert not faults and step["duration"] == {"days": 3, "hours": 0, "minutes": 0}
    _, faults = wb.step_from_form({"f.duration.days": "0"}, "wait_duration", "w")
    assert faults == {"duration": "a wait lasts at least one minute"}
    _, faults = wb.step_from_form({"f.event.kind": "custom"}, "wait_for_event", "e")
    assert "event" in faults and faults["timeout"] == "this field is required"
    window, faults = wb.step_from_form(
        {
            "f.until.kind": "window",
            "f.until.days_of_week": ["3", "4"],
            "f.until.start": "12:00",
            "f.until.end": "14:00",
            "f.until.timezone": "America/Chicago",
            "f.until.contact_timezone": ["false", "true"],
        },
        "wait_until",
        "u",
    )
    assert not faults, faults
    assert window["until"]["days_of_week"] == [3, 4] and window["until"]["contact_timezone"]
    _, faults = wb.step_from_form(
        {"f.until.kind": "window", "f.until.timezone": "Mars/Olympus"}, "wait_until", "u"
    )
    assert faults == {"until.timezone": "not a known IANA time zone"}
    _, faults = wb.step_from_form({"f.conditions.0.rule": "{oops"}, "branch", "b")
    assert faults["conditions.0.rule"].startswith("not valid JSON")
    assert wb.fault_label("conditions.0.rule") == "Condition 1"


def test_faults_are_placed_at_their_step():
    graph = journey()
    failed = ValidationFailed(
        "2 problems",
        errors=[
            FieldError("#/body/draft/steps/3/fallback", "step choose: a branch needs a fallback"),
            FieldError("#/body/draft/steps/0/template_id", "step hello: no such template"),
            FieldError("#/body/draft/steps/3/conditions/0/rule/field", "step choose: no such"),
            FieldError("#/body/sender_address", "not a verified domain"),
        ],
    )
    by_step, general = wb.faults_by_step(graph, failed)
    assert by_step["choose"] == ["a branch needs a fallback", "condition 1, rule → field: no such"]
    assert by_step["hello"] == ["template_id: no such template"]
    assert general == ["not a verified domain"]


class Note(Linear):
    """Write a note to the contact's timeline (a step type of a later session)."""

    type: Literal["test_note"]
    text: str = Field(min_length=1, max_length=200)
    tone: Literal["plain", "warm"] = "plain"
    urgent: bool = False
    meta: dict[str, Any] | None = None


@pytest.fixture
def note_type() -> Iterator[None]:
    register_step(Note)
    try:
        yield
    finally:
        registry.STEP_TYPES.pop("test_note", None)
        registry.graph_adapter.cache_clear()


def test_a_step_type_registered_later_gets_a_form_from_its_schema(
    note_type, owner, sign_in, runtime, tenant
):
    fields = {f.name: f for f in wb.generic_fields("test_note")}
    assert set(fields) == {"text", "tone", "urgent", "meta"}
    assert fields["text"].kind == "text" and fields["text"].required
    assert fields["tone"].kind == "select" and fields["tone"].choices == ("plain", "warm")
    assert fields["urgent"].kind == "checkbox" and fields["meta"].kind == "json"
    assert ("test_note", "Test note", Note.__doc__.split("\n")[0]) in wb.step_types()
    b = sign_in(owner)
    base = _create(b, "Notes")
    graph = graph_of(b.get(base))
    menu = _act(b, base, graph, "add:||")
    assert 'id="new-test_note"' in menu.text
    form = _act(b, base, graph, "new:test_note:||")
    for name in ("f.text", "f.tone", "f.urgent", "f.meta"):
        assert f'name="{name}"' in form.text
    common = {"editing": "new", "new_type": "test_note", "slot": "||", "step_id": "test_note-1"}
    refused = _act(b, base, graph, "save", **common, **{"f.meta": "[1"})
    assert "Not valid JSON" in refused.text
    saved = _act(
        b,
        base,
        graph,
        "save",
        **common,
        **{"f.text": "Welcome!", "f.tone": "warm", "f.meta": '{"a": 1}'},
    )
    graph = graph_of(saved)
    note = graph["steps"][0]
    assert note["type"] == "test_note" and note["tone"] == "warm" and note["next"] == "end-1"
    assert note["meta"] == {"a": 1} and 'id="step-test_note-1"' in saved.text
    assert "text: Welcome!" in saved.text  # described generically on the diagram
    stored = b.post(f"{base}/draft", {"graph": json.dumps(graph)})
    assert stored.status_code == 303


def test_forms_follow_their_kind_and_offer_the_pickers(owner, sign_in, runtime, tenant):
    b = sign_in(owner)
    base = _create(b, "Pickers")
    graph = graph_of(b.get(base))
    until = _act(b, base, graph, "new:wait_until:||")
    assert 'name="f.until.days_of_week"' in until.text and 'list="wf-zones"' in until.text
    assert "America/Chicago" in until.text  # the time zone picker
    common = {"editing": "new", "new_type": "wait_until", "slot": "||", "step_id": "until-1"}
    dated = _act(b, base, graph, "refresh", **common, **{"f.until.kind": "date"})
    assert 'name="f.until.at"' in dated.text and 'name="f.until.start"' not in dated.text
    saved = _act(
        b,
        base,
        graph,
        "save",
        **common,
        **{"f.until.kind": "date", "f.until.at": "2027-05-01T09:00"},
    )
    step = graph_of(saved)["steps"][0]
    assert step["until"] == {"kind": "date", "at": "2027-05-01T09:00:00Z"}
    graph = graph_of(saved)
    goto = _act(b, base, graph, "new:goto:until-1||")
    assert '<option value="end-1"' in goto.text and '<option value="until-1"' in goto.text
    event = _act(b, base, graph, "new:wait_for_event:until-1||")
    assert 'name="f.event.kind"' in event.text and 'hx-vals=\'{"action": "refresh"}\'' in event.text


def test_each_branch_condition_keeps_its_own_path(owner, sign_in, runtime, tenant):
    b = sign_in(owner)
    base = _create(b, "Paths")
    graph = {
        "steps": [
            {
                "id": "choose",
                "type": "branch",
                "conditions": [
                    {"rule": {"suppressed": "any"}, "next": "first"},
                    {"rule": {"suppressed": "email"}, "next": "second"},
                ],
                "fallback": "first",
            },
            {"id": "first", "type": "exit"},
            {"id": "second", "type": "exit"},
        ]
    }
    form = _act(b, base, graph, "edit:choose")
    assert 'name="f.conditions.1.next" value="second"' in form.text
    fields = {
        "editing": "choose",
        "f.conditions.0.rule": '{"suppressed": "any"}',
        "f.conditions.0.next": "first",
        "f.conditions.1.rule": '{"suppressed": "email"}',
        "f.conditions.1.next": "second",
    }
    fewer = _act(b, base, graph, "cond_remove:0", **fields)
    assert 'name="f.conditions.0.next" value="second"' in fewer.text
    kept = {k: v for k, v in fields.items() if ".0." not in k}
    kept = {k.replace(".1.", ".0."): v for k, v in kept.items()}
    saved = graph_of(_act(b, base, graph, "save", **kept))
    choose = saved["steps"][0]
    assert choose["conditions"] == [{"rule": {"suppressed": "email"}, "next": "second"}]
    more = graph_of(
        _act(b, base, saved, "save", **kept, **{"f.conditions.1.rule": '{"suppressed": "sms"}'})
    )
    added = more["steps"][0]["conditions"][1]
    assert added["next"].startswith("end-") and added["next"] in {s["id"] for s in more["steps"]}
