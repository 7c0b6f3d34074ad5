"""Candidate strategies of `curate synth` (compose mode): how a cluster's examples are made, cheapest first.

    [tool.mend.curate] strategies = ["repair", "constrained", "sample"]   # run in this order (order = cost)
                       target_per_cluster = 16                            # kept candidates after which to stop

Each strategy is one function `(job, env) -> None` that writes verified-or-failed candidates for one cluster
through `emit`; synthesis runs them strategy by strategy over every cluster still short of its target
(`Job.done`), so a teacher server started for one strategy serves every cluster. Every candidate is verified
by every instruction of its prompt and then passes the quality filter (curate.synth.candidates.candidate_row), and
records `strategy`, `source_id` (the row its text came from) and `request_hash` (the teacher call that wrote
the text; none for a repair of production's own answer).

| strategy | teacher calls | where the text comes from |
|---|---|---|
| repair | 0 | curate.synth.repair.compose on (a) the failing production response of each of the cluster's failing seed
  traces (its own prompt: every instruction must pass) and (b) every teacher candidate of this run that failed
  a check but is fluent; kept only if content_overlap >= repair_min_overlap |
| constrained | 1 per sample (k per prompt) | the teacher decodes under the grammar curate.synth.constraints builds for all
  the prompt's instructions, sent in the server's dialect (teacher_dialect); a prompt without an honest
  constraint, or a dialect that carries none (a remote OpenAI endpoint without JSON), is skipped. On the
  transformers dialect the constraint is today's logit_bias token ban (needs a server without continuous
  batching: a second server start) |
| self | 0 (the student samples in-process) | best-of-self_k samples from the student itself (on-policy,
  curate.synth.student) at its own token budget, until self_per_prompt of a prompt's samples are kept; failing
  samples are repaired like teacher samples |
| sample | 1 per sample | best-of-k unguided sampling |
| revise | 1 per failing response | the teacher gets the request, a failing response (production's, or a teacher
  sample's) and the checks' own reasons, and rewrites it (strong teachers; off by default) |
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

from rich.markup import escape

from curate.synth.candidates import (CHUNK, Prompt, candidate_row, failures_in_row, from_trace, sample_requests, teacher,
                                     token_budget, verify, write_rows)
from traces.terminal import safe

NAMES = ("repair", "self", "constrained", "sample", "revise")
TEACHER_FREE = ("repair",)  # spends no budget: no call at all
NO_SERVER = ("repair", "self")  # needs no teacher endpoint (self samples the student in-process, within the budget)

REVISE_SYSTEM = ("You revise answers so that they follow every instruction of the request. Keep the content and the "
                 "language; change only what the instructions require. Reply with the revised answer only.")


@dataclass
class Counts:
    candidates: int = 0  # rows written
    verified: int = 0  # passed every check of the prompt
    kept: int = 0  # passed the checks and the quality filter (status verified)


@dataclass
class Tally:
    """Per-cluster counts for the yield table, by strategy."""
    label: str
    check_id: str
    by_strategy: dict = field(default_factory=dict)  # strategy -> Counts
    errors: int = 0
    notes: list = field(default_factory=list)

    def counts(self, strategy: str) -> Counts:
        return self.by_strategy.setdefault(strategy, Counts())

    @property
    def kept(self) -> int:
        return sum(c.kept for c in self.by_strategy.values())

    @property
    def total_candidates(self) -> int:
        return sum(c.candidates for c in self.by_strategy.values())

    # the counts the nightly summary and older callers read: guided = the constrained strategy, the rest unguided
    @property
    def candidates(self) -> int:
        return self.total_candidates - self.guided_candidates

    @property
    def verified(self) -> int:
        return self.kept - self.guided_verified

    @property
    def guided_candidates(self) -> int:
        return self.counts("constrained").candidates

    @property
    def guided_verified(self) -> int:
        return self.counts("constrained").kept


@dataclass
class Source:
    """A failing response a repair or a revision starts from."""
    prompt: Prompt
    text: str
    source_id: str  # trace id (production) or example id (teacher sample)
    request_hash: str | None  # the teacher call that wrote it; None for production
    reason: str  # the failed checks' own reasons
    joined_with: str = ""  # a two-responses answer joined from two samples: the other sample's id


@dataclass
class Job:
    """One cluster's synthesis: its prompts, failing traces, counts and the failing samples gathered so far."""
    cluster: dict
    prompts: list
    failing: list  # the cluster's failing seed traces (dicts from curate.synth.failing_seed_traces)
    tally: Tally
    calls: int = 0  # teacher requests made for it (cached ones too: a re-run stops at the same place)
    written: int = 0
    failed_samples: list = field(default_factory=list)  # Sources: teacher candidates that failed a check
    joined: set = field(default_factory=set)  # ids of failed samples already joined into a two-responses answer
    kept_by_prompt: dict = field(default_factory=dict)  # prompt key -> kept candidates (the self strategy's cap)

    def done(self, s) -> bool:
        return (s.target_per_cluster > 0 and self.tally.kept >= s.target_per_cluster) \
            or self.written >= s.max_examples_per_cluster


