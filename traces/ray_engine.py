"""Ray, for when one machine is not enough. `[tool.mend.evals] engine = "ray"` scores traces (evals/engine_ray.py)
and embeds texts (train/embed.py) on Ray Data; `ray_address` names a running cluster (its GCS address "head:6379",
"auto", or Ray Client's "ray://head:10001"), empty is Ray's default (RAY_ADDRESS, else the cluster `ray start`
started on this machine, else a new local one). Ray is the optional extra `mend[ray]`, imported here only and only
once the engine is Ray: a user without it never pays for the import, and one who asks for it without it gets the
install line.

It lives on the ground floor because both train (the embedder) and evals (the scorer) use it.
"""
from __future__ import annotations

import logging

from traces.settings import SettingsError

ENGINES = ("local", "ray")
INSTALL = "pip install 'mend[ray]'"


class RayMissing(SettingsError):
    """engine = "ray" without Ray installed; the message says what to install."""


def engine_of(s) -> str:
    """The engine evals settings `s` ask for, checked (None, or settings without the field: local)."""
    engine = getattr(s, "engine", "local") or "local"
    if engine not in ENGINES:
        raise SettingsError(f'[tool.mend.evals] engine must be "local" or "ray", got {engine!r}')
    return engine


def evals_engine() -> tuple[str, str]:
    """(engine, ray_address) from the evals settings, for code below evals that is not handed them (the embedder)."""
    from traces import settings
    s = settings.load("evals")
    return engine_of(s), s.ray_address


def ray_data(address: str = ""):
    """The `ray.data` module, connected: to the Ray this process is already connected to (a Ray worker's, where
    where_data_runs runs a pipeline), else to `address`, else (empty) to Ray's default, a new local cluster of this
    machine's CPUs where RAY_ADDRESS and `ray start` name none."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise RayMissing(f'[tool.mend.evals] engine = "ray" needs Ray, which is not installed ({e.name}): '
                         f"{INSTALL}, or set engine = \"local\"") from None
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per dataset run ("Starting execution")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results come back in the order the local engine gives them
    context.enable_progress_bars = False  # mend's own progress lines say what runs; Ray's bars would interleave
    return ray.data


def where_data_runs(fn, *args):
    """fn(*args), a function that builds and runs a Ray Data pipeline (calling ray_data() for the module): in this
    process, or, when this process reached the cluster through Ray Client (a "ray://" address), in a task on the
    cluster. Ray Data's executor must run in a process that is a Ray worker itself: under the client it fails
    ("'Worker' object has no attribute 'core_worker'", Ray 2.60), so the client only ships fn's arguments there and
    gets its result back (tests/test_ray_engine.py runs both)."""
    import ray
    if not ray.util.client.ray.is_connected():
        return fn(*args)
    return ray.get(ray.remote(num_cpus=0)(fn).remote(*args))  # no CPU: the pipeline's own tasks need them all
