"""The visual segment builder's form, converted to and from the rule JSON.

The builder is a form of condition rows under a top-level "match all / any of", with
one level of nested group ("any of" inside "all"). Each row names a kind (field,
journey stage, list, consent, suppressed, event) and the inputs of that kind; every
row can be negated. The form is the whole state: each change posts all of it, the
server converts it into a rule (:func:`to_rule`), checks it with the real parser and
maps each fault's pointer back to its row (:meth:`Builder.row_for`). A rule written in
the JSON editor comes back into rows with :func:`from_rule` when it fits the form
(two levels, one event kind), else it stays JSON-only.

Nothing here touches the database: the field types come in as a mapping, so the
conversion is pure and tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

from carepost.contacts.tokens import FieldType
from carepost.contacts.values import FieldSpec

KINDS: tuple[tuple[str, str], ...] = (
    ("field", "Field"),
    ("stage", "Journey stage"),
    ("list", "List"),
    ("consent", "Consent"),
    ("suppressed", "Suppressed"),
    ("event", "Behaviour (events)"),
)
OP_LABELS: dict[str, str] = {
    "equals": "is",
    "in": "is one of",
    "contains_any": "contains any of",
    "contains_all": "contains all of",
    "between": "is between",
    "on": "is on",
    "before": "is before",
    "after": "is after",
    "within_last_days": "is within the last N days",
    "age_between": "age is between",
    "is_set": "has a value",
    "is_not_set": "has no value",
}
PRESENCE = ("is_set", "is_not_set")
LIST_OPS = ("in", "contains_any", "contains_all")
PAIR_OPS = ("between", "age_between")
DATE_OPS = ("on", "before", "after", "between", "within_last_days")
TYPE_OPS: dict[FieldType, tuple[str, ...]] = {
    FieldType.STRING: ("equals", "in", *PRESENCE),
    FieldType.CHOICE: ("equals", "in", *PRESENCE),
    FieldType.MULTI_CHOICE: ("contains_any", "contains_all", *PRESENCE),
    FieldType.BOOLEAN: ("equals", *PRESENCE),
    FieldType.NUMBER: ("equals", "between", *PRESENCE),
    FieldType.DATE: (*DATE_OPS, *PRESENCE),
    FieldType.DATETIME: (*DATE_OPS, *PRESENCE),
}
# Standard attributes a "field" row may name, as the parser allows them.
STANDARD: dict[str, tuple[str, tuple[str, ...]]] = {
    "birth_date": ("Birth date", ("age_between", *DATE_OPS, *PRESENCE)),
    "language": ("Language", ("equals", "in", *PRESENCE)),
    "email": ("Email address", PRESENCE),
    "phone": ("Phone number", PRESENCE),
}
MAX_ROWS = 50
_ROW_ID = re.compile(r"^[0-9]{1,3}$")


@dataclass
class Row:
    """One condition row; every value is the text the form holds (checked by the parser)."""

    id: int
    kind: str = "field"
    negate: bool = False
    group: int = 0  # 0: top level; n: inside nested group n
    field: str = ""
    op: str = ""
    v1: str = ""
    v2: str = ""
    values: list[str] = default(default_factory=list)
    list_id: str = ""
    channel: str = "email"
    purpose: str = "marketing"
    status: str = "granted"
    suppressed: str = "any"
    event_kind: str = ""
    count_op: str = "at_least"
    times: str = "1"
    window: str = "days"
    days: str = "90"
    since: str = ""
    campaign: str = ""
    pointer: str = ""  # where this row's condition sits in the rule (set by to_rule)


@dataclass
class Group:
    id: int
    match: str = "any"
    negate: bool = False
    rows: list[Row] = default(default_factory=list)
    pointer: str = ""


@dataclass
class Builder:
    match: str = "all"
    items: list[Row | Group] = default(default_factory=list)

    def rows(self) -> list[Row]:
        found: list[Row] = []
        for item in self.items:
            found.extend(item.rows if isinstance(item, Group) else [item])
        return found

    def next_id(self) -> int:
        ids = [row.id for row in self.rows()] + [
            item.id for item in self.items if isinstance(item, Group)
        ]
        return max(ids, default=0) + 1

    def row_for(self, pointer: str) -> Row | Group | None:
        """The row (or nested group) a fault's pointer lies in: the longest match."""
        best: Row | Group | None = None
        candidates: list[Row | Group] = [*self.rows()]
        candidates += [item for item in self.items if isinstance(item, Group)]
        for candidate in candidates:
            prefix = candidate.pointer
            inside = pointer == prefix or pointer.startswith(prefix + "/")
            if prefix and inside and (best is None or len(prefix) > len(best.pointer)):
                best = candidate
        return best


# --- the form -> a builder ---------------------------------------------------------


