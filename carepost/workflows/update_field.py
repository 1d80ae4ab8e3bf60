"""The Update Contact Field step (``update_field``): set, clear, stamp or count a
tenant custom field of the run's contact, or set or clear one of its standard fields.

Standard fields (:data:`STANDARD`): ``first_name``, ``last_name`` and ``phone`` (PHI:
encrypted columns; the phone normalized to E.164 by phonenumbers, its blind index
rewritten), ``language`` (BCP 47) and ``timezone`` (IANA), with ``set`` and ``clear``
only; each value is checked by the contacts domain's own normalizer at design time
and again at run time. The email address and external id are identifiers (unique,
matched by imports) and the journey stage has its own step: the step refuses them.
No value ever goes to the run's history, the audit entry or a log line: outcome
codes, field names and counts only.

Actions: ``set`` (``value``, checked and coerced by the field's type exactly as the
contacts API does, :func:`carepost.contacts.values.normalize_value`), ``clear``,
``now``/``today`` (date and date-time fields), ``increment`` (number fields, by
``by``). The value lands in the contact's encrypted ``custom`` blob and the
contact's blind-index tokens are rewritten (:func:`carepost.contacts.sync.replace_tokens`),
so segments and branches see the new value at once; a sealed field gets no tokens.
A group of runs is one pass: the engine already read the contacts, the changed
rows are flushed together and the tokens replaced in one delete and one insert.
Registered by carepost.workflows.steps (the model), handlers (per run) and batch.
Audit: one ``contact.workflow_update`` entry per group, field name and counts only.
A simulation (dry run) writes nothing.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts import custom_fields, sync
from carepost.contacts.fields import STANDARD_FIELDS, IndexKind
from carepost.contacts.prepare import normalize_attribute
from carepost.contacts.tokens import FieldType
from carepost.contacts.values import FieldSpec, merge_custom, normalize_value
from carepost.core.errors import FieldError, ValidationFailed
from carepost.workflows.steps import GraphShape, Linear, register_step

if TYPE_CHECKING:  # handlers and batch import the steps, which import this module
    from carepost.workflows.handlers import RunContext, Transition

Action = Literal["set", "clear", "now", "today", "increment"]
_DATES = (FieldType.DATE, FieldType.DATETIME)
# Standard contact fields the step may set or clear (custom field keys never take
# these names: carepost.contacts.custom_fields.RESERVED_KEYS).
STANDARD = ("first_name", "last_name", "phone", "language", "timezone")
# Standard fields the step refuses, and why.
REFUSED = {
    "email": "the email address is an identifier: workflows do not change it",
    "external_id": "the external id is an identifier: workflows do not change it",
    "birth_date": "the birth date is not changed by workflows",
    "journey_stage": "use the Set journey stage step",
}


class UpdateField(Linear):
    type: Literal["update_field"]
    field: str = Field(min_length=1, max_length=40)
    action: Action = "set"
    value: Any = None
    by: float = 1

    @model_validator(mode="after")
    def _complete(self) -> UpdateField:
        if self.action == "set" and self.value is None:
            raise ValueError("set needs a value (use clear to empty the field)")
        if self.action != "set" and self.value is not None:
            raise ValueError("only set takes a value")
        if not math.isfinite(self.by) or abs(self.by) > 1e15:
            raise ValueError("by must be a finite number")
        return self


register_step(UpdateField)


def _stamp(spec: FieldSpec, now: datetime) -> str:
    moment = now.astimezone(UTC)
    if spec.type is FieldType.DATE:
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_value(step: UpdateField, spec: FieldSpec, current: Any, now: datetime) -> Any:
    """The field's value after the step (None: cleared); ValidationFailed if it cannot be."""
    where = f"custom/{step.field}"
    if step.action == "clear":
        return None
    if step.action in ("now", "today"):
        if spec.type not in _DATES:
            raise ValidationFailed("now/today set only a date or date-time field", field=where)
        return normalize_value(spec, _stamp(spec, now), field=where, now=now)
    if step.action == "increment":
        if spec.type is not FieldType.NUMBER:
            raise ValidationFailed("increment needs a number field", field=where)
        base = current if isinstance(current, int | float) and not isinstance(current, bool) else 0
        total = base + (int(step.by) if float(step.by).is_integer() else step.by)
        return normalize_value(spec, total, field=where, now=now)
    return normalize_value(spec, step.value, field=where, now=now)


