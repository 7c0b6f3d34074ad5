"""Checks: a registry of named scoring functions (used by `python -m evals run` and curate's verifier).

A check is `fn(response: str, args: dict, trace: dict) -> CheckResult | None` registered with
`@register("name")`; `None` means "does not apply to this trace" (no result row is written).
`trace` is the trace as a dict (prompt, messages, tools, tool_calls, params, metadata, ...).

Built in:
- every IFEval instruction, under its lm-eval id (`punctuation:no_comma`), scored by lm-eval's own
  checker classes with exactly lm-eval's strict and loose logic (`lm_eval/tasks/ifeval/utils.py`);
- generic assertions (evals/checks_generic.py): contains, not_contains, regex, equals, starts_with,
  ends_with, max_words, valid_json, json_schema, and tool_calls;
- judge (evals/checks_judge.py): a rubric scored by an OpenAI-compatible endpoint.
User checks: modules named in `[tool.mend.evals] check_modules` are imported by `load_check_modules()`
and register with the same decorator.

A check that vouches for a whole answer is registered with `vouches=True` (VOUCHING): an IFEval instruction (what
the request itself asks, checked as lm-eval checks it), `equals` (the answer is fixed) and `judge` (a rubric grades
all of it). Every other check is narrow ("no links", valid JSON, fluent): unattended acceptance (curate.accept)
does not take an example that only narrow checks verified.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

from evals import ifeval
from evals.ifeval import build_instruction, instruction_specs
from traces import settings


@dataclass(frozen=True)
class CheckResult:
    passed: bool  # strict pass
    score: float  # 0..1 (1.0/0.0 for pass/fail checks; the judge's normalized score)
    reason: str  # human-readable: what was required and what was found
    passed_loose: Optional[bool] = None  # IFEval's loose variant, where it exists
    details: dict = field(default_factory=dict)  # extra facts stored with the result (e.g. the judge model)


Check = Callable[[str, dict, dict], Optional[CheckResult]]
REGISTRY: dict[str, Check] = {}
VOUCHING: set[str] = set()  # checks whose pass vouches for the whole answer (register(..., vouches=True))


class UnknownCheck(KeyError):
    def __str__(self):
        return self.args[0]


def register(name: str, vouches: bool = False):
    """Decorator: `@register("my_check")` adds fn to REGISTRY (re-registering a name replaces it). `vouches=True`:
    a pass vouches for the whole answer, so an example it verified may be accepted unattended (curate.accept)."""
    def deco(fn: Check) -> Check:
        REGISTRY[name] = fn
        (VOUCHING.add if vouches else VOUCHING.discard)(name)
        return fn
    return deco


def vouches(name: str) -> bool:
    """Whether a pass of this check vouches for the whole answer (unknown names do not)."""
    _load_builtins()
    return name in VOUCHING


def get(name: str) -> Check:
    _load_builtins()
    if name not in REGISTRY:
        raise UnknownCheck(f"unknown check {name!r}; known: {', '.join(sorted(REGISTRY))}. "
                           "User checks load from [tool.mend.evals] check_modules.")
    return REGISTRY[name]


def run_check(name: str, response: str | None, args: dict | None, trace: dict) -> CheckResult | None:
    """Run one check; a crash inside a check becomes a failed result with the error as reason, and so does a
    check name from a trace's metadata that nothing registered (visible in reports, not a dead run)."""
    try:
        fn = get(name)
    except UnknownCheck as e:
        return CheckResult(False, 0.0, str(e).split(";")[0] + " (named by the trace)")
    try:
        return fn(response or "", dict(args or {}), trace)
    except Exception as e:  # a buggy user check must not kill a 10,000-trace run
        return CheckResult(False, 0.0, f"{name}: check raised {type(e).__name__}: {e}")


def load_check_modules(modules=None) -> list[str]:
    """Import the user check modules (settings `check_modules`); each registers its checks on import."""
    if modules is None:
        modules = settings.load("evals").check_modules
    project = str(settings.project_root())
    if project not in sys.path:
        sys.path.insert(0, project)  # a team's checks live in its own repo, next to pyproject.toml
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UnknownCheck(f"check module {name!r} (settings check_modules) cannot be imported: {e}") from e
        loaded.append(name)
    return loaded


_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("evals.checks_generic")
        importlib.import_module("evals.checks_judge")


# ---------------------------------------------------------------- IFEval (lm-eval's own checkers, through evals/ifeval.py)

