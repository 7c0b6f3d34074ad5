"""Settings of the `evals` stage ([tool.mend.evals], MEND_EVALS_<KEY>)."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EvalsSettings:
    # --- suites, runner, client, clusters (owned by evals/runner.py, client.py, clusters.py) ---
    suites: tuple = ("instruction_following",)  # suites the runner, nightly and gate use
    suites_dir: str = "evals/suites"  # a project's own suite YAML files (searched before the packaged ones)
    split: str = "all"  # traces `evals run` scores by default: seed | holdout | all
    check_modules: tuple = ()  # importable modules (e.g. "myteam.checks") that @register more checks
    gen_batch_size: int = 16  # regeneration: prompts per generate() batch
    # --- the student's answers (owned by evals/student.py): in-process, or a served student ---
    student_url: str = ""  # OpenAI-compatible endpoint serving the student (vLLM, llama.cpp); empty: in-process
    student_model: str = ""  # the name the server serves the base model under; empty: the model ref
    student_adapters: dict = field(default_factory=dict)  # adapter folder -> served name; else the folder's name
    student_api_key_env: str = ""  # env var holding the served student's key (never the key); empty: OPENAI_API_KEY
    score_workers: int = 0  # processes scoring deterministic checks; 0: up to 4 (CPU count) from 1,000 traces
    engine: str = "local"  # local | ray: score checks and embed texts on Ray Data (pip install 'mend[ray]')
    # when one machine is not enough; the same results as local (traces/ray_engine.py, docs/benchmarks.md)
    ray_address: str = ""  # engine = "ray": a running cluster ("head:6379", "ray://head:10001", "auto"); empty:
    # RAY_ADDRESS, else the cluster `ray start` started on this machine, else a new local one (README, Ray)
    judge_base_url: str = ""  # OpenAI-compatible endpoint of the judge; empty: the judge suite is skipped
    judge_model: str = ""  # model name sent to the judge endpoint
    judge_api_key_env: str = "OPENAI_API_KEY"  # env var holding the judge's key (the key itself is never stored)
    allow_remote: bool = False  # allow sending trace content to a non-loopback endpoint (judge, teacher, student)
    client_concurrency: int = 8  # concurrent requests per client
    client_max_retries: int = 3  # the openai client's own retries (honours Retry-After on 429/5xx)
    client_timeout_s: float = 120.0  # per-request timeout (seconds)
    judge_rpm: int = 0  # judge requests started per minute at most, as the provider's plan allows (0: unlimited)
    judge_tpm: int = 0  # judge tokens per minute at most (prompt estimate + max_tokens, then usage; 0: unlimited)
    prices: dict = field(default_factory=dict)  # model -> [USD per 1M input tokens, USD per 1M output tokens]
    cluster_split_above: int = 120  # failure groups (one check) larger than this are split by embeddings
    cluster_target_size: int = 60  # wanted members per embedding sub-cluster (k = ceil(n / this))
    # One cluster per failing check unless it is large: small split clusters hold too few holdout failures for the
    # gate's per-cluster test, and each costs a synthesis turn (docs/benchmarks.md, "cluster_split_above 12 vs 120")
    cluster_max_k: int = 8  # at most this many sub-clusters per failing check
    cluster_terms: int = 3  # distinctive terms in a cluster's label
    cluster_representatives: int = 3  # traces shown and stored per cluster
    # --- gate, registry (owned by evals/gate.py, registry.py) ---
    gate_alpha: float = 0.05  # two-sided exact McNemar significance level for the target improvement
    gate_min_improvement: float = 5.0  # target clusters must gain at least this many pass-rate points (0-100)
    gate_target_policy: str = "pooled"  # pooled (one test over all target-cluster checks) | all | any cluster
    gate_max_regression: float = 2.0  # no suite may lose more than this many points of trace-level pass rate
    gate_bootstrap: int = 2000  # paired bootstrap resamples for the 95% intervals
    gate_max_traces: int = 0  # holdout traces per suite to evaluate (0 = all); target-cluster traces come first, so a
    # subset is mostly the base's failures and hides what an adapter breaks (the demo's 96 turned a REJECT into PROMOTE)
    gate_lm_eval: bool = True  # run the lm-eval word-perplexity guard (local prose, no download)
    gate_lm_eval_docs: int = 40  # prose documents in the local lm-eval task (~1 min on 2 CPU cores)
    gate_ppl_tolerance: float = 0.10  # candidate word perplexity may exceed the baseline's by at most 10%
    gate_drift_samples: int = 32  # passing seed traces whose baseline responses the drift guard scores
    gate_drift_tolerance: float = 0.25  # max increase of mean per-token NLL (nats) on those responses
    gate_degeneration: bool = True  # guard: share of holdout answers the quality filter calls degenerate
    gate_degeneration_tolerance: float = 5.0  # the candidate's share may exceed the baseline's by this many points
