"""The base request of a trace, computed once (by clustering) and stored.

`trace_base_requests.base_request`: the trace's prompt with its IFEval instruction sentences cut out
(evals.ifeval.base_request), or the base text its metadata carries; NULL when the trace names no instruction or
a description is not found in the prompt. Clustering strips every failing trace anyway (its embeddings and
labels describe the request, not the instruction boilerplate) and stores the result here; synthesis reuses it
instead of stripping again per cluster, and computes it only for traces without a row (never clustered, or
clustered before this migration).
A table of its own, keyed by trace (the value depends on the trace alone, not on a cluster or a run), so that
cluster_members keeps its shape.
"""


def apply(con):
    con.execute("""CREATE TABLE trace_base_requests (trace_id VARCHAR PRIMARY KEY, base_request VARCHAR)""")
