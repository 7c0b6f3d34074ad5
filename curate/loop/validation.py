"""The sweep's yardstick (curate/loop/sweep.py): the validation split carved from the training data, and how a
config is scored on it. Never the gate's holdout: only seed groups are eligible.

- Target prompts: accepted examples of validation groups, then the failing seed traces of those groups in the
  trained clusters, then (when that is fewer than `sweep_val_max`) single-instruction prompts: a validation group's
  instruction-free request with one trained check's instruction, drawn by evals.ifeval (round robin over the
  checks). 24 prompts could not rank configs: 4/24 vs 8/24 degenerate answers is Fisher p = 0.32.
- Each prompt's outcome is kept (`outcomes`: passed every targeted check), so a config is compared with the base
  prompt by prompt (fixed, broken, exact McNemar p), as the gate compares on the holdout.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from traces import store
from traces.settings import SettingsError, load


def in_validation(group: str, fraction: float) -> bool:
    h = hashlib.sha256(f"mend-sweep-val:{group}".encode()).hexdigest()
    return int(h[:8], 16) / 2 ** 32 < fraction


@dataclass
class Validation:
    groups: frozenset
    prompts: list  # [{"id", "messages", "prompt", "metadata"}]: (a) target prompts
    anchors: list  # [{"id", "messages": request + the base's answer}]: (b)
    traffic: list = ()  # [{"id", "messages", "prompt", "metadata"}]: (d) every seed trace of the validation groups


def validation_groups(con, fraction: float) -> frozenset:
    """Seed groups in validation; a group with any holdout trace is never one (it would be if the split settings
    changed between ingests)."""
    rows = con.execute("""SELECT DISTINCT group_key FROM traces WHERE split = 'seed' AND group_key IS NOT NULL
                          AND group_key NOT IN (SELECT group_key FROM traces WHERE split = 'holdout'
                                                AND group_key IS NOT NULL)""").fetchall()
    return frozenset(g for (g,) in rows if in_validation(g, fraction))


def trained_checks(con) -> list[str]:
    """The checks of the clusters accepted examples came from (what an adapter is taught to fix), sorted."""
    return sorted(c for (c,) in con.execute("""SELECT DISTINCT c.check_id FROM clusters c JOIN examples e
                                               USING (cluster_id) WHERE e.status = 'accepted'""").fetchall())


def target_prompts(con, groups: frozenset, limit: int) -> list[dict]:
    """Accepted examples of validation groups + failing seed traces of those groups in the examples' clusters,
    then single-instruction prompts up to `limit`. `targets`: the prompt's checks that are a trained cluster's check
    (what the adapter was taught to fix)."""
    trained = set(trained_checks(con))
    rows = con.execute("""
        SELECT e.example_id, e.messages, e.prompt, e.metadata, t.group_key
        FROM examples e JOIN traces t ON t.trace_id = e.seed_trace_id AND t.split = 'seed'
        WHERE e.status = 'accepted'
        UNION ALL
        SELECT DISTINCT t.trace_id, t.messages, t.prompt, t.metadata, t.group_key
        FROM cluster_members m JOIN traces t ON t.trace_id = m.trace_id
        WHERE m.split = 'seed' AND t.split = 'seed'
          AND m.cluster_id IN (SELECT cluster_id FROM examples WHERE status = 'accepted')""").fetchall()
    seen, out = set(), []
    for pid, messages, prompt, md, group in sorted(rows, key=lambda r: hashlib.sha256(r[0].encode()).hexdigest()):
        msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in json.loads(messages)
                if m.get("role") in ("system", "user", "assistant")]
        key = json.dumps(msgs, sort_keys=True)
        if group in groups and key not in seen and msgs and msgs[-1]["role"] == "user":
            seen.add(key)
            meta = json.loads(md) if md else {}
            targets = [c for c in (meta.get("instruction_id_list") or []) if c in trained]
            meta, targets = with_answer_checks(meta, targets, trained)
            out.append({"id": pid, "messages": msgs, "prompt": prompt, "metadata": meta, "targets": targets})
    if len(out) < limit:
        out += single_instruction_prompts(con, groups, sorted(trained), limit - len(out), seen)
    return out[:limit]


ANSWER_CHECKS = ("fluent",)  # checks a suite runs on every answer, without arguments (instruction_following's)


def with_answer_checks(meta: dict, targets: list, trained) -> tuple[dict, list]:
    """A trained check that judges every answer (fluent) is a target of every validation prompt, verified through
    the prompt's metadata `checks` as synthesis verifies candidates."""
    extra = [c for c in ANSWER_CHECKS if c in trained]
    if not extra:
        return meta, targets
    have = [c for c in meta.get("checks") or [] if isinstance(c, dict)]
    new = [{"check": c, "args": {}} for c in extra if c not in {h.get("check") for h in have}]
    return {**meta, "checks": have + new}, targets + extra


