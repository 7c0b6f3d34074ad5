"""curate sweep: a validation split carved from the training data by seed group (never the holdout, deterministic),
prose perplexity on documents the gate never scores, one `sweeps` row per grid config, exactly one chosen by the
stated rule; the nightly report shows it."""
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from builders.replay import add_trace, counting, tiny_student, traffic  # noqa: F401 (fixtures)

from curate import export
from curate.loop import sweep
from evals import guards
from traces import store
from traces.settings import SettingsError, load


def accepted_example(eid, trace_id, prompt, response, cluster="c1"):
    md = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    with store.connect() as con:
        con.execute("""INSERT INTO examples (example_id, cluster_id, seed_trace_id, mode, messages, prompt, response,
                       metadata, status, created_at) VALUES (?, ?, ?, 'compose', ?, ?, ?, ?, 'accepted', now())""",
                    [eid, cluster, trace_id, json.dumps([{"role": "user", "content": prompt}]), prompt, response,
                     json.dumps(md)])


def world(n_seed=24, n_holdout=6):
    """Seed and holdout traces (one group each), a cluster of the failing seed traces, an accepted example per seed
    trace, a complete logged run in which every trace passed (the replay pool)."""
    traffic(n_seed, n_holdout)
    with store.connect() as con:
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES "
                    "('c1', 'run1', 'punctuation:no_comma', 'no commas', ?)", [n_seed])
        for i in range(n_seed + n_holdout):
            con.execute("INSERT INTO cluster_members (cluster_id, trace_id, run_id, split) VALUES ('c1', ?, 'run1', ?)",
                        [f"t{i}", "seed" if i < n_seed else "holdout"])
        con.execute("""INSERT INTO eval_runs (run_id, suite, suite_version, mode, split, status, started_at,
                       finished_at) VALUES ('log', 'if', '1', 'logged', 'all', 'complete', now(), now())""")
        for i in range(n_seed + n_holdout):
            con.execute("INSERT INTO results (run_id, trace_id, check_idx, check_id, passed) VALUES "
                        "('log', ?, 0, 'x', true)", [f"t{i}"])
    with store.connect(read_only=True) as con:
        rows = con.execute("SELECT trace_id, prompt FROM traces WHERE split = 'seed' ORDER BY trace_id").fetchall()
    for tid, prompt in rows:
        accepted_example(f"e-{tid}", tid, prompt, f"A fixed answer for {tid} without commas")


def holdout_groups():
    with store.connect(read_only=True) as con:
        return {g for (g,) in con.execute("SELECT group_key FROM traces WHERE split = 'holdout'").fetchall()}


def test_validation_split_is_seed_only_and_deterministic():
    world()
    with store.connect(read_only=True) as con:
        groups = sweep.validation_groups(con, 0.5)
        everything = sweep.validation_groups(con, 1.0)
        prompts = sweep.target_prompts(con, groups, 100)
    assert everything == {f"b{i}" for i in range(24)}  # every seed group and no holdout group is eligible
    assert 0 < len(groups) < 24 and groups == {g for g in everything if sweep.in_validation(g, 0.5)}
    # pinned: the same ids give the same split in every process and version (a salted sha256, not hash())
    assert sorted(groups) == ["b1", "b10", "b11", "b13", "b14", "b18", "b2", "b20", "b21", "b22", "b23", "b3", "b7",
                              "b8"]
    add_trace("late", "b99", "A request logged later.", "seed")  # adding traffic does not move existing groups
    mixed = sorted(groups)[0]  # a validation group that also gets a holdout trace is no longer one
    add_trace("mixed", mixed, "Same group in the holdout.", "holdout")
    with store.connect(read_only=True) as con:
        later = sweep.validation_groups(con, 0.5)
        assert sweep.target_prompts(con, groups, 100) == prompts  # deterministic
    assert later - {"b99"} == groups - {mixed} and mixed not in later
    # target prompts: from validation groups only, never a holdout trace, one per distinct prompt
    holdout_ids = {f"t{i}" for i in range(24, 30)}
    assert prompts and not any(p["id"] in holdout_ids for p in prompts)
    with store.connect(read_only=True) as con:
        split_of = dict(con.execute("SELECT prompt, split FROM traces").fetchall())
    assert {split_of[p["prompt"]] for p in prompts} == {"seed"}
    assert len({p["prompt"] for p in prompts}) == len(prompts) == len(groups)  # example and trace: one prompt


