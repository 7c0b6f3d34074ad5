"""The gate: statistics against hand-computed values, PROMOTE / REJECT paths, exit codes and refusals."""
import json
import math

import numpy as np
import pytest
from builders.gate import CANDIDATE, GEN, add_run, add_traces, scenario

from evals import gate, gate_cli, runs, stats
from evals.stats import compare
from traces import store


@pytest.fixture(autouse=True)
def no_assignment(monkeypatch):
    """The constructed clusters have no centroids: their holdout members are set by the tests themselves."""
    monkeypatch.setattr(gate, "assign_clusters", lambda runs: None)


# ---------------------------------------------------------------- statistics

def test_mcnemar_exact_matches_hand_computed_binomial_tails():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(3, 0) == pytest.approx(0.25)              # 2 * 1/8
    assert stats.mcnemar_exact(5, 1) == pytest.approx(14 / 64)           # 2 * (1 + 6) / 64
    assert stats.mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)    # 2 * (1 + 12 + 66) / 4096
    assert stats.mcnemar_exact(4, 4) == 1.0                              # capped at 1
    assert stats.mcnemar_exact(6, 0) == pytest.approx(0.03125)


def test_min_discordant_pairs_is_the_first_n_below_alpha():
    assert stats.min_discordant(0.05) == 6      # 2*0.5^5 = 0.0625 >= 0.05; 2*0.5^6 = 0.031 < 0.05
    assert stats.min_discordant(0.01) == 8      # 2*0.5^7 = 0.0156; 2*0.5^8 = 0.0078
    assert stats.min_discordant(0.0625) == 6    # strictly below alpha
    for alpha in [0.1, 0.05, 0.01, 0.001]:
        n = stats.min_discordant(alpha)
        assert 2 * 0.5 ** n < alpha <= 2 * 0.5 ** (n - 1)


def test_wilson_interval_hand_computed():
    lo, hi = stats.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert stats.wilson(0, 0) == (0.0, 1.0)
    lo, hi = stats.wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)


def test_paired_bootstrap_interval_contains_the_delta_and_is_deterministic():
    base = np.array([0] * 10 + [1] * 10, bool)
    cand = np.array([1] * 6 + [0] * 4 + [1] * 10, bool)
    lo, hi = (100 * x for x in stats.paired_bootstrap(base, cand, 2000)[1:])   # in points, as the gate shows it
    assert lo < 30 < hi and lo > 0        # 6 fixes of 20 items = +30 points, none broken
    assert (lo, hi) == tuple(100 * x for x in stats.paired_bootstrap(base, cand, 2000)[1:])
    assert stats.paired_bootstrap(base, base)[1:] == (0.0, 0.0)


def test_compare_counts_fixes_and_breaks():
    stats = compare([0, 0, 1, 1, 0], [1, 0, 1, 0, 1])
    assert (stats["fixes"], stats["breaks"], stats["n"]) == (2, 1, 5)
    assert stats["delta"] == pytest.approx(20.0)
    assert stats["p"] == pytest.approx(1.0)


# ---------------------------------------------------------------- decisions

def _gate(runs, **kw):
    return gate.run_gate(CANDIDATE, None, "smollm2-135m-instruct", None, ["instruction_following"],
                         clusters=kw.pop("clusters", ["cA"]), allow_run=False, guards=False, given_runs=runs, **kw)


def test_promote_when_the_target_cluster_is_fixed_and_nothing_regresses():
    result = _gate(scenario(candidate_fixes=15))
    assert result["verdict"] == "PROMOTE", result["reasons"]
    comp = result["comparison"]
    assert comp.target["fixes"] == 15 and comp.target["breaks"] == 0
    assert comp.target["p"] == pytest.approx(2 * 0.5 ** 15)
    assert comp.suites["instruction_following"]["delta"] == pytest.approx(37.5)   # 15 of 40 traces
    with store.connect(read_only=True) as con:
        verdict, reasons, details = con.execute(
            "SELECT verdict, reasons, details FROM gate_decisions WHERE decision_id = ?",
            [result["decision_id"]]).fetchone()
    assert verdict == "PROMOTE" and len(json.loads(reasons)) == 2
    assert json.loads(details)["clusters"]["cA"]["cand_rate"] == pytest.approx(75.0)


def test_reject_when_another_part_of_the_suite_regresses():
    # fixes 6/20 target items (+30 pts, p=0.03) but breaks 6 of 10 passing B traces: suite +0 -> but B falls
    result = _gate(scenario(candidate_fixes=6, regress_other=8))
    assert result["verdict"] == "REJECT"
    assert any(r.startswith("FAIL: suite") for r in result["reasons"])
    assert any(r.startswith("ok: pooled") for r in result["reasons"])


def test_reject_when_the_improvement_is_not_significant():
    result = _gate(scenario(candidate_fixes=5))   # 5 discordant pairs: p = 0.0625 >= 0.05
    assert result["verdict"] == "REJECT"
    assert result["comparison"].target["p"] == pytest.approx(0.0625)


