"""The IFEval gain bench computes the base student's result once per key (prompts, caps, weights, versions)."""
from bench import bench_evals


def test_base_result_is_reused_only_for_the_same_key(tmp_path, monkeypatch):
    calls = []

    def fake_run(limit, max_gen_toks, batch_size, adapter=None, save=True):
        calls.append((limit, max_gen_toks))
        return {"metrics": {"prompt_level_strict_acc": 0.25}, "minutes": 3.0, "parity": True}

    monkeypatch.setattr(bench_evals, "IFEVAL_BASE_CACHE", tmp_path / "base.json")
    monkeypatch.setattr(bench_evals, "run_lm_eval_ifeval", fake_run)
    monkeypatch.setattr(bench_evals, "base_key", lambda *a: {"args": list(a), "weights": "w1"})

    first = bench_evals.cached_base(120, 512, 8)
    again = bench_evals.cached_base(120, 512, 8)
    assert calls == [(120, 512)]
    assert first["minutes"] == 3.0 and not first.get("cached")
    assert again["cached"] and again["minutes"] == 0.0
    assert again["metrics"] == first["metrics"]

    bench_evals.cached_base(60, 512, 8)  # another key: computed, not read
    monkeypatch.setattr(bench_evals, "base_key", lambda *a: {"args": list(a), "weights": "w2"})
    bench_evals.cached_base(60, 512, 8)  # new weights: computed again
    assert calls == [(120, 512), (60, 512), (60, 512)]


def test_record_rows_replaces_only_the_rows_with_the_same_module_benchmark_and_metric(tmp_path):
    from bench.__main__ import read_existing, record_rows
    out = tmp_path / "benchmarks.md"
    row = {"benchmark": "b", "baseline": "", "ratio": "", "target": "", "notes": "n"}
    record_rows("evals", [{**row, "metric": "traces/s", "mend": 510}], out)
    record_rows("synth", [{**row, "metric": "avg %", "mend": 1}], out)
    record_rows("evals", [{**row, "metric": "avg %", "mend": 20.4}], out)
    record_rows("evals", [{**row, "metric": "avg %", "mend": 25.0}], out)
    record_rows("evals", [{**row, "benchmark": "other", "metric": "avg %", "mend": 7}], out)  # same metric, kept
    got = sorted((r["_module"], r["benchmark"], r["metric"], r["mend"]) for r in read_existing(out))
    assert got == [("evals", "b", "avg %", "25"), ("evals", "b", "traces/s", "510"), ("evals", "other", "avg %", "7"),
                   ("synth", "b", "avg %", "1")]


def test_gain_row_states_both_degenerate_shares_and_whether_the_adapter_kept_within_the_base(tmp_path, monkeypatch):
    looping = "I love the sea. " * 40
    samples = lambda texts: [{"doc": {"prompt": "Write about the sea."}, "response": t} for t in texts]  # noqa: E731
    assert bench_evals.degenerate_share(samples([looping, "The sea is wide and calm tonight."])) == 50.0
    metrics = {"prompt_level_strict_acc": 0.2, "inst_level_strict_acc": 0.3}
    saved = {"nightly_id": "n1", "limit": 2, "max_gen_toks": 512, "base": metrics, "adapter_metrics": metrics,
             "minutes": 1, "parity": True, "contaminated_training_prompts": 0,
             "degenerate": {"base": 50.0, "adapter": 0.0}}
    monkeypatch.setattr(bench_evals, "IFEVAL_GAIN", tmp_path / "gain.json")
    (tmp_path / "gain.json").write_text(__import__("json").dumps(saved))
    assert "degenerate answers 50.0% -> 0.0% (target: not above the base's, PASS)" in bench_evals.ifeval_gain_row()["notes"]
    saved["degenerate"] = {"base": 0.0, "adapter": 50.0}
    (tmp_path / "gain.json").write_text(__import__("json").dumps(saved))
    assert "MISS" in bench_evals.ifeval_gain_row()["notes"].split("degenerate answers")[1]
