"""Update Contact Field's form in the builder: custom and standard fields offered, the
value typed as text (a number stays a number for a number field, a phone stays text),
and a value of the wrong type shown at the step."""

from __future__ import annotations

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields
from tests.web.test_workflows_console import _act, _create, graph_of

START = {"steps": [{"id": "end-1", "type": "exit"}]}


def test_the_update_field_form(owner, sign_in, runtime, tenant):
    with runtime.bound_session(tenant[1]) as session:
        custom_fields.create_field(
            session, tenant[0].id, key="visits", label="Visits", type="number", actor=SYSTEM
        )
    b = sign_in(owner)
    base = _create(b, "Fields")
    form = _act(b, base, START, "new:update_field:||")
    assert 'name="f.field"' in form.text
    assert '<option value="phone">Phone number (standard)</option>' in form.text
    assert '<option value="visits">Visits (visits)</option>' in form.text
    posted = {"editing": "new", "new_type": "update_field", "slot": "||", "step_id": "field-1"}
    phone = {**posted, "f.field": "phone", "f.action": "set", "f.value": "+1 415-555-2671"}
    saved = _act(b, base, START, "save", **phone)
    step = graph_of(saved)["steps"][0]
    assert step["field"] == "phone" and step["value"] == "+1 415-555-2671"
    assert "set “Phone number” to +1 415-555-2671" in saved.text
    visits = {**posted, "f.field": "visits", "f.action": "set", "f.value": "5"}
    assert graph_of(_act(b, base, START, "save", **visits))["steps"][0]["value"] == 5
    bad = {**posted, "f.field": "phone", "f.action": "set", "f.value": "555-2671"}
    refused = _act(b, base, START, "save", **bad)
    assert 'id="step-field-1-faults"' in refused.text
    assert "international format" in refused.text
    clear = _act(b, base, START, "refresh", **{**phone, "f.action": "clear"})
    assert 'name="f.value"' not in clear.text
