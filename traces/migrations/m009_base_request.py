"""The base request of a clustered trace, stored where clustering computes it.

`cluster_members.base_request`: the member's prompt with its IFEval instruction sentences cut out
(evals.ifeval.base_request), or the base text its metadata carries. Clustering strips every failing trace
anyway (its embeddings and labels describe the request, not the instruction boilerplate); synthesis reuses the
stored value instead of stripping again per cluster. NULL where the trace names no instruction, where a
description could not be found in the prompt, and on rows clustered before this migration (synthesis
computes those itself).
"""


def apply(con):
    con.execute("ALTER TABLE cluster_members ADD COLUMN base_request VARCHAR")
