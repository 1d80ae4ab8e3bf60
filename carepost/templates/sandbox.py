"""The Jinja2 sandbox that every user template runs in, and its limits.

Templates are written by an organization's staff and filled with contact fields
and per-message data, so they are untrusted code as far as the server goes. They
run in Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no
underscore attributes, no ``__class__``/``__globals__`` walks, no mutation of
lists or dicts) with, on top of it:

* no loader: ``{% include %}``, ``{% extends %}`` and ``{% import %}`` have nothing to
  read (no file or network access); layouts are applied by the renderer instead;
* a work budget per render: every loop iteration and every call (macros, methods,
  ``range``) costs one step, so ``{% for i in range(10**9) %}`` or nested loops
  stop at once with a :class:`TemplateError` instead of pinning a worker;
* bounded values: ``range`` holds at most :data:`MAX_RANGE` items, integer arguments
  of calls and filters are at most :data:`MAX_OUTPUT` (``center(10**9)``), string and
  list repetition, ``~`` and ``+`` may not build a value past :data:`MAX_OUTPUT`
  characters, ``**`` may not build a number past :data:`MAX_INTEGER_BITS` bits, and
  ``%``-formatting and ``str.format`` (whose field widths are unchecked) are refused;
* bounded output: rendering stops as soon as a part passes :data:`MAX_OUTPUT` characters;
* :class:`StrictUndefined`: an unknown variable is an error naming the variable and
  its line, never an empty string (``| default(...)`` gives an explicit fallback);
* a short list of filters (no ``safe``: user HTML goes through ``safe_html``, which
  sanitizes it with nh3/Ammonia).

Every failure is a :class:`TemplateError` (code ``template-error``) with the line
(``extensions["line"]``) and, for undefined values, the variable. Messages name
variables and template syntax, never a value: values are PHI.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any

import nh3
from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from carepost.core.errors import CarepostError
from carepost.templates.plaintext import TextSkeleton, text_skeleton

MAX_SOURCE = 200_000  # characters of one template part
MAX_OUTPUT = 1_000_000  # characters of one rendered part
MAX_STEPS = 100_000  # loop iterations + calls per render
MAX_RANGE = 10_000  # items of one range()
MAX_INTEGER_BITS = 256
TEMPLATE_FILE = "<template>"

# Filters a template may use: Jinja's own minus the ones that mark text safe
# (``safe``), reach into objects by name from strings (``attr``, ``map``,
# ``selectattr``: sandboxed, but they hide which contact field is read) or format
# with unchecked widths (``format``). ``safe_html`` is added by this module.
ALLOWED_FILTERS = frozenset(
    {
        "abs",
        "capitalize",
        "center",
        "count",
        "d",
        "default",
        "dictsort",
        "e",
        "escape",
        "first",
        "float",
        "forceescape",
        "indent",
        "int",
        "join",
        "last",
        "length",
        "list",
        "lower",
        "max",
        "min",
        "replace",
        "reverse",
        "round",
        "sort",
        "string",
        "striptags",
        "sum",
        "title",
        "trim",
        "truncate",
        "unique",
        "upper",
        "urlencode",
        "wordcount",
        "wordwrap",
    }
)
# Globals: Jinja's defaults minus ``lipsum`` (unbounded work by argument).
ALLOWED_GLOBALS = frozenset({"range", "dict", "cycler", "joiner", "namespace"})


class TemplateError(CarepostError):
    """The template cannot be rendered."""

    code = "template-error"
    status = 422
    title = "Template error"

    def __init__(
        self,
        detail: str,
        *,
        part: str | None = None,
        line: int | None = None,
        variable: str | None = None,
    ) -> None:
        where = f" (line {line})" if line is not None else ""
        super().__init__(detail + where, field=part)
        self.part = part
        self.line = line
        self.variable = variable
        if line is not None:
            self.extensions["line"] = str(line)
        if variable is not None:
            self.extensions["variable"] = variable
        if part is not None:
            self.extensions["part"] = part


class _LimitExceeded(Exception):
    """A bound of the sandbox was hit (turned into a TemplateError with its line)."""


# --- the work budget -------------------------------------------------------------------


class _Budget:
    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = MAX_STEPS

    def spend(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _LimitExceeded(
                f"the template does too much work (more than {MAX_STEPS} loop steps and calls)"
            )


_budget: ContextVar[_Budget | None] = ContextVar("carepost_template_budget", default=None)


def _spend() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.spend()


def _budgeted(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _spend()
        yield item


def _check_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_OUTPUT:
        raise _LimitExceeded(f"a value grew past {MAX_OUTPUT} characters")
    return value


def _check_arguments(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_OUTPUT:
            raise _LimitExceeded(f"a number argument is larger than {MAX_OUTPUT}")


def _safe_range(*args: int) -> range:
    numbers = range(*args)  # lazy: its length is known before anything is made
    if len(numbers) > MAX_RANGE:
        raise _LimitExceeded(f"range() is limited to {MAX_RANGE} items")
    return numbers


def safe_html(value: Any) -> Markup:
    """User-provided HTML, sanitized by nh3 (Ammonia's allow-list: no scripts, no
    event handlers, no ``javascript:`` links), then trusted by autoescape."""
    return Markup(nh3.clean(str(value)))  # noqa: S704 — nh3 made it safe


def _guard_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments((*args, *kwargs.values()))
        return _check_size(function(*args, **kwargs))

    # Keep jinja2's @pass_context / @pass_eval_context / @pass_environment marker.
    marker = getattr(function, "jinja_pass_arg", None)
    if marker is not None:
        guarded.jinja_pass_arg = marker  # type: ignore[attr-defined]
    return guarded


def _replace(value: Any, old: Any, new: Any, count: int | None = None) -> Any:
    """``replace`` whose result size is known before it is built."""
    text, old_text, new_text = str(value), str(old), str(new)
    hits = text.count(old_text) if old_text else len(text) + 1
    if count is not None:
        hits = min(hits, max(count, 0))
    if len(text) + hits * len(new_text) > MAX_OUTPUT:
        raise _LimitExceeded(f"a value grew past {MAX_OUTPUT} characters")
    limit = -1 if count is None else count
    if isinstance(value, Markup):
        return value.replace(old_text, new_text, limit)  # Markup escapes both arguments
    return text.replace(old_text, new_text, limit)


# --- the environment -------------------------------------------------------------------


class _Undefined(StrictUndefined):
    """StrictUndefined whose message names the variable by its path (``contact.first_name``)."""

    __slots__ = ()

    @property
    def variable(self) -> str:
        owner = self._undefined_obj
        name = str(self._undefined_name)
        path = getattr(owner, "template_path", None) if owner is not None else None
        if isinstance(path, str):
            return f"{path}.{name}"
        return name

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:  # the sandbox's "unsafe attribute" hint
            return self._undefined_hint
        return f"{self.variable}{UNDEFINED_SUFFIX}"


UNDEFINED_SUFFIX = " is undefined"


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+", "//", "/"})

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        _spend()
        if __obj is not _safe_range:  # range() says more precisely what is wrong
            _check_arguments((*args, *kwargs.values()))
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # str.format's field widths are unchecked ("{:>999999999}"): not offered.
        if super().wrap_str_format(value) is not None:

            def refused(*args: Any, **kwargs: Any) -> str:
                raise SecurityError("str.format is not available in templates (use filters)")

            return refused
        return None

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("%-formatting is not available in templates")
        if operator == "*":
            for text, times in ((left, right), (right, left)):
                repeated = isinstance(text, str | list | tuple) and isinstance(times, int)
                if repeated and len(text) * max(times, 0) > MAX_OUTPUT:
                    raise _LimitExceeded(f"a value grew past {MAX_OUTPUT} characters")
            both_ints = _is_int(left) and _is_int(right)
            if both_ints and abs(left).bit_length() + abs(right).bit_length() > MAX_INTEGER_BITS:
                raise _LimitExceeded(f"a number grew past {MAX_INTEGER_BITS} bits")
        if operator == "**" and _is_number(left) and _is_number(right):
            magnitude = abs(float(left))
            if magnitude > 1 and float(right) * math.log2(magnitude) > MAX_INTEGER_BITS:
                raise _LimitExceeded(f"a number grew past {MAX_INTEGER_BITS} bits")
        return _check_size(super().call_binop(context, operator, left, right))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _make_environment(*, autoescape: bool) -> _Sandbox:
    env = _Sandbox(
        autoescape=autoescape,
        undefined=_Undefined,
        loader=None,
        # None prints as nothing (a field without a value), never as "None".
        finalize=lambda value: "" if value is None else value,
        keep_trailing_newline=True,
        # "Wrote text": the line numbers the author sees in the editor.
        extensions=[],
    )
    env.filters = {
        name: _guard_filter(function)
        for name, function in env.filters.items()
        if name in ALLOWED_FILTERS
    }
    env.filters["replace"] = _guard_filter(_replace)
    env.filters["safe_html"] = safe_html
    env.filters["carepost_loop"] = _budgeted
    env.filters["carepost_checked"] = _check_size
    env.globals = {name: value for name, value in env.globals.items() if name in ALLOWED_GLOBALS}
    env.globals["range"] = _safe_range
    return env


_HTML_ENV = _make_environment(autoescape=True)
_TEXT_ENV = _make_environment(autoescape=False)
_compile_lock = threading.Lock()


def _instrument(tree: nodes.Template) -> nodes.Template:
    """Charge every loop iteration to the budget and check every ``~`` result."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "carepost_loop", [], [], None, None)
    for concat in list(tree.find_all(nodes.Concat)):
        # Wrap the Concat's operands into a checked Concat of its own, in place.
        inner = nodes.Concat(concat.nodes)
        concat.nodes = [nodes.Filter(inner, "carepost_checked", [], [], None, None)]
    return tree


