"""Local prose for the `mend_prose` lm-eval task: paragraphs of English from Python's own files.

Sources (all installed with Python), in this order: the module docstrings of a fixed list of pure-Python stdlib
modules, the "HISTORY OF THE SOFTWARE" section of Python's LICENSE.txt, then the docstrings of those modules'
public classes (and their public methods) and functions, by module and then by name. Paragraphs of 40+ words that
are mostly words (not code) are kept, once each, in that fixed order, so the same Python version always yields the
same documents. The member docstrings come last so that the first documents (the gate's: `gate_lm_eval_docs`,
40 by default, of ~53 module/license paragraphs) are the same as before they were added.

Documents are numbered from 0; a task run scores `n_docs` of them starting at `offset` (lm-eval metadata, or
MEND_PROSE_DOCS / MEND_PROSE_OFFSET). The gate uses offset 0; `curate sweep` scores documents from
`sweep_prose_offset` on, past the gate's, so the sweep never tunes on the gate's prose.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
import warnings
from pathlib import Path

MODULES = ["argparse", "textwrap", "logging", "json", "collections", "unittest", "subprocess", "threading",
           "email", "pickle", "decimal", "fractions", "difflib", "heapq", "bisect", "random", "statistics",
           "shutil", "tempfile", "contextlib", "functools", "inspect", "pathlib", "typing", "dataclasses",
           "enum", "string", "calendar", "smtplib", "http.cookies", "urllib.request", "zipfile", "tarfile",
           "csv", "sched", "queue", "getopt", "optparse", "codecs", "locale", "gettext", "doctest", "pdb",
           "pydoc", "mailbox", "imaplib", "ftplib", "socketserver", "xml.dom.minidom", "wave", "colorsys"]
MIN_WORDS = 40


def _is_prose(par: str) -> bool:
    words = par.split()
    if len(words) < MIN_WORDS:
        return False
    alpha = sum(1 for w in words if re.fullmatch(r"[A-Za-z][A-Za-z'\-]*[.,;:]?", w))
    return alpha / len(words) >= 0.8 and ">>>" not in par


def paragraphs() -> list[str]:
    found = []
    for name in MODULES:
        try:
            doc = importlib.import_module(name).__doc__ or ""
        except ImportError:
            continue
        found += [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc)]
    license_txt = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "LICENSE.txt"
    if license_txt.is_file():
        history = license_txt.read_text(errors="ignore").split("B. TERMS AND CONDITIONS")[0]
        found += [" ".join(p.split()) for p in re.split(r"\n\s*\n", history)]
    for name in MODULES:  # appended after the sources above: the gate's first documents do not move
        found += [" ".join(p.split()) for doc in _member_docs(name) for p in re.split(r"\n\s*\n", doc)]
    seen, out = set(), []
    for par in found:
        if _is_prose(par) and par not in seen:
            seen.add(par)
            out.append(par)
    return out


def _member_docs(name: str) -> list[str]:
    """Docstrings of a module's public classes and functions defined in it (by name), each class followed by its
    own public methods' (by name); a docstring as written (not inherited)."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return []
    docs = []
    with warnings.catch_warnings():  # e.g. typing.io / typing.re warn when read
        warnings.simplefilter("ignore", DeprecationWarning)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__ or \
                    not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            docs.append(inspect.cleandoc(obj.__doc__ or ""))
            if inspect.isclass(obj):
                docs += [inspect.cleandoc(m.__doc__ or "") for a, m in sorted(vars(obj).items())
                         if not a.startswith("_") and inspect.isfunction(m)]
    return docs


def write_docs(path: Path, n_docs: int, offset: int = 0) -> Path:
    """Documents offset .. offset + n_docs - 1 (fewer where the list ends), one JSON line each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = paragraphs()[offset:offset + n_docs]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def load(**kwargs):
    """lm-eval `custom_dataset`: write the documents under data/ and load them as the test split."""
    import datasets
    from traces.settings import resolve_path
    n_docs = int(kwargs.get("n_docs") or os.environ.get("MEND_PROSE_DOCS", 40))
    offset = int(kwargs.get("offset") or os.environ.get("MEND_PROSE_OFFSET", 0))
    name = "prose.jsonl" if offset == 0 else f"prose-from{offset}.jsonl"  # the gate's file is unchanged
    path = write_docs(resolve_path(f"data/lm_eval/{name}"), n_docs, offset)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc, results):
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["text"]))
    n_bytes = len(doc["text"].encode("utf-8"))
    return {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, n_bytes),
            "bits_per_byte": (loglikelihood, n_bytes)}