@dataclass
class Env:
    """What strategies share: settings, budget, the teacher (started on first use), progress, constraint dialect."""
    s: object
    budget: object
    progress: object
    teachers: "Teachers"
    dialect: str = "none"
    strategies: tuple = ()
    student: object = None  # curate.synth.student.StudentClient, made on first use by the self strategy
    failed_in_row: int = 0  # teacher requests failed in a row (rate limited, timed out): candidates.failures_in_row


# ------------------------------------------------------------------ writing candidates

def emit(job: Job, env: Env, items: list[tuple], model: str | None = None) -> list[dict]:
    """Verify, write and count candidates. items: (prompt, call, strategy, source_id, id_extra, guide_record),
    call with .text, .request_hash and optionally .response (finish_reason). model: who wrote the text (default:
    the teacher)."""
    rows, checks = [], []
    room = max(0, env.s.max_examples_per_cluster - job.written)
    for p, call, strategy, source_id, extra, record in items[:room]:
        row, ch = candidate_row(job.cluster, p, call, "compose", model or env.teachers.model, None, extra,
                                strategy=strategy, source_id=source_id, guide_record=record,
                                min_alpha=env.s.fluency_min_alpha)
        rows.append(row)
        checks.extend(ch)
        c = job.tally.counts(strategy)
        c.candidates += 1
        c.verified += row["status"] == "verified" or (row["reason"] or "").startswith("not_fluent")
        c.kept += row["status"] == "verified"
        if row["status"] == "verified":
            key = prompt_key(p)
            job.kept_by_prompt[key] = job.kept_by_prompt.get(key, 0) + 1
        if row["status"] == "failed_verification" and not (row["reason"] or "").startswith("not_fluent") \
                and strategy != "repair":
            job.failed_samples.append(Source(p, row["response"], row["example_id"], call.request_hash,
                                             row["reason"] or ""))
    write_rows(rows, checks)
    job.written += len(rows)
    return rows


# ------------------------------------------------------------------ repair (no teacher call)

def repair(job: Job, env: Env) -> None:
    """(a) the cluster's failing production responses, repaired for every instruction of their own prompt."""
    from evals.quality import trim_truncated
    sources = []
    for t in job.failing:
        p = from_trace(t, job.cluster["check_id"])
        # an answer the logged token budget cut is repaired from its whole sentences only
        text = trim_truncated(t.get("response") or "", t.get("finish_reason"))
        if text.strip():
            sources.append(Source(p, text, t["trace_id"], None, ""))
    repair_sources(job, env, sources)


def repair_sources(job: Job, env: Env, sources: list[Source]) -> None:
    from curate.synth.repair import compose
    from evals.ifeval import instruction_specs
    items = []
    for src in sources:
        if job.done(env.s):
            break
        text = fluent_text(src)
        if text is None:
            continue  # repairs keep content: a degenerate source that cannot be cut stays degenerate
        try:
            specs = instruction_specs(src.prompt.metadata)
        except ValueError:
            continue
        fixed = compose([i for i, _ in specs], [k for _, k in specs], text, src.prompt.prompt,
                        min_overlap=env.s.repair_min_overlap)
        if fixed is None or (fixed == src.text and not src.joined_with):  # a joined answer may need nothing more
            continue
        call = SimpleNamespace(text=fixed, request_hash=src.request_hash, response=None)
        extra = f"repair:{src.source_id}" + (f"+{src.joined_with}" if src.joined_with else "")
        items.append((src.prompt, call, "repair", src.source_id, extra, None))
        if len(items) >= CHUNK:
            emit(job, env, items)
            items = []
    emit(job, env, items)


