"""The gate's two guards against forgetting (called by `python -m evals gate`; also `python -m evals.guards`).

    python -m evals.guards perplexity --model smollm2-135m-instruct [--adapter adapters/RUN]

(a) perplexity: word perplexity of a local lm-eval task (`evals/lm_eval_tasks/mend_prose.yaml`: English prose
    from Python's own docstrings and license, written under data/lm_eval/ at run time; nothing downloaded),
    through `lm_eval.simple_evaluate` with the HF backend and the peft adapter, on the first `gate_lm_eval_docs`
    documents. The candidate may exceed the baseline's perplexity by at most `gate_ppl_tolerance` (relative).
    `curate sweep` measures the same figure on later documents (`offset`), never these.
(b) drift: mean per-token negative log-likelihood, under each model, of the baseline's own responses to passing
    seed traces (a fixed sample of `gate_drift_samples`). The candidate may exceed the baseline's by at most
    `gate_drift_tolerance` nats/token: a large rise means the adapter moved the model away from answers that
    were already right.
(c) degeneration: the share of holdout answers the quality filter (evals.quality.fluency: repeated lines, letter
    soup, runs of one character, no words...) calls degenerate, each side's own answers to the same holdout traces
    (the gate's runs, so nothing is generated twice). The candidate's share may exceed the baseline's by at most
    `gate_degeneration_tolerance` points. Perplexity and drift score given text and cannot see a model that
    generates "***" forty times (the first default nightly's adapter did, on paragraph prompts).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from traces import store
from traces.settings import load, resolve_path

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"


class GuardError(RuntimeError):
    pass


def word_perplexity(model_ref: str, adapter: str | None, n_docs: int = 40, batch_size: int = 8,
                    offset: int = 0) -> float:
    """lm-eval word perplexity of (model, adapter) on the local prose task: documents offset .. offset + n_docs - 1
    (the gate: 0 .. gate_lm_eval_docs - 1; `curate sweep` scores later ones, never the gate's)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from train.models import resolve
    args = {"pretrained": str(resolve(model_ref)), "dtype": "float32", "batch_size": batch_size, "device": _device()}
    if adapter:
        args["peft"] = str(resolve_path(adapter))
    try:
        out = lm_eval.simple_evaluate(model=_quiet_hflm()(**args), tasks=["mend_prose"],
                                      task_manager=TaskManager(include_path=str(TASKS_DIR),
                                                               include_defaults=False,  # skip indexing ~10k YAMLs
                                                               metadata={"n_docs": n_docs, "offset": offset}),
                                      log_samples=False, bootstrap_iters=0)
    except Exception as e:  # lm-eval raises many types; the gate reports any of them as "could not run"
        raise GuardError(f"lm-eval perplexity on {model_ref} + {adapter or 'no adapter'}: "
                         f"{type(e).__name__}: {e}") from e
    return float(out["results"]["mend_prose"]["word_perplexity,none"])


def _quiet_hflm():
    """lm-eval's HF model whose request bars follow TQDM_DISABLE (set by traces.quiet off a terminal): HFLM passes
    `disable=False` to tqdm itself, which the variable cannot override, so a cron log got two bars per guard run."""
    import os

    from lm_eval.models.huggingface import HFLM

    def off(flag: bool) -> bool:
        return flag or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")

    class QuietHFLM(HFLM):
        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=off(disable_tqdm))

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            return super()._loglikelihood_tokens(requests, disable_tqdm=off(disable_tqdm), **kwargs)

    return QuietHFLM


def _device() -> str:
    import torch
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def perplexity_guard(base_ref, base_adapter, cand_ref, cand_adapter, n_docs: int, tolerance: float) -> dict:
    base = word_perplexity(base_ref, base_adapter, n_docs)
    cand = word_perplexity(cand_ref, cand_adapter, n_docs)
    ratio = cand / base
    ok = ratio <= 1 + tolerance
    return {"ok": ok, "baseline": round(base, 3), "candidate": round(cand, 3), "ratio": round(ratio, 4),
            "summary": f"word perplexity {base:.2f} -> {cand:.2f} ({100 * (ratio - 1):+.1f}%, "
                       f"tolerance +{100 * tolerance:.0f}%)"}


# ---------------------------------------------------------------- drift

def drift_sample(base_runs: dict, n: int) -> list[tuple[list[dict], str]]:
    """(messages, baseline response) of up to n seed traces that passed every check in a baseline run.
    Uses a logged/eval run of the baseline that covers the seed split; its scored `output` is the response."""
    with store.connect(read_only=True) as con:
        rows = con.execute("""
            SELECT t.messages, any_value(r.output) FROM run_results r JOIN eval_runs e USING (run_id)
            JOIN traces t USING (trace_id)
            WHERE t.split = 'seed' AND e.status = 'complete' AND e.split IN ('seed', 'all')
              AND e.run_id IN (SELECT unnest(?::VARCHAR[]))
            GROUP BY t.trace_id, t.messages HAVING bool_and(r.passed) AND any_value(r.output) IS NOT NULL
            ORDER BY hash(t.trace_id) LIMIT ?""", [list(base_runs), n]).fetchall()
    return [(store.json_value(m), out) for m, out in rows]