def _one(data: Mapping[str, Any], name: str, default: str = "") -> str:
    value = data.get(name, default)
    if isinstance(value, list):
        value = value[-1] if value else default
    return value if isinstance(value, str) else default


def _many(data: Mapping[str, Any], name: str) -> list[str]:
    value = data.get(name, [])
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, str)]


def _ids(data: Mapping[str, Any], name: str) -> list[int]:
    return list(dict.fromkeys(int(v) for v in _many(data, name) if _ROW_ID.match(v)))[:MAX_ROWS]


def read_form(data: Mapping[str, Any], prefix: str = "") -> Builder:
    """The builder as the form posted it (unknown or malformed parts fall back to defaults:
    the parser, not this, says what is wrong with a value). ``prefix`` starts every
    input's name when one form holds several builders (a workflow branch's conditions)."""
    builder = Builder(match="any" if _one(data, prefix + "match") == "any" else "all")
    groups: dict[int, Group] = {}
    for group_id in _ids(data, prefix + "group"):
        groups[group_id] = Group(
            group_id,
            match="all" if _one(data, f"{prefix}g{group_id}_match") == "all" else "any",
            negate=_one(data, f"{prefix}g{group_id}_not") == "1",
        )
    placed: set[int] = set()
    for row_id in _ids(data, prefix + "row"):
        p = f"{prefix}r{row_id}_"
        row = Row(
            row_id,
            kind=_one(data, p + "kind", "field"),
            negate=_one(data, p + "not") == "1",
            field=_one(data, p + "field"),
            op=_one(data, p + "op"),
            v1=_one(data, p + "v1").strip(),
            v2=_one(data, p + "v2").strip(),
            values=[v for v in _many(data, p + "values") if v.strip()],
            list_id=_one(data, p + "list"),
            channel=_one(data, p + "channel", "email"),
            purpose=_one(data, p + "purpose", "marketing"),
            status=_one(data, p + "status", "granted"),
            suppressed=_one(data, p + "suppressed", "any"),
            event_kind=_one(data, p + "event_kind"),
            count_op="at_most" if _one(data, p + "count_op") == "at_most" else "at_least",
            times=_one(data, p + "times", "1").strip(),
            window=_one(data, p + "window", "days"),
            days=_one(data, p + "days", "90").strip(),
            since=_one(data, p + "since").strip(),
            campaign=_one(data, p + "campaign").strip(),
        )
        group_text = _one(data, p + "group")
        group_id = int(group_text) if _ROW_ID.match(group_text) else 0
        group = groups.get(group_id)
        if group is None:
            builder.items.append(row)
            continue
        row.group = group_id
        if group_id not in placed:
            placed.add(group_id)
            builder.items.append(group)
        group.rows.append(row)
    return builder


def apply_action(builder: Builder, action: str) -> Builder:
    """Add or remove a row or group (the builder's buttons post ``action``)."""
    if len(builder.rows()) >= MAX_ROWS and action.startswith("add"):
        return builder
    if action == "add":
        builder.items.append(Row(builder.next_id()))
    elif action == "add_group":
        group_id = builder.next_id()
        group = Group(group_id, match="any" if builder.match == "all" else "all")
        group.rows = [Row(group_id + 1, group=group_id), Row(group_id + 2, group=group_id)]
        builder.items.append(group)
    elif action.startswith("add_to:"):
        target = action.removeprefix("add_to:")
        for item in builder.items:
            if isinstance(item, Group) and str(item.id) == target:
                item.rows.append(Row(builder.next_id(), group=item.id))
    elif action.startswith("remove:"):
        target = action.removeprefix("remove:")
        kept: list[Row | Group] = []
        for item in builder.items:
            if isinstance(item, Group):
                if str(item.id) == target:
                    continue
                item.rows = [row for row in item.rows if str(row.id) != target]
                if item.rows:
                    kept.append(item)
            elif str(item.id) != target:
                kept.append(item)
        builder.items = kept
    return builder


# --- a builder -> the rule ---------------------------------------------------------


def field_type(key: str, fields: Mapping[str, FieldSpec]) -> FieldType | None:
    if key == "birth_date":
        return FieldType.DATE
    if key == "language":
        return FieldType.STRING
    spec = fields.get(key)
    return spec.type if spec is not None else None


def ops_for(key: str, fields: Mapping[str, FieldSpec]) -> tuple[str, ...]:
    """The operators the form offers for a field (the parser's table, by type)."""
    if key in STANDARD:
        return STANDARD[key][1]
    spec = fields.get(key)
    if spec is None:
        return ("equals",)
    return PRESENCE if spec.sealed else TYPE_OPS[spec.type]


