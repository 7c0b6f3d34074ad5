"""Synthesis yield: what each candidate strategy makes, per IFEval instruction id, and what it costs.

    python bench/bench_synth.py yield --n 5        # the per-id table (prints it; --json FILE keeps it)
    python -m bench --only synth                   # both rows below into docs/benchmarks.md

Data: the committed sample traffic taken through the demo's ingest, eval and clusters stages into a scratch
database (`python -m curate nightly --demo --stop-after clusters`, MEND_DB pointed elsewhere: one cluster per
failing check). For every IFEval instruction id that has a cluster, each strategy runs on its own, on a fresh copy
of that database (no strategy sees another's rows or cached teacher calls):

- repair: the first n failing production responses of the cluster, repaired for every instruction of their own
  prompt (no teacher call); those prompts are the seed split's, with 1-3 instructions each.
- constrained, sample: n single-instruction prompts (a seed request + the id's instruction alone), one sample each.
- revise: the same n failing production responses, rewritten by the teacher with the checks' reasons.
- sample+repair: what synthesis does with a prompt: the same n single-instruction prompts, k samples each (the
  product's default k, 4), each failing sample repaired and two failing samples of a two-responses prompt joined.
  A prompt counts as kept once, however many of its samples (or repairs) were kept.

The share reported is prompts kept / prompts attempted: verified by every instruction of the prompt and passing the quality
filter. The second row compares the default synthesis (strategies in order, llama.cpp teacher) with the path the
demo used before strategies (guided samples from `transformers serve` without continuous batching, logit_bias
bans) on the demo's three clusters: kept examples per wall-minute of synthesis, same run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRATEGY_NAMES = ("repair", "constrained", "sample", "sample+repair", "revise")
PRODUCT_K = 4  # samples per prompt synthesis takes by default (CurateSettings.k): the sample+repair column's k
# revise runs on these only (a third of the ids, different kinds), to keep the bench near 20 minutes on 2 cores
REVISE_IDS = ["punctuation:no_comma", "change_case:english_capital", "detectable_format:title",
              "startend:end_checker", "detectable_format:number_bullet_lists", "keywords:forbidden_words",
              "length_constraints:number_paragraphs", "detectable_format:json_format"]


def prepare(db: Path) -> None:
    """The sample traffic ingested, scored and clustered with the demo profile, into `db`."""
    env = {**os.environ, "MEND_DB": str(db)}
    cmd = [sys.executable, "-m", "curate", "nightly", "--demo", "--new", "--stop-after", "clusters"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def cluster_per_id(con) -> dict[str, dict]:
    """The largest cluster of each failing check (the demo profile makes one per check)."""
    from curate.synth.driver import clusters
    out: dict[str, dict] = {}
    for c in sorted(clusters(con), key=lambda c: -c["size"]):
        out.setdefault(c["check_id"], c)
    return out


def single_instruction_prompts(con, cluster: dict, n: int) -> list:
    from curate.synth.driver import compose_prompts
    prompts = compose_prompts(con, cluster, 4 * n, failing_share=0.0)
    return [p for p in prompts if p.metadata.get("composed_from")][:n]


def run_strategy(db: Path, name: str, n: int, ids: list[str] | None = None, **overrides) -> dict:
    """One strategy alone over every id's cluster, on `db`: per id [prompts kept, attempted, candidates], seconds,
    teacher calls."""
    from rich.console import Console

    from bench import scratch_store
    from curate.synth import strategies
    from curate.synth.candidates import Budget, progress_bars
    from curate.synth.candidates import from_trace
    from curate.synth.driver import failing_seed_traces
    from traces import settings as settings_mod
    from traces import store
    parts = tuple(name.split("+"))  # "sample+repair": samples, each failing one then repaired (as synthesis does)
    on_production = parts[0] in ("repair", "revise")
    with scratch_store(db):
        k = overrides.pop("k", 1)
        s = settings_mod.load("curate", {"strategies": parts, "target_per_cluster": 0, "k": k, "guidance_k": k,
                                         "max_examples_per_cluster": 10_000, "max_calls_per_cluster": 10_000,
                                         "max_calls_total": 100_000, "synth_minutes": 0, "guidance": "always",
                                         **overrides})
        with store.connect() as con:
            chosen = cluster_per_id(con)
            chosen = {i: c for i, c in chosen.items() if ids is None or i in ids}
            jobs = []
            for check, c in chosen.items():
                failing = failing_seed_traces(con, c["cluster_id"])[:n] if on_production else []
                prompts = [from_trace(t, check) for t in failing] if on_production \
                    else single_instruction_prompts(con, c, n)
                jobs.append(strategies.Job(c, prompts, failing, strategies.Tally(c["label"], check)))
        budget = Budget(s.max_calls_total, s.max_cost_usd)
        start = time.perf_counter()
        with progress_bars(Console(stderr=True)) as progress:
            strategies.run(jobs, s, budget, progress)
        seconds = time.perf_counter() - start
        per_id = {}
        with store.connect(read_only=True) as con:
            for j in jobs:  # [prompts kept, attempted (repair: the sources it tried), candidates]
                kept, wrote = prompts_kept(con, j.cluster["cluster_id"], parts)
                per_id[j.cluster["check_id"]] = [kept, len(j.prompts) if parts == ("repair",) else wrote,
                                                 j.tally.counts(parts[0]).candidates]
    return {"per_id": per_id, "seconds": seconds, "calls": budget.spent_calls}


def prompts_kept(con, cluster_id: str, parts: tuple) -> tuple[int, int]:
    """(prompts with a kept example, prompts the first part wrote a candidate for): a prompt counts once however
    many of its k samples (or their repairs) were kept, as synthesis keeps what it needs per prompt."""
    first, kept = con.execute("""
        SELECT count(DISTINCT prompt) FILTER (WHERE strategy = ?),
               count(DISTINCT prompt) FILTER (WHERE status = 'verified')
        FROM examples WHERE cluster_id = ? AND list_contains(?, strategy)""",
                              [parts[0], cluster_id, list(parts)]).fetchone()
    return kept, first


def yield_table(n: int, ids: list[str] | None = None, names=STRATEGY_NAMES, only: dict | None = None,
                ks: dict | None = None, **overrides) -> dict:
    """{strategy: {check_id: [prompts kept, prompts attempted, candidates]}, ...} plus seconds and calls per
    strategy; `only` limits a strategy to some ids (revise costs the most teacher time and the 135M teacher rarely
    follows it); `ks` gives a strategy k samples per prompt (default 1)."""
    from evals.ifeval import registry
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.duckdb"
        prepare(base)
        out = {"n": n, "ids": sorted(ids or registry()), "strategies": {}}
        for name in names:
            db = Path(tmp) / f"{name}.duckdb"
            shutil.copy(base, db)
            k = (ks or {}).get(name, 1)
            r = run_strategy(db, name, n, (only or {}).get(name, ids), **overrides, k=k)
            out["strategies"][name] = {"seconds": round(r["seconds"], 1), "calls": r["calls"], "k": k,
                                       "per_id": r["per_id"]}
    return out


def demo_rate(n_calls: int) -> dict:
    """Kept examples per wall-minute on the demo's three clusters: default strategies + llama.cpp vs the old
    guided transformers-serve path, each on a fresh copy of the same database."""
    from bench import scratch_store
    from curate.synth.driver import choose_clusters, clusters
    from traces import store
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.duckdb"
        prepare(base)
        with scratch_store(base), store.connect(read_only=True) as con:
            ids = [c["check_id"] for c in clusters(con, choose_clusters(con, 3, "fixable"))]
        runs = {}
        for label, overrides in (("new", {"strategies": ("repair", "constrained", "sample"),
                                          "target_per_cluster": 16, "per_cluster": 10, "max_tokens": 128}),
                                 ("old", {"strategies": ("constrained",), "teacher_backend": "transformers",
                                          "per_cluster": 10, "guidance_k": 2, "max_tokens": 128,
                                          "max_calls_per_cluster": n_calls})):
            db = Path(tmp) / f"{label}.duckdb"
            shutil.copy(base, db)
            r = _run_default(db, ids, overrides) if label == "new" \
                else run_strategy(db, "constrained", 10, ids, **overrides)
            kept = sum(c.kept for c in r["counts"].values())
            runs[label] = {"kept": kept, "seconds": r["seconds"], "calls": r["calls"],
                           "per_minute": kept / (r["seconds"] / 60)}
    return {"ids": ids, **runs}


def _run_default(db: Path, ids: list[str], overrides: dict) -> dict:
    """The product's own synthesize() on the clusters of `ids` (strategies in order until the target)."""
    from rich.console import Console

    from bench import scratch_store
    from curate.synth.driver import synthesize
    from traces import store
    env = {f"MEND_CURATE_{k.upper()}": json.dumps(list(v)) if isinstance(v, tuple) else str(v)
           for k, v in overrides.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with scratch_store(db):
            with store.connect(read_only=True) as con:
                wanted = [c["cluster_id"] for c in cluster_per_id(con).values() if c["check_id"] in ids]
            start = time.perf_counter()
            tallies = synthesize(cluster_id=wanted, console=Console(stderr=True))
            seconds = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.update({k: v})
    counts = {}
    for t in tallies.values():
        for name, c in t.by_strategy.items():
            counts[f"{t.check_id}/{name}"] = c
    return {"counts": counts, "seconds": seconds, "calls": sum(t.total_candidates for t in tallies.values())}


# ------------------------------------------------------------------ rows and printing

def tried(name: str, got: list | None) -> int:
    """What a strategy attempted for an id: repair, the sources it tried; a teacher strategy, the prompts it
    wrote a candidate for (constrained skips a prompt without a constraint: that is not an attempt)."""
    return got[1] if got else 0


def table_markdown(y: dict) -> str:
    """The per-id table: kept/attempted per strategy, then the best share."""
    names = list(y["strategies"])
    heads = [f"{n} (k={y['strategies'][n].get('k', 1)})" if y["strategies"][n].get("k", 1) > 1 else n for n in names]
    lines = ["| instruction id | " + " | ".join(heads) + " | best |", "|---" * (len(names) + 2) + "|"]
    for i in y["ids"]:
        cells, best = [], 0.0
        for name in names:
            got = y["strategies"][name]["per_id"].get(i)
            if not tried(name, got):
                cells.append("-")
                continue
            kept, attempted = got[0], tried(name, got)
            best = max(best, kept / attempted)
            cells.append(f"{kept}/{attempted}")
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {best:.0%} |")
    return "\n".join(lines)


def ids_at(y: dict, share: float = 0.8) -> list[str]:
    """Ids where some strategy kept >= share of what it attempted."""
    out = []
    for i in y["ids"]:
        for name in y["strategies"]:
            got = y["strategies"][name]["per_id"].get(i)
            if tried(name, got) and got[0] / tried(name, got) >= share:
                out.append(i)
                break
    return out


def yield_row(y: dict) -> dict:
    good = ids_at(y)
    ks = ", ".join(f"{k}: {v.get('k', 1)} sample(s) per prompt" for k, v in y["strategies"].items() if k != "repair")
    per = "; ".join(f"{k}: {sum(v[0] for v in s['per_id'].values())}/"
                    f"{sum(tried(k, v) for v in s['per_id'].values())} "
                    f"kept in {s['seconds'] / 60:.1f} min, {s['calls']} teacher calls"
                    for k, s in y["strategies"].items())
    return {"benchmark": "synth yield per IFEval id (135M teacher, llama.cpp)",
            "metric": "ids with >= 80% kept by some strategy", "mend": len(good), "baseline": "", "ratio": "",
            "target": ">= 18 of 25", "notes": f"{y['n']} prompts per id and strategy ({ks}), {len(y['ids'])} ids, "
                                             f"a prompt counted once however it was kept; {per}; "
                                             f"ids >= 80%: {', '.join(good)}; per-id table: docs/synth-yield.md"}


def rate_row(d: dict) -> dict:
    new, old = d["new"], d["old"]
    return {"benchmark": "synth rate, demo's three clusters", "metric": "kept examples per wall-minute",
            "mend": round(new["per_minute"], 1), "baseline": round(old["per_minute"], 2),
            "ratio": round(new["per_minute"] / max(old["per_minute"], 1e-9), 1), "target": ">= 10x",
            "notes": f"clusters {', '.join(d['ids'])}; mend: repair, constrained, sample to 16 per cluster "
                     f"(llama.cpp): {new['kept']} kept in {new['seconds']:.0f} s; baseline: guided samples "
                     f"from transformers serve (logit_bias, no continuous batching, {old['calls']} calls): "
                     f"{old['kept']} kept in {old['seconds']:.0f} s; same run"}


def run(quick: bool) -> list[dict]:
    n = 1 if quick else 5
    y = yield_table(n, ids=["punctuation:no_comma", "change_case:english_lowercase"] if quick else None,
                    only={"revise": REVISE_IDS}, ks={"sample+repair": PRODUCT_K}, max_tokens=128)
    (ROOT / "data" / "bench").mkdir(parents=True, exist_ok=True)
    (ROOT / "data" / "bench" / "synth_yield.json").write_text(json.dumps(y, indent=1))
    return [yield_row(y)] if quick else [yield_row(y), rate_row(demo_rate(n_calls=4))]


def record(paths: list[str]) -> None:
    """Write the rows of saved results (yield or rate JSON files) into docs/benchmarks.md."""
    import datetime as dt

    from bench.__main__ import machine, record_rows
    rows = []
    for p in paths:
        r = json.loads(Path(p).read_text())
        rows.append(yield_row(r) if "strategies" in r else rate_row(r))
        if "strategies" in r:
            (ROOT / "docs" / "synth-yield.md").write_text(
                f"# Synthesis yield per IFEval instruction id\n\nWritten by `python bench/bench_synth.py record` "
                f"({dt.date.today().isoformat()}, {machine()}); kept/attempted per strategy, each strategy alone "
                f"on a fresh copy of the demo's clustered database (bench/bench_synth.py says how). `-`: the "
                f"strategy has nothing to try for that id (no constraint, or not run).\n\n{table_markdown(r)}\n")
    record_rows("synth", rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_synth.py")
    p.add_argument("what", choices=["yield", "rate", "record"])
    p.add_argument("files", nargs="*", help="record: saved --json results to write into docs/benchmarks.md")
    p.add_argument("--n", type=int, default=5, help="prompts per id and strategy")
    p.add_argument("--k", type=int, default=PRODUCT_K, help="samples per prompt of sample+repair (others: 1)")
    p.add_argument("--ids", default="", help="comma-separated instruction ids (default: all 25)")
    p.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    if a.what == "record":
        record(a.files)
        return 0
    if a.what == "rate":
        result = demo_rate(n_calls=a.n)
        print(json.dumps(result, indent=1))
    else:
        result = yield_table(a.n, [i for i in a.ids.split(",") if i] or None, a.strategies.split(","),
                             only={"revise": REVISE_IDS}, ks={"sample+repair": a.k}, max_tokens=128)
        print(table_markdown(result))
        print("ids >= 80%:", len(ids_at(result)), ids_at(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
