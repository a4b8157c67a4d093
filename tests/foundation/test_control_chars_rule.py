"""The control-character rule (docs/protocol.md, "Control characters") has fast paths that skip
the regular expression (``isprintable``, per-character scans); whatever the text, they must
give what the rule itself gives."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from cascade_cli.protocol import clean_text, strip_controls

RULE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # free text keeps TAB, LF, CR
RULE_ID = re.compile(r"[\x00-\x1f\x7f]")  # identifiers keep none

# Controls, the C1 range, Unicode spaces and separators, CJK, emoji: everything that might
# trip a fast path.
text = st.text(st.one_of(
    st.sampled_from([chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]),
    st.sampled_from(["\u3000", "\u00a0", "\u2028", "\u2029", "\u200b", "\ufeff", " "]),
    st.characters()), max_size=60)


@given(text)
def test_clean_text_is_the_rule(value: str) -> None:
    assert clean_text(value) == RULE_TEXT.sub("", value)


@given(text)
def test_strip_controls_is_the_rule(value: str) -> None:
    assert strip_controls(value) == RULE_ID.sub("", value)


def test_examples() -> None:
    assert clean_text("标题\x00一\t二\n三\r") == "标题一\t二\n三\r"
    assert clean_text("plain title") == "plain title"
    assert clean_text("全角\u3000空格\x7f") == "全角\u3000空格"
    assert strip_controls("https://example.com/a\tb\x00") == "https://example.com/ab"
    assert strip_controls("guid-\u00a0-ok") == "guid-\u00a0-ok"
