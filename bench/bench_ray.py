"""python -m bench --only ray — the Ray engine vs the local engine on the same scoring job, on this machine.

Both score the same synthetic traces (bench_evals' IFEval prompts + instructions on prose answers) with the packaged
instruction_following suite through `evals.runner.score`: local as `evals run` does by default (forked workers, one per
core), Ray on a local cluster of the same cores (`ray.init(num_cpus=cores)`, its start timed apart). The row is the
overhead ratio (Ray's seconds / local's) and whether the result frames are equal, row for row. `make bench` scores
5,000 traces (minutes); the issue's 1M is `python -m bench.bench_ray --n 1000000 --record` (about 15 minutes on 2
cores: 310 s local, 559 s Ray on 2026-12-07). Both engines run one after the other in one process: a ratio is only as
steady as the machine's load over the run (its load average is in the notes).
"""
from __future__ import annotations

import os
import types

from bench import timed


def _settings(engine: str):
    from traces import settings
    return types.SimpleNamespace(**{**settings.as_dict(settings.load("evals")), "engine": engine})


def measure(n: int) -> dict:
    import ray

    from bench.bench_evals import _traffic
    from evals import checks, runner, suites
    traces = _traffic(n)
    suite = suites.load("instruction_following")
    cores = len(os.sched_getaffinity(0))
    checks.ifeval_check("punctuation:no_comma", "warm up", {}, "")  # lm-eval's import, outside both timings
    loads = [os.getloadavg()[0]]  # the machine is shared: its load at each phase says how steady the ratio is
    local, local_s = timed(lambda: runner.score(suite, traces, workers=cores, settings=_settings("local")))
    _, start_s = timed(lambda: ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False))
    try:
        loads.append(os.getloadavg()[0])
        on_ray, ray_s = timed(lambda: runner.score(suite, traces, workers=cores, settings=_settings("ray")))
    finally:
        ray.shutdown()
    loads.append(os.getloadavg()[0])
    return {"n": n, "cores": cores, "loads": loads, "local_s": local_s, "ray_s": ray_s, "start_s": start_s,
            "rows": local.height, "same": local.equals(on_ray, null_equal=True)}


def run(quick: bool, n: int | None = None) -> list[dict]:
    m = measure(n or (1_000 if quick else 5_000))
    return [{"benchmark": "Ray engine vs local (evals scoring)", "metric": "seconds, Ray / local",
             "mend": round(m["ray_s"], 1), "baseline": round(m["local_s"], 1),
             "ratio": round(m["ray_s"] / m["local_s"], 2), "target": "same results; overhead measured",
             "notes": f"{m['n']:,} traces{_scaled(m['n'], m['cores'])}, "
                      f"{m['rows']:,} result rows, identical: {m['same']}; local: {m['cores']} forked workers; Ray: "
                      f"local cluster of {m['cores']} CPUs, batches of 500, its start ({m['start_s']:.0f} s) not "
                      f"counted; 1-min load average before local, before Ray, after: {', '.join(f'{x:.1f}' for x in m['loads'])} (a shared machine)"}]


def _scaled(n: int, cores: int) -> str:
    return "" if n >= 1_000_000 else f" (the issue's 1M scaled down to minutes on {cores} cores)"


def main(argv=None) -> int:
    """python -m bench.bench_ray [--n N] [--record]: a larger job than `make bench` runs (the issue asks for 1M)."""
    import argparse

    from bench.__main__ import emit
    p = argparse.ArgumentParser(prog="python -m bench.bench_ray")
    p.add_argument("--n", type=int, default=5_000, help="traces to score on each engine")
    p.add_argument("--record", action="store_true", help="write the row into docs/benchmarks.md")
    a = p.parse_args(argv)
    emit("ray", run(False, a.n), a.record)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
