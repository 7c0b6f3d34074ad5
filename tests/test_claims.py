"""The nightly's validate stage (curate/loop/claims.py): the gate tests only the trained clusters validation supports."""
from types import SimpleNamespace

import pytest
from rich.console import Console

from curate.loop import claims, nightly
from traces import store


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    return tmp_path


def _pairs(check, fixed=0, broken=0, same=0):
    """(base, candidate) outcomes keyed (item, check): `fixed` items fail then pass, `broken` pass then fail."""
    base, cand = {}, {}
    for i, (b, c) in enumerate([(False, True)] * fixed + [(True, False)] * broken + [(True, True)] * same):
        base[(f"i{i}", check)], cand[(f"i{i}", check)] = b, c
    return base, cand


def _merged(*parts):
    return {k: v for p in parts for k, v in p[0].items()}, {k: v for p in parts for k, v in p[1].items()}


def test_a_check_is_claimed_only_when_validation_fixed_it_clearly():
    base, cand = _merged(_pairs("no_comma", 4, 0, 3), _pairs("fluent", 15, 14), _pairs("end_checker", 3, 0),
                         _pairs("capital", 0, 4), _pairs("quotation", 0, 0, 5))
    out = claims.screen(base, cand, 0.2, min_items=3)
    assert out["no_comma"] == {"n": 7, "fixed": 4, "broken": 0, "p": 0.125, "screened": True, "claimed": True}
    assert not out["fluent"]["claimed"] and out["fluent"]["p"] == 1.0  # churn: as many broken as fixed
    assert not out["end_checker"]["claimed"] and out["end_checker"]["p"] == 0.25  # 3/0 is above the screen's 0.2
    assert not out["capital"]["claimed"]  # p 0.125, but it broke
    assert out["quotation"] == {"n": 5, "fixed": 0, "broken": 0, "p": 1.0, "screened": True, "claimed": False}
    assert claims.screen(base, cand, 0.3, min_items=3)["end_checker"]["claimed"]
    # too few items to screen: the check stays a target and the gate decides (the default needs 20)
    few = claims.screen(base, cand, 0.2)
    assert few["capital"] == {"n": 4, "fixed": 0, "broken": 4, "p": 0.125, "screened": False, "claimed": True}
    assert not few["fluent"]["claimed"] and few["fluent"]["screened"]  # 29 items
    assert few["no_comma"]["screened"] and few["no_comma"]["claimed"]  # 7 items, but a clear fix


def _trained(con):
    """train run tr1 trained on examples of clusters c-nc (no_comma) and c-fl (fluent); c-q was never trained on."""
    for cid, check in [("c-nc", "no_comma"), ("c-fl", "fluent"), ("c-q", "quotation")]:
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES (?, 'r', ?, ?, 5)",
                    [cid, check, f"label {check}"])
        con.execute("""INSERT INTO examples (example_id, cluster_id, mode, messages, prompt, response, status)
                       VALUES (?, ?, 'compose', '[]', 'p', 'r', 'accepted')""", [f"e-{cid}", cid])
    con.execute("""INSERT INTO train_runs (run_id, base_model, base_fingerprint, training_set, status, started_at)
                   VALUES ('tr1', 'm', 'fp', 't.jsonl', 'complete', now())""")
    con.executemany("INSERT INTO train_examples VALUES ('tr1', ?, 'example', 'h')", [["e-c-nc"], ["e-c-fl"]])


def _ctx(**done):
    return SimpleNamespace(done=done, console=Console(file=open("/dev/null", "w")))


def test_the_stage_claims_the_clusters_of_the_checks_validation_supports(home, monkeypatch):
    with store.connect() as con:
        _trained(con)
    monkeypatch.setattr("curate.loop.validation.carve", lambda *a, **k: SimpleNamespace(prompts=[1] * 3, traffic=[1]))
    seen = []

    def outcomes(model, adapter, val, checks):
        seen.append((adapter, sorted(checks)))
        base, cand = _merged(_pairs("no_comma", 5, 0, 15), _pairs("fluent", 8, 6, 6))
        return cand if adapter else base

    out = claims.stage_validate(_ctx(train={"adapter": "a/b", "train_run": "tr1"}), outcomes)
    assert seen == [(None, ["fluent", "no_comma"]), ("a/b", ["fluent", "no_comma"])]  # the base, then the candidate
    assert out["claimed"] == ["c-nc"] and out["not_claimed"] == ["label fluent"]
    assert out["checks"]["no_comma"]["fixed"] == 5 and (out["prompts"], out["traffic"]) == (3, 1)
    md = "\n".join(claims.claims_md(out))
    assert "| no_comma | 20 | 5 | 0 | 0.062 | yes |" in md and "not claimed: label fluent." in md
    assert out["degenerate_rise"] is None  # no traffic answers in this fake
    monkeypatch.setenv("MEND_CURATE_NIGHTLY_VALIDATE", "false")
    assert claims.stage_validate(_ctx(train={"adapter": "a/b", "train_run": "tr1"}), outcomes)["skipped"]
    assert claims.stage_validate(_ctx(train={}), outcomes)["why"] == "no new adapter"


