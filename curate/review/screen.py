"""python -m curate review [--cluster ID] [--sample K] [--threshold T] [--reviewer NAME]

Review pending examples in the terminal, one at a time, one key per decision:

    a accept   r reject (pick or type a reason)   e edit in $EDITOR (verified again)   s skip
    u undo the last decision   A accept the rest of this cluster   q quit   ? help

The screen shows the example's cluster (label, failing check and what it requires, one
original failing trace with its bad response), the synthesized prompt and response, the
verifier's results and the nearest already-accepted example with its cosine similarity.
Every decision is written to DuckDB at once (with the reviewer and a UTC timestamp), so
quitting, Ctrl-C or a dropped SSH session loses nothing: the next start resumes at the next
undecided example; skipped ones come back last.

--sample K: review only K examples per cluster; afterwards (and on every run, also without a
terminal, e.g. nightly) the rest of a cluster is accepted only if the reviewed acceptance
rate reaches `sample_accept_threshold` ([tool.mend.curate]); otherwise it waits for review.
Without a terminal and without --sample, review exits with status 2 instead of waiting.
"""
from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
from collections import Counter

from rich.console import Console, Group
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from curate.review import edit as review_edit
from curate.review import store
from curate.review.store import apply_sample_policy  # noqa: F401  (the nightly's entry point)
from curate.review.text import clean, describe_check, fold

NO_TTY = "no terminal: use --sample K with a reviewer, or `curate accept --verified`"
KEYS = [("a", "accept"), ("r", "reject"), ("e", "edit"), ("s", "skip"), ("u", "undo"),
        ("A", "accept rest of cluster"), ("q", "quit"), ("?", "help")]
HELP = [
    ("a", "accept this example"),
    ("r", "reject it: pick a reason by its number, or 0 to type one (Enter ends it)"),
    ("e", "edit it in $EDITOR (default vi); the edit is a new example, verified again, linked to this one"),
    ("s", "skip it for now: it comes back after the others (and at the next start)"),
    ("u", "undo your last decision (an accept-rest counts as one): the example is pending again"),
    ("A", "accept every pending example of this cluster (asks y/n)"),
    ("q", "quit: everything decided is already stored; run again to resume"),
    ("?", "this help"),
]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m curate review", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", help="review only this cluster")
    ap.add_argument("--sample", type=int, metavar="K", help="review K examples per cluster, then apply the policy")
    ap.add_argument("--threshold", type=float, help="acceptance rate for --sample (sample_accept_threshold)")
    ap.add_argument("--reviewer", help="name stored with each decision (reviewer)")
    args = ap.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        ap.error("--sample K needs K >= 1")
    return args


def main(argv=None) -> int:
    from traces.settings import load
    args = parse_args(argv)
    settings = load("curate", {"reviewer": args.reviewer, "sample_accept_threshold": args.threshold})
    console = Console(highlight=False)
    if not sys.stdin.isatty():
        if args.sample is None:
            sys.stderr.write(NO_TTY + "\n")
            return 2
        print_policy(console, apply_sample_policy(args.sample, settings.sample_accept_threshold, args.cluster))
        return 0
    session = Session(settings, resolve_reviewer(settings.reviewer), args.cluster, args.sample, console)
    session.run()
    if args.sample is not None:
        print_policy(console, apply_sample_policy(args.sample, settings.sample_accept_threshold, args.cluster))
    return 0


def resolve_reviewer(configured: str) -> str:
    """settings `reviewer`, else `git config user.name`, else $USER."""
    if configured:
        return configured
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


def read_key(fd: int) -> str:
    """One keypress, no Enter (cbreak, no echo). Escape sequences (arrows) read as 'esc';
    a closed terminal (EOF, EIO after an SSH drop) reads as 'q'."""
    import termios
    import tty
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        try:
            data = os.read(fd, 1)
        except OSError:
            return "q"
        if data == b"\x1b":
            while select.select([fd], [], [], 0.05)[0] and os.read(fd, 64):
                pass  # drain the rest of the sequence so it does not become several keys
            return "esc"
        return data.decode(errors="replace") if data else "q"
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