def fluent_text(src: Source) -> str | None:
    """The source as it is when the quality filter keeps it; a looping source cut where it starts repeating
    (evals.quality.cut_repetition) when what is left is kept; else None."""
    from evals.quality import cut_repetition, fluency
    if fluency(src.text, src.prompt.prompt, src.prompt.metadata)[0]:
        return src.text
    cut = cut_repetition(src.text)
    return cut if cut and fluency(cut, src.prompt.prompt, src.prompt.metadata)[0] else None


# ------------------------------------------------------------------ teacher strategies

def sample(job: Job, env: Env, task=None) -> list[dict]:
    """Best-of-k unguided samples of every prompt, seed-major (every prompt once before any twice)."""
    reqs = [(p, r) for p in job.prompts for r in sample_requests(p, env.s, env.s.k)]
    return ask(job, env, "sample", _seed_major(reqs), lambda p, r: ("", None), task=task)


def own(job: Job, env: Env) -> None:
    """The `self` strategy: the student's own samples, one seed round at a time over the prompts that still have
    fewer than self_per_prompt kept candidates (a prompt the student already answers well does not crowd out the
    others, and no sample is drawn that could not be used)."""
    from curate.synth.student import StudentClient
    s = env.s
    if env.student is None:
        env.student = StudentClient("production")
    for seed in range(s.self_k):
        open_prompts = [p for p in job.prompts if job.kept_by_prompt.get(prompt_key(p), 0) < s.self_per_prompt]
        if not open_prompts or job.done(s) or env.budget.spent or (seed > 0 and env.budget.turn_over):
            return
        reqs = [(p, {**sample_requests(p, s, 1)[0], "seed": seed}) for p in open_prompts]
        ask(job, env, "self", reqs, lambda p, r: ("", None), client=env.student)


def prompt_key(p: Prompt) -> str:
    return json.dumps(p.messages, sort_keys=True)


def constrained(job: Job, env: Env) -> None:
    """k samples of every prompt that has an honest constraint, decoding under it (the server's dialect), with the
    check's system message and verified demonstrations (curate.synth.guidance)."""
    from curate.synth.constraints import constraint_for, request_extras
    from curate.synth.guidance import RULES, few_shot, guided_messages
    from evals.ifeval import instruction_specs
    s = env.s
    check = job.cluster["check_id"]
    guide = {"check_id": check, "system": RULES.get(check, (None, ""))[1],
             "few_shot": few_shot(check, s.guidance_few_shot)}
    reqs, records, skipped = [], {}, 0
    for p in job.prompts:
        specs = instruction_specs(p.metadata)
        c = constraint_for([i for i, _ in specs], [k for _, k in specs])
        # transformers dialect: token bans built with the teacher's tokenizer (teacher_tokenizer or the local model)
        extras = request_extras(c, env.dialect) if c else {}
        if not extras:
            skipped += 1
            continue
        record = {"check_id": check, "constraint": c.name, "dialect": env.dialect, "fields": sorted(extras),
                  "logit_bias_tokens": len(extras.get("logit_bias") or {}), "system": guide["system"] or None,
                  "few_shot": len(guide["few_shot"])}
        base = {"messages": guided_messages(p, guide), "temperature": s.temperature, "top_p": s.top_p,
                "max_tokens": token_budget(s), **extras}
        for j in range(s.guidance_k or s.k):
            r = {**base, "seed": j}
            records[id(r)] = record
            reqs.append((p, r))
    if skipped:
        job.tally.notes.append(f"constrained: {skipped} prompt(s) without a constraint in dialect {env.dialect}")
    ask(job, env, "constrained", _seed_major(reqs), lambda p, r: ("", records[id(r)]))