def test_training_sets_leave_out_every_validation_item(counting):
    world()
    with store.connect(read_only=True) as con:
        groups = sweep.validation_groups(con, 0.5)
    items, counts, _ = export.build(0.3, 0.5, groups)
    assert counts["self"] > 0 and counts["replay"] > 0
    with store.connect(read_only=True) as con:
        group_of = dict(con.execute("SELECT trace_id, group_key FROM traces").fetchall())
        trace_of = dict(con.execute("SELECT example_id, seed_trace_id FROM examples").fetchall())
    for it in items:
        tid = trace_of.get(it["id"]) or it.get("trace_id") or it["id"]
        assert group_of[tid] not in groups and group_of[tid] not in holdout_groups()
    val = sweep.carve(0.5, 100, 4)
    assert val.groups == groups and len(val.anchors) == 4
    assert {a["messages"][0]["content"] for a in val.anchors}.isdisjoint(
        {it["messages"][0]["content"] for it in items})


# ---------------------------------------------------------------- the sweep with stubs

class FakeTrain:
    def __init__(self, fail_lr=None):
        self.calls, self.fail_lr = [], fail_lr

    def __call__(self, flags):
        from train.lora import RunResult
        self.calls.append(flags)
        lr = flags[flags.index("--lr") + 1]
        if lr == self.fail_lr:
            return RunResult(f"run-{lr}", "failed", None, {}, "NaN loss")
        assert json.loads(Path(flags[1]).with_name("train.manifest.json").read_text())["counts"]["total"] > 0
        return RunResult(f"run-{lr}", "complete", Path(f"adapter-{lr}"), {"final_loss": 1.0, "last_step": 3})


# (target pass rate, anchor NLL) per adapter; the base: 0.2 and NLL 1.0
SCORES = {None: (0.2, 1.0), "adapter-0.1": (0.6, 1.5), "adapter-0.2": (0.4, 1.05), "adapter-0.3": (0.4, 1.02),
          "adapter-0.4": (0.3, 1.0), "adapter-0.5": (0.1, 0.99)}
GRID = ["lr=0.1 replay_self_share=0", "lr=0.2 replay_self_share=0", "lr=0.3 lora_r=8 replay_self_share=0",
        "lr=0.4 replay_self_share=0", "lr=0.5 method=sft+dpo replay_self_share=0"]


def fake_score(ref, adapter, val):
    target, nll = SCORES[None if adapter is None else Path(adapter).name]
    return {"target_pass": target, "n_targets": 10, "checks_pass": target / 2, "prompt_pass": 0.0, "anchor_nll": nll,
            "degenerate": 0.0, "outcomes": [i < 10 * target for i in range(10)],
            "n_val": len(val.prompts), "n_anchors": len(val.anchors), "traffic_pass": target / 4,
            "traffic_degenerate": 0.0, "n_traffic": len(val.traffic)}


class FakePerplexity:
    """Stands in for evals.guards.word_perplexity: a fixed prose perplexity per adapter; records each call."""

    def __init__(self, table=None):
        # the base: 100; every adapter within the 10% tolerance (config 2's rise 1% < its anchor rise 2%)
        self.table = table or {None: 100.0, "adapter-0.1": 105.0, "adapter-0.2": 104.0, "adapter-0.3": 101.0,
                               "adapter-0.4": 102.0, "adapter-0.5": 99.0}
        self.calls = []

    def __call__(self, model_ref, adapter, n_docs=40, batch_size=8, offset=0):
        name = None if adapter is None else Path(adapter).name
        self.calls.append({"adapter": name, "n_docs": n_docs, "offset": offset})
        return self.table[name]


def run(train=None, grid=GRID):
    return sweep.run_sweep(grid=grid, train_fn=train or FakeTrain(fail_lr="0.4"), score_fn=fake_score)


@pytest.fixture
def ppl(monkeypatch):
    fake = FakePerplexity()
    monkeypatch.setattr(guards, "word_perplexity", fake)
    return fake


