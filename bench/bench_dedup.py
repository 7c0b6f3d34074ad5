"""python -m bench --only dedup [--quick] — dedup + decontamination of 100k generated examples.

Data (generated in memory, seeded): 100k examples (20k with --quick), a ~25-word prompt and a ~90-word
response each, with planted exact duplicates (2%), near duplicates (3%: a few words appended/changed),
semantic duplicates (2%: an earlier example's embedding plus small noise) and contaminated prompts
(1%: a 15-word window of one of 1,000 eval prompts). Embeddings are random unit vectors (384-d),
precomputed: MiniLM's own cost is reported on its own line (a 256-text sample, extrapolated).

mend: curate.dedup's kernels as `curate filter` runs them — exact hash, numpy MinHash (128 perm, 5-word
shingles) + banded LSH (Jaccard 0.8), semantic (cosine > 0.95; random-hyperplane LSH candidates at this
size, checked exactly), 13-gram decontamination and prompt-embedding decontamination (blocked products).
Baseline: the straightforward per-example loop — a datasketch `MinHash` per example fed shingle by shingle
(`update`), then `MinHashLSH.query` + `insert` — measured on a slice (2,000 examples; 500 with --quick)
and extrapolated linearly to the full size. It covers only the near-duplicate step, so the ratio
understates mend's advantage. Recall of the planted cases is checked and reported in the notes.
"""
from __future__ import annotations

import time

import numpy as np

WORDS = ("model data rain river garden letter market summer window travel coffee music history science budget "
         "report meeting health planet ocean mountain city story recipe energy project student teacher question "
         "answer system network memory language review bright quiet gentle rapid ancient modern simple careful "
         "friendly honest happy calm busy early late north south east west winter spring autumn morning evening "
         "night table chair kitchen school office doctor nurse farmer baker writer painter engineer pilot driver "
         "river lake forest desert island bridge tower castle village harbour station library museum theatre").split()


