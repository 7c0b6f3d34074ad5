"""Sample traffic: deterministic for a seed, checkable metadata, ingests with nothing quarantined."""
import gzip
import json

import pytest

from evals.traffic import build_prompts, sample_traffic


@pytest.fixture(scope="module")
def ifeval():
    try:
        from evals.nltk_offline import ensure
        ensure()
    except ImportError:
        pass
    from lm_eval.tasks.ifeval import instructions_registry
    return instructions_registry


def _run(tiny_model_dir, out, n=4):
    return sample_traffic(n, seed=3, out=out, model_ref=str(tiny_model_dir), max_new_tokens=6, batch_size=2,
                          progress=False)


def test_prompts_are_deterministic_prefix_stable_and_varied():
    a, b = build_prompts(40, seed=1), build_prompts(40, seed=1)
    assert a == b and build_prompts(10, seed=1) == a[:10]
    assert build_prompts(40, seed=2) != a
    assert len({p["base_id"] for p in a}) > 20
    assert all(1 <= len(p["instruction_id_list"]) <= 3 for p in a)
    assert all(len(p["kwargs"]) == len(p["instruction_id_list"]) for p in a)


def test_instructions_do_not_conflict(ifeval):
    conflicts = ifeval.INSTRUCTION_CONFLICTS
    for p in build_prompts(200, seed=0):
        ids = p["instruction_id_list"]
        for i, x in enumerate(ids):
            for y in ids[i + 1:]:
                assert y not in conflicts[x] and x not in conflicts[y], ids


def test_traffic_log_is_reproducible_and_checkable(tiny_model_dir, tmp_path, ifeval):
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
        response = line["response"]["choices"][0]["message"]["content"]
        for iid, kwargs in zip(meta["instruction_id_list"], meta["kwargs"]):
            checker = ifeval.INSTRUCTION_DICT[iid](iid)
            checker.build_description(**kwargs)  # the logged kwargs rebuild the same instruction
            assert checker.check_following(response) in (True, False)
    assert [x["created"] for x in lines] == sorted(x["created"] for x in lines)


def test_traffic_ingests_with_nothing_quarantined(tiny_model_dir, tmp_path):
    ingest = pytest.importorskip("traces.ingest")
    out = _run(tiny_model_dir, tmp_path / "traffic.jsonl")
    summary = ingest.ingest_file(out)
    assert summary.counts.quarantined == 0 and summary.counts.stored == 4


def test_resume_reuses_finished_windows(tiny_model_dir, tmp_path, monkeypatch):
    import evals.traffic as traffic
    monkeypatch.setattr(traffic, "WINDOW", 2)
    full = _run(tiny_model_dir, tmp_path / "full.jsonl").read_bytes()
    # a 2-prompt run is the first window of the 4-prompt run: same lines, same bytes
    part = _run(tiny_model_dir, tmp_path / "part.jsonl", n=2).read_bytes()
    assert full.splitlines()[:2] == part.splitlines()


def test_helper_process_windows_are_reused(tiny_model_dir, tmp_path, monkeypatch):
    import evals.traffic as traffic
    monkeypatch.setattr(traffic, "WINDOW", 2)
    full = _run(tiny_model_dir, tmp_path / "full.jsonl").read_bytes()
    out = tmp_path / "split.jsonl"
    assert sample_traffic(4, seed=3, out=out, model_ref=str(tiny_model_dir), max_new_tokens=6, batch_size=2,
                          progress=False, first_window=1) is None  # the helper: window 1 only, no log yet
    assert len(list(tmp_path.glob(".*partial*"))) == 1 and not out.exists()
    assert _run(tiny_model_dir, out).read_bytes() == full  # the main run reuses the helper's window
