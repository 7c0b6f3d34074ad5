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


def test_a_reader_of_an_older_store_migrates_it_first(tmp_path):
    """`make gate` on a store the previous release wrote: a read-only command must see the new views too."""
    from traces import store
    path = tmp_path / "older.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, upto=MIGRATIONS[-2][0])
    con.close()
    with store.connect(path, read_only=True) as con:
        names = [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()]
        assert names[-1] == latest()
        assert con.execute(f"SELECT count(*) FROM {_newest_relation()}").fetchone() == (0,)


def _newest_relation() -> str:
    """A table or view the last migration creates (the test above reads it)."""
    before = duckdb.connect(":memory:")
    migrate(before, upto=MIGRATIONS[-2][0])
    after = duckdb.connect(":memory:")
    migrate(after)
    return sorted(tables(after) - tables(before))[0]


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


def columns_section(con) -> str:
    """Every table's and view's columns in order, as docs/schema.md lists them between its columns markers."""
    rows = con.execute("""SELECT table_name, list(column_name || ' ' || data_type ORDER BY ordinal_position)
                          FROM information_schema.columns WHERE table_schema = 'main'
                          GROUP BY table_name ORDER BY table_name""").fetchall()
    return "\n".join(f"- `{name}`: {', '.join(cols)}" for name, cols in rows)


def test_schema_doc_lists_every_column_of_every_table(tmp_path):
    from pathlib import Path
    con = duckdb.connect(str(tmp_path / "doc.duckdb"))
    migrate(con)
    doc = (Path(__file__).parent.parent / "docs" / "schema.md").read_text()
    start, end = "<!-- columns:start -->\n", "\n<!-- columns:end -->"
    assert start in doc and end in doc, "docs/schema.md lost its columns section"
    listed = doc.split(start, 1)[1].split(end, 1)[0]
    expected = columns_section(con)
    assert listed == expected, "docs/schema.md's columns section differs from the migrations; it should read:\n" \
        + expected
