"""python -m evals gate --candidate REF [--adapter PATH] --baseline production [--suite NAME ...] [--json] [--report FILE]

PROMOTE or REJECT a candidate against a baseline on the holdout split. Exit 0 = PROMOTE, 1 = REJECT,
2 = the gate could not decide (incomplete runs, suite version mismatch, a holdout too small for the test
to ever reach alpha, a guard that failed to run, or any crash). `--json` / `--report FILE` give the decision
as a JSON object for CI (evals.gate_report.CONTRACT, also printed by `--help`). What is compared and how it
is decided: evals.gate.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from rich.console import Console

from evals.gate import GateError, run_gate
from evals.gate_report import CONTRACT, error_report, print_result, result_report, write_report
from traces import json_out, store
from traces.json_out import stdout_to_stderr
from traces.settings import load
from traces.terminal import safe


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m evals gate", description=__doc__.splitlines()[0],
                                 epilog=CONTRACT, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", help="model ref (embedded name, folder, hub id or 'production'); default: the "
                                        "student with the newest trained adapter")
    ap.add_argument("--adapter", help="candidate LoRA adapter folder")
    ap.add_argument("--baseline", default="production", help="baseline model ref (default: production)")
    ap.add_argument("--baseline-adapter", help="baseline adapter folder (when the baseline is not 'production')")
    ap.add_argument("--suite", action="append", help="suite to use (repeatable; default: every configured suite)")
    ap.add_argument("--cluster", action="append", help="target cluster id (default: those the adapter trained on)")
    ap.add_argument("--train-run", help="train run whose examples define the target clusters")
    ap.add_argument("--baseline-run", action="append", default=[], metavar="SUITE=RUN",
                    help="use this eval run (refused unless it is the baseline's model and adapter on the holdout)")
    ap.add_argument("--candidate-run", action="append", default=[], metavar="SUITE=RUN",
                    help="use this eval run (refused unless it is the candidate's model and adapter on the holdout)")
    ap.add_argument("--no-run", action="store_true", help="never generate: refuse when a run is missing")
    ap.add_argument("--no-guards", action="store_true", help="skip the lm-eval and drift guards")
    for key in ["alpha", "min_improvement", "max_regression"]:
        ap.add_argument(f"--{key.replace('_', '-')}", type=float, dest=f"gate_{key}")
    ap.add_argument("--target-policy", dest="gate_target_policy", choices=["pooled", "all", "any"])
    ap.add_argument("--json", action="store_true",
                    help="print the decision as one JSON object on stdout (everything else goes to stderr)")
    ap.add_argument("--report", metavar="FILE", help="also write that JSON object to FILE")
    return ap.parse_args(argv)


def _given(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        suite, _, run = p.partition("=")
        if not run:
            raise GateError(f"expected SUITE=RUN, got {p!r}")
        out[suite] = run
    return out


def newest_candidate() -> tuple[str, str]:
    """(base model, adapter) of the newest complete train run: what `make gate` compares by default."""
    with store.connect(read_only=True) as con:
        row = con.execute("""SELECT base_model, adapter_path FROM train_runs WHERE status = 'complete'
                             AND adapter_path IS NOT NULL ORDER BY coalesce(finished_at, started_at) DESC
                             LIMIT 1""").fetchone()
    if row is None:
        raise GateError("no --candidate given and no trained adapter yet (run `make train`)")
    return load("train").model, row[1]


def gate_from_args(args) -> dict:
    flags = {k: v for k, v in vars(args).items() if k.startswith("gate_")}
    if args.candidate is None:
        args.candidate, args.adapter = newest_candidate()
    given = {"baseline": _given(args.baseline_run), "candidate": _given(args.candidate_run)}
    return run_gate(args.candidate, args.adapter, args.baseline, args.baseline_adapter, args.suite, args.cluster,
                    args.train_run, not args.no_run, not args.no_guards, given, flags)


def main(argv=None) -> int:
    """Exit 0 PROMOTE, 1 REJECT, 2 no decision (a refusal or any crash: never REJECT's 1); see CONTRACT."""
    args = parse_args(argv)
    if args.report:
        with contextlib.suppress(OSError):  # if it cannot go, writing the new one fails too: exit 2 then
            Path(args.report).unlink(missing_ok=True)  # a stale report must never stand for this run
    decision_id = None
    with stdout_to_stderr(args.json):
        try:
            result = gate_from_args(args)
            decision_id = result["decision_id"]
            print_result(result, Console())
            payload = result_report(result)
        except Exception as e:  # a refusal (GateError) or a crash: no decision, exit 2
            payload = error_report(e, decision_id)
            Console(stderr=True, soft_wrap=True).print(
                f"[red]gate error[/] (exit 2, no decision): {safe(payload['error'], newlines=True)}", highlight=False)
    return emit(payload, args)


def emit(payload: dict, args) -> int:
    """--report FILE and --json; the exit code. A report that cannot be written is exit 2 (CI would read none)."""
    if args.report:
        try:
            write_report(json.dumps(payload, indent=2, allow_nan=False) + "\n", args.report)
        except (OSError, ValueError) as e:
            payload = {**payload, "exit_code": 2, "error": f"could not write the report {args.report}: {e}"}
            Console(stderr=True, soft_wrap=True).print(
                f"[red]gate error[/] (exit 2): {safe(payload['error'])} (the verdict was {payload['verdict']})",
                highlight=False)
    if args.json:
        json_out.emit(payload)
    return payload["exit_code"]
