"""Lazy sub-command dispatch shared by the four packages' `python -m <pkg>` entry points.

Each sub-command lives in its own module as `main(argv) -> int` and parses its own flags, so
`python -m evals --help` starts instantly and never imports torch.
"""
from __future__ import annotations

import importlib
import sys
import traceback

from rich.console import Console

from traces.terminal import safe


def dispatch(prog: str, doc: str, commands: dict[str, tuple[str, str]], argv: list[str] | None = None) -> int:
    """commands: name -> ("module:function", one-line help)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        _usage(prog, doc, commands)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        Console(stderr=True).print(f"[red]error:[/] unknown command {name!r} for {prog}")
        _usage(prog, doc, commands)
        return 2
    module, func = commands[name][0].split(":")
    return _run(getattr(importlib.import_module(module), func), rest)


BUSY_HINT = ("(a running `traces ingest` commits and releases the database after every batch of "
             "`batch_lines` lines, so a retry usually gets in within seconds; `busy_timeout_s` sets how long to wait)")


def _run(fn, rest: list[str]) -> int:
    """Turn the errors a user can fix into one clear line (exit 2) instead of a stack trace, Ctrl-C into one line
    (exit 130), and any other crash into its traceback with secrets scrubbed (exit 1): a crash may quote the
    value at fault, such as a key in a log field."""
    from traces.locations import RemoteError
    from traces.scrub import scrub_text
    from traces.settings import SettingsError
    from traces.store import StoreBusy, StoreError, interrupted
    err = Console(stderr=True)
    try:
        return int(fn(rest) or 0)
    except StoreBusy as e:
        err.print(f"[red]error:[/] {safe(str(e))} {BUSY_HINT}", highlight=False)
        return 2
    except (SettingsError, StoreError, FileNotFoundError, RemoteError) as e:
        err.print(f"[red]error:[/] {safe(scrub_text(str(e)))}", highlight=False)
        return 2
    except (KeyboardInterrupt, Exception) as e:
        if interrupted(e):
            err.print("[yellow]interrupted[/]: what was stored so far is kept; run again to resume")
            return 130
        err.print(safe(scrub_text("".join(traceback.format_exception(e))), newlines=True), highlight=False,
                  soft_wrap=True)
        return 1


def _usage(prog: str, doc: str, commands: dict) -> None:
    console = Console()
    console.print(f"usage: python -m {prog} COMMAND [--help]\n\n{doc}\n")
    for name, (_, help_line) in commands.items():
        console.print(f"  [cyan]{name:<14}[/] {help_line}")
