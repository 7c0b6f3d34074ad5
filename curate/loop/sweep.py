"""python -m curate sweep [--training-set PATH] [--config "k=v ..."]... [--dry-run] — hyperparameters chosen on a
validation split, never on the gate's holdout.

1. Validation split, carved from the training data by group (a trace's split key, `traces.group_key`; an
   example's is its seed trace's): a seed group is in validation when sha256("mend-sweep-val:" + group), as a
   fraction of 2^32, is below `sweep_val_fraction` (salted: the holdout rule hashes the same keys unsalted).
   Only seed groups are eligible, so no holdout trace is ever scored here. Every item of a validation group —
   accepted example, passing-traffic or self-distilled replay row, preference pair — is left out of every
   candidate's training set.
2. Validation part: (a) target prompts = the accepted examples of validation groups and the seed traces of those
   groups that failed a check of a cluster the accepted examples came from (deduplicated by messages, the first
   `sweep_val_max` by a hash of the id); (b) anchors = the first `sweep_anchors` instruction-free requests of
   validation groups with the base's own greedy answer (curate/replay.py, cached).
3. Each grid config (`sweep_grid`: TrainSettings keys plus replay_self_share / replay_fraction / layout_targets /
   only_checks / max_train_examples;
   lora_alpha follows lora_r as 2 r unless given) gets its training set (curate/export.py build + write, under
   `sweep_dir`), is trained in-process (train.lora.run) and scored: target = share of (a) whose greedy answer passes
   all its own checks (evals.checks.verify_instructions); anchor NLL = mean per-token NLL of (b)'s answers
   (train.generate.sequence_nll), against the base's. rise = exp(NLL_adapter - NLL_base) - 1.
   (c) prose perplexity: the gate's perplexity guard's own measure (evals.guards.word_perplexity: lm-eval word
   perplexity on the local prose of evals/lm_eval_tasks/prose.py), on `sweep_prose_docs` documents starting at
   `sweep_prose_offset`. The gate scores the first `gate_lm_eval_docs` documents; the sweep refuses an offset below
   that, so it never tunes on the gate's prose (the default offset, 100, is well past the gate's 40).
   prose_rise = ppl_adapter / ppl_base - 1. The anchor NLL alone missed what the gate rejects: on the demo, sft
   lr 1e-3 3 epochs r 16 lowered it 16% while the gate's word perplexity rose 20% (117.4 -> 141.2).
4. The rule (RULE): the highest target among configs whose rise <= `sweep_anchor_tolerance`, whose prose_rise
   <= `sweep_prose_tolerance` (negative: the gate's `gate_ppl_tolerance`) and whose share of degenerate validation
   answers rose by at most `sweep_degenerate_tolerance` points (2; the gate allows 5); ties: the smaller
   max(rise, prose_rise), then grid order; when none is within all three, the smallest worst rise, each as a multiple of its tolerance.
   Exactly one row is `chosen`.

One `sweeps` row per config (docs/schema.md), with the train run it made. A sweep's id hashes the source training
set, the validation settings and the base: running it again, with the same grid or another one, reuses every config
already scored on that split (a failed one is tried again), appends new configs, and re-applies the rule over all of
them (e.g. after a new tolerance). A config scored before a figure existed is scored again from its adapter, without
training: all of it before the per-check metrics, only (c) when its prose figure is missing or was taken on other
documents (another sweep_prose_docs / sweep_prose_offset); the base is scored again for what is rescored.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from curate.loop.validation import (ProsePlan, Validation, _prose_words, carve, churn,  # noqa: F401
                                    in_validation, paired, prose_documents, prose_plan, prose_score, score, target_prompts,
                                    validation_groups)
from traces import store
from traces.settings import SettingsError, load, resolve_path
from traces.terminal import safe
from train.lora_runs import PREFERENCE_KEYS  # DPO's own figures, kept per config

RULE = ("highest validation target pass rate (the largest gain over the base) among configs whose anchor perplexity "
        "rise <= {tol:.0%}, prose word perplexity rise <= {ptol:.0%} ({prose}) and share of degenerate validation "
        "answers rise <= {dtol:g} points; ties: smaller max(anchor rise, prose rise), then grid order; none within "
        "all three: the smallest worst rise, each taken as a multiple of its own tolerance")
CURATE_KEYS = {"replay_self_share": float, "replay_fraction": float, "layout_targets": bool,
               "only_checks": str,  # "a+b": the clusters of those checks only (their examples)
               "max_train_examples": int}  # accepted examples exported at most (0: every one)


# ---------------------------------------------------------------- grid

def parse_config(text: str) -> dict:
    """"method=sft lr=1e-3 lora_r=8" -> {"method": "sft", "lr": 0.001, "lora_r": 8, "lora_alpha": 16}."""
    from train.settings import TrainSettings
    types = {f.name: type(f.default) for f in dataclasses.fields(TrainSettings)} | CURATE_KEYS
    out = {}
    for part in text.replace(",", " ").split():
        key, sep, value = part.partition("=")
        if not sep or key not in types:
            raise SettingsError(f"sweep config {text!r}: {part!r} is not key=value with a train setting or "
                                f"{'/'.join(CURATE_KEYS)}")
        kind = types[key]
        try:
            out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise SettingsError(f"sweep config {text!r}: {key}={value!r} is not a {kind.__name__}") from None
    if "lora_r" in out and "lora_alpha" not in out:
        out["lora_alpha"] = 2 * out["lora_r"]  # keep the scaling alpha / r = 2 of the defaults
    return out


def train_flags(config: dict, training_set: Path) -> list[str]:
    flags = ["--training-set", str(training_set)]
    for key, value in config.items():
        if key in CURATE_KEYS:
            continue
        flag = "--" + key.replace("_", "-")
        flags += ([flag] if value else ["--no-" + key.replace("_", "-")]) if isinstance(value, bool) \
            else [flag, str(value)]
    return flags


def _only(config: dict) -> frozenset | None:
    return frozenset(config["only_checks"].split("+")) if config.get("only_checks") else None


def _export_args(config: dict, cs) -> dict:
    """export.build's keywords for a config: its own curate keys, else the settings' (what the nightly exports)."""
    return {"max_examples": config.get("max_train_examples", cs.max_train_examples),
            "layout_targets": config.get("layout_targets", cs.layout_targets), "only_checks": _only(config)}


def describe(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items() if k != "lora_alpha")


# ---------------------------------------------------------------- the rule

def rise(metrics: dict) -> float:
    """Perplexity rise of the base's own answers under the adapter: exp(NLL_adapter - NLL_base) - 1."""
    if metrics.get("anchor_nll") is None or metrics.get("base_anchor_nll") is None:
        return 0.0
    return math.exp(metrics["anchor_nll"] - metrics["base_anchor_nll"]) - 1


