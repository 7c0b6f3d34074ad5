"""The nightly report (curate/loop/report.py): wall time per stage, Wilson intervals before/after, the strategies
of the examples the adapter trained on, the IFEval gain of this nightly, the sweep's choice, the cost per fix."""
import io
import json

import pytest
from builders.nightly_report import ifeval_gain, nightly
from rich.console import Console

from curate.loop import report
from evals.stats import wilson


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    nightly()
    return tmp_path


def write(nightly_id: str = "n1") -> tuple[str, str]:
    """(report.md, terminal summary) of a nightly."""
    term = io.StringIO()
    path = report.write_report(nightly_id, Console(file=term, width=250, color_system=None))
    return path.read_text(), term.getvalue()


def section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_wall_time_per_stage_and_total(home):
    md, term = write()
    stages = section(md, "Stages")
    assert "| stage | status | wall time | summary |" in stages
    for row in ["| ingest | done | 5.0 s |", "| synth | done | 2m 05s |", "| train | done | 1h 00m 00s |",
                "| gate | done | 30.0 s |", "| promote | skipped | 1.0 s |"]:
        assert row in stages
    assert "| report |" not in stages  # the report is the stage being written
    # 5 + 125 + 3600 + 30 + 1 s in stages; the gate resumed two hours after the start
    assert "Wall time: 1h 02m 41s in stages, 2h 00m 31s from first start to last finish." in stages
    assert "wall time: 1h 02m 41s in stages, 2h 00m 31s from first start to last finish" in term
    assert "│ train   │ done    │ 1h 00m 00s │" in term


def test_durations():
    assert [report._duration(s) for s in (None, 0.04, 59.94, 61, 3599.6, 86400)] == \
        ["unfinished", "0.0 s", "59.9 s", "1m 01s", "1h 00m 00s", "24h 00m 00s"]


def test_before_after_with_wilson_intervals(home):
    md, term = write()
    lo, hi = wilson(3, 4)
    row = f"| cluster label-cA | 4 | 0.0 [0.0, {100 * wilson(0, 4)[1]:.1f}] | 75.0 [{100 * lo:.1f}, {100 * hi:.1f}] |"
    assert row == "| cluster label-cA | 4 | 0.0 [0.0, 49.0] | 75.0 [30.1, 95.4] |"
    assert row + " +75.0 | [+25.0, +100.0] | 3/0 | 0.25 |" in md
    assert "| suite instruction_following | 10 | 20.0 [5.7, 51.0] | 60.0 [31.3, 83.2] | +40.0 |" in md
    assert "75.0 [30.1, 95.4]" in term


def test_strategies_of_the_trained_examples(home):
    md, term = write()
    part = section(md, "Strategies of the kept examples")
    # e5 (constrained, accepted after the export) and cC's e11 were not trained on; e1 is an SFT item and a pair
    assert "| cluster | repair | sample | revise | edited | unknown | total |" in part
    assert "| label-cA | 2 | 1 | 0 | 0 | 0 | 3 |" in part
    assert "| label-cB | 1 | 0 | 1 | 1 | 1 | 4 |" in part   # e10 through its DPO pair only; e7 a reviewer's edit
    assert "| total | 3 | 1 | 1 | 1 | 1 | 7 |" in part
    assert "constrained" not in part and "label-cC" not in part
    assert "kept examples by strategy" in term
    assert "│ total    │ 3      │ 1      │ 1      │ 1      │ 1       │ 7     │" in term


def test_kept_and_dropped_counts_only_this_nightlys_clusters(home):
    part = section(write()[0], "Examples kept and dropped")
    assert "Examples of the 2 clusters this nightly synthesized for." in part
    assert "| accepted |  | 8 |" in part and "| duplicate | exact | 1 |" in part and "| edited |  | 1 |" in part


def test_ifeval_gain_of_this_nightly(home):
    ifeval_gain(home)
    md, term = write()
    part = section(md, "IFEval (lm-eval)")
    assert "first 120 IFEval prompts: avg prompt/inst strict 25.0% -> 35.0% (**+10.0 points**)" in part
    assert "prompt strict 20.0 -> 30.0, inst strict 30.0 -> 40.0" in part
    assert "IFEval avg prompt/inst strict 25.0% -> 35.0% (+10.0 points, first 120 prompts)" in term


