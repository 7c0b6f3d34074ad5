"""python -m bench --only embed [--quick] — embedding throughput for dedup, decontamination and clusters (issue 24).

All four figures embed the same texts (1,000 distinct prompt-like texts of 6 to ~50 words, generated from a seed;
200 with --quick) with train.embed's MiniLM, in one process, one after the other:
- per text (the baseline): `embed([text], batch_size=1)` once per text, on the first 10% of the texts (one text per
  call is so slow on the shared 2-core machine, 0.3-1.6 s a text at loads of 4-9 in trial runs, that all of them
  would take the bench's whole time; a rate needs no extrapolation);
- batched: `embed(texts)` as dedup, decontamination and clusters call it (batch_size 64; above 512 texts it encodes
  in chunks of 256 under a progress bar);
- cached per text: `cached(texts, embed, ...)` on a fresh scratch store (MEND_DB in a temp folder), then a second
  pass over the same number of texts of which 10% are new: only those are embedded, the rest read from the store;
  the row is the second pass (the nightly's case: a day's new prompts among the ones already seen);
- on Ray: `embed(texts, engine="ray")` on a local cluster of this machine's cores (`ray.init(num_cpus=cores)`); its
  start and a first small embedding (actor imports) are timed apart, the timed call includes its own actors' start
  and model load, as every call on Ray does. Its vectors are compared with the local batched ones (atol 1e-5).
  Ray runs each actor's torch on 1 thread (it sets OMP_NUM_THREADS=1), this process on torch's default (one per core);
  on a shared machine that alone changes the rate, so local batched is also timed on 1 thread, for the Ray row's notes.
The model is loaded before any timing. The machine is shared: the 1-min load average before each phase is in the
notes, and so are texts per CPU-second of this process for the in-process phases.
"""
from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from bench import timed

VERBS = ("Write", "Explain", "Summarize", "Describe", "List", "Draft", "Compare", "Give", "Outline", "Translate")
FORMS = ("a short poem", "an email", "a paragraph", "three bullet points", "a product description", "a haiku",
         "a story", "a cover letter", "a tweet", "an essay", "a recipe", "a limerick", "a summary", "a FAQ")
TOPICS = ("the river in winter", "our quarterly budget", "a trip to Lisbon", "learning to code", "the history of tea",
          "solar panels", "a lost cat", "the new office", "remote work", "sourdough bread", "a chess opening",
          "black holes", "a job interview", "the museum's reopening", "recycling rules", "a birthday party",
          "the city marathon", "password safety", "a vegetable garden", "the school library")
RULES = ("Do not use any commas.", "Answer in all lowercase letters.", "Wrap the whole answer in double quotes.",
         "Use at least {k} words.", "Use fewer than {k} words.", "End with the phrase 'Any other questions?'.",
         "Include the keywords {a} and {b}.", "Give it a title in double angular brackets.",
         "Write exactly {s} paragraphs separated by ***.", "Highlight at least {s} sections with markdown.", "")
WORDS = ("morning market letter garden summer window travel coffee music science meeting health planet ocean "
         "mountain story energy project student teacher question answer system network memory language review "
         "bright quiet gentle rapid ancient modern simple careful friendly honest calm busy early late").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    """n distinct prompt-like texts (a task, a topic, maybe an instruction, maybe some context), the same for a seed;
    a longer list from the same seed starts with the shorter one."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        rule = rng.choice(RULES).format(k=rng.randint(50, 400), s=rng.randint(2, 5), a=rng.choice(WORDS),
                                        b=rng.choice(WORDS))
        context = " ".join(rng.choice(WORDS) for _ in range(rng.choice((0, 0, 4, 12, 30))))
        text = " ".join(p for p in (f"{rng.choice(VERBS)} {rng.choice(FORMS)} about {rng.choice(TOPICS)}.", rule,
                                    f"Context: {context}." if context else "") if p)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _cpu_timed(fn, cpu: dict, key: str):
    """timed, and this process's CPU seconds of fn into cpu[key]."""
    start = time.process_time()
    out = timed(fn)
    cpu[key] = time.process_time() - start
    return out


