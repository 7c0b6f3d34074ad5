"""python -m curate filter — dedup and decontaminate the verified examples; survivors -> pending_review.

Order, each stage on the previous stage's survivors, first occurrence kept (docs/schema.md):
1. exact: normalized prompt+response hash, within the batch and against examples kept before
   (pending_review / accepted) -> `duplicate`, reason `exact`;
2. near_duplicate: MinHash LSH (Jaccard >= near_dup_threshold) -> `duplicate`;
3. semantic: MiniLM cosine > semantic_threshold (embeddings stored in examples.embedding, computed once);
4. decontamination of the prompt against every eval prompt (holdout traces, plus `decontam_refs` JSONL
   files with a "prompt" field): a shared 13-gram -> `contaminated`, reason `ngram13` (13-grams that seed
   prompts carry too, like an instruction's template sentence, do not count); prompt cosine >
   decontam_semantic_threshold -> `contaminated`, reason `embedding`. duplicate_of names what it hit.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from traces import settings as settings_mod
from traces import store
from curate import dedup

KEPT = ("pending_review", "accepted")  # what earlier batches left standing: new examples must not repeat it


def embed_texts(texts: list[str]) -> np.ndarray:
    """(N, 384) float32 unit vectors (MiniLM); tests replace this with a cheap embedder."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    from train.embed import embed
    return np.asarray(embed(texts), dtype=np.float32)


def load_rows(con, statuses: tuple) -> list[dict]:
    marks = ",".join("?" * len(statuses))
    rows = con.execute(f"""SELECT example_id, prompt, response, embedding FROM examples
                           WHERE status IN ({marks}) ORDER BY created_at, example_id""", list(statuses)).fetchall()
    return [{"id": r[0], "prompt": r[1], "response": r[2], "embedding": r[3]} for r in rows]


def eval_prompts(con, refs: tuple) -> list[tuple[str, str]]:
    """(id, prompt) of every eval prompt: holdout traces, then each reference file's lines."""
    out = [(r[0], r[1]) for r in con.execute(
        "SELECT trace_id, prompt FROM traces WHERE split = 'holdout' ORDER BY trace_id").fetchall()]
    for ref in refs:
        out.extend(read_ref(settings_mod.resolve_path(ref)))
    return out


def read_ref(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"decontam_refs: no such file {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append((f"{path.name}:{n}", str(json.loads(line)["prompt"])))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{n}: not a JSON object with a \"prompt\" field") from None
    return out


def ensure_embeddings(rows: list[dict]) -> list[dict]:
    """Compute the missing document embeddings (prompt + response) once and store them."""
    missing = [r for r in rows if r["embedding"] is None]
    if missing:
        vecs = embed_texts([doc(r) for r in missing])
        for r, v in zip(missing, vecs):
            r["embedding"] = v
        import pyarrow as pa
        table = pa.table({"example_id": [r["id"] for r in missing],
                          "embedding": pa.array([v.tolist() for v in vecs], type=pa.list_(pa.float32()))})
        with store.connect() as con, store.transaction(con):
            con.register("emb", table)
            con.execute("UPDATE examples SET embedding = emb.embedding::FLOAT[] FROM emb "
                        "WHERE examples.example_id = emb.example_id")
    return rows


def doc(r: dict) -> str:
    return f"{r['prompt']}\n{r['response']}"


def matrix(rows: list[dict]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 384), dtype=np.float32)
    return np.asarray([np.asarray(r["embedding"], dtype=np.float32) for r in rows])


def cached_prompt_embeddings(texts: list[str]) -> np.ndarray:
    """Eval prompt embeddings, cached per text in the store (train.embed.cached): a new holdout trace or reference
    line embeds that prompt alone, not every eval prompt again. Keyed by embed_texts' dotted name, so a replaced
    embedder (a test's cheap one) never reads MiniLM's vectors."""
    from train.embed import cached
    return cached(texts, embed_texts, f"{embed_texts.__module__}.{embed_texts.__qualname__}")


