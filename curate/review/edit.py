"""The `e` action of `python -m curate review`: the example as an editable text file, $EDITOR,
parsing it back, and verifying the edit with the same checks curate's synthesis uses.

The file has three marker lines; everything between them is taken verbatim:

    ===== PROMPT =====
    ...
    ===== RESPONSE =====
    ...
    ===== METADATA (JSON) =====
    {"instruction_id_list": [...], "kwargs": [...]}
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import tempfile

PROMPT, RESPONSE, METADATA = "===== PROMPT =====", "===== RESPONSE =====", "===== METADATA (JSON) ====="


class EditError(ValueError):
    pass


def to_text(item) -> str:
    md = item.metadata or {}
    named = [*(md.get("instruction_id_list") or []),
             *(c.get("check") for c in md.get("checks") or [] if isinstance(c, dict))]
    checks = ", ".join(map(str, named))
    checks = checks or "none"
    header = (f"# mend review: editing example {item.example_id} (cluster {item.cluster_id})\n"
              "# Edit the prompt and the response; keep the three marker lines as they are.\n"
              "# Lines starting with '#' above the first marker are ignored. Empty the file to cancel.\n"
              f"# The edit is verified again by: {checks}\n")
    meta = json.dumps(item.metadata, ensure_ascii=False) if item.metadata is not None else ""
    return f"{header}{PROMPT}\n{item.prompt}\n{RESPONSE}\n{item.response}\n{METADATA}\n{meta}\n"


def parse(text: str) -> tuple[str, str, dict | None] | None:
    """(prompt, response, metadata) from an edited file; None when the file was emptied."""
    if not text.strip():
        return None
    lines = text.split("\n")
    try:
        p = lines.index(PROMPT)
        r = lines.index(RESPONSE, p + 1)
        m = len(lines) - 1 - lines[::-1].index(METADATA)
    except ValueError:
        raise EditError(f"the marker lines {PROMPT!r}, {RESPONSE!r} and {METADATA!r} must stay") from None
    if m < r:
        raise EditError(f"{METADATA!r} must come after {RESPONSE!r}")
    meta_text = "\n".join(lines[m + 1:]).strip()
    try:
        metadata = json.loads(meta_text) if meta_text else None
    except json.JSONDecodeError as e:
        raise EditError(f"metadata is not valid JSON: line {e.lineno}: {e.msg}") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise EditError("metadata must be a JSON object")
    return "\n".join(lines[p + 1:r]), "\n".join(lines[r + 1:m]), metadata


def run_editor(text: str) -> str:
    """Write text to a temp file, open $EDITOR (default vi) on it, return what was saved."""
    editor = shlex.split(os.environ.get("EDITOR") or os.environ.get("VISUAL") or "vi")
    fd, path = tempfile.mkstemp(prefix="mend-review-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        rc = subprocess.call(editor + [path])
        if rc != 0:
            raise EditError(f"editor {editor[0]!r} exited with status {rc}; nothing changed")
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        raise EditError(f"editor {editor[0]!r} not found (set $EDITOR)") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def keep(text: str) -> str:
    """Save an edit that could not be stored, so the reviewer's work is not lost; returns the path."""
    fd, path = tempfile.mkstemp(prefix="mend-review-unsaved-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def verify(prompt: str, response: str, metadata: dict | None) -> list[tuple[str, bool, str]]:
    """The checks the metadata names, run by evals.checks (lm-eval's IFEval checkers)."""
    from evals.checks import verify_instructions
    # lm-eval's import prints (nltk probes); keep it off the review screen
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        results = verify_instructions(prompt, response, metadata)
    return [(check_id, bool(r.passed), r.reason) for check_id, r in results]
