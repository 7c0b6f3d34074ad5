"""Batched generation: batching/padding, greedy determinism, seeded sampling, n samples, NLL, token bans."""
import pytest

from train.generate import Generation, gen_settings, generate, sequence_nll
from train.models import load

CONVS = [[{"role": "user", "content": text}] for text in
         ["hi", "Write a long letter to a friend about the summer holidays and the weather.", "2+2?",
          "Name three colours, please."]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load(tiny_model_dir, device="cpu")


def test_batched_greedy_matches_one_by_one(tiny):
    model, tok = tiny
    batched = generate(model, tok, CONVS, max_new_tokens=12, batch_size=4, progress=False)
    single = [generate(model, tok, [c], max_new_tokens=12, progress=False)[0] for c in CONVS]
    assert batched == single
    assert all(isinstance(g, Generation) and g.prompt_tokens > 5 for g in batched)
    assert len({g.prompt_tokens for g in batched}) > 1  # the batch really had padding


def test_greedy_is_deterministic_and_ignores_seed(tiny):
    model, tok = tiny
    a = generate(model, tok, CONVS, max_new_tokens=8, seed=1, batch_size=3, progress=False)
    b = generate(model, tok, CONVS, max_new_tokens=8, seed=2, batch_size=3, progress=False)
    assert a == b


def test_sampling_reproducible_from_seed(tiny):
    model, tok = tiny
    kw = dict(max_new_tokens=10, temperature=1.0, top_p=0.95, progress=False)
    a = generate(model, tok, CONVS, seed=7, **kw)
    assert a == generate(model, tok, CONVS, seed=7, **kw)
    assert [g.text for g in a] != [g.text for g in generate(model, tok, CONVS, seed=8, **kw)]


def test_n_samples_are_prompt_major(tiny):
    model, tok = tiny
    gens = generate(model, tok, CONVS[:2], max_new_tokens=6, temperature=1.0, n=3, batch_size=4, progress=False)
    assert len(gens) == 6
    assert [g.prompt_tokens for g in gens[:3]] == [gens[0].prompt_tokens] * 3
    assert gens[3].prompt_tokens != gens[0].prompt_tokens
    assert len({g.text for g in gens[:3]}) > 1  # distinct samples of one prompt
    with pytest.raises(ValueError, match="greedy"):
        generate(model, tok, CONVS, n=2, progress=False)


def test_length_and_stop_finish_reasons(tiny):
    model, tok = tiny
    gens = generate(model, tok, CONVS, max_new_tokens=5, progress=False)
    assert all(g.finish_reason == "length" and g.completion_tokens == 5 for g in gens)
    # ban everything but the end-of-turn token: generation stops at once
    banned = [i for i in range(len(tok)) if i != tok.eos_token_id]
    stopped = generate(model, tok, CONVS[:2], max_new_tokens=5, banned_token_ids=banned, progress=False)
    assert all(g.finish_reason == "stop" and g.completion_tokens == 1 and g.text == "" for g in stopped)


def test_banned_tokens_never_appear(tiny):
    """The guided-generation use: ban every token containing a letter, the letter never appears."""
    import torch
    model, tok = tiny
    plain = generate(model, tok, CONVS, max_new_tokens=16, progress=False)
    assert any("e" in g.text.lower() for g in plain)
    mask = torch.tensor(["e" in tok.decode([i]).lower() for i in range(len(tok))])
    guided = generate(model, tok, CONVS, max_new_tokens=16, banned_token_ids=mask, progress=False)
    assert all("e" not in g.text.lower() for g in guided)
    assert gen_settings(banned_token_ids=mask)["banned_tokens"] == int(mask.sum())


def test_gen_settings_describe_decoding():
    assert gen_settings(max_new_tokens=64) == gen_settings(max_new_tokens=64, seed=5)  # greedy ignores seed
    sampled = gen_settings(temperature=0.8, top_p=0.9, n=4, seed=3)
    assert sampled["decoding"] == "sample" and sampled["seed"] == 3 and sampled["n"] == 4


def test_sequence_nll_prefers_the_model_s_own_output(tiny):
    model, tok = tiny
    own = generate(model, tok, CONVS, max_new_tokens=10, progress=False)
    nll_own = sequence_nll(model, tok, CONVS, [g.text for g in own])
    nll_other = sequence_nll(model, tok, CONVS, ["zebra quantum marmalade"] * len(CONVS))
    assert len(nll_own) == len(CONVS) and all(v > 0 for v in nll_own)
    assert sum(nll_own) < sum(nll_other)
    # batched scoring equals scoring one at a time (padding does not leak into the result)
    single = [sequence_nll(model, tok, [c], [g.text])[0] for c, g in zip(CONVS, own)]
    assert single == pytest.approx(nll_own, rel=1e-4)


@pytest.mark.integration
def test_real_student_answers_briefly():
    model, tok = load("smollm2-135m-instruct", device="cpu")
    convs = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "user", "content": "Say hello."}]]
    gens = generate(model, tok, convs, max_new_tokens=24, progress=False)
    assert "Paris" in gens[0].text
    assert gens[0].finish_reason == "stop" and 0 < gens[0].completion_tokens < 24
    assert gens[1].text.strip()
