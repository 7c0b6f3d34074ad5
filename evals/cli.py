"""python -m evals COMMAND — evals, clusters, reports, the gate, and the registry."""
from traces.cli_dispatch import dispatch

COMMANDS = {
    "run": ("evals.runner:main", "score logged traffic, or regenerate with --model/--adapter, on a suite"),
    "clusters": ("evals.clusters:main", "group seed failures into labelled clusters; assign holdout failures"),
    "report": ("evals.reports:main", "pass rates per suite and check with Wilson 95% intervals"),
    "compare": ("evals.reports:compare_main", "paired deltas and McNemar p-values between two runs"),
    "gate": ("evals.gate_cli:main", "PROMOTE or REJECT a candidate against a baseline on the holdout split"),
    "registry": ("evals.registry:main", "promote | rollback | list the production model"),
    "sample-traffic": ("evals.traffic:main", "write an OpenAI chat log of the student answering N prompts"),
    "setup-nltk": ("evals.nltk_offline:main", "build the offline NLTK sentence tokenizer data (run by make setup)"),
}


def main(argv=None):
    return dispatch("evals", __doc__, COMMANDS, argv)
