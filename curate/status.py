"""python -m curate status [--cluster ID] — example counts per cluster, state and reason (a rich table).

Reasons are grouped by their kind (the text before the first ': ', e.g. `near_duplicate`,
`not_fluent`, or the failed check id), so every reason an example left the happy path is counted.
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from traces import store
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate status", description=__doc__.split("\n")[0])
    p.add_argument("--cluster", help="only this cluster id")
    args = p.parse_args(argv)
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
    total = {}
    for _, _, status, _, n in rows:
        total[status] = total.get(status, 0) + n
    console.print(table)
    console.print("  ".join(f"{k}: {v}" for k, v in sorted(total.items())))
    return 0
