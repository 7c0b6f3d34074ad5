"""engine = "ray" (traces/ray_engine.py, evals/engine_ray.py, train.embed) on a cluster of two nodes that mend
reaches by the address in its settings, as a user's `ray_address` names one: scoring (through the GCS address and
through Ray Client's "ray://") and embedding (through the client) give the local engine's results, and scoring ran
on both nodes. Without Ray installed the error names the extra to install.

The two raylets run on this machine (ray.cluster_utils.Cluster, one CPU each, as CI has two cores), started once for
the module and stopped after it: their start costs seconds, so these tests are few. Each test connects through the
settings and disconnects after, so none inherits another's connection."""
import os
import socket
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from builders.trace_rows import RUN_RESULTS, fetch, ifeval_traffic, insert_traces

from evals import engine_ray, runner
from traces.ray_engine import RayMissing, ray_data
from traces.settings import SettingsError
from builders.suites import instructions_only  # noqa: F401  (autouse: the IFEval-only suite)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_nodes():
    ray = pytest.importorskip("ray")  # the `ray` extra, which `make setup` installs: CI runs these
    from ray._common.utils import reset_ray_address
    from ray.cluster_utils import Cluster
    ray.shutdown()  # mend reuses a Ray this process is already connected to: these tests must connect by address
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        client_port = free.getsockname()[1]
    cluster = None
    try:
        # the nodes' workers import mend from this checkout, not from the one the venv's editable install names
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "include_dashboard": False, "ray_client_server_port": client_port})
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        reset_ray_address()  # ray.init() with no address would find the cluster this file names: now only the
        # address the settings give leads to it (a run that dropped the address scores on a new one-node Ray: red)
        cluster.client_address = f"ray://127.0.0.1:{client_port}"
        yield cluster
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


@pytest.fixture
def by_address(two_nodes, monkeypatch):
    """point(address): the evals settings name the cluster from here on (after a test's local run); disconnected
    after the test."""
    import ray

    def point(address):
        monkeypatch.setenv("MEND_EVALS_ENGINE", "ray")
        monkeypatch.setenv("MEND_EVALS_RAY_ADDRESS", address)
    yield point
    ray.shutdown()


@pytest.mark.parametrize("form", ["gcs", "client"])
def test_scoring_on_two_nodes_gives_the_local_rows(form, two_nodes, by_address, monkeypatch, tmp_path):
    """The GCS address ("127.0.0.1:port", a driver inside the cluster's network) and Ray Client's "ray://" (from
    outside it); six batches, so their order is tested too."""
    rows_in = ifeval_traffic()
    insert_traces(rows_in)
    ids = [r["trace_id"] for r in rows_in]  # named traces: each run scores all of them (no incremental chain)
    monkeypatch.setattr(engine_ray, "BATCH", 5)
    local = runner.run_suite("instruction_following", "all", trace_ids=ids, progress=False)
    seen = tmp_path / "nodes"  # a file per node a batch was scored on (the nodes share this disk): the mend it ran
    seen.mkdir()

    def scored_where(suite, traces, regenerated, folder=str(seen)):  # pickled by value, run by the nodes' workers
        import ray

        from evals import runner as on_worker  # the worker's own import: the real _score_chunk
        (Path(folder) / ray.get_runtime_context().get_node_id()).write_text(on_worker.__file__)
        return on_worker._score_chunk(suite, traces, regenerated)
    monkeypatch.setattr(runner, "_score_chunk", scored_where)
    by_address(two_nodes.address if form == "gcs" else two_nodes.client_address)
    on_ray = runner.run_suite("instruction_following", "all", trace_ids=ids, progress=False)
    rows = fetch(RUN_RESULTS, [local])
    assert len(rows) == 40 and {r[4] for r in rows} == {True, False}
    assert fetch(RUN_RESULTS, [on_ray]) == rows
    assert {p.name for p in seen.iterdir()} == {node.node_id for node in two_nodes.list_all_nodes()}
    assert {p.read_text() for p in seen.iterdir()} == {runner.__file__}  # this checkout's code ran there


@pytest.mark.integration  # the real MiniLM, as tests/test_embed.py's
def test_embedding_on_two_nodes_gives_the_local_vectors(two_nodes, by_address):
    """Through Ray Client, whose pipeline runs in a task on the cluster (through the GCS address it runs here, as
    scoring's does). The real MiniLM, loaded once per actor: two blocks, so two actors of one CPU, one on each node;
    the same vectors as in this process, in the order of the texts."""
    from train.embed import embed
    texts = [f"How do I reset password number {i}?" for i in range(7)] + ["Bake the bread at 220 degrees."]
    local = embed(texts, batch_size=1, engine="local")
    by_address(two_nodes.client_address)
    on_ray = embed(texts, batch_size=1)  # engine and address from the settings
    assert on_ray.shape == (8, 384) and on_ray.dtype == np.float32
    np.testing.assert_allclose(on_ray, local, atol=1e-5)


def test_engine_ray_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does where the extra is not installed
    monkeypatch.setenv("MEND_EVALS_ENGINE", "ray")
    from train.embed import embed
    with pytest.raises(RayMissing, match=r"pip install 'mend\[ray\]'"):
        embed(["a text"])
    s = types.SimpleNamespace(engine="ray", ray_address="", check_modules=())
    with pytest.raises(RayMissing, match=r"pip install 'mend\[ray\]'"):
        runner.score(None, [], settings=s)


def test_an_unknown_engine_is_refused(monkeypatch):
    monkeypatch.setenv("MEND_EVALS_ENGINE", "spark")
    from train.embed import embed
    with pytest.raises(SettingsError, match='"local" or "ray"'):
        embed(["a text"])


def test_ray_address_is_the_cluster_connected_to(monkeypatch):
    """A user's `ray_address` reaches ray.init (a stand-in Ray: no cluster needed to see where it would connect)."""
    joined = []
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False
    fake.init = lambda address=None, **kw: joined.append(address)
    fake.data = types.ModuleType("ray.data")
    context = types.SimpleNamespace(execution_options=types.SimpleNamespace(preserve_order=False))
    fake.data.DataContext = types.SimpleNamespace(get_current=lambda: context)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray.data", fake.data)
    assert ray_data("ray://head:10001") is fake.data and ray_data("") is fake.data
    assert joined == ["ray://head:10001", None] and context.execution_options.preserve_order
