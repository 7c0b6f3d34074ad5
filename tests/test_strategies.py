"""The candidate strategies of curate synth (curate/synth/strategies.py), each alone and together, through the OpenAI stub:
repair (production's failing answer, failing teacher samples), constrained (the request carries the constraint in
the server's dialect), sample, revise (the teacher sees the failing answer and the check's reason); composition on
a multi-instruction prompt; strategy and provenance on every example; the target stops later strategies."""
import json

import pytest

from openai_stub import OpenAIStub
from builders.synth import BASES, seed_store, use_stub

from curate.synth import driver as synth
from curate.synth.candidates import verify
from curate.synth.repair import content_overlap
from traces import store

END = "Is there anything else I can help with?"
SPECS = [("change_case:english_lowercase", {}), ("punctuation:no_comma", {}), ("startend:end_checker", {"end_phrase": END})]
PROMPT = ("Write a note to my neighbours letting them know we are having a small birthday party on Saturday night. "
          "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed. "
          "In your entire response, refrain from the use of any commas. Finish your response with this exact phrase "
          f"{END}. No other words should follow this phrase.")
PRODUCTION = ("Hi neighbours, we are having a small birthday party at our flat on Saturday night. Music may run until "
              "about eleven, and we will keep the windows closed. Please knock if anything bothers you.")


def multi_store():
    """A failing production trace (t7) whose prompt carries three real IFEval instructions, in a cluster of its own
    (lowercase), next to the usual store (cluster c1: no_comma)."""
    seed_store()
    md = {"base_id": "b007", "instruction_id_list": [i for i, _ in SPECS], "kwargs": [k for _, k in SPECS]}
    with store.connect() as con:
        con.execute("""INSERT INTO traces (trace_id, source_format, source_file, ingest_id, model, messages, prompt,
                       response, metadata, group_key, split) VALUES ('t7', 'test', 'log.jsonl', 'ing-1', 'student',
                       ?, ?, ?, ?, 'b007', 'seed')""",
                    [json.dumps([{"role": "user", "content": PROMPT}]), PROMPT, PRODUCTION, json.dumps(md)])
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES "
                    "('c7', 'run1', 'change_case:english_lowercase', 'lowercase notes', 1)")
        con.execute("INSERT INTO cluster_members (cluster_id, trace_id, run_id, split) VALUES ('c7', 't7', 'run1', 'seed')")


def rows(cluster=None):
    cols = ["example_id", "cluster_id", "seed_trace_id", "strategy", "source_id", "request_hash", "status", "reason",
            "prompt", "response", "metadata", "guidance"]
    with store.connect(read_only=True) as con:
        got = con.execute(f"SELECT {', '.join(cols)} FROM examples WHERE ? IS NULL OR cluster_id = ? "
                          "ORDER BY created_at, example_id", [cluster, cluster]).fetchall()
    return [dict(zip(cols, r)) for r in got]


def checks_of(example_id):
    with store.connect(read_only=True) as con:
        return con.execute("SELECT check_id, passed FROM example_checks WHERE example_id = ? ORDER BY check_idx",
                           [example_id]).fetchall()


def test_repair_fixes_the_failing_production_answer_without_a_teacher_call(monkeypatch):
    multi_store()
    with OpenAIStub() as stub:
        use_stub(monkeypatch, stub, strategies='["repair"]')
        tallies = synth.synthesize(cluster_id="c7")
        assert stub.count == 0  # no teacher call at all
    [row] = rows("c7")
    assert (row["strategy"], row["source_id"], row["request_hash"], row["seed_trace_id"]) == ("repair", "t7", None, "t7")
    assert row["status"] == "verified", row["reason"]
    # every instruction of the prompt passes, and the content is production's own
    assert checks_of(row["example_id"]) == [(i, True) for i, _ in SPECS]
    assert row["response"] == row["response"].lower() and "," not in row["response"]
    assert row["response"].endswith(END.lower()) or row["response"].endswith(END)
    assert content_overlap(PRODUCTION, row["response"]) >= 0.9
    assert tallies["c7"].counts("repair").kept == 1
    # a natural preference pair: chosen = the repaired answer, rejected = production's original
    with store.connect(read_only=True) as con:
        pairs = con.execute("""SELECT chosen_example_id, rejected_source, rejected_trace_id, rejected
                               FROM preference_pairs WHERE cluster_id = 'c7'""").fetchall()
    assert pairs == [(row["example_id"], "production", "t7", PRODUCTION)]