def seed_runs_of(model_ref: str, a_hash: str | None, base_ref: str) -> list[str]:
    """Complete eval runs that scored the baseline's responses on the seed split (logged runs stand for the
    base model, as in the gate)."""
    with store.connect(read_only=True) as con:
        rows = con.execute("""SELECT run_id FROM eval_runs WHERE status = 'complete' AND split IN ('seed', 'all')
                              AND ((mode = 'generate' AND model_ref = ? AND adapter_hash IS NOT DISTINCT FROM ?)
                                   OR (mode = 'logged' AND ? IS NULL AND ? = ?))""",
                           [model_ref, a_hash, a_hash, model_ref, base_ref]).fetchall()
    return [r[0] for r in rows]


def mean_nll(model_ref: str, adapter: str | None, sample) -> float:
    """Token-weighted mean NLL (nats/token) of the responses given their prompts, under (model, adapter)."""
    from train.generate import sequence_nll
    from train.models import load
    model, tok = load(model_ref, adapter)
    convs, responses = [m for m, _ in sample], [r for _, r in sample]
    nll = sequence_nll(model, tok, convs, responses)
    counts = [max(1, len(tok(r, add_special_tokens=False)["input_ids"])) for r in responses]
    # sequence_nll gives the mean per token of each response: weight by tokens for a per-token mean
    return float(sum(x * c for x, c in zip(nll, counts)) / sum(counts))


def drift_guard(base, cand, n: int, tolerance: float) -> dict:
    """base/cand: gate Sides (ref, adapter, adapter_hash)."""
    runs = seed_runs_of(base.ref, base.adapter_hash, load("train").model)
    sample = drift_sample(runs, n)
    if not sample:
        raise GuardError(f"no passing seed traces with baseline responses for {base.ref} "
                         f"+ {base.adapter or 'no adapter'}: run `python -m evals run` on the seed split first")
    b, c = mean_nll(base.ref, base.adapter, sample), mean_nll(cand.ref, cand.adapter, sample)
    ok = c - b <= tolerance
    return {"ok": ok, "baseline": round(b, 4), "candidate": round(c, 4), "n": len(sample),
            "summary": f"NLL of {len(sample)} passing baseline responses {b:.3f} -> {c:.3f} nats/token "
                       f"({c - b:+.3f}, tolerance +{tolerance})"}


def degenerate_answers(con, run_ids: list[str]) -> dict[str, bool]:
    """trace_id -> whether the run's answer to that holdout trace is degenerate (one verdict per trace)."""
    from evals.quality import degenerate
    rows = con.execute("""SELECT r.trace_id, any_value(r.output), any_value(t.prompt), any_value(t.metadata)
                          FROM run_results r JOIN traces t USING (trace_id)
                          WHERE list_contains(?, r.run_id) AND t.split = 'holdout' GROUP BY r.trace_id""",
                       [run_ids]).fetchall()
    return {tid: degenerate(out, prompt, json.loads(md) if md else {}) for tid, out, prompt, md in rows}


def degeneration_guard(base_runs: list[str], cand_runs: list[str], tolerance: float) -> dict:
    """Degenerate shares of both sides' answers to the holdout traces both answered."""
    with store.connect(read_only=True) as con:
        b, c = degenerate_answers(con, base_runs), degenerate_answers(con, cand_runs)
    common = sorted(b.keys() & c.keys())
    if not common:
        raise GuardError("no holdout trace answered by both sides")
    nb, nc = sum(b[t] for t in common), sum(c[t] for t in common)
    worse, better = sum(c[t] and not b[t] for t in common), sum(b[t] and not c[t] for t in common)
    pb, pc = 100 * nb / len(common), 100 * nc / len(common)
    return {"ok": pc - pb <= tolerance, "baseline": round(pb, 1), "candidate": round(pc, 1), "n": len(common),
            "newly_degenerate": worse, "no_longer": better,
            "summary": f"degenerate holdout answers {pb:.1f}% -> {pc:.1f}% of {len(common)} ({pc - pb:+.1f} pts, "
                       f"{worse} newly degenerate, {better} no longer; tolerance +{tolerance:g})"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evals.guards", description="run one guard by hand")
    ap.add_argument("guard", choices=["perplexity"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--adapter")
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--offset", type=int, default=0, help="first document (0: the gate's documents)")
    args = ap.parse_args(argv)
    print(f"word perplexity: {word_perplexity(args.model, args.adapter, args.docs, offset=args.offset):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
