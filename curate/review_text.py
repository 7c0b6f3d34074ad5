"""Untrusted-text helpers for `python -m curate review`: neutralize, fold, describe checks.

Prompts, responses, verifier reasons and cluster labels all come from models. Shown raw, an
ESC byte could recolour the screen, retitle the window (OSC), clear it (CSI 2J) or, through
rich markup, print links and styles. `clean()` makes every such byte visible instead
(`\\x1b` -> `^[`) and the caller renders the result as a rich `Text` (never parsed as markup).
"""
from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

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
    return _ifeval_docs().get(check_id, "")


@functools.cache
def _ifeval_docs() -> dict[str, str]:
    """instruction id -> first docstring paragraph of its lm-eval class.

    Read from lm-eval's source with `ast` rather than imported: importing the IFEval module
    loads nltk and langdetect and probes for downloads (seconds), too slow for every redraw.
    """
    try:
        spec = importlib.util.find_spec("lm_eval")
        folder = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "ifeval"
        docs = _class_docs(folder / "instructions.py")
        return {iid: docs.get(cls, "") for iid, cls in _registry(folder / "instructions_registry.py").items()}
    except Exception:  # lm-eval missing or restructured: callers fall back to the bare id
        return {}


def _class_docs(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {node.name: " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
            for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def _registry(path: Path) -> dict[str, str]:
    """INSTRUCTION_DICT's keys (`_PUNCTUATION + "no_comma"`) evaluated -> class names."""
    consts, out = {}, {}
    for node in ast.parse(path.read_text()).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name, value = node.targets[0].id, node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            consts[name] = value.value
        elif name == "INSTRUCTION_DICT" and isinstance(value, ast.Dict):
            for key, cls in zip(value.keys, value.values):
                key_str = _const_str(key, consts)
                if key_str and isinstance(cls, ast.Attribute):
                    out[key_str] = cls.attr
    return out


def _const_str(node, consts: dict) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _const_str(node.left, consts), _const_str(node.right, consts)
        return left + right if left is not None and right is not None else None
    return None
