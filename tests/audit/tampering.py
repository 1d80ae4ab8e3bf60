"""Helpers for audit trail tests: appending events and tampering with them in raw SQL."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Uuid, bindparam, select, text
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.models import AuditEvent
from carepost.core.database import UTCDateTime

ALICE = audit.Actor(
    type="user", id="u-alice", label="alice@clinic.example", client_address="10.0.0.1"
)
BOB = audit.Actor(type="user", id="u-bob", label="bob@clinic.example", client_address="10.0.0.2")
API = audit.Actor(type="api_key", id="k-ehr", label="EHR sync")


def append(
    session: Session,
    tenant_id: uuid.UUID | None,
    count: int,
    *,
    actor: audit.Actor = ALICE,
    action: str = "contact.view",
    **fields: Any,
) -> list[AuditEvent]:
    """``count`` events on the tenant's chain, object ids numbered from 1."""
    return [
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            object_type=fields.get("object_type", "contact"),
            object_id=fields.get("object_id", f"c-{number}"),
            outcome=fields.get("outcome", "success"),
            reason=fields.get("reason", ""),
            details=fields.get("details", {"fields": ["first_name"]}),
        )
        for number in range(1, count + 1)
    ]


class Tamper:
    """Raw SQL against the trail, behind the service's back, as an intruder would."""

    def __init__(self, session: Session, chain: str) -> None:
        self.session = session
        self.chain = chain
        self.postgres = session.get_bind().dialect.name == "postgresql"

    def _run(self, sql: str, **params: Any) -> None:
        statement = text(sql)
        typed = {"uuid_value": Uuid(), "time_value": UTCDateTime()}
        statement = statement.bindparams(
            *(bindparam(name, type_=typed[name]) for name in params if name in typed)
        )
        self.session.execute(statement, {"chain": self.chain, **params})

    def set(self, seq: int, column: str, value: Any) -> None:
        if column in {"id", "tenant_id"}:
            target = ":uuid_value"
            params = {"uuid_value": value}
        elif column == "occurred_at":
            target, params = ":time_value", {"time_value": value}
        elif column == "details":
            target = "CAST(:value AS JSON)" if self.postgres else ":value"
            params = {"value": value}
        else:
            target, params = ":value", {"value": value}
        self._run(
            f"UPDATE audit_events SET {column} = {target} WHERE chain = :chain AND seq = :seq",
            seq=seq,
            **params,
        )

    def delete(self, seq: int) -> None:
        self._run("DELETE FROM audit_events WHERE chain = :chain AND seq = :seq", seq=seq)

    def swap(self, first: int, second: int) -> None:
        # Through a free seq: the (chain, seq) constraint holds at every statement.
        self.set(first, "seq", -1)
        self.set(second, "seq", first)
        self.set(-1, "seq", second)

    def set_head(self, **values: Any) -> None:
        assignments = ", ".join(f"{column} = :{column}" for column in values)
        self._run(f"UPDATE audit_heads SET {assignments} WHERE chain = :chain", **values)

    def delete_head(self) -> None:
        self._run("DELETE FROM audit_heads WHERE chain = :chain")

    def event_id(self, seq: int) -> str:
        found = self.session.scalar(
            select(AuditEvent.id).where(AuditEvent.chain == self.chain, AuditEvent.seq == seq)
        )
        assert found is not None
        return str(found)

    def last_seq(self) -> int:
        return int(
            self.session.execute(
                text("SELECT MAX(seq) FROM audit_events WHERE chain = :chain"),
                {"chain": self.chain},
            ).scalar_one()
        )
