"""The text/plain alternative of an HTML email, when a template gives only HTML.

A small converter on the standard library's :class:`html.parser.HTMLParser` rather
than ``html2text``: that library writes Markdown (``**bold**``, ``[text](url)``,
backslash escapes), which reads as noise in a mail client's plain-text view, and it
is one more dependency for a hundred lines. What a text part needs is: block
elements on their own lines, paragraphs apart, list items as ``- item``, links as
``text (url)``, images by their alt text, tables a row per line, and nothing from
``<head>``, ``<style>`` or ``<script>``. Whitespace is collapsed as a browser would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "main", "aside", "nav",
        "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "ul", "ol", "blockquote",
        "pre", "address", "hr", "center", "dl", "dt", "dd", "form", "fieldset",
    }
)  # fmt: skip
PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote"})
HIDDEN = frozenset({"head", "style", "script", "title", "template", "noscript"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.links: list[str | None] = []
        self.link_text: list[int] = []

    def _newlines(self, count: int) -> None:
        """End the current line with at least ``count`` line breaks (none at the start).
        Looks only at the tail of the output: long emails stay linear."""
        out = self.out
        while out and not out[-1].strip(" "):
            if "\n" in out[-1]:
                break
            out.pop()
        if out:
            out[-1] = out[-1].rstrip(" ")
        trailing = 0
        for piece in reversed(out):
            stripped = piece.rstrip("\n")
            trailing += len(piece) - len(stripped)
            if stripped.strip(" "):
                break
        else:
            if not any(p.strip() for p in out):
                return  # nothing written yet: no blank lines at the top
        if trailing < count:
            out.append("\n" * (count - trailing))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in HIDDEN:
            self.hidden += 1
            return
        if self.hidden:
            return
        attributes = dict(attrs)
        if tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self._newlines(1)
            self.out.append("- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "img" and attributes.get("alt"):
            self.out.append(str(attributes["alt"]))
        elif tag == "a":
            self.links.append(attributes.get("href"))
            self.link_text.append(len(self.out))
        elif tag in BLOCKS:
            self._newlines(2 if tag in PARAGRAPHS else 1)
            if tag == "pre":
                self.pre += 1
            if tag == "hr":
                self.out.append("-" * 20 + "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN:
            self.hidden = max(self.hidden - 1, 0)
            return
        if self.hidden:
            return
        if tag == "a" and self.links:
            href = self.links.pop()
            start = self.link_text.pop()
            shown = "".join(self.out[start:]).strip()
            if href and href.startswith(("http://", "https://", "mailto:")) and href != shown:
                self.out.append(f" ({href.removeprefix('mailto:')})" if shown else href)
        elif tag in BLOCKS:
            if tag == "pre":
                self.pre = max(self.pre - 1, 0)
            self._newlines(2 if tag in PARAGRAPHS else 1)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            self.out.append(data)
            return
        text = _SPACES.sub(" ", data)
        current = self.out[-1] if self.out else ""
        if text.startswith(" ") and (not current or current.endswith((" ", "\n"))):
            text = text[1:]
        self.out.append(text)


def html_to_text(html: str) -> str:
    """The plain-text rendering of an HTML body (see the module docstring)."""
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    return _finish(writer)


def _finish(writer: _TextWriter) -> str:
    lines = [line.strip() for line in "".join(writer.out).split("\n")]
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


# --- the text of a substitution, worked out once per template ---------------------------

# Markers for a template's variables while its text is worked out: Unicode private use
# characters, which no HTML rule treats specially (neither space nor markup).
_FIRST_MARK = 0xE000
MAX_MARKS = 0x1000
_MARK_CLASS = f"\\u{_FIRST_MARK:04x}-\\u{_FIRST_MARK + MAX_MARKS - 1:04x}"
_MARK = re.compile(f"[{_MARK_CLASS}]")
# A charref that a value could complete (``&{{ x }};``, ``&#{{ n }}``).
_OPEN_CHARREF = re.compile(f"&[^\\t\\n\\f <&;]*[{_MARK_CLASS}]")
# A value that converts to itself wherever a marker stood in text: no markup or charref
# character (escaped HTML turns quotes into charrefs), no space at either end, no run of
# spaces, no other whitespace (collapsed or stripped), no marker.
_PLAIN = re.compile(f"[^\\s<>&\"'{_MARK_CLASS}]+(?: [^\\s<>&\"'{_MARK_CLASS}]+)*")


@dataclass(frozen=True)
class TextSkeleton:
    """The text of an HTML part that is only text and variables, with a hole for each
    variable: :func:`html_to_text` of the filled part, without parsing it, for values
    that are plain (see :meth:`fill`)."""

    parts: tuple[str | int, ...]  # text, or the position of a variable's output
    variables: tuple[int, ...]

    def fill(self, outputs: Sequence[str]) -> str | None:
        """The text for the part's pieces ``outputs`` (its text and each variable's
        output, as rendered); None when a value is not plain (then convert the HTML)."""
        plain = _PLAIN.fullmatch
        for position in self.variables:
            if plain(outputs[position]) is None:
                return None
        return "".join(part if isinstance(part, str) else outputs[part] for part in self.parts)


class _LinkCounter(_TextWriter):
    def __init__(self) -> None:
        super().__init__()
        self.anchors = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.anchors += tag == "a"
        super().handle_starttag(tag, attrs)


def text_skeleton(pieces: Sequence[str | None]) -> TextSkeleton | None:
    """The :class:`TextSkeleton` of an HTML part given as its pieces (its text, and None
    for each variable), or None when its text cannot be worked out ahead.

    The part is converted once with a marker in place of each variable. A plain value
    then converts exactly as its marker did (one non-space character for another:
    whitespace collapsing, line and paragraph breaks see the same thing), provided each
    marker stood in text: not inside a tag (an attribute, a tag name), not where the
    converter drops it (``<head>``, ``<script>``, comments), not completing a charref,
    and with no link in the part (a link's text is compared with its address).
    """
    variables = [n for n, piece in enumerate(pieces) if piece is None]
    if len(variables) > MAX_MARKS or any(
        piece is not None and _MARK.search(piece) for piece in pieces
    ):
        return None
    mark_of = {n: chr(_FIRST_MARK + k) for k, n in enumerate(variables)}
    html = "".join(piece if piece is not None else mark_of[n] for n, piece in enumerate(pieces))
    if _OPEN_CHARREF.search(html):
        return None
    for found in _MARK.finditer(html):
        if html.rfind("<", 0, found.start()) > html.rfind(">", 0, found.start()):
            return None  # inside a tag
    writer = _LinkCounter()
    writer.feed(html)
    writer.close()
    if writer.anchors:
        return None
    text = _finish(writer)
    for mark in mark_of.values():
        if text.count(mark) != html.count(mark):
            return None
    position_of = {mark: n for n, mark in mark_of.items()}
    parts: list[str | int] = []
    for chunk in re.split(f"([{_MARK_CLASS}])", text):
        if len(chunk) == 1 and chunk in position_of:
            parts.append(position_of[chunk])
        elif chunk:
            parts.append(chunk)
    return TextSkeleton(tuple(parts), tuple(variables))
