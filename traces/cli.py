"""python -m traces COMMAND — the trace store: ingest, stats, config."""
from traces.cli_dispatch import dispatch

COMMANDS = {
    "ingest": ("traces.ingest:main", "ingest log files (OpenAI chat JSONL, messages JSONL, OTel JSON, Parquet)"),
    "stats": ("traces.stats:main", "counts by source, model, split and day; quarantined lines"),
    "config": ("traces.config_cmd:main", "print every stage's resolved settings and where each came from"),
    "setup-nltk": ("traces.nltk_offline:main", "build the offline NLTK sentence tokenizer data (run by make setup)"),
}


def main(argv=None):
    return dispatch("traces", __doc__, COMMANDS, argv)
