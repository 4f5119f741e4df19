"""Text that came from users or the store, inside the Markdown that `report` and `table` write.

A value is never Markdown structure: a newline in an override (or in a tag anyone can set on a
team server) would otherwise start a line of its own in report.md, and `report_html` reads lines
(an image line, a heading, a table row). So every piece of such text goes through `text` (plain
Markdown: control characters shown as escapes, Markdown punctuation backslash-escaped) or `code`
(a code span, whose content Markdown takes literally, with a fence longer than any run of
backticks inside it). `report_html` reads both back as the same characters.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that end a line for str.splitlines (and so for report_html), or are otherwise invisible
# control characters: shown as their Python escape (`\n`, `\x1b`, `\u2028`).
_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Markdown punctuation that can start structure inside a line: code, emphasis, links and images,
# raw HTML and autolinks, table cells, escapes themselves.
_PUNCTUATION = re.compile(r"([\\`*\[\]<>|!~{}#])")
_LONE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # `l1_l2` stays, `_x_` is escaped


def is_control(char: str) -> bool:
    """A character that must not reach Markdown as itself (line breaks, escape sequences, NUL, ...)."""
    return char in _BREAKS or unicodedata.category(char) in ("Cc", "Zl", "Zp")


def has_control(value: str) -> bool:
    return any(is_control(c) for c in value)


def visible(value: str) -> str:
    """`value` on one line: every control character as its Python escape (a newline as `\\n`)."""
    if not has_control(value):
        return value
    return "".join(c.encode("unicode_escape").decode("ascii") if is_control(c) else c for c in value)


def text(value: object) -> str:
    """`value` as plain Markdown text that reads back as itself and starts no structure."""
    escaped = _PUNCTUATION.sub(r"\\\1", visible(str(value)))
    return _LONE_UNDERSCORE.sub(r"\\_", escaped)


def code(value: object) -> str:
    """`value` as a Markdown code span (taken literally), on one line."""
    content = visible(str(value))
    if not content:
        return "` `"
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * (longest + 1)
    if content.startswith("`") or content.endswith("`") or (content.startswith(" ") and content.endswith(" ")
                                                            and content.strip()):
        content = f" {content} "  # CommonMark strips one space on each side
    return f"{fence}{content}{fence}"