@pytest.fixture
def exported(tmp_path, monkeypatch, ppl):
    world()
    monkeypatch.setenv("MEND_CURATE_TRAIN_OUT", str(tmp_path / "train" / "train.jsonl"))
    monkeypatch.setenv("MEND_CURATE_SWEEP_DIR", str(tmp_path / "sweeps"))
    monkeypatch.setenv("MEND_CURATE_SWEEP_ANCHORS", "0")  # no anchors: nothing generated
    monkeypatch.setenv("MEND_CURATE_SWEEP_PROSE_TOLERANCE", "-1")  # the gate's 10%: FakePerplexity's figures
    export.export(replay_self_share=0.0)


def test_one_row_per_config_and_exactly_one_chosen_by_the_rule(exported):
    train = FakeTrain(fail_lr="0.4")
    out = run(train)
    rows = out["rows"]
    assert [r["config_idx"] for r in rows] == [0, 1, 2, 3, 4] and len(train.calls) == 5
    assert [r["status"] for r in rows] == ["complete", "complete", "complete", "failed", "complete"]
    assert "NaN loss" in rows[3]["error"] and rows[3]["run_id"] == "run-0.4"
    # config 0 has the best target but its anchor perplexity rose 65% (> 10%); 1 and 2 tie on target: 2 rose less
    assert [r["chosen"] for r in rows] == [False, False, True, False, False] and out["chosen"] == 2
    m = rows[2]["metrics"]
    assert m["base_target_pass"] == 0.2 and m["base_anchor_nll"] == 1.0 and m["beats_base"]
    assert abs(m["rise"] - (2.718281828 ** 0.02 - 1)) < 1e-6 and rows[2]["run_id"] == "run-0.3"
    assert m["base_prose_ppl"] == 100.0 and m["prose_ppl"] == 101.0 and abs(m["prose_rise"] - 0.01) < 1e-9
    assert rows[2]["config"] == {"lr": 0.3, "lora_r": 8, "replay_self_share": 0.0, "lora_alpha": 16}
    assert "--lora-alpha" in train.calls[2] and train.calls[4][train.calls[4].index("--method") + 1] == "sft+dpo"
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*), count(*) FILTER (chosen), count(DISTINCT rule) FROM sweeps").fetchone() \
            == (5, 1, 1)


def test_a_rerun_reuses_scored_configs_and_reapplies_the_rule(exported, monkeypatch):
    first = run()
    again_train = FakeTrain()
    monkeypatch.setenv("MEND_CURATE_SWEEP_ANCHOR_TOLERANCE", "1.0")  # a looser rule: config 0 is now allowed
    second = run(again_train)
    assert second["sweep_id"] == first["sweep_id"]
    assert [c[c.index("--lr") + 1] for c in again_train.calls] == ["0.4"]  # only the failed config again
    assert second["chosen"] == 0 and sum(r["chosen"] for r in second["rows"]) == 1


def test_another_grid_extends_the_same_sweep(exported):
    first = run(FakeTrain(), grid=GRID[:2])
    train = FakeTrain()
    second = run(train, grid=[GRID[1], GRID[2]])  # one config scored already, one new
    assert second["sweep_id"] == first["sweep_id"] and [c[c.index("--lr") + 1] for c in train.calls] == ["0.3"]
    assert [r["config_idx"] for r in second["rows"]] == [0, 1, 2] and second["chosen"] == 2


def test_a_row_scored_with_older_metrics_is_scored_again_without_training(exported):
    run()
    with store.connect() as con:  # as written before the per-check metrics existed
        con.execute("UPDATE sweeps SET metrics = json_object('target_pass', 0.0, 'anchor_nll', 9.0) "
                    "WHERE config_idx = 2")
        con.execute("""INSERT INTO train_runs (run_id, adapter_path, base_model, base_fingerprint, training_set,
                       status, started_at) VALUES ('run-0.3', 'adapter-0.3', 'm', 'f', 't', 'complete', now())""")
    train = FakeTrain()
    out = run(train)
    assert [c[c.index("--lr") + 1] for c in train.calls] == ["0.4"]  # only the failed config trains
    m = out["rows"][2]["metrics"]
    assert m["n_targets"] == 10 and m["anchor_nll"] == 1.02 and out["chosen"] == 2


