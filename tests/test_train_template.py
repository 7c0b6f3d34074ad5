"""The training chat template renders exactly what SmolLM2's inference template renders, and its
{% generation %} markers cover each assistant reply with its closing <|im_end|> (and nothing else)."""
import pytest

from train.trainer import TEMPLATE

CONVERSATIONS = {
    "multi_turn_default_system": [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Soft rain on the roof,\nthe gutters hum a low tune,\nsleep comes easily."},
        {"role": "user", "content": "Now one without commas."},
        {"role": "assistant", "content": "Grey clouds drift away\nsunlight returns to the street\nchildren run outside"},
    ],
    "multi_turn_with_system": [
        {"role": "system", "content": "Answer in lowercase only."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "blue"},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "green, and <|im_start|> is only text here"},
    ],
    "single_turn": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}],
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_renders_like_the_inference_template(tokenizer, name, add_generation_prompt):
    messages = CONVERSATIONS[name]
    ours = TEMPLATE.read_text()
    inference = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    training = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             chat_template=ours)
    assert training == inference
    # and the prompt-only rendering (what generation sees) too
    prompt = messages[:-1]
    assert tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, chat_template=ours) == \
        tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def test_generation_markers_cover_replies_and_stop_token(tokenizer):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained
    ours = TEMPLATE.read_text()
    assert has_generation_markers(ours)
    assert is_chat_template_stop_token_trained(tokenizer, chat_template=ours)
    out = tokenizer.apply_chat_template(CONVERSATIONS["multi_turn_with_system"], chat_template=ours, tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    text = tokenizer.decode(masked)
    assert text == "blue<|im_end|>green, and <|im_start|> is only text here<|im_end|>"
