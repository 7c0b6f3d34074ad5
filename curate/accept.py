"""python -m curate accept --verified [--cluster ID] — accept every example that passed verification and
every filter (state `pending_review`) without a person: reviewer `policy:verified` (unattended runs).

    from curate.accept import accept_verified; n = accept_verified(cluster_id=None)
"""
from __future__ import annotations

import argparse
import uuid

from rich.console import Console

from traces import store

REVIEWER = "policy:verified"


def accept_verified(cluster_id: str | None = None) -> int:
    """pending_review -> accepted (one transaction, with a `reviews` row each); returns how many."""
    with store.connect() as con, store.transaction(con):
        ids = [r[0] for r in con.execute(
            "SELECT example_id FROM examples WHERE status = 'pending_review' AND (? IS NULL OR cluster_id = ?) "
            "ORDER BY example_id", [cluster_id, cluster_id]).fetchall()]
        if not ids:
            return 0
        batch = uuid.uuid4().hex[:12]
        con.execute("""INSERT INTO reviews (review_id, example_id, decision, reason, prev_status, reviewer)
                       SELECT 'rv-' || ? || '-' || example_id, example_id, 'accepted',
                              'passed verification and every filter', 'pending_review', ?
                       FROM examples WHERE list_contains(?, example_id)""", [batch, REVIEWER, ids])
        con.execute("""UPDATE examples SET status = 'accepted', reviewer = ?, reviewed_at = now()
                       WHERE list_contains(?, example_id) AND status = 'pending_review'""", [REVIEWER, ids])
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate accept", description=__doc__.split("\n")[0])
    p.add_argument("--verified", action="store_true", required=True,
                   help="accept everything in pending_review (it passed verification, dedup and decontamination)")
    p.add_argument("--cluster", help="only this cluster id")
    args = p.parse_args(argv)
    n = accept_verified(args.cluster)
    Console().print(f"accepted {n} example(s) as {REVIEWER}")
    return 0