def test_the_rule_when_no_config_is_within_the_tolerance():
    rows = [{"config_idx": i, "status": "complete", "metrics": {"target_pass": t, "anchor_nll": n,
                                                                "base_anchor_nll": 1.0}}
            for i, (t, n) in enumerate([(0.9, 1.5), (0.1, 1.2), (0.5, 1.2)])]
    assert sweep.choose(rows, 0.1, 0.1) == 1  # the smallest rise (1 and 2 tie: grid order)
    assert sweep.choose(rows, 0.3, 0.1) == 2  # within 0.3: 1 and 2; 2 has the better target
    assert sweep.choose([{**rows[0], "status": "failed"}], 0.1, 0.1) is None


def prose_rows(*figures):
    """(target, anchor NLL, prose ppl) per config; the base: anchor NLL 1.0, prose ppl 100."""
    return [{"config_idx": i, "status": "complete",
             "metrics": {"target_pass": t, "anchor_nll": n, "base_anchor_nll": 1.0, "prose_ppl": p,
                         "base_prose_ppl": 100.0}} for i, (t, n, p) in enumerate(figures)]


def test_the_rule_needs_the_prose_rise_within_its_tolerance_too():
    # config 0: the best target, anchored (NLL fell, as on the demo) but prose perplexity +20%: not chosen
    rows = prose_rows((0.9, 0.85, 120.0), (0.5, 1.02, 103.0), (0.3, 1.0, 100.0))
    assert sweep.prose_rise(rows[0]["metrics"]) == pytest.approx(0.2) and sweep.rise(rows[0]["metrics"]) < 0
    assert sweep.choose(rows, 0.1, 0.1) == 1
    assert sweep.choose(rows, 0.1, 0.25) == 0  # a looser prose tolerance admits it
    # none within both: the smallest max(anchor rise, prose rise): 1 (max 0.3) before 0 (0.5) and 2 (exp(.4)-1)
    rows = prose_rows((0.9, 1.0, 150.0), (0.5, 1.2, 130.0), (0.3, 1.4, 100.0))
    assert sweep.choose(rows, 0.1, 0.1) == 1
    # ties on target within both: the smaller max of the two rises
    rows = prose_rows((0.5, 1.01, 108.0), (0.5, 1.05, 101.0))
    assert sweep.choose(rows, 0.1, 0.1) == 1


def test_a_sweep_does_not_choose_the_best_target_when_its_prose_perplexity_rose(exported, ppl, monkeypatch):
    monkeypatch.setitem(SCORES, "adapter-0.3", (0.5, 1.02))  # config 2: the best target within the anchor tolerance
    ppl.table["adapter-0.3"] = 115.0  # ... but its prose perplexity rose 15% > 10%
    out = run()
    m = out["rows"][2]["metrics"]
    assert m["prose_rise"] == pytest.approx(0.15) and m["rise"] < 0.1
    assert out["chosen"] == 1 and [r["chosen"] for r in out["rows"]] == [False, True, False, False, False]
    assert "prose word perplexity rise <= 10%" in out["rule"] and "100-139" in out["rule"]
    console = Console(record=True, width=250)
    console.print(sweep.table(out["sweep_id"], out["rows"]))
    shown = console.export_text()
    assert "prose word perplexity 100.00" in shown and "prose rise %" in shown
    row2 = next(line for line in shown.splitlines() if "run-0.3" in line)
    assert "115.00" in row2 and "15.0" in row2


