"""Workflow triggers: how a workflow is entered on its own, their configuration and
the hooks and jobs that enroll contacts (docs/workflows.md, "Triggers").

One trigger per workflow (``workflow_triggers``), found by ``(tenant, kind, ref)``:

* ``list_join`` ``{list_id}`` -- a contact joins the list
  (:func:`carepost.contacts.lists.change_members` calls :func:`enroll_on` with the
  ids its INSERT … RETURNING wrote: one enrollment INSERT per batch);
* ``segment_entry`` ``{segment_id}`` -- a contact is in the dynamic segment and not
  yet in the workflow: the ``workflows.segment_entries`` job (every minute) runs the
  segment's compiled SQL with ``NOT EXISTS`` a run, paged by contact id;
* ``date_milestone`` ``{field, days_before, yearly}`` -- a contact date field (a
  custom ``date``/``datetime`` field tokenized by day, or ``birth_date``) is
  ``days_before`` days from today (UTC), every year when ``yearly``: the
  ``workflows.date_milestones`` job (hourly) matches the HMAC day tokens of
  ``contact_tokens`` (one token, or one per year for ``yearly``): no decryption;
* ``form_submitted`` ``{form_id}`` -- :func:`carepost.workflows.wakeups.on_form_submitted`;
* ``event`` ``{name}`` -- a custom contact event of that name is posted.

A trigger names no PHI: ids, field keys and numbers.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import Table, and_, delete, exists, insert, literal, select, update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts import custom_fields
from carepost.contacts.id_sets import dialect_of
from carepost.contacts.models import Contact, ContactToken
from carepost.contacts.tokens import FieldType, token_label
from carepost.contacts.values import EARLIEST_DATE
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys, current_tenant_keys
from carepost.segments.compiler import compile_predicate
from carepost.segments.service import segment_rule
from carepost.workflows import triggers
from carepost.workflows.models import RunStatus, Workflow, WorkflowRun, WorkflowStatus
from carepost.workflows.service import get_workflow, version_graph
from carepost.workflows.trigger_models import WorkflowTrigger, WorkflowTriggerBaseline

log = get_logger(__name__)
PAGE = triggers.ENROLL_BATCH


class ListJoin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["list_join"]
    list_id: uuid.UUID


class SegmentEntry(BaseModel):
    """``existing_members``: ``enroll`` takes everyone in the segment at the first
    evaluation; ``skip`` only contacts who enter it after the trigger was set (the
    members at that moment are remembered in ``workflow_trigger_baseline``)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["segment_entry"]
    segment_id: uuid.UUID
    existing_members: Literal["enroll", "skip"] = "enroll"