def single_instruction_prompts(con, groups: frozenset, checks: list[str], need: int, seen: set) -> list[dict]:
    """Validation groups' instruction-free requests, each given one trained check's instruction: every request
    once (checks rotating) before any request twice. Checks that are not IFEval instructions give none."""
    from curate import replay
    from evals import ifeval
    requests = [r for r in replay.base_requests(con) if r["group"] in groups]
    out = []
    for turn in range(len(checks)):
        for i, r in enumerate(requests):
            if len(out) >= need:
                return out
            check, base = checks[(i + turn) % len(checks)], r["messages"][0]["content"]
            drawn = ifeval.fresh_instruction(check, base, f"mend-sweep-val:{r['trace_id']}:{check}")
            if drawn is None:
                continue
            text = f"{base} {drawn[0]}"
            msgs = [{"role": "user", "content": text}]
            if json.dumps(msgs, sort_keys=True) in seen:
                continue
            seen.add(json.dumps(msgs, sort_keys=True))
            meta = {"base_id": r["group"], "instruction_id_list": [check], "kwargs": [drawn[1]], "base_request": base}
            meta, targets = with_answer_checks(meta, [check], set(checks))
            out.append({"id": f"val-{r['trace_id']}-{check}", "messages": msgs, "prompt": text, "metadata": meta,
                        "targets": targets})
    return out


def traffic_prompts(con, groups: frozenset, limit: int) -> list[dict]:
    """(d) The validation groups' seed traces, all of them (passing or not, any cluster), by a hash of the id: what
    the gate's suite line and degeneration guard see on the holdout. The target prompts (a) are failing prompts of
    the trained clusters only, and on them the degenerate share fell where the holdout's rose (docs/results.md,
    2026-12-07): a config is judged on both."""
    if limit <= 0:
        return []
    from evals.runner import conversation  # the gate's own request building, so both ask the same questions
    rows = con.execute("""SELECT trace_id, messages, prompt, metadata FROM traces
                          WHERE split = 'seed' AND list_contains(?, group_key) ORDER BY sha256(trace_id)""",
                       [sorted(groups)]).fetchall()
    out = []
    for tid, messages, prompt, md in rows:
        msgs = conversation({"messages": messages, "prompt": prompt})
        if msgs[-1]["role"] == "user":
            out.append({"id": tid, "messages": msgs, "prompt": prompt, "metadata": json.loads(md) if md else {}})
        if len(out) == limit:
            break
    return out


def carve(fraction: float, val_max: int, n_anchors: int, answerer=None, traffic_max: int = 0) -> Validation:
    from curate import replay
    with store.connect(read_only=True) as con:
        groups = validation_groups(con, fraction)
        prompts = target_prompts(con, groups, val_max)
        traffic = traffic_prompts(con, groups, traffic_max)
        requests = [r for r in replay.base_requests(con) if r["group"] in groups]
    anchors = replay.self_items(requests, n_anchors, answerer)  # connection closed: this may generate
    return Validation(groups, prompts, anchors, traffic)