def test_the_sweeps_prose_documents_are_none_of_the_gates(tmp_path, monkeypatch):
    """The gate's guard scores the first gate_lm_eval_docs documents; the sweep's are later ones, and what each
    run writes for lm-eval (prose.load: the task's dataset) shares no document with the other."""
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    sys.path.insert(0, str(guards.TASKS_DIR))
    import prose  # the lm-eval task's data module, as lm-eval loads it
    es, plan = load("evals"), sweep.prose_plan(load("curate"))
    # the sweep's prose tolerance is half the gate's: a config chosen here keeps room on the holdout
    assert plan.offset >= es.gate_lm_eval_docs and plan.docs == 40 and plan.tolerance == es.gate_ppl_tolerance / 2
    gate = prose.load(n_docs=es.gate_lm_eval_docs)["test"]["text"]  # as evals.guards.word_perplexity asks
    mine = prose.load(n_docs=plan.docs, offset=plan.offset)["test"]["text"]
    assert len(gate) == es.gate_lm_eval_docs and len(mine) == plan.docs
    assert set(gate).isdisjoint(mine)
    assert mine == sweep.prose_documents()[plan.offset:plan.offset + plan.docs]
    # the gate's documents are still the module docstrings and the license (the member docstrings come after)
    assert gate == prose.paragraphs()[:es.gate_lm_eval_docs]
    monkeypatch.setattr(prose, "_member_docs", lambda name: [])
    assert gate == prose.paragraphs()[:es.gate_lm_eval_docs]  # the same without them
    assert (tmp_path / "data" / "lm_eval" / "prose.jsonl").read_text().count("\n") == es.gate_lm_eval_docs
    # a gate that scores as many documents as the sweep's offset or more: the sweep refuses
    monkeypatch.setenv("MEND_EVALS_GATE_LM_EVAL_DOCS", str(plan.offset + 1))
    with pytest.raises(SettingsError, match="sweep_prose_offset"):
        sweep.prose_plan(load("curate"))


def test_a_sweep_refuses_the_gates_prose_before_training(exported, monkeypatch):
    monkeypatch.setenv("MEND_CURATE_SWEEP_PROSE_OFFSET", "39")  # the gate scores 0-39
    train = FakeTrain()
    with pytest.raises(SettingsError, match="gate_lm_eval_docs 40"):
        run(train)
    assert train.calls == []


def test_scoring_measures_prose_perplexity_past_the_gates_documents(exported, ppl):
    out = run()
    # the base once, then each config that trained; always the sweep's documents, never the gate's (offset 0)
    assert ppl.calls == [{"adapter": a, "n_docs": 40, "offset": 100}
                         for a in (None, "adapter-0.1", "adapter-0.2", "adapter-0.3", "adapter-0.5")]
    assert all(r["metrics"]["base_prose_ppl"] == 100.0 for r in out["rows"])
    for r in out["rows"]:
        if r["status"] == "complete":
            assert (r["metrics"]["prose_docs"], r["metrics"]["prose_offset"]) == (40, 100)
    ppl.calls.clear()
    run(FakeTrain())  # a rerun: the base and the scored configs keep their figures; only the failed one runs
    assert ppl.calls == [{"adapter": "adapter-0.4", "n_docs": 40, "offset": 100}]


def test_a_row_without_a_prose_figure_gets_one_without_training_or_regenerating(exported, ppl, monkeypatch):
    run()
    with store.connect() as con:  # as written before the prose figure existed
        m = json.loads(con.execute("SELECT metrics FROM sweeps WHERE config_idx = 2").fetchone()[0])
        for k in ("prose_ppl", "prose_docs", "prose_offset", "prose_rise", "base_prose_ppl"):
            m.pop(k)
        con.execute("UPDATE sweeps SET metrics = ? WHERE config_idx = 2", [json.dumps(m)])
        for lr in ("0.1", "0.2", "0.3", "0.4", "0.5"):
            con.execute("""INSERT INTO train_runs (run_id, adapter_path, base_model, base_fingerprint, training_set,
                           status, started_at) VALUES (?, ?, 'm', 'f', 't', 'complete', now())""",
                        [f"run-{lr}", f"adapter-{lr}"])
    scored, train = [], FakeTrain()
    ppl.calls.clear()
    ppl.table["adapter-0.3"] = 130.0
    out = sweep.run_sweep(grid=GRID, train_fn=train, score_fn=lambda *a: scored.append(a) or fake_score(*a))
    assert [c[c.index("--lr") + 1] for c in train.calls] == ["0.4"]  # only the failed config trains
    assert [a[1] for a in scored] == [Path("adapter-0.4")]  # (a), (b) kept for config 2: not generated again
    assert [c["adapter"] for c in ppl.calls] == [None, "adapter-0.3", "adapter-0.4"]  # the base once, then 2
    m = out["rows"][2]["metrics"]
    assert m["prose_ppl"] == 130.0 and m["prose_rise"] == pytest.approx(0.3) and m["anchor_nll"] == 1.02
    assert m["counts"] and m["last_step"] == 3 and out["chosen"] == 1  # 2 is now over the prose tolerance
    # other documents (another offset): every scored config's prose figure is taken again, the base's too
    ppl.calls.clear()
    monkeypatch.setenv("MEND_CURATE_SWEEP_PROSE_OFFSET", "150")
    sweep.run_sweep(grid=GRID, train_fn=train, score_fn=lambda *a: scored.append(a) or fake_score(*a))
    assert sorted((c["adapter"] or "") for c in ppl.calls) == \
        ["", "adapter-0.1", "adapter-0.2", "adapter-0.3", "adapter-0.4", "adapter-0.5"]
    assert {c["offset"] for c in ppl.calls} == {150}


