"""python -m bench [--only NAME] [--quick] — run the benchmarks and rewrite docs/benchmarks.md.

A benchmark is a module `bench/bench_<name>.py` that defines

    def run(quick: bool) -> list[dict]:
        ...

returning one dict per measured figure, with the keys

    benchmark  str           the benchmark's name (usually <name>; one module may report several)
    metric     str           what was measured, with its unit (e.g. "ingest traces/s, scrubbing on")
    mend       float | str   mend's figure
    baseline   float | str   the straightforward baseline's figure, measured in the same run ("" if none)
    ratio      float | str   mend / baseline (or "" if no baseline)
    target     str           the target, in words (e.g. ">= 20x baseline, >= 100k/s")
    notes      str           anything a reader needs to judge the number (sizes, slices, caveats)

`quick=True` must finish in well under a minute (small inputs) so that the framework itself can
be exercised; the figures reported in docs/benchmarks.md come from full runs.

`python -m bench` discovers the modules, runs each (or only `--only NAME`, matched against the
module's <name>), prints a rich table, and rewrites docs/benchmarks.md: rows of the benchmarks run
now replace their previous rows, rows of the others are kept, so each benchmark can be run alone.
Every row carries the date and the machine (CPU cores, GPU if any) it was measured on.
Heavy imports belong inside `run`, so discovery stays cheap.
"""

import contextlib
import os
import time


@contextlib.contextmanager
def scratch_store(path):
    """MEND_DB pointed at `path` for the block, then restored: other benchmarks in the process keep theirs."""
    saved = os.environ.get("MEND_DB")
    os.environ["MEND_DB"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MEND_DB", None)
        else:
            os.environ["MEND_DB"] = saved


def timed(fn):
    """(fn(), its wall-clock seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
