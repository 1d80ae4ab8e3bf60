"""The workflow builder's model: the graph as a tree of paths, edits, and step forms.

The graph (``{"steps": [...]}``, docs/workflows.md) is a flat list of steps pointing
at each other by id. The builder shows it as a vertical list from the first step,
following each step's ``next``; a branch's conditions and fallback, and a Wait for
Event's timeout path, are nested paths under their step. A pointer to a step already
shown (paths joining again, a Go To) is drawn as "continues at …" instead of the
step twice; steps no path reaches are listed apart.

Edits (:func:`insert_step`, :func:`delete_step`, :func:`move_step`, …) take the graph
as plain dicts and give a new one; the page keeps the graph being edited in the
form (hidden, posted with every change), so nothing is saved until "Save draft" or
"Publish". Step forms are named after the step's fields as dotted paths
(``f.duration.days``, ``f.conditions.0.rule``): :func:`step_from_form` rebuilds the
step from them and the step type's own Pydantic model checks it, so a step type
added to the registry gets a working form from its schema (:func:`generic_fields`)
without code here. Nothing in this module touches the database.
"""

from __future__ import annotations

import copy
import json
import re
import types
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Union

from pydantic import ValidationError

from carepost.core.errors import FieldError, ValidationFailed
from carepost.workflows.steps import STEP_TYPES, Linear

Graph = dict[str, Any]
Step = dict[str, Any]
MAX_GRAPH_CHARACTERS = 400_000
PREFIX = "f."

# Step types with words for people (a registered type without an entry shows its name).
LABELS: dict[str, tuple[str, str]] = {
    "send_email": ("Send email", "Send an email template to the contact"),
    "wait_duration": ("Wait", "Wait for a number of days, hours or minutes"),
    "wait_until": ("Wait until", "A date, a date field of the contact, or a time window"),
    "wait_for_event": ("Wait for event", "An open, a click, a custom event, with a timeout"),
    "branch": ("Branch", "Send contacts down different paths by segment conditions"),
    "goto": ("Go to", "Jump to another step of this workflow"),
    "list_add": ("Add to list", "Add the contact to a static list"),
    "list_remove": ("Remove from list", "Remove the contact from a static list"),
    "segment_add": ("Add to segment", "Make the contact a member of a segment, whatever its rule"),
    "set_stage": ("Set journey stage", "Move the contact to a journey stage"),
    "update_field": ("Update contact field", "Set, clear, stamp or count a field of the contact"),
    "webhook": ("Call webhook", "Send a signed event (ids only) to a webhook endpoint"),
    "exit": ("End", "End the contact's run here"),
}
SHORT = {
    "send_email": "email",
    "wait_duration": "wait",
    "wait_until": "until",
    "wait_for_event": "event",
    "branch": "branch",
    "goto": "goto",
    "list_add": "add",
    "list_remove": "remove",
    "segment_add": "segment",
    "set_stage": "stage",
    "update_field": "field",
    "webhook": "webhook",
    "exit": "end",
}
# Fields the structure decides (paths), never typed into a step's form.
STRUCTURAL = {"id", "type", "next", "timeout_next", "fallback"}
DEDICATED = set(LABELS)


def label_of(step_type: str) -> str:
    return LABELS.get(step_type, (step_type.replace("_", " ").capitalize(), ""))[0]


def step_types() -> list[tuple[str, str, str]]:
    """(type, label, description) of every registered step type, for the add menu."""
    found = []
    for name, model in STEP_TYPES.items():
        label, description = LABELS.get(name, (label_of(name), ""))
        if not description:
            description = (model.__doc__ or "").strip().split("\n")[0]
        found.append((name, label, description))
    return found


# --- the graph as text ------------------------------------------------------------------


def read_graph(text: str) -> Graph:
    if len(text) > MAX_GRAPH_CHARACTERS:
        raise ValidationFailed("the workflow is too large", field="graph")
    try:
        graph = json.loads(text)
    except json.JSONDecodeError:
        raise ValidationFailed(
            "the workflow could not be read: reload the page", field="graph"
        ) from None
    if not isinstance(graph, dict) or not isinstance(graph.get("steps"), list):
        raise ValidationFailed("the workflow could not be read: reload the page", field="graph")
    if not all(isinstance(s, dict) for s in graph["steps"]):
        raise ValidationFailed("the workflow could not be read: reload the page", field="graph")
    return graph


def write_graph(graph: Graph) -> str:
    return json.dumps(graph, separators=(",", ":"), sort_keys=False)


# --- pointers ---------------------------------------------------------------------------


