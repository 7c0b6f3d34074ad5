"""The gate's guards: local prose for the lm-eval task, the lm-eval perplexity guard and the drift guard
(tiny model, nothing downloaded)."""
import json
import sys

import pytest
from builders.gate import add_run, add_traces

from evals import guards
from evals.gate import Side
from traces import store

sys.path.insert(0, str(guards.TASKS_DIR))
import prose  # noqa: E402  (the lm-eval task's data module)


def test_prose_is_local_deterministic_english():
    docs = prose.paragraphs()
    assert len(docs) >= 40 and docs == prose.paragraphs()
    assert all(len(d.split()) >= prose.MIN_WORDS and ">>>" not in d for d in docs)


def test_word_perplexity_through_lm_eval_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # a fresh LoRA adapter (B = 0) leaves the model's outputs unchanged: same perplexity through peft
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    result = guards.perplexity_guard(str(tiny_model_dir), None, str(tiny_model_dir), str(tmp_path / "adapter"), 3, 0.1)
    lines = (tmp_path / "data" / "lm_eval" / "prose.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["text"] == prose.paragraphs()[0]
    assert result["baseline"] > 1.0   # an untrained tiny model: very high, but finite
    assert result["ok"] and result["ratio"] == pytest.approx(1.0)


def test_drift_guard_scores_passing_seed_responses_under_both_models(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    with store.connect() as con:
        seeds = add_traces(con, 6, split="seed", prefix="s")
        add_run(con, "logged", {t: [("A", i < 4)] for i, t in enumerate(seeds)}, model_ref=None, split="all",
                mode="logged")
    side = Side(str(tiny_model_dir), None, None)
    sample = guards.drift_sample(guards.seed_runs_of(side.ref, None, str(tiny_model_dir)), 10)
    assert len(sample) == 4                          # only traces that passed every check
    assert sample[0][0][0]["role"] == "user" and sample[0][1].startswith("out s")
    result = guards.drift_guard(side, side, 10, 0.25)
    assert result["ok"] and result["candidate"] == pytest.approx(result["baseline"])
    assert not guards.drift_guard(side, side, 10, -0.01)["ok"]


def test_drift_guard_needs_baseline_responses(tiny_model_dir):
    side = Side(str(tiny_model_dir), None, None)
    with pytest.raises(guards.GuardError, match="no passing seed traces"):
        guards.drift_guard(side, side, 5, 0.25)


FLUENT = "The library opens at nine on weekdays, and the reading room stays quiet until the afternoon classes end."
LOOP = "***\n\n" * 30  # what the first default nightly's adapter wrote to paragraph prompts


def _answers(con, run_id, texts):
    for t, text in texts.items():
        con.execute("UPDATE results SET output = ? WHERE run_id = ? AND trace_id = ?", [text, run_id, t])


def test_degeneration_guard_compares_both_sides_answers_to_the_same_holdout_traces():
    with store.connect() as con:
        holdout = add_traces(con, 10)
        seeds = add_traces(con, 2, split="seed", prefix="s")
        add_run(con, "base", {t: [("A", True)] for t in holdout + seeds}, split="all", mode="logged")
        add_run(con, "cand", {t: [("A", True)] for t in holdout[:8]}, adapter_hash="abc")
        _answers(con, "base", {t: FLUENT for t in holdout[1:]} | {holdout[0]: LOOP} | {s: LOOP for s in seeds})
        _answers(con, "cand", {t: LOOP if i in (1, 2, 3) else FLUENT for i, t in enumerate(holdout[:8])})
    result = guards.degeneration_guard(["base"], ["cand"], 5.0)
    # the 8 traces both answered (seed traces and unanswered ones left out): 1 -> 3 degenerate
    assert (result["n"], result["baseline"], result["candidate"]) == (8, 12.5, 37.5)
    assert (result["newly_degenerate"], result["no_longer"]) == (3, 1)
    assert not result["ok"] and "12.5% -> 37.5% of 8" in result["summary"]
    assert guards.degeneration_guard(["base"], ["cand"], 25.0)["ok"]
    assert guards.degeneration_guard(["base"], ["base"], 0.0)["ok"]


def test_degeneration_guard_needs_common_traces():
    with store.connect() as con:
        add_run(con, "base", {t: [("A", True)] for t in add_traces(con, 2)})
    with pytest.raises(guards.GuardError, match="no holdout trace"):
        guards.degeneration_guard(["base"], ["nothing"], 5.0)
