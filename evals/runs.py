"""Bookkeeping of eval runs shared by the runner, the reports and clustering: a run whose process died is
marked `incomplete`, never mistaken for complete."""
from __future__ import annotations

from traces.store import pid_alive


def refresh_stale(con) -> list[str]:
    """Mark 'running' runs whose process is gone as 'incomplete'; returns their ids."""
    stale = [r for r, pid in con.execute("SELECT run_id, pid FROM eval_runs WHERE status = 'running'").fetchall()
             if not pid_alive(pid)]
    for run_id in stale:
        con.execute("UPDATE eval_runs SET status = 'incomplete', finished_at = now() WHERE run_id = ?", [run_id])
    return stale