def measure(n: int, per_text_n: int) -> dict:
    """Every figure of the rows, on the same n texts (plus n // 10 new ones for the cached second pass; one text per
    call on the first per_text_n)."""
    import numpy as np
    import ray
    import torch

    from bench import scratch_store
    from traces import store
    from train.embed import cached, embed
    new = n // 10
    texts = make_texts(n + new)
    first, second = texts[:n], texts[new:n + new]  # the second pass: 90% seen in the first, 10% new
    cores = len(os.sched_getaffinity(0))
    embed(first[:8], engine="local")  # load the model outside every timing
    loads, cpu = {"per text": os.getloadavg()[0]}, {}
    _, per_text_s = _cpu_timed(lambda: [embed([t], batch_size=1, progress=False, engine="local")
                                        for t in first[:per_text_n]], cpu, "per_text")
    loads["batched"] = os.getloadavg()[0]
    batched, batched_s = _cpu_timed(lambda: embed(first, batch_size=64, engine="local"), cpu, "batched")
    loads["cached"] = os.getloadavg()[0]
    embedded = []

    def counting(batch):
        embedded.append(len(batch))
        return embed(batch, batch_size=64, engine="local")

    with tempfile.TemporaryDirectory() as tmp, scratch_store(Path(tmp) / "mend.duckdb"):
        with store.connect():
            pass  # the fresh store's creation and migrations, outside the timing
        _, cold_s = _cpu_timed(lambda: cached(first, counting, "bench.embed"), cpu, "cold")
        warm, warm_s = _cpu_timed(lambda: cached(second, counting, "bench.embed"), cpu, "warm")
    by_text = dict(zip(first, batched))
    cache_same = bool(np.allclose(warm[:n - new], np.stack([by_text[t] for t in second[:n - new]]), atol=1e-5))
    loads["1 thread"] = os.getloadavg()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, one_thread_s = _cpu_timed(lambda: embed(first, batch_size=64, engine="local"), cpu, "one_thread")
    finally:
        torch.set_num_threads(threads)
    loads["Ray start"] = os.getloadavg()[0]
    _, start_s = timed(lambda: ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False))
    try:
        _, ray_warm_s = timed(lambda: embed(first[:32], batch_size=4, engine="ray"))  # actors' imports, apart
        loads["Ray"] = os.getloadavg()[0]
        on_ray, ray_s = timed(lambda: embed(first, batch_size=64, engine="ray"))
    finally:
        ray.shutdown()
    loads["after"] = os.getloadavg()[0]
    words = [len(t.split()) for t in first]
    return {"n": n, "new": new, "per_text_n": per_text_n, "cores": cores, "threads": threads,
            "words": (min(words), sum(words) / n, max(words)), "loads": loads, "cpu": cpu,
            "per_text_s": per_text_s, "batched_s": batched_s, "one_thread_s": one_thread_s,
            "cold_s": cold_s, "warm_s": warm_s, "embedded": embedded, "cache_same": cache_same,
            "ray_s": ray_s, "ray_start_s": start_s, "ray_warm_s": ray_warm_s,
            "ray_same": bool(np.allclose(on_ray, batched, atol=1e-5)),
            "ray_max_diff": float(np.abs(on_ray - batched).max())}


def rows(m: dict) -> list[dict]:
    """The rows of one measure() result: batched vs per text, the cached second pass and Ray vs batched; every ratio
    is within the one run."""
    n, new, few, cpu = m["n"], m["new"], m["per_text_n"], m["cpu"]
    per_text, batched = few / m["per_text_s"], n / m["batched_s"]
    warm, on_ray = n / m["warm_s"], n / m["ray_s"]
    embedded = sum(m["embedded"][1:])  # embedded[0]: the cold pass's one call
    lo, mean, hi = m["words"]
    common = (f"{n:,} distinct prompt-like texts ({lo} to {hi} words, {mean:.0f} on average, seeded; the issue's 100k "
              f"scaled down to minutes), MiniLM loaded before the timings, torch {m['threads']} threads, one process, "
              "same run; 1-min load average before each phase: "
              + ", ".join(f"{k} {v:.1f}" for k, v in m["loads"].items()) + f" ({m['cores']} shared cores)")
    return [
        {"benchmark": "embedding, batched", "metric": "texts/s, batched vs one text per call",
         "mend": round(batched, 1), "baseline": round(per_text, 1), "ratio": round(batched / per_text, 1),
         "target": "> 1x per text",
         "notes": f"mend: embed(texts), batch_size 64, all {n:,} ({m['batched_s']:.1f} s, {n / cpu['batched']:.0f} "
                  f"texts per CPU-second; 100k texts at this rate: ~{100_000 / batched / 60:.0f} min); baseline: "
                  f"embed([text], batch_size=1) per text on the first {few:,} ({m['per_text_s']:.1f} s, "
                  f"{few / cpu['per_text']:.1f} texts per CPU-second); {common}"},
        {"benchmark": "embedding, cached per text", "metric": f"texts/s, a pass with {new / n:.0%} new texts vs "
         "batched", "mend": round(warm, 1), "baseline": round(batched, 1), "ratio": round(warm / batched, 1),
         "target": "embeds only the new texts",
         "notes": f"mend: train.embed.cached on a scratch store, second pass of {n:,} texts of which {new:,} new: "
                  f"{embedded:,} embedded (only the new: {embedded == new}), {m['warm_s']:.1f} s, "
                  f"{n / cpu['warm']:.0f} texts per CPU-second; the vectors read back equal the batched ones: "
                  f"{m['cache_same']}; the first pass on the empty store embedded {m['embedded'][0]:,} at "
                  f"{n / m['cold_s']:.1f} texts/s with its writes; baseline: embed(texts) batched, all {n:,}; "
                  f"{common}"},
        {"benchmark": "embedding on Ray", "metric": "texts/s, engine ray vs local batched", "mend": round(on_ray, 1),
         "baseline": round(batched, 1), "ratio": round(on_ray / batched, 2),
         "target": "same vectors (atol 1e-5); overhead measured",
         "notes": f"mend: embed(texts, engine=\"ray\") on a local cluster of {m['cores']} CPUs (an actor per CPU, "
                  f"blocks of 256), {m['ray_s']:.1f} s including its actors' start and model load, as every call on "
                  f"Ray pays; the cluster's start ({m['ray_start_s']:.0f} s) and a first 32-text call "
                  f"({m['ray_warm_s']:.0f} s) not counted; vectors equal the local ones (atol 1e-5): {m['ray_same']} "
                  f"(max abs difference {m['ray_max_diff']:.1e}); baseline: local batched, torch {m['threads']} "
                  f"threads; Ray's actors run torch on 1 thread each: local batched on 1 thread made "
                  f"{n / m['one_thread_s']:.1f} texts/s in this run ({n / cpu['one_thread']:.0f} per CPU-second), "
                  f"so Ray vs that is {on_ray * m['one_thread_s'] / n:.2f}x; {common}"},
    ]


def run(quick: bool) -> list[dict]:
    return rows(measure(200, 20) if quick else measure(1_000, 100))