# ---------------------------------------------------------------- scoring

def score(model_ref: str, adapter, val: Validation) -> dict:
    """(a) on the validation prompts, greedy: `target_pass` = share of their targeted checks (a trained cluster's
    check) that pass, `checks_pass` = share of all their checks, `prompt_pass` = share of prompts passing every check
    (the demo's prompts carry 1-3 instructions: the base passed none of 24 whole); (b) `anchor_nll` = mean per-token
    NLL of the base's own answers to the anchor requests; `degenerate` = share of (a)'s answers the quality filter
    (evals.quality) calls degenerate, as the gate's degeneration guard counts them on the holdout."""
    from evals.checks import verify_instructions
    from evals.quality import degenerate
    from evals.student import Student
    from train import generate as tg
    s = load("train")
    student = Student(model_ref, adapter)  # answers in-process or served (student_url); NLL is always in-process
    gens = student.generate([p["messages"] for p in val.prompts], max_new_tokens=s.max_new_tokens,
                            batch_size=s.batch_size)
    results = [verify_instructions(p["prompt"], g.text, p["metadata"]) for p, g in zip(val.prompts, gens)]
    every = [r.passed for checks in results for _, r in checks]
    aimed = [r.passed for p, checks in zip(val.prompts, results) for cid, r in checks if cid in p.get("targets", ())]
    whole = sum(bool(checks) and all(r.passed for _, r in checks) for checks in results)
    nll = tg.sequence_nll(*student.loaded(), [a["messages"][:-1] for a in val.anchors],
                          [a["messages"][-1]["content"] for a in val.anchors]) if val.anchors else []
    outcomes = [all(r.passed for cid, r in checks if cid in p.get("targets", ())) if p.get("targets") else None
                for p, checks in zip(val.prompts, results)]
    return {"target_pass": _share(aimed), "n_targets": len(aimed), "checks_pass": _share(every),
            "n_checks": len(every), "prompt_pass": whole / len(gens) if gens else None, "n_val": len(gens),
            "anchor_nll": sum(nll) / len(nll) if nll else None, "n_anchors": len(nll),
            "degenerate": _share([degenerate(g.text, p["prompt"], p["metadata"]) for p, g in zip(val.prompts, gens)]),
            "outcomes": outcomes, **traffic_score(student, val.traffic, s)}


def traffic_score(student, traffic: list, s) -> dict:
    """(d) on the validation traffic, greedy at the gate's budget: `traffic_pass` = share of traces passing every
    instruction of their own, `traffic_degenerate` = share of degenerate answers (the gate's guard, on seed groups)."""
    from evals.checks import verify_instructions
    from evals.quality import degenerate
    if not traffic:
        return {"traffic_pass": None, "traffic_degenerate": None, "n_traffic": 0, "traffic_flags": []}
    gens = student.generate([p["messages"] for p in traffic], max_new_tokens=s.max_new_tokens,
                            batch_size=s.batch_size)
    passed = [all(r.passed for _, r in verify_instructions(p["prompt"], g.text, p["metadata"]))
              for p, g in zip(traffic, gens)]
    flags = [degenerate(g.text, p["prompt"], p["metadata"]) for p, g in zip(traffic, gens)]
    return {"traffic_pass": _share(passed), "n_traffic": len(gens), "traffic_degenerate": _share(flags),
            "traffic_flags": flags}


def churn(flags: list, base_flags: list) -> dict:
    """Validation traffic answer by answer: how many the config made degenerate and how many it cured. A share can
    stay flat while both counts are large (the holdout's `fluent` clusters: 20 fixed / 18 broken), and the gate's
    guard then fails on whichever way chance tips the holdout."""
    from evals.stats import discordant  # McNemar's discordant pairs, with degenerate as the "passed" side
    flags, base_flags = flags or [], base_flags or []
    n = min(len(flags), len(base_flags))  # a row scored before flags were kept has none: no pairs
    newly, cured = discordant(flags[:n], base_flags[:n])
    return {"traffic_newly": newly, "traffic_cured": cured}


