"""Degeneration as a failure the loop fixes: the `fluent` check (evals/checks_generic.py, the quality filter), which
the packaged instruction_following suite runs on every answer, an answer cut where it starts repeating (evals.quality.cut_repetition),
and the repair of a looping production answer into a verified candidate."""
import json

import pytest

from builders.synth import seed_store
from builders.trace_rows import insert_traces, trace_row
from curate.synth import driver as synth
from evals import suites
from evals.checks import run_check
from evals.quality import cut_repetition, fluency
from traces import store

LOOP = ("Here is my plan for the week. I will walk every day before work.\n\nSECTION 1\nI will rest now.\n"
        "SECTION 2\nI will rest now.\nSECTION 3\nI will rest now.\nSECTION 4\nI will rest now.")


def test_the_fluent_check_is_the_quality_filter():
    bad = run_check("fluent", LOOP, {}, {"prompt": "Plan my week.", "metadata": "{}"})
    good = run_check("fluent", "A calm week: walk each day and rest on Sunday.", {}, {"prompt": "Plan my week."})
    assert not bad.passed and bad.reason == "fluent: repeated lines"
    assert good.passed


def test_the_packaged_instruction_suite_checks_fluency_after_the_instructions():
    suite = suites.load("instruction_following")
    assert suite.version == "2" and suite.from_metadata == "instructions" and suite.check_names() == ["fluent"]
    md = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    assert suite.checks_for({"metadata": json.dumps(md)}) == [("punctuation:no_comma", {}), ("fluent", {})]
    with pytest.raises(suites.SuiteError, match="also"):
        suites.parse("name: x\nversion: '1'\nchecks: {from_metadata: instructions, extra: 1}\n")


@pytest.mark.parametrize("text, cut", [
    (LOOP, "Here is my plan for the week. I will walk every day before work.\n\nSECTION 1\nI will rest now."),
    ("I love tea. I love tea. I love tea. I love tea.", "I love tea."),
    ("Dear team, thanks for the work.\n***\n***\n***\n***", "Dear team, thanks for the work."),
    ("A fine answer with no loop at all. It ends well.", None),  # nothing repeats: nothing to cut
    ("I love tea a lot. I love tea a lot.", "I love tea a lot."),
])
def test_an_answer_is_cut_where_it_starts_repeating(text, cut):
    assert cut_repetition(text) == cut
    assert cut is None or fluency(cut)[0]


def looping_cluster():
    """Seed store plus a seed trace whose logged answer loops, in a cluster of the fluent check."""
    seed_store()
    md = {"base_id": "b050", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    prompt = "Plan my week of walks. In your entire response, refrain from the use of any commas."
    with store.connect() as con:
        insert_traces([trace_row(50, prompt, LOOP, md, "seed", trace_id="tf", group_key="b050")], con)
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES "
                    "('cf', 'runf', 'fluent', 'looping answers', 1)")
        con.execute("INSERT INTO cluster_members (cluster_id, trace_id, run_id, split) VALUES ('cf', 'tf', 'runf', "
                    "'seed')")
        con.execute("""INSERT INTO eval_runs (run_id, suite, suite_version, mode, split, status, started_at,
                       finished_at) VALUES ('runf', 'if', '1', 'logged', 'all', 'complete', now(), now())""")
        con.execute("INSERT INTO results (run_id, trace_id, check_idx, check_id, check_args, passed) VALUES "
                    "('runf', 'tf', 1, 'fluent', '{}', false)")


def test_a_looping_production_answer_is_repaired_by_cutting_it(monkeypatch):
    looping_cluster()
    monkeypatch.setenv("MEND_CURATE_STRATEGIES", '["repair"]')
    synth.synthesize(cluster_id="cf")
    with store.connect(read_only=True) as con:
        rows = con.execute("SELECT example_id, status, response, metadata FROM examples").fetchall()
        checks = con.execute("SELECT check_id, passed FROM example_checks ORDER BY check_idx").fetchall()
    assert len(rows) == 1 and rows[0][1] == "verified"
    assert rows[0][2] == "Here is my plan for the week. I will walk every day before work.\n\nSECTION 1\nI will rest now."
    assert {"check": "fluent", "args": {}} in json.loads(rows[0][3])["checks"]  # verified by the cluster's check too
    assert checks == [("punctuation:no_comma", True), ("fluent", True)]
