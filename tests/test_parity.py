"""Parity with the reference: mend's instruction_following checks vs lm-eval's own IFEval scoring.

The four IFEval metrics (prompt/instruction level x strict/loose) computed by lm-eval's
`lm_eval.tasks.ifeval.utils.process_results` + `agg_inst_level_acc` must equal mend's, exactly,
on the same responses. Reads ../shared/benchmarks/ifeval/input_data.jsonl (skipped when absent).
"""
import json
from pathlib import Path

import pytest
from builders.trace_rows import insert_traces, trace_row
from builders.suites import instructions_only  # noqa: F401  (autouse: parity is about IFEval's instructions)

DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "ifeval" / "input_data.jsonl"
pytestmark = pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} not present")


def docs(step=1, limit=None):
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return rows[::step][:limit]


def lm_eval_metrics(pairs):
    """pairs: (doc, response) -> lm-eval's four metrics, computed by lm-eval's own functions."""
    from evals import ifeval
    ifeval.modules()  # offline NLTK + seeded langdetect first, as mend does
    from lm_eval.tasks.ifeval import utils
    per_doc = [utils.process_results(doc, [response]) for doc, response in pairs]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"prompt_level_strict_acc": mean([r["prompt_level_strict_acc"] for r in per_doc]),
            "inst_level_strict_acc": utils.agg_inst_level_acc([r["inst_level_strict_acc"] for r in per_doc]),
            "prompt_level_loose_acc": mean([r["prompt_level_loose_acc"] for r in per_doc]),
            "inst_level_loose_acc": utils.agg_inst_level_acc([r["inst_level_loose_acc"] for r in per_doc])}


def mend_metrics_via_runner(pairs):
    """Store the responses as traces, run the instruction_following suite, read the four metrics back."""
    from evals import runner
    from traces import store
    insert_traces([trace_row(i, doc["prompt"], response, {"instruction_id_list": doc["instruction_id_list"],
                                                          "kwargs": doc["kwargs"]})
                   for i, (doc, response) in enumerate(pairs)])
    run_id = runner.run_suite("instruction_following", "all", progress=False)
    with store.connect() as con:
        (ps, pl_, is_, il), = con.execute("""
            WITH t AS (SELECT trace_id, bool_and(passed) AS s, bool_and(passed_loose) AS l FROM results
                       WHERE run_id = ? GROUP BY trace_id)
            SELECT (SELECT avg(s::INT) FROM t), (SELECT avg(l::INT) FROM t),
                   (SELECT avg(passed::INT) FROM results WHERE run_id = ?),
                   (SELECT avg(passed_loose::INT) FROM results WHERE run_id = ?)""", [run_id] * 3).fetchall()
    return {"prompt_level_strict_acc": ps, "inst_level_strict_acc": is_, "prompt_level_loose_acc": pl_,
            "inst_level_loose_acc": il}


def assert_same(ours, ref):
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), (key, ours, ref)


def synthetic_responses(doc):
    """Responses that exercise strict vs loose: a preamble line, markdown stars, case changes, no commas."""
    p = doc["prompt"]
    return [p, "Sure! Here you go:\n" + p.lower().replace(",", "") + "\n*Hope this helps*", p.upper(),
            "**" + p.replace(",", "") + "**"]


def test_parity_on_synthetic_responses_to_a_slice_of_ifeval():
    pairs = [(doc, r) for doc in docs(step=6) for r in synthetic_responses(doc)]  # 91 prompts x 4
    ref = lm_eval_metrics(pairs)
    assert_same(mend_metrics_via_runner(pairs), ref)
    assert 0 < ref["prompt_level_strict_acc"] < ref["prompt_level_loose_acc"] < 1  # the slice discriminates


@pytest.mark.integration
def test_parity_on_student_responses():
    """8 IFEval prompts answered by the real SmolLM2-135M-Instruct (chat template, greedy)."""
    from train.generate import generate
    from train.models import load
    slice_ = docs(limit=8)
    model, tokenizer = load("smollm2-135m-instruct")
    gens = generate(model, tokenizer, [[{"role": "user", "content": d["prompt"]}] for d in slice_],
                    max_new_tokens=48, batch_size=8, progress=False)
    pairs = [(d, g.text) for d, g in zip(slice_, gens)]
    assert_same(mend_metrics_via_runner(pairs), lm_eval_metrics(pairs))
