"""The tenant's own detectors: MRN patterns and keyword dictionaries.

**MRN patterns** are regular expressions a tenant writes (its record numbers look
like ``MRN-0012345`` or ``A1234567``). A pattern an administrator types can be
catastrophic (``(a|aa)+$`` backtracks for ever on a long run of ``a``); Python's
``re`` cannot be interrupted, so patterns are compiled with the ``regex`` library,
whose matching takes a ``timeout``: a scan never hangs on a bad pattern, it stops
that pattern and marks the scan incomplete (the policy then treats the message as
PHI). Saving a pattern also runs it against adversarial probes with a short timeout
and refuses one that times out, so the mistake shows when it is made, not on a
message. Patterns are bounded in length and must not match the empty string.

**Keyword dictionaries** are lists of terms (drug names, diagnoses, programme
names...) matched as whole words, case-insensitively. They are compiled into one
Aho-Corasick automaton (``pyahocorasick``, a C extension): one pass over the text
finds every term of every dictionary, in time linear in the text whatever the
number of terms. A compiled alternation of thousands of terms in ``re`` instead
tries the alternatives one after another at each position (``re`` builds no trie),
so its cost grows with the dictionary.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick
import regex

from carepost.core.errors import ValidationFailed
from carepost.dlp.detectors import RawMatch
from carepost.dlp.findings import Severity

MAX_PATTERN_LENGTH = 200
# Time one pattern may take over one part's text during a scan.
PATTERN_TIMEOUT_SECONDS = 0.25
# Time a pattern may take on each probe when it is saved.
PROBE_TIMEOUT_SECONDS = 0.05
_PROBES = (
    "a" * 3000 + "!",
    "1" * 3000 + "!",
    "A1" * 1500 + "!",
    "MRN " * 800 + "!",
    " " * 3000 + "!",
    "aA1-. " * 500 + "\x00",
)
MAX_TERMS = 10_000
MAX_TERM_LENGTH = 100
MIN_TERM_LENGTH = 2


class PatternTimeout(Exception):
    """A tenant pattern ran out of time on a text (the scan marks the part incomplete)."""


@dataclass(frozen=True)
class MrnRule:
    name: str
    pattern: Any  # a compiled regex.Pattern (the library has no type information)
    severity: Severity = Severity.HIGH

    @property
    def detector(self) -> str:
        return f"mrn:{self.name}"

    def find(self, text: str) -> Iterator[RawMatch]:
        try:
            for match in self.pattern.finditer(text, timeout=PATTERN_TIMEOUT_SECONDS):
                if match.end() > match.start():
                    yield RawMatch(match.start(), match.end(), 0.9, match.group(0).upper())
        except TimeoutError:
            raise PatternTimeout(self.name) from None


def compile_mrn_pattern(pattern: str, *, field: str = "pattern", probe: bool = True) -> Any:
    """Compile a tenant's MRN pattern, refusing one that is too long, invalid, matches
    the empty string or (with ``probe``, when it is saved) backtracks catastrophically
    on the probes."""
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        raise ValidationFailed(f"a pattern has 1 to {MAX_PATTERN_LENGTH} characters", field=field)
    try:
        compiled = regex.compile(pattern)
    except (regex.error, OverflowError, RecursionError) as exc:
        # Only the position: the library's message may quote part of the pattern.
        position = getattr(exc, "pos", None)
        where = f" (at position {position})" if isinstance(position, int) else ""
        raise ValidationFailed(f"not a valid regular expression{where}", field=field) from None
    if compiled.fullmatch("") is not None:
        raise ValidationFailed("the pattern must not match an empty string", field=field)
    for text in _PROBES if probe else ():
        try:
            for _ in compiled.finditer(text, timeout=PROBE_TIMEOUT_SECONDS):
                pass
        except TimeoutError:
            raise ValidationFailed(
                "the pattern backtracks too much (nested or overlapping repetition, "
                "such as (a+)+ or (a|aa)+): write it without repetition inside repetition",
                field=field,
            ) from None
    return compiled


def normalize_term(term: str) -> str:
    """How a dictionary term is matched: NFKC, lower case, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", term).lower().split())


def clean_terms(terms: Sequence[str], *, field: str = "terms") -> list[str]:
    """The distinct normalized terms of a dictionary, or a field error naming the
    offending term's index (never the term: it may be PHI)."""
    if len(terms) > MAX_TERMS:
        raise ValidationFailed(f"a dictionary has at most {MAX_TERMS} terms", field=field)
    cleaned: dict[str, None] = {}
    for index, term in enumerate(terms):
        normalized = normalize_term(term)
        if not MIN_TERM_LENGTH <= len(normalized) <= MAX_TERM_LENGTH:
            raise ValidationFailed(
                f"a term has {MIN_TERM_LENGTH} to {MAX_TERM_LENGTH} characters",
                field=f"{field}/{index}",
            )
        cleaned[normalized] = None
    return list(cleaned)


@dataclass(frozen=True)
class Dictionary:
    name: str
    terms: Sequence[str]
    severity: Severity = Severity.MEDIUM
    phi: bool = True

    @property
    def detector(self) -> str:
        return f"keyword:{self.name}"


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _lower_same_length(text: str) -> str:
    """``text.lower()`` with offsets kept: the few characters whose lower case is
    longer (the dotted capital I) are left as they are."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(low if len(low := char.lower()) == 1 else char for char in text)


class KeywordMatcher:
    """Every dictionary of a tenant in one automaton: term -> the dictionaries holding it."""

    def __init__(self, dictionaries: Iterable[Dictionary]) -> None:
        self.dictionaries = {dictionary.name: dictionary for dictionary in dictionaries}
        holders: dict[str, list[str]] = {}
        for dictionary in self.dictionaries.values():
            for term in dictionary.terms:
                holders.setdefault(normalize_term(term), []).append(dictionary.name)
        self._automaton: Any = None
        if holders:
            automaton = ahocorasick.Automaton()
            for term, names in holders.items():
                automaton.add_word(term, (term, tuple(names)))
            automaton.make_automaton()
            self._automaton = automaton

    def find(self, text: str) -> Iterator[tuple[Dictionary, RawMatch]]:
        if self._automaton is None or not text:
            return
        # Offsets must stay those of ``text``: lower case only, no normalization of the
        # text itself (terms with one space between words match text with one space).
        lowered = _lower_same_length(text)
        for end_index, (term, names) in self._automaton.iter(lowered):
            start, end = end_index - len(term) + 1, end_index + 1
            if start > 0 and _is_word_char(lowered[start - 1]):
                continue
            if end < len(lowered) and _is_word_char(lowered[end]):
                continue
            for name in names:
                yield self.dictionaries[name], RawMatch(start, end, 0.8, term)