def prose_rise(metrics: dict) -> float:
    """Rise of the prose word perplexity under the adapter: ppl_adapter / ppl_base - 1 (0 when not measured)."""
    if metrics.get("prose_ppl") is None or not metrics.get("base_prose_ppl"):
        return 0.0
    return metrics["prose_ppl"] / metrics["base_prose_ppl"] - 1


def degenerate_rise(metrics: dict) -> float:
    """Rise of the share of degenerate validation answers, in points: the larger of the target prompts' (a) and the
    validation traffic's (d), as the gate's guard counts every holdout answer (0 where not measured)."""
    rises = [100 * (metrics[k] - metrics["base_" + k]) for k in ("degenerate", "traffic_degenerate")
             if metrics.get(k) is not None and metrics.get("base_" + k) is not None]
    return max(rises, default=0.0)


def worst_rise(metrics: dict) -> float:
    return max(rise(metrics), prose_rise(metrics))


def choose(rows: list[dict], tolerance: float, prose_tolerance: float, degenerate_tolerance: float = 100.0
           ) -> int | None:
    """config_idx the rule picks among complete rows ({"config_idx", "status", "metrics"}); None if none finished."""
    done = [r for r in rows if r["status"] == "complete"]
    if not done:
        return None
    within = [r for r in done if rise(r["metrics"]) <= tolerance and prose_rise(r["metrics"]) <= prose_tolerance
              and degenerate_rise(r["metrics"]) <= degenerate_tolerance]
    if within:
        best = max(within, key=lambda r: (r["metrics"]["target_pass"] or 0.0, -worst_rise(r["metrics"]),
                                          -r["config_idx"]))
    else:  # the least harm: each rise measured against its own tolerance, the worst of the three the smallest
        def overshoot(m: dict) -> float:
            return max(rise(m) / max(tolerance, 1e-9), prose_rise(m) / max(prose_tolerance, 1e-9),
                       degenerate_rise(m) / max(degenerate_tolerance, 1e-9))
        best = min(done, key=lambda r: (overshoot(r["metrics"]), r["config_idx"]))
    return best["config_idx"]