class DateMilestone(BaseModel):
    """``days_before`` days before the field's date (0: on the day); every year when
    ``yearly`` (birthdays, anniversaries), else once for the date itself."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["date_milestone"]
    field: str = Field(min_length=1, max_length=40)
    days_before: int = Field(default=0, ge=0, le=365)
    yearly: bool = True


class FormSubmitted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["form_submitted"]
    form_id: uuid.UUID


EVENT_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class NamedEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["event"]
    name: str = Field(json_schema_extra={"pattern": f"^{EVENT_NAME.pattern}$"})

    @field_validator("name")
    @classmethod
    def _event_name(cls, value: str) -> str:
        if not EVENT_NAME.fullmatch(value):
            raise PydanticCustomError(
                "event_name",
                "use up to 64 lower-case letters, digits, '_', '.' or '-', starting with a "
                "letter (for example portal_login)",
            )
        return value


TriggerSpec = Annotated[
    ListJoin | SegmentEntry | DateMilestone | FormSubmitted | NamedEvent,
    Field(discriminator="kind"),
]
TRIGGER_ADAPTER: TypeAdapter[Any] = TypeAdapter(TriggerSpec)

for _name, _description in (
    ("list_join", "a contact joined the workflow's list"),
    ("segment_entry", "a contact entered the workflow's dynamic segment"),
    ("date_milestone", "a contact date field's milestone (birthday, N days before a date)"),
    ("form_submitted", "a contact submitted the workflow's form"),
    ("event", "a custom contact event of the workflow's name was posted"),
    ("workflow_goto", "moved here by a Go To step of another workflow"),
):
    if _name not in triggers.TRIGGERS:
        triggers.register_trigger(_name, _description)


def _ref(spec: Any) -> str:
    if isinstance(spec, ListJoin):
        return str(spec.list_id)
    if isinstance(spec, SegmentEntry):
        return str(spec.segment_id)
    if isinstance(spec, DateMilestone):
        return spec.field
    if isinstance(spec, FormSubmitted):
        return str(spec.form_id)
    return cast(NamedEvent, spec).name


DATE_TYPES = (FieldType.DATE, FieldType.DATETIME)


def check_trigger(session: Session, tenant_id: uuid.UUID, raw: Any) -> Any:
    """The trigger as its model, or a 422 pointing into ``#/body/trigger``."""
    try:
        spec = TRIGGER_ADAPTER.validate_python(raw)
    except ValidationError as invalid:
        raise ValidationFailed(
            "the trigger is not valid",
            errors=[
                FieldError("/".join(["#/body/trigger", *(str(p) for p in e["loc"][1:])]), e["msg"])
                for e in invalid.errors()
            ],
        ) from None
    if isinstance(spec, ListJoin):
        from carepost.contacts.lists import get_list

        _exists(lambda: get_list(session, tenant_id, spec.list_id), "list_id", "no such list")
    elif isinstance(spec, SegmentEntry):
        _exists(
            lambda: segment_rule(session, tenant_id, spec.segment_id),
            "segment_id",
            "no such segment (or its rule is no longer valid)",
        )
    elif isinstance(spec, DateMilestone) and spec.field != "birth_date":
        field = custom_fields.load_schema(session, tenant_id).get(spec.field)
        if field is None or field.type not in DATE_TYPES:
            raise ValidationFailed("no such date field", field="#/body/trigger/field")
        if field.sealed or field.granularity != "day":
            raise ValidationFailed(
                "a date milestone needs a field tokenized by day (not sealed, granularity "
                "day): the job matches day tokens, it never decrypts",
                field="#/body/trigger/field",
            )
    return spec


def _exists(load: Any, name: str, message: str) -> None:
    try:
        load()
    except CarepostError:
        raise ValidationFailed(message, field=f"#/body/trigger/{name}") from None


def get_trigger(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> Any:
    """The workflow's trigger as a JSON object, or None (enrolled by hand or the API)."""
    get_workflow(session, tenant_id, workflow_id)
    row = session.get(WorkflowTrigger, workflow_id)
    return None if row is None or row.tenant_id != tenant_id else row.config


def set_trigger(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    raw: Any,
    *,
    actor: audit.Actor,
) -> Any:
    """Set (or with None remove) the workflow's trigger, checked; the stored config."""
    workflow = get_workflow(session, tenant_id, workflow_id)
    row = session.get(WorkflowTrigger, workflow.id)
    before = row.config if row is not None else None
    if raw is None:
        if row is not None:
            session.delete(row)
        config = None
    else:
        spec = check_trigger(session, tenant_id, raw)
        config = spec.model_dump(mode="json")
        if row is None:
            row = WorkflowTrigger(tenant_id=tenant_id, workflow_id=workflow.id)
            session.add(row)
        row.kind, row.ref, row.config = spec.kind, _ref(spec), config
        row.updated_at, row.checked_at = utcnow(), None
    session.flush()
    if config != before:
        _reset_baseline(session, workflow, config)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="workflow.trigger",
        object_type="workflow",
        object_id=workflow.id,
        details={"kind": config["kind"] if config else None},
    )
    return config


def _active(session: Session, tenant_id: uuid.UUID | None, kind: str, ref: str | None) -> Any:
    query = (
        select(Workflow, WorkflowTrigger)
        .join(WorkflowTrigger, WorkflowTrigger.workflow_id == Workflow.id)
        .where(WorkflowTrigger.kind == kind, Workflow.status == WorkflowStatus.ACTIVE)
        .order_by(Workflow.id)
    )
    if tenant_id is not None:
        query = query.where(WorkflowTrigger.tenant_id == tenant_id)
    if ref is not None:
        query = query.where(WorkflowTrigger.ref == ref)
    return session.execute(query).all()


def enroll_on(
    session: Session,
    tenant_id: uuid.UUID,
    kind: str,
    ref: str,
    contact_ids: Sequence[uuid.UUID],
    now: datetime | None = None,
) -> int:
    """Enroll these contacts (the tenant's, checked by the caller) into every active
    workflow whose trigger is ``kind`` on ``ref``; how many runs started."""
    if not contact_ids:
        return 0
    enrolled = 0
    for workflow, _ in _active(session, tenant_id, kind, ref):
        enrolled += triggers.enroll_contacts(
            session, workflow, contact_ids, source=kind, now=now
        ).enrolled
    return enrolled