def test_reject_on_a_second_regressing_suite():
    runs = scenario(candidate_fixes=15)
    with store.connect() as con:
        holdout = [r[0] for r in con.execute("SELECT trace_id FROM traces ORDER BY trace_id").fetchall()]
        add_run(con, "base-2", {t: [("C", True)] for t in holdout}, suite="other")
        add_run(con, "cand-2", {t: [("C", i % 4 != 0)] for i, t in enumerate(holdout)}, suite="other",
                model_ref=CANDIDATE)
    runs["baseline"]["other"], runs["candidate"]["other"] = "base-2", "cand-2"
    result = gate.run_gate(CANDIDATE, None, "smollm2-135m-instruct", None,
                           ["instruction_following", "other"], clusters=["cA"], allow_run=False, guards=False,
                           given_runs=runs)
    assert result["verdict"] == "REJECT"
    assert result["comparison"].suites["other"]["delta"] == pytest.approx(-25.0)
    assert [r for r in result["reasons"] if r.startswith("FAIL")] == [
        r for r in result["reasons"] if "suite other" in r]


def test_failing_guard_rejects(monkeypatch):
    from evals import guards
    monkeypatch.setattr(guards, "perplexity_guard", lambda *a: {"ok": False, "summary": "ppl 10 -> 20"})
    monkeypatch.setattr(guards, "drift_guard", lambda *a: {"ok": True, "summary": "drift fine"})
    runs = scenario(candidate_fixes=15)
    result = gate.run_gate(CANDIDATE, None, "smollm2-135m-instruct", None,
                           ["instruction_following"], clusters=["cA"], allow_run=False, guards=True,
                           given_runs=runs)
    assert result["verdict"] == "REJECT"
    assert "FAIL: guard lm-eval perplexity: ppl 10 -> 20" in result["reasons"]


def test_targets_come_from_the_train_run_examples():
    runs = scenario(candidate_fixes=15)
    with store.connect() as con:
        con.execute("""INSERT INTO examples (example_id, cluster_id, mode, messages, prompt, response, status)
                       VALUES ('ex1', 'cA', 'compose', '[]', 'p', 'r', 'accepted')""")
        con.execute("""INSERT INTO train_runs (run_id, adapter_path, base_model, base_fingerprint, training_set,
                       status, started_at) VALUES ('tr1', 'adapters/tr1', 'm', 'fp', 't.jsonl', 'complete', now())""")
        con.execute("INSERT INTO train_examples VALUES ('tr1', 'ex1', 'example', 'h')")
    result = gate.run_gate(CANDIDATE, None, "smollm2-135m-instruct", None, None, clusters=None,
                           train_run="tr1", allow_run=False, guards=False, given_runs=runs)
    assert list(result["comparison"].clusters) == ["cA"] and result["train_run"] == "tr1"


# ---------------------------------------------------------------- refusals and exit codes

def _cli(runs, *extra):
    args = ["--candidate", CANDIDATE, "--baseline", "smollm2-135m-instruct", "--no-guards",
            "--no-run", "--cluster", "cA"]
    for side in ("baseline", "candidate"):
        args += [f"--{side}-run", f"instruction_following={runs[side]['instruction_following']}"]
    return gate_cli.main(args + list(extra))


def test_exit_codes_promote_reject():
    runs = scenario(candidate_fixes=15)
    assert _cli(runs) == 0
    assert _cli(runs, "--min-improvement", "90") == 1


def test_refuses_incomplete_run(capsys):
    assert _cli(scenario(target_status="incomplete")) == 2
    assert "incomplete" in capsys.readouterr().err
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT verdict FROM gate_decisions").fetchone()[0] == "ERROR"


def test_refuses_suite_version_mismatch(capsys):
    assert _cli(scenario(cand_version="2")) == 2
    assert "version" in capsys.readouterr().err


def test_refuses_underpowered_holdout_and_says_how_many_pairs(capsys):
    assert _cli(scenario(n_target=5, candidate_fixes=5)) == 2
    err = capsys.readouterr().err
    assert "at least 6 discordant pairs" in err and "5" in err



def _better_run(con, run_id: str, **kw) -> str:
    """A run on the scenario's holdout in which every target trace passes (a PROMOTE if it were the candidate's)."""
    ids = [r[0] for r in con.execute("SELECT trace_id FROM traces ORDER BY trace_id").fetchall()]
    return add_run(con, run_id, {t: [("A" if t.startswith("a") else "B", True)] for t in ids}, **kw)