# ---------------------------------------------------------------- store

def sweep_id(source_hash: str, cs, model: str) -> str:
    """One sweep per (training set, validation split, base): every config tried on it is compared with the others."""
    key = json.dumps([source_hash, cs.sweep_val_fraction, cs.sweep_val_max, cs.sweep_anchors, model], sort_keys=True)
    return "sweep-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def rows(sid: str) -> list[dict]:
    with store.connect(read_only=True) as con:
        found = con.execute("""SELECT config_idx, config, run_id, status, metrics, chosen, error FROM sweeps
                               WHERE sweep_id = ? ORDER BY config_idx""", [sid]).fetchall()
    return [{"config_idx": r[0], "config": json.loads(r[1]), "run_id": r[2], "status": r[3],
             "metrics": json.loads(r[4]) if r[4] else {}, "chosen": r[5], "error": r[6]} for r in found]


def _insert(sid, idx, config, run_id, status, metrics, source_hash, training_set, rule, error=None) -> None:
    with store.connect() as con:
        con.execute("""INSERT OR REPLACE INTO sweeps (sweep_id, config_idx, config, run_id, status, metrics, chosen,
                       rule, source_set_hash, training_set, error, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, false, ?, ?, ?, ?, now())""",
                    [sid, idx, json.dumps(config), run_id, status, json.dumps(metrics), rule, source_hash,
                     str(training_set), error])


def mark_chosen(sid: str, idx: int | None, rule: str) -> None:
    with store.connect() as con, store.transaction(con):
        con.execute("UPDATE sweeps SET chosen = (config_idx = ?), rule = ? WHERE sweep_id = ?",
                    [-1 if idx is None else idx, rule, sid])


# ---------------------------------------------------------------- the sweep

