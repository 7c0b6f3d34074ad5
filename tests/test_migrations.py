"""Migrations: one ordered list, recorded in _migrations; a blank database and an upgrade from m001."""
import duckdb

from traces.migrations import MIGRATIONS, applied, latest, migrate


def tables(con):
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def test_blank_database_gets_every_migration(tmp_path):
    con = duckdb.connect(str(tmp_path / "blank.duckdb"))
    ran = migrate(con)
    assert ran == [name for name, _ in MIGRATIONS]
    assert applied(con) == sorted(ran) and applied(con)[-1] == latest()
    assert {"traces", "quarantine", "ingests"} <= tables(con)
    assert migrate(con) == []  # idempotent


def test_upgrade_from_a_database_with_only_m001(tmp_path):
    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)
    assert migrate(con, upto="m001_traces") == ["m001_traces"]
    con.execute("""INSERT INTO traces (trace_id, source_format, source_file, ingest_id, messages, prompt,
                   group_key, split) VALUES ('t1', 'messages', 'f', 'i', '[]', 'p', 'p', 'seed')""")
    con.close()
    con = duckdb.connect(path)
    assert applied(con) == ["m001_traces"]
    ran = migrate(con)
    assert ran == [name for name, _ in MIGRATIONS[1:]]
    assert applied(con)[-1] == latest()
    assert con.execute("SELECT trace_id FROM traces").fetchall() == [("t1",)]  # data kept


def test_traces_split_is_constrained(tmp_path):
    import pytest
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    migrate(con, upto="m001_traces")
    with pytest.raises(duckdb.ConstraintException):
        con.execute("""INSERT INTO traces (trace_id, source_format, source_file, ingest_id, messages, prompt,
                       group_key, split) VALUES ('t', 'messages', 'f', 'i', '[]', 'p', 'p', 'train')""")


def test_store_connect_upgrades_an_older_file(tmp_path, monkeypatch):
    from traces import store
    path = tmp_path / "older.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, upto="m001_traces")
    con.close()
    with store.connect(path) as con:
        assert applied(con)[-1] == latest()
