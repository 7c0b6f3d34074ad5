"""python -m curate accept --verified [--cluster ID] — accept, without a person, every example that passed
verification and every filter (state `pending_review`) and that something vouches for: reviewer `policy:verified`
(unattended runs).

A passed check vouches for a whole answer when it is registered so (evals.checks.VOUCHING: the IFEval instructions,
`equals`, `judge`). An example that only narrow checks verified (a suite's own "no links", `fluent`) is graded by
the judge first when one is configured ([tool.mend.evals] judge_base_url and judge_model, with the judge suite's
rubric): passed, the judge's result joins its example_checks and it is accepted. Otherwise it stays
`pending_review` for a person (`python -m curate review`), counted under its reason: text nobody and nothing vouched
for is never trained on unattended.

    from curate.accept import accept_verified; result = accept_verified(cluster_id=None)  # .accepted, .waiting
"""
from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass, field

from rich.console import Console

from traces import store
from traces.terminal import safe

REVIEWER = "policy:verified"
NO_JUDGE = "only narrow checks verified them and no judge is configured"
JUDGE_FAILED = "only narrow checks verified them and the judge did not pass them"


@dataclass
class Acceptance:
    accepted: int = 0
    waiting: dict = field(default_factory=dict)  # reason -> examples left in pending_review
    narrow: list = field(default_factory=list)  # the narrow checks that were all some examples had

    def why_waiting(self) -> str | None:
        """One line for the nightly and the CLI (None: nothing waits)."""
        if not self.waiting:
            return None
        parts = "; ".join(f"{n} because {reason}" for reason, n in self.waiting.items())
        return (f"{sum(self.waiting.values())} example(s) wait for review ({parts}; narrow checks: "
                f"{', '.join(self.narrow)}): review them with `python -m curate review`, or configure a judge")


def accept_verified(cluster_id: str | None = None) -> Acceptance:
    """pending_review -> accepted (one transaction, with a `reviews` row each) for what a check or the judge
    vouches for; the rest waits, counted by reason."""
    from evals.checks import load_check_modules, vouches
    load_check_modules()  # a team's own checks may vouch (register(..., vouches=True))
    with store.connect(read_only=True) as con:
        pending = con.execute("""SELECT e.example_id, e.prompt, e.response,
                                        coalesce(list(k.check_id) FILTER (WHERE k.passed), [])
                                 FROM examples e LEFT JOIN example_checks k USING (example_id)
                                 WHERE e.status = 'pending_review' AND (? IS NULL OR e.cluster_id = ?)
                                 GROUP BY ALL ORDER BY 1""", [cluster_id, cluster_id]).fetchall()
    vouched = [r[0] for r in pending if any(vouches(c) for c in r[3])]
    narrow = [r for r in pending if not any(vouches(c) for c in r[3])]
    result = Acceptance(narrow=sorted({c for r in narrow for c in r[3]}))
    judged, result.waiting = judge(narrow)
    result.accepted = _accept(vouched, judged)
    return result


def judge(rows: list[tuple]) -> tuple[dict, dict]:
    """({example id: the judge's CheckResult} of those it passed, {reason: n} of the rest) for (id, prompt,
    response, checks) rows; every request goes at once and is cached (llm_calls), so asking again costs nothing."""
    from evals.checks import run_check
    from evals.checks_judge import JudgeNotConfigured, judge_client, prefetch
    if not rows:
        return {}, {}
    try:
        judge_client()
    except JudgeNotConfigured:
        return {}, {NO_JUDGE: len(rows)}
    args = judge_args()
    prefetch([(response, args, {"prompt": prompt}) for _, prompt, response, _ in rows], progress=False)
    results = {eid: run_check("judge", response, args, {"prompt": prompt}) for eid, prompt, response, _ in rows}
    passed = {eid: r for eid, r in results.items() if r.passed}
    failed = len(rows) - len(passed)
    return passed, ({JUDGE_FAILED: failed} if failed else {})


def judge_args() -> dict:
    """The judge suite's rubric and threshold (a project's own judge.yaml first, else the packaged one)."""
    from evals.suites import load as load_suite
    return next(c.get("args") or {} for c in load_suite("judge").checks if c["check"] == "judge")


def _accept(vouched: list[str], judged: dict) -> int:
    """Accept these ids, those still pending, in one transaction: the judge's passing result joins example_checks,
    a reviews row each."""
    if not vouched and not judged:
        return 0
    with store.connect() as con, store.transaction(con):
        still = {r[0] for r in con.execute("""SELECT example_id FROM examples WHERE status = 'pending_review'
                                              AND list_contains(?, example_id)""",
                                           [vouched + list(judged)]).fetchall()}
        vouched, judged = [e for e in vouched if e in still], {e: r for e, r in judged.items() if e in still}
        batch = uuid.uuid4().hex[:12]
        for eid, r in judged.items():  # after the example's own checks, so check_idx keeps verification order
            con.execute("""INSERT INTO example_checks SELECT ?, coalesce(max(check_idx) + 1, 0), 'judge', ?, ?
                           FROM example_checks WHERE example_id = ?""", [eid, r.passed, r.reason, eid])
        for reason, group in (("passed verification and every filter", vouched),
                              ("passed verification, every filter and the judge", list(judged))):
            con.execute("""INSERT INTO reviews (review_id, example_id, decision, reason, prev_status, reviewer)
                           SELECT 'rv-' || ? || '-' || example_id, example_id, 'accepted', ?, 'pending_review', ?
                           FROM examples WHERE list_contains(?, example_id)""", [batch, reason, REVIEWER, group])
        con.execute("""UPDATE examples SET status = 'accepted', reviewer = ?, reviewed_at = now()
                       WHERE list_contains(?, example_id)""", [REVIEWER, sorted(still)])
    return len(still)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate accept", description=__doc__.split("\n")[0])
    p.add_argument("--verified", action="store_true", required=True,
                   help="accept what passed verification, dedup and decontamination and a check (or the judge) "
                        "vouches for; the rest waits for review")
    p.add_argument("--cluster", help="only this cluster id")
    args = p.parse_args(argv)
    result = accept_verified(args.cluster)
    console = Console()
    console.print(f"accepted {result.accepted} example(s) as {REVIEWER}")
    if result.why_waiting():
        console.print(f"[yellow]{safe(result.why_waiting())}[/]", highlight=False)
    return 0
