"""`python -m curate review` driven through a real pseudo-terminal (pexpect): every key, resume,
undo, edit through a scripted $EDITOR, accept-rest, and untrusted text rendered literally."""
import io
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import pexpect
import pytest
from builders.review import (
    NO_COMMA,
    add_cluster,
    add_example,
    reviews_of,
    seed_default,
    status_of,
)

from traces.store import connect

ROOT = Path(__file__).resolve().parents[1]
LEGEND_END = "? help"  # the key legend is printed last on every screen
SGR = re.compile(r"\x1b\[[0-9;]*m")
TIMEOUT = 90  # generous: 2 shared cores; edits import lm-eval to verify


class Review:
    """The review program in a pty; `out` holds every byte it wrote."""

    def __init__(self, tmp_path, *args, editor="false"):
        env = dict(os.environ, TERM="xterm", MEND_CURATE_REVIEWER="tester", EDITOR=editor,
                   PYTHONIOENCODING="utf-8")
        self.out = io.BytesIO()
        # SIGHUP back to its default: a test run started under nohup would pass SIG_IGN on to the child
        self.child = pexpect.spawn(sys.executable, ["-m", "curate", "review", *args], cwd=str(ROOT), env=env,
                                   dimensions=(40, 120), timeout=TIMEOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
        self.child.logfile_read = self.out

    def screen(self, example_id):
        """Wait for the screen of example_id to be complete (the program now waits for a key)."""
        self.child.expect_exact(f"example {example_id} ")
        self.child.expect_exact(LEGEND_END)

    def press(self, key, then=None):
        self.child.send(key)
        if then:
            self.screen(then)

    def text(self):
        """What a person sees: the output without the program's own colour codes."""
        return SGR.sub("", self.out.getvalue().decode("utf-8", errors="replace"))

    def quit(self):
        self.child.send("q")
        self.child.expect_exact("run again to resume")
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0


@pytest.fixture
def seeded(mend_env):
    seed_default()
    return mend_env


def test_screen_shows_cluster_trace_example_checks_and_nearest(seeded):
    r = Review(seeded)
    r.screen("e1")
    text = r.text()
    for part in ("comma habit", "punctuation:no_comma", "Checks the response for no commas.",
                 "original failing trace t1", "Well, cats are soft, warm, and sleepy.",
                 "Describe a bird without commas.", "Birds sing in the morning.", "pass ",
                 "nearest accepted: acc1 · cosine 0.994", "1 of 5", "cluster c1: 1/4 reviewed"):
        assert part in text, part
    r.quit()


def test_accept_reject_skip_quit_and_resume(seeded):
    r = Review(seeded)
    r.screen("e1")
    r.press("a", then="e2")
    r.press("r")
    r.child.expect_exact("Reject because")
    r.press("2", then="e3")
    r.press("r")
    r.child.expect_exact("Reject because")
    r.press("0")
    r.child.expect_exact("reason (Enter to finish)")
    r.child.sendline("too short")
    r.screen("f1")
    r.press("s", then="f2")
    r.quit()
    assert status_of("e1")[:3] == ("accepted", None, "tester")
    assert status_of("e1")[3] is not None
    assert status_of("e2")[:2] == ("rejected", "review: ignores the instruction")
    assert status_of("e3")[:2] == ("rejected", "review: too short")
    assert status_of("f1")[0] == "pending_review"
    assert reviews_of("e1") == [("accepted", None, "pending_review", "tester")]
    assert reviews_of("f1") == [("skipped", None, "pending_review", "tester")]

    again = Review(seeded)
    again.screen("f2")  # the next undecided one; the skipped f1 comes back last
    assert "1 of 2" in again.text()
    again.press("a", then="f1")
    again.press("a")
    again.child.expect_exact("Nothing left to review.")
    again.child.expect(pexpect.EOF)
    again.child.close()
    assert again.child.exitstatus == 0
    assert status_of("f1")[0] == status_of("f2")[0] == "accepted"


def test_undo_in_session_and_after_restart(seeded):
    r = Review(seeded)
    r.screen("e1")
    r.press("a", then="e2")
    r.press("u", then="e1")
    assert "undone: e1 pending again" in r.text()
    assert status_of("e1")[:3] == ("pending_review", None, None)
    assert reviews_of("e1")[0][:2] == ("undone", "undid accepted")
    r.press("r")
    r.child.expect_exact("Reject because")
    r.press("1", then="e2")
    r.quit()

    again = Review(seeded)  # undo reaches back into the previous session
    again.screen("e2")
    again.press("u", then="e1")
    assert status_of("e1")[:2] == ("pending_review", None)
    again.press("u", then="e1")
    assert "nothing to undo" in again.text()
    again.quit()


def test_accept_rest_of_cluster_and_undo_it(seeded):
    r = Review(seeded)
    r.screen("e1")
    r.press("A")
    r.child.expect_exact("Accept all 3 pending examples of cluster c1? y/n")
    r.press("n", then="e1")
    r.press("A")
    r.child.expect_exact("y/n")
    r.press("y", then="f1")
    assert [status_of(e)[0] for e in ("e1", "e2", "e3")] == ["accepted"] * 3
    assert reviews_of("e3")[0][:2] == ("accepted", "accept rest of cluster")
    r.press("u", then="e1")  # one undo takes back the whole group
    assert [status_of(e)[0] for e in ("e1", "e2", "e3")] == ["pending_review"] * 3
    r.quit()


def test_help_and_unknown_key(seeded):
    r = Review(seeded)
    r.screen("e1")
    r.press("?")
    r.child.expect_exact("press any key to go back")
    assert "undo your last decision" in r.text()
    r.press(" ", then="e1")
    r.press("x", then="e1")
    assert "unknown key 'x'" in r.text()
    r.press("\x1b[A", then="e1")  # an arrow key is one unknown key, not three
    assert r.text().count("unknown key") == 2
    r.quit()
    assert status_of("e1")[0] == "pending_review"


EDITOR = textwrap.dedent("""\
    import sys
    from pathlib import Path
    path = Path(sys.argv[1])
    new = (Path(__file__).parent / "next_response.txt").read_text()
    text = path.read_text()
    head, rest = text.split("===== RESPONSE =====\\n")
    _, meta = rest.split("===== METADATA (JSON) =====\\n")
    path.write_text(head + "===== RESPONSE =====\\n" + new + "\\n===== METADATA (JSON) =====\\n" + meta)
""")


def test_edit_through_scripted_editor(seeded):
    script = seeded / "editor.py"
    script.write_text(EDITOR)
    (seeded / "next_response.txt").write_text("Birds sing at dawn and rest at night.")
    r = Review(seeded, editor=f"{sys.executable} {script}")
    r.screen("e1")
    r.press("e", then="e2")
    assert "edited e1 -> e1-edit-" in r.text() and ": accepted" in r.text()
    (seeded / "next_response.txt").write_text("Fish swim, dive, and sleep.")
    r.press("e", then="e3")
    assert "failed_verification" in r.text()
    with connect(read_only=True) as con:
        rows = con.execute("""SELECT edited_from, mode, status, response, reason, reviewer, prompt FROM examples
                              WHERE edited_from IS NOT NULL ORDER BY edited_from""").fetchall()
        checks = con.execute("""SELECT e.edited_from, c.check_id, c.passed FROM example_checks c
                                JOIN examples e USING (example_id) WHERE e.edited_from IS NOT NULL
                                ORDER BY 1""").fetchall()
    assert [row[:4] for row in rows] == [
        ("e1", "edit", "accepted", "Birds sing at dawn and rest at night."),
        ("e2", "edit", "failed_verification", "Fish swim, dive, and sleep.")]
    assert "punctuation:no_comma" in rows[1][4] and rows[0][5] == "tester"
    assert rows[0][6] == "Describe a bird without commas."
    assert checks == [("e1", "punctuation:no_comma", True), ("e2", "punctuation:no_comma", False)]
    assert status_of("e1")[0] == status_of("e2")[0] == "edited"
    assert reviews_of("e2")[0][0] == "edited"

    r.press("u", then="e2")  # undoing an edit: the original is pending again, the new row can't train
    assert status_of("e2")[0] == "pending_review"
    with connect(read_only=True) as con:
        assert con.execute("SELECT status, reason FROM examples WHERE edited_from = 'e2'").fetchone() == \
            ("rejected", "edit undone")
    r.quit()


def test_edit_cancelled_or_broken_changes_nothing(seeded):
    script = seeded / "empty.py"
    script.write_text("import sys; open(sys.argv[1], 'w').close()\n")
    r = Review(seeded, editor=f"{sys.executable} {script}")
    r.screen("e1")
    r.press("e", then="e1")
    assert "edit cancelled" in r.text()
    r.quit()
    assert status_of("e1")[0] == "pending_review"
    broken = Review(seeded, editor="false")  # editor exits non-zero
    broken.screen("e1")
    broken.press("e", then="e1")
    assert "exited with status 1" in broken.text()
    broken.quit()


INJECT_PROMPT = "Title [bold red]x[/] and [link=https://evil.example]click[/link] :smile:"
INJECT_RESPONSE = ("Plain \x1b[31mREDTEXT then \x1b]0;pwned-title\x07 then \x1b[2JWIPED and \x9b31mC1\n"
                   + "\n".join(f"line {i}" for i in range(60)))


def test_untrusted_markup_and_escape_sequences_render_literally(mend_env):
    with connect() as con:
        add_cluster(con, "cx", "punctuation:no_comma", "[red]label[/red]", "tx", "p", "bad \x1b[5mBLINK")
        add_example(con, "evil", "cx", INJECT_PROMPT, INJECT_RESPONSE, NO_COMMA,
                    checks=[("punctuation:no_comma", False, "found \x1b[41mBG commas")])
    r = Review(mend_env)
    r.screen("evil")
    raw, text = r.out.getvalue(), r.text()
    for literal in ("[bold red]x[/]", "[link=https://evil.example]click[/link]", ":smile:", "[red]label[/red]",
                    "^[[31mREDTEXT", "^[]0;pwned-title^G", "^[[2JWIPED", "\\x9b31mC1", "^[[5mBLINK",
                    "^[[41mBG", "… (37 more lines)"):
        assert literal in text, literal
    for injected in (b"\x1b[31mREDTEXT", b"\x1b]0;", b"\x07", b"\x1b[2JWIPED", b"\xc2\x9b", b"\x1b[5m",
                     b"\x1b[41m", b"\x1b]8;", "😄".encode()):
        assert injected not in raw, injected
    assert "line 22" in text and "line 23" not in text  # folded at max_lines = 24
    r.quit()


def test_sample_mode_reviews_k_per_cluster_then_applies_policy(seeded):
    r = Review(seeded, "--sample", "1")
    r.child.expect_exact("example ")
    r.child.expect_exact(LEGEND_END)
    assert "1 of 2" in r.text()
    r.press("a")
    r.child.expect_exact("2 of 2")
    r.child.expect_exact(LEGEND_END)
    r.press("a")
    r.child.expect_exact("Nothing left to review.")
    r.child.expect_exact("accepted by the policy: 3")
    r.child.expect(pexpect.EOF)
    r.child.close()
    assert r.child.exitstatus == 0
    assert all(status_of(e)[0] == "accepted" for e in ("e1", "e2", "e3", "f1", "f2"))


def test_cluster_filter_and_hangup_loses_nothing(seeded):
    r = Review(seeded, "--cluster", "c2")
    r.screen("f1")
    r.press("a", then="f2")
    r.child.kill(1)  # SIGHUP, as when an SSH session drops
    r.child.expect(pexpect.EOF)
    r.child.close()
    assert status_of("f1")[0] == "accepted"
    again = Review(seeded, "--cluster", "c2")
    again.screen("f2")
    assert "1 of 1" in again.text() and "example e1" not in again.text()
    again.quit()


def test_edit_with_broken_markers_keeps_the_text(seeded):
    script = seeded / "breaker.py"
    script.write_text("import sys; open(sys.argv[1], 'w').write('my careful rewrite without markers')\n")
    r = Review(seeded, editor=f"{sys.executable} {script}")
    r.screen("e1")
    r.press("e", then="e1")
    # the message can be wrapped at the pty's width (at a space): read it with line breaks as spaces
    flat = re.sub(r"\s*\n\s*", " ", r.text())
    match = re.search(r"your text is in (\S+\.txt)", flat)
    assert match and "marker lines" in flat
    kept = Path(match.group(1))
    assert kept.read_text() == "my careful rewrite without markers"
    kept.unlink()
    r.quit()
    assert status_of("e1")[0] == "pending_review"
