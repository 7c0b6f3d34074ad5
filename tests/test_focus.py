"""The nightly's focus stage (curate/loop/focus.py): train again on the claimed clusters only, judge that adapter."""
from types import SimpleNamespace

import pytest
from rich.console import Console
from test_claims import _merged, _pairs, _trained

from curate.loop import focus, nightly
from traces import store


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    monkeypatch.setenv("MEND_CURATE_NIGHTLY_FOCUS", "true")  # off by default (curate/settings.py says why)
    monkeypatch.setattr("curate.loop.validation.carve", lambda *a, **k: SimpleNamespace(prompts=[1] * 3, traffic=[1]))
    with store.connect() as con:
        _trained(con)  # tr1 trained on c-nc (no_comma) and c-fl (fluent)
    return tmp_path


def _ctx(**done):
    return SimpleNamespace(done=done, console=Console(file=open("/dev/null", "w")), memo={})


def _outcomes(seen):
    def outcomes(model, adapter, val, checks):
        seen.append((adapter, sorted(checks)))
        base, cand = _merged(_pairs("no_comma", 5, 0, 15), _pairs("fluent", 8, 6, 6))
        return cand if adapter else base
    return outcomes


def _trainer(calls, status="complete"):
    def train(argv):
        calls.append(argv)
        return SimpleNamespace(run_id="tr2", adapter_dir="adapters/tr2", status=status, error="out of memory",
                               metrics={"final_loss": 1.1})
    return train


def test_focus_trains_the_claimed_clusters_only_and_judges_that_adapter(home, monkeypatch):
    exported, calls, seen = [], [], []
    monkeypatch.setattr("curate.export.export", lambda **k: exported.append(k) or
                        {"out": k["out"], "counts": {"example": 3, "replay": 1}})
    ctx = _ctx(train={"adapter": "a/1", "train_run": "tr1"}, validate={"claimed": ["c-nc"]})
    ctx.memo[("validation base", frozenset({"no_comma"}))] = _outcomes([])(None, None, None, {"no_comma"})
    out = focus.stage_focus(ctx, _trainer(calls), _outcomes(seen))
    assert exported[0]["only_checks"] == {"no_comma"} and exported[0]["out"].endswith("data/train/focus.jsonl")
    assert calls == [["--training-set", exported[0]["out"]]]
    assert seen == [("adapters/tr2", ["no_comma"])]  # the base's answers were reused, not generated again
    assert out["adapter"] == "adapters/tr2" and out["claimed"] == ["c-nc"] and out["checks_trained"] == ["no_comma"]
    assert focus.gated(SimpleNamespace(done={**ctx.done, "focus": out})) == (out, out)
    assert focus.gated(ctx) == (ctx.done["train"], ctx.done["validate"])  # no focus: the first adapter
    monkeypatch.setenv("MEND_CURATE_FOCUS_EPOCHS", "2")
    focus.stage_focus(ctx, _trainer(calls), _outcomes(seen))
    assert calls[-1] == ["--training-set", exported[0]["out"], "--epochs", "2.0"]


def test_focus_is_skipped_with_nothing_to_drop_or_nothing_claimed(home, monkeypatch):
    calls = []
    train = {"adapter": "a/1", "train_run": "tr1"}
    every = focus.stage_focus(_ctx(train=train, validate={"claimed": ["c-fl", "c-nc"]}), _trainer(calls))
    assert every["skipped"] and "already focused" in every["why"]
    assert focus.stage_focus(_ctx(train=train, validate={"claimed": []}), _trainer(calls))["skipped"]
    assert focus.stage_focus(_ctx(train=train, validate={"skipped": True}), _trainer(calls))["skipped"]
    monkeypatch.setenv("MEND_CURATE_NIGHTLY_FOCUS", "false")
    assert "off" in focus.stage_focus(_ctx(train=train, validate={"claimed": ["c-nc"]}), _trainer(calls))["why"]
    assert calls == []


def test_a_failed_focus_training_fails_the_stage_naming_the_run(home, monkeypatch):
    monkeypatch.setattr("curate.export.export", lambda **k: {"out": k["out"], "counts": {"example": 3, "replay": 1}})
    ctx = _ctx(train={"adapter": "a/1", "train_run": "tr1"}, validate={"claimed": ["c-nc"]})
    with pytest.raises(focus.FocusError, match="tr2 failed: out of memory"):
        focus.stage_focus(ctx, _trainer([], status="failed"))


def test_the_gate_judges_the_focused_adapter_on_its_own_claims(home, monkeypatch):
    calls = []
    monkeypatch.setattr(nightly, "run_gate", lambda ref, adapter, *a, **k: calls.append((adapter, k["clusters"])) or
                        {"verdict": "REJECT", "decision_id": "gd", "reasons": []})
    monkeypatch.setattr(nightly, "print_result", lambda *a: None)
    done = {"train": {"adapter": "a/1", "train_run": "tr1"}, "validate": {"claimed": ["c-nc", "c-x"]},
            "focus": {"adapter": "adapters/tr2", "train_run": "tr2", "claimed": ["c-nc"]}}
    nightly.stage_gate(_ctx(**done))
    assert nightly.stage_gate(_ctx(**{**done, "focus": {**done["focus"], "claimed": []}}))["skipped"]
    nightly.stage_gate(_ctx(**{**done, "focus": {"skipped": True}}))
    assert calls == [("adapters/tr2", ["c-nc"]), ("a/1", ["c-nc", "c-x"])]
