"""The rendering sandbox: attack strings fail with a TemplateError, fast, and say where."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carepost.templates.context import ContactView
from carepost.templates.rendering import render_raw
from carepost.templates.sandbox import MAX_OUTPUT, TemplateError

CONTACT = ContactView(
    fields={"first_name": "Ann", "email": "ann@example.org", "language": "en"},
    custom={"a1c": 7.2, "allergies": ["peanut"]},
)


def render_html(html: str, **data: object) -> str:
    message = render_raw("Hello", html, None, contact=CONTACT, data=data)
    assert message.html is not None
    return message.html


def refused(html: str, **data: object) -> TemplateError:
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render_html(html, **data)
    # Every bound is hit quickly: no attack pins a worker.
    assert time.monotonic() - started < 2
    return caught.value


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ range.__globals__ }}",
        "{{ contact._values }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
        "{{ [].__class__.__base__ }}",
        "{{ self.__init__.__globals__ }}",
    ],
)
def test_internals_are_out_of_reach(attack):
    error = refused(attack)
    assert error.code == "template-error"
    assert error.line == 1
    assert "templates may not use" in error.detail or "undefined" in error.detail


def test_a_billion_iteration_loop_fails_fast_with_a_clear_error():
    error = refused("<p>\n{% for i in range(10**9) %}x{% endfor %}</p>")
    assert error.detail == "range() is limited to 10000 items in the html (line 2)"
    assert error.line == 2


def test_nested_loops_run_out_of_budget():
    error = refused(
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    )
    assert "too much work" in error.detail


def test_recursive_macros_run_out_of_budget_or_depth():
    refused("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")


@pytest.mark.parametrize(
    "attack",
    [
        "{{ 'x' * 10**9 }}",
        "{{ ''|center(10**9) }}",
        "{{ 'a'.center(10**9) }}",
        "{{ 'a'.ljust(999999999) }}",
        "{{ ''|indent(10**9, true) }}",
        "{{ 10**10**10 }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ ('x' * 1000)|replace('x', 'y' * 10000) }}",
        "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
        "{{ f('ab', 40) }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(n=3) %}{% for i in range(40) %}"
        "{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n }}",
        "{{ lipsum(100000) }}",
    ],
)
def test_huge_values_are_refused_before_they_are_built(attack):
    refused(attack)


def test_huge_output_stops_at_the_bound():
    error = refused("{% for i in range(9000) %}{{ 'x' * 900 }}{% endfor %}")
    assert f"longer than {MAX_OUTPUT}" in error.detail


def test_no_file_access():
    for attack in (
        "{% include '/etc/passwd' %}",
        "{% extends 'base.html' %}",
        "{% import 'x' as y %}",
    ):
        error = refused(attack)
        assert "cannot include" in error.detail or "failed" in error.detail


def test_an_unknown_variable_names_itself_and_its_line():
    error = refused("<p>Dear {{ contact.first_name }},</p>\n<p>{{ appointment.when }}</p>")
    assert error.variable == "appointment"
    assert error.line == 2
    assert error.extensions == {"line": "2", "variable": "appointment", "part": "html"}


def test_a_missing_contact_field_is_an_error_unless_defaulted():
    error = refused("\n\n{{ contact.last_name }}")
    assert (error.variable, error.line) == ("contact.last_name", 3)
    assert render_html("{{ contact.last_name | default('friend') }}") == "friend"


def test_a_missing_data_key_names_its_path():
    error = refused("{{ order.total }}", order={"number": 1})
    assert error.variable == "order.total"


def test_a_syntax_error_has_its_line_and_never_quotes_content():
    with pytest.raises(TemplateError) as caught:
        render_raw("Hi", "<p>one</p>\n<p>two</p>\n{{ Jane Doe }}", None, contact=None, data={})
    assert caught.value.line == 3
    assert caught.value.errors[0].field == "html"
    assert "Doe" not in caught.value.detail


def test_errors_never_quote_values():
    # int() of a name fails inside Python with the value in its message: not ours.
    error = refused("{{ contact.first_name | int(base=2) + [] }}")
    assert "Ann" not in error.detail


def test_html_is_escaped_by_default_and_safe_html_sanitizes():
    note = (
        '<b>kept</b><script>alert(1)</script><a href="javascript:steal()">x</a>'
        "<img src=x onerror=alert(1)>"
    )
    html = render_html("{{ note }}|{{ note | safe_html }}", note=note)
    escaped, sanitized = html.split("|")
    assert "<script>" not in escaped and "&lt;script&gt;" in escaped
    assert "<b>kept</b>" in sanitized
    assert "script" not in sanitized and "javascript:" not in sanitized
    assert "onerror" not in sanitized


def test_safe_is_not_available():
    error = refused("{{ '<script>'|safe }}")
    assert "filter" in error.detail.lower() or "syntax" in error.detail


def test_the_subject_is_one_line_even_when_a_value_has_line_breaks():
    message = render_raw(
        "Hi {{ name }}", None, "body", contact=None, data={"name": "Ann\r\nBcc: x@evil"}
    )
    assert message.subject == "Hi Ann Bcc: x@evil"
    assert "\n" not in message.subject


def test_contact_fields_and_custom_fields_render():
    html = render_html(
        "{{ contact.first_name }} {{ contact.custom.a1c }} {{ contact.a1c }} "
        "{% for a in contact.custom.allergies %}{{ a }}{% endfor %} {{ contact.language }}"
    )
    assert html == "Ann 7.2 7.2 peanut en"


def test_contact_cannot_be_enumerated():
    error = refused("{% for k in contact.items() %}{{ k }}{% endfor %}")
    assert error.variable == "contact.items"


def test_text_part_is_generated_from_html():
    message = render_raw(
        "Hi",
        "<html><head><style>p{}</style></head><body><h1>Hello {{ contact.first_name }}</h1>"
        '<p>See <a href="https://clinic.example/a">your appointment</a>.</p>'
        "<ul><li>One</li><li>Two</li></ul></body></html>",
        None,
        contact=CONTACT,
        data={},
    )
    assert message.text == (
        "Hello Ann\n\nSee your appointment (https://clinic.example/a).\n\n- One\n- Two\n"
    )


def test_uses_phi_is_detected_from_the_syntax_tree():
    plain = render_raw("Hi", "{{ contact.language }}", None, contact=CONTACT, data={})
    phi = render_raw("Hi", "{{ contact.first_name }}", None, contact=CONTACT, data={})
    anything = render_raw("Hi {{ contact }}", None, "x", contact=CONTACT, data={})
    assert (plain.uses_phi, phi.uses_phi, anything.uses_phi) == (False, True, True)


# Template-shaped text: single characters and the tokens that make Jinja syntax.
TOKENS = ["{{", "}}", "{%", "%}", "for ", "in ", "range(", "if ", "endfor", "endif"]
TOKENS += ["contact.", "first_name", "__class__", "**", "set ", "macro ", "loop.", "10**9"]
TEMPLATE_TEXT = st.lists(
    st.sampled_from([*"{}%#-+*/~|()[]'\".,:_ abcxyz0123456789\n", *TOKENS]), max_size=40
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.one_of(TEMPLATE_TEXT, st.text(max_size=80)))
def test_rendering_raises_nothing_but_template_error(source):
    for html, text in ((source, None), (None, source)):
        try:
            message = render_raw(source or "x", html, text, contact=CONTACT, data={"n": 3})
        except TemplateError as error:
            assert error.code == "template-error"
            assert "Ann" not in error.detail
        else:
            assert len(message.text) <= 2 * MAX_OUTPUT