def test_grid_config_errors_name_the_key():
    with pytest.raises(Exception, match="colour"):
        sweep.parse_config("lr=1e-3 colour=red")
    with pytest.raises(Exception, match="lora_r"):
        sweep.parse_config("lora_r=eight")
    assert sweep.train_flags({"lr": 0.001, "packing": True, "replay_self_share": 0.5}, Path("t.jsonl")) == \
        ["--training-set", "t.jsonl", "--lr", "0.001", "--packing"]
    only = sweep.parse_config("epochs=2 only_checks=punctuation:no_comma+startend:end_checker")
    assert sweep._only(only) == {"punctuation:no_comma", "startend:end_checker"} and sweep._only({}) is None
    assert sweep.train_flags(only, Path("t.jsonl")) == ["--training-set", "t.jsonl", "--epochs", "2.0"]
    cs = SimpleNamespace(max_train_examples=192, layout_targets=False)
    every = sweep.parse_config("max_train_examples=0 layout_targets=true")
    assert sweep._export_args(every, cs) == {"max_examples": 0, "layout_targets": True, "only_checks": None}
    assert sweep._export_args(only, cs) == {"max_examples": 192, "layout_targets": False,
                                            "only_checks": {"punctuation:no_comma", "startend:end_checker"}}
    assert sweep.train_flags(every, Path("t.jsonl")) == ["--training-set", "t.jsonl"]


def test_nightly_report_shows_the_sweep_of_the_training_set(exported):
    from curate.loop import report as nightly_report
    from train.lora_data import read_training_set
    out = run()
    items = read_training_set(os.environ["MEND_CURATE_TRAIN_OUT"])
    with store.connect() as con:  # a nightly's train run on the exported set the sweep was carved from
        con.execute("""INSERT INTO train_runs (run_id, base_model, base_fingerprint, training_set, status, started_at)
                       VALUES ('final', 'm', 'f', 't', 'complete', now())""")
        con.executemany("INSERT INTO train_examples VALUES ('final', ?, ?, ?)",
                        [(ex.id, ex.origin, ex.content_hash) for ex in items])
        con.execute("""INSERT INTO nightly_ledger (nightly_id, stage, status, summary, started_at)
                       VALUES ('n1', 'train', 'done', '{"train_run": "final"}', now())""")
    data = nightly_report.gather("n1")
    assert data["sweep"]["sweep_id"] == out["sweep_id"]
    md = nightly_report.markdown(data, {})
    assert "## Sweep" in md and "lr=0.3 lora_r=8" in md and "**chosen**" in md


class FixedAnswerer:
    """The base's answers, fixed (the tiny model's random greedy text rarely ends a sentence)."""

    def answer(self, requests):
        return [{"cache_key": f"{i:040d}", "response": f"Here is a short answer number {i}.", "finish_reason": "stop"}
                for i, _ in enumerate(requests)]


