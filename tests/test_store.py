"""The store: short-lived connections, all-or-nothing transactions, a clear error when the file is busy."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from traces import settings, store

HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("CREATE TABLE IF NOT EXISTS held (x INT)")
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def held_db():
    """A DuckDB file held open for writing by another process (as a running mend stage would)."""
    path = settings.db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield path, proc.pid
    proc.kill()
    proc.wait()


def test_busy_database_raises_storebusy_naming_the_holder(held_db, monkeypatch):
    path, pid = held_db
    monkeypatch.setenv("MEND_TRACES_BUSY_TIMEOUT_S", "0.3")
    with pytest.raises(store.StoreBusy) as err:
        with store.connect():
            pass
    message = str(err.value)
    assert message.startswith("database is busy") and str(path) in message
    assert f"process {pid}" in message


def test_busy_database_is_one_clear_line_from_the_cli(held_db, monkeypatch, capsys):
    from traces.cli import main
    monkeypatch.setenv("MEND_TRACES_BUSY_TIMEOUT_S", "0.3")
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["stats"]) == 2
    err = capsys.readouterr().err
    assert "database is busy" in err and "Traceback" not in err


def test_connect_creates_and_migrates(tmp_path):
    from traces.migrations import applied, latest
    with store.connect(tmp_path / "new" / "m.duckdb") as con:
        assert applied(con)[-1] == latest()


def test_read_only_readers_see_committed_rows():
    with store.connect() as con:
        con.execute("INSERT INTO quarantine (ingest_id, source_file, source_line, reason) VALUES ('i', 'f', 1, 'r')")
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1


def test_transaction_is_all_or_nothing():
    with store.connect() as con:
        with pytest.raises(KeyboardInterrupt):
            with store.transaction(con):
                con.execute("INSERT INTO quarantine (ingest_id, source_file, reason) VALUES ('i', 'f', 'r')")
                raise KeyboardInterrupt
        assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
        with store.transaction(con):
            con.execute("INSERT INTO quarantine (ingest_id, source_file, reason) VALUES ('i', 'f', 'r')")
        assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1


# ---------------------------------------------------------------- a waiting reader gets its turn (#25 8)

def _fake_connect(monkeypatch, calls: list, fail_first: int = 0):
    import duckdb

    def connect(path, read_only=False):
        calls.append(sorted(p.name for p in Path(path).parent.glob("*.waiting-*")))
        if len(calls) <= fail_first:
            raise duckdb.IOException('Could not set lock on file "x": Conflicting lock is held in python (PID 1)')
        return "con"
    monkeypatch.setattr(store.duckdb, "connect", connect)


def test_a_busy_open_leaves_a_marker_while_it_waits_and_removes_it(tmp_path, monkeypatch):
    calls: list = []
    _fake_connect(monkeypatch, calls, fail_first=1)
    db = tmp_path / "mend.duckdb"
    assert store._open(db, True, timeout_s=5) == "con"
    assert calls == [[], [f"mend.duckdb.waiting-{os.getpid()}"]]  # marked while it waited
    assert list(tmp_path.glob("*.waiting-*")) == []


def test_an_opener_gives_a_waiting_process_its_turn_before_it_connects(tmp_path, monkeypatch):
    import threading
    waiter = subprocess.Popen(["sleep", "30"])  # a live process standing for the waiting reader
    try:
        marker = tmp_path / f"mend.duckdb.waiting-{waiter.pid}"
        marker.touch()
        threading.Timer(0.3, marker.unlink).start()  # the reader got in and is done
        calls: list = []
        _fake_connect(monkeypatch, calls)
        assert store._open(tmp_path / "mend.duckdb", False, timeout_s=5) == "con"
        assert calls == [[]]  # the writer connected only once the waiter's marker was gone
    finally:
        waiter.kill()
        waiter.wait()


def test_a_marker_left_by_a_dead_process_is_removed_and_stalls_nobody(tmp_path, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"mend.duckdb.waiting-{dead.pid}").touch()
    calls: list = []
    _fake_connect(monkeypatch, calls)
    assert store._open(tmp_path / "mend.duckdb", False, timeout_s=5) == "con"
    assert calls == [[]] and list(tmp_path.glob("*.waiting-*")) == []
