"""The identity question set at send time (``portal`` of a send request).

The messages domain calls :func:`store_presets` in the same transaction as it writes
the messages: the answer is normalized and hashed here, before anything is stored,
with the tenant's index key bound to the message id, so the database never holds it
and the message's metadata never sees it. At hand-off (:mod:`carepost.portal.handoff`)
the preset becomes the item's question; a sender may still replace it afterwards
through ``POST /api/v1/portal/messages/{id}/question``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.core.database import new_id
from carepost.crypto.keyring import TenantKeys
from carepost.portal.models import PortalItem, PortalPreset
from carepost.portal.schemas import PortalIdentityIn

ANSWER_LABEL = "portal.answer.message"


def normal_answer(answer: str) -> str:
    """Case and runs of whitespace do not matter."""
    return " ".join(answer.casefold().split())


def message_answer_hash(keys: TenantKeys, message_id: uuid.UUID, answer: str) -> str:
    """The keyed hash of an answer set with a message (bound to the message id)."""
    return keys.blind_index(ANSWER_LABEL, f"{message_id}:{normal_answer(answer)}")


def store_presets(
    session: Session,
    keys: TenantKeys,
    presets: Sequence[tuple[uuid.UUID, PortalIdentityIn]],
    *,
    now: datetime,
) -> None:
    """One sealed question and answer hash per message just written."""
    for message_id, identity in presets:
        session.add(
            PortalPreset(
                id=new_id(),
                tenant_id=keys.tenant_id,
                message_id=message_id,
                question=identity.question.strip(),
                answer_hash=message_answer_hash(
                    keys, message_id, identity.answer.get_secret_value()
                ),
                created_at=now,
            )
        )
    if presets:
        session.flush()


def apply_preset(session: Session, item: PortalItem) -> bool:
    """Give a new item the question set with its message (True when there was one)."""
    preset = session.scalar(
        select(PortalPreset).where(
            PortalPreset.tenant_id == item.tenant_id, PortalPreset.message_id == item.message_id
        )
    )
    if preset is None:
        return False
    item.question = preset.question
    item.answer_hash = preset.answer_hash
    session.delete(preset)  # the item holds it now: one copy, not two
    return True