class Session:
    """One interactive review run. Holds no database connection between keys."""

    def __init__(self, settings, reviewer, cluster_id, sample_k, console, fd=None):
        self.settings, self.reviewer, self.console = settings, reviewer, console
        self.cluster_id, self.sample_k = cluster_id, sample_k
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.counts = Counter()  # accepted / rejected / edited / skipped in this session
        self.front: list[str] = []  # ids an undo put back: shown next
        self.message = Text("")
        self.index = store.AcceptedIndex()

    def run(self) -> None:
        while True:
            view = store.read_screen(self.cluster_id, self.sample_k, self.front, self.index)
            if view is None:
                return self.finish("Nothing left to review.")
            self.draw(view)
            if not self.act(read_key(self.fd), view.item):
                return self.finish(f"Stopped with {len(view.pending)} pending; run again to resume.")

    def decided(self) -> int:
        return self.counts["accepted"] + self.counts["rejected"] + self.counts["edited"]

    # ---- drawing -------------------------------------------------------------------------

    def draw(self, view) -> None:
        item = view.item
        self.console.clear()
        self.console.print(screen(item, view.context, view.nearest, self.settings))
        if self.message.plain:
            self.console.print(self.message)
        self.console.print(self.status_line(item, len(view.pending), *view.progress))
        # the key legend is always printed last: once it is on screen the program waits for a key
        self.console.print(Text("  ".join(f"{k} {label}" for k, label in KEYS), style="bold"))

    def status_line(self, item, remaining: int, done: int, total: int) -> Text:
        n = self.decided()
        c = self.counts
        return Text.assemble(
            (f"{n + 1} of {n + remaining}", "bold cyan"),
            f" · cluster {clean(item.cluster_id)}: {done}/{total} reviewed · this session: ",
            (f"{c['accepted']} accepted", "green"), ", ", (f"{c['rejected']} rejected", "red"),
            f", {c['edited']} edited, {c['skipped']} skipped · reviewer {clean(self.reviewer)}")

    def say(self, text: str, style: str = "") -> None:
        self.message = Text(clean(text), style=style)

    # ---- actions -------------------------------------------------------------------------

    def act(self, key: str, item) -> bool:
        """Run one key's action; False means quit."""
        self.message = Text("")
        if key in ("q", "\x04"):
            return False
        actions = {"a": self.accept, "r": self.reject, "e": self.edit, "s": self.skip,
                   "u": self.undo, "A": self.accept_rest, "?": self.help}
        if key in actions:
            actions[key](item)
        else:
            self.say(f"unknown key {key!r}: press ? for help", "yellow")
        return True

    def accept(self, item) -> None:
        self.record(item, store.decide(item.example_id, "accepted", self.reviewer), "accepted")

    def reject(self, item) -> None:
        reason = self.ask_reason()
        if reason is None:
            return self.say("reject cancelled", "yellow")
        self.record(item, store.decide(item.example_id, "rejected", self.reviewer, reason), "rejected", reason)

    def record(self, item, stored: bool, decision: str, reason: str | None = None) -> None:
        if not stored:
            return self.say(f"{item.example_id} was decided elsewhere meanwhile; nothing changed", "yellow")
        self.counts[decision] += 1
        if decision == "accepted":
            self.index.add(item.example_id, item.embedding)
        self.say(f"{decision} {item.example_id}" + (f" ({reason})" if reason else ""),
                 "green" if decision == "accepted" else "red")

    def ask_reason(self) -> str | None:
        reasons = list(self.settings.reject_reasons)[:9]  # one digit each
        line = Text.assemble(("Reject because: ", "bold"))
        for i, reason in enumerate(reasons, 1):
            line.append(f"{i} {clean(reason)} · ")
        line.append("0 type a reason · any other key cancels")
        self.console.print(line)
        key = read_key(self.fd)
        if key.isdigit() and 1 <= int(key) <= len(reasons):
            return reasons[int(key) - 1]
        if key != "0":
            return None
        try:
            typed = self.console.input("reason (Enter to finish): ").strip()
        except EOFError:
            return None
        return typed or None

    def skip(self, item) -> None:
        store.skip(item.example_id, self.reviewer)
        self.front = [i for i in self.front if i != item.example_id]  # decided ones drop out by themselves
        self.counts["skipped"] += 1
        self.say(f"skipped {item.example_id}: it comes back after the others")

    def undo(self, item) -> None:
        restored = store.undo_last(self.reviewer)
        if not restored:
            return self.say("nothing to undo", "yellow")
        for _, decision in restored:  # it may undo an earlier session's decision: keep tallies >= 0
            self.counts[decision] = max(0, self.counts[decision] - 1)
        ids = [example_id for example_id, _ in restored]
        self.front = ids + self.front
        self.index.invalidate()
        self.say(f"undone: {', '.join(ids)} pending again", "cyan")

    def accept_rest(self, item) -> None:
        done, total = store.progress(item.cluster_id)
        self.console.print(Text(f"Accept all {total - done} pending examples of cluster "
                                f"{clean(item.cluster_id)}? y/n", style="bold"))
        if read_key(self.fd) not in ("y", "Y"):
            return self.say("accept rest cancelled", "yellow")
        ids = store.accept_rest(item.cluster_id, self.reviewer)
        self.counts["accepted"] += len(ids)
        self.index.invalidate()
        self.say(f"accepted the rest of cluster {item.cluster_id}: {len(ids)} examples", "green")

    def edit(self, item) -> None:
        try:
            edited = review_edit.run_editor(review_edit.to_text(item))
        except review_edit.EditError as e:
            return self.say(f"edit not saved: {e}", "yellow")
        try:
            parsed = review_edit.parse(edited)
        except review_edit.EditError as e:
            return self.say(f"edit not saved: {e}; your text is in {review_edit.keep(edited)}", "yellow")
        if parsed is None:
            return self.say("edit cancelled (the file was emptied)", "yellow")
        if parsed == (item.prompt, item.response, item.metadata):
            return self.say("edit: nothing changed", "yellow")
        self.console.print("verifying the edit …")
        try:
            results = review_edit.verify(*parsed)
        except Exception as e:  # a broken edit (e.g. metadata the checks reject) must not end the session
            return self.say(f"edit not saved: verification could not run: {type(e).__name__}: {e}; "
                            f"your text is in {review_edit.keep(edited)}", "red")
        saved = store.save_edit(item, *parsed, results, self.reviewer)
        if saved is None:
            return self.say(f"{item.example_id} was decided elsewhere meanwhile; edit not saved", "yellow")
        self.counts["edited"] += 1
        self.index.invalidate()
        new_id, status, reason = saved
        self.say(f"edited {item.example_id} -> {new_id}: {status}" + (f" ({reason})" if reason else ""),
                 "green" if status == "accepted" else "red")

    def help(self, item) -> None:
        self.console.clear()
        table = Table(title="mend review keys", show_header=False, box=None)
        for key, what in HELP:
            table.add_row(Text(key, style="bold cyan"), Text(what))
        self.console.print(table)
        self.console.print("press any key to go back")
        read_key(self.fd)

    def finish(self, text: str) -> None:
        c = self.counts
        try:
            self.console.print(Text(f"{text} This session: {c['accepted']} accepted, {c['rejected']} rejected, "
                                    f"{c['edited']} edited, {c['skipped']} skipped.", style="bold"))
        except OSError:  # the terminal is gone (dropped SSH): every decision is already stored
            pass


