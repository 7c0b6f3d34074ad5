"""Sample traffic: deterministic for a seed, checkable metadata, ingests with nothing quarantined."""
import gzip
import json

import pytest

import evals.traffic as traffic
from evals import checks, ifeval
from evals.traffic import build_prompts, sample_traffic
from traces import ingest
from train.generate import generate as train_generate


def _run(tiny_model_dir, out, n=4, first_window=0):
    return sample_traffic(n, seed=3, out=out, model_ref=str(tiny_model_dir), max_new_tokens=6, batch_size=2,
                          progress=False, first_window=first_window)


class Killed(Exception):
    """Stands for the process being killed in the middle of a window."""


def _record_generate(monkeypatch, kill_after=None):
    """Replace the traffic builder's generate: record the prompts of each call; raise Killed on the call after
    `kill_after` calls."""
    calls = []

    def generate(model, tok, conversations, **kw):
        if kill_after is not None and len(calls) >= kill_after:
            raise Killed
        calls.append([c[-1]["content"] for c in conversations])
        return train_generate(model, tok, conversations, **kw)
    monkeypatch.setattr(traffic, "generate", generate)
    return calls


def _prompts(n):
    return [p["messages"][-1]["content"] for p in build_prompts(n, seed=3)]


def test_prompts_are_deterministic_prefix_stable_and_varied():
    a, b = build_prompts(40, seed=1), build_prompts(40, seed=1)
    assert a == b and build_prompts(10, seed=1) == a[:10]
    assert build_prompts(40, seed=2) != a
    assert len({p["base_id"] for p in a}) > 20
    assert all(1 <= len(p["instruction_id_list"]) <= 3 for p in a)
    assert all(len(p["kwargs"]) == len(p["instruction_id_list"]) for p in a)


def test_instructions_do_not_conflict():
    conflicts = ifeval.conflicts()
    for p in build_prompts(200, seed=0):
        ids = p["instruction_id_list"]
        for i, x in enumerate(ids):
            for y in ids[i + 1:]:
                assert y not in conflicts[x] and x not in conflicts[y], ids


def test_traffic_log_is_reproducible_and_checkable(tiny_model_dir, tmp_path):
    first = _run(tiny_model_dir, tmp_path / "a.jsonl.gz").read_bytes()
    assert first == _run(tiny_model_dir, tmp_path / "b.jsonl.gz").read_bytes()  # bit for bit, gzip mtime 0
    assert not list(tmp_path.glob(".*partial*"))  # the checkpoint goes once the log is written
    lines = [json.loads(x) for x in gzip.decompress(first).decode().splitlines()]
    assert len(lines) == 4 and len({x["id"] for x in lines}) == 4
    for line in lines:
        assert line["request"]["messages"][-1]["role"] == "user"
        assert line["response"]["choices"][0]["finish_reason"] in ("stop", "length")
        meta = line["metadata"]
        assert meta["base_id"].startswith("b") and meta["generation"]["decoding"] == "greedy"
        prompt = line["request"]["messages"][-1]["content"]
        response = line["response"]["choices"][0]["message"]["content"]
        for iid, kwargs in zip(meta["instruction_id_list"], meta["kwargs"]):
            assert ifeval.build_instruction(iid, kwargs, prompt)[1] in prompt  # the logged kwargs rebuild it
            result = checks.run_check(iid, response, kwargs, {"prompt": prompt})
            assert "check raised" not in result.reason and result.passed_loose is not None, result.reason
    assert [x["created"] for x in lines] == sorted(x["created"] for x in lines)


def test_traffic_ingests_with_nothing_quarantined(tiny_model_dir, tmp_path):
    out = _run(tiny_model_dir, tmp_path / "traffic.jsonl")
    summary = ingest.ingest_file(out)
    assert summary.counts.quarantined == 0 and summary.counts.stored == 4


def test_a_smaller_run_is_a_prefix_of_a_larger_one(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(traffic, "WINDOW", 2)
    full = _run(tiny_model_dir, tmp_path / "full.jsonl").read_bytes()
    # a 2-prompt run is the first window of the 4-prompt run: same lines, same bytes
    part = _run(tiny_model_dir, tmp_path / "part.jsonl", n=2).read_bytes()
    assert full.splitlines()[:2] == part.splitlines()


def test_a_killed_run_resumes_without_regenerating_finished_windows(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(traffic, "WINDOW", 2)
    full = _run(tiny_model_dir, tmp_path / "uninterrupted" / "log.jsonl").read_bytes()
    out = tmp_path / "killed" / "log.jsonl"
    first = _record_generate(monkeypatch, kill_after=1)
    with pytest.raises(Killed):  # killed while generating the second window
        _run(tiny_model_dir, out)
    assert first == [_prompts(2)] and not out.exists() and len(list(out.parent.glob(".*partial*"))) == 1
    second = _record_generate(monkeypatch)
    assert _run(tiny_model_dir, out).read_bytes() == full
    assert second == [_prompts(4)[2:]]  # window 0 came from the checkpoint
    assert not list(out.parent.glob(".*partial*"))


def test_helper_process_windows_are_reused(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(traffic, "WINDOW", 2)
    full = _run(tiny_model_dir, tmp_path / "full.jsonl").read_bytes()
    out = tmp_path / "split" / "log.jsonl"
    helper = _record_generate(monkeypatch)
    assert _run(tiny_model_dir, out, first_window=1) is None  # the helper: window 1 only, no log yet
    assert helper == [_prompts(4)[2:]]
    assert len(list(out.parent.glob(".*partial*"))) == 1 and not out.exists()
    main = _record_generate(monkeypatch)
    assert _run(tiny_model_dir, out).read_bytes() == full  # the main run reuses the helper's window
    assert main == [_prompts(4)[:2]]
