"""mend's evals: checks, suites, the OpenAI-compatible client, runner, clusters, gate, registry, reports."""