def loose_variants(response: str) -> list[str]:
    """lm-eval's loose variants: drop the first/last line and/or every '*'. The first is the response."""
    r = response.split("\n")
    first, last, both = ("\n".join(r[1:]).strip(), "\n".join(r[:-1]).strip(), "\n".join(r[1:-1]).strip())
    return [response, response.replace("*", ""), first, last, both,
            first.replace("*", ""), last.replace("*", ""), both.replace("*", "")]


def _distinct(variants: list[str]) -> list[str]:
    """The loose variants after the first, without repeats and without the response itself."""
    seen, out = {variants[0]}, []
    for v in variants[1:]:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def ifeval_check(instruction_id: str, response: str, kwargs: dict, prompt: str) -> CheckResult:
    instruction, description = build_instruction(instruction_id, kwargs, prompt)
    strict = bool(response.strip()) and bool(instruction.check_following(response))
    # loose is a superset of strict: its first variant is the response itself. Variants equal to one
    # already checked are skipped (check_following is a pure function of the text), which saves
    # language detections (~10 ms each on langdetect, ~0.1 ms on langdetect-rs) without changing any outcome.
    loose = strict or any(v.strip() and instruction.check_following(v) for v in _distinct(loose_variants(response)))
    return CheckResult(strict, 1.0 if strict else 0.0, _ifeval_reason(instruction_id, instruction, description,
                                                                      response, strict, loose), loose)


def _ifeval_reason(iid, instruction, description, response, strict, loose) -> str:
    if strict:
        return f"{iid}: passed ({description})"
    verdict = "failed strict, passed loose" if loose else "failed"
    if not response.strip():
        return f"{iid}: {verdict}: required: {description}; found: an empty response"
    try:
        found = _found(iid, instruction, response)
    except Exception:  # the description alone is still a useful reason
        found = None
    return f"{iid}: {verdict}: required: {description}" + (f"; found: {found}" if found else "")


def _found(iid: str, inst, response: str) -> str | None:
    """What the response had, for the reason line; only the cheap, unambiguous measurements."""
    util = ifeval.util()
    measures = {
        "punctuation:no_comma": lambda: f"{response.count(',')} comma(s)",
        "length_constraints:number_words": lambda: f"{util.count_words(response)} words",
        "length_constraints:number_sentences": lambda: f"{util.count_sentences(response)} sentences",
        "length_constraints:number_paragraphs": lambda: f"{len(response.split('***'))} '***'-separated part(s)",
        "change_case:english_lowercase": lambda: f"{sum(c.isupper() for c in response)} uppercase letter(s)",
        "change_case:english_capital": lambda: f"{sum(c.islower() for c in response)} lowercase letter(s)",
        "keywords:existence": lambda: "missing " + ", ".join(
            repr(k) for k in inst._keywords if k.lower() not in response.lower()),
        "keywords:forbidden_words": lambda: "used " + ", ".join(
            repr(w) for w in inst._forbidden_words if w.lower() in response.lower()),
        "keywords:letter_frequency": lambda: f"{response.lower().count(inst._letter)} x {inst._letter!r}",
        "startend:end_checker": lambda: f"ends with {response.strip()[-40:]!r}",
        "startend:quotation": lambda: f"starts with {response.strip()[:1]!r}, ends with {response.strip()[-1:]!r}",
        "detectable_format:title": lambda: "no <<title>>",
        "detectable_content:postscript": lambda: f"no line starting with {inst._postscript_marker!r}",
    }
    fn = measures.get(iid)
    return fn() if fn else None


def _make_ifeval(iid: str) -> Check:
    def check(response: str, args: dict, trace: dict) -> CheckResult:
        return ifeval_check(iid, response, args, trace.get("prompt") or "")
    check.__name__ = f"ifeval_{iid.replace(':', '_')}"
    check.__doc__ = f"IFEval instruction {iid} (lm-eval's checker; strict and loose)."
    return check


for _iid in ifeval.INSTRUCTION_IDS:  # the request states the instruction: checking it checks what was asked
    register(_iid, vouches=True)(_make_ifeval(_iid))


def verify_instructions(prompt: str, response: str, metadata: dict | None,
                        request: dict | None = None) -> list[tuple[str, CheckResult]]:
    """Run the checks the metadata names (IFEval instructions, plus generic `checks` entries) — curate's verifier.
    `request`: the request's own fields a check may read (tools for tool_calls, params for json_schema)."""
    trace = {**(request or {}), "prompt": prompt, "metadata": metadata or {}}
    out = [(iid, run_check(iid, response, kw, trace)) for iid, kw in instruction_specs(metadata)]
    for spec in (metadata or {}).get("checks") or []:
        result = run_check(spec["check"], response, spec.get("args"), trace)
        if result is not None:
            out.append((spec["check"], result))
    return out