def pointers(step: Step) -> list[tuple[str, str]]:
    """(field path, target) of every pointer of a step as a dict (any registered type)."""
    model = STEP_TYPES.get(str(step.get("type")))
    found: list[tuple[str, str]] = []
    if model is not None:
        try:
            return [(f, t) for f, t in model.model_validate(step).successors()]
        except ValidationError:
            pass
    for key in ("next", "timeout_next", "fallback", "target"):
        if isinstance(step.get(key), str):
            found.append((key, step[key]))
    for index, condition in enumerate(step.get("conditions") or []):
        if isinstance(condition, dict) and isinstance(condition.get("next"), str):
            found.append((f"conditions/{index}/next", condition["next"]))
    return found


def get_pointer(step: Step, path: str) -> str | None:
    node: Any = step
    for part in path.split("/"):
        if isinstance(node, list):
            node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node if isinstance(node, str) else None


def set_pointer(step: Step, path: str, value: str | None) -> None:
    parts = path.split("/")
    node: Any = step
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value


def is_linear(step_type: str) -> bool:
    model = STEP_TYPES.get(step_type)
    return model is not None and issubclass(model, Linear)


# --- the tree ---------------------------------------------------------------------------


@dataclass
class Slot:
    """Where "add a step" puts it: after ``after`` (its ``next``), or on the empty path
    ``path`` of step ``owner`` (a fallback, a timeout path), or first in the workflow."""

    after: str = ""
    owner: str = ""
    path: str = ""

    @property
    def key(self) -> str:
        return f"{self.after}|{self.owner}|{self.path}"


@dataclass
class Path:
    label: str
    owner: str
    pointer: str
    items: list[Node | Jump] = field(default_factory=list)
    empty: str = "No steps: contacts on this path end their run."


@dataclass
class Jump:
    target: str
    broken: bool = False


@dataclass
class Node:
    step: Step
    index: int
    paths: list[Path] = field(default_factory=list)
    can_move_up: bool = False
    can_move_down: bool = False

    @property
    def id(self) -> str:
        return str(self.step.get("id"))

    @property
    def type(self) -> str:
        return str(self.step.get("type"))

    @property
    def label(self) -> str:
        return label_of(self.type)


@dataclass
class Tree:
    main: Path
    detached: list[Node]


def build_tree(graph: Graph) -> Tree:
    steps: list[Step] = graph.get("steps", [])
    by_id = {str(s.get("id")): s for s in steps}
    index = {str(s.get("id")): i for i, s in enumerate(steps)}
    incoming: dict[str, int] = {}
    for s in steps:
        for _field, target in pointers(s):
            incoming[target] = incoming.get(target, 0) + 1
    shown: set[str] = set()

    def walk(start: str | None, label: str, owner: str, pointer: str) -> Path:
        """One path from ``start``: the steps it goes through, its nested paths drawn
        after the path itself (so the main line keeps the steps it shares with them)."""
        path = Path(label, owner, pointer)
        nested: list[tuple[Node, str | None, str, str, str]] = []
        current = start
        previous: Node | None = None
        while current is not None:
            if current in shown or current not in by_id:
                path.items.append(Jump(current, broken=current not in by_id))
                break
            shown.add(current)
            step = by_id[current]
            node = Node(step, index[current])
            path.items.append(node)
            kind = node.type
            if kind == "branch":
                for number, condition in enumerate(step.get("conditions") or []):
                    target = condition.get("next") if isinstance(condition, dict) else None
                    nested.append(
                        (
                            node,
                            target,
                            f"If condition {number + 1} holds",
                            current,
                            f"conditions/{number}/next",
                        )
                    )
                nested.append(
                    (node, step.get("fallback"), "Otherwise (fallback)", current, "fallback")
                )
                break
            if kind == "wait_for_event":
                nested.append(
                    (node, step.get("timeout_next"), "On timeout", current, "timeout_next")
                )
            if not is_linear(kind):
                if kind == "goto" and isinstance(step.get("target"), str):
                    path.items.append(Jump(step["target"], broken=step["target"] not in by_id))
                break
            if previous is not None and is_linear(previous.type) and incoming.get(current) == 1:
                previous.can_move_down = True
                node.can_move_up = True
            previous = node
            current = step.get("next")
        for node, target, title, at, field_path in nested:
            sub = walk(target, title, at, field_path)
            if field_path == "timeout_next" and not target:
                sub.empty = "Empty: on timeout the contact goes on below."
            node.paths.append(sub)
        return path

    first = str(steps[0].get("id")) if steps else None
    main = walk(first, "", "", "start")
    detached = [Node(s, index[str(s.get("id"))]) for s in steps if str(s.get("id")) not in shown]
    return Tree(main, detached)


