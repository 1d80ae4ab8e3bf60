"""Hypothesis strategies of email addresses: the everyday ones and their near misses
(blanks around them, special-use and numeric top-level domains, Punycode, quoting and
other characters a local part may hold), for the tests that prove a fast path of
address handling agrees with email-validator."""

from __future__ import annotations

from hypothesis import strategies as st

LABEL_CHARS = "abcXYZ019-"
LOCAL_CHARS = "aZ09._+-!#$%&'*/=?^`{|}~\"(),:;<>[\\] é"
labels = st.text(alphabet=LABEL_CHARS, min_size=0, max_size=70)
tlds = st.sampled_from(
    [
        "org",
        "COM",
        "io",
        "test",
        "local",
        "localhost",
        "onion",
        "invalid",
        "arpa",
        "x",
        "1a",
        "a1",
        "xn--p1ai",
        "co",
        "Museum",
        "d-e",
    ]
)
addresses = st.builds(
    lambda local, domain, tld, pad: f"{pad}{local}@{'.'.join([*domain, tld])}{pad}",
    st.one_of(
        st.text(alphabet="aZ09._+-", min_size=0, max_size=70),
        st.text(alphabet=LOCAL_CHARS, min_size=0, max_size=70),
    ),
    st.lists(labels, min_size=0, max_size=4),
    tlds,
    st.sampled_from(["", " ", "\t", "\u00a0"]),
)