def test_ifeval_gain_of_another_nightly_is_not_shown_as_this_ones(home):
    ifeval_gain(home, "n0")
    md, term = write()
    part = section(md, "IFEval (lm-eval)")
    assert "was measured for nightly `n0`, not this one" in part and "%" not in part
    assert "IFEval gain last measured for nightly n0, not this one" in term and "25.0%" not in term


def test_no_ifeval_gain_file_no_section(home):
    md, term = write()
    assert "IFEval" not in md and "IFEval" not in term


def test_unreadable_ifeval_gain_file_is_named(home):
    ifeval_gain(home, adapter_metrics={"prompt_level_strict_acc": 0.3})
    md, term = write()
    assert "data/bench/ifeval_gain.json unreadable (KeyError" in section(md, "IFEval (lm-eval)")


def test_sweep_choice_and_cost_per_fixed_failure(home):
    md, term = write()
    assert "Chosen: config 1 (lr=0.001 num_epochs=3), run sw-1." in section(md, "Sweep")
    assert "sweep sw1 chose config 1 (lr=0.001 num_epochs=3), run sw-1" in term
    # every candidate of the two trained clusters (e4, a duplicate, too), not cC's; 4 holdout failures fixed
    assert "Teacher: 4 calls, 60 tokens, $0.0800; holdout failures fixed: 4; cost per fixed failure: $0.0200." in md
    assert "teacher cost $0.0800 over 4 calls; holdout failures fixed: 4" in term


def test_untrusted_labels_are_escaped_in_the_terminal(home):
    from traces import store
    with store.connect() as con:
        con.execute("UPDATE clusters SET label = '[red]x[/red]\x1b[2J' WHERE cluster_id = 'cA'")
    _, term = write()
    assert "[red]x[/red]^[[2J" in term and "\x1b" not in term


def test_a_nightly_that_trained_nothing(home):
    from traces import store
    with store.connect() as con:
        con.execute("""INSERT INTO nightly_ledger VALUES ('n2', 'synth', 'done', '{"clusters": []}',
                       '2026-03-02 00:00:00', '2026-03-02 00:00:02'), ('n2', 'train', 'running', '{}',
                       '2026-03-02 00:00:02', NULL)""")
    md, term = write("n2")
    assert "| train | running | unfinished |" in section(md, "Stages") and "Wall time: 2.0 s in stages" in md
    assert "Examples of the 0 clusters this nightly synthesized for." in md and "| accepted |" not in md
    assert "No train run in this nightly, so no kept examples." in md and "kept examples by strategy" not in term


def test_a_dpo_runs_reward_figures_are_in_the_training_section(home):
    from traces import store
    metrics = {"method": "dpo", "n_examples": 2, "last_step": 3, "final_loss": 0.61, "rewards/margins": 0.42,
               "rewards/chosen": 0.1, "logps/chosen": -88.5}
    with store.connect() as con:
        con.execute("UPDATE train_runs SET metrics = ? WHERE run_id = 'tr1'", [json.dumps(metrics)])
    training = section(write()[0], "Training")
    assert "reward margin 0.4200" in training and "chosen answers -88.5000" in training
    with store.connect() as con:  # an SFT run has none: no line
        con.execute("UPDATE train_runs SET metrics = ? WHERE run_id = 'tr1'", [json.dumps({"method": "sft"})])
    assert "reward margin" not in section(write()[0], "Training")


def test_what_a_stage_asks_a_person_to_see_opens_the_report(home):
    from traces import store
    with store.connect() as con:
        con.execute("""INSERT INTO nightly_ledger VALUES
                       ('n3', 'holdout', 'done', '{"stop": "the gate cannot decide: [tool.mend.traces] x"}',
                        '2026-03-03 00:00:00', '2026-03-03 00:00:01'),
                       ('n3', 'accept', 'done', '{"attention": "3 example(s) wait for review"}',
                        '2026-03-03 00:00:01', '2026-03-03 00:00:02')""")
    md, term = write("n3")
    assert section(md, "Needs attention") == ("\n- holdout: the gate cannot decide: [tool.mend.traces] x\n"
                                              "- accept: 3 example(s) wait for review\n")
    assert "needs attention: holdout: the gate cannot decide: [tool.mend.traces] x" in term
    assert "## Needs attention" not in write()[0]  # nothing to see: no section