# --- edits ------------------------------------------------------------------------------


def new_id(graph: Graph, step_type: str) -> str:
    used = {str(s.get("id")) for s in graph.get("steps", [])}
    stem = re.sub(r"[^A-Za-z0-9_-]", "", SHORT.get(step_type, step_type))[:50] or "step"
    number = 1
    while f"{stem}-{number}" in used:
        number += 1
    return f"{stem}-{number}"


def _find(graph: Graph, step_id: str) -> tuple[int, Step]:
    for i, step in enumerate(graph["steps"]):
        if step.get("id") == step_id:
            return i, step
    raise ValidationFailed("that step is no longer in the workflow: reload the page", field="step")


def insert_step(graph: Graph, slot: Slot, step: Step) -> Graph:
    """A copy of ``graph`` with ``step`` placed at ``slot`` (taking over what followed)."""
    graph = copy.deepcopy(graph)
    step = copy.deepcopy(step)
    steps: list[Step] = graph["steps"]
    extra: list[Step] = []
    if step.get("type") == "branch" and not step.get("conditions"):
        step["conditions"] = []
    if step.get("type") == "branch":
        for condition in step["conditions"]:
            if not condition.get("next"):
                end = {"id": new_id({"steps": steps + extra + [step]}, "exit"), "type": "exit"}
                end["name"] = ""
                extra.append(end)
                condition["next"] = end["id"]
    if slot.after:
        position, before = _find(graph, slot.after)
        follower = before.get("next")
        before["next"] = step["id"]
        _continue(step, follower)
        steps[position + 1 : position + 1] = [step, *extra]
    elif slot.owner:
        position, owner = _find(graph, slot.owner)
        follower = get_pointer(owner, slot.path)
        set_pointer(owner, slot.path, step["id"])
        _continue(step, follower)
        steps[position + 1 : position + 1] = [step, *extra]
    else:
        follower = str(steps[0]["id"]) if steps else None
        _continue(step, follower)
        steps[0:0] = [step, *extra]
    return graph


def _continue(step: Step, follower: str | None) -> None:
    """The new step goes on to what followed its place (a branch: through its fallback)."""
    if follower is None:
        return
    kind = str(step.get("type"))
    if is_linear(kind):
        step["next"] = follower
    elif kind == "branch" and not step.get("fallback"):
        step["fallback"] = follower


def replace_step(graph: Graph, step_id: str, step: Step) -> Graph:
    """A copy with the step's fields replaced (its id, type and paths kept)."""
    graph = copy.deepcopy(graph)
    position, old = _find(graph, step_id)
    updated = copy.deepcopy(step)
    updated["id"], updated["type"] = old["id"], old["type"]
    for key in ("next", "timeout_next", "fallback"):
        if key in old:
            updated[key] = old[key]
    if old.get("type") == "branch":
        # Each condition keeps its own path (the form posts it along): a removed
        # condition's path is left unreached, a new condition gets an End step.
        conditions = updated.get("conditions") or []
        existing = {str(s.get("id")) for s in graph["steps"]}
        extra: list[Step] = []
        for condition in conditions:
            if condition.get("next") not in existing:
                end_id = new_id({"steps": graph["steps"] + extra}, "exit")
                extra.append({"id": end_id, "type": "exit", "name": ""})
                condition["next"] = end_id
        graph["steps"][position + 1 : position + 1] = extra
    graph["steps"][position] = updated
    return graph


def delete_step(graph: Graph, step_id: str) -> Graph:
    """A copy without the step; what pointed at it now points at what followed it."""
    graph = copy.deepcopy(graph)
    position, gone = _find(graph, step_id)
    kind = str(gone.get("type"))
    follower = (
        gone.get("next")
        if is_linear(kind)
        else gone.get("fallback")
        if kind == "branch"
        else gone.get("target")
        if kind == "goto"
        else None
    )
    steps: list[Step] = graph["steps"]
    del steps[position]
    extra: list[Step] = []
    for step in steps:
        for path, target in pointers(step):
            if target != step_id:
                continue
            if follower is None and (path.startswith("conditions/") or path == "target"):
                end_id = new_id({"steps": steps + extra}, "exit")
                extra.append({"id": end_id, "type": "exit", "name": ""})
                set_pointer(step, path, end_id)
            elif follower is None and path in ("fallback", "timeout_next", "next"):
                step.pop(path, None)
                if path == "next":
                    step["next"] = None
            else:
                set_pointer(step, path, follower)
    steps.extend(extra)
    if position == 0 and follower and steps:
        at, _moved = _find(graph, follower)
        steps.insert(0, steps.pop(at))
    return graph