def revise(job: Job, env: Env) -> None:
    """One rewrite per failing response: production's (failing prompts) and this run's failing teacher samples."""
    sources = [*_production_sources(job), *job.failed_samples]
    reqs = [(src.prompt, revise_request(src, env.s)) for src in sources]
    by_req = {id(r): src for (_, r), src in zip(reqs, sources)}
    ask(job, env, "revise", reqs, lambda p, r: (f"revise:{by_req[id(r)].source_id}", None),
        source_of=lambda r: by_req[id(r)].source_id)


def revise_request(src: Source, s) -> dict:
    user = (f"REQUEST:\n{src.prompt.prompt}\n\nANSWER:\n{src.text}\n\nThe answer fails these checks:\n{src.reason}\n\n"
            "Rewrite the answer so that it passes every check and still answers the request.")
    return {"messages": [{"role": "system", "content": REVISE_SYSTEM}, {"role": "user", "content": user}],
            "temperature": s.temperature, "top_p": s.top_p, "max_tokens": token_budget(s), "seed": 0}


def _production_sources(job: Job) -> list[Source]:
    """The failing production responses to the job's own prompts (composed prompts have none)."""
    by_id = {t["trace_id"]: t for t in job.failing}
    out = []
    for p in job.prompts:
        t = by_id.get(p.seed_trace_id)
        if t and t.get("response") and p.messages == t["messages"]:
            ok, reason, _ = verify(p.prompt, t["response"], p.metadata, p.request)
            if not ok:
                out.append(Source(p, t["response"], t["trace_id"], None, reason or ""))
    return out


def ask(job: Job, env: Env, strategy: str, reqs: list[tuple], id_and_record: Callable,
        source_of: Callable | None = None, task=None, client=None) -> list[dict]:
    """Send (prompt, request) pairs in chunks until the job is done or a budget is spent; verify and write each
    answer; then repair the failing ones (when repair is among the strategies). Returns the rows written.
    client: who answers (default: the teacher; the self strategy passes the student)."""
    s, budget = env.s, env.budget
    cap = max(0, s.max_calls_per_cluster - job.calls)
    reqs = reqs[:cap]
    written: list[dict] = []
    if not reqs or job.done(s):
        return written
    if client is None:
        client, _ = env.teachers.get(continuous_batching=not (strategy == "constrained" and env.dialect == "transformers"))
    if task is None:
        task = env.progress.add_task(safe(f"{strategy} {job.cluster['label'][:40]}"), total=len(reqs))
    for i in range(0, len(reqs), CHUNK):
        if job.done(s) or budget.spent or not (n := budget.chunk()) or (i > 0 and budget.turn_over):
            break  # a turn sends at least one batch, unless its count of calls is sent
        chunk = reqs[i:i + n]
        calls = client.complete_many([r for _, r in chunk], progress=lambda n: env.progress.advance(task, n))
        budget.take(calls)
        job.calls += len(calls)
        items = []
        for (p, r), call in zip(chunk, calls):
            if call.error:
                _error(job, env, call.error)
                continue
            extra, record = id_and_record(p, r)
            items.append((p, call, strategy, source_of(r) if source_of else None, extra, record))
        before = len(job.failed_samples)
        written += emit(job, env, items, model=getattr(client, "model", None))
        if "repair" in env.strategies:
            new = job.failed_samples[before:]
            repair_sources(job, env, new + joined_samples(job, new))
        env.failed_in_row = failures_in_row(client, calls, env.failed_in_row)  # after this batch's rows are stored
    return written


TWO_RESPONSES = "combination:two_responses"


def _asks_two_responses(prompt) -> bool:
    from evals.ifeval import instruction_specs
    try:
        return TWO_RESPONSES in [i for i, _ in instruction_specs(prompt.metadata)]
    except ValueError:
        return False


