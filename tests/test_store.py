"""The store: short-lived connections, all-or-nothing transactions, a clear error when the file is busy."""
import subprocess
import sys
import textwrap

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