def make_data(n: int, n_eval: int = 1000, seed: int = 0):
    rng = np.random.RandomState(seed)
    vocab = np.array(WORDS + [f"{w}{i}" for w in WORDS[:40] for i in range(60)])
    def texts(count, length):
        idx = rng.randint(0, len(vocab), size=(count, length))
        return [" ".join(row) for row in vocab[idx]]
    prompts, responses = texts(n, 25), texts(n, 90)
    evals = texts(n_eval, 30)
    emb = rng.standard_normal((n, 384)).astype(np.float32)
    planted = {"exact": [], "near": [], "semantic": [], "contaminated": []}
    for kind, share in (("exact", 0.02), ("near", 0.03), ("semantic", 0.02), ("contaminated", 0.01)):
        targets = rng.choice(np.arange(n // 2, n), size=int(n * share), replace=False)
        for t in targets:
            src = int(rng.randint(0, n // 2))
            if kind == "exact":
                prompts[t], responses[t], emb[t] = prompts[src], responses[src], emb[src]
            elif kind == "near":
                prompts[t], responses[t] = prompts[src], responses[src] + " " + " ".join(vocab[rng.randint(0, 50, 3)])
                emb[t] = emb[src]
            elif kind == "semantic":
                emb[t] = emb[src] / np.linalg.norm(emb[src]) + 0.01 * rng.standard_normal(384).astype(np.float32)
            else:
                e = evals[int(rng.randint(0, n_eval))].split()
                prompts[t] = " ".join(e[5:20]) + " " + prompts[t]
            planted[kind].append(int(t))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    eval_emb = rng.standard_normal((n_eval, 384)).astype(np.float32)
    eval_emb /= np.linalg.norm(eval_emb, axis=1, keepdims=True)
    # planted indices may overlap between kinds; keep each example's last planting only
    last = {}
    for kind, idx in planted.items():
        for t in idx:
            last[t] = kind
    planted = {k: [t for t, kk in last.items() if kk == k] for k in planted}
    return prompts, responses, emb, evals, eval_emb, planted


def run_mend(prompts, responses, emb, evals, eval_emb):
    """The same kernel sequence as curate.filters.decide + decontaminate, on survivors of each stage."""
    from curate import dedup
    docs = [f"{p}\n{r}" for p, r in zip(prompts, responses)]
    alive = np.arange(len(docs))
    status = np.zeros(len(docs), dtype=np.int8)  # 0 keep, 1 exact, 2 near, 3 semantic, 4 ngram, 5 embedding
    hit = dedup.exact_dups(docs)
    status[hit >= 0] = 1
    alive = alive[hit < 0]
    sig = dedup.signatures([docs[i] for i in alive], 128, 5)
    hit = dedup.near_dups(sig, None, 0.8)
    status[alive[hit >= 0]] = 2
    alive = alive[hit < 0]
    hit = dedup.semantic_dups(emb[alive], None, 0.95)
    status[alive[hit >= 0]] = 3
    alive = alive[hit < 0]
    hit = dedup.ngram_contaminated([prompts[i] for i in alive], evals, 13)
    status[alive[hit >= 0]] = 4
    alive = alive[hit < 0]
    cont = np.zeros(len(alive), dtype=bool)
    for s in range(0, len(alive), 8192):
        cont[s:s + 8192] = (emb[alive[s:s + 8192]] @ eval_emb.T).max(axis=1) > 0.9
    status[alive[cont]] = 5
    return status


def run_baseline(docs: list[str]) -> float:
    """Seconds for the per-example datasketch loop over docs."""
    from datasketch import MinHash, MinHashLSH
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    start = time.perf_counter()
    for i, d in enumerate(docs):
        m = MinHash(num_perm=128)
        w = d.lower().split()
        for j in range(max(1, len(w) - 4)):
            m.update(" ".join(w[j:j + 5]).encode("utf8"))
        if not lsh.query(m):
            lsh.insert(str(i), m)
    return time.perf_counter() - start


def embed_rate(n: int = 256) -> tuple[float, str]:
    from train.embed import embed  # mend's own module, always importable: no ImportError guard (tests/test_layers.py)
    texts = [f"sample prompt number {i} about rivers and gardens, answered in a short paragraph" for i in range(n)]
    embed(texts[:8])  # load the model outside the timing
    start = time.perf_counter()
    embed(texts)
    dt = time.perf_counter() - start
    return n / dt, f"MiniLM on {n} texts: {dt:.1f} s; 100k texts would take ~{100_000 / (n / dt) / 60:.0f} min"


def run(quick: bool) -> list[dict]:
    n = 20_000 if quick else 100_000
    slice_n = 500 if quick else 2_000
    prompts, responses, emb, evals, eval_emb, planted = make_data(n)
    start = time.perf_counter()
    status = run_mend(prompts, responses, emb, evals, eval_emb)
    mend_s = time.perf_counter() - start
    base_slice = run_baseline([f"{p}\n{r}" for p, r in zip(prompts[:slice_n], responses[:slice_n])])
    base_s = base_slice * n / slice_n
    recall = {k: float(np.mean(status[v] > 0)) if v else 1.0 for k, v in planted.items()}
    dropped = int((status > 0).sum())
    rate, note = embed_rate(64 if quick else 256)
    tag = " (quick)" if quick else ""
    return [
        {"benchmark": "dedup", "metric": f"dedup+decontam of {n:,} examples (s)", "mend": mend_s,
         "baseline": base_s, "ratio": base_s / mend_s, "target": "<= 30 s and >= 5x",
         "notes": (f"baseline: per-example datasketch MinHash.update + MinHashLSH loop on {slice_n:,} examples "
                   f"({base_slice:.1f} s), extrapolated x{n // slice_n}; it does the near-dup step only. "
                   f"dropped {dropped:,}; recall of planted exact {recall['exact']:.0%}, near {recall['near']:.0%}, "
                   f"semantic {recall['semantic']:.0%}, contaminated {recall['contaminated']:.0%}{tag}")},
        {"benchmark": "dedup", "metric": "embedding throughput (texts/s, not in the time above)", "mend": rate,
         "baseline": None, "ratio": None, "target": "", "notes": note + tag},
    ]