# A variable of a substitution: its name and the attributes read from it, in order.
Path = tuple[str, tuple[str, ...]]
# Names that mean something else to Jinja than a variable of the context.
_SPECIAL_NAMES = frozenset({"self", "super", "loop", "caller", "varargs", "kwargs"})


@dataclass(frozen=True)
class CompiledPart:
    """One template part compiled once: what renders it and the tree it came from.

    ``pieces``: for a part that is only text and plain variables (``{{ name }}``,
    ``{{ contact.first_name }}``: no filter, test, call or statement), its text and its
    variables in order (see :func:`substitution_pieces`); None for any other part."""

    part: str
    source: str
    template: Template
    tree: nodes.Template
    pieces: tuple[str | Path, ...] | None = None
    # An HTML part's text (its plain-text alternative) worked out from ``pieces`` once.
    text: TextSkeleton | None = None


def _variable_path(node: nodes.Node) -> Path | None:
    attributes: list[str] = []
    while isinstance(node, nodes.Getattr) and node.ctx == "load":
        attributes.append(node.attr)
        node = node.node
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in _SPECIAL_NAMES:
        return node.name, tuple(reversed(attributes))
    return None


def _substitution(tree: nodes.Template) -> tuple[str | Path, ...] | None:
    """The part's text and variables when it is nothing else (None otherwise)."""
    pieces: list[str | Path] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for child in statement.nodes:
            if isinstance(child, nodes.TemplateData):
                pieces.append(child.data)
                continue
            path = _variable_path(child)
            if path is None:
                return None
            pieces.append(path)
    return tuple(pieces)


