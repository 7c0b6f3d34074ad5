"""One adapter hash: recompute the hashes stored before traces.hashing.adapter_hash was the only definition.

Until then train_runs stored the sha256 of adapter_model.safetensors (64 hex), while eval_runs, gate_decisions
and registry stored 16 hex over the folder's files, so the lineage could not join a train run to its eval runs.
Each row whose adapter folder still exists gets the one hash; a row whose folder is gone keeps its old value,
because the weights it named cannot be read any more (the join then misses that row, as it did before).
"""
from __future__ import annotations

from traces.hashing import adapter_hash

# (table, key column, adapter path column, hash column)
COLUMNS = [("train_runs", "run_id", "adapter_path", "adapter_hash"),
           ("eval_runs", "run_id", "adapter_path", "adapter_hash"),
           ("gate_decisions", "decision_id", "candidate_adapter", "candidate_adapter_hash"),
           ("registry", "entry_id", "adapter_path", "adapter_hash")]


def apply(con) -> None:
    for table, key, path_col, hash_col in COLUMNS:
        rows = con.execute(f"SELECT {key}, {path_col} FROM {table} WHERE {path_col} IS NOT NULL").fetchall()
        for row_id, path in rows:
            try:
                new = adapter_hash(path)
            except FileNotFoundError:
                continue
            con.execute(f"UPDATE {table} SET {hash_col} = ? WHERE {key} = ?", [new, row_id])
