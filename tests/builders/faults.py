"""Faults a stage must survive (issue 25): a COMMIT that fails as on a full disk, and a process killed midway."""
import contextlib
import os
import signal
import subprocess
import sys

import duckdb

from traces import store

DISK_FULL = "IO Error: Could not write file \"mend.duckdb.wal\": No space left on device"


def fail_commit(monkeypatch, table: str, nth: int = 1):
    """The nth transaction that adds rows to `table` fails at its COMMIT: its writes are rolled back, as DuckDB does
    when the write-ahead log cannot grow. Transactions that leave `table` alone commit. Returns the real
    store.transaction (set it back: the disk has room again)."""
    real, seen = store.transaction, []

    @contextlib.contextmanager
    def transaction(con):
        with real(con):
            before = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            yield con
            if con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] != before:
                seen.append(table)
                if len(seen) == nth:
                    raise duckdb.IOException(DISK_FULL)
    monkeypatch.setattr(store, "transaction", transaction)
    return real


def killed_in_a_child(code: str) -> None:
    """Run `code` in a child process (this environment: its store, its settings) that SIGKILLs itself where
    `code` calls `die()`: no finally, no rollback, no status written."""
    prelude = "import os, signal\ndef die():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code], env=dict(os.environ), capture_output=True,
                          text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
