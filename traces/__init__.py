"""mend's trace store: settings, the DuckDB file and its migrations, ingest, the holdout split."""
