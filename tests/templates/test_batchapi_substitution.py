"""Parts that are only text and plain variables render without running the template:
the output (and every failure) is exactly the template's own."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carepost.templates.context import ContactView, build_context
from carepost.templates.sandbox import (
    MAX_OUTPUT,
    CompiledPart,
    TemplateError,
    compile_part,
    render_part,
)

CONTACT = ContactView(
    fields={"first_name": "Ann <B>", "birth_date": date(1980, 2, 3), "language": "en"},
    custom={"a1c": 7.2, "allergies": ["peanut", "<shellfish>"], "plan": {"tier": "gold"}},
)

SUBSTITUTIONS = [
    "Dear {{ name }}, see you on {{ day }}.",
    "{{ name }}{{ name }}",
    "<p>{{ contact.first_name }} & {{ contact.custom.a1c }} {{ contact.a1c }}</p>",
    "{{ contact.birth_date }} {{ contact.birth_date.year }} {{ contact.allergies }}",
    "{{ contact.plan.tier }} {{ contact.custom.plan.tier }} {{ contact.plan }}",
    "{{ missing }}",
    "{{ contact.last_name }}",
    "{{ contact.custom.nothing.deeper }}",
    "{{ name.deeper }}",
    "{{ range }} {{ dict }}",
    "{{ contact._values }}",
    "{{ contact.template_path }}",
    "{{ nested.inner.value }} {{ nested }}",
    "{{ items }} {{ flag }} {{ empty }} {{ number }}",
    "{{ name.upper }}",
    "",
    "plain text only",
]


def _jinja(compiled: CompiledPart) -> CompiledPart:
    """The same part without its substitution pieces: the template runs."""
    return dataclasses.replace(compiled, pieces=None)


def _outcome(compiled: CompiledPart, context: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", render_part(compiled, context)
    except TemplateError as failed:
        return "error", (failed.detail, failed.extensions)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.sampled_from("ab <>&\"'\n\t\u00e9\u2603")),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["inner", "value", "items"]), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.sampled_from(SUBSTITUTIONS),
    html=st.booleans(),
    with_contact=st.booleans(),
    data=st.dictionaries(
        st.sampled_from(["name", "day", "nested", "items", "flag", "empty", "number", "range"]),
        values,
        max_size=8,
    ),
)
def test_a_substitution_renders_exactly_as_the_template(source, html, with_contact, data):
    compiled = compile_part(source, part="html" if html else "subject", html=html)
    assert compiled.pieces is not None
    context = build_context(CONTACT if with_contact else None, data)
    assert _outcome(compiled, context) == _outcome(_jinja(compiled), context)


@pytest.mark.parametrize(
    "source",
    [
        "{{ name | upper }}",
        "{% if name %}{{ name }}{% endif %}",
        "{{ name ~ day }}",
        "{{ data['name'] }}",
        "{{ name() }}",
        "{% for x in items %}{{ x }}{% endfor %}",
        "{{ 'text' }}",
        "{{ none }}",
        "{{ self }}",
        "{{ loop }}",
    ],
)
def test_anything_else_runs_the_template(source):
    assert compile_part(source, part="html", html=True).pieces is None


def test_the_output_bound_still_holds():
    compiled = compile_part("{{ a }}{{ a }}", part="html", html=True)
    with pytest.raises(TemplateError) as caught:
        render_part(compiled, {"a": "x" * (MAX_OUTPUT // 2 + 1)})
    assert "longer than" in caught.value.detail


HTML_SUBSTITUTIONS = [
    "<p>Dear {{ a }}, see you on {{ b }}.</p>",
    "<h1>{{ a }}</h1>{{ b }}<p> {{ a }} </p>\n<ul><li>{{ b }}</li><li> x{{ a }}y </li></ul>",
    "{{ a }}{{ b }}<br>{{ a }}&nbsp;{{ b }} &amp; {{ a }}",
    "<pre>  {{ a }}\n {{ b }}  </pre><div>{{ a }}</div>",
    "<table><tr><td>{{ a }}</td><th>{{ b }}</th></tr></table>",
    '<img alt="{{ a }}" src="x.png"> {{ b }}',
    '<a href="https://x.example/{{ a }}">{{ b }}</a>',
    "<a href='https://x.example'>https://x.example</a>{{ a }}",
    "<style>p { color: red } {{ a }}</style><p>{{ b }}</p>",
    "<!-- {{ a }} --><p>{{ b }}</p>",
    "&{{ a }}; &#{{ b }}; AT&T{{ a }}",
    "<{{ a }}>{{ b }}</{{ a }}>",
    "a < b {{ a }} > c",
    "<p>\u00a0{{ a }}\u00a0</p>\n\n\n<p>{{ b }}\n</p>",
    "<head><title>{{ a }}</title></head><body>{{ b }}</body>",
    "{{ a }}",
    "",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.sampled_from(HTML_SUBSTITUTIONS),
    a=st.text(
        alphabet=st.sampled_from("ab1 -.<>&;#'\"\n\t\u00a0\u2028\ue000\ue001/=x"), max_size=8
    ),
    b=st.one_of(st.text(alphabet=st.sampled_from("Pat 5-.é,"), max_size=12), st.integers()),
)
def test_the_text_of_a_substitution_is_the_converted_html(source, a, b):
    from carepost.templates.plaintext import html_to_text
    from carepost.templates.rendering import PreparedTemplate

    subject = compile_part("s", part="subject", html=False)
    html = compile_part(source, part="html", html=True)
    prepared = PreparedTemplate(subject=subject, html=html, text=None)
    message = prepared.render(contact=None, data={"a": a, "b": b})
    assert message.html is not None
    assert message.text == html_to_text(message.html)


def test_plain_values_use_the_skeleton_and_links_do_not():
    plain = compile_part("<p>Dear {{ a }},</p><p>{{ b }}</p>", part="html", html=True)
    assert plain.text is not None
    assert plain.text.fill(["<p>Dear ", "Pat O", ",</p><p>", "2027-01-02", "</p>"]) == (
        "Dear Pat O,\n\n2027-01-02\n"
    )
    # Not plain: the HTML is converted instead.
    assert plain.text.fill(["<p>Dear ", "Pat  O", ",</p><p>", "x", "</p>"]) is None
    assert plain.text.fill(["<p>Dear ", "Pat &amp; O", ",</p><p>", "x", "</p>"]) is None
    for source in (
        '<a href="https://x.example">{{ a }}</a>',
        '<img alt="{{ a }}">',
        "<!-- {{ a }} -->",
        "&{{ a }};",
    ):
        assert compile_part(source, part="html", html=True).text is None