def test_repair_keeps_only_repairs_that_keep_enough_content(monkeypatch):
    seed_store()
    # "less than 3 words": cutting "Sure, here it is." to fit keeps under half of its content words
    with store.connect() as con:
        md = {"base_id": "b001", "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
              "kwargs": [{}, {"num_words": 3, "relation": "less than"}]}
        con.execute("UPDATE traces SET metadata = ?, response = 'Sure, the dishwasher will be repaired on Monday. "
                    "Thanks for asking about it.' WHERE trace_id = 't1'", [json.dumps(md)])
    with OpenAIStub() as stub:
        use_stub(monkeypatch, stub, strategies='["repair"]', repair_min_overlap=0.5)
        synth.synthesize()
    assert [r["source_id"] for r in rows()] == ["t2"]  # t1's only repair would drop most of its content


def test_repair_of_failing_teacher_samples_records_the_sample_and_pairs_with_it(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: "Dear landlord, could you tell me when the dishwasher will be repaired? Thanks."
        use_stub(monkeypatch, stub, per_cluster=1, k=1, strategies='["sample", "repair"]')
        synth.synthesize()
        assert stub.count == 1
    [sample] = [r for r in rows() if r["strategy"] == "sample"]
    # repairs: of the sample, and (repair's own run, after sample here) of production's answers to t1 and t2
    repairs = {r["source_id"]: r for r in rows() if r["strategy"] == "repair"}
    assert set(repairs) == {sample["example_id"], "t1", "t2"}
    fixed = repairs[sample["example_id"]]
    assert sample["status"] == "failed_verification" and fixed["status"] == "verified"
    # the repair names the sample it came from and the teacher call that wrote the text
    assert fixed["source_id"] == sample["example_id"] and fixed["request_hash"] == sample["request_hash"]
    assert fixed["response"] == "Dear landlord could you tell me when the dishwasher will be repaired? Thanks."
    with store.connect(read_only=True) as con:
        pairs = con.execute("SELECT chosen_example_id, rejected_source, rejected_example_id FROM preference_pairs "
                            "ORDER BY rejected_source").fetchall()
    # chosen = the repair; rejected = production's answer to the same prompt and the failing sample; a repair is
    # never a rejected answer (it passed its checks)
    fixed_pairs = [p for p in pairs if p[0] == fixed["example_id"]]
    assert fixed_pairs == [(fixed["example_id"], "production", None), (fixed["example_id"], "teacher", sample["example_id"])]
    assert all(p[2] != r["example_id"] for p in pairs for r in repairs.values())


def test_constrained_sends_the_constraint_in_the_servers_dialect(monkeypatch):
    multi_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: "a quiet party on saturday night. " + END.lower()
        use_stub(monkeypatch, stub, per_cluster=1, k=2, strategies='["constrained"]', teacher_dialect="llama.cpp")
        synth.synthesize(cluster_id="c7")
        bodies = list(stub.requests)
    # one grammar for every instruction of the prompt (lowercase + no comma + end phrase), in llama.cpp's field
    assert len(bodies) == 2 and all("grammar" in b and b["grammar"].startswith("root ::=") for b in bodies)
    assert "Is there anything else" in bodies[0]["grammar"] or "is there anything else" in bodies[0]["grammar"]
    assert sorted(b["seed"] for b in bodies) == [0, 1]
    assert bodies[0]["messages"][0]["role"] == "system"  # the check's own constraint restated
    got = rows("c7")
    assert {r["strategy"] for r in got} == {"constrained"} and all(r["request_hash"] for r in got)
    record = json.loads(got[0]["guidance"])
    assert record["dialect"] == "llama.cpp" and record["fields"] == ["grammar"]
    assert record["constraint"] == "+".join(i for i, _ in SPECS)
    assert all(r["status"] == "verified" for r in got), [r["reason"] for r in got]


def test_constrained_skips_prompts_without_a_constraint_and_servers_without_a_dialect(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        use_stub(monkeypatch, stub, per_cluster=2, k=1, strategies='["constrained"]')  # remote: dialect "none"
        tallies = synth.synthesize()
        assert stub.count == 0
    assert rows() == [] and any("without a constraint" in n for n in tallies["c1"].notes)


def test_sample_is_k_seeded_requests_per_prompt(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: "A calm answer without any commas at all."
        use_stub(monkeypatch, stub, per_cluster=2, k=3, strategies='["sample"]', teacher_concurrency=1)
        synth.synthesize()
        seeds = [b["seed"] for b in stub.requests]
    assert seeds == [0, 0, 1, 1, 2, 2]  # seed-major: every prompt once before any twice
    got = rows()
    assert len(got) == 6 and {r["strategy"] for r in got} == {"sample"}
    assert all(r["source_id"] is None and r["request_hash"] for r in got)


def test_revise_sends_the_failing_answer_and_the_checks_reason(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: "Sure here it is: the dishwasher question answered plainly."
        use_stub(monkeypatch, stub, per_cluster=2, k=1, failing_share=1.0, strategies='["revise"]')
        synth.synthesize()
        bodies = list(stub.requests)
    md = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    reason = verify("p", "Sure, here it is.", md)[1]
    assert len(bodies) == 2  # the two failing production answers (t1, t2)
    for b in bodies:
        user = b["messages"][-1]["content"]
        assert "Sure, here it is." in user and reason in user and "refrain from the use of any commas" in user
    got = rows()
    assert {(r["strategy"], r["source_id"]) for r in got} == {("revise", "t1"), ("revise", "t2")}
    assert all(r["status"] == "verified" and r["request_hash"] for r in got)
    assert {r["seed_trace_id"] for r in got} == {"t1", "t2"}  # the candidate answers the original prompt


def test_composition_every_instruction_must_pass(monkeypatch):
    multi_store()
    # the teacher passes lowercase only: the sample fails (comma, no end phrase); the repair makes all three pass
    with OpenAIStub() as stub:
        stub.responder = lambda body: ("hello neighbours, we are having a small party on saturday night at our flat. "
                                       "please knock if the music bothers you.")
        use_stub(monkeypatch, stub, per_cluster=1, k=1, failing_share=1.0, strategies='["sample", "repair"]')
        synth.synthesize(cluster_id="c7")
    got = {r["strategy"]: r for r in rows("c7")}
    assert got["sample"]["status"] == "failed_verification"
    assert "punctuation:no_comma" in got["sample"]["reason"] and "startend:end_checker" in got["sample"]["reason"]
    fixed = got["repair"]
    assert fixed["status"] == "verified" and all(passed for _, passed in checks_of(fixed["example_id"]))
    assert len(checks_of(fixed["example_id"])) == 3


def test_every_example_records_strategy_and_provenance(monkeypatch):
    multi_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: ("we will keep it quiet on saturday night. " + END.lower()
                                       if "grammar" in body else "Yes, of course, a party, friends.")
        use_stub(monkeypatch, stub, per_cluster=2, k=2, teacher_dialect="llama.cpp", target_per_cluster=0,
                 strategies='["repair", "constrained", "sample", "revise"]')
        synth.synthesize()
    got = rows()
    assert got and all(r["strategy"] in ("repair", "constrained", "sample", "revise") for r in got)
    assert {r["strategy"] for r in got} == {"repair", "constrained", "sample", "revise"}
    traces = {"t1", "t2", "t3", "t4", "t7"}
    ids = {r["example_id"]: r for r in got}
    for r in got:
        if r["strategy"] in ("sample", "constrained"):
            assert r["source_id"] is None and r["request_hash"]
        elif r["strategy"] == "revise":
            assert r["request_hash"] and (r["source_id"] in traces or r["source_id"] in ids)
        elif r["source_id"] in traces:  # repair of production's answer: no call
            assert r["request_hash"] is None
        else:  # repair of a teacher sample: the sample and its call
            assert r["request_hash"] == ids[r["source_id"]]["request_hash"]


def test_target_met_by_repair_skips_the_teacher(monkeypatch):
    seed_store()  # t1 and t2 answered "Sure, here it is.": two honest no-comma repairs
    with OpenAIStub() as stub:
        use_stub(monkeypatch, stub, per_cluster=4, k=4, target_per_cluster=2)
        tallies = synth.synthesize()
        assert stub.count == 0
    assert tallies["c1"].kept == 2 and {r["strategy"] for r in rows()} == {"repair"}


def test_unknown_strategy_is_a_clear_error(monkeypatch, capsys):
    seed_store()
    monkeypatch.setenv("MEND_CURATE_STRATEGIES", '["repair", "magic"]')
    assert synth.main(["--no-filter"]) == 2
    assert "unknown magic" in capsys.readouterr().err


def test_synth_table_shows_candidates_verified_kept_per_strategy(monkeypatch):
    import io

    from rich.console import Console
    seed_store()
    out = io.StringIO()
    with OpenAIStub() as stub:
        stub.responder = lambda body: "Yes, sure."
        use_stub(monkeypatch, stub, per_cluster=2, k=1)
        synth.synthesize(console=Console(file=out, width=120))
    text = out.getvalue()
    assert "strategy" in text and "candidates" in text and "kept" in text
    assert "repair" in text and "sample" in text
    assert "synth · sample" in text  # not a terminal: progress as plain lines
    assert len(BASES) == 6


def test_repair_of_a_cut_production_answer_keeps_whole_sentences_only(monkeypatch):
    seed_store()
    with store.connect() as con:  # t1's logged answer used its whole 12-token budget: its last sentence is cut
        con.execute("""UPDATE traces SET response = 'Sure, I will ask the landlord today. The dishwasher should be',
                       usage = '{"completion_tokens": 12}', params = '{"max_tokens": 12}' WHERE trace_id = 't1'""")
    with OpenAIStub() as stub:
        use_stub(monkeypatch, stub, strategies='["repair"]')
        synth.synthesize()
    fixed = {r["source_id"]: r["response"] for r in rows()}
    assert fixed["t1"] == "Sure I will ask the landlord today."
    assert synth.logged_finish('{"completion_tokens": 5}', '{"max_tokens": 12}') == "stop"
    assert synth.logged_finish(None, '{"max_tokens": 12}') is None


def test_two_failing_samples_of_a_two_responses_prompt_are_joined_into_one_answer(monkeypatch):
    """One answer is not two responses (its own repair refuses to halve it); two separate samples of the same prompt
    are, once joined with lm-eval's divider, and then verified like any repair."""
    import itertools
    two = ("Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: "
           "******.")
    seed_store(check_id="combination:two_responses", desc=two)
    answers = itertools.cycle(["Dear landlord, when will the dishwasher be repaired? Thank you.",
                               "Hello, could you let me know when someone can fix the dishwasher? Best wishes."])
    with OpenAIStub() as stub:
        stub.responder = lambda body: next(answers)
        use_stub(monkeypatch, stub, per_cluster=1, k=2, strategies='["sample", "repair"]')
        synth.synthesize()
        assert stub.count == 2
    samples = [r for r in rows() if r["strategy"] == "sample"]
    assert [r["status"] for r in samples] == ["failed_verification"] * 2
    [joined] = [r for r in rows() if r["strategy"] == "repair"]
    assert joined["status"] == "verified", joined["reason"]
    first, second = joined["response"].split("\n******\n")
    assert {first, second} == {r["response"] for r in samples}
    assert joined["source_id"] in {r["example_id"] for r in samples}


def test_the_same_request_twice_in_one_batch_is_written_once(monkeypatch):
    """A small cluster repeats a prompt, so one chunk can hold the same request (same seed) twice: both answers get
    the same example id, and the insert used to fail the whole synth stage on the duplicate key."""
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: "Dear landlord could you tell me when the dishwasher will be fixed? Thanks."
        use_stub(monkeypatch, stub, k=1, strategies='["sample"]')
        with store.connect(read_only=True) as con:
            [cluster] = synth.clusters(con, ["c1"])
            [prompt] = synth.compose_prompts(con, cluster, 1, failing_share=1.0)
        monkeypatch.setattr(synth, "compose_prompts", lambda *a, **k: [prompt, prompt])
        synth.synthesize(cluster_id="c1")
    assert [r["strategy"] for r in rows("c1")] == ["sample"]


def test_spent_teacher_minutes_stop_teacher_strategies_but_not_repair(monkeypatch):
    import io
    import itertools

    from rich.console import Console

    from curate.synth import candidates
    seed_store()  # t1 and t2: two honest no-comma repairs, then the teacher would be asked for the rest
    clock = itertools.count(0, 60)  # every look at the clock is a minute later
    monkeypatch.setattr(candidates, "now", lambda: next(clock))
    out = io.StringIO()
    with OpenAIStub() as stub:
        use_stub(monkeypatch, stub, per_cluster=4, k=2, target_per_cluster=8, synth_minutes=0.5)
        tallies = synth.synthesize(console=Console(file=out, width=200))
        assert stub.count == 0
    assert tallies["c1"].counts("repair").kept == 2
    text = out.getvalue()
    assert "budget spent: synth_minutes (0.5 min of teacher time); not run: constrained for 1 cluster(s), sample " \
           "for 1 cluster(s)" in text


def test_synth_minutes_zero_means_no_time_limit(monkeypatch):
    import itertools

    from curate.synth import candidates
    seed_store()
    clock = itertools.count(0, 3600)
    monkeypatch.setattr(candidates, "now", lambda: next(clock))
    with OpenAIStub() as stub:
        stub.responder = lambda body: "A calm answer without any commas at all."
        use_stub(monkeypatch, stub, per_cluster=2, k=1, strategies='["sample"]', synth_minutes=0)
        synth.synthesize()
        assert stub.count == 2


def test_teacher_minutes_are_shared_by_the_turns_left(monkeypatch):
    """Each (strategy, cluster) turn gets an equal share of the minutes left, so a time budget reaches every
    cluster; a quick turn leaves its time to the later ones."""
    from curate.synth import candidates
    from curate.synth import strategies
    from curate.synth.candidates import Budget
    from traces import settings as settings_mod
    t = [0.0]
    monkeypatch.setattr(candidates, "now", lambda: t[0])
    spend = {"c0": 10, "c1": 300, "c2": 300}  # seconds each cluster's sample turn takes; c0's is quick
    shares = []

    def fake_sample(job, env):
        shares.append((job.cluster["cluster_id"], round(env.budget.turn_end - t[0])))
        t[0] += spend[job.cluster["cluster_id"]]

    monkeypatch.setitem(strategies.STRATEGIES, "sample", fake_sample)
    s = settings_mod.load("curate", {"strategies": ("sample",), "synth_minutes": 10.0})
    jobs = [strategies.Job({"cluster_id": c, "label": c}, [], [], strategies.Tally(c, "x")) for c in spend]
    budget = Budget(100, 1.0, minutes=s.synth_minutes)
    strategies.run(jobs, s, budget, progress=None)
    assert shares == [("c0", 200), ("c1", 295), ("c2", 290)]  # 600/3; then (600-10)/2; then what is left
    assert budget.turn_end is None and budget.skipped == {}



@pytest.mark.parametrize("step", [0, 5])  # a frozen clock; one where every look is 5 s later (within the turn's share)
def test_a_turn_sends_at_most_synth_turn_calls_whatever_the_clock(monkeypatch, step):
    """The count, not the clock, ends a turn: a rerun sends the same requests on a fast machine and a loaded one."""
    import itertools

    from curate.synth import candidates
    seed_store()
    clock = itertools.count(0, step) if step else itertools.repeat(0)
    monkeypatch.setattr(candidates, "now", lambda: next(clock))
    with OpenAIStub() as stub:
        stub.responder = lambda body: "An answer, with a comma."  # never verified: the target is not what stops
        use_stub(monkeypatch, stub, per_cluster=2, k=20, strategies='["sample"]', synth_turn_calls=5,
                 synth_minutes=60, teacher_concurrency=1)
        synth.synthesize()
        assert [b["seed"] for b in stub.requests] == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("turn_calls, sent, warned", [(2, 2, False), (40, 32, True)])
def test_the_synth_table_says_when_the_clock_ended_a_turn_before_its_count(monkeypatch, turn_calls, sent, warned):
    """Each call takes 100 s of a 30-minute budget: 2, the count ends the turn; 40, the clock does (two batches)."""
    import io

    from rich.console import Console

    from curate.synth import candidates
    seed_store()
    t = [0.0]
    monkeypatch.setattr(candidates, "now", lambda: t[0])
    out = io.StringIO()

    def answer(body):
        t[0] += 100
        return "An answer, with a comma."
    with OpenAIStub() as stub:
        stub.responder = answer
        use_stub(monkeypatch, stub, per_cluster=2, k=20, strategies='["sample"]', synth_turn_calls=turn_calls,
                 synth_minutes=30, teacher_concurrency=1)
        synth.synthesize(console=Console(file=out, width=300))
        assert stub.count == sent
    assert ("the clock ended 1 turn(s) before synth_turn_calls" in out.getvalue()) == warned