@pytest.mark.parametrize("kw, why", [
    ({}, "generated with smollm2-135m-instruct"),                    # the baseline model's own run
    ({"model_ref": CANDIDATE, "adapter_hash": "abc"}, "adapter abc"),  # another adapter
    ({"model_ref": CANDIDATE, "split": "seed"}, "seed split"),
    ({"model_ref": CANDIDATE, "suite": "other"}, "suite other"),
    ({"model_ref": None, "split": "all", "mode": "logged"}, "logged answers"),
])
def test_refuses_a_given_run_that_is_not_its_sides(kw, why, capsys):
    runs = scenario(candidate_fixes=0)
    with store.connect() as con:
        runs["candidate"]["instruction_following"] = _better_run(con, "wrong-run", **kw)
    assert _cli(runs) == 2
    err = capsys.readouterr().err
    assert "wrong-run" in err and "is not a run of candidate-model" in err and why in err


def test_refuses_to_compare_a_model_with_itself(capsys):
    runs = scenario(candidate_fixes=15)
    code = gate_cli.main(["--candidate", "smollm2-135m-instruct", "--baseline", "smollm2-135m-instruct",
                          "--no-guards", "--no-run", "--cluster", "cA",
                          "--baseline-run", f"instruction_following={runs['baseline']['instruction_following']}",
                          "--candidate-run", f"instruction_following={runs['candidate']['instruction_following']}"])
    assert code == 2 and "the same model" in capsys.readouterr().err

def test_default_candidate_needs_a_trained_adapter(capsys):
    assert gate_cli.main(["--no-guards"]) == 2
    assert "no trained adapter yet" in capsys.readouterr().err


def test_refuses_missing_run_without_running(monkeypatch, capsys):
    monkeypatch.setattr(gate, "suite_version", lambda s: "1")
    scenario()
    code = gate_cli.main(["--candidate", "smollm2-135m-instruct", "--adapter", "nowhere", "--no-guards", "--no-run"])
    assert code == 2 and "adapter not found: nowhere" in capsys.readouterr().err
    code = gate_cli.main(["--candidate", "other-model", "--no-guards", "--no-run"])
    assert code == 2 and "no complete holdout run" in capsys.readouterr().err


def test_reuses_complete_runs_with_the_same_key(monkeypatch, tmp_path):
    monkeypatch.setattr(gate, "suite_version", lambda s: "1")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    from traces.hashing import adapter_hash
    with store.connect() as con:
        ids = add_traces(con, 8)
        add_run(con, "b1", {t: [("A", False)] for t in ids})
        add_run(con, "c-old", {t: [("A", True)] for t in ids}, adapter_hash=adapter_hash(str(adapter)),
                status="incomplete")
        add_run(con, "c1", {t: [("A", True)] for t in ids}, adapter_hash=adapter_hash(str(adapter)))
    monkeypatch.setattr(gate, "run_missing", lambda *a: pytest.fail("should reuse"))
    result = gate.run_gate("smollm2-135m-instruct", str(adapter), "production", clusters=[], guards=False)
    assert result["baseline"].runs == {"instruction_following": "b1"}
    assert result["candidate"].runs == {"instruction_following": "c1"}
    assert result["verdict"] == "PROMOTE"   # 8/8 fixed: p = 2 * 0.5^8 < 0.05, +100 pts


def test_logged_run_counts_as_base_model_only_with_matching_generation(monkeypatch):
    monkeypatch.setattr(gate, "suite_version", lambda s: "1")
    gen = dict(GEN)
    monkeypatch.setattr(gate, "answer_settings", lambda *a: gen)
    with store.connect() as con:
        ids = add_traces(con, 4)
        add_run(con, "logged", {t: [("A", False)] for t in ids}, model_ref=None, split="all", mode="logged")
        found = runs.find_run(con, "instruction_following", "1", "smollm2-135m-instruct", None, gen,
                              "smollm2-135m-instruct")
        assert found[0] is None                     # traces carry no metadata.generation yet
        con.execute("UPDATE traces SET metadata = ?",
                    [json.dumps({"generation": {"model": "smollm2-135m-instruct", **gen}})])
        assert runs.find_run(con, "instruction_following", "1", "smollm2-135m-instruct", None, gen,
                             "smollm2-135m-instruct")[0] == "logged"
        assert runs.find_run(con, "instruction_following", "1", "smollm2-135m-instruct", "abc", gen,
                             "smollm2-135m-instruct")[0] is None      # an adapter is not the base model
        con.execute("UPDATE traces SET metadata = ?",
                    [json.dumps({"generation": {"model": "smollm2-135m-instruct", **gen, "decoding": "sample"}})])
        assert runs.find_run(con, "instruction_following", "1", "smollm2-135m-instruct", None, gen,
                             "smollm2-135m-instruct")[0] is None      # sampled, not greedy


def test_min_discordant_formula_agrees_with_the_test():
    for alpha in [0.05, 0.01]:
        n = stats.min_discordant(alpha)
        assert stats.mcnemar_exact(n, 0) < alpha <= stats.mcnemar_exact(n - 1, 0)
        assert math.isclose(stats.mcnemar_exact(n, 0), 2 * 0.5 ** n)
