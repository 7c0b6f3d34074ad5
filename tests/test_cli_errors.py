"""Issue 25, finding 10 (settings and CLI): what a user can fix is one line naming the file or setting, never a
traceback; Ctrl-C during a DuckDB query is exit 130; `curate report` writes nowhere but reports/."""
import uuid

import duckdb
import pytest

from traces import cli_dispatch, settings, store


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # so that "one line" is not rich wrapping a long path


def one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert all(needle in err for needle in needles), err


def test_ctrl_c_during_a_duckdb_query_is_one_line_and_130(capsys):
    """A Ctrl-C that lands inside a query comes out of duckdb 2.0 as RuntimeError("Query interrupted"), not as
    KeyboardInterrupt (seen sending SIGINT to `traces stats` on a large store; a signal sent from a test reaches
    DuckDB's check only now and then, so the test raises what it raised)."""
    def interrupted_query(argv):
        with store.connect() as con:
            con.execute("SELECT 1")
            raise RuntimeError("Query interrupted")
    assert cli_dispatch._run(interrupted_query, []) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli_dispatch._run(lambda argv: 1 / 0, []) == 1  # any other crash keeps its (scrubbed) traceback
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_corrupt_database_and_a_folder_as_database_name_the_file(tmp_path, monkeypatch, capsys):
    from traces.cli import main
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(b"not a database " * 500)
    folder = tmp_path / "folder.duckdb"
    folder.mkdir()
    for path in (corrupt, folder):
        monkeypatch.setenv("MEND_DB", str(path))
        assert main(["stats"]) == 2
        one_line_error(capsys, str(path), "cannot open the database")


def test_read_only_database_names_the_file(tmp_path, monkeypatch, capsys):
    """What DuckDB raises for a file it may not write (simulated: the tests may run as root, whom chmod binds not)."""
    from traces.cli import main
    with store.connect():
        pass
    real = duckdb.connect

    def connect(path, read_only=False, **kw):
        if not read_only:
            raise duckdb.IOException(f'IO Error: Cannot open file "{path}": Permission denied')
        return real(path, read_only=read_only, **kw)
    monkeypatch.setattr(store.duckdb, "connect", connect)
    log = tmp_path / "x.jsonl"
    log.write_text("{}\n")
    assert main(["ingest", str(log)]) == 2
    one_line_error(capsys, str(settings.db_path()), "Permission denied")


def test_curate_report_refuses_a_path_outside_reports(tmp_path, monkeypatch, capsys):
    from builders.nightly_report import nightly

    from curate.cli import main
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    nightly()
    name = f"mend-escape-{uuid.uuid4().hex[:8]}"
    assert main(["report", f"../../{name}"]) == 2
    assert not (tmp_path.parent / name).exists() and not (tmp_path / name).exists()
    assert "no nightly" in capsys.readouterr().err
    assert main(["report", "n1"]) == 0 and (tmp_path / "reports" / "n1" / "report.md").exists()
