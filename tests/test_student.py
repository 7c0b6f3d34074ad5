"""The self strategy (curate/synth/strategies.py `own`) and the student client it samples with
(curate/synth/student.py): on-policy samples at the student's token budget, cached in llm_calls, stopping for a
prompt once self_per_prompt of its samples are kept."""
import json

from builders.synth import seed_store

from curate.synth import driver as synth
from curate.synth.student import StudentClient
from evals.client import Call
from traces import store

PASSING = "Here is a short and calm answer. It keeps to the point and reads well from start to end."


def test_student_client_samples_once_and_answers_again_from_the_cache(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    reqs = [{"messages": [{"role": "user", "content": f"Say something about {w}."}], "temperature": 0.9,
             "top_p": 0.95, "max_tokens": 8, "seed": s} for w in ("tea", "rain") for s in (0, 1)]
    first = StudentClient("production").complete_many(reqs)
    again = StudentClient("production").complete_many(reqs)
    assert [c.cached for c in first] == [False] * 4 and [c.cached for c in again] == [True] * 4
    assert [c.text for c in first] == [c.text for c in again]
    assert all(c.completion_tokens <= 8 and c.cost_usd == 0.0 for c in first)
    with store.connect(read_only=True) as con:
        rows = con.execute("SELECT purpose, endpoint, model FROM llm_calls").fetchall()
    assert len(rows) == 4 and {r[0] for r in rows} == {"student"}
    assert rows[0][1] == f"student://{tiny_model_dir}@base" and rows[0][2] == f"{tiny_model_dir}@base"


def fake_student(monkeypatch, answer):
    """The student answers every request with `answer` (seeds recorded), through the real client's cache."""
    seen = []

    def generate(self, requests, hashes, progress):
        seen.extend((r["messages"][-1]["content"], r["seed"], r["max_tokens"]) for r in requests)
        return [Call(h, answer(r), {"choices": [{"message": {"content": answer(r)}, "finish_reason": "stop"}]}, 10, 20,
                     0.1, 0.0) for r, h in zip(requests, hashes)]
    monkeypatch.setattr(StudentClient, "_generate", generate)
    return seen


def test_self_stops_sampling_a_prompt_once_enough_of_its_samples_are_kept(tiny_model_dir, monkeypatch):
    seed_store()
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_CURATE_STRATEGIES", '["self"]')
    monkeypatch.setenv("MEND_CURATE_SELF_K", "6")
    monkeypatch.setenv("MEND_CURATE_SELF_PER_PROMPT", "2")
    monkeypatch.setenv("MEND_CURATE_TARGET_PER_CLUSTER", "0")
    seen = fake_student(monkeypatch, lambda r: PASSING)
    synth.synthesize(cluster_id="c1")
    prompts = {p for p, _, _ in seen}
    assert prompts and all(sorted(s for q, s, _ in seen if q == p) == [0, 1] for p in prompts)
    assert {t for _, _, t in seen} == {128}  # the student's own budget, [tool.mend.train] max_new_tokens
    with store.connect(read_only=True) as con:
        got = con.execute("SELECT strategy, status, teacher_model FROM examples").fetchall()
    assert len(got) == 2 * len(prompts)
    assert {g[:2] for g in got} == {("self", "verified")} and {g[2] for g in got} == {f"{tiny_model_dir}@base"}


def test_self_keeps_sampling_while_the_samples_fail(tiny_model_dir, monkeypatch):
    seed_store()
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_CURATE_STRATEGIES", '["self"]')
    monkeypatch.setenv("MEND_CURATE_SELF_K", "3")
    seen = fake_student(monkeypatch, lambda r: "Sure, here it is, with commas, again.")
    synth.synthesize(cluster_id="c1")
    prompts = {p for p, _, _ in seen}
    assert all(sorted(s for q, s, _ in seen if q == p) == [0, 1, 2] for p in prompts)
    with store.connect(read_only=True) as con:
        got = con.execute("SELECT status, reason FROM examples").fetchall()
    assert got and all(g[0] == "failed_verification" and "no_comma" in g[1] for g in got)
    assert json.dumps(sorted(prompts))  # the prompts are plain text
