"""The DuckDB store. Every stage opens short, explicit connections through `connect()`.

A DuckDB file with an open writer cannot even be opened read-only by another process, so
stages must never hold a connection while they compute: open, read or write, close.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Iterator

import duckdb

from traces import settings as settings_mod


class StoreError(RuntimeError):
    """The database cannot be opened (corrupt, not writable, a folder) or written: the message names the file."""


class StoreBusy(StoreError):
    pass


class StoreWriteError(StoreError):
    """A stage's transaction did not commit (a full disk, a failed COMMIT): nothing of it was stored. The message
    names the stage, what it was storing and the database file (`write_failed`)."""


def write_failed(stage: str, what: str, e: BaseException) -> StoreWriteError:
    """What a stage raises when storing `what` failed: a bare "IO Error: No space left on device" in a nightly's
    ledger said neither which stage lost its work nor which file is full."""
    return StoreWriteError(f"{stage}: storing {what} in the database {settings_mod.db_path()} failed, nothing of it "
                           f"was kept ({type(e).__name__}: {e}); free space or fix the file, then run it again")


_LOCK_HINTS = ("Could not set lock", "Conflicting lock", "database is locked")


def _holder(message: str) -> str:
    m = re.search(r"PID (\d+)", message)
    return f"process {m.group(1)}" if m else "another process"


def _open(path: Path, read_only: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    marker = None
    _let_waiters_in(path)
    try:
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only)
            except duckdb.Error as e:
                if not any(h in str(e) for h in _LOCK_HINTS):
                    raise StoreError(f"cannot open the database {path}{' read-only' if read_only else ''}: {e} "
                                     "(MEND_DB names it)") from None
                if time.monotonic() >= deadline:
                    raise StoreBusy(f"database is busy (held by {_holder(str(e))}): {path}. "
                                    "Wait for the other mend command to finish, or stop it.") from None
                marker = marker or _mark_waiting(path)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
    finally:
        if marker:
            marker.unlink(missing_ok=True)


# A writer that commits batch after batch releases the file for microseconds before it reopens it; a waiting reader
# polling every 0.5 s would almost never get in ("database is busy" during a long ingest). DuckDB has no fair lock,
# so a process that found the store busy leaves a marker beside it, and every opener first gives such waiters their
# turn, for WAITER_GRACE_S at most (a waiter that died or hangs cannot stall anyone for longer).
WAITER_GRACE_S = 2.0


def _mark_waiting(path: Path) -> Path | None:
    marker = path.with_name(f"{path.name}.waiting-{os.getpid()}")
    try:
        marker.touch()
    except OSError:  # a read-only folder: no fairness, the retry loop still works
        return None
    return marker


def _other_waiters(path: Path) -> bool:
    for marker in path.parent.glob(f"{path.name}.waiting-*"):
        pid = marker.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            if pid_alive(int(pid)):
                return True
            marker.unlink(missing_ok=True)  # left by a process that died while waiting
    return False


def _let_waiters_in(path: Path) -> None:
    end = time.monotonic() + WAITER_GRACE_S
    while time.monotonic() < end and _other_waiters(path):
        time.sleep(0.02)


@contextlib.contextmanager
def connect(path: str | Path | None = None, read_only: bool = False,
            timeout_s: float | None = None, migrate: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store (migrating it to the latest schema first; `migrate=False`: as it is, for `doctor`), yield,
    close."""
    path = Path(path) if path else settings_mod.db_path()
    if timeout_s is None:
        timeout_s = settings_mod.load("traces").busy_timeout_s
    if read_only and not path.exists():
        read_only = False  # a fresh store must be created (and migrated) first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the database's folder {path.parent}: {e} (MEND_DB names it)") from None
    from traces.migrations import migrate as apply_migrations
    from traces.migrations import pending
    con = _open(path, read_only, timeout_s)
    if read_only and migrate and pending(con):
        # a store written by an older mend: a reader would miss the new tables and views, so migrate it first
        con.close()
        con = _open(path, False, timeout_s)
        try:
            apply_migrations(con)
        finally:
            con.close()
        con = _open(path, True, timeout_s)
    try:
        if not read_only and migrate:
            apply_migrations(con)
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: a crash or Ctrl-C inside leaves no half-written batch."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def interrupted(e: BaseException) -> bool:
    """Ctrl-C: a KeyboardInterrupt, or what DuckDB raises instead when it arrives during a query (its
    InterruptException, or since 2.0 a RuntimeError "Query interrupted")."""
    return isinstance(e, (KeyboardInterrupt, duckdb.InterruptException)) or (
        type(e) is RuntimeError and str(e) == "Query interrupted")


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (a `running` row whose writer died is stale)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def json_value(value, default=None):
    """A JSON column as Python: DuckDB hands JSON back as text; NULL (or an empty value) gives `default`."""
    if isinstance(value, (str, bytes)):
        return json.loads(value)
    return default if value is None else value