def move_step(graph: Graph, step_id: str, direction: str) -> Graph:
    """Swap a step with the one before it ("up") or after it ("down") on its path."""
    graph = copy.deepcopy(graph)
    if direction == "down":
        _, step = _find(graph, step_id)
        follower = step.get("next")
        if not isinstance(follower, str):
            return graph
        return move_step(graph, follower, "up")
    steps: list[Step] = graph["steps"]
    s_pos, s = _find(graph, step_id)
    before = [p for p in steps if p.get("next") == step_id and is_linear(str(p.get("type")))]
    if len(before) != 1 or not is_linear(str(s.get("type"))):
        return graph
    p = before[0]
    p_pos = steps.index(p)
    p_id = p["id"]
    for other in steps:
        if other is p or other is s:
            continue
        for path, target in pointers(other):
            if target == p_id:
                set_pointer(other, path, step_id)
    p["next"], s["next"] = s.get("next"), p_id
    steps[p_pos], steps[s_pos] = s, p
    return graph


# --- step forms -------------------------------------------------------------------------


@dataclass
class FieldSpec:
    """An input of the generic form of a step type without a dedicated one."""

    name: str  # dotted path below the step, as posted (after ``f.``)
    label: str
    kind: str  # text, number, checkbox, select, json
    required: bool
    choices: tuple[str, ...] = ()
    hint: str = ""


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation, False


def generic_fields(step_type: str) -> list[FieldSpec]:
    """Inputs for every field of a registered step type (from its Pydantic model)."""
    model = STEP_TYPES.get(step_type)
    if model is None:
        return []
    found = []
    for name, info in model.model_fields.items():
        if name in STRUCTURAL or name == "name":
            continue
        annotation, _optional = _unwrap(info.annotation)
        label = name.replace("_", " ").capitalize()
        hint = info.description or ""
        origin = typing.get_origin(annotation)
        if origin is Literal:
            kind, choices = "select", tuple(str(a) for a in typing.get_args(annotation))
        elif annotation is bool:
            kind, choices = "checkbox", ()
        elif annotation in (int, float):
            kind, choices = "number", ()
        elif annotation in (str, uuid.UUID, datetime):
            kind, choices = "text", ()
        else:
            kind, choices = "json", ()
            hint = hint or "JSON"
        found.append(FieldSpec(name, label, kind, info.is_required(), choices, hint))
    return found


def _assign(target: dict[str, Any], parts: list[str], value: Any) -> None:
    node: Any = target
    for index, part in enumerate(parts[:-1]):
        following = parts[index + 1]
        if isinstance(node, list):
            position = int(part)
            while len(node) <= position:
                node.append([] if following.isdigit() else {})
            node = node[position]
        else:
            node = node.setdefault(part, [] if following.isdigit() else {})
    last = parts[-1]
    if isinstance(node, list):
        position = int(last)
        while len(node) <= position:
            node.append(None)
        node[position] = value
    else:
        node[last] = value


def _compact(value: Any) -> Any:
    if isinstance(value, list):
        return [_compact(v) for v in value if v is not None]
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    return value


def _one(value: str | list[str]) -> str:
    return value[-1] if isinstance(value, list) else value


# The standard contact fields Update Contact Field sets (carepost.workflows.update_field).
UPDATABLE_STANDARD = {
    "first_name": "First name",
    "last_name": "Last name",
    "phone": "Phone number",
    "language": "Language",
    "timezone": "Time zone",
}
JSON_FIELDS = re.compile(r"(^|\.)rule$|^conditions\.\d+\.rule$")


