"""Failure clustering on a constructed failure set: the clusters are exactly the groups we built."""
import numpy as np
import pytest
from builders.trace_rows import (
    LOWER,
    NO_COMMA,
    fetch,
    ifeval_meta,
    insert_traces,
    trace_row,
)

from evals import clusters, runner
from traces import store
from builders.suites import instructions_only  # noqa: F401  (autouse: the suite these counts are about)

TOPICS = {"cooking": "recipe pasta garlic", "space": "rocket orbit planet", "football": "goal striker league"}


def constructed():
    """30 seed no_comma failures in three topics, 5 seed lowercase failures, passes, and holdout failures."""
    rows, vectors, groups = [], {}, {}
    rng = np.random.default_rng(0)
    axes = {t: np.eye(384)[k] for k, t in enumerate(TOPICS)}
    i = 0
    for topic, words in TOPICS.items():
        for j in range(10):
            prompt = f"Write a note about {words} item {j} without commas."
            rows.append(trace_row(i, prompt, "well, no", ifeval_meta(NO_COMMA)))
            vectors[prompt] = axes[topic] + 0.05 * rng.standard_normal(384)
            groups.setdefault(topic, set()).add(f"t{i:04d}")
            i += 1
    for j in range(5):
        prompt = f"Describe the weather {j} in lowercase."
        rows.append(trace_row(i, prompt, "Sunny Day", ifeval_meta(LOWER)))
        vectors[prompt] = np.eye(384)[10] + 0.05 * rng.standard_normal(384)
        groups.setdefault("lower", set()).add(f"t{i:04d}")
        i += 1
    rows.append(trace_row(i, "A passing prompt.", "fine", ifeval_meta(NO_COMMA)))
    vectors["A passing prompt."] = np.eye(384)[20]
    # holdout failures: one near "space", one near "cooking", one of a check with no seed cluster
    for k, (topic, meta, response) in enumerate([("space", ifeval_meta(NO_COMMA), "a, b"),
                                                  ("cooking", ifeval_meta(NO_COMMA), "a, b"),
                                                  ("space", ifeval_meta(("detectable_format:title", {})), "x")]):
        prompt = f"Holdout question {k} on {TOPICS[topic]}."
        rows.append(trace_row(100 + k, prompt, response, meta, split="holdout"))
        vectors[prompt] = axes[topic] + 0.05 * rng.standard_normal(384)
    return rows, vectors, groups


@pytest.fixture
def setup(monkeypatch):
    rows, vectors, groups = constructed()
    insert_traces(rows)
    monkeypatch.setenv("MEND_EVALS_CLUSTER_SPLIT_ABOVE", "12")
    monkeypatch.setenv("MEND_EVALS_CLUSTER_TARGET_SIZE", "10")
    embed = lambda texts: np.stack([vectors[t] for t in texts])  # noqa: E731
    return embed, groups


def test_clusters_are_the_constructed_groups(setup):
    embed, groups = setup
    run_id = runner.run_suite("instruction_following", "all", progress=False)
    found = clusters.build_clusters(run_id, embed=embed)
    assert sorted((c["check_id"], c["size"]) for c in found) == [
        ("change_case:english_lowercase", 5)] + [("punctuation:no_comma", 10)] * 3
    assert {frozenset(c["members"]) for c in found} == {frozenset(g) for g in groups.values()}
    labels = {frozenset(c["members"]): c["label"] for c in found}
    for topic, words in TOPICS.items():
        label = labels[frozenset(groups[topic])]
        assert label.startswith("punctuation:no_comma") and any(w in label for w in words.split()), label
    stored = fetch("SELECT count(*), sum(size) FROM clusters WHERE run_id = ?", [run_id])
    assert stored == [(4, 35)]
    assert fetch("SELECT count(*) FROM cluster_members WHERE split = 'seed'") == [(35,)]
    reps = fetch("SELECT representatives FROM clusters ORDER BY size LIMIT 1")[0][0]
    assert len(__import__("json").loads(reps)) == 3


def test_ids_stable_across_runs_and_reclustering(setup):
    embed, _ = setup
    first = runner.run_suite("instruction_following", "all", progress=False)
    ids1 = sorted(c["cluster_id"] for c in clusters.build_clusters(first, embed=embed))
    second = runner.run_suite("instruction_following", "all", progress=False)
    ids2 = sorted(c["cluster_id"] for c in clusters.build_clusters(second, embed=embed))
    assert ids1 == ids2
    assert sorted(c["cluster_id"] for c in clusters.build_clusters(second, embed=embed)) == ids2  # idempotent
    assert fetch("SELECT count(*) FROM clusters") == [(4,)]


def test_holdout_assignment_does_not_change_clusters(setup):
    embed, groups = setup
    run_id = runner.run_suite("instruction_following", "all", progress=False)
    found = {frozenset(c["members"]): c["cluster_id"] for c in clusters.build_clusters(run_id, embed=embed)}
    before = fetch("SELECT cluster_id, size, label, centroid FROM clusters ORDER BY cluster_id")
    out = clusters.assign_holdout(run_id, embed=embed)
    assert out["assigned"] == 2 and out["unassigned"] == 1
    assigned = dict(fetch("SELECT trace_id, cluster_id FROM cluster_members WHERE split = 'holdout'"))
    assert assigned == {"t0100": found[frozenset(groups["space"])], "t0101": found[frozenset(groups["cooking"])]}
    assert fetch("SELECT cluster_id, size, label, centroid FROM clusters ORDER BY cluster_id") == before
    clusters.assign_holdout(run_id, embed=embed)  # idempotent per run
    assert fetch("SELECT count(*) FROM cluster_members WHERE split = 'holdout'") == [(2,)]