def joined_samples(job: Job, new: list[Source]) -> list[Source]:
    """Two failing samples of the same two-responses prompt as one answer with lm-eval's divider
    (repair.join_responses), to be repaired and verified like any source: two separate answers are what the
    instruction asks for, while one answer cut in half is not (the repair of a single answer refuses that)."""
    from curate.synth.repair import join_responses
    out = []
    for src in new:
        if src.source_id in job.joined or not _asks_two_responses(src.prompt):
            continue
        partner = next((o for o in job.failed_samples if o.source_id != src.source_id and o.source_id not in job.joined
                        and o.prompt.messages == src.prompt.messages and o.text.strip() != src.text.strip()), None)
        text = join_responses(partner.text, src.text) if partner else None
        if text:
            job.joined.update((partner.source_id, src.source_id))
            out.append(Source(src.prompt, text, src.source_id, src.request_hash, src.reason, partner.source_id))
    return out


def _error(job: Job, env: Env, message: str) -> None:
    job.tally.errors += 1
    if job.tally.errors == 1:
        env.progress.console.print(f"[yellow]teacher error[/] ({escape(job.cluster['cluster_id'])}): "
                                   f"{escape(message[:300])}")


def _seed_major(pairs: list[tuple]) -> list[tuple]:
    """(prompt, request) pairs ordered by seed, then prompt: a target met early still covers many prompts."""
    return sorted(pairs, key=lambda pr: pr[1].get("seed", 0))  # stable: prompt order kept within a seed


STRATEGIES: dict[str, Callable[[Job, Env], None]] = {"repair": repair, "self": own, "constrained": constrained,
                                                    "sample": sample, "revise": revise}


# ------------------------------------------------------------------ the teacher, started once per serving mode

class Teachers:
    """Starts the teacher on first use and keeps it for the next strategy; restarts it only where the serving mode
    matters (a local `transformers serve` honours logit_bias only without continuous batching)."""

    def __init__(self, s):
        self.s = s
        self.stack = contextlib.ExitStack()
        self.current: tuple | None = None  # (continuous_batching, client, folder)
        self.model = s.teacher_model

    def get(self, continuous_batching: bool = True):
        mode_matters = self.s.teacher_url == "local" and getattr(self.s, "teacher_backend", "transformers") \
            == "transformers"
        if self.current and (not mode_matters or self.current[0] == continuous_batching):
            return self.current[1], self.current[2]
        self.stack.close()
        self.stack = contextlib.ExitStack()
        client, folder = self.stack.enter_context(teacher(self.s, continuous_batching=continuous_batching))
        self.current = (continuous_batching, client, folder)
        self.model = client.model
        return client, folder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stack.close()


class FixedTeacher:
    """A client made by the caller, used as it is (curate.synth.compose_cluster)."""

    def __init__(self, client):
        self.client, self.model = client, getattr(client, "model", None)

    def get(self, continuous_batching: bool = True):
        return self.client, None


def active(s) -> tuple[str, ...]:
    """The strategies that run, in order: settings `strategies`, without constrained when guidance = "never"."""
    names = tuple(s.strategies)
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        from traces.settings import SettingsError
        raise SettingsError(f"[tool.mend.curate] strategies: unknown {', '.join(unknown)} "
                            f"(known: {', '.join(NAMES)})")
    return tuple(n for n in names if not (n == "constrained" and s.guidance == "never"))


def run(jobs: list[Job], s, budget, progress) -> None:
    """Every strategy in order over every job still short of its target."""
    from curate.synth.constraints import dialect
    names = active(s)
    with Teachers(s) as teachers:
        env = Env(s, budget, progress, teachers, dialect(s), names)
        if s.teacher_url != "local" and any(n not in NO_SERVER for n in names):
            teachers.get()  # a remote endpoint is checked before any work (a local server starts when first needed)
        turns = [(name, job) for name in names for job in jobs]
        for i, (name, job) in enumerate(turns):
            if job.done(s):
                continue
            if name not in TEACHER_FREE:
                if budget.spent:
                    budget.skipped[name] = budget.skipped.get(name, 0) + 1
                    continue
                budget.share(sum(1 for n, j in turns[i:] if n not in TEACHER_FREE and not j.done(s)))
            STRATEGIES[name](job, env)
            budget.end_turn()
