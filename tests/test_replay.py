"""Self-distilled replay (curate/replay.py): instruction-free seed requests, answered greedily by the base student
once (cached in `self_replay`, keyed by model fingerprint + request + settings), deterministic."""
from builders.replay import BASES, NO_COMMA, CountingGenerate, add_trace, counting, tiny_student, traffic  # noqa: F401

from curate import replay
from traces import store


def test_base_requests_are_seed_requests_without_their_instructions():
    traffic()
    add_trace("dup", "b0", BASES[0] + " (case 0)", "seed")  # the same base request again: listed once
    add_trace("plain", "b9", "No instruction here.", "seed", instructions=False)
    with store.connect() as con:  # clustering stored a base request for t1, and "none found" (NULL) for t2
        con.execute("INSERT INTO trace_base_requests VALUES ('t1', 'Stored base of t1.'), ('t2', NULL)")
    with store.connect(read_only=True) as con:
        reqs = replay.base_requests(con)
        again = replay.base_requests(con)
        without_b3 = replay.base_requests(con, exclude_groups={"b3"})
    texts = [r["messages"][0]["content"] for r in reqs]
    assert reqs == again  # a stable order
    assert "Stored base of t1." in texts and not any("case 2" in t for t in texts)  # stored value, NULL skipped
    assert BASES[0] + " (case 0)" in texts and texts.count(BASES[0] + " (case 0)") == 1
    assert not any(NO_COMMA in t or "case 6" in t or "case 7" in t for t in texts)  # stripped; no holdout trace
    assert len(reqs) == 5 and {r["group"] for r in reqs} == {"b0", "b1", "b3", "b4", "b5"}
    assert [r for r in reqs if r["group"] != "b3"] == without_b3


def test_self_items_generated_once_then_read_from_the_cache(counting):
    traffic()
    add_trace("c", "b8", "Please cut this one short.", "seed")
    with store.connect(read_only=True) as con:
        reqs = replay.base_requests(con)
    first = replay.self_items(reqs, 4)
    assert counting.calls == 1 and len(first) == 4
    for it in first:
        assert it["origin"] == "self" and it["id"].startswith("self-")
        request = it["messages"][0]["content"]
        assert it["messages"][1] == {"role": "assistant", "content": f"Answer: {request[::-1]}"}
    assert not any("cut" in it["messages"][0]["content"] for it in first)  # cut, no sentence to keep: not used
    with store.connect(read_only=True) as con:
        cached = con.execute("SELECT count(*), count(DISTINCT model_fingerprint) FROM self_replay").fetchone()
    assert cached[0] == counting.prompts and cached[1] == 1
    again = replay.self_items(reqs, 4)  # a re-export: the same items, nothing generated
    assert again == first and counting.calls == 1
    more = replay.self_items(reqs, 6)  # asking for more: only the missing answers are generated
    assert more[:4] == first and counting.prompts == len(reqs)


def test_cache_key_follows_model_and_settings(counting, monkeypatch, tmp_path):
    traffic(3, 0)
    with store.connect(read_only=True) as con:
        reqs = replay.base_requests(con)
    replay.self_items(reqs, 3)
    assert counting.calls == 1
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "17")  # another budget: other answers
    counting_17 = CountingGenerate.__call__
    monkeypatch.setattr("train.generate.generate", lambda m, t, c, **kw: counting_17(counting, m, t, c,
                                                                                     **(kw | {"max_new_tokens": 16})))
    replay.self_items(reqs, 3)
    assert counting.calls == 2
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT gen_settings) FROM self_replay").fetchone()[0] == 2


def test_real_greedy_answers_are_deterministic(tiny_student):
    """The tiny model's greedy answers, generated twice from an empty cache, are identical."""
    traffic(4, 0)
    with store.connect(read_only=True) as con:
        reqs = replay.base_requests(con)
    first = replay.Answerer().answer(reqs)
    with store.connect() as con:
        con.execute("DELETE FROM self_replay")
    second = replay.Answerer().answer(reqs)
    assert first == second and all(r["response"] for r in first)


def test_an_answer_cut_by_the_budget_is_trimmed_to_its_last_whole_sentence(counting):
    add_trace("t", "b1", "Please trim this answer.", "seed")
    with store.connect(read_only=True) as con:
        reqs = replay.base_requests(con)
    (item,) = replay.self_items(reqs, 1)
    assert item["messages"][-1]["content"] == "One whole sentence here."
    with store.connect(read_only=True) as con:  # the cache keeps what was generated
        assert con.execute("SELECT response, finish_reason FROM self_replay").fetchone() == \
            ("One whole sentence here. And then the budget ran ou", "length")