def test_a_real_sweep_on_the_tiny_model(tiny_student, tmp_path, monkeypatch):
    """train.lora.run in-process with the grid's flags, the adapter scored with real generation and NLL, and prose
    perplexity through lm-eval on the sweep's own documents."""
    monkeypatch.setenv("MEND_HOME", str(tmp_path))  # lm-eval's documents are written under data/ there
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    world(10, 2)
    for key, value in {"CURATE_TRAIN_OUT": tmp_path / "train" / "train.jsonl", "CURATE_SWEEP_DIR": tmp_path / "sw",
                       "CURATE_SWEEP_VAL_FRACTION": 0.5, "CURATE_SWEEP_VAL_MAX": 3, "CURATE_SWEEP_ANCHORS": 2,
                       "TRAIN_ADAPTERS_DIR": tmp_path / "adapters", "TRAIN_MAX_STEPS": 1, "TRAIN_BATCH_SIZE_TRAIN": 2,
                       "TRAIN_VAL_FRACTION": 0, "TRAIN_MAX_LENGTH": 64,
                       "TRAIN_GRADIENT_CHECKPOINTING": "false", "CURATE_SWEEP_PROSE_DOCS": 4}.items():
        monkeypatch.setenv(f"MEND_{key}", str(value))
    export.export(replay_self_share=0.0)
    out = sweep.run_sweep(grid=["lr=1e-3 lora_r=4 replay_self_share=0.5"], answerer=FixedAnswerer())
    (row,) = out["rows"]
    assert row["status"] == "complete" and row["chosen"], row["error"]
    m = row["metrics"]
    assert m["n_val"] == out["validation"]["prompts"] > 0 and m["n_anchors"] == 2
    assert m["anchor_nll"] > 0 and m["base_anchor_nll"] > 0 and m["counts"]["self"] > 0
    assert m["prose_ppl"] > 1 and m["base_prose_ppl"] > 1 and (m["prose_docs"], m["prose_offset"]) == (4, 100)
    written = (tmp_path / "data" / "lm_eval" / "prose-from100.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in written] == sweep.prose_documents()[100:104]
    assert not (tmp_path / "data" / "lm_eval" / "prose.jsonl").exists()  # the gate's file: not written
    with store.connect(read_only=True) as con:
        run = con.execute("""SELECT status, settings->>'lora_r', settings->>'lora_alpha' FROM train_runs
                             WHERE run_id = ?""", [row["run_id"]]).fetchone()
    assert run == ("complete", "4", "8")


def test_the_rule_needs_the_degenerate_share_within_the_gates_tolerance():
    # config 0: the best target, anchored, but 4 more of 24 validation answers degenerate (+16.7 points)
    rows = prose_rows((0.9, 1.0, 100.0), (0.5, 1.0, 100.0))
    rows[0]["metrics"] |= {"degenerate": 8 / 24, "base_degenerate": 4 / 24}
    rows[1]["metrics"] |= {"degenerate": 5 / 24, "base_degenerate": 4 / 24}
    assert sweep.degenerate_rise(rows[0]["metrics"]) == pytest.approx(100 * 4 / 24)
    assert sweep.choose(rows, 0.1, 0.1, 5.0) == 1
    assert sweep.choose(rows, 0.1, 0.1, 20.0) == 0
    assert sweep.degenerate_rise({"target_pass": 0.5}) == 0.0  # scored before the figure existed
    # none within all three (the demo's sweep of DPO with and without an SFT term): the smallest overshoot, each rise
    # over its tolerance: config 1 is anchored best but its degenerate share rose 25 points (5x the tolerance)
    rows = prose_rows((0.44, 1.094, 97.0), (0.48, 1.017, 98.0), (0.52, 1.075, 97.3))
    for r, (d, b) in zip(rows, [(4 / 24, 2 / 24), (8 / 24, 2 / 24), (6 / 24, 2 / 24)]):
        r["metrics"] |= {"degenerate": d, "base_degenerate": b}
    assert sweep.choose(rows, 0.1, 0.1, 5.0) == 0


def test_the_degenerate_rise_counts_the_validation_traffic_as_the_gate_counts_the_holdout():
    # config 0: flat on the target prompts (as on the nightly's data of 2026-12-07), +9 points on the traffic
    rows = prose_rows((0.9, 1.0, 100.0), (0.5, 1.0, 100.0))
    rows[0]["metrics"] |= {"degenerate": 0.30, "base_degenerate": 0.34, "traffic_degenerate": 0.35,
                           "base_traffic_degenerate": 0.26}
    rows[1]["metrics"] |= {"degenerate": 0.30, "base_degenerate": 0.34, "traffic_degenerate": 0.27,
                           "base_traffic_degenerate": 0.26}
    assert sweep.degenerate_rise(rows[0]["metrics"]) == pytest.approx(9.0)
    assert sweep.choose(rows, 0.1, 0.1, 2.0) == 1


def test_validation_traffic_is_every_seed_trace_of_the_validation_groups_and_no_other():
    from curate.loop.validation import traffic_prompts
    world()
    with store.connect(read_only=True) as con:
        groups = sweep.validation_groups(con, 0.5)
        got = traffic_prompts(con, groups, 100)
        assert traffic_prompts(con, groups, 3) == got[:3] and traffic_prompts(con, groups, 0) == []
        group_of = dict(con.execute("SELECT trace_id, group_key FROM traces").fetchall())
        split_of = dict(con.execute("SELECT trace_id, split FROM traces").fetchall())
    assert sorted(group_of[p["id"]] for p in got) == sorted(groups)  # one trace per group in this world
    assert {split_of[p["id"]] for p in got} == {"seed"} and got[-1]["messages"][-1]["role"] == "user"


def test_too_few_target_prompts_are_filled_with_single_instruction_prompts_of_validation_requests():
    from curate.loop.validation import single_instruction_prompts
    world()
    checks = ["change_case:english_lowercase", "punctuation:no_comma"]
    with store.connect(read_only=True) as con:
        groups = sweep.validation_groups(con, 0.5)
        seen = {json.dumps(p["messages"], sort_keys=True) for p in sweep.target_prompts(con, groups, 0)}
        filled = single_instruction_prompts(con, groups, checks, 20, set(seen))
        again = single_instruction_prompts(con, groups, checks, 20, set(seen))
    assert filled == again and 0 < len(filled) <= 20  # deterministic, bounded by what is needed
    assert {p["metadata"]["base_id"] for p in filled} <= groups  # validation requests only, never the holdout's
    assert all(p["targets"] == p["metadata"]["instruction_id_list"] and len(p["targets"]) == 1 for p in filled)
    assert {p["targets"][0] for p in filled} == set(checks)  # every trained check, round robin
    assert len({p["prompt"] for p in filled}) == len(filled)
    assert not {json.dumps(p["messages"], sort_keys=True) for p in filled} & seen
    assert all(p["prompt"].endswith("letters. No capital letters are allowed.") or "commas" in p["prompt"]
               for p in filled)


def test_a_config_is_compared_with_the_base_prompt_by_prompt():
    from curate.loop.validation import paired
    base = [False, False, True, True, None, False]
    cand = [True, True, True, False, True, False]
    got = paired(cand, base)
    assert (got["fixed"], got["broken"], got["n_paired"]) == (2, 1, 5)
    assert got["p"] == pytest.approx(1.0)  # 2 vs 1 discordant: no evidence either way
    assert paired([True] * 12, [False] * 12)["p"] < 0.001


def test_validation_traffic_churn_counts_answers_made_and_cured_degenerate():
    from curate.loop.validation import churn
    base = [True, True, False, False, True]
    cand = [False, True, True, True, True]
    assert churn(cand, base) == {"traffic_newly": 2, "traffic_cured": 1}  # the share rose 1 answer; 3 changed side
    assert churn([], base) == {"traffic_newly": 0, "traffic_cured": 0}


def test_a_trained_answer_check_is_a_target_of_every_validation_prompt():
    from curate.loop.validation import with_answer_checks
    md = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    meta, targets = with_answer_checks(md, ["punctuation:no_comma"], {"punctuation:no_comma", "fluent"})
    assert targets == ["punctuation:no_comma", "fluent"] and meta["checks"] == [{"check": "fluent", "args": {}}]
    assert with_answer_checks(meta, ["punctuation:no_comma"], {"fluent"})[0]["checks"] == meta["checks"]  # once
    assert with_answer_checks(md, ["punctuation:no_comma"], {"punctuation:no_comma"}) == (md, ["punctuation:no_comma"])
