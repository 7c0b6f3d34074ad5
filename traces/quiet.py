"""Third-party chatter the user can do nothing about, silenced once at CLI startup: `quiet()` (the packages'
`__main__`s call it before importing anything heavy).

Each silenced line is matched by its message and its category or logger, and only these:
  - FutureWarning "`is_gradient_checkpointing` / `gradient_checkpointing_enable|disable` is deprecated": TRL and
    PEFT call transformers' old names on every SFT/DPO run; nothing in mend's settings changes it;
  - DeprecationWarning "`torch.jit.script_method` is deprecated": raised while peft, bitsandbytes and
    sentence-transformers import;
  - bitsandbytes "Failed to load CPU gemm_4bit_forward from kernels-community" (logged at import on CPUs with
    AVX512-BF16): it falls back to its own 4-bit CPU kernel, and the remedy it names downloads code at run time;
  - lm-eval "appears to be an instruct or chat variant but chat template is not applied": the perplexity guard
    scores plain prose on purpose;
  - lm-eval "Custom kwargs can be passed to `--metadata`": the guard passes its task's metadata already.
Everything else is kept, above all what says a config or input is wrong.

Off a terminal (cron, a pipe, a file), tqdm bars (transformers' "Loading weights" on every model load, hub
downloads) are carriage-return noise in a log; their own switches turn them off unless the user set them.
lm-eval's HF model passes `disable=False` to its request bars itself, so the perplexity guard's model reads
TQDM_DISABLE explicitly (evals.guards._quiet_hflm).
mend's long stages print plain progress lines there instead (traces.progress). rich draws tables 80 columns wide
when it cannot ask a terminal, which folds a cluster label or a gate reason over five lines of a cron log: there
COLUMNS (which rich reads) defaults to LOG_COLUMNS.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings

WARNINGS = [  # (category, message regex, module regex: where the library raises it)
    (FutureWarning, r"`(gradient_checkpointing_(en|dis)able|is_gradient_checkpointing)` is deprecated",
     r"transformers\.modeling_utils"),
    (DeprecationWarning, r"`torch\.jit\.script_method` is deprecated", r"torch\.jit\._script"),
]
LOG_COLUMNS = "140"
LOG_LINES = {  # logger -> message regex (searched: lm-eval wraps its lines)
    "bitsandbytes.backends.cpu.ops": r"^Failed to load CPU gemm_4bit_forward from kernels-community",
    "lm_eval.evaluator": r"chat\s+template\s+is\s+not\s+applied",
    "lm_eval.api.task": r"Custom kwargs can be passed to `--metadata`",
}


class _DropLines(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet() -> None:
    """Silence the lines above; off a terminal, switch tqdm bars off. Idempotent."""
    for category, message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, pattern in LOG_LINES.items():
        logger = logging.getLogger(name)  # the library's own logger, created now if it is not imported yet
        if not any(isinstance(f, _DropLines) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropLines(pattern))
    if not _terminal():
        _no_tqdm_bars()
    if not (sys.stdout is not None and sys.stdout.isatty()):
        os.environ.setdefault("COLUMNS", LOG_COLUMNS)


def _terminal() -> bool:
    """Both streams a terminal: tqdm writes to stderr, mend's progress to stdout; either one in a log is a log."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))


def _no_tqdm_bars() -> None:
    # read when tqdm / huggingface_hub are imported: set before, they reach every bar (and child processes)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "huggingface_hub" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
