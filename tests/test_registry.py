"""The production registry: promote needs a passing gate (or --force), atomic, rollback, resolve_ref."""
import duckdb
import pytest

from evals import registry
from traces import store


def _adapter(tmp_path, name="ad", content=b"w1"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(content)
    return str(folder)


def _decision(decision_id, verdict, adapter):
    with store.connect() as con:
        con.execute("""INSERT INTO gate_decisions (decision_id, candidate_ref, candidate_adapter,
                       candidate_adapter_hash, baseline_ref, verdict) VALUES (?, 'base', ?, ?, 'base', ?)""",
                    [decision_id, adapter, registry.adapter_hash(adapter), verdict])


def _current_count():
    with store.connect(read_only=True) as con:
        return con.execute("SELECT count(*) FROM registry WHERE is_current").fetchone()[0]


def test_empty_registry_resolves_to_the_base_model():
    assert registry.resolve_ref("production") == ("smollm2-135m-instruct", None)
    assert registry.resolve_ref("other", "ad") == ("other", "ad")


def test_promote_rests_on_a_passing_decision(tmp_path):
    ad = _adapter(tmp_path)
    _decision("g1", "PROMOTE", ad)
    entry = registry.promote(decision_id="g1")
    assert registry.resolve_ref("production") == ("base", ad)
    with store.connect(read_only=True) as con:
        row = con.execute("SELECT entry_id, decision_id, forced, action FROM registry WHERE is_current").fetchone()
    assert row == (entry, "g1", False, "promote")


def test_promote_without_passing_gate_needs_force(tmp_path):
    ad = _adapter(tmp_path)
    _decision("g2", "REJECT", ad)
    with pytest.raises(registry.RegistryError, match="says REJECT"):
        registry.promote(decision_id="g2")
    with pytest.raises(registry.RegistryError, match="no gate decision"):
        registry.promote("base", ad)
    assert _current_count() == 0
    registry.promote("base", ad, decision_id="g2", force=True)
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT forced FROM registry WHERE is_current").fetchone() == (True,)


def test_decision_for_another_adapter_does_not_count(tmp_path):
    ad1, ad2 = _adapter(tmp_path, "a1", b"1"), _adapter(tmp_path, "a2", b"2")
    _decision("g3", "PROMOTE", ad1)
    with pytest.raises(registry.RegistryError, match="another candidate"):
        registry.promote("base", ad2, decision_id="g3")


def test_rollback_goes_to_the_previous_entry_and_keeps_exactly_one_current(tmp_path):
    ad1, ad2 = _adapter(tmp_path, "a1", b"1"), _adapter(tmp_path, "a2", b"2")
    _decision("d1", "PROMOTE", ad1)
    _decision("d2", "PROMOTE", ad2)
    registry.promote(decision_id="d1")
    registry.promote(decision_id="d2")
    assert _current_count() == 1 and registry.resolve_ref("production")[1] == ad2
    registry.rollback()
    assert _current_count() == 1 and registry.resolve_ref("production")[1] == ad1
    registry.rollback()   # before d1 there was nothing: back to the base model
    assert registry.resolve_ref("production") == ("smollm2-135m-instruct", None)
    assert len(registry.history()) == 4


def test_rollback_of_empty_registry_is_an_error():
    with pytest.raises(registry.RegistryError, match="empty"):
        registry.rollback()


def test_promote_is_atomic_when_the_insert_fails(tmp_path, monkeypatch):
    ad = _adapter(tmp_path)
    registry.promote("base", ad, force=True)
    # a failing insert (duplicate primary key) must roll back the cleared current flag too
    monkeypatch.setattr(registry.uuid, "uuid4", lambda: type("U", (), {"hex": "0" * 32})())
    registry.promote("base", ad, force=True)
    with pytest.raises(duckdb.ConstraintException):
        registry.promote("base", ad, force=True)
    assert _current_count() == 1


def test_cli_list_promote_rollback(tmp_path, capsys):
    ad = _adapter(tmp_path)
    _decision("g9", "PROMOTE", ad)
    assert registry.main(["promote", "--decision", "g9"]) == 0
    assert registry.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "g9" in out and f"production = base + {ad}" in out.replace("\n", "")
    assert registry.main(["promote", "--model", "x"]) == 2
    assert registry.main(["rollback"]) == 0
    assert _current_count() == 1


def test_list_json_is_production_and_its_history(tmp_path, capsys):
    """Issue 26 (5): `evals registry list --json` is one JSON document on stdout (no adapter: null, not "(base)")."""
    import json
    assert registry.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "production": {"model_ref": "smollm2-135m-instruct", "adapter_path": None}, "history": []}
    ad = _adapter(tmp_path)
    _decision("g1", "PROMOTE", ad)
    registry.promote(decision_id="g1")
    registry.rollback()
    assert registry.main(["list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["production"] == {"model_ref": "smollm2-135m-instruct", "adapter_path": None}
    assert [(e["action"], e["adapter_path"], e["decision_id"], e["current"]) for e in doc["history"]] == [
        ("promote", ad, "g1", False), ("rollback", None, None, True)]
    assert doc["history"][0]["created_at"][:4].isdigit()  # ISO 8601
