"""Settings of the `evals` stage ([tool.mend.evals], MEND_EVALS_<KEY>)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class EvalsSettings:
    # --- suites, runner, client, clusters (owned by evals/runner.py, client.py, clusters.py) ---
    suites: tuple = ("instruction_following",)  # suites the runner, nightly and gate use
    # --- gate, registry, nightly (owned by evals/gate.py, registry.py, nightly.py) ---
