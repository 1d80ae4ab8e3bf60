"""The text part made from HTML: readable in a mail client's plain-text view."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from carepost.templates.plaintext import html_to_text


def test_blocks_lists_links_and_images():
    text = html_to_text(
        "<h1>Your visit</h1><p>Hello   Ann,<br>see you\non <b>May 1</b>.</p>"
        '<ul><li>Bring your card</li><li>Arrive early</li></ul><p><img alt="Logo"> '
        '<a href="https://clinic.example/x">Directions</a> '
        '<a href="mailto:desk@clinic.example">desk@clinic.example</a></p>'
    )
    assert text == (
        "Your visit\n\nHello Ann,\nsee you on May 1.\n\n- Bring your card\n- Arrive early\n\n"
        "Logo Directions (https://clinic.example/x) desk@clinic.example (desk@clinic.example)\n"
    )


def test_head_style_and_script_are_left_out():
    text = html_to_text(
        "<html><head><title>T</title><style>p{color:red}</style></head>"
        "<body><script>x()</script><p>Only this</p></body></html>"
    )
    assert text == "Only this\n"


def test_tables_become_lines():
    text = html_to_text(
        "<table><tr><td>Date</td><td>May 1</td></tr><tr><td>Time</td><td>9:30</td></tr></table>"
    )
    assert text == "Date May 1\nTime 9:30\n"


def _seconds(paragraphs: int) -> float:
    body = "<p>A paragraph with a <a href='https://x.example'>link</a>.</p>" * paragraphs
    started = time.perf_counter()
    text = html_to_text(body)
    assert text.count("link (https://x.example)") == paragraphs
    return time.perf_counter() - started


def test_long_emails_convert_in_linear_time():
    # Four times the paragraphs: about four times the time (quadratic would be 16).
    small = min(_seconds(2000) for _ in range(2))
    large = _seconds(8000)
    assert large < 10 * small


@given(st.text(max_size=200))
def test_any_input_gives_text(html):
    assert isinstance(html_to_text(html), str)
