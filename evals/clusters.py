"""python -m evals clusters [--run ID] [--assign RUN_ID] [--json]

Groups the failures of an eval run on the **seed** split into clusters a person can read:
1. by failing check (the natural taxonomy: "punctuation:no_comma");
2. inside groups larger than `cluster_split_above`, by neighbourhoods of the prompts' MiniLM embeddings
   (spherical k-means, k = ceil(n / cluster_target_size) <= cluster_max_k, deterministic).
Each cluster gets a label (check id, the check arguments all members share, and the most distinctive
prompt terms by class-based TF-IDF), a size, representative traces (closest to the centroid), and an id
that stays the same for the same failures across runs: the hash of the check id and the medoid trace.
Stored in `clusters` / `cluster_members` (split 'seed'); printed as a table.

`--assign RUN_ID` (and `assign_holdout(run_id)` for the gate) puts a run's **holdout** failures into the
existing clusters (same failing check, nearest centroid) as cluster_members with split 'holdout',
without changing the clusters.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from collections import Counter

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from evals import ifeval
from evals.runs import refresh_stale
from traces import json_out, settings as settings_mod, store
from traces.terminal import safe

console = Console()

STOPWORDS = set("""a about above after again all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having he her
here hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or other
our out over own same she should so some such than that the their them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours write
response answer words word least using use make sure include entire letter letters please without""".split())



# ------------------------------------------------------------------ embeddings

def embed_texts(texts: list[str]) -> np.ndarray:
    """MiniLM sentence embeddings (train.embed), L2-normalized, (N, 384) float32."""
    from train.embed import embed  # imports torch: only when clustering needs vectors
    return np.asarray(embed(texts), dtype=np.float32)


def hashed_embed(texts: list[str], dim: int = 384) -> np.ndarray:
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for token in tokens(text):
            out[i, int(hashlib.md5(token.encode()).hexdigest()[:8], 16) % dim] += 1.0
    return normalize(out)


def normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z][a-z'-]*[a-z]", (text or "").lower()) if len(t) > 2 and t not in STOPWORDS]


def request_text(prompt: str, metadata, base: str | None = None) -> str:
    """The prompt without the verifiable-instruction sentences its metadata names (rebuilt by lm-eval's own
    builders), so embeddings and label terms describe the request ("a story about a detective"), not the
    instruction boilerplate every member shares. `base`: its base request, when already computed."""
    if base is not None:
        return base
    md = store.json_value(metadata, {})
    if not md.get("instruction_id_list"):
        return prompt
    return ifeval.strip_instructions(prompt, md)[0] or prompt  # unknown ids: the whole prompt still describes it


def requests_of(fails) -> tuple[list[str], list[str | None]]:
    """(text to embed and label, base request to store in trace_base_requests) per failure. The base request
    (evals.ifeval.base_request) is None where a description is not found; the text then keeps what was cut."""
    prompts, metadata = fails["prompt"].to_list(), [store.json_value(m, {}) for m in fails["metadata"].to_list()]
    bases = [ifeval.base_request(p, m) for p, m in zip(prompts, metadata)]
    return [request_text(p, m, b) for p, m, b in zip(prompts, metadata, bases)], bases


# ------------------------------------------------------------------ clustering

def kmeans(x: np.ndarray, k: int, iters: int = 50) -> np.ndarray:
    """Spherical k-means on normalized rows; farthest-point init from row 0, so the result depends only on
    the (sorted) input. Returns labels (N,)."""
    centres = [x[0]]
    for _ in range(1, k):
        sims = np.max(x @ np.stack(centres).T, axis=1)
        centres.append(x[int(np.argmin(sims))])
    c = np.stack(centres)
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iters):
        new = np.argmax(x @ c.T, axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        c = normalize(np.stack([x[labels == j].mean(axis=0) if np.any(labels == j) else c[j] for j in range(k)]))
    return labels


def split_group(x: np.ndarray, s) -> np.ndarray:
    n = len(x)
    if n <= s.cluster_split_above:
        return np.zeros(n, dtype=int)
    k = min(s.cluster_max_k, math.ceil(n / s.cluster_target_size), n)
    return kmeans(x, k)


def cluster_id(check_id: str, medoid_trace: str) -> str:
    return "c-" + hashlib.sha256(f"{check_id}\n{medoid_trace}".encode()).hexdigest()[:12]


def ctfidf_terms(docs_per_cluster: list[list[str]], top: int) -> list[list[str]]:
    """Class-based TF-IDF (BERTopic): w(t, c) = tf(t, c) / |c| * log(1 + A / f(t)), A = mean words per class."""
    counts = [Counter(t for d in docs for t in tokens(d)) for docs in docs_per_cluster]
    total = Counter()
    for c in counts:
        total.update(c)
    avg = (sum(total.values()) / max(1, len(counts))) or 1.0
    out = []
    for c in counts:
        size = sum(c.values()) or 1
        scored = sorted(c, key=lambda t: (-(c[t] / size) * math.log(1 + avg / total[t]), t))
        out.append(scored[:top])
    return out


def shared_args(arg_list: list[dict]) -> str:
    """The short check arguments every member shares, e.g. "relation=at least": part of the label."""
    if not arg_list:
        return ""
    common = {k: v for k, v in arg_list[0].items()
              if isinstance(v, (str, int, float)) and len(str(v)) <= 24 and all(a.get(k) == v for a in arg_list)}
    return " ".join(f"{k}={v}" for k, v in sorted(common.items()))


# ------------------------------------------------------------------ build from a run's seed failures

def failures(con, run_id: str, split: str):
    from evals.reports import frame
    return frame(con, """SELECT r.trace_id, r.check_id, r.check_args, t.prompt, t.metadata FROM run_results r
                          JOIN traces t USING (trace_id) WHERE r.run_id = ? AND NOT r.passed AND t.split = ?
                          ORDER BY r.check_id, r.trace_id, r.check_idx""", [run_id, split])


def build_clusters(run_id: str, embed=None, settings=None) -> list[dict]:
    """Cluster the seed failures of `run_id`, store them, return the clusters (largest first)."""
    s = settings or settings_mod.load("evals")
    with store.connect() as con:
        _require_complete(con, run_id)
        fails = failures(con, run_id, "seed").unique(["trace_id", "check_id"], keep="first", maintain_order=True)
    if fails.is_empty():
        _store(run_id, [])
        return []
    texts, bases = requests_of(fails)
    fails = fails.with_columns(request=pl.Series(texts, dtype=pl.String),
                               base_request=pl.Series(bases, dtype=pl.String))
    vectors = _vectors(fails["request"].to_list(), embed)
    clusters = []
    for check_id in sorted(set(fails["check_id"].to_list())):
        rows = np.flatnonzero((fails["check_id"] == check_id).to_numpy())
        labels = split_group(vectors[rows], s)
        for j in sorted(set(labels.tolist())):
            clusters.append(_describe(fails, vectors, rows[labels == j], check_id, s))
    _label(clusters, s)
    clusters.sort(key=lambda c: (-c["size"], c["cluster_id"]))
    _store(run_id, clusters)
    return clusters


def _vectors(prompts: list[str], embed) -> np.ndarray:
    unique = sorted(set(prompts))
    vecs = normalize(np.asarray((embed or embed_texts)(unique), dtype=np.float32))
    index = {p: i for i, p in enumerate(unique)}
    return vecs[[index[p] for p in prompts]]


def _describe(fails, vectors, idx, check_id, s) -> dict:
    members = vectors[idx]
    centroid = normalize(members.mean(axis=0))
    sims = members @ centroid
    trace_ids = [fails["trace_id"][int(i)] for i in idx]
    order = sorted(range(len(idx)), key=lambda m: (-round(float(sims[m]), 6), trace_ids[m]))
    args = [store.json_value(a, {}) for a in (fails["check_args"][int(i)] for i in idx)]
    return {"cluster_id": cluster_id(check_id, trace_ids[order[0]]), "check_id": check_id, "size": len(idx),
            "centroid": centroid.astype(np.float32).tolist(), "members": trace_ids,
            "similarity": [float(x) for x in sims], "prompts": [fails["prompt"][int(i)] for i in idx],
            "requests": [fails["request"][int(i)] for i in idx],
            "base_requests": [fails["base_request"][int(i)] for i in idx],
            "representatives": [trace_ids[m] for m in order[: s.cluster_representatives]],
            "shared_args": shared_args(args)}


def _label(clusters: list[dict], s) -> None:
    for c, terms in zip(clusters, ctfidf_terms([c["requests"] for c in clusters], s.cluster_terms)):
        c["terms"] = terms
        parts = [c["check_id"], c["shared_args"] and f"({c['shared_args']})", terms and "· " + ", ".join(terms)]
        c["label"] = " ".join(p for p in parts if p)


def _require_complete(con, run_id: str) -> None:
    refresh_stale(con)
    rows = con.execute("SELECT status FROM eval_runs WHERE run_id = ?", [run_id]).fetchall()
    row = rows[0] if rows else None  # fetchall: DuckDB 2 refuses new work while a result is half-fetched
    if row is None:
        raise ValueError(f"no eval run {run_id!r}")
    if row[0] != "complete":
        raise ValueError(f"eval run {run_id} is {row[0]}, not complete: its failures are not clustered")


def _store(run_id: str, clusters: list[dict]) -> None:
    import pyarrow as pa
    members = pa.table({
        "cluster_id": [c["cluster_id"] for c in clusters for _ in c["members"]],
        "trace_id": [t for c in clusters for t in c["members"]],
        "similarity": [x for c in clusters for x in c["similarity"]],
        "base_request": pa.array([b for c in clusters for b in c["base_requests"]], pa.string())})
    rows = pa.table({
        "cluster_id": [c["cluster_id"] for c in clusters], "check_id": [c["check_id"] for c in clusters],
        "label": [c["label"] for c in clusters], "terms": [json.dumps(c["terms"]) for c in clusters],
        "size": pa.array([c["size"] for c in clusters], pa.int32()),
        "centroid": pa.array([c["centroid"] for c in clusters], pa.list_(pa.float32())),
        "representatives": [json.dumps(c["representatives"]) for c in clusters]})
    with store.connect() as con, store.transaction(con):
        con.execute("DELETE FROM cluster_members WHERE run_id = ? AND split = 'seed'", [run_id])
        con.execute("DELETE FROM clusters WHERE run_id = ?", [run_id])
        con.register("new_clusters", rows)
        con.register("new_members", members)
        con.execute("""INSERT OR REPLACE INTO clusters (cluster_id, run_id, check_id, label, terms, size, centroid,
                       representatives, created_at) SELECT cluster_id, ?, check_id, label, terms::JSON, size, centroid,
                       representatives::JSON, now() FROM new_clusters""", [run_id])
        con.execute("""INSERT INTO cluster_members (cluster_id, trace_id, run_id, split, similarity)
                       SELECT cluster_id, trace_id, ?, 'seed', similarity FROM new_members""", [run_id])
        _store_base_requests(con, "new_members")


def _store_base_requests(con, members: str) -> None:
    """Each member trace's base request, computed while clustering, for synthesis to reuse (one row per trace:
    it depends on the trace alone; a trace failing two checks has the same one twice)."""
    con.execute(f"""INSERT OR REPLACE INTO trace_base_requests (trace_id, base_request)
                    SELECT trace_id, any_value(base_request) FROM {members} GROUP BY trace_id""")


# ------------------------------------------------------------------ holdout assignment (gate)

def current_clusters(con):
    """The clusters of the newest clustering (the seed run clustered last)."""
    from evals.reports import frame
    return frame(con, """SELECT cluster_id, check_id, label, size, centroid FROM clusters
                         WHERE run_id = (SELECT arg_max(run_id, created_at) FROM clusters)
                         ORDER BY size DESC, cluster_id""")


def assign_holdout(run_id: str, embed=None) -> dict:
    """Put run_id's holdout failures into the current clusters (same check, nearest centroid); clusters unchanged.
    Returns {"assigned": n, "unassigned": m, "clusters": {cluster_id: n}}. Idempotent per run."""
    with store.connect() as con:
        _require_complete(con, run_id)
        fails = failures(con, run_id, "holdout").unique(["trace_id", "check_id"], keep="first", maintain_order=True)
        current = current_clusters(con)
    rows = []
    if not fails.is_empty() and not current.is_empty():
        texts, bases = requests_of(fails)
        rows = _nearest(fails, current, _vectors(texts, embed), bases)
    _store_assignment(run_id, rows)
    counts = Counter(r[0] for r in rows)
    return {"assigned": len(rows), "unassigned": fails.height - len(rows), "clusters": dict(counts)}


def _nearest(fails, current, vectors, bases) -> list[tuple[str, str, float, str | None]]:
    centroids = normalize(np.asarray(current["centroid"].to_list(), dtype=np.float32))
    checks = np.asarray(current["check_id"].to_list())
    out = []
    for i, (trace_id, check_id) in enumerate(zip(fails["trace_id"].to_list(), fails["check_id"].to_list())):
        same = np.flatnonzero(checks == check_id)
        if len(same):
            sims = centroids[same] @ vectors[i]
            best = int(same[int(np.argmax(sims))])
            out.append((current["cluster_id"][best], trace_id, float(sims.max()), bases[i]))
    return out


def _store_assignment(run_id: str, rows) -> None:
    import pyarrow as pa
    table = pa.table({"cluster_id": [r[0] for r in rows], "trace_id": [r[1] for r in rows],
                      "similarity": [r[2] for r in rows], "base_request": pa.array([r[3] for r in rows], pa.string())})
    with store.connect() as con, store.transaction(con):
        con.execute("DELETE FROM cluster_members WHERE run_id = ? AND split = 'holdout'", [run_id])
        con.register("assigned", table)
        con.execute("""INSERT INTO cluster_members (cluster_id, trace_id, run_id, split, similarity)
                       SELECT cluster_id, trace_id, ?, 'holdout', similarity FROM assigned""", [run_id])
        _store_base_requests(con, "assigned")


# ------------------------------------------------------------------ CLI

def default_run(con) -> str | None:
    """The newest complete run that covers the seed split (of the configured suites first)."""
    refresh_stale(con)
    suites = list(settings_mod.load("evals").suites)
    rows = con.execute("""SELECT run_id FROM eval_runs WHERE status = 'complete' AND split IN ('seed', 'all')
                          ORDER BY list_contains(?, suite) DESC, finished_at DESC LIMIT 1""", [suites]).fetchall()
    row = rows[0] if rows else None
    return row[0] if row else None


def print_clusters(clusters: list[dict], run_id: str, out: Console | None = None) -> None:
    out = out or console
    if not clusters:
        out.print(f"no seed failures in {safe(run_id)}: nothing to cluster")
        return
    table = Table(title=f"failure clusters of {run_id} (seed split)", show_lines=False)
    for col in ("cluster", "size", "label", "example prompt"):
        table.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
    for c in clusters:
        example = _example(c)
        table.add_row(c["cluster_id"], str(c["size"]), safe(c["label"], limit=100), safe(example, limit=70))
    out.print(table)
    total = sum(c["size"] for c in clusters)
    out.print(f"{len(clusters)} clusters, {total} failures (trace x check)")


def document(clusters: list[dict], run_id: str) -> dict:
    """What --json prints: the clusters as the table lists them, with their terms and representatives."""
    keys = ("cluster_id", "check_id", "size", "label", "terms", "shared_args", "representatives")
    return {"run_id": run_id, "failures": sum(c["size"] for c in clusters),
            "clusters": [{k: c[k] for k in keys} | {"example_prompt": _example(c)} for c in clusters]}


def _example(cluster: dict) -> str:
    """The prompt of the cluster's first representative (closest to its centroid)."""
    return cluster["prompts"][cluster["members"].index(cluster["representatives"][0])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals clusters", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="eval run whose seed failures to cluster (default: newest complete seed/all run)")
    p.add_argument("--assign", metavar="RUN_ID", help="assign this run's holdout failures to the current clusters")
    json_out.add_json_flag(p)
    a = p.parse_args(argv)
    with json_out.stdout_to_stderr(a.json):  # embedding progress and notes: never on the JSON's stdout
        code, doc = _assign(a.assign, a.json) if a.assign else _cluster(a.run, a.json)
    if doc is not None:
        json_out.emit(doc)
    return code


def _assign(run_id: str, as_json: bool) -> tuple[int, dict | None]:
    out = assign_holdout(run_id)
    if as_json:
        return 0, {"run_id": run_id, **out}
    console.print(f"assigned {out['assigned']} holdout failures to {len(out['clusters'])} clusters "
                  f"({out['unassigned']} had no cluster of their check)")
    return 0, None


def _cluster(run_id: str | None, as_json: bool) -> tuple[int, dict | None]:
    with store.connect() as con:
        run_id = run_id or default_run(con)
    if run_id is None:
        console.print("no complete eval run on the seed split yet: run `python -m evals run` first")
        return 1, None
    try:
        clusters = build_clusters(run_id)
    except ValueError as e:
        Console(stderr=True).print(f"[red]error:[/] {safe(str(e))}")
        return 2, None
    if as_json:
        return 0, document(clusters, run_id)
    print_clusters(clusters, run_id)
    return 0, None