def standard_value(name: str, raw: Any) -> str | None:
    """A standard field's value as stored (None: cleared), or ValidationFailed on ``value``.
    The messages never quote the value (it may be PHI)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationFailed(f"{name.replace('_', ' ')} takes text", field="value")
    try:
        if name in ("language", "timezone"):
            return normalize_attribute(name, raw.strip())
        return STANDARD_FIELDS[name].normalize(raw) or None
    except ValidationFailed as failed:
        message = failed.errors[0].message if failed.errors else failed.detail
        raise ValidationFailed(message, field="value") from None


def standard_problems(step: UpdateField) -> list[tuple[str, str]]:
    if step.action not in ("set", "clear"):
        return [("action", f"{step.field.replace('_', ' ')} can only be set or cleared")]
    if step.action == "set":
        try:
            if standard_value(step.field, step.value) is None:
                return [("value", "set needs a value (use clear to empty the field)")]
        except ValidationFailed as failed:
            return [("value", failed.errors[0].message if failed.errors else str(failed))]
    return []


def step_problems(
    step: UpdateField, spec: FieldSpec | None, now: datetime
) -> list[tuple[str, str]]:
    """(field of the step, message) of what is wrong with the step against the schema."""
    if step.field in STANDARD:
        return standard_problems(step)
    if step.field in REFUSED:
        return [("field", REFUSED[step.field])]
    if spec is None:
        return [("field", "no such contact field (a custom field key or a standard field)")]
    if step.action in ("now", "today") and spec.type not in _DATES:
        return [("action", f"{step.action} needs a date or date-time field")]
    if step.action == "increment" and spec.type is not FieldType.NUMBER:
        return [("action", "increment needs a number field")]
    if step.action == "set":
        try:
            normalize_value(spec, step.value, field="value", now=now)
        except ValidationFailed as failed:
            return [("value", failed.errors[0].message if failed.errors else str(failed))]
    return []


def graph_problems(
    session: Session, tenant_id: uuid.UUID, graph: GraphShape, pointer: str, now: datetime
) -> list[FieldError]:
    steps = [(i, s) for i, s in enumerate(graph.steps) if isinstance(s, UpdateField)]
    if not steps:
        return []
    schema = custom_fields.load_schema(session, tenant_id)
    problems: list[FieldError] = []
    for index, step in steps:
        for field, message in step_problems(step, schema.get(step.field), now):
            problems.append(
                FieldError(f"{pointer}/steps/{index}/{field}", f"step {step.id}: {message}")
            )
    return problems


def update_group(
    step: UpdateField, contexts: Sequence[RunContext], resumed: bool
) -> list[Transition]:
    from carepost.workflows.handlers import Transition

    first = contexts[0]
    session, keys = first.session, first.keys
    if step.field in STANDARD:
        return update_standard(step, contexts)
    schema = custom_fields.load_schema(session, keys.tenant_id)
    spec = schema.get(step.field)
    if spec is None:
        return [Transition("unknown_field", step.next) for _ in contexts]
    transitions: list[Transition] = []
    changed: list[Any] = []
    for ctx in contexts:
        contact = ctx.contact
        if contact is None:
            transitions.append(Transition("no_contact", step.next))
            continue
        stored = contact.custom or {}
        try:
            value = new_value(step, spec, stored.get(step.field), ctx.now)
        except ValidationFailed:
            transitions.append(Transition("invalid", step.next))
            continue
        if stored.get(step.field) == value and (value is not None or step.field not in stored):
            transitions.append(Transition("unchanged", step.next))
            continue
        transitions.append(Transition("updated", step.next))
        if not ctx.dry_run:
            contact.custom = merge_custom(stored, {step.field: value})
            contact.updated_at = ctx.now
            changed.append(contact)
    if changed:
        session.flush()  # one executemany UPDATE of the changed rows
        sync.replace_tokens(
            session, keys, schema, [(c.id, c.custom, c.birth_date) for c in changed]
        )
        _changed(step, first, changed)
    return transitions


def _changed(step: UpdateField, first: RunContext, changed: Sequence[Any]) -> None:
    """After a group's contacts changed: the runs waiting for a change of the field
    wake, and one audit entry names the field and the count (never a value)."""
    from carepost.workflows.wakeups import on_fields_changed  # runs awaiting a change

    session, tenant_id = first.session, first.keys.tenant_id
    on_fields_changed(session, tenant_id, {step.field: [c.id for c in changed]})
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=first.actor,
        action="contact.workflow_update",
        object_type="contact",
        object_id=str(changed[0].id) if len(changed) == 1 else "",
        details={"fields": [step.field], "updated": len(changed), "step_id": step.id},
    )


def update_standard(step: UpdateField, contexts: Sequence[RunContext]) -> list[Transition]:
    """Set or clear a standard field of the group's contacts: the encrypted column (and
    the phone's blind index) through the ORM, one flush; runs waiting for a change of
    the field wake; one audit entry with the field name and the count."""
    from carepost.workflows.handlers import Transition

    first = contexts[0]
    session, keys = first.session, first.keys
    try:
        value = standard_value(step.field, step.value if step.action == "set" else None)
    except ValidationFailed:
        return [Transition("invalid", step.next) for _ in contexts]
    spec = STANDARD_FIELDS.get(step.field)
    token = None
    if value is not None and spec is not None and spec.index is not IndexKind.NONE:
        token = keys.blind_index(spec.index_label, value)
    transitions: list[Transition] = []
    changed: list[Any] = []
    for ctx in contexts:
        contact = ctx.contact
        if contact is None:
            transitions.append(Transition("no_contact", step.next))
            continue
        if getattr(contact, step.field) == value:
            transitions.append(Transition("unchanged", step.next))
            continue
        transitions.append(Transition("updated", step.next))
        if not ctx.dry_run:
            setattr(contact, step.field, value)
            if spec is not None and spec.index is not IndexKind.NONE:
                setattr(contact, spec.index_column, token)
            contact.updated_at = ctx.now
            changed.append(contact)
    if changed:
        session.flush()
        _changed(step, first, changed)
    return transitions


def update_field(step: UpdateField, ctx: RunContext, resumed: bool) -> Transition:
    [transition] = update_group(step, [ctx], resumed)
    return transition
