"""Model refs, loading, fingerprints and adapters, on the tiny model (no real weights needed)."""
import json

import pytest

from train import models
from train.tiny import make_tiny_model


def _lora(model_dir, out, seed=0):
    """A LoRA adapter with random (non-zero) B so that it changes the output, saved the way mend saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    model, _ = models.load(model_dir)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    models.write_adapter_manifest(out, model_dir, train_run="test")
    return out


def test_tiny_model_loads_with_left_padding(tiny_model_dir):
    import torch
    model, tok = models.load(tiny_model_dir, device="cpu")
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert not model.training and model.dtype == torch.float32
    assert model.config.vocab_size == len(tok) == 49152
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                                              add_generation_prompt=True, tokenize=False)


def test_resolve_rejects_unknown_refs(tmp_path):
    with pytest.raises(models.ModelError, match="no config.json"):
        models.resolve(tmp_path)
    with pytest.raises(models.ModelError, match="unknown model ref"):
        models.resolve(str(tmp_path / "missing"))


def test_fingerprint_is_stable_and_tracks_weights(tiny_model_dir, tmp_path):
    same = make_tiny_model(tmp_path / "same", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    assert models.fingerprint(tiny_model_dir) == models.fingerprint(same)
    assert models.fingerprint(tiny_model_dir) != models.fingerprint(other)


def test_adapter_applies_and_changes_output(tiny_model_dir, tmp_path):
    import torch
    adapter = _lora(tiny_model_dir, tmp_path / "adapter")
    assert json.loads((adapter / "mend_adapter.json").read_text())["base_fingerprint"] == \
        models.fingerprint(tiny_model_dir)
    base, tok = models.load(tiny_model_dir)
    tuned, _ = models.load(tiny_model_dir, adapter=adapter)
    ids = tok("hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits)
    from peft import PeftModel
    assert isinstance(tuned, PeftModel) and not tuned.training
    from train.generate import generate
    convs = [[{"role": "user", "content": "hello"}]]
    assert generate(tuned, tok, convs, max_new_tokens=4, progress=False) != \
        generate(base, tok, convs, max_new_tokens=4, progress=False)


def test_adapter_on_other_base_is_a_mismatch(tiny_model_dir, tmp_path):
    adapter = _lora(tiny_model_dir, tmp_path / "adapter")
    other = make_tiny_model(tmp_path / "other", seed=1)
    with pytest.raises(models.AdapterMismatch) as err:
        models.load(other, adapter=adapter)
    msg = str(err.value)
    assert str(adapter) in msg and str(other) in msg
    assert models.fingerprint(tiny_model_dir) in msg and models.fingerprint(other) in msg


def test_missing_or_corrupt_adapter_names_the_path(tiny_model_dir, tmp_path):
    with pytest.raises(models.ModelError, match="does not exist"):
        models.load(tiny_model_dir, adapter=tmp_path / "nope")
    adapter = _lora(tiny_model_dir, tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(models.ModelError, match=str(adapter)):
        models.load(tiny_model_dir, adapter=adapter)
    (adapter / "mend_adapter.json").write_text("{broken")
    with pytest.raises(models.ModelError, match="mend_adapter.json"):
        models.load(tiny_model_dir, adapter=adapter)


def test_convert_cli_reports_the_folder(capsys):
    assert models.convert_main([]) == 0  # converted once per machine; afterwards a cheap check
    assert "smollm2-135m-instruct" in capsys.readouterr().out
