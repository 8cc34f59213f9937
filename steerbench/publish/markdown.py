"""Markdown that untrusted text cannot break: model names, method labels and model outputs
go into tables of generated Markdown (leaderboard, reproduction report), where a ``|`` or a
newline would forge rows and raw HTML or link syntax would render in viewers that allow it.
"""

from __future__ import annotations

import html
import re

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]|#!~])")
_WHITESPACE = re.compile(r"\s+")


def md_cell(value: object) -> str:
    """``value`` as literal text inside one Markdown table cell (or inline text).

    HTML is entity-escaped (``&``, ``<``, ``>`` stay text in every renderer), Markdown's
    special characters are backslash-escaped (no emphasis, links, images, code or new
    columns), and line breaks collapse into spaces (no new rows)."""
    text = _WHITESPACE.sub(" ", str(value)).strip()
    text = html.escape(text, quote=False)
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)