def decide(new: list[dict], kept: list[dict], evals: list[tuple[str, str]], s, shared: list[str] = ()) \
        -> dict[str, tuple]:
    """example_id -> (status, reason, duplicate_of) for every new example."""
    out: dict[str, tuple] = {}
    alive = list(range(len(new)))

    def stage(dups: np.ndarray, ref_ids: list[str], status: str, reason, survivors: list[int]) -> list[int]:
        ids = ref_ids + [new[i]["id"] for i in survivors]
        left = []
        for pos, i in enumerate(survivors):
            if dups[pos] >= 0:
                out[new[i]["id"]] = (status, reason(pos, dups[pos]), ids[dups[pos]])
            else:
                left.append(i)
        return left

    kept_ids = [r["id"] for r in kept]
    alive = stage(dedup.exact_dups([doc(new[i]) for i in alive], [doc(r) for r in kept]), kept_ids,
                  "duplicate", lambda p, d: "exact", alive)
    vocab: dict = {}
    ksig = dedup.signatures([doc(r) for r in kept], s.minhash_perm, s.shingle, vocab=vocab)
    nsig = dedup.signatures([doc(new[i]) for i in alive], s.minhash_perm, s.shingle, vocab=vocab)
    allsig = np.vstack([ksig, nsig])
    alive = stage(dedup.near_dups(nsig, ksig, s.near_dup_threshold), kept_ids, "duplicate",
                  lambda p, d: f"near_duplicate: jaccard {(allsig[len(kept) + p] == allsig[d]).mean():.2f}", alive)
    kemb, nemb = matrix(kept), matrix([new[i] for i in alive])
    allemb = np.vstack([kemb, nemb])
    alive = stage(dedup.semantic_dups(nemb, kemb, s.semantic_threshold), kept_ids, "duplicate",
                  lambda p, d: f"semantic: cosine {float(allemb[len(kept) + p] @ allemb[d]):.3f}", alive)
    return decontaminate(new, alive, evals, s, out, shared)


def decontaminate(new, alive, evals, s, out, shared: list[str] = ()) -> dict:
    eval_ids, eval_texts = [e[0] for e in evals], [e[1] for e in evals]
    hits = dedup.ngram_contaminated([new[i]["prompt"] for i in alive], eval_texts, s.decontam_ngram, shared)
    left = []
    for pos, i in enumerate(alive):
        if hits[pos] >= 0:
            out[new[i]["id"]] = ("contaminated", f"ngram{s.decontam_ngram}", eval_ids[hits[pos]])
        else:
            left.append(i)
    if left and evals:
        prompts = sorted({new[i]["prompt"] for i in left})
        pemb = dict(zip(prompts, embed_texts(prompts)))
        eemb = cached_prompt_embeddings(eval_texts)
        sims = np.stack([pemb[new[i]["prompt"]] for i in left]) @ eemb.T
        best = sims.argmax(axis=1)
        for pos, i in enumerate(left):
            cos = float(sims[pos, best[pos]])
            if cos > s.decontam_semantic_threshold:
                out[new[i]["id"]] = ("contaminated", f"embedding: cosine {cos:.3f}", eval_ids[best[pos]])
    for i in range(len(new)):
        out.setdefault(new[i]["id"], ("pending_review", None, None))
    return out


def apply(decisions: dict[str, tuple]) -> None:
    import pyarrow as pa
    ids = list(decisions)
    table = pa.table({"example_id": ids, "status": [decisions[i][0] for i in ids],
                      "reason": [decisions[i][1] for i in ids], "duplicate_of": [decisions[i][2] for i in ids]})
    with store.connect() as con, store.transaction(con):
        con.register("dec", table)
        # only rows still `verified`: a concurrent review cannot be overwritten
        con.execute("""UPDATE examples SET status = dec.status, reason = dec.reason, duplicate_of = dec.duplicate_of
                       FROM dec WHERE examples.example_id = dec.example_id AND examples.status = 'verified'""")


def run_filters(settings=None) -> dict[str, int]:
    """Filter every `verified` example; returns counts per (status: reason kind)."""
    s = settings or settings_mod.load("curate")
    with store.connect(read_only=True) as con:
        new, kept = load_rows(con, ("verified",)), load_rows(con, KEPT)
        evals = eval_prompts(con, tuple(s.decontam_refs))
        seed = [r[0] for r in con.execute("SELECT prompt FROM traces WHERE split = 'seed'").fetchall()]
    if not new:
        return {}
    ensure_embeddings(new + kept)
    decisions = decide(new, kept, evals, s, seed)
    apply(decisions)
    counts: dict[str, int] = {}
    for status, reason, _ in decisions.values():
        key = status + (f": {reason.split(':')[0]}" if reason else "")
        counts[key] = counts.get(key, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate filter", description=__doc__.split("\n")[0])
    p.parse_args(argv)
    console = Console()
    counts = run_filters()
    if not counts:
        console.print("nothing to filter: no examples in state `verified` (run `python -m curate synth`)")
        return 0
    table = Table(title="filter decisions")
    table.add_column("outcome")
    table.add_column("examples", justify="right")
    for key, n in sorted(counts.items()):
        table.add_row(key, str(n))
    console.print(table)
    return 0
