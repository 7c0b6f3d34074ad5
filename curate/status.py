"""python -m curate status [--cluster ID] [--json] — example counts per cluster, state and reason, and the yield per
check and strategy (rich tables; --json: one JSON document).

Reasons are grouped by their kind (the text before the first ': ', e.g. `near_duplicate`,
`not_fluent`, or the failed check id), so every reason an example left the happy path is counted.
The yield table counts, per cluster check and strategy (examples.strategy; `edit` for a reviewer's edit):
candidates written, verified (passed every check of the prompt), fluent (also passed the quality filter),
kept (also survived dedup, decontamination and review so far: verified, pending_review or accepted) and accepted.
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from traces import json_out, store
from traces.terminal import safe

# the reason's kind: a check id ("punctuation:no_comma") or a word ("near_duplicate"), before ": details"
KIND = r"^([A-Za-z0-9_]+(:[A-Za-z0-9_]+)?)"


def counts(cluster_id: str | None = None) -> list[tuple]:
    """[(cluster_id, label, status, reason kind, n)] ordered by cluster, state, count."""
    with store.connect(read_only=True) as con:
        return con.execute(f"""
            SELECT coalesce(e.cluster_id, '-'), coalesce(c.label, ''), e.status,
                   coalesce(nullif(regexp_extract(e.reason, '{KIND}', 1), ''), e.reason, '') AS kind, count(*) AS n
            FROM examples e LEFT JOIN clusters c USING (cluster_id)
            WHERE ? IS NULL OR e.cluster_id = ?
            GROUP BY ALL ORDER BY 1, 3, n DESC, 4""", [cluster_id, cluster_id]).fetchall()


def yields(cluster_id: str | None = None) -> list[tuple]:
    """[(check_id, strategy, candidates, verified, fluent, kept, accepted)] per cluster check and strategy."""
    with store.connect(read_only=True) as con:
        return con.execute("""
            SELECT coalesce(c.check_id, '-'), coalesce(e.strategy, CASE WHEN e.mode = 'edit' THEN 'edit' END, '-'),
                   count(*),
                   count(*) FILTER (WHERE e.status <> 'failed_verification' OR e.reason LIKE 'not_fluent%'),
                   count(*) FILTER (WHERE e.status <> 'failed_verification'),
                   count(*) FILTER (WHERE e.status IN ('verified', 'pending_review', 'accepted')),
                   count(*) FILTER (WHERE e.status = 'accepted')
            FROM examples e LEFT JOIN clusters c USING (cluster_id)
            WHERE ? IS NULL OR e.cluster_id = ?
            GROUP BY ALL ORDER BY 1, 2""", [cluster_id, cluster_id]).fetchall()


def yield_table(rows: list[tuple]) -> Table:
    table = Table(title="yield per check and strategy")
    for col in ("check", "strategy", "candidates", "verified", "fluent", "kept", "accepted"):
        table.add_column(col, justify="left" if col in ("check", "strategy") else "right")
    for check, strategy, n, verified, fluent, kept, accepted in rows:
        table.add_row(safe(check), safe(strategy), str(n), *(f"{x} ({x / n:.0%})" for x in (verified, fluent, kept)),
                      str(accepted))
    return table


def document(cluster_id: str | None = None) -> dict:
    """What --json prints: the same counts as the tables, as objects."""
    rows = counts(cluster_id)
    return {"cluster": cluster_id,
            "examples": json_out.records(("cluster_id", "label", "status", "reason", "n"), rows),
            "totals": _totals(rows),
            "yield": json_out.records(("check_id", "strategy", "candidates", "verified", "fluent", "kept",
                                       "accepted"), yields(cluster_id))}


def _totals(rows: list[tuple]) -> dict[str, int]:
    total = {}
    for _, _, status, _, n in rows:
        total[status] = total.get(status, 0) + n
    return dict(sorted(total.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate status", description=__doc__.split("\n")[0])
    p.add_argument("--cluster", help="only this cluster id")
    json_out.add_json_flag(p)
    args = p.parse_args(argv)
    if args.json:
        json_out.emit(document(args.cluster))
        return 0
    rows = counts(args.cluster)
    console = Console()
    if not rows:
        console.print("no examples yet: run `python -m curate synth`")
        return 0
    table = Table(title="examples per cluster, state and reason")
    for col in ("cluster", "label", "status", "reason", "n"):
        table.add_column(col, justify="right" if col == "n" else "left")
    for cid, label, status, kind, n in rows:
        table.add_row(safe(cid), safe(label, limit=40), safe(status), safe(kind), str(n))
    console.print(table)
    console.print("  ".join(f"{k}: {v}" for k, v in _totals(rows).items()))
    console.print(yield_table(yields(args.cluster)))
    return 0