def run_sweep(training_set: str | None = None, grid: list[str] | None = None, train_fn=None, score_fn=None,
              answerer=None, console: Console | None = None, prose_fn=None) -> dict:
    """Train and score every config of the grid; returns {"sweep_id", "rows", "chosen", "base", "validation"}.
    score_fn(model_ref, adapter, val) scores (a) and (b), prose_fn(model_ref, adapter) (c); adapter None: the base."""
    from curate import export
    from train import lora_data
    console = console or Console()
    cs, ts = load("curate"), load("train")
    path = resolve_path(training_set or cs.train_out)
    source_hash = lora_data.set_hash(lora_data.read_training_set(path))
    configs = [parse_config(c) for c in (grid or cs.sweep_grid)]
    sid = sweep_id(source_hash, cs, ts.model)
    plan = prose_plan(cs)  # before anything is trained: refuses documents the gate scores
    dtol = degenerate_tolerance(cs)
    rule = RULE.format(tol=cs.sweep_anchor_tolerance, ptol=plan.tolerance, prose=_prose_words(plan), dtol=dtol)
    score_fn = score_fn or score
    prose_fn = prose_fn or (lambda ref, adapter: prose_score(ref, adapter, plan))
    val = carve(cs.sweep_val_fraction, cs.sweep_val_max, cs.sweep_anchors, answerer, cs.sweep_val_traffic)
    console.print(f"sweep {sid}: {len(configs)} config(s); validation: {len(val.groups)} seed group(s), "
                  f"{len(val.prompts)} target prompt(s), {len(val.traffic)} traffic trace(s), "
                  f"{len(val.anchors)} anchor answer(s); prose perplexity: "
                  f"{_prose_words(plan)}")
    found = rows(sid)
    done = [r for r in found if r["status"] == "complete"]
    stale = [r for r in done if not _scored(r["metrics"])]  # scored before the per-check metrics: all again
    unprosed = [r for r in done if _scored(r["metrics"]) and not _prose_scored(r["metrics"], plan)]  # (c) again
    if done and not stale:  # a resumed or extended sweep: the base was scored on the same validation part
        base = _base_of(done[0]["metrics"], "base_", VAL_KEYS)
    else:
        console.rule("base (no adapter)")
        base = _base_of(score_fn(ts.model, None, val), "", VAL_KEYS)
    if done and not stale and not unprosed:  # ... and on the same prose documents
        base |= _base_of(done[0]["metrics"], "base_", PROSE_KEYS)
    else:
        console.rule("base (no adapter): prose perplexity")
        base |= _base_of(prose_fn(ts.model, None), "", PROSE_KEYS)
    for r in stale + unprosed:  # the same adapter on the same validation part, scored again: no retraining
        console.rule(f"config {r['config_idx']}: scored again ({safe(describe(r['config']))})")
        _rescore(sid, r, val, base, score_fn, prose_fn, full=r in stale)
    for config in configs:
        if any(r["config"] == config for r in done):  # scored already (this grid or an earlier one)
            continue
        failed = [r["config_idx"] for r in found if r["config"] == config]
        idx = failed[0] if failed else max([r["config_idx"] for r in found] + [-1]) + 1
        found.append({"config_idx": idx, "config": config})
        console.rule(f"config {idx}: {safe(describe(config))}")
        _run_config(sid, idx, config, val, base, cs, source_hash, path, rule, train_fn, score_fn, prose_fn,
                    answerer, export)
    found = rows(sid)
    chosen = choose(found, cs.sweep_anchor_tolerance, plan.tolerance, dtol)
    mark_chosen(sid, chosen, rule)
    return {"sweep_id": sid, "rows": rows(sid), "chosen": chosen, "base": base, "rule": rule,
            "validation": {"groups": len(val.groups), "prompts": len(val.prompts), "anchors": len(val.anchors),
                           "prose_docs": plan.docs, "prose_offset": plan.offset}}


VAL_KEYS = ("target_pass", "checks_pass", "prompt_pass", "anchor_nll", "degenerate", "outcomes",  # (a), (b)
            "traffic_pass", "traffic_degenerate", "traffic_flags")  # (d)


def degenerate_tolerance(cs) -> float:
    """Points the share of degenerate validation answers may rise: sweep_degenerate_tolerance, or (negative) the
    gate's gate_degeneration_tolerance."""
    return cs.sweep_degenerate_tolerance if cs.sweep_degenerate_tolerance >= 0 else \
        load("evals").gate_degeneration_tolerance
PROSE_KEYS = ("prose_ppl",)  # (c)


def _base_of(metrics: dict, prefix: str, keys: tuple) -> dict:
    return {"base_" + k: metrics.get(prefix + k) for k in keys}


def _scored(metrics: dict) -> bool:
    """(a) and (b) taken, with every figure of today's score (a row from before `degenerate` is scored again)."""
    return "n_targets" in metrics and "degenerate" in metrics and "outcomes" in metrics \
        and "traffic_degenerate" in metrics


