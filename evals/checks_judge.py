"""The LLM judge check: a rubric prompt sent to an OpenAI-compatible endpoint (settings judge_base_url,
judge_model), answered with a 1-10 score and a reason. The judge model and endpoint are recorded in the
result's details. Suite args: rubric (required), pass_threshold (0.7 of the 1-10 scale, normalized).

The runner sends every judge request of a run at once through `prefetch()` (bounded concurrency,
cached in llm_calls); the check itself then reads its answer from that cache.
"""
from __future__ import annotations

import json
import re

from evals.checks import CheckResult, register


class JudgeNotConfigured(RuntimeError):
    pass


SYSTEM = ("You are a strict, fair grader of an AI assistant's answer. Grade only against the rubric. "
          'Reply with one JSON object and nothing else: {"score": <integer 1-10>, "reason": "<one sentence>"}.')

_CLIENTS: dict = {}


def judge_client(settings=None):
    from traces import settings as settings_mod
    s = settings or settings_mod.load("evals")
    if not s.judge_base_url or not s.judge_model:
        raise JudgeNotConfigured("no judge endpoint configured: set judge_base_url and judge_model in "
                                 "[tool.mend.evals] (or MEND_EVALS_JUDGE_BASE_URL / MEND_EVALS_JUDGE_MODEL)")
    key = (s.judge_base_url, s.judge_model, s.judge_api_key_env, s.allow_remote)
    if key not in _CLIENTS:
        from evals.client import Client
        _CLIENTS[key] = Client.for_judge(s)
    return _CLIENTS[key]


def judge_request(response: str, args: dict, trace: dict) -> dict:
    rubric = args.get("rubric")
    if not rubric:
        raise ValueError("the judge check needs a 'rubric' argument")
    user = (f"Rubric:\n{rubric}\n\nUser request:\n{trace.get('prompt') or ''}\n\n"
            f"Assistant answer:\n{response}\n\nGrade the answer against the rubric.")
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            "temperature": 0.0, "seed": 0, "max_tokens": int(args.get("max_tokens", 200))}


def parse_verdict(text: str | None) -> tuple[float | None, str]:
    """(score on 1-10 or None, reason) from the judge's answer; tolerant of prose around the JSON."""
    text = text or ""
    m = re.search(r"\{.*\}", text, re.DOTALL)
    if m:
        try:
            obj = json.loads(m.group(0))
            return float(obj["score"]), str(obj.get("reason", "")).strip()
        except (ValueError, KeyError, TypeError):
            pass
    m = re.search(r"score\W{0,5}(\d+(?:\.\d+)?)", text, re.IGNORECASE)
    return (float(m.group(1)) if m else None), text.strip()[:300]


def prefetch(items: list[tuple[str, dict, dict]], progress=True) -> None:
    """items: (response, args, trace) of every judge check in a run; answers land in the cache."""
    if items:
        judge_client().complete_many([judge_request(*it) for it in items], progress=progress)


@register("judge", vouches=True)  # a rubric grades the whole answer
def judge(response, args, trace):
    try:
        client = judge_client()
    except JudgeNotConfigured as e:  # curate's verifier runs it one answer at a time, offline too: say so
        return CheckResult(False, 0.0, f"judge: not run, so not verified: {e}")
    call = client.complete_many([judge_request(response, args, trace)])[0]
    details = {"judge_model": client.model, "judge_endpoint": client.endpoint, "request_hash": call.request_hash}
    if call.error:
        return CheckResult(False, 0.0, f"judge: the judge call failed: {call.error}", details=details)
    score, reason = parse_verdict(call.text)
    if score is None:
        return CheckResult(False, 0.0, f"judge ({client.model}): unparseable verdict {call.text!r:.200}",
                           details=details)
    score = min(max(score, 1.0), 10.0) / 10.0
    threshold = float(args.get("pass_threshold", 0.7))
    return CheckResult(score >= threshold, score,
                       f"judge ({client.model}): {score * 10:g}/10 (pass at {threshold * 10:g}): {reason}",
                       details=details)