# --- periodic triggers --------------------------------------------------------------


def _not_in(workflow: Workflow) -> Any:
    return ~exists().where(
        and_(
            WorkflowRun.workflow_id == workflow.id,
            WorkflowRun.tenant_id == workflow.tenant_id,
            WorkflowRun.contact_id == Contact.id,
        )
    )


def _baseline_of(workflow: Workflow) -> Any:
    return and_(
        WorkflowTriggerBaseline.workflow_id == workflow.id,
        WorkflowTriggerBaseline.tenant_id == workflow.tenant_id,
    )


def _reset_baseline(session: Session, workflow: Workflow, config: Any) -> None:
    """A changed trigger forgets the old baseline; a ``segment_entry`` trigger set with
    ``existing_members: skip`` remembers the segment's members now (one INSERT … SELECT)."""
    session.execute(delete(WorkflowTriggerBaseline).where(_baseline_of(workflow)))
    if not config or config.get("kind") != "segment_entry":
        return
    spec = TRIGGER_ADAPTER.validate_python(config)
    if spec.existing_members != "skip":
        return
    keys = current_tenant_keys()
    predicate = compile_predicate(
        segment_rule(session, keys.tenant_id, spec.segment_id), keys, dialect_of(session)
    )
    members = select(
        literal(workflow.id, WorkflowTriggerBaseline.workflow_id.type),
        Contact.id,
        literal(workflow.tenant_id, WorkflowTriggerBaseline.tenant_id.type),
    ).where(Contact.tenant_id == workflow.tenant_id, predicate)
    session.execute(
        insert(WorkflowTriggerBaseline).from_select(
            ["workflow_id", "contact_id", "tenant_id"], members
        )
    )


def enroll_segment_entries(
    session: Session,
    keys: TenantKeys,
    workflow: Workflow,
    segment_id: uuid.UUID,
    now: datetime,
    *,
    skip_existing: bool = False,
) -> int:
    """Enroll the segment's members not yet in the workflow (set-based pages). With
    ``skip_existing`` the baseline's contacts who left the segment are forgotten first
    and those still in it are not enrolled."""
    predicate = compile_predicate(
        segment_rule(session, keys.tenant_id, segment_id), keys, dialect_of(session)
    )
    conditions = [Contact.tenant_id == keys.tenant_id, predicate, _not_in(workflow)]
    if skip_existing:
        still_member = (
            select(Contact.id)
            .where(
                Contact.id == WorkflowTriggerBaseline.contact_id,
                Contact.tenant_id == keys.tenant_id,
                predicate,
            )
            .exists()
        )
        session.execute(
            delete(WorkflowTriggerBaseline).where(_baseline_of(workflow), ~still_member)
        )
        conditions.append(
            ~exists().where(
                _baseline_of(workflow), WorkflowTriggerBaseline.contact_id == Contact.id
            )
        )
    enrolled, after = 0, None
    while True:
        query = select(Contact.id).where(*conditions)
        if after is not None:
            query = query.where(Contact.id > after)
        page = list(session.scalars(query.order_by(Contact.id).limit(PAGE)))
        if not page:
            return enrolled
        enrolled += triggers.enroll_contacts(
            session, workflow, page, source="segment_entry", now=now
        ).enrolled
        after = page[-1]