def test_the_gate_tests_only_the_claimed_clusters_and_none_means_no_gate(home, monkeypatch):
    calls = []
    monkeypatch.setattr(nightly, "run_gate", lambda *a, **k: calls.append(k["clusters"]) or
                        {"verdict": "REJECT", "decision_id": "gd", "reasons": []})
    monkeypatch.setattr(nightly, "print_result", lambda *a: None)
    train = {"adapter": "a/b", "train_run": "tr1"}
    out = nightly.stage_gate(_ctx(train=train, validate={"claimed": []}))
    assert out["skipped"] and "supports none" in out["why"] and calls == []  # the holdout is not spent
    why = "validation traffic's degenerate share rose 6.0 points (the gate allows 5)"
    assert why in nightly.stage_gate(_ctx(train=train, validate={"claimed": [], "why": why}))["why"]
    assert nightly.stage_gate(_ctx(train=train, validate={"claimed": ["c-nc"]}))["verdict"] == "REJECT"
    nightly.stage_gate(_ctx(train=train, validate={"skipped": True}))  # off: every trained cluster (the gate's own)
    assert calls == [["c-nc"], None]


def test_the_nightly_trains_without_the_validation_groups(home, monkeypatch):
    got = []
    monkeypatch.setattr(nightly, "export", lambda **k: got.append(k["exclude_groups"]) or
                        {"counts": {"example": 1, "replay": 0}, "out": "t.jsonl"})
    monkeypatch.setattr(nightly, "validation_groups", lambda con, fraction: frozenset({f"g{fraction}"}))
    with store.connect() as con:
        con.execute("""INSERT INTO examples (example_id, mode, messages, prompt, response, status)
                       VALUES ('e1', 'compose', '[]', 'p', 'r', 'accepted')""")
    nightly.stage_export(_ctx())
    monkeypatch.setenv("MEND_CURATE_NIGHTLY_VALIDATE", "false")
    nightly.stage_export(_ctx())
    assert got == [frozenset({"g0.25"}), frozenset()]


def test_more_degenerate_validation_traffic_than_the_gate_allows_means_no_gate(home, monkeypatch):
    with store.connect() as con:
        _trained(con)
    monkeypatch.setattr("curate.loop.validation.carve", lambda *a, **k: SimpleNamespace(prompts=[], traffic=[1]))
    flags = {"base": [False] * 90 + [True] * 10, "cand": [False] * 84 + [True] * 16}  # 10% -> 16%: +6 points

    def outcomes(model, adapter, val, checks):
        base, cand = _pairs("no_comma", 8, 0, 12)
        side = cand if adapter else base
        return {**side, **{(f"t{i}", claims.DEGENERATE): d for i, d in enumerate(flags["cand" if adapter else "base"])}}

    out = claims.stage_validate(_ctx(train={"adapter": "a/b", "train_run": "tr1"}), outcomes)
    assert out["degenerate_rise"] == 6.0 and out["claimed"] == [] and "rose 6.0 points" in out["why"]
    assert claims.DEGENERATE not in out["checks"]
    flags["cand"] = [False] * 86 + [True] * 14
    # +4: within the gate's 5, the claims stand (fluent: no validation item here, so not screened)
    again = claims.stage_validate(_ctx(train={"adapter": "a/b", "train_run": "tr1"}), outcomes)
    assert again["claimed"] == ["c-fl", "c-nc"] and again["degenerate_rise"] == 4.0


def test_item_outcomes_on_a_real_model(home, monkeypatch, tiny_model_dir, one_thread):
    """The tiny model answers a target prompt and a traffic trace: every targeted check and the traffic answer's
    degeneration flag get an outcome, the same keys for any adapter (so the sides pair up)."""
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "8")
    meta = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    prompt = {"id": "p1", "messages": [{"role": "user", "content": "Say hi without commas."}],
              "prompt": "Say hi without commas.", "metadata": meta, "targets": ["punctuation:no_comma"]}
    trace = {"id": "t1", "messages": [{"role": "user", "content": "Name a color."}], "prompt": "Name a color.",
             "metadata": {}}
    val = SimpleNamespace(prompts=[prompt], traffic=[trace])
    out = claims.item_outcomes(str(tiny_model_dir), None, val, {"punctuation:no_comma", "fluent"})
    assert set(out) == {("p1", "punctuation:no_comma"), ("t1", "fluent"), ("t1", claims.DEGENERATE)}
    assert out[("t1", "fluent")] != out[("t1", claims.DEGENERATE)]  # the same filter, one as a pass
