"""Review without a terminal: the --sample policy, the no-tty exit, the store's decisions and undo,
the text neutralizer and the edit file format."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders.review import (
    NO_COMMA,
    add_example,
    add_review,
    reviews_of,
    seed_default,
    status_of,
)

from curate.review import screen as review
from curate.review import edit as review_edit
from curate.review import store
from curate.review.text import clean, describe_check, fold
from traces.store import connect

ROOT = Path(__file__).resolve().parents[1]


def seed_clusters():
    """k1: 2 of 2 reviewed accepted + 3 pending; k2: 1 of 2 accepted + 2 pending; k3: none reviewed."""
    with connect() as con:
        for i in range(5):
            add_example(con, f"k1-{i}", "k1", f"p{i}", "r", NO_COMMA)
            add_example(con, f"k2-{i}", "k2", f"q{i}", "r", NO_COMMA)
        add_example(con, "k3-0", "k3", "s", "r", NO_COMMA)
        add_review(con, "k1-0", "accepted")
        add_review(con, "k1-1", "accepted")
        add_review(con, "k2-0", "accepted")
        add_review(con, "k2-1", "rejected")
        add_review(con, "k2-2", "accepted", reviewer="policy:other")  # a policy is not a person
        add_review(con, "k2-3", "accepted", reviewer="bob", ts="2026-01-03 00:00:00")
        con.execute("UPDATE reviews SET decision = 'undone' WHERE example_id = 'k2-3'")  # undone: not counted
        con.execute("UPDATE examples SET status = 'pending_review' WHERE example_id = 'k2-3'")


def test_sample_policy_accepts_rest_only_above_threshold():
    seed_clusters()
    report = review.apply_sample_policy(2, 0.8)
    assert report["k"] == 2 and report["accepted"] == 3
    assert report["clusters"]["k1"] == {"reviewed": 2, "accepted": 2, "rate": 1.0, "pending": 3,
                                        "action": "accepted_rest"}
    assert report["clusters"]["k2"] == {"reviewed": 2, "accepted": 1, "rate": 0.5, "pending": 2,
                                        "action": "waits"}
    assert report["clusters"]["k3"]["action"] == "needs_review"
    assert [status_of(f"k1-{i}")[0] for i in range(5)] == ["accepted"] * 5
    assert reviews_of("k1-4")[0][1:] == ("sample policy: 2/2 reviewed accepted >= 0.8", "pending_review",
                                        "policy:sample")
    assert status_of("k2-4")[0] == "pending_review"
    assert review.apply_sample_policy(2, 0.5)["clusters"]["k2"]["action"] == "accepted_rest"
    again = review.apply_sample_policy(2, 0.5)
    assert again["accepted"] == 0 and set(again["clusters"]) == {"k3"}
    with pytest.raises(ValueError):
        review.apply_sample_policy(0, 0.8)


def test_sample_queue_holds_k_minus_reviewed_per_cluster_and_is_stable():
    seed_clusters()
    queue = store.queue(sample_k=3)
    per_cluster = {c: sum(1 for _, cid in queue if cid == c) for c in ("k1", "k2", "k3")}
    assert per_cluster == {"k1": 1, "k2": 1, "k3": 1}
    assert store.queue(sample_k=3) == queue
    assert len(store.queue()) == 3 + 2 + 1
    assert {cid for _, cid in store.queue("k2")} == {"k2"}


def run_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "curate", "review", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_no_terminal_without_policy_exits_2_with_message():
    seed_default()
    result = run_cli()
    assert result.returncode == 2
    assert "no terminal: use --sample K with a reviewer, or `curate accept --verified`" in result.stderr
    assert status_of("e1")[0] == "pending_review"


def test_no_terminal_with_sample_applies_policy():
    seed_clusters()
    result = run_cli("--sample", "2", MEND_CURATE_SAMPLE_ACCEPT_THRESHOLD="0.5")
    assert result.returncode == 0, result.stderr
    assert "accepted_rest" in result.stdout and "accepted by the policy: 5" in result.stdout
    assert status_of("k2-4")[0] == "accepted"


def test_decide_undo_and_skip_order():
    seed_default()
    assert store.decide("e1", "rejected", "ann", "bad prompt")
    assert not store.decide("e1", "accepted", "ann")  # no longer pending
    store.skip("e2", "ann")
    assert [i for i, _ in store.queue()] == ["e3", "f1", "f2", "e2"]
    assert store.undo_last("bob") == []  # someone else's decision is not yours to undo
    assert store.undo_last("ann") == [("e1", "rejected")]
    assert status_of("e1") == ("pending_review", None, None, None)
    assert reviews_of("e1")[0][:2] == ("undone", "undid rejected: bad prompt")
    assert store.undo_last("ann") == []


def test_reviewer_resolution(monkeypatch):
    assert review.resolve_reviewer("carol") == "carol"

    def no_git(*a, **k):
        raise OSError("no git")
    monkeypatch.setattr(review.subprocess, "run", no_git)
    monkeypatch.setenv("USER", "dave")
    assert review.resolve_reviewer("") == "dave"


def test_clean_and_fold():
    assert clean("a\x1b[31mb\x07\x9b\u202e\r\nc\td\x00") == "a^[[31mb^G\\x9b\\u202e\nc\td^@"
    assert clean(None) == ""
    assert fold("\n".join(map(str, range(10))), 3, 1000) == "0\n1\n2\n… (7 more lines)"
    assert fold("x" * 30, 5, 10) == "x" * 10 + "\n… (20 more characters)"
    assert fold("short", 5, 10) == "short"


def test_describe_check_reads_lm_eval_docstrings():
    assert describe_check("punctuation:no_comma") == "Checks the response for no commas."
    assert describe_check("startend:quotation").startswith("Checks response is wrapped")
    assert describe_check("my_custom_check") == ""


def test_edit_file_round_trip_and_errors():
    item = store.Item("x1", "c1", "compose", "pending_review", "line one\n===== not a marker", "resp\n\n",
                      [], {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}, None, None, None)
    text = review_edit.to_text(item)
    assert review_edit.parse(text) == (item.prompt, item.response, item.metadata)
    assert review_edit.parse("   \n") is None
    with pytest.raises(review_edit.EditError):
        review_edit.parse("no markers at all")
    with pytest.raises(review_edit.EditError):
        review_edit.parse(text.replace(json.dumps(item.metadata), "{broken"))
    assert store.with_prompt([{"role": "system", "content": "s"}, {"role": "user", "content": "old"}], "new") == \
        [{"role": "system", "content": "s"}, {"role": "user", "content": "new"}]


def test_review_path_does_not_import_torch():
    code = ("import sys, curate.review.screen, curate.review.edit, curate.review.store; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_nearest_accepted_index():
    with connect() as con:
        add_example(con, "a1", "c1", "first", "r", status="accepted", embedding=[1.0, 0.0, 0.0])
        add_example(con, "a2", "c1", "second", "r", status="accepted", embedding=[0.0, 2.0, 0.0])
        add_example(con, "a3", "c1", "other dim", "r", status="accepted", embedding=[0.0, 1.0])
        add_example(con, "p1", None, "pending", "r", embedding=[0.0, 0.0, 1.0])
    index = store.AcceptedIndex()
    with connect(read_only=True) as con:
        example_id, prompt, cosine = index.nearest(con, [0.1, 0.9, 0.0])
        assert (example_id, prompt) == ("a2", "second") and cosine == pytest.approx(0.9939, abs=1e-3)
        assert index.nearest(con, None) is None
        assert index.nearest(con, [0.0, 1.0])[0] == "a3"  # another dimension loads its own matrix
        index.invalidate()
        assert index.nearest(con, [0.0, 0.0, 1.0])[2] == pytest.approx(0.0)
    assert store.decide("p1", "accepted", "ann")
    index.add("p1", [0.0, 0.0, 1.0])
    with connect(read_only=True) as con:
        assert index.nearest(con, [0.0, 0.0, 1.0])[:2] == ("p1", "pending")
    assert store.queue() == []