def milestone_days(today: date, spec: DateMilestone) -> list[date]:
    """The stored dates whose milestone is today: the date ``days_before`` ahead, and
    for ``yearly`` the same month and day in every year up to it (29 February is
    celebrated on 28 February in common years)."""
    target = today + timedelta(days=spec.days_before)
    if not spec.yearly:
        return [target]
    leap_day_too = (target.month, target.day) == (2, 28) and not _leap(target.year)
    found = []
    for year in range(EARLIEST_DATE.year, target.year + 1):
        if (target.month, target.day) != (2, 29) or _leap(year):
            found.append(target.replace(year=year))
        if leap_day_too and _leap(year):
            found.append(date(year, 2, 29))
    return found


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def enroll_milestones(
    session: Session, keys: TenantKeys, workflow: Workflow, spec: DateMilestone, now: datetime
) -> int:
    """Enroll the contacts whose date field's milestone is today (UTC), by day tokens.

    Yearly milestones come back every year, and the no re-entry rule still holds: a
    contact's ``completed`` run of an earlier year is *re-armed* (back to the entry,
    due now) instead of a second run being inserted. Its earlier visits stay in
    ``visited`` prefixed with ``~`` (not a step id, so loop prevention ignores them),
    so visit numbers, history ``seq`` and the outbox keys of its emails keep growing:
    this year's birthday email is never taken for last year's. An ``exited`` run
    (removed by hand, archived, an error) is never re-armed.
    """
    label = token_label(spec.field)
    tokens = [
        keys.bucket_token(label, f"d:{day.isoformat()}") for day in milestone_days(now.date(), spec)
    ]
    holders = (
        select(ContactToken.contact_id)
        .where(
            ContactToken.tenant_id == keys.tenant_id,
            ContactToken.field_key == spec.field,
            ContactToken.token.in_(tokens),
        )
        .distinct()
    )
    ids = sorted(set(session.scalars(holders)))
    enrolled = 0
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        enrolled += triggers.enroll_contacts(
            session, workflow, page, source="date_milestone", now=now
        ).enrolled
        if spec.yearly:
            enrolled += _rearm(session, workflow, page, now)
    return enrolled


def _rearm(
    session: Session, workflow: Workflow, contact_ids: list[uuid.UUID], now: datetime
) -> int:
    day_start = datetime.combine(now.date(), datetime.min.time(), tzinfo=now.tzinfo)
    start = version_graph(session, workflow.id, workflow.current_version).start
    runs = session.scalars(
        select(WorkflowRun).where(
            WorkflowRun.tenant_id == workflow.tenant_id,
            WorkflowRun.workflow_id == workflow.id,
            WorkflowRun.contact_id.in_(contact_ids),
            WorkflowRun.status == RunStatus.COMPLETED,
            WorkflowRun.entered_at < day_start,
        )
    ).all()
    for run in runs:
        past = [s if s.startswith("~") else f"~{s}" for s in (run.visited or [])]
        run.visited = past
        run.sent, run.status, run.current_step = {}, RunStatus.ACTIVE, start
        run.version, run.entered_at, run.wake_at = workflow.current_version, now, now
        run.ended_at, run.wake_reason, run.source = None, "", "date_milestone"
    session.flush()
    return len(runs)


def run_periodic(runtime: Runtime, kind: str, *, now: datetime | None = None) -> int:
    """Evaluate every active workflow's ``segment_entry`` or ``date_milestone`` trigger,
    one tenant transaction each; how many contacts were enrolled (a failing trigger,
    its segment deleted since, is logged and skipped: it never stops the others)."""
    now = now or utcnow()
    with runtime.database.session() as session:
        due = [(row.tenant_id, row.workflow_id) for _, row in _active(session, None, kind, None)]
    by_tenant: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for tenant_id, workflow_id in due:
        by_tenant[tenant_id].append(workflow_id)
    enrolled = 0
    for tenant_id, workflow_ids in by_tenant.items():
        for workflow_id in workflow_ids:
            try:
                with runtime.tenant_session(tenant_id) as session:
                    enrolled += _evaluate(session, current_tenant_keys(), workflow_id, now)
            except CarepostError as failed:
                log.warning(
                    "workflows.trigger_failed",
                    workflow_id=str(workflow_id),
                    kind=kind,
                    code=failed.code,
                )
    return enrolled


def _evaluate(session: Session, keys: TenantKeys, workflow_id: uuid.UUID, now: datetime) -> int:
    row = session.get(WorkflowTrigger, workflow_id)
    workflow = session.get(Workflow, workflow_id)
    if row is None or workflow is None or workflow.status != WorkflowStatus.ACTIVE:
        return 0
    spec = TRIGGER_ADAPTER.validate_python(row.config)
    if isinstance(spec, SegmentEntry):
        count = enroll_segment_entries(
            session,
            keys,
            workflow,
            spec.segment_id,
            now,
            skip_existing=spec.existing_members == "skip",
        )
    elif isinstance(spec, DateMilestone):
        count = enroll_milestones(session, keys, workflow, spec, now)
    else:
        return 0
    session.execute(
        update(cast(Table, WorkflowTrigger.__table__))
        .where(WorkflowTrigger.__table__.c.workflow_id == workflow_id)
        .values(checked_at=now)
    )
    return count