def test_incomplete_run_is_refused(setup):
    embed, _ = setup
    with store.connect() as con:
        con.execute("INSERT INTO eval_runs (run_id, suite, suite_version, mode, split, status, started_at, pid) "
                    "VALUES ('r-dead', 'instruction_following', '1', 'logged', 'all', 'running', now(), 999999999)")
    with pytest.raises(ValueError, match="incomplete, not complete"):
        clusters.build_clusters("r-dead", embed=embed)


def test_cli_prints_table_and_escapes(setup, monkeypatch, capsys):
    embed, _ = setup
    monkeypatch.setattr(clusters, "embed_texts", embed)
    runner.run_suite("instruction_following", "all", progress=False)
    assert clusters.main([]) == 0
    out = capsys.readouterr().out
    assert "failure clusters" in out and "punctuation:no_comma" in out and "4 clusters, 35 failures" in out


def test_json_is_one_document_of_the_clusters_the_table_lists(setup, monkeypatch, capsys):
    """Issue 26 (5): `evals clusters --json` prints the listing as one JSON document and nothing else on stdout."""
    import json
    embed, groups = setup
    monkeypatch.setattr(clusters, "embed_texts", embed)
    assert clusters.main(["--json"]) == 1  # no eval run yet: the note goes to stderr, stdout stays empty
    out, err = capsys.readouterr()
    assert out == "" and "no complete eval run" in err
    run_id = runner.run_suite("instruction_following", "all", progress=False)
    assert clusters.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_id"] == run_id and doc["failures"] == 35
    assert sorted(c["size"] for c in doc["clusters"]) == [5, 10, 10, 10]
    first = doc["clusters"][0]
    assert first["example_prompt"] and first["representatives"][0] in groups["cooking"] | groups["space"] | \
        groups["football"]
    assert clusters.main(["--assign", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) | {"clusters": None} == {"run_id": run_id, "assigned": 2,
                                                                        "unassigned": 1, "clusters": None}


def test_cluster_table_uses_the_one_terminal_helper():
    """The table's labels go through traces.terminal.safe (which also shows bidi overrides), not a copy of it."""
    from traces.terminal import safe
    assert clusters.safe is safe
    assert clusters.safe("[red]x[/] \x1b[2J \u202ebye") == "\\[red]x\\[/] ^[[2J \\u202ebye"


def test_kmeans_separates_and_hashed_fallback_is_normalized():
    x = clusters.normalize(np.array([[1, 0.01], [1, 0.02], [0.01, 1], [0.02, 1]], dtype=np.float32))
    labels = clusters.kmeans(x, 2)
    assert labels[0] == labels[1] != labels[2] == labels[3]
    v = clusters.hashed_embed(["rocket orbit", "pasta garlic"])
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1)


def test_request_text_drops_the_instruction_sentences():
    meta = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    prompt = "Write a story about a detective. In your entire response, refrain from the use of any commas."
    assert clusters.request_text(prompt, meta) == "Write a story about a detective."
    assert clusters.request_text("Plain prompt.", None) == "Plain prompt."


def test_base_request_is_stored_once_and_synthesis_reuses_it():
    """Clustering stores each member trace's base request (seed and holdout), once per trace; synthesis reads the
    stored value and computes it only where none is stored (here: a seed trace that failed nothing)."""
    from curate.synth import driver as synth
    desc = "In your entire response, refrain from the use of any commas."
    insert_traces([
        trace_row(0, f"Write a story about a detective. {desc}", "well, no", ifeval_meta(NO_COMMA)),
        trace_row(1, "Write a note without commas.", "a, b", ifeval_meta(NO_COMMA)),  # description not in it
        trace_row(2, f"Tell a joke about cats. {desc}", "no commas here", ifeval_meta(NO_COMMA)),  # passes
        trace_row(100, f"Plan a trip to Rome. {desc}", "a, b", ifeval_meta(NO_COMMA), split="holdout")])
    run_id = runner.run_suite("instruction_following", "all", progress=False)
    clusters.build_clusters(run_id, embed=clusters.hashed_embed)
    clusters.assign_holdout(run_id, embed=clusters.hashed_embed)
    assert sorted(fetch("SELECT trace_id, base_request FROM trace_base_requests")) == [
        ("t0000", "Write a story about a detective."), ("t0001", None), ("t0100", "Plan a trip to Rome.")]
    clusters.build_clusters(run_id, embed=clusters.hashed_embed)  # again: still one row per trace
    assert fetch("SELECT count(*) FROM trace_base_requests") == [(3,)]
    fetch("UPDATE trace_base_requests SET base_request = 'the stored one' WHERE trace_id = 't0000'")
    with store.connect(read_only=True) as con:
        bases = {t["trace_id"]: synth.base_request(t) for t in synth.seed_traces_with_instructions(con)}
    assert bases == {"t0000": "the stored one", "t0001": None, "t0002": "Tell a joke about cats."}
