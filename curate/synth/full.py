"""Full mode of `python -m curate synth --mode full`: a strong teacher writes new requests and ideal responses.

mend still owns what is verified: for an IFEval check it draws a fresh instruction (description +
kwargs) per call and appends the description to every request the teacher wrote (unless the
teacher already included it), so each candidate carries metadata its checks can run on. The
answer is asked for as JSON with `response_format: json_schema` (servers that ignore it still get
the schema in the prompt) and parsed robustly: code fences, prose around the JSON, a bare list.
Unparseable answers are kept as failed candidates with the reason `malformed_json`.
"""
from __future__ import annotations

import json
import re

from rich.markup import escape

from curate.synth.candidates import Prompt, candidate_row, progress_bars, run_calls, teacher, write_rows
from evals.ifeval import fresh_instruction

SCHEMA = {
    "type": "object",
    "properties": {"examples": {"type": "array", "items": {
        "type": "object", "properties": {"request": {"type": "string"}, "response": {"type": "string"}},
        "required": ["request", "response"]}}},
    "required": ["examples"],
}


def full_request(cluster: dict, failing: list[dict], instruction: str, n: int, seed: int) -> dict:
    shown = "\n\n".join(f"REQUEST: {t['prompt'][:600]}\nBAD RESPONSE: {(t['response'] or '')[:400]}"
                        for t in failing[:3])
    user = (f"A model keeps failing this check: {cluster['check_id']} ({cluster['label']}).\n"
            f"The instruction it fails to follow: {instruction}\n\nFailing examples:\n{shown}\n\n"
            f"Write {n} new, varied, realistic user requests that each end with exactly that instruction, and for "
            "each an ideal response that follows every instruction in the request. Answer with JSON only: "
            '{"examples": [{"request": "...", "response": "..."}]}')
    return {"messages": [{"role": "system", "content": "You write high-quality training data for assistants."},
                         {"role": "user", "content": user}],
            "temperature": 0.9, "max_tokens": 2048, "seed": seed,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "examples", "schema": SCHEMA, "strict": True}}}


def parse_examples(text: str | None) -> list[dict]:
    """Pairs from the teacher's answer; raises ValueError when nothing usable is in it."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip(), flags=re.M)
    data = None
    for start in [i for i, ch in enumerate(body) if ch in "[{"][:20]:
        try:
            data, _ = json.JSONDecoder().raw_decode(body[start:])
            break
        except json.JSONDecodeError:
            continue
    if data is None:
        raise ValueError("no JSON object or list in the answer")
    items = data.get("examples", [data]) if isinstance(data, dict) else data
    pairs = [{"request": str(x["request"]), "response": str(x["response"])} for x in items
             if isinstance(x, dict) and x.get("request") and x.get("response") is not None]
    if not pairs:
        raise ValueError("JSON without request/response pairs")
    return pairs


def full_mode(todo, failing_by_cluster, s, budget, tallies, console) -> None:
    with teacher(s) as (client, _), progress_bars(console) as progress:
        for c in todo:
            failing = failing_by_cluster[c["cluster_id"]]
            calls_wanted = max(1, min(s.max_calls_per_cluster,
                                      -(-s.max_examples_per_cluster // s.full_requests_per_call)))
            plans = [_plan(c, i, failing) for i in range(calls_wanted)]
            reqs = [full_request(c, failing, p["description"], s.full_requests_per_call, i) for i, p in enumerate(plans)]
            task = progress.add_task(escape(f"full {c['label'][:40]}"), total=len(reqs))
            calls = run_calls(client, reqs, budget, progress, task)
            rows, checks, t = [], [], tallies[c["cluster_id"]]
            for plan, call in zip(plans, calls):
                if call.error:
                    t.errors += 1
                    continue
                for row, ch in _candidates(c, plan, call, client.model, Prompt, candidate_row):
                    rows.append(row)
                    checks.extend(ch)
            write_rows(rows, checks)
            counts = t.counts("full")
            counts.candidates += len(rows)
            counts.verified += sum(r["status"] == "verified" or (r["reason"] or "").startswith("not_fluent")
                                   for r in rows)
            counts.kept += sum(r["status"] == "verified" for r in rows)


def _plan(cluster: dict, i: int, failing: list[dict] = ()) -> dict:
    fresh = fresh_instruction(cluster["check_id"], "", f"mend-full:{cluster['cluster_id']}:{i}")
    if fresh is None:  # a non-IFEval check: through metadata["checks"], with the args its suite ran it with
        checks = next((t["checks"] for t in failing if t.get("checks")), [{"check": cluster["check_id"]}])
        return {"description": f"(the response must pass the check {cluster['check_id']})",
                "metadata": {"checks": checks}}
    desc, kwargs = fresh
    return {"description": desc, "metadata": {"instruction_id_list": [cluster["check_id"]], "kwargs": [kwargs]}}


def _candidates(cluster, plan, call, model, Prompt, candidate_row):
    try:
        pairs = parse_examples(call.text)
    except ValueError as e:
        p = Prompt([], "", plan["metadata"], None)
        row, ch = candidate_row(cluster, p, call, "full", model, None, strategy="full")
        row.update(status="failed_verification", reason=f"malformed_json: {e}", response=call.text or "")
        return [(row, [])]
    out = []
    for j, pair in enumerate(pairs):
        req = pair["request"].strip()
        if plan["description"] not in req and plan["metadata"].get("instruction_id_list"):
            req = f"{req} {plan['description']}"
        p = Prompt([{"role": "user", "content": req}], req, dict(plan["metadata"]), None, plan["description"])
        fake = type(call)(call.request_hash, pair["response"], None)  # the finish_reason is the JSON answer's
        out.append(candidate_row(cluster, p, fake, "full", model, None, extra=str(j), strategy="full"))
    return out
