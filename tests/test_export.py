"""`python -m train export`: standard PEFT folder that peft/transformers load back, --merge into full weights,
refusal of an adapter from another base, atomic output."""
import json

import pytest


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def adapter(tmp_path, tiny_model_dir):
    """A LoRA adapter on the tiny model with non-zero B (so it changes the output), as `train lora` writes it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from train.models import write_adapter_manifest
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    folder = tmp_path / "adapters" / "run1"
    model.save_pretrained(str(folder))
    write_adapter_manifest(folder, str(tiny_model_dir), run_id="run1")
    return folder


IDS = [[1, 4093, 28, 253, 2, 198, 1117]]


def logits(model):
    import torch
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


def test_peft_export_loads_with_peft_and_matches(tmp_path, tiny_model_dir, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from train.export import export_peft
    from train.models import load
    out = export_peft(adapter, tmp_path / "exp")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "mend_adapter.json"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir) and config["peft_type"] == "LORA"
    assert (out / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    # what a generic loader does: base from the config's path, then the adapter
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32)
    exported = PeftModel.from_pretrained(base, str(out)).eval()
    ours, _ = load(tiny_model_dir, adapter=adapter)
    plain, _ = load(tiny_model_dir)
    assert torch.allclose(logits(exported), logits(ours), atol=1e-5)
    assert not torch.allclose(logits(exported), logits(plain), atol=1e-3)
    assert not list(tmp_path.glob(".exp-*"))


def test_merge_writes_full_weights_with_the_tokenizer(tmp_path, tiny_model_dir, adapter):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from train.export import export_merged
    from train.models import load
    out = export_merged(adapter, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    ours, _ = load(tiny_model_dir, adapter=adapter)
    assert torch.allclose(logits(merged), logits(ours), atol=1e-4)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|im_start|>")


def test_adapter_of_another_base_is_refused(tmp_path, adapter):
    from train.export import export_peft
    from train.models import AdapterMismatch
    meta = json.loads((adapter / "mend_adapter.json").read_text())
    meta["base_fingerprint"] = "0" * 16
    (adapter / "mend_adapter.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterMismatch):
        export_peft(adapter, tmp_path / "exp")
    assert not (tmp_path / "exp").exists() and not list(tmp_path.glob(".exp-*"))


def test_cli_takes_a_run_id_and_refuses_to_overwrite(tmp_path, adapter, monkeypatch, capsys):
    from train.cli import main
    monkeypatch.setenv("MEND_TRAIN_ADAPTERS_DIR", str(adapter.parent))
    out = tmp_path / "exp"
    assert main(["export", "run1", "--out", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert main(["export", "run1", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "no-such-run", "--out", str(tmp_path / "x")]) == 2
    assert "no adapter 'no-such-run'" in capsys.readouterr().err


def test_latest_is_the_newest_complete_train_runs_adapter(tmp_path, adapter, monkeypatch, capsys):
    from traces import store
    from train.cli import main
    monkeypatch.setenv("MEND_DB", str(tmp_path / "mend.duckdb"))
    assert main(["export", "latest", "--out", str(tmp_path / "none")]) == 2
    assert "no train run has completed" in capsys.readouterr().err
    with store.connect() as con:
        for run, path, status, at in [("run0", "gone", "complete", "2026-01-01"), ("run1", str(adapter), "complete",
                                      "2026-01-02"), ("run2", "half", "failed", "2026-01-03")]:
            con.execute("""INSERT INTO train_runs (run_id, adapter_path, base_model, base_fingerprint, training_set,
                           status, started_at) VALUES (?, ?, 'm', 'fp', 't', ?, ?)""", [run, path, status, at])
    assert main(["export", "latest", "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "adapter_model.safetensors").is_file()  # run1's: run2 failed, run0 is older
