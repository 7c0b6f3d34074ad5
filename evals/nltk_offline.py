"""python -m evals setup-nltk [--force] [--target DIR] — build NLTK's English sentence tokenizer offline.

lm-evaluation-harness's IFEval code (`lm_eval/tasks/ifeval/instructions_util.py`) runs
`nltk.data.find("tokenizers/punkt_tab")` at import and calls NLTK's downloader for `punkt_tab` when it
is missing; `count_sentences` and `nltk.word_tokenize` then load `tokenizers/punkt_tab/english/`.
Nothing may be downloaded here, so we train NLTK's own unsupervised `PunktTrainer` on English
prose that ships with Python itself (the language reference in `pydoc_data.topics`, plus the
license texts of installed packages) and write the four punkt_tab files into
`<sys.prefix>/nltk_data/tokenizers/punkt_tab/english/`, a folder NLTK searches by default.

`ensure()` is what code calls before using lm-eval's checkers: idempotent, it builds the data if
missing, replaces `nltk.download` with a function that fails loudly (so nothing ever downloads),
and seeds langdetect and langdetect-rs (lm-eval leaves langdetect unseeded, so a language check can flip
between runs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Well-known English abbreviations a small training corpus may not contain often enough for
# Punkt to learn them; adding them keeps "Dr. Smith arrived." one sentence.
KNOWN_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "al",
    "approx", "dept", "est", "fig", "inc", "ltd", "co", "corp", "no", "vol", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "a.m", "p.m", "ph.d",
}
FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
MAX_CORPUS_CHARS = 3_000_000  # ~3 MB of prose trains in ~10-20 s on one core


class OfflineDownloadRefused(RuntimeError):
    pass


def default_target() -> Path:
    return Path(sys.prefix) / "nltk_data"


def model_dir(root: Path) -> Path:
    return root / "tokenizers" / "punkt_tab" / "english"


def is_built(root: Path | None = None) -> bool:
    folder = model_dir(root or default_target())
    return all((folder / f).is_file() for f in FILES)


def corpus() -> str:
    """English prose shipped with Python and installed packages; never fetched."""
    import pydoc_data.topics
    parts = list(pydoc_data.topics.topics.values())
    parts += _license_texts()
    text, total = [], 0
    for part in parts:
        text.append(part)
        total += len(part)
        if total >= MAX_CORPUS_CHARS:
            break
    return "\n\n".join(text)


def _license_texts() -> list[str]:
    import site
    roots = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    texts = []
    for root in roots:
        for path in sorted(root.glob("*.dist-info/**/LICEN[CS]E*"))[:300]:
            if path.is_file() and path.stat().st_size < 200_000:
                texts.append(path.read_text(errors="ignore"))
    return texts


def train_params(text: str):
    from nltk.tokenize.punkt import PunktTrainer
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True  # few documents: keep every collocation Punkt finds
    trainer.train(text, finalize=True)
    params = trainer.get_params()
    params.abbrev_types |= KNOWN_ABBREVIATIONS
    return params


def write_params(params, folder: Path) -> None:
    """The punkt_tab format, written directly (nltk's save_punkt_params insists on private dirs)."""
    from nltk.tabdata import TabEncoder
    enc = TabEncoder()
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "collocations.tab": enc.tups2tab(params.collocations),
        "sent_starters.txt": enc.set2txt(params.sent_starters),
        "abbrev_types.txt": enc.set2txt(params.abbrev_types),
        "ortho_context.tab": enc.ivdict2tab(params.ortho_context),
    }
    for name, body in contents.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(body, newline="")
        tmp.replace(folder / name)  # atomic per file: a killed build never leaves a torn file


def build(root: Path | None = None, force: bool = False) -> Path:
    root = root or default_target()
    if force or not is_built(root):
        write_params(train_params(corpus()), model_dir(root))
    return model_dir(root)


def forbid_downloads() -> None:
    """Replace nltk.download so any code path that would fetch data fails loudly instead."""
    import nltk

    def refuse(info_or_id=None, *args, **kwargs):
        raise OfflineDownloadRefused(
            f"nltk.download({info_or_id!r}) refused: mend runs offline. "  # offline-ok: the refusal itself
            "Run `python -m evals setup-nltk` to build the tokenizer data locally.")

    nltk.download = refuse
    nltk.downloader.download = refuse


def seed_langdetect(seed: int = 0) -> None:
    """langdetect samples internally; an unseeded factory can flip a language check between runs. Seeds langdetect
    and langdetect-rs, which lm-eval's checkers call in its place as mend imports them (evals.ifeval.modules())."""
    import langdetect_rs
    from langdetect import DetectorFactory
    DetectorFactory.seed = seed
    langdetect_rs.DetectorFactory.seed = seed


def ensure(root: Path | None = None) -> Path:
    """Idempotent: build the data if missing, make nltk find it, forbid downloads, seed langdetect."""
    import nltk
    folder = build(root)
    data_root = str(folder.parents[2])
    if data_root not in nltk.data.path:
        nltk.data.path.insert(0, data_root)
    forbid_downloads()
    seed_langdetect()
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evals setup-nltk", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild even if the data exists")
    ap.add_argument("--target", type=Path, default=None, help="nltk_data root (default: <sys.prefix>/nltk_data)")
    args = ap.parse_args(argv)
    from rich.console import Console
    console = Console()
    root = args.target or default_target()
    if is_built(root) and not args.force:
        console.print(f"punkt_tab (english) already built in {model_dir(root)}")
        return 0
    with console.status("training the Punkt sentence tokenizer on bundled English prose ..."):
        folder = build(root, force=True)
    console.print(f"[green]built[/] punkt_tab (english) in {folder}")
    return 0
