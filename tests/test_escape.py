"""Terminal injection: model and trace text reaches the terminal only through `traces.terminal.safe`.

Every place that prints such text gets a label (or reason) carrying a clear-screen escape, an OSC 8 hyperlink
and rich `[link]` markup, rendered as a real colour terminal would receive it (FORCE_COLOR, truecolor, so rich
emits its own SGR codes and would emit OSC 8 for a live link). The output may hold rich's SGR colour codes and
nothing else: no raw ESC sequence from the text, no BEL, no C1 control, no hyperlink.
"""
import io
import json
import re

import pytest
from builders.examples import add
from builders.gate import CANDIDATE, add_run, add_traces, scenario
from rich.console import Console
from rich.text import Text

from traces import store
from traces.terminal import safe

# clear screen (CSI 2J), an OSC 8 hyperlink ended by BEL, rich markup for a link, a C1 CSI, a CR overwrite
EVIL = "[link=http://evil]x[/link] \x1b[2J\x1b]8;;http://evil\x07click\x1b]8;;\x07 \x9b2J\rgone"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # what rich itself writes for colours and bold
# what a rich live display (progress bar) writes to redraw: hide/show the cursor, go up, erase the line
LIVE = re.compile(r"\x1b\[\?25[lh]|\r\x1b\[2K|\x1b\[\d+A\x1b\[2K")


def assert_inert(out: str, live: bool = False) -> None:
    """No control sequence but rich's own colours (and, for a live display, its redraw codes); the planted
    markup shows literally, never as a link."""
    assert "\x1b]8" not in out, "a hyperlink (OSC 8) reached the terminal"
    rest = SGR.sub("", LIVE.sub("", out) if live else out)
    assert "\x1b" not in rest, f"a raw escape sequence reached the terminal: {rest!r}"
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", rest), f"a control character got through: {rest!r}"
    assert "[link=http://evil]x[/link]" in rest  # the reader sees what the model wrote


