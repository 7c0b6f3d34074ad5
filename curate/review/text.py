"""Untrusted-text helpers for `python -m curate review`: neutralize, fold, describe checks.

Prompts, responses, verifier reasons and cluster labels all come from models. Shown raw, an
ESC byte could recolour the screen, retitle the window (OSC), clear it (CSI 2J) or, through
rich markup, print links and styles. `clean()` makes every such byte visible instead
(`\\x1b` -> `^[`) and the caller renders the result as a rich `Text` (never parsed as markup).
"""
from __future__ import annotations

from evals.ifeval import instruction_docs
from traces.terminal import safe


def clean(text: object) -> str:
    """Text with every terminal control sequence made visible; newlines and tabs kept (rendered as a
    rich `Text`, so no markup escaping): the project's one escaping function, `traces.terminal.safe`."""
    return safe(text, newlines=True, markup=False)


def fold(text: object, max_lines: int, max_chars: int) -> str:
    """clean(text), cut to max_lines lines and max_chars characters, saying how much was cut."""
    text = clean(text)
    lines = text.split("\n")
    body = "\n".join(lines[:max_lines])
    if len(body) > max_chars:
        body = body[:max_chars]
        hidden_lines = len(lines) - (body.count("\n") + 1)
        extra = f", {hidden_lines} more lines" if hidden_lines > 0 else ""
        return f"{body}\n… ({len(text) - len(body)} more characters{extra})"
    if len(lines) > max_lines:
        return f"{body}\n… ({len(lines) - max_lines} more lines)"
    return body


def describe_check(check_id: str | None) -> str:
    """One line saying what a check requires: lm-eval's instruction docstring for IFEval ids."""
    if not check_id:
        return ""
    return instruction_docs().get(check_id, "")
