"""tracked_html and its tokens: what is rewritten, what is left alone, no PHI in any
URL, tampering rejected."""

from __future__ import annotations

import re
import uuid

from hypothesis import given
from hypothesis import strategies as st

from carepost.tracking.links import (
    TokenKind,
    click_token,
    open_token,
    read_token,
    tracked_html,
)

SECRET = b"tracking-test-secret-0123456789abcdef"
BASE = "https://care.clinic.example"
HREFS = re.compile(r'href="([^"]*)"')


def _html(body: str) -> str:
    return f"<html><body>{body}</body></html>"


def test_links_are_rewritten_and_a_pixel_added():
    message_id = uuid.uuid4()
    html = _html(
        '<p><a href="https://portal.clinic.example/visit?id=42&amp;x=1">Your visit</a>'
        "<a class='b' href='http://clinic.example/hours'>Hours</a></p>"
    )
    out = tracked_html(html, message_id=message_id, base_url=BASE, secret=SECRET)
    hrefs = HREFS.findall(out)
    assert len(hrefs) == 2 and all(h.startswith(f"{BASE}/t/c/") for h in hrefs)
    links = [read_token(h.rsplit("/", 1)[1], secret=SECRET) for h in hrefs]
    assert [(link.link_index, link.url) for link in links] == [
        (0, "https://portal.clinic.example/visit?id=42&x=1"),
        (1, "http://clinic.example/hours"),
    ]
    assert all(link.message_id == message_id and link.kind is TokenKind.CLICK for link in links)
    assert ">Your visit</a>" in out and "class='b'" in out
    pixel = re.search(r'<img src="([^"]+)"[^>]*></body>', out)
    assert pixel is not None and pixel.group(1).startswith(f"{BASE}/t/o/")
    assert pixel.group(1).endswith(".gif")
    opened = read_token(pixel.group(1).rsplit("/", 1)[1], secret=SECRET)
    assert opened is not None and opened.kind is TokenKind.OPEN
    assert opened.message_id == message_id


def test_unsubscribe_preferences_and_non_http_links_are_left_alone():
    kept = [
        f"{BASE}/u/abc123",
        f"{BASE}/p/abc123",
        "https://lists.example.org/unsubscribe?u=1",
        "mailto:care@clinic.example",
        "tel:+14155550100",
        "#top",
    ]
    body = "".join(f'<a href="{href}">x</a>' for href in kept)
    body += '<a data-carepost-notrack href="https://clinic.example/private">y</a>'
    out = tracked_html(_html(body), message_id=uuid.uuid4(), base_url=BASE, secret=SECRET)
    assert HREFS.findall(out) == [*kept, "https://clinic.example/private"]


def test_html_without_body_gets_the_pixel_at_the_end():
    out = tracked_html("<p>hi</p>", message_id=uuid.uuid4(), base_url=BASE, secret=SECRET)
    assert out.startswith("<p>hi</p><img ")


@given(st.uuids(), st.text(min_size=1, max_size=60))
def test_no_message_id_or_phi_appears_in_tracking_urls(message_id, phi):
    url = f"https://portal.clinic.example/?patient={phi}&mail=jane@patients.example"
    html = _html(f'<a href="{url.replace(chr(34), "%22")}">x</a>')
    out = tracked_html(html, message_id=message_id, base_url=BASE, secret=SECRET)
    tracked = [h for h in HREFS.findall(out) if h.startswith(BASE)]
    for href in tracked + re.findall(r'src="([^"]+)"', out):
        token = href.rsplit("/", 1)[1]
        assert "@" not in token and "patients" not in token
        assert message_id.hex not in token.lower() and str(message_id) not in token
        assert re.fullmatch(r"[A-Za-z0-9_-]+(\.gif)?", token)


@given(st.uuids(), st.integers(0, 499), st.data())
def test_tampered_tokens_are_rejected(message_id, index, data):
    token = click_token(message_id, index, "https://clinic.example/a", secret=SECRET)
    position = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = data.draw(st.sampled_from(alphabet))
    tampered = token[:position] + replacement + token[position + 1 :]
    if tampered != token:
        found = read_token(tampered, secret=SECRET)
        # Only the unused low bits of the last base64 character may change harmlessly.
        assert found is None or (
            found.url == "https://clinic.example/a" and position == len(token) - 1
        )


@given(st.text(max_size=300))
def test_arbitrary_tokens_never_raise(token):
    assert read_token(token, secret=SECRET) is None


def test_tokens_of_another_secret_or_kind_do_not_verify():
    message_id = uuid.uuid4()
    assert read_token(open_token(message_id, secret=SECRET), secret=b"y" * 32) is None
    opened = read_token(open_token(message_id, secret=SECRET), secret=SECRET)
    assert opened is not None and opened.kind is TokenKind.OPEN and opened.url is None


def test_tokens_are_not_repeated():
    message_id = uuid.uuid4()
    assert open_token(message_id, secret=SECRET) != open_token(message_id, secret=SECRET)


def test_opens_and_clicks_can_be_left_out():
    html = _html('<a href="https://clinic.example/a">a</a>')
    only_clicks = tracked_html(
        html, message_id=uuid.uuid4(), base_url=BASE, secret=SECRET, opens=False
    )
    assert "<img" not in only_clicks and "/t/c/" in only_clicks
    only_opens = tracked_html(
        html, message_id=uuid.uuid4(), base_url=BASE, secret=SECRET, clicks=False
    )
    assert "/t/o/" in only_opens and 'href="https://clinic.example/a"' in only_opens
