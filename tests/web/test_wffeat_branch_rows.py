"""A workflow branch's conditions edited with the segment builder's rows: a rule that
fits opens as rows, rows post back as the rule, the row buttons add and remove rows,
the segment compiler's fault lands next to its row, and a rule the rows cannot show
stays JSON (with a note when rows are asked for)."""

from __future__ import annotations

from typing import Any

from tests.web.test_workflows_console import _act, _create, _world, graph_of


def _graph(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "steps": [
            {
                "id": "choose",
                "type": "branch",
                "conditions": [{"rule": rule, "next": "yes"}],
                "fallback": "no",
            },
            {"id": "yes", "type": "exit"},
            {"id": "no", "type": "exit"},
        ]
    }


def test_rows_edit_a_branch_condition(owner, sign_in, runtime, tenant):
    data = _world(runtime, tenant)
    list_id = str(data["list_id"])
    b = sign_in(owner)
    base = _create(b, "Rows")
    graph = _graph({"suppressed": "any"})
    form = _act(b, base, graph, "edit:choose")
    assert 'data-mode="rows"' in form.text
    assert 'id="condition-0-count"' in form.text  # the rows' live count
    assert 'name="c0.r1_kind"' in form.text and 'name="c0.mode" value="rows"' in form.text
    rows = {
        "editing": "choose",
        "f.conditions.0.next": "yes",
        "c0.mode": "rows",
        "c0.match": "all",
        "c0.row": "1",
        "c0.r1_kind": "list",
        "c0.r1_list": list_id,
    }
    more = _act(b, base, graph, "cond_rows:0:add", **rows)
    assert 'name="c0.r2_kind"' in more.text  # a second row, the first kept
    assert f'<option value="{list_id}" selected>' in more.text
    saved = graph_of(_act(b, base, graph, "save", **rows))
    assert saved["steps"][0]["conditions"][0] == {
        "rule": {"all": [{"list": list_id}]},
        "next": "yes",
    }
    # Two rows, one negated: "in the list AND NOT suppressed for email".
    two = {
        **rows,
        "c0.row": ["1", "2"],
        "c0.r2_kind": "suppressed",
        "c0.r2_suppressed": "email",
        "c0.r2_not": "1",
    }
    saved = graph_of(_act(b, base, graph, "save", **two))
    assert saved["steps"][0]["conditions"][0]["rule"] == {
        "all": [{"list": list_id}, {"not": {"suppressed": "email"}}]
    }
    removed = _act(b, base, graph, "cond_rows:0:remove:2", **two)
    assert 'name="c0.r2_kind"' not in removed.text and 'name="c0.r1_kind"' in removed.text


def test_a_rule_fault_is_shown_at_its_row(owner, sign_in, runtime, tenant):
    b = sign_in(owner)
    base = _create(b, "Faults")
    graph = _graph({"suppressed": "any"})
    fields = {
        "editing": "choose",
        "f.conditions.0.next": "yes",
        "c0.mode": "rows",
        "c0.match": "all",
        "c0.row": "1",
        "c0.r1_kind": "field",
        "c0.r1_field": "favourite_colour",
        "c0.r1_op": "is_set",
    }
    refused = _act(b, base, graph, "save", **fields)
    assert 'id="c0-row-1-error"' in refused.text
    assert "step-form-errors" in refused.text  # the step form stays open, summary on top


def test_a_rule_the_rows_cannot_show_stays_json(owner, sign_in, runtime, tenant):
    b = sign_in(owner)
    base = _create(b, "Deep")
    deep = {"all": [{"any": [{"all": [{"suppressed": "any"}, {"suppressed": "email"}]}]}]}
    graph = _graph(deep)
    form = _act(b, base, graph, "edit:choose")
    assert 'data-mode="json"' in form.text and 'id="sf-conditions-0-rule"' in form.text
    fields = {
        "editing": "choose",
        "f.conditions.0.next": "yes",
        "c0.mode": "json",
        "f.conditions.0.rule": '{"all": [{"any": [{"all": [{"suppressed": "any"}]}]}]}',
    }
    asked = _act(b, base, graph, "cond_mode:0:rows", **fields)
    assert 'id="condition-0-note"' in asked.text and 'data-mode="json"' in asked.text
    # A simple rule switches to rows, and rows switch back to JSON with the same rule.
    fields["f.conditions.0.rule"] = '{"suppressed": "sms"}'
    as_rows = _act(b, base, graph, "cond_mode:0:rows", **fields)
    assert 'data-mode="rows"' in as_rows.text and 'name="c0.r1_kind"' in as_rows.text
    back = _act(
        b,
        base,
        graph,
        "cond_mode:0:json",
        **{
            "editing": "choose",
            "f.conditions.0.next": "yes",
            "c0.mode": "rows",
            "c0.match": "all",
            "c0.row": "1",
            "c0.r1_kind": "suppressed",
            "c0.r1_suppressed": "sms",
        },
    )
    assert 'data-mode="json"' in back.text and "suppressed" in back.text


def test_a_new_branch_starts_with_one_row(owner, sign_in, runtime, tenant):
    b = sign_in(owner)
    base = _create(b, "New")
    graph = {"steps": [{"id": "end-1", "type": "exit"}]}
    form = _act(b, base, graph, "new:branch:||")
    assert 'data-mode="rows"' in form.text and 'name="c0.r1_kind"' in form.text
