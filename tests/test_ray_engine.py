"""engine = "ray" (traces/ray_engine.py, evals/engine_ray.py, train.embed): scoring and embedding on a local Ray
cluster give the local engine's results; without Ray installed the error names the extra to install. Ray starts
once for the module (2 CPUs, as CI has) and stops after it: its start costs seconds, so these tests are few."""
import sys
import types

import numpy as np
import pytest
from builders.trace_rows import LOWER, NO_COMMA, fetch, ifeval_meta, insert_traces, trace_row

from evals import engine_ray, runner
from traces.ray_engine import RayMissing, ray_data
from traces.settings import SettingsError
from builders.suites import instructions_only  # noqa: F401  (autouse: the IFEval-only suite)

WORDS = ("at least", 5)
RESULT = ("SELECT trace_id, check_idx, check_id, check_args, passed, passed_loose, score, reason, output, details "
          "FROM results WHERE run_id = ? ORDER BY trace_id, check_idx")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")  # the `ray` extra, which `make setup` installs: CI runs these
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def traffic(n=30):
    answers = ["cats are nice and soft", "dogs, they bark", "Birds Fly High over the hills today", "ok"]
    checks = [ifeval_meta(NO_COMMA), ifeval_meta(LOWER, NO_COMMA),
              ifeval_meta(("length_constraints:number_words", {"relation": WORDS[0], "num_words": WORDS[1]})),
              ifeval_meta(LOWER)]
    return [trace_row(i, f"Write about topic {i}.", answers[i % 4], checks[i % 3]) for i in range(n)]


def test_ray_scores_what_local_scores(ray_cluster, monkeypatch):
    rows_in = traffic()
    insert_traces(rows_in)
    ids = [r["trace_id"] for r in rows_in]  # named traces: each run scores all of them (no incremental chain)
    monkeypatch.setattr(engine_ray, "BATCH", 7)  # several batches, so their order is tested too
    local = runner.run_suite("instruction_following", "all", trace_ids=ids, progress=False)
    monkeypatch.setenv("MEND_EVALS_ENGINE", "ray")
    calls = []
    monkeypatch.setattr(engine_ray, "_table", lambda t, real=engine_ray._table: calls.append(len(t)) or real(t))
    on_ray = runner.run_suite("instruction_following", "all", trace_ids=ids, progress=False)
    assert calls == [30]  # it did go through Ray
    rows = fetch(RESULT, [local])
    assert len(rows) == 40 and {r[4] for r in rows} == {True, False}
    assert fetch(RESULT, [on_ray]) == rows


@pytest.mark.integration  # the real MiniLM, as tests/test_embed.py's
def test_ray_embeds_what_local_embeds(ray_cluster):
    """The real MiniLM, loaded once per actor: the same vectors as in this process, in the order of the texts."""
    from train.embed import embed
    texts = [f"How do I reset password number {i}?" for i in range(20)] + ["Bake the bread at 220 degrees."]
    local = embed(texts, batch_size=4, engine="local")
    on_ray = embed(texts, batch_size=4, engine="ray")
    assert on_ray.shape == (21, 384) and on_ray.dtype == np.float32
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