def _number(text: str) -> Any:
    """A number when the text is one; else the text, for the parser to name the fault."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _whole(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _split(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _field_rule(row: Row, fields: Mapping[str, FieldSpec]) -> dict[str, Any]:
    ops = ops_for(row.field, fields)
    op = row.op if row.op in ops else ops[0]
    row.op = op
    rule: dict[str, Any] = {"field": row.field, "op": op}
    if op in PRESENCE:
        return rule
    kind = field_type(row.field, fields)
    if op in LIST_OPS:
        rule["value"] = _split(row.values) if kind is FieldType.STRING else row.values
    elif op == "age_between":
        rule["value"] = [_whole(row.v1), _whole(row.v2)]
    elif op == "between":
        convert = _number if kind is FieldType.NUMBER else str
        rule["value"] = [convert(row.v1), convert(row.v2)]
    elif op == "within_last_days":
        rule["value"] = _whole(row.v1)
    elif kind is FieldType.NUMBER:
        rule["value"] = _number(row.v1)
    elif kind is FieldType.BOOLEAN:
        rule["value"] = {"true": True, "false": False}.get(row.v1, row.v1)
    else:
        rule["value"] = row.v1
    return rule


def condition(row: Row, fields: Mapping[str, FieldSpec]) -> dict[str, Any]:
    """The rule of one row (without its NOT)."""
    if row.kind == "stage":
        return {"field": "journey_stage", "op": "in", "value": row.values}
    if row.kind == "list":
        return {"list": row.list_id}
    if row.kind == "consent":
        return {"consent": {"channel": row.channel, "purpose": row.purpose, "status": row.status}}
    if row.kind == "suppressed":
        return {"suppressed": row.suppressed}
    if row.kind == "event":
        event: dict[str, Any] = {}
        if row.event_kind:
            event["kind"] = row.event_kind
        if row.campaign:
            event["campaign_id"] = row.campaign
        event[row.count_op] = _whole(row.times)
        if row.window == "days":
            event["within_last_days"] = _whole(row.days)
        elif row.window == "since":
            event["since"] = row.since
        return {"event": event}
    row.kind = "field"
    return _field_rule(row, fields)


def to_rule(builder: Builder, fields: Mapping[str, FieldSpec]) -> dict[str, Any]:
    """The rule the builder shows; each row and group learns its pointer in it."""
    entries: list[Any] = []
    base = f"rule/{builder.match}"
    for index, item in enumerate(builder.items):
        at = f"{base}/{index}"
        if isinstance(item, Group):
            item.pointer = at + ("/not" if item.negate else "")
            children = []
            for child_index, row in enumerate(item.rows):
                row.pointer = f"{item.pointer}/{item.match}/{child_index}"
                children.append(_negated(row, fields))
            entry: dict[str, Any] = {item.match: children}
            entries.append({"not": entry} if item.negate else entry)
        else:
            item.pointer = at
            entries.append(_negated(item, fields))
    return {builder.match: entries}


def _negated(row: Row, fields: Mapping[str, FieldSpec]) -> dict[str, Any]:
    rule = condition(row, fields)
    if row.negate:
        row.pointer += "/not"
        return {"not": rule}
    return rule


# --- a rule -> a builder (when it fits) ----------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _row_of(rule: Any, row_id: int, group: int) -> Row | None:
    negate = False
    if isinstance(rule, dict) and set(rule) == {"not"}:
        negate, rule = True, rule["not"]
    if not isinstance(rule, dict) or len(rule) < 1:
        return None
    row = Row(row_id, negate=negate, group=group)
    if "field" in rule:
        if not set(rule) <= {"field", "op", "value"} or not isinstance(rule["field"], str):
            return None
        key, op, value = rule["field"], rule.get("op"), rule.get("value")
        if not isinstance(op, str):
            return None
        if key == "journey_stage":
            stages = [value] if op == "equals" else value
            if op not in ("equals", "in") or not isinstance(stages, list):
                return None
            row.kind, row.values = "stage", [_text(v) for v in stages]
            return row
        row.field, row.op = key, op
        if op in LIST_OPS:
            if not isinstance(value, list):
                return None
            row.values = [_text(v) for v in value]
        elif op in PAIR_OPS:
            if not isinstance(value, list) or len(value) != 2:
                return None
            row.v1, row.v2 = _text(value[0]), _text(value[1])
        elif op not in PRESENCE:
            if isinstance(value, list | dict):
                return None
            row.v1 = _text(value)
        return row
    if len(rule) != 1:
        return None
    [(kind, value)] = rule.items()
    if kind == "list" and isinstance(value, str):
        row.kind, row.list_id = "list", value
    elif kind == "suppressed" and isinstance(value, str):
        row.kind, row.suppressed = "suppressed", value
    elif kind == "consent" and isinstance(value, dict):
        if not set(value) <= {"channel", "purpose", "status"}:
            return None
        row.kind = "consent"
        row.channel = _text(value.get("channel"))
        row.purpose = _text(value.get("purpose"))
        row.status = _text(value.get("status"))
    elif kind == "event" and isinstance(value, dict):
        return _event_row(row, value)
    else:
        return None
    return row


def _event_row(row: Row, value: dict[str, Any]) -> Row | None:
    allowed = {"kind", "campaign_id", "at_least", "at_most", "within_last_days", "since"}
    if not set(value) <= allowed or ("at_least" in value and "at_most" in value):
        return None
    kind = value.get("kind")
    if isinstance(kind, list):
        if len(kind) != 1:
            return None
        kind = kind[0]
    row.kind = "event"
    row.event_kind = _text(kind)
    row.campaign = _text(value.get("campaign_id"))
    row.count_op = "at_most" if "at_most" in value else "at_least"
    row.times = _text(value.get(row.count_op, 1))
    if "within_last_days" in value:
        row.window, row.days = "days", _text(value["within_last_days"])
    elif "since" in value:
        row.window, row.since = "since", _text(value["since"])
    else:
        row.window = "ever"
    return row


def from_rule(rule: Any) -> Builder | None:
    """The builder showing ``rule``, or None when the rule does not fit the form."""
    if not isinstance(rule, dict) or len(rule) != 1:
        return None
    [(match, entries)] = rule.items()
    if match not in ("all", "any"):
        single = _row_of(rule, 1, 0)
        return Builder(items=[single]) if single is not None else None
    if not isinstance(entries, list) or len(entries) > MAX_ROWS:
        return None
    builder = Builder(match=match)
    next_id = 1
    for entry in entries:
        negate = isinstance(entry, dict) and set(entry) == {"not"}
        inner = entry["not"] if negate else entry
        if isinstance(inner, dict) and len(inner) == 1 and set(inner) <= {"all", "any"}:
            [(group_match, children)] = inner.items()
            if not isinstance(children, list) or not children:
                return None
            group = Group(next_id, match=group_match, negate=negate)
            next_id += 1
            for child in children:
                row = _row_of(child, next_id, group.id)
                if row is None:
                    return None
                group.rows.append(row)
                next_id += 1
            builder.items.append(group)
            continue
        row = _row_of(entry, next_id, 0)
        if row is None:
            return None
        builder.items.append(row)
        next_id += 1
    return builder


# --- a rule in words ---------------------------------------------------------------


def describe(rule: Any, list_names: Mapping[str, str]) -> str:
    """The rule as a sentence for people (the detail page); tolerant of any shape."""
    if not isinstance(rule, dict) or (len(rule) != 1 and "field" not in rule):
        return "(not a rule)"
    if "all" in rule or "any" in rule:
        match = "all" if "all" in rule else "any"
        children = rule[match] if isinstance(rule[match], list) else []
        parts = [describe(child, list_names) for child in children]
        joiner = " and " if match == "all" else " or "
        text = joiner.join(parts)
        return f"({text})" if len(parts) > 1 else text
    if "not" in rule:
        return f"not {describe(rule['not'], list_names)}"
    if "field" in rule:
        op = _text(rule.get("op"))
        value = rule.get("value")
        shown = (
            " and ".join(_text(v) for v in value)
            if op in PAIR_OPS and isinstance(value, list)
            else ", ".join(_text(v) for v in value)
            if isinstance(value, list)
            else _text(value)
        )
        if op == "within_last_days":
            return f"{_text(rule['field'])} is within the last {shown} days"
        words = OP_LABELS.get(op, op)
        return f"{_text(rule['field'])} {words}{' ' + shown if shown else ''}"
    if "list" in rule:
        name = list_names.get(_text(rule["list"]), "an unknown list")
        return f"in the list “{name}”"
    if "consent" in rule and isinstance(rule["consent"], dict):
        c = rule["consent"]
        return (
            f"{_text(c.get('channel'))} {_text(c.get('purpose'))} consent "
            f"is {_text(c.get('status'))}"
        )
    if "suppressed" in rule:
        which = _text(rule["suppressed"])
        return "suppressed on any channel" if which == "any" else f"suppressed for {which}"
    if "event" in rule and isinstance(rule["event"], dict):
        e = rule["event"]
        kinds = e.get("kind")
        what = " or ".join(kinds) if isinstance(kinds, list) else _text(kinds) or "any event"
        if e.get("campaign_id"):
            what += " of campaign " + _text(e["campaign_id"])
        if "at_most" in e:
            count = f"at most {_text(e['at_most'])}"
        else:
            count = f"at least {_text(e.get('at_least', 1))}"
        unit = "time" if _text(e.get("at_most", e.get("at_least", 1))) == "1" else "times"
        window = ""
        if "within_last_days" in e:
            window = f" in the last {_text(e['within_last_days'])} days"
        elif "since" in e:
            window = f" since {_text(e['since'])}"
        return f"{what} {count} {unit}{window}"
    return "(not a rule)"
