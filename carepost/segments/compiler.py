"""Compile a parsed segment rule to one set-based SQL statement over a tenant's contacts.

The statement is ``SELECT contacts.id FROM contacts WHERE tenant_id = :t AND <p>``,
where ``<p>`` mirrors the rule: ``all``/``any`` become AND/OR, ``not`` is pushed
down to the conditions (De Morgan), and each condition is a membership test
against the table that answers it, through that table's index:

* a field: ``contacts.id IN (SELECT contact_id FROM contact_tokens WHERE tenant_id
  = :t AND field_key = :k AND token IN <tokens>)`` (primary key (tenant, field,
  token, contact)); "contains all" adds ``GROUP BY contact_id HAVING count(*) = n``;
  a date range is tiled by whole years and months where they fit, single days at
  its edges (:func:`carepost.contacts.tokens.date_range_cover`);
  the tokens are computed here with the tenant's index key and sent as **one**
  array parameter (:mod:`carepost.contacts.id_sets`);
* a list: current memberships (the partial unique index on (list_id, contact_id));
* consent: ``consent_current`` by (tenant, channel, purpose, status, contact);
* suppressed: the contact's email/phone blind index in the tenant's suppressions;
* behaviour: ``contact_events`` by (tenant, kind, occurred_at, contact), grouped
  and counted when a number of times is asked for.

A negated membership is ``NOT IN`` on SQLite (the subquery is materialized once)
and a correlated ``NOT EXISTS`` on PostgreSQL (an anti-join; ``NOT IN`` there is
only fast while the subquery's hash fits in ``work_mem``). Every leaf is TRUE or
FALSE, never NULL, so negation is plain two-valued logic, as in
:mod:`carepost.segments.evaluate`. The statement is tenant-specific (its tokens
are) and is built afresh for each use: nothing is cached.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import InstrumentedAttribute

from carepost.consent.models import ConsentCurrent, Suppression
from carepost.contacts.activity_models import ContactEvent, ListMembership
from carepost.contacts.id_sets import text_in
from carepost.contacts.models import Contact, ContactToken
from carepost.contacts.tokens import (
    FieldType,
    bucket_texts,
    date_bucket_range,
    date_range_cover,
    number_bucket_text,
    number_range_buckets,
    range_tokens,
)
from carepost.crypto.keyring import TenantKeys
from carepost.segments.nodes import (
    UNRECORDED_KIND_ID,
    AllOf,
    AnyOf,
    AttributeCondition,
    ConsentCondition,
    DateRange,
    EventCondition,
    FieldCondition,
    ListCondition,
    Node,
    Not,
    SuppressedCondition,
    range_sizes,
)

ATTRIBUTE_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "journey_stage": Contact.journey_stage,
    "language": Contact.language,
    "email": Contact.email_index,
    "phone": Contact.phone_index,
}
SUPPRESSION_COLUMNS = {"email": Contact.email_index, "sms": Contact.phone_index}
# A probe of a token list longer than this reads the contact's tokens of the field
# instead of seeking each token in the primary key.
PROBE_SEEKS = 8
# A date or number range is probed per candidate only when the conditions before it
# are guessed to leave at most this share of the contacts.
PROBE_RANGES_BELOW = 0.1


class _Compiler:
    def __init__(self, keys: TenantKeys, dialect: str) -> None:
        self.keys = keys
        self.tenant_id: uuid.UUID = keys.tenant_id
        self.dialect = dialect
        # While set, memberships compile to correlated (NOT) EXISTS probes instead
        # of IN lists (SQLite, the conditions after the driving one: see ``top``).
        self.probing = False

    def top(self, node: Node) -> ColumnElement[bool]:
        """The whole rule's condition.

        A top-level conjunction is ordered by estimated selectivity (most selective
        first). On SQLite, when its most selective condition is a positive membership,
        that one stays ``contacts.id IN (subquery)`` — the planner drives the query
        from it, looking candidates up by primary key — and every other condition
        becomes a correlated probe through its per-contact index, run only for the
        candidates still standing. Otherwise SQLite builds each ``IN`` list in full
        (hundreds of thousands of rows for a broad condition) before the first
        contact is looked at. PostgreSQL plans the semi-joins itself: only the order
        changes there.
        """
        if not isinstance(node, AllOf):
            return self.predicate(node)
        children = sorted(node.children, key=selectivity)
        if self.dialect != "sqlite" or not drives(children[0]):
            return and_(*(self.predicate(child) for child in children))
        parts = [self.predicate(children[0])]
        standing = selectivity(children[0])  # the guessed share of candidates left
        for child in children[1:]:
            # A range probe reads several rows per candidate: for many candidates one
            # list of the range's contacts, built once, is cheaper.
            self.probing = standing <= PROBE_RANGES_BELOW or not _is_range(child)
            try:
                parts.append(self.predicate(child))
            finally:
                self.probing = False
            standing *= selectivity(child)
        return and_(*parts)

    def predicate(self, node: Node, negated: bool = False) -> ColumnElement[bool]:
        if isinstance(node, Not):
            return self.predicate(node.child, not negated)
        if isinstance(node, AllOf | AnyOf):
            parts = [self.predicate(child, negated) for child in node.children]
            # not (a and b) = (not a) or (not b); not (a or b) = (not a) and (not b)
            conjunction = isinstance(node, AllOf) != negated
            return and_(*parts) if conjunction else or_(*parts)
        if isinstance(node, FieldCondition):
            return self.field(node, negated)
        if isinstance(node, AttributeCondition):
            return self.attribute(node, negated)
        if isinstance(node, ListCondition):
            return self.membership(self.list_members(node), negated)
        if isinstance(node, ConsentCondition):
            return self.consent(node, negated)
        if isinstance(node, SuppressedCondition):
            return self.suppressed(node, negated)
        return self.event(node, negated)

    def membership(self, source: Select[Any], negated: bool) -> ColumnElement[bool]:
        """``contacts.id`` is (not) one of the ids ``source`` selects (its only column)."""
        if self.probing:
            [column] = source.selected_columns
            probe = source.where(column == Contact.id).exists()
            return ~probe if negated else probe
        if not negated:
            return Contact.id.in_(source)
        if self.dialect == "postgresql":
            [column] = source.selected_columns
            return ~source.where(column == Contact.id).exists()
        return Contact.id.not_in(source)

    # --- fields -------------------------------------------------------------------

    def tokens(self, key: str, field_key: str, texts: list[str]) -> Select[Any]:
        tokens = range_tokens(self.keys.blind_index, key, texts)
        token: ColumnElement[str] | InstrumentedAttribute[str] = ContactToken.token
        if self.probing and self.dialect == "sqlite" and len(tokens) > PROBE_SEEKS:
            # A probe for one contact: through (contact_id, field_key), a few rows,
            # each checked against the token list. ``token || ''`` keeps SQLite off
            # the primary key, where it would seek once per token (66 for an age).
            token = ContactToken.token.concat("")
        return select(ContactToken.contact_id).where(
            ContactToken.tenant_id == self.tenant_id,
            ContactToken.field_key == field_key,
            text_in(token, tokens, self.dialect) if len(tokens) > 1 else token == tokens[0],
        )

    def presence(self, key: str) -> Select[Any]:
        # Any token of the field: only values without bucket tokens carry the marker.
        return select(ContactToken.contact_id).where(
            ContactToken.tenant_id == self.tenant_id, ContactToken.field_key == key
        )

    def field(self, node: FieldCondition, negated: bool) -> ColumnElement[bool]:
        spec = node.spec
        key = spec.key
        if node.op in ("present", "absent"):
            return self.membership(self.presence(key), negated != (node.op == "absent"))
        if node.op in ("any_of", "all_of"):
            texts = sorted(
                {
                    text
                    for value in node.values
                    for text in bucket_texts(
                        spec.type,
                        spec.granularity,
                        [value] if spec.type is FieldType.MULTI_CHOICE else value,
                    )
                }
            )
            source = self.tokens(key, key, texts)
            if node.op == "all_of" and len(texts) > 1:
                source = source.group_by(ContactToken.contact_id).having(func.count() == len(texts))
            return self.membership(source, negated)
        if node.op == "numbers":
            assert node.numbers is not None and spec.granularity is not None
            granularity = spec.granularity
            buckets = number_range_buckets(node.numbers.low, node.numbers.high, granularity)
            texts = [number_bucket_text(index, granularity) for index in buckets]
            return self.membership(self.tokens(key, key, texts), negated)
        assert node.dates is not None and node.bounds is not None
        return self.dates(key, node.dates, node.bounds, spec.granularity or "day", negated)

    def dates(
        self, key: str, wanted: DateRange, bounds: DateRange, granularity: str, negated: bool
    ) -> ColumnElement[bool]:
        direct, complement = range_sizes(wanted, bounds, granularity)
        if direct == 0:
            return true() if negated else false()
        low, high = max(wanted.low, bounds.low), min(wanted.high, bounds.high)
        if direct <= complement:
            texts = [f"d:{bucket}" for bucket in date_range_cover(low, high, granularity)]
            return self.membership(self.tokens(key, key, texts), negated)
        # Shorter as "has a value, and not in one of the other buckets".
        before_end = date_bucket_range(low, granularity)[0] - timedelta(days=1)
        after_start = date_bucket_range(high, granularity)[1]
        texts = [
            f"d:{bucket}"
            for bucket in (
                *date_range_cover(bounds.low, before_end, granularity),
                *date_range_cover(after_start, bounds.high, granularity),
            )
        ]
        present = self.membership(self.presence(key), negated)
        if not texts:
            return present
        outside = self.membership(self.tokens(key, key, texts), not negated)
        return or_(present, outside) if negated else and_(present, outside)

    def attribute(self, node: AttributeCondition, negated: bool) -> ColumnElement[bool]:
        column = ATTRIBUTE_COLUMNS[node.attribute]
        condition: ColumnElement[bool]
        if node.op == "present":
            condition = column.is_not(None)
        elif node.op == "absent":
            condition = column.is_(None)
        else:
            # Guarded so it is never NULL: negation stays two-valued.
            condition = and_(column.is_not(None), column.in_(node.values))
        return not_(condition) if negated else condition

    # --- lists, consent, suppression, events -------------------------------------------

    def list_members(self, node: ListCondition) -> Select[Any]:
        # No tenant condition here: the list id was checked to be the tenant's when
        # the rule was parsed, the outer query keeps ``contacts.tenant_id = :t``, and
        # without it the partial index (list_id, contact_id) answers alone (covering),
        # instead of reading every membership row for its tenant column.
        return select(ListMembership.contact_id).where(
            ListMembership.list_id == node.list_id,
            ListMembership.left_at.is_(None),
        )

    def consent(self, node: ConsentCondition, negated: bool) -> ColumnElement[bool]:
        source = select(ConsentCurrent.contact_id).where(
            ConsentCurrent.tenant_id == self.tenant_id,
            ConsentCurrent.channel == node.channel,
            ConsentCurrent.purpose == node.purpose,
        )
        if node.status == "none":
            return self.membership(source, not negated)
        if node.status in ("granted", "expired"):
            source = source.where(ConsentCurrent.status == "granted")
            unexpired = or_(
                ConsentCurrent.expires_at.is_(None), ConsentCurrent.expires_at > node.now
            )
            source = source.where(unexpired if node.status == "granted" else not_(unexpired))
        else:
            source = source.where(ConsentCurrent.status == node.status)
        return self.membership(source, negated)

    def suppressed(self, node: SuppressedCondition, negated: bool) -> ColumnElement[bool]:
        channels = ("email", "sms") if node.channel == "any" else (node.channel,)
        parts = []
        for channel in channels:
            column = SUPPRESSION_COLUMNS[channel]
            listed = select(Suppression.address_index).where(
                Suppression.tenant_id == self.tenant_id, Suppression.channel == channel
            )
            parts.append(and_(column.is_not(None), column.in_(listed)))
        condition = or_(*parts) if len(parts) > 1 else parts[0]
        return not_(condition) if negated else condition

    def event(self, node: EventCondition, negated: bool) -> ColumnElement[bool]:
        kind_ids = [kind_id for kind_id in node.kind_ids if kind_id != UNRECORDED_KIND_ID]
        if node.kind_ids and not kind_ids:
            # Only built-in kinds the tenant has no event of: everyone counts 0.
            holds = node.at_least == 0
            return true() if holds != negated else false()
        source = select(ContactEvent.contact_id).where(ContactEvent.tenant_id == self.tenant_id)
        if len(kind_ids) == 1:
            source = source.where(ContactEvent.kind_id == kind_ids[0])
        elif kind_ids:
            source = source.where(ContactEvent.kind_id.in_(kind_ids))
        if node.campaign_id is not None:
            source = source.where(ContactEvent.campaign_id == node.campaign_id)
        if node.since is not None:
            source = source.where(ContactEvent.occurred_at >= node.since)
        if node.at_most is None:
            if node.at_least == 0:
                return false() if negated else true()
            return self.membership(_at_least(source, node.at_least), negated)
        if node.at_least == 0:
            # "at most m" is "not at least m + 1": contacts without any event count too.
            return self.membership(_at_least(source, node.at_most + 1), not negated)
        counted = source.group_by(ContactEvent.contact_id).having(
            func.count().between(node.at_least, node.at_most)
        )
        return self.membership(counted, negated)


def _at_least(source: Select[Any], times: int) -> Select[Any]:
    if times == 1:
        return source
    return source.group_by(ContactEvent.contact_id).having(func.count() >= times)


# --- selectivity -------------------------------------------------------------------

# Guessed shares of a tenant's contacts a condition holds for, to order a conjunction
# (most selective first) and pick the condition SQLite drives from. Guesses from
# the rule alone (no statistics are read: a count must not cost extra queries); only
# their order matters.
_GUESS_LIST = 0.25
_GUESS_CONSENT = 0.5
_GUESS_EVENT = 0.3
_GUESS_RANGE = 0.4
_GUESS_PRESENT = 0.8


def selectivity(node: Node, negated: bool = False) -> float:
    """The guessed share of contacts ``node`` (negated: its opposite) holds for."""
    if isinstance(node, Not):
        return selectivity(node.child, not negated)
    if isinstance(node, AllOf | AnyOf):
        shares = [selectivity(child, negated) for child in node.children]
        if isinstance(node, AllOf) != negated:
            product = 1.0
            for share in shares:
                product *= share
            return product
        return min(1.0, sum(shares))
    share = _condition_share(node)
    return 1.0 - share if negated else share


def _condition_share(node: Node) -> float:
    if isinstance(node, FieldCondition):
        spec = node.spec
        if node.op == "present":
            return _GUESS_PRESENT
        if node.op == "absent":
            return 1.0 - _GUESS_PRESENT
        if node.op in ("any_of", "all_of"):
            if spec.type is FieldType.BOOLEAN:
                return 0.5
            if spec.choices:
                one = 1.0 / len(spec.choices)
                count = len(node.values)
                return one**count if node.op == "all_of" else min(1.0, one * count)
            return min(1.0, 0.01 * len(node.values))  # free text: zip codes, names
        return _GUESS_RANGE
    if isinstance(node, ListCondition):
        return _GUESS_LIST
    if isinstance(node, ConsentCondition):
        return 1.0 - _GUESS_CONSENT if node.status == "none" else _GUESS_CONSENT
    if isinstance(node, EventCondition):
        return 1.0 - _GUESS_EVENT if node.at_least == 0 else _GUESS_EVENT
    if isinstance(node, SuppressedCondition):
        return 0.05
    assert isinstance(node, AttributeCondition)
    return 0.8 if node.op == "present" else 0.2


def _is_range(node: Node) -> bool:
    return isinstance(node, FieldCondition) and node.op in ("dates", "numbers")


def drives(node: Node) -> bool:
    """Whether ``node`` compiles to one positive ``contacts.id IN (subquery)`` that
    SQLite can drive a query from (look candidates up by primary key)."""
    if isinstance(node, FieldCondition):
        return node.op in ("present", "any_of", "all_of", "numbers")
    if isinstance(node, ListCondition):
        return True
    if isinstance(node, ConsentCondition):
        return node.status != "none"
    if isinstance(node, EventCondition):
        return node.at_most is None and node.at_least > 0
    return False


def compile_predicate(node: Node, keys: TenantKeys, dialect: str) -> ColumnElement[bool]:
    """The WHERE condition on ``contacts`` (beyond the tenant) that a rule stands for."""
    return _Compiler(keys, dialect).top(node)


def compile_segment(node: Node, keys: TenantKeys, dialect: str) -> Select[uuid.UUID]:
    """``SELECT contacts.id`` of the tenant's contacts matching the rule."""
    return select(Contact.id).where(
        Contact.tenant_id == keys.tenant_id, compile_predicate(node, keys, dialect)
    )


def compile_count(node: Node, keys: TenantKeys, dialect: str) -> Select[int]:
    """``SELECT count(*)`` of the tenant's contacts matching the rule."""
    return (
        select(func.count())
        .select_from(Contact)
        .where(Contact.tenant_id == keys.tenant_id, compile_predicate(node, keys, dialect))
    )
