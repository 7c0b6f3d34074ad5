"""Local prose for the `mend_prose` lm-eval task: paragraphs of English from Python's own files.

Sources (all installed with Python): the docstrings of a fixed list of pure-Python stdlib modules and the
"HISTORY OF THE SOFTWARE" section of Python's LICENSE.txt. Paragraphs of 40+ words that are mostly words
(not code) are kept, in a fixed order, so the same Python version always yields the same documents.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
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
    seen, out = set(), []
    for par in found:
        if _is_prose(par) and par not in seen:
            seen.add(par)
            out.append(par)
    return out


def write_docs(path: Path, n_docs: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = paragraphs()[:n_docs]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def load(**kwargs):
    """lm-eval `custom_dataset`: write the documents under data/ and load them as the test split."""
    import datasets
    from traces.settings import resolve_path
    n_docs = int(kwargs.get("n_docs") or os.environ.get("MEND_PROSE_DOCS", 40))
    path = write_docs(resolve_path("data/lm_eval/prose.jsonl"), n_docs)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc, results):
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["text"]))
    n_bytes = len(doc["text"].encode("utf-8"))
    return {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, n_bytes),
            "bits_per_byte": (loglikelihood, n_bytes)}