@pytest.fixture
def colour_terminal(monkeypatch):
    """Consoles created from now on believe they write to a wide truecolor terminal."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=400)


# ---------------------------------------------------------------- the function itself

def test_safe_makes_controls_visible_and_escapes_markup():
    assert safe("a\x1b[2Jb") == "a^[[2Jb"
    assert safe("\x1b]8;;http://evil\x07x") == "^[]8;;http://evil^Gx"
    assert safe("[link=http://evil]x[/link]") == "\\[link=http://evil]x\\[/link]"
    assert safe("\x9b\x9d\x7f\x00\u202e") == "\\x9b\\x9d^?^@\\u202e"
    assert safe("one\r\ntwo\tthree\rfour") == "one two three^Mfour"
    assert safe("one\r\ntwo\tthree", newlines=True) == "one\ntwo\tthree"
    assert safe("[b]x[/b]", markup=False) == "[b]x[/b]"
    assert safe(None) == "" and safe(42) == "42"
    assert safe("abcdef", limit=4) == "abc…" and safe("\x1b" * 10, limit=3) == "^[…"


def test_safe_output_renders_literally_as_markup():
    out = terminal()
    out.print(f"label: {safe(EVIL)}")
    assert_inert(out.file.getvalue())


def test_the_check_itself_catches_raw_text():
    """The guard above is not vacuous: the same text printed raw fails it."""
    out = terminal()
    out.print(f"label: {EVIL}")
    with pytest.raises(AssertionError):
        assert_inert(out.file.getvalue())


# ---------------------------------------------------------------- every place that prints it

def _evil_cluster(con, cluster_id="cA"):
    con.execute("UPDATE clusters SET label = ? WHERE cluster_id = ?", [EVIL, cluster_id])


def test_evals_compare_escapes_cluster_labels(colour_terminal, monkeypatch, capsys):
    from evals import reports
    with store.connect() as con:
        ids = add_traces(con, 4)
        add_run(con, "ra", {t: [("A", False)] for t in ids})
        add_run(con, "rb", {t: [("A", True)] for t in ids})
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES ('c1', 'ra', 'A', ?, 4)",
                    [EVIL])
        con.executemany("INSERT INTO cluster_members VALUES ('c1', ?, 'ra', 'holdout', 0.9)", [[t] for t in ids])
    monkeypatch.setattr(reports, "console", Console())  # the module's console, made under the colour terminal
    assert reports.compare_main(["ra", "rb"]) == 0
    out = capsys.readouterr().out
    assert "cluster" in out and "http://evil" in out
    assert_inert(out)


def test_curate_status_escapes_labels_and_reasons(colour_terminal, capsys):
    from curate import status
    add("a", "p", "r", status="failed_verification")
    with store.connect() as con:
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES ('c1', 'r', 'A', ?, 1)",
                    [EVIL])
        con.execute("UPDATE examples SET reason = ? WHERE example_id = 'a'", [EVIL])
    assert status.main([]) == 0
    assert_inert(capsys.readouterr().out)


def test_synth_progress_bar_escapes_the_label():
    from rich.progress import Progress, TextColumn

    from curate.synth import driver as synth
    from curate.settings import CurateSettings
    out = terminal()
    with Progress(TextColumn("{task.description}"), console=out) as progress:  # synth's column: markup on
        synth.compose_cluster([], {"cluster_id": "c1", "label": EVIL[:40], "check_id": "A"}, None, CurateSettings(),
                              1, synth.Budget(1, 1.0), progress)
    text = out.file.getvalue()
    assert "http://evil" in text
    assert_inert(text, live=True)


def _gate_cli(*extra):
    from evals import gate_cli
    runs = scenario(candidate_fixes=15)
    with store.connect() as con:
        _evil_cluster(con)
    args = ["--candidate", CANDIDATE, "--baseline", "smollm2-135m-instruct", "--no-guards",
            "--no-run", "--cluster", "cA", "--target-policy", "all"]
    for side in ("baseline", "candidate"):
        args += [f"--{side}-run", f"instruction_following={runs[side]['instruction_following']}"]
    return gate_cli.main(args + list(extra))


@pytest.fixture
def no_assignment(monkeypatch):
    from evals import gate
    monkeypatch.setattr(gate, "assign_clusters", lambda runs: None)


def test_evals_gate_escapes_labels_in_table_and_reasons(colour_terminal, no_assignment, capsys):
    assert _gate_cli() == 0
    out = capsys.readouterr().out
    assert "PROMOTE" in out and out.count("http://evil") >= 2  # the table row and the reason line
    assert_inert(out)


def test_evals_gate_escapes_labels_in_its_error_message(colour_terminal, no_assignment, monkeypatch, capsys):
    from evals import gate

    def refuse(comp, s):
        raise gate.GateError(f"cluster {EVIL}: too small")
    monkeypatch.setattr(gate, "check_power", refuse)
    assert _gate_cli() == 2
    err = capsys.readouterr().err
    assert "gate error" in err and "too small" in err
    assert_inert(err)


def test_review_screen_text_goes_through_the_same_function():
    from curate.review.text import clean, fold
    assert clean(EVIL) == safe(EVIL, newlines=True, markup=False)
    out = terminal()
    out.print(Text(fold(EVIL + "\nsecond line", 5, 500)))  # the review screen renders Text, never markup
    text = out.file.getvalue()
    assert "second line" in text
    assert_inert(text)


# ---------------------------------------------------------------- issue 25, finding 6: the places that were missed

BIDI = "\u202egnp.exe"  # a right-to-left override: what follows is shown reversed ("Trojan Source")
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def assert_no_controls(out: str) -> None:
    """For text that cannot hold EVIL whole (a file name has no "/"): no escape, control or bidi character."""
    rest = SGR.sub("", out)
    assert "\x1b" not in rest and not CONTROLS.search(rest.replace("\n", "")), repr(rest)


def test_traces_stats_ingest_and_quarantine_escape_models_and_file_names(colour_terminal, tmp_path, capsys):
    from traces import ingest, quarantine_cmd, stats
    name = "log\x1b[2J\x1b]8;;x\x07click\x1b]8;;\x07" + BIDI + ".jsonl"
    path = tmp_path / name
    good = {"model": EVIL + BIDI, "messages": [{"role": "user", "content": "hi"}],
            "choices": [{"message": {"role": "assistant", "content": "hello"}}]}
    path.write_text(json.dumps(good) + "\n" + '{"messages": "bad"}\n')
    assert ingest.main([str(path)]) == 0
    assert stats.main([]) == 0
    out = capsys.readouterr().out
    assert "http://evil" in out and "click" in out  # the model and the file are shown, inert
    assert_inert(out)
    assert_no_controls(out)
    assert quarantine_cmd.main([str(path)]) == 0
    assert_no_controls(capsys.readouterr().out)


def test_report_markdown_neutralizes_cluster_labels(tmp_path, monkeypatch):
    from builders.nightly_report import nightly

    from curate.loop import report
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    nightly()
    label = EVIL + BIDI + "\n## injected heading"
    with store.connect() as con:
        con.execute("UPDATE clusters SET label = ?", [label])
        details = json.loads(con.execute("SELECT details FROM gate_decisions").fetchone()[0])
        details["clusters"]["cA"]["label"] = label
        con.execute("UPDATE gate_decisions SET details = ?, reasons = ?", [json.dumps(details),
                                                                           json.dumps([f"cluster {label}: fixed"])])
    md = report.write_report("n1", Console(file=io.StringIO())).read_text()
    assert "http://evil" in md and "\n## injected heading" not in md  # shown, on its own table row or bullet
    assert_no_controls(md)
