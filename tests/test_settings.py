"""Settings: default < pyproject [tool.mend.<stage>] < MEND_<STAGE>_<KEY> < flag; unknown keys are errors."""
import pytest

from traces import settings


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root of its own (MEND_HOME) whose pyproject.toml the test writes."""
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.setenv("MEND_HOME", str(root))

    def write(body: str):
        (root / "pyproject.toml").write_text("[project]\nname = 'x'\n\n" + body)
        return root
    write("")
    return write


def test_defaults_when_nothing_is_set(project):
    s, sources = settings.load_with_sources("traces")
    assert s == settings.TracesSettings()
    assert set(sources.values()) == {"default"}


def test_precedence_default_pyproject_env_flag(project, monkeypatch):
    project("[tool.mend.traces]\nholdout_fraction = 0.3\ngroup_key = 'tenant'\nbatch_lines = 1000\n")
    monkeypatch.setenv("MEND_TRACES_GROUP_KEY", "user")
    monkeypatch.setenv("MEND_TRACES_BATCH_LINES", "500")
    s, src = settings.load_with_sources("traces", {"batch_lines": 42, "redact_pii": None})
    assert s.holdout_fraction == 0.3 and src["holdout_fraction"].startswith("pyproject.toml")
    assert s.group_key == "user" and src["group_key"] == "env MEND_TRACES_GROUP_KEY"
    assert s.batch_lines == 42 and src["batch_lines"] == "flag"
    assert s.redact_pii is False and src["redact_pii"] == "default"  # a None flag means "not given"
    assert s.inbox == "data/inbox" and src["inbox"] == "default"


def test_env_values_are_parsed_to_the_default_type(project, monkeypatch):
    monkeypatch.setenv("MEND_TRACES_SCRUB_SECRETS", "false")
    monkeypatch.setenv("MEND_TRACES_BUSY_TIMEOUT_S", "0.5")
    s = settings.load("traces")
    assert s.scrub_secrets is False and s.busy_timeout_s == 0.5


def test_bad_env_value_names_the_variable(project, monkeypatch):
    monkeypatch.setenv("MEND_TRACES_BATCH_LINES", "lots")
    with pytest.raises(settings.SettingsError, match="MEND_TRACES_BATCH_LINES"):
        settings.load("traces")


def test_unknown_key_in_pyproject_is_an_error_naming_it(project):
    project("[tool.mend.traces]\nholdout_fraktion = 0.3\n")
    with pytest.raises(settings.SettingsError, match="holdout_fraktion") as err:
        settings.load("traces")
    assert "pyproject.toml" in str(err.value) and "holdout_fraction" in str(err.value)  # lists the known keys


def test_unknown_env_key_is_an_error_naming_it(project, monkeypatch):
    monkeypatch.setenv("MEND_TRACES_NOPE", "1")
    with pytest.raises(settings.SettingsError, match="MEND_TRACES_NOPE"):
        settings.load("traces")


def test_unknown_flag_and_unknown_stage(project):
    with pytest.raises(settings.SettingsError, match="colour"):
        settings.load("traces", {"colour": "red"})
    with pytest.raises(settings.SettingsError, match="unknown stage"):
        settings.load("deploy")


def test_paths_resolve_against_the_project_root(project, monkeypatch, tmp_path):
    root = project("")
    monkeypatch.delenv("MEND_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert settings.db_path() == root / "data" / "mend.duckdb"
    monkeypatch.setenv("MEND_DB", "elsewhere/x.duckdb")
    assert settings.db_path() == root / "elsewhere" / "x.duckdb"
    assert settings.resolve_path("/abs/p") == settings.Path("/abs/p")


def test_every_stage_resolves_and_config_lists_sources(project, monkeypatch, capsys):
    from traces import config_cmd
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("MEND_TRACES_HOLDOUT_FRACTION", "0.25")
    for stage in settings.STAGES:
        assert settings.as_dict(settings.load(stage))
    assert config_cmd.main([]) == 0
    out = capsys.readouterr().out
    assert "env MEND_TRACES_HOLDOUT_FRACTION" in out and "[tool.mend.train]" in out and "database:" in out


def test_a_plain_string_for_a_list_setting_is_a_comma_separated_list(project, monkeypatch):
    """MEND_EVALS_SUITES=no_links is one suite, not the suites 'n', 'o', '_', ... (`evals run`: unknown suite 'k')."""
    root = project("[tool.mend.evals]\nsuites_dir = 'suites'\n")
    (root / "suites").mkdir()
    (root / "suites" / "no_links.yaml").write_text(
        "name: no_links\nversion: '1'\nchecks:\n  - check: regex\n    args: {pattern: 'https?://', negate: true}\n")
    monkeypatch.setenv("MEND_EVALS_SUITES", "no_links")
    s, src = settings.load_with_sources("evals")
    assert s.suites == ("no_links",) and src["suites"] == "env MEND_EVALS_SUITES"
    from evals import suites
    assert [suites.load(name).name for name in s.suites] == ["no_links"]
    monkeypatch.setenv("MEND_EVALS_SUITES", " no_links, format ,")
    assert settings.load("evals").suites == ("no_links", "format")
    monkeypatch.setenv("MEND_EVALS_SUITES", '["no_links", "format"]')       # JSON, as before
    assert list(settings.load("evals").suites) == ["no_links", "format"]
    monkeypatch.setenv("MEND_CURATE_STRATEGIES", "repair,sample")
    assert settings.load("curate").strategies == ("repair", "sample")
    monkeypatch.setenv("MEND_EVALS_JUDGE_MODEL", "a,b")                     # a string setting stays a string
    assert settings.load("evals").judge_model == "a,b"


# ---------- issue 25, finding 10: what was accepted silently or crashed ----------

def test_malformed_pyproject_is_one_line_naming_the_file(project, capsys, monkeypatch):
    from traces.cli import main
    monkeypatch.setenv("COLUMNS", "500")
    root = project("[tool.mend.traces\nholdout_fraction = \n")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {root / 'pyproject.toml'}") and len(err.strip().splitlines()) == 1


def test_unknown_settings_table_is_an_error_naming_it(project):
    root = project("[tool.mend.trian]\nepochs = 1\n")
    with pytest.raises(settings.SettingsError, match=r"\[tool\.mend\.trian\]") as err:
        settings.load("traces")
    assert str(root) in str(err.value) and "[tool.mend.train]" in str(err.value)  # lists the known tables


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_negative_or_nan_numbers_are_errors_naming_the_key(project, monkeypatch, value):
    project(f"[tool.mend.curate]\nsynth_minutes = {value}\n")
    with pytest.raises(settings.SettingsError, match="synth_minutes"):
        settings.load("curate")
    project("")
    monkeypatch.setenv("MEND_CURATE_SYNTH_MINUTES", value)
    with pytest.raises(settings.SettingsError, match="MEND_CURATE_SYNTH_MINUTES"):
        settings.load("curate")


def test_settings_where_negative_means_something_stay_allowed(project):
    project("[tool.mend.train]\nmax_steps = -1\n\n[tool.mend.curate]\nsweep_prose_tolerance = -1\n")
    assert settings.load("train").max_steps == -1  # -1: no step limit (transformers' own convention)
    assert settings.load("curate").sweep_prose_tolerance == -1  # negative: the gate's own tolerance