def step_from_form(
    data: Mapping[str, str | list[str]], step_type: str, step_id: str
) -> tuple[Step, dict[str, str]]:
    """The step a form posted, and faults by field name (empty when the type's model
    accepts it). Empty inputs are left out, so the model's defaults apply."""
    model = STEP_TYPES.get(step_type)
    if model is None:
        return {}, {"": f"{step_type} is not a step type"}
    step: Step = {"id": step_id, "type": step_type}
    faults: dict[str, str] = {}
    json_names = {f.name for f in generic_fields(step_type) if f.kind == "json"}
    many = {"until.days_of_week", "until.days_of_month"}
    for key, raw in data.items():
        if not key.startswith(PREFIX):
            continue
        name = key.removeprefix(PREFIX)
        if not re.fullmatch(r"[a-z_]+(\.[a-z0-9_]+)*", name) or name.split(".")[0] in STRUCTURAL:
            continue
        if name in many:
            values = raw if isinstance(raw, list) else [raw]
            chosen = [v for v in values if v.strip()]
            if chosen:
                _assign(step, name.split("."), chosen)
            continue
        text = _one(raw).strip()
        if text == "":
            continue
        value: Any = text
        if step_type == "update_field" and name == "value":
            # Typed as the contacts API takes it: a number, true/false or a JSON list
            # as such, anything else (a phone, a tag, a date) as text; a standard
            # field (a name, a phone) is always text.
            if _one(data.get(PREFIX + "field", "")) not in UPDATABLE_STANDARD:
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    value = text
        elif JSON_FIELDS.search(name) or name in json_names:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                faults[name] = f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
                continue
        elif name == "until.at":
            value = _utc(text)
        _assign(step, name.split("."), value)
    step = _compact(step)
    if step_type == "branch":
        step.setdefault("conditions", [])
        for condition in step["conditions"]:
            if isinstance(condition, dict):
                condition.setdefault("next", "placeholder")
                condition.setdefault("rule", {})
    if faults:
        return step, faults
    try:
        step = model.model_validate(step).model_dump(mode="json")
    except ValidationError as invalid:
        for error in invalid.errors():
            parts = [str(p) for p in error["loc"]]
            if parts and parts[0] == "until" and len(parts) > 1:
                parts = [p for i, p in enumerate(parts) if not (i == 1 and not p.isdigit())]
            name = ".".join(parts) or ""
            faults.setdefault(name, _message(error))
    return step, faults


def fault_label(name: str) -> str:
    """A step form's field path in words (conditions.0.rule -> Condition 1)."""
    match = re.fullmatch(r"conditions\.(\d+)\.rule", name)
    if match:
        return f"Condition {int(match.group(1)) + 1}"
    return name.replace("_", " ").replace(".", " → ").capitalize()


def _utc(text: str) -> str:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text
    return (when.isoformat() + "+00:00") if when.tzinfo is None else when.isoformat()


def _message(error: Any) -> str:
    if error.get("type") == "missing":
        return "this field is required"
    if error.get("type") == "extra_forbidden":
        return "unknown field"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def blank_step(step_type: str, step_id: str) -> Step:
    """What a new step's form starts with."""
    if step_type == "wait_duration":
        return {"id": step_id, "type": step_type, "duration": {"days": 1, "hours": 0, "minutes": 0}}
    if step_type == "wait_for_event":
        return {
            "id": step_id,
            "type": step_type,
            "event": {"kind": "opened"},
            "timeout": {"days": 3, "hours": 0, "minutes": 0},
        }
    if step_type == "wait_until":
        return {
            "id": step_id,
            "type": step_type,
            "until": {"kind": "window", "start": "09:00", "end": "17:00", "timezone": "UTC"},
        }
    if step_type == "branch":
        return {"id": step_id, "type": step_type, "conditions": [{"rule": {}, "next": ""}]}
    return {"id": step_id, "type": step_type}


def value_at(step: Step, name: str) -> Any:
    node: Any = step
    for part in name.split("."):
        if isinstance(node, list):
            node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return str(value)


# --- validation messages by step ----------------------------------------------------------


STEP_POINTER = re.compile(r"^#/body/draft/steps/(\d+)(?:/(.*))?$")


def faults_by_step(graph: Graph, exc: ValidationFailed) -> tuple[dict[str, list[str]], list[str]]:
    """Each problem next to its step (by the pointer's index), the rest apart."""
    steps = graph.get("steps", [])
    by_step: dict[str, list[str]] = {}
    general: list[str] = []
    for error in exc.errors or [FieldError("", exc.detail)]:
        match = STEP_POINTER.match(error.field)
        if match and int(match.group(1)) < len(steps):
            step_id = str(steps[int(match.group(1))].get("id"))
            message = error.message.removeprefix(f"step {step_id}: ")
            where = match.group(2) or ""
            if where and not where.startswith(("conditions", "fallback", "next", "id")):
                message = f"{where.replace('/', ' → ')}: {message}"
            elif where.startswith("conditions/") and "/rule" in where:
                number = int(where.split("/")[1]) + 1
                node = where.split("/rule", 1)[1]
                message = f"condition {number}, rule{node.replace('/', ' → ')}: {message}"
            by_step.setdefault(step_id, []).append(message)
        else:
            general.append(error.message)
    return by_step, general