def _syntax_error(exc: TemplateSyntaxError, part: str) -> TemplateError:
    # A parser message may quote the token it did not expect; from raw content that
    # token could be a patient's name, so it is left out.
    message = re.sub(r"got '[^']*'", "got something else", exc.message or "syntax error")
    return TemplateError(f"syntax error in the {part}: {message}", part=part, line=exc.lineno)


@lru_cache(maxsize=512)
def _compile_cached(source: str, autoescape: bool, part: str) -> CompiledPart:
    env = _HTML_ENV if autoescape else _TEXT_ENV
    try:
        tree = env.parse(source)
        display = env.parse(source)  # the untouched tree, for analysis
        template = env.from_string(_instrument(tree))
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, part) from None
    except RecursionError:
        raise TemplateError(f"the {part} nests too deeply", part=part) from None
    pieces = _substitution(display)
    skeleton = None
    if autoescape and pieces is not None:
        skeleton = text_skeleton([p if isinstance(p, str) else None for p in pieces])
    return CompiledPart(part, source, template, display, pieces, skeleton)


def compile_part(source: str, *, part: str, html: bool) -> CompiledPart:
    """Compile one part (``subject``, ``html``, ``text``, ``layout.html``…); a syntax
    error is a :class:`TemplateError` with its line."""
    if len(source) > MAX_SOURCE:
        raise TemplateError(f"the {part} is longer than {MAX_SOURCE} characters", part=part)
    with _compile_lock:
        return _compile_cached(source, html, part)