def paired(outcomes: list, base_outcomes: list) -> dict:
    """A config against the base, prompt by prompt (each prompt's targeted checks): fixed, broken, exact McNemar p."""
    from evals.stats import discordant, mcnemar_exact
    both = [(b, c) for b, c in zip(base_outcomes or [], outcomes or []) if b is not None and c is not None]
    fixed, broken = discordant([c for _, c in both], [b for b, _ in both]) if both else (0, 0)
    return {"fixed": fixed, "broken": broken, "p": mcnemar_exact(fixed, broken), "n_paired": len(both)}


def _share(flags: list) -> float | None:
    return sum(flags) / len(flags) if flags else None


@dataclass(frozen=True)
class ProsePlan:
    offset: int  # the first document scored
    docs: int  # documents scored (0: prose perplexity not measured)
    tolerance: float  # largest allowed prose_rise
    gate_docs: int  # the gate's documents: 0 .. gate_docs - 1


def prose_documents() -> list[str]:
    """The local prose task's documents, in order (the gate scores the first gate_lm_eval_docs)."""
    from evals.lm_eval_tasks import prose
    return prose.paragraphs()


def prose_plan(cs, es=None) -> ProsePlan:
    """Which prose documents the sweep scores; never one of the gate's (SettingsError if the settings would)."""
    es = es or load("evals")
    tolerance = cs.sweep_prose_tolerance if cs.sweep_prose_tolerance >= 0 else es.gate_ppl_tolerance
    if cs.sweep_prose_docs <= 0:
        return ProsePlan(cs.sweep_prose_offset, 0, tolerance, es.gate_lm_eval_docs)
    if cs.sweep_prose_offset < es.gate_lm_eval_docs:
        raise SettingsError(f"sweep_prose_offset {cs.sweep_prose_offset} < gate_lm_eval_docs {es.gate_lm_eval_docs}: "
                            f"the sweep would score prose documents the gate's perplexity guard scores; set "
                            f"[tool.mend.curate] sweep_prose_offset to at least {es.gate_lm_eval_docs}")
    left = len(prose_documents()) - cs.sweep_prose_offset
    if left <= 0:
        raise SettingsError(f"sweep_prose_offset {cs.sweep_prose_offset}: the local prose has only "
                            f"{cs.sweep_prose_offset + left} documents (evals/lm_eval_tasks/prose.py); lower it "
                            f"(not below gate_lm_eval_docs {es.gate_lm_eval_docs}) or set sweep_prose_docs = 0")
    return ProsePlan(cs.sweep_prose_offset, min(cs.sweep_prose_docs, left), tolerance, es.gate_lm_eval_docs)


def prose_score(model_ref: str, adapter, plan: ProsePlan) -> dict:
    """(c) `prose_ppl`: lm-eval word perplexity of (model, adapter) on prose documents plan.offset ..
    plan.offset + plan.docs - 1 (evals.guards.word_perplexity, the gate's guard on documents it never scores)."""
    out = {"prose_ppl": None, "prose_docs": plan.docs, "prose_offset": plan.offset}
    if plan.docs:
        from evals import guards
        out["prose_ppl"] = guards.word_perplexity(model_ref, None if adapter is None else str(adapter), plan.docs,
                                                  offset=plan.offset)
    return out


def _prose_words(plan: ProsePlan) -> str:
    if not plan.docs:
        return "not measured: sweep_prose_docs = 0"
    return (f"lm-eval, local prose documents {plan.offset}-{plan.offset + plan.docs - 1}; the gate's are "
            f"0-{plan.gate_docs - 1}")


