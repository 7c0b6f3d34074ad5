"""python -m curate report [NIGHTLY_ID] [--json] — rewrite a nightly's report, reports/<nightly_id>/report.md with its
plots (the newest nightly when no id is given), and print its summary: rich tables, or with --json one JSON document.

What the report shows: curate.loop.report. Only a nightly in the ledger is written (so that an id such as
`../../x` writes nothing outside reports/); anything else is exit 2 with a one-line message on stderr.
"""
from __future__ import annotations

import argparse

from rich.console import Console

from curate.loop.report import failed_files, gather, write_report
from traces import json_out, store
from traces.terminal import safe


def document(data: dict, path) -> dict:
    """What --json prints: the verdict, the stages and the counts the terminal summary shows, with the report's path.
    `decision` is the gate_decisions row (its `details` hold the figures of the gate's JSON report)."""
    stages = {s: st for s, st in data["stages"].items() if s != "report"}  # the report is being written
    return {"nightly_id": data["nightly_id"], "report": str(path),
            "verdict": (data["decision"] or {}).get("verdict")
            or stages.get("gate", {}).get("summary", {}).get("verdict"),
            "decision": data["decision"], "train_run": data["train_run"], "stages": stages,
            "wall_s": sum(st["wall_s"] or 0 for st in stages.values()), "failed_files": failed_files(data),
            "examples": json_out.records(("status", "reason", "n"), data["examples"]),
            "strategies": json_out.records(("cluster", "strategy", "n"), data["strategies"]),
            "sweep": data["sweep"], "ifeval": data["ifeval"], "lineage": data["lineage"], "cost": data["cost"]}


def known_nightlies() -> list[str]:
    """Nightly ids of the ledger, newest first."""
    with store.connect(read_only=True) as con:
        return [r[0] for r in con.execute("SELECT nightly_id FROM nightly_ledger GROUP BY 1 ORDER BY "
                                          "max(started_at) DESC").fetchall()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m curate report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("nightly_id", nargs="?", help="the nightly (default: the newest in the ledger)")
    json_out.add_json_flag(ap)
    args = ap.parse_args(argv)
    known = known_nightlies()
    nightly_id = args.nightly_id or (known[0] if known else None)
    if not nightly_id:
        Console(stderr=True).print("no nightly in the ledger yet: run `make nightly`")
        return 2
    if nightly_id not in known:  # also what keeps `report ../../x` from writing outside reports/
        Console(stderr=True).print(f"[red]error:[/] no nightly {safe(repr(nightly_id))} in the ledger (newest: "
                                   f"{safe(known[0] if known else 'none')})", highlight=False)
        return 2
    if not args.json:
        write_report(nightly_id)
        return 0
    with json_out.stdout_to_stderr(True):  # plotting libraries' messages: never on the JSON's stdout
        path = write_report(nightly_id, Console(quiet=True))  # the document replaces the terminal summary
    json_out.emit(document(gather(nightly_id), path))
    return 0
