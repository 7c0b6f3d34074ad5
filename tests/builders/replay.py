"""Self-distilled replay and sweep builders: seed/holdout traffic with one group per base request, and a counting
stand-in for train.generate.generate (fixtures `tiny_student`, `counting`)."""
import pytest

from builders.trace_rows import NO_COMMA as NO_COMMA_ID
from builders.trace_rows import ifeval_meta, insert_traces, trace_row

NO_COMMA = "In your entire response, refrain from the use of any commas."
BASES = ["Write an email to my landlord about the broken dishwasher.", "Tell a bedtime story about a small fox.",
         "Explain how a heat pump warms a house.", "Draft a thank-you note to a colleague.",
         "Describe a bamboo cutting board for a shop.", "Give advice for a first half marathon.",
         "Write a poem about the sea.", "Plan a week of vegetarian dinners."]


def add_trace(tid, base_id, base, split, response="Sure, here it is.", instructions=True):
    """One trace asking `base` (+ the no-comma instruction); its group (split key) is base_id."""
    md = {"base_id": base_id, **(ifeval_meta(NO_COMMA_ID) if instructions else {})}
    prompt = f"{base} {NO_COMMA}" if instructions else base
    insert_traces([trace_row(0, prompt, response, md, split, trace_id=tid, group_key=base_id)])


def traffic(n_seed=6, n_holdout=2):
    """n_seed seed traces (one base each) and n_holdout holdout traces, all asking for no commas."""
    for i in range(n_seed + n_holdout):
        add_trace(f"t{i}", f"b{i}", BASES[i % len(BASES)] + f" (case {i})", "seed" if i < n_seed else "holdout")


class CountingGenerate:
    """Stands in for train.generate.generate: a deterministic answer per request; requests whose text holds
    'cut' run to the token budget (finish_reason 'length') with no sentence end, 'trim' ones after one whole
    sentence. Counts calls and prompts."""

    def __init__(self):
        self.calls, self.prompts = 0, 0

    def __call__(self, model, tok, conversations, **kw):
        assert kw["temperature"] == 0.0 and kw["max_new_tokens"] == 16  # greedy, the train budget
        self.calls += 1
        self.prompts += len(conversations)
        return [self.answer(c[-1]["content"]) for c in conversations]

    @staticmethod
    def answer(request: str):
        from train.generate import Generation
        if "trim" in request:  # cut by the budget after one whole sentence
            return Generation("One whole sentence here. And then the budget ran ou", 5, 16, "length")
        return Generation(f"Answer: {request[::-1]}", 5, 5, "length" if "cut" in request else "stop")


@pytest.fixture
def tiny_student(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "16")
    return tiny_model_dir


@pytest.fixture
def counting(monkeypatch, tiny_student):
    gen = CountingGenerate()
    monkeypatch.setattr("train.generate.generate", gen)
    return gen
