"""Scoring on Ray Data (`[tool.mend.evals] engine = "ray"`, traces/ray_engine.py).

The traces travel to the cluster as Arrow record batches; each batch is scored by the local engine's own per-chunk
function (evals.runner._score_chunk, handed in so this module does not import the runner), so a Ray run's results
are the local run's by construction, in the same order (tests/test_ray_engine.py compares them).
"""
from __future__ import annotations

BATCH = 500  # traces per Ray task: enough to amortize a task's start, small enough to spread over a cluster

# the result columns as Arrow types: every batch returns the same schema, even one whose details are all null
TYPES = {"trace_id": "string", "check_idx": "int32", "check_id": "string", "check_args": "string",
         "passed": "bool", "passed_loose": "bool", "score": "float64", "reason": "string", "output": "string",
         "details": "string"}


def score_on_ray(score_chunk, suite, traces, settings) -> dict[str, list]:
    """score_chunk(suite, traces) computed batch by batch on Ray: the same columns (name -> list), the same rows.
    traces: a list of trace dicts or a pyarrow Table of them."""
    import pyarrow as pa

    from traces.ray_engine import ray_data, where_data_runs
    ray_data(settings.ray_address)  # connected here, before any data is built
    table = traces if isinstance(traces, pa.Table) else _table(traces)
    if table.num_rows == 0:
        return {k: [] for k in TYPES}
    out = where_data_runs(_score_table, score_chunk, suite, table, tuple(settings.check_modules), BATCH)
    return {k: out.column(k).to_pylist() for k in TYPES}


def _score_table(score_chunk, suite, table, check_modules, batch):
    """Where Ray Data runs (traces.ray_engine.where_data_runs): the table's batches scored on the cluster, in order.
    `batch` comes from the caller's process: this may run in a worker, whose module has its own BATCH."""
    import pyarrow as pa
    import ray

    from traces.ray_engine import ray_data
    blocks = [table.slice(i, batch) for i in range(0, table.num_rows, batch)]  # one block, one task, one CPU
    ds = ray_data().from_arrow(blocks).map_batches(
        _score_batch, batch_size=batch, batch_format="pyarrow", zero_copy_batch=True,
        fn_args=(score_chunk, suite, check_modules))
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _table(traces: list[dict]):
    """Every key of any trace as a column (pyarrow's from_pylist keeps only the first row's keys)."""
    import pyarrow as pa
    keys = list(dict.fromkeys(k for t in traces for k in t))
    return pa.table({k: [t.get(k) for t in traces] for k in keys})


def _score_batch(batch, score_chunk, suite, check_modules):
    """On a Ray worker: a team's own check modules registered there too, then the local engine on this batch."""
    import pyarrow as pa

    from evals import checks
    checks.load_check_modules(check_modules)
    cols = score_chunk(suite, batch.to_pylist())
    return pa.table({k: pa.array(cols[k], type=t) for k, t in TYPES.items()})
