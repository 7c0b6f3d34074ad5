"""traces.quiet, called by the CLIs at startup: third-party lines nobody can act on are hidden (matched by message
and category or logger), every other warning still shows, and off a terminal model loads print no tqdm bars."""
import io
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from traces import quiet as quiet_mod

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def restored(monkeypatch):
    """quiet() changes process-wide state: warning filters, logger filters, and (off a terminal) the environment;
    here stdout and stderr pass for terminals, so the tqdm switches stay as they are."""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.setattr(sys, "stderr", Tty())
    with warnings.catch_warnings():
        yield
    for name in quiet_mod.LOG_LINES:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, quiet_mod._DropLines)]:
            logger.removeFilter(f)


def shown(message: str, category, module: str) -> bool:
    with warnings.catch_warnings(record=True) as got:
        warnings.warn_explicit(message, category, module.replace(".", "/") + ".py", 1, module=module)
    return bool(got)


def test_known_warnings_are_hidden_and_every_other_one_still_shows(restored):
    warnings.simplefilter("always")
    quiet_mod.quiet()
    ckpt = "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing`"
    assert not shown(ckpt, FutureWarning, "transformers.modeling_utils")
    assert not shown("`gradient_checkpointing_enable` is deprecated and will be removed in v6.", FutureWarning,
                     "transformers.modeling_utils")
    assert not shown("`torch.jit.script_method` is deprecated. Please switch to `torch.compile` or `torch.export`.",
                     DeprecationWarning, "torch.jit._script")
    # the same text from elsewhere, another deprecation from the same place, a warning about the user's input
    assert shown(ckpt, FutureWarning, "train.lora")
    assert shown("`torch_dtype` is deprecated! Use `dtype` instead!", FutureWarning, "transformers.modeling_utils")
    assert shown("`max_length` is set to 20 but the input is longer", UserWarning, "transformers.generation.utils")


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_known_log_lines_are_dropped_and_others_kept(restored):
    quiet_mod.quiet()
    quiet_mod.quiet()  # idempotent: one filter per logger
    seen = Lines()
    loggers = {name: logging.getLogger(name) for name in quiet_mod.LOG_LINES}
    for logger in loggers.values():
        assert sum(isinstance(f, quiet_mod._DropLines) for f in logger.filters) == 1
        logger.addHandler(seen)
    try:
        bnb, evaluator, task = loggers.values()
        bnb.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                    "already `pip install kernels` and the kernels >= 0.11.1", "offline")
        bnb.warning("4-bit matmul on CPU is slow: use a GPU")
        evaluator.warning("pretrained=/m appears to be an\n                instruct or chat variant but chat\n"
                          "                template is not applied.\n                Recommend setting ...")
        evaluator.warning("Model appears to be a seq2seq model")
        task.warning("mend_prose: Custom kwargs can be passed to `--metadata` in console (as json string) or to "
                     "the TaskManager.\nFor example --metadata='{\"max_seq_lengths\":[4096, 8192]}'.")
        task.warning("mend_prose: dataset is empty")
    finally:
        for logger in loggers.values():
            logger.removeHandler(seen)
    assert seen.lines == ["4-bit matmul on CPU is slow: use a GPU", "Model appears to be a seq2seq model",
                          "mend_prose: dataset is empty"]


def test_off_a_terminal_model_loads_print_no_tqdm_bars(tmp_path, tiny_model_dir):
    """As `python -m <pkg>` from cron: quiet() first (its switches read at import), or after transformers was
    imported; the control load before quiet() shows the bar this test looks for."""
    load = ("from transformers import AutoModelForCausalLM; "
            f"AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r})")
    first = f"from traces.quiet import quiet; quiet(); {load}"
    later = f"{load}; print('QUIET', flush=True); from traces.quiet import quiet; quiet(); {load}"
    outs = []
    for code in (first, later):
        log = tmp_path / "cron.log"
        with log.open("w") as f:
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True,
                           env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})
        outs.append(log.read_text())
    assert "Loading weights" not in outs[0], outs[0]
    before, after = outs[1].split("QUIET")
    assert "Loading weights" in before and "Loading weights" not in after, outs[1]


def test_every_package_entry_point_calls_quiet_before_its_cli():
    for pkg in ("traces", "train", "evals", "curate"):
        text = (ROOT / pkg / "__main__.py").read_text()
        assert "quiet()" in text and text.index("quiet()") < text.index(f"from {pkg}.cli import"), pkg


def test_tables_in_a_log_are_wider_than_80_columns(tmp_path):
    """Off a terminal rich would fold every table to 80 columns; the CLIs ask for LOG_COLUMNS unless COLUMNS is set."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-m", "traces", "config"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    widest = max(len(line) for line in out.splitlines())
    assert 80 < widest <= int(quiet_mod.LOG_COLUMNS)
    env["COLUMNS"] = "100"  # the user's own width wins
    out = subprocess.run([sys.executable, "-m", "traces", "config"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert max(len(line) for line in out.splitlines()) == 100