def _prose_scored(metrics: dict, plan: ProsePlan) -> bool:
    """(c) taken on the documents this sweep scores (a row from before it existed has no prose figure)."""
    return "prose_ppl" in metrics and (metrics.get("prose_docs"), metrics.get("prose_offset")) == (plan.docs,
                                                                                                  plan.offset)


def _finish(metrics: dict, base: dict) -> dict:
    metrics["rise"] = rise(metrics)
    metrics["prose_rise"] = prose_rise(metrics)
    metrics["degenerate_rise"] = degenerate_rise(metrics)
    metrics["beats_base"] = (metrics["target_pass"] or 0.0) > (base["base_target_pass"] or 0.0)
    metrics["gain"] = (metrics["target_pass"] or 0.0) - (base["base_target_pass"] or 0.0)
    metrics.update(paired(metrics.get("outcomes"), base.get("base_outcomes")))
    metrics.update(churn(metrics.get("traffic_flags"), base.get("base_traffic_flags")))
    return metrics


def _rescore(sid: str, row: dict, val: Validation, base: dict, score_fn, prose_fn, full: bool) -> None:
    """full: (a), (b) and (c) again; else (c) only, the row's other figures kept."""
    with store.connect(read_only=True) as con:
        (adapter,) = con.execute("SELECT adapter_path FROM train_runs WHERE run_id = ?", [row["run_id"]]).fetchone()
    model_ref, adapter = load("train").model, resolve_path(adapter)
    if full:
        kept = {k: row["metrics"].get(k) for k in ("counts", "final_loss", "last_step", *PREFERENCE_KEYS)}
        metrics = {**score_fn(model_ref, adapter, val), **kept}
    else:
        metrics = dict(row["metrics"])
    metrics = _finish({**metrics, **prose_fn(model_ref, adapter), **base}, base)
    with store.connect() as con:
        con.execute("UPDATE sweeps SET metrics = ? WHERE sweep_id = ? AND config_idx = ?",
                    [json.dumps(metrics), sid, row["config_idx"]])


def _run_config(sid, idx, config, val, base, cs, source_hash, path, rule, train_fn, score_fn, prose_fn, answerer,
                export):
    share = config.get("replay_self_share", cs.replay_self_share)
    fraction = config.get("replay_fraction", cs.replay_fraction)
    out = resolve_path(cs.sweep_dir) / sid / f"c{idx}" / "train.jsonl"
    run_id = None
    try:
        items, counts, prefs = export.build(fraction, share, val.groups, answerer, **_export_args(config, cs))
        # ... what the nightly would train with these settings
        export.write(items, counts, out, fraction, prefs, share)
        if train_fn is None:
            from train.lora import run as train_fn  # imports torch: only when a sweep trains
        result = train_fn(train_flags(config, out))
        run_id = result.run_id
        if result.status != "complete":
            raise RuntimeError(f"training failed: {result.error}")
        model_ref = load("train").model
        metrics = {**score_fn(model_ref, result.adapter_dir, val), **prose_fn(model_ref, result.adapter_dir), **base,
                   "counts": counts, "final_loss": result.metrics.get("final_loss"),
                   "last_step": result.metrics.get("last_step"),
                   **{k: result.metrics.get(k) for k in PREFERENCE_KEYS}}
    except Exception as e:  # one config failing (e.g. DPO without pairs) does not end the sweep
        _insert(sid, idx, config, run_id, "failed", {**base}, source_hash, path, rule, f"{type(e).__name__}: {e}")
        Console(stderr=True).print(f"[red]config {idx} failed:[/] {safe(f'{type(e).__name__}: {e}')}")
        return
    _insert(sid, idx, config, run_id, "complete", _finish(metrics, base), source_hash, path, rule)


# ---------------------------------------------------------------- showing it

