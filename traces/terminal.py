"""Untrusted text for the terminal: `safe()`, the one function every printed model or trace text goes through.

Cluster labels, prompts, responses, verifier reasons and teacher errors come from models and logs. Printed
raw, an ESC byte can clear the screen (CSI `\\x1b[2J`), retitle the window or plant a hyperlink (OSC 8,
`\\x1b]8;;url\\x07`), a CR can overwrite what a reader already saw, and through rich, text such as
`[link=http://…]x[/link]` becomes a live link. `safe()` makes every control character visible instead
(ESC -> `^[`, so the rest of an escape sequence is inert text a reader can see) and escapes rich markup.
"""
from __future__ import annotations

import re

from rich.markup import escape

# C0 controls but newline and tab, DEL, C1 controls (U+009B is CSI, U+009D is OSC on some terminals), and the
# Unicode bidi overrides/isolates (they reorder what a reader sees: "Trojan Source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 64)  # caret notation: ESC -> ^[, BEL -> ^G, CR -> ^M
    if code == 0x7F:
        return "^?"
    if code <= 0x9F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def safe(text: object, *, newlines: bool = False, markup: bool = True, limit: int | None = None) -> str:
    """`text` made harmless for a terminal.

    newlines: keep newlines and tabs (multi-line panels); otherwise each becomes a space (table cells, labels).
    markup: escape rich markup, for strings printed as markup (console.print, Table cells, progress
    descriptions); pass False only when the caller renders a `rich.text.Text` (never parsed as markup).
    limit: at most this many visible characters, the cut marked with "…".
    """
    if text is None:
        return ""
    text = str(text).replace("\r\n", "\n")
    if not newlines:
        text = text.replace("\n", " ").replace("\t", " ")
    text = _UNSAFE.sub(_visible, text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return escape(text) if markup else text
