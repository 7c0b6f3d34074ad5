"""Progress of a long stage: rich bars on a terminal, plain lines anywhere else (a cron log must show work advancing).

    from traces.progress import progress
    with progress(console, stage="synth") as bar:
        task = bar.add_task("cluster c1", total=64)
        bar.advance(task, 16)
        bar.console.print("a note")

On a terminal (`console.is_terminal`) this is `rich.progress.Progress`. Anywhere else (a pipe, a file, cron) rich
would draw nothing until the end, so `PlainProgress` takes its place with the same small API (add_task, advance,
update, console) and prints one line per task at most every `every_s` seconds, and once when the task completes:

    synth · cluster c1: 16/64 (25%) 2.1/s ETA 0:00:23
    synth · cluster c1: 64/64 (100%) 2.3/s done in 0:00:28

Task descriptions are rich markup, as with rich's bars (pass them through traces.terminal.safe). Extra task fields
(`add_task(..., info="loss 1.23")`, `update(task, info=...)`) follow the figures, on a bar and on a line:

    lora: 40/120 (33%) 0.8/s ETA 0:01:40 · loss 1.2345  512 tok/s
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

EVERY_S = 5.0  # seconds between two plain lines of one task, when the caller names none (tests set 0)


def _clock_text(seconds: float) -> str:
    s = int(max(seconds, 0) + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _rate_text(rate: float) -> str:
    """2.1/s, or 41 s each when slower than one a ten seconds (a training step): "0.0/s" says nothing."""
    return f"{1 / rate:.0f} s each" if 0 < rate < 0.1 else f"{rate:.1f}/s"


@dataclass
class _Task:
    description: str
    total: float | None
    started: float
    completed: float = 0.0
    printed_at: float = 0.0
    finished: bool = False
    fields: dict = field(default_factory=dict)
    base: float = 0.0  # completed when added (a resumed run): the rate counts this session's work only


class PlainProgress:
    """rich.progress.Progress's add_task/advance/update for a console that is not a terminal: plain lines."""

    def __init__(self, console, stage: str = "", every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.console, self.stage, self.every_s, self.clock = console, stage, every_s, clock
        self.tasks: dict[int, _Task] = {}

    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0, **fields) -> int:
        now = self.clock()
        task_id = len(self.tasks)
        self.tasks[task_id] = _Task(description, total, now, completed, printed_at=now, fields=fields, base=completed)
        self._line(self.tasks[task_id], now)
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        t = self.tasks[task_id]
        if total is not None:
            t.total = total
        if description is not None:
            t.description = description
        if completed is not None:
            t.completed = completed
        if advance:
            t.completed += advance
        t.fields.update(fields)
        now = self.clock()
        done = t.total is not None and t.completed >= t.total
        if (done and not t.finished) or now - t.printed_at >= self.every_s:
            t.finished = done
            t.printed_at = now
            self._line(t, now)

    def _line(self, t: _Task, now: float) -> None:
        elapsed = now - t.started
        rate = (t.completed - t.base) / elapsed if elapsed > 0 else 0.0
        head = f"{self.stage} · " if self.stage else ""
        count = f"{t.completed:g}/{t.total:g}" if t.total else f"{t.completed:g}"
        share = f" ({t.completed / t.total:.0%})" if t.total else ""
        if t.total and t.completed >= t.total:
            tail = f"done in {_clock_text(elapsed)}"
        elif t.total and rate > 0:
            tail = f"ETA {_clock_text((t.total - t.completed) / rate)}"
        else:
            tail = "ETA -"
        extra = _fields_text(t.fields)
        self.console.print(f"{head}{t.description}: {count}{share} {_rate_text(rate)} {tail}"
                           + (f" · {extra}" if extra else ""), highlight=False, soft_wrap=True)


def _fields_text(fields: dict) -> str:
    return "  ".join(str(v) for v in fields.values() if v not in (None, ""))


@contextlib.contextmanager
def progress(console=None, stage: str = "", every_s: float | None = None, transient: bool = False) -> Iterator:
    """rich bars on a terminal, PlainProgress lines otherwise. console None: rich's global console (stdout), the
    one rich.progress.Progress used; every_s None: EVERY_S; transient: the bars vanish when done (a terminal only:
    a log keeps its lines)."""
    if console is None:
        import rich
        console = rich.get_console()
    if console.is_terminal:
        with _bars(console, transient) as bar:
            yield bar
        return
    yield PlainProgress(console, stage, EVERY_S if every_s is None else every_s)


def _bars(console, transient: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Fields(ProgressColumn):  # the task's extra fields (loss, tok/s), as PlainProgress prints them
        def render(self, task):
            return Text.from_markup(_fields_text(task.fields))

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Fields(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient)
