"""What the gate reports: the table on the terminal, and the JSON object CI acts on (the contract below).

The contract is kept apart from the gate's policy so that a change of policy cannot quietly change what a
deployment script reads: REPORT_VERSION is bumped when a key changes meaning or disappears."""
from __future__ import annotations

import os
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evals.gate import Comparison, GateError, Side
from traces.json_out import plain
from traces.terminal import safe

EXIT_CODES = {"PROMOTE": 0, "REJECT": 1, "ERROR": 2}
REPORT_VERSION = 1  # bump when a key of the JSON report changes meaning or disappears

CONTRACT = """exit codes (the deployment contract):
  0  PROMOTE: deploy the candidate
  1  REJECT: the gate decided against the candidate
  2  no decision: a refusal (incomplete runs, suite version mismatch, holdout too small, a guard that could
     not run, bad arguments) or any crash; the message is on stderr. Never 1, so a crash is never read as a
     REJECT. Ctrl-C exits 130, like every mend command.

--json prints one JSON object to stdout (the table and progress go to stderr); --report FILE writes the
same object to FILE (removed first, written atomically). Keys: report_version, verdict (PROMOTE | REJECT |
ERROR), exit_code (what this process exits with: act on it), decision_id (the gate_decisions row; null if
the gate stopped before storing one), reasons (one line per rule, "ok: ..." or "FAIL: ..."), error (null,
or why there is no decision), candidate / baseline ({ref, adapter, adapter_hash, eval_runs: {suite: run
id}, skipped_suites}), train_run, suites ({suite: figures}), clusters ({cluster id: figures + label,
check_id}), target (pooled target figures), guards ({name: {ok, summary, ...}}). Figures: n, base_pass,
cand_pass, base_rate, cand_rate (%), delta (points), ci ([lo, hi] points, paired bootstrap 95%), fixes,
breaks, p (exact McNemar); suites add unpaired.

Through make: `make gate` writes this report to data/gate-report.json and the gate's own exit code to
data/gate-exit-code (make itself turns every failing recipe into 2)."""


# ---------------------------------------------------------------- terminal

def print_result(result: dict, console: Console) -> None:
    """Table, verdict and reasons. Labels come from trace text and refs from users: every one goes through
    `safe` (a `[link=…]` label must not become a live hyperlink, an ESC must not clear the screen)."""
    comp: Comparison = result["comparison"]
    cand, base = result["candidate"], result["baseline"]
    table = Table(title=safe(f"gate: {cand.ref} + {cand.adapter or 'no adapter'} vs "
                             f"{base.ref} + {base.adapter or 'no adapter'} (holdout)"))
    for col in ["scope", "n", "before %", "after %", "delta pts", "95% CI", "fixed/broken", "McNemar p"]:
        table.add_column(col, justify="left" if col == "scope" else "right")
    rows = [(f"suite {k}", v) for k, v in comp.suites.items()]
    rows += [(f"cluster {v['label']}", v) for v in comp.clusters.values()]
    rows += [("pooled targets", comp.target)] if comp.target else []
    for name, g in rows:
        table.add_row(safe(name), str(g["n"]), f"{g['base_rate']:.1f}", f"{g['cand_rate']:.1f}",
                      f"{g['delta']:+.1f}", f"[{g['ci'][0]:+.1f}, {g['ci'][1]:+.1f}]", f"{g['fixes']}/{g['breaks']}",
                      f"{g['p']:.3g}")
    console.print(table)
    colour = "green" if result["verdict"] == "PROMOTE" else "red"
    console.print(f"[bold {colour}]{result['verdict']}[/]  (decision {safe(result['decision_id'])})")
    for r in result["reasons"]:
        console.print(f"  {'[green]' if r.startswith('ok') else '[red]'}{safe(r)}[/]")


# ---------------------------------------------------------------- the JSON report

def result_report(result: dict) -> dict:
    """The JSON report of a decided gate (PROMOTE or REJECT)."""
    comp: Comparison = result["comparison"]
    return _report(result["verdict"], result["decision_id"], result["reasons"],
                   candidate=_side_report(result["candidate"]), baseline=_side_report(result["baseline"]),
                   train_run=result["train_run"], suites=comp.suites, clusters=comp.clusters, target=comp.target,
                   guards=comp.guards)


def error_report(error: BaseException, decision_id: str | None = None) -> dict:
    """The JSON report when the gate could not decide: a refusal (GateError) or a crash."""
    why = _error_text(error)
    return _report("ERROR", getattr(error, "decision_id", None) or decision_id, [why], error=why)


def _report(verdict: str, decision_id: str | None, reasons: list[str], **parts) -> dict:
    out = {"report_version": REPORT_VERSION, "verdict": verdict, "exit_code": EXIT_CODES[verdict],
           "decision_id": decision_id, "reasons": list(reasons), "error": None, "candidate": None,
           "baseline": None, "train_run": None, "suites": {}, "clusters": {}, "target": None, "guards": {}}
    out.update(parts)
    return plain(out)


def _side_report(side: Side) -> dict:
    return {"ref": side.ref, "adapter": side.adapter, "adapter_hash": side.adapter_hash,
            "eval_runs": dict(side.runs), "skipped_suites": dict(side.skipped)}


def _error_text(e: BaseException) -> str:
    if isinstance(e, GateError):
        return str(e)
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {'/'.join(Path(frames[-1].filename).parts[-2:])}:{frames[-1].lineno})" if frames else ""
    return f"the gate crashed before deciding: {type(e).__name__}: {e}{where}"


def write_report(text: str, path: str) -> None:
    """Write atomically: a CI job reading FILE never sees half a report."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
