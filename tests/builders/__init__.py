"""Rows and stubs the tests build directly in DuckDB, shared by test modules (no test module imports another).

trace_rows: the one trace inserter (`trace_row` + `insert_traces`); gate: eval runs, results, clusters and the gate
scenario; review: clusters, examples and reviews; synth: a seed/holdout store with one cluster and the teacher
stub's settings; examples: candidate rows for dedup/filters; nightly_stubs: stub stages for the nightly.
"""