def _template_line(traceback: TracebackType | None) -> int | None:
    """The template line of the innermost template frame (Jinja rewrites tracebacks so
    that frames of template code carry the template's own line numbers)."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == TEMPLATE_FILE:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def substitution_pieces(compiled: CompiledPart, context: Mapping[str, Any]) -> list[str] | None:
    """The output of a part that is only text and plain variables, piece by piece (its
    text and each variable's output, alternately as in the part), without running the
    template; None when anything is not plainly there (then :func:`render_part` runs the
    template, which fails as it should, naming the variable).

    Each variable's output is what the compiled template writes for it: the value
    looked up in the context (data before globals, :meth:`Context.resolve_or_missing`),
    each attribute read by the sandbox's own ``getattr``, ``finalize`` (None as nothing)
    and ``escape`` (HTML parts) or ``str`` (the others), as Jinja's code generator
    emits for ``{{ … }}`` (``CodeGenerator._output_child_pre``). A part of a few
    variables renders several times faster so: no context, generator or budget."""
    pieces = compiled.pieces
    if pieces is None:
        return None
    environment = compiled.template.environment
    getattr_ = environment.getattr
    finalize = environment.finalize
    assert finalize is not None
    convert: Callable[[Any], str] = escape if environment.autoescape else str
    out: list[str] = []
    length = 0
    try:
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                length += len(piece)
                continue
            name, attributes = piece
            if name not in context:
                return None  # a global or undefined: the template decides
            value = context[name]
            for attribute in attributes:
                if isinstance(value, Undefined):
                    return None
                value = getattr_(value, attribute)
            if isinstance(value, Undefined):
                return None
            text = convert(finalize(value))
            out.append(text)
            length += len(text)
    except Exception:  # noqa: BLE001 — the template runs, and reports it as it should
        return None
    if length > MAX_OUTPUT:
        return None  # the template raises the error, with its line
    return out


def render_part(compiled: CompiledPart, context: Mapping[str, Any]) -> str:
    """Render one compiled part under the budget and the output bound."""
    if compiled.pieces is not None:
        substituted = substitution_pieces(compiled, context)
        if substituted is not None:
            return "".join(substituted)
    budget = _Budget()
    token = _budget.set(budget)
    part = compiled.part
    try:
        pieces: list[str] = []
        length = 0
        for piece in compiled.template.generate(dict(context)):
            length += len(piece)
            if length > MAX_OUTPUT:
                raise _LimitExceeded(f"the output is longer than {MAX_OUTPUT} characters")
            pieces.append(piece)
        return "".join(pieces)
    except TemplateError:
        raise
    except UndefinedError as exc:
        line = _template_line(exc.__traceback__)
        message = str(exc)
        if not message.endswith(UNDEFINED_SUFFIX):
            raise TemplateError(
                f"an undefined value is used in the {part}", part=part, line=line
            ) from None
        variable = message.removesuffix(UNDEFINED_SUFFIX)
        raise TemplateError(
            f'{variable} is undefined in the {part}: give it a value or use | default("…")',
            part=part,
            line=line,
            variable=variable,
        ) from None
    except SecurityError as exc:
        line = _template_line(exc.__traceback__)
        raise TemplateError(_security_message(exc, part), part=part, line=line) from None
    except _LimitExceeded as exc:
        line = _template_line(exc.__traceback__)
        raise TemplateError(f"{exc} in the {part}", part=part, line=line) from None
    except TemplateSyntaxError as exc:  # raised at render time by include/import
        raise _syntax_error(exc, part) from None
    except RecursionError:
        raise TemplateError(f"the {part} recurses too deeply", part=part) from None
    except Exception as exc:  # noqa: BLE001 — any failure of template code is the template's
        # Only the kind of error: its message may quote a value (PHI).
        line = _template_line(exc.__traceback__)
        kind = type(exc).__name__
        if kind == "TypeError" and "no loader" in str(exc):
            detail = "templates cannot include, import or extend other files"
        else:
            detail = f"the {part} failed to render ({kind})"
        raise TemplateError(detail, part=part, line=line) from None
    finally:
        _budget.reset(token)


_UNSAFE_ATTRIBUTE = re.compile(r"attribute '([^']*)'")


def _security_message(exc: SecurityError, part: str) -> str:
    found = _UNSAFE_ATTRIBUTE.search(str(exc))
    if found:
        return f"the {part} reaches for {found.group(1)!r}, which templates may not use"
    if "not available" in str(exc):
        return f"{exc} (in the {part})"
    return f"the {part} does something templates may not do"
