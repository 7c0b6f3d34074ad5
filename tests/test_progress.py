"""traces.progress: plain progress lines (stage, done/total, rate, ETA) when the console is not a terminal, so a
cron log shows a long stage advancing; rich bars on a terminal."""
import io

from rich.console import Console

from traces.progress import PlainProgress, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_appear_during_a_long_loop_not_only_at_the_end():
    out = io.StringIO()
    console = Console(file=out, width=200)
    clock = Clock()
    bar = PlainProgress(console, stage="synth", every_s=5.0, clock=clock)
    task = bar.add_task("sample no commas", total=100)
    seen_midway = None
    for i in range(100):
        clock.now += 0.5  # 2 items per second: 50 s in all
        bar.advance(task, 1)
        if i == 49:
            seen_midway = out.getvalue()
    lines = out.getvalue().splitlines()
    # a line when the task starts, one per 5 s while it runs, and one when it completes
    assert len(lines) == 1 + 9 + 1, lines
    assert seen_midway and "synth · sample no commas: 50/100 (50%) 2.0/s ETA 0:00:25" in seen_midway
    assert lines[-1] == "synth · sample no commas: 100/100 (100%) 2.0/s done in 0:00:50"


def test_progress_picks_plain_lines_off_a_terminal_and_rich_bars_on_one():
    plain = Console(file=io.StringIO())
    with progress(plain, stage="filter") as bar:
        assert isinstance(bar, PlainProgress)
        task = bar.add_task("dedup", total=2)
        bar.advance(task, 2)
    assert "filter · dedup: 2/2 (100%)" in plain.file.getvalue()
    tty = Console(file=io.StringIO(), force_terminal=True)
    with progress(tty) as bar:
        assert not isinstance(bar, PlainProgress) and hasattr(bar, "add_task")


def test_unknown_total_and_markup_in_descriptions():
    out = io.StringIO()
    bar = PlainProgress(Console(file=out, width=200), every_s=0.0, clock=Clock())
    task = bar.add_task("calls \\[x]", total=None)
    bar.advance(task, 3)
    assert out.getvalue().splitlines()[-1] == "calls [x]: 3 0.0/s ETA -"  # descriptions are escaped markup


def test_slow_steps_show_seconds_each_not_zero_per_second():
    out = io.StringIO()
    clock = Clock()
    bar = PlainProgress(Console(file=out, width=200), stage="train", every_s=0.0, clock=clock)
    task = bar.add_task("lora", total=10)
    clock.now += 40.0  # a training step on 2 cores
    bar.advance(task, 1)
    assert out.getvalue().splitlines()[-1] == "train · lora: 1/10 (10%) 40 s each ETA 0:06:00"
