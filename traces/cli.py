"""python -m traces COMMAND — the trace store: ingest, stats, quarantine, config."""
from traces.cli_dispatch import dispatch

COMMANDS = {
    "ingest": ("traces.ingest:main", "ingest log files (OpenAI chat JSONL, messages JSONL, OTel JSON, Parquet)"),
    "stats": ("traces.stats:main", "counts by source, model, split and day; quarantined lines by reason and file"),
    "quarantine": ("traces.quarantine_cmd:main", "list the quarantined lines of one file (line, reason, raw)"),
    "config": ("traces.config_cmd:main", "print every stage's resolved settings and where each came from"),
}


def main(argv=None):
    return dispatch("traces", __doc__, COMMANDS, argv)
