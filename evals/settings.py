"""Settings of the `evals` stage ([tool.mend.evals], MEND_EVALS_<KEY>)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class EvalsSettings:
    # --- suites, runner, client, clusters (owned by evals/runner.py, client.py, clusters.py) ---
    suites: tuple = ("instruction_following",)  # suites the runner, nightly and gate use
    # --- gate, registry, nightly (owned by evals/gate.py, registry.py, nightly.py) ---
    gate_alpha: float = 0.05  # two-sided exact McNemar significance level for the target improvement
    gate_min_improvement: float = 5.0  # target clusters must gain at least this many pass-rate points (0-100)
    gate_target_policy: str = "pooled"  # pooled (one test over all target-cluster checks) | all | any cluster
    gate_max_regression: float = 2.0  # no suite may lose more than this many points of trace-level pass rate
    gate_bootstrap: int = 2000  # paired bootstrap resamples for the 95% intervals
    gate_lm_eval: bool = True  # run the lm-eval word-perplexity guard (local prose, no download)
    gate_lm_eval_docs: int = 40  # prose documents in the local lm-eval task (~1 min on 2 CPU cores)
    gate_ppl_tolerance: float = 0.10  # candidate word perplexity may exceed the baseline's by at most 10%
    gate_drift_samples: int = 32  # passing seed traces whose baseline responses the drift guard scores
    gate_drift_tolerance: float = 0.25  # max increase of mean per-token NLL (nats) on those responses
    nightly_review: str = "verified"  # verified (accept all that passed filters) | sample (review a sample first)
    nightly_review_sample: int = 20  # examples shown when nightly_review = "sample"
    nightly_promote: bool = True  # promote automatically when the gate says PROMOTE