def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(sid: str, found: list[dict]) -> Table:
    base = next((r["metrics"] for r in found if r["metrics"]), {})
    t = Table(title=f"sweep {sid} — base: targeted checks {_pct(base.get('base_target_pass'))}%, all checks "
                    f"{_pct(base.get('base_checks_pass'))}%, anchor NLL {_f(base.get('base_anchor_nll'))}, prose "
                    f"word perplexity {_f(base.get('base_prose_ppl'), 2)}, degenerate answers "
                    f"{_pct(base.get('base_degenerate'))}%, traffic: passing {_pct(base.get('base_traffic_pass'))}% "
                    f"degenerate {_pct(base.get('base_traffic_degenerate'))}%")
    cols = ["#", "config", "run", "target %", "fixed/broken", "p", "checks %", "anchor rise %", "prose ppl", "prose rise %",
            "degenerate %", "traffic %", "traffic degenerate %", "newly/cured", "margin", "logp chosen", "steps", "status", "chosen"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("config", "run", "status", "chosen") else "right",
                     overflow="fold" if col in ("config", "run") else "ellipsis")
    for r in found:
        m, complete = r["metrics"], r["status"] == "complete"
        t.add_row(str(r["config_idx"]), safe(describe(r["config"])), safe(r["run_id"] or "-"),
                  _pct(m.get("target_pass")), f"{m.get('fixed', '-')}/{m.get('broken', '-')}", _f(m.get("p"), 3),
                  _pct(m.get("checks_pass")), _pct(m.get("rise")) if complete else "-",
                  _f(m.get("prose_ppl"), 2), _pct(m.get("prose_rise")) if complete else "-", _pct(m.get("degenerate")),
                  _pct(m.get("traffic_pass")), _pct(m.get("traffic_degenerate")),
                  f"{m.get('traffic_newly', '-')}/{m.get('traffic_cured', '-')}", _f(m.get("rewards/margins"), 2), _f(m.get("logps/chosen"), 1), str(m.get("last_step") or "-"),
                  r["status"] if not r["error"] else safe(f"failed: {r['error'][:60]}"),
                  "[bold green]yes[/]" if r["chosen"] else "")
    return t


def _f(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate sweep", description="train each grid config on the training "
                                "data minus a validation split, score it there, choose one by a stated rule")
    p.add_argument("--training-set", help="the exported training set to carve from (default: settings train_out)")
    p.add_argument("--config", action="append", help='a grid config, e.g. "method=sft lr=1e-3 epochs=3 lora_r=16 '
                   'replay_self_share=0.5" (repeat; default: settings sweep_grid)')
    p.add_argument("--dry-run", action="store_true", help="show the validation split and the grid, train nothing")
    args = p.parse_args(argv)
    # 19 columns: a terminal folds them to fit; a log file (cron, `> sweep.log`) gets them at full width, not
    # folded to 80 characters that cut every heading
    console = Console() if sys.stdout.isatty() else Console(width=260)
    if args.dry_run:
        cs = load("curate")
        val = carve(cs.sweep_val_fraction, cs.sweep_val_max, 0)
        console.print(f"validation: {len(val.groups)} seed group(s), {len(val.prompts)} target prompt(s); prose "
                      f"perplexity: {_prose_words(prose_plan(cs))}")
        for i, c in enumerate(args.config or cs.sweep_grid):
            console.print(f"  config {i}: {safe(describe(parse_config(c)))}")
        return 0
    out = run_sweep(args.training_set, args.config, console=console)
    console.print(table(out["sweep_id"], out["rows"]))
    console.print(f"rule: {out['rule']}", markup=False)
    if out["chosen"] is None:
        console.print("[red]no config finished training[/]")
        return 1
    best = next(r for r in out["rows"] if r["chosen"])
    verdict = "beats" if best["metrics"].get("beats_base") else "does NOT beat"
    console.print(f"chosen: config {best['config_idx']} ({safe(describe(best['config']))}), which {verdict} the base "
                  f"on the validation targets")
    return 0