# ---- the screen (pure functions of the data, so they can be tested without a terminal) ------

def screen(item, context, nearest, settings) -> Group:
    lines, chars = settings.max_lines, settings.max_chars
    title = Text(f"mend review · example {clean(item.example_id)} · mode {clean(item.mode)}")
    if item.edited_from:
        title.append(f" · edit of {clean(item.edited_from)}")
    parts = [Rule(title), cluster_block(item.cluster_id, context, max(4, lines // 3), chars)]
    parts.append(Panel(Text(fold(item.prompt, lines, chars)), title=Text("prompt"), title_align="left"))
    parts.append(Panel(Text(fold(item.response, lines, chars)), title=Text("response"), title_align="left"))
    parts.append(checks_block(item))
    parts.append(nearest_block(item, nearest, chars))
    return Group(*parts)


def cluster_block(cluster_id, context, lines: int, chars: int) -> Text:
    if context is None:
        return Text("no cluster", style="dim")
    check_id = context["check_id"]
    out = Text.assemble(("cluster ", "bold"), clean(cluster_id), ("  label ", "bold"),
                        clean(context["label"] or "n/a"), f"  ({context['size'] or '?'} failing traces)\n",
                        ("failing check ", "bold"), clean(check_id or "n/a"))
    description = describe_check(check_id)
    if description:
        out.append(f" — {clean(description)}")
    trace = context["trace"]
    if trace is None:
        return out.append("\n(no original failing trace stored)", style="dim")
    trace_id, prompt, response, why = trace
    out.append(f"\noriginal failing trace {clean(trace_id)}:\n", style="bold")
    out.append(Text(fold(prompt, lines, chars), style="dim"))
    out.append("\nits response: ", style="bold")
    out.append(Text(fold(response, lines, chars), style="dim"))
    if why:
        out.append(f"\nwhy it failed: {fold(why, 2, 300)}", style="dim")
    return out


def checks_block(item) -> Text:
    out = Text.assemble(("verifier: ", "bold"))
    if not item.checks:
        return out.append("no check results stored", style="dim")
    for _, check_id, passed, reason in item.checks:
        out.append("\n  ")
        out.append("pass " if passed else "FAIL ", style="green" if passed else "bold red")
        out.append(clean(check_id))
        if reason:
            out.append(f" — {fold(reason, 3, 400)}", style="dim")
    return out


def nearest_block(item, nearest, chars: int) -> Text:
    out = Text.assemble(("nearest accepted: ", "bold"))
    if not item.embedding:
        return out.append("n/a (no embedding stored for this example)", style="dim")
    if nearest is None:
        return out.append("none accepted yet", style="dim")
    example_id, prompt, similarity = nearest
    out.append(f"{clean(example_id)} · cosine {similarity:.3f}\n  ")
    return out.append(fold(prompt, 3, min(chars, 300)), style="dim")


def print_policy(console: Console, report: dict) -> None:
    table = Table(title=f"--sample {report['k']} policy (threshold {report['threshold']:.2f})")
    for column in ("cluster", "reviewed", "accepted", "rate", "pending", "action"):
        table.add_column(column)
    for cid, row in report["clusters"].items():
        rate = "n/a" if row["rate"] is None else f"{row['rate']:.2f}"
        table.add_row(Text(clean(cid)), str(row["reviewed"]), str(row["accepted"]), rate,
                      str(row["pending"]), row["action"])
    console.print(table)
    console.print(f"accepted by the policy: {report['accepted']}")
