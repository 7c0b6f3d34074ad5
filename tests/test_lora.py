"""`python -m train lora` on the tiny model: assistant-only labels, only LoRA weights move, loss falls, adapter
folder contents and atomicity, DB rows, resume after a kill, NaN handling, QLoRA on CPU, bad input."""
import json
from pathlib import Path

import pytest
from builders.lora import TURNS, db_rows, plan_for, settings, write_set

from traces.settings import SettingsError, load_with_sources


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_labels_are_ignored_on_every_non_assistant_token(tmp_path, tiny_model_dir):
    from train.lora import build_trainer
    from train.models import resolve
    plan = plan_for(tmp_path, tiny_model_dir, n=2)
    trainer, _, _ = build_trainer(plan, resolve(plan.settings.model), tmp_path / "tmp", progress=False)
    tok = trainer.processing_class
    row = next(r for r in trainer.train_dataset if "Italy" in tok.decode(r["input_ids"]))  # multi-turn TURNS[1]
    text = tok.apply_chat_template(TURNS[1], tokenize=False, chat_template=None)
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    assert enc["input_ids"] == row["input_ids"]
    # expected trained spans, from the rendered string: each reply and its <|im_end|>
    spans, start = [], 0
    for m in TURNS[1]:
        if m["role"] == "assistant":
            begin = text.index("<|im_start|>assistant\n", start) + len("<|im_start|>assistant\n")
            end = begin + len(m["content"]) + len("<|im_end|>")
            spans.append((begin, end))
            start = end
    for token_id, label, (a, b) in zip(row["input_ids"], row["labels"], enc["offset_mapping"]):
        inside = any(s <= a and b <= e for s, e in spans)
        assert label == (token_id if inside else -100), (tok.decode([token_id]), a, b, label)
    trained = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
    assert trained == "paris is the capital of france.<|im_end|>rome.<|im_end|>"


def test_training_publishes_adapter_moves_only_lora_weights_and_loss_falls(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from train.lora import train
    from train.models import load
    plan = plan_for(tmp_path, tiny_model_dir, n=4, max_steps=12, lr=2e-2)
    result = train(plan, progress=False, keep_trainer=True)
    assert result.status == "complete", result.error

    # loss falls when overfitting a handful of examples
    losses = [s["loss"] for s in result.metrics["steps"]]
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0], losses

    # only LoRA weights changed; base weights are bit-identical to the checkpoint on disk
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    trained = result.trainer.model
    for name, p in trained.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p.detach().cpu(), base[key]), name
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in weights.items())  # B starts at 0

    # adapter folder contents; nothing temporary left behind
    files = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "mend_adapter.json", "settings.json",
            "manifest.json", "metrics.json"} <= files
    assert not list(result.adapter_dir.parent.glob(".tmp-*"))
    meta = json.loads((result.adapter_dir / "mend_adapter.json").read_text())
    assert meta["run_id"] == plan.run_id and meta["base_fingerprint"]
    manifest = json.loads((result.adapter_dir / "manifest.json").read_text())
    assert [e["id"] for e in manifest["examples"]] == [f"ex{i:03d}" for i in range(4)]
    metrics = json.loads((result.adapter_dir / "metrics.json").read_text())
    assert metrics["tokens_per_s"] > 0 and metrics["last_step"] == 12
    assert json.loads((result.adapter_dir / "settings.json").read_text())["settings"]["lora_r"] == 16

    # DuckDB: a complete run linked to its examples
    (status, path, adapter_hash, fp, set_hash), = db_rows(
        "SELECT status, adapter_path, adapter_hash, base_fingerprint, training_set_hash FROM train_runs")
    from traces.hashing import (
        adapter_hash as one_adapter_hash,  # the hash eval runs, gate and registry store
    )
    assert status == "complete" and Path(path) == result.adapter_dir and adapter_hash == one_adapter_hash(path)
    assert fp == meta["base_fingerprint"] and set_hash == plan.set_hash
    assert db_rows("SELECT count(*), count(*) FILTER (origin = 'replay') FROM train_examples") == [(4, 1)]

    # it loads back through the student loader and changes the output
    ids = torch.tensor([[1, 4093, 28, 253, 2]])
    base_model, _ = load(tiny_model_dir)
    tuned, _ = load(tiny_model_dir, adapter=result.adapter_dir)
    with torch.no_grad():
        assert not torch.allclose(base_model(ids).logits, tuned(ids).logits, atol=1e-4)


def test_resume_after_a_kill_continues_from_the_checkpoint(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    from train.lora import make_plan, train

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # after checkpoint-2 was written
                raise KeyboardInterrupt

    over = dict(max_steps=4, val_fraction=0.25)
    plan = plan_for(tmp_path, tiny_model_dir, n=8, **over)
    with pytest.raises(KeyboardInterrupt):
        train(plan, callbacks=[Kill()], progress=False)
    assert not plan.final_dir.exists()  # nothing published
    assert db_rows("SELECT status FROM train_runs") == [("failed",)]

    s, sources = settings(tmp_path, tiny_model_dir, tmp_path / "train.jsonl", **over)
    again = make_plan(s, sources)  # automatic: same training set and settings
    assert again.run_id == plan.run_id and again.checkpoint.name == "checkpoint-2"
    result = train(again, progress=False)
    assert result.status == "complete"
    m = result.metrics
    assert m["first_step"] == 2 and m["last_step"] == 4 and m["resumed_from"] == "checkpoint-2"
    assert [s["step"] for s in m["steps"]] == [3, 4]
    assert m["evals"] and m["final_eval_loss"] is not None  # validation split: eval loss at each checkpoint
    assert db_rows("SELECT status FROM train_runs") == [("complete",)]
    assert db_rows("SELECT count(*) FROM train_examples") == [(8,)]
    # --fresh starts a new run; --resume with nothing to resume is a clear error
    assert make_plan(s, sources, resume="never").checkpoint is None
    with pytest.raises(SettingsError, match="no unfinished run"):
        make_plan(s, sources, resume="require")


def test_nan_loss_stops_the_run_and_publishes_nothing(tmp_path, tiny_model_dir):
    import torch
    from transformers import TrainerCallback

    from train.lora import train

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if "lora_A" in name:
                            p.fill_(float("nan"))

    plan = plan_for(tmp_path, tiny_model_dir, n=4, max_steps=6)
    result = train(plan, callbacks=[Poison()], progress=False)
    assert result.status == "failed" and "loss became nan at step 2" in result.error
    assert result.adapter_dir is None and not plan.final_dir.exists()
    assert not list(plan.adapters_dir.glob(".tmp-*"))  # its checkpoints would only lead back to the NaN
    (status, error), = db_rows("SELECT status, error FROM train_runs")
    assert status == "failed" and "nan" in error


def test_qlora_needs_cuda_unless_fallback_is_allowed(tmp_path, tiny_model_dir, monkeypatch):
    import torch

    from train.trainer import QLoRAUnavailable, device_plan
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s, _ = settings(tmp_path, tiny_model_dir, tmp_path / "x.jsonl", quantization="nf4")
    with pytest.raises(QLoRAUnavailable, match="QLoRA needs a CUDA GPU"):
        device_plan(s)
    s, _ = settings(tmp_path, tiny_model_dir, tmp_path / "x.jsonl", quantization="nf4", allow_cpu_fallback=True,
                    precision="fp32")  # "auto" is bf16 on a CPU with avx512_bf16 (tests/test_precision.py)
    assert device_plan(s) == {"cuda": False, "quantize": False, "bf16": False}


def test_cli_reports_qlora_and_settings_errors_in_one_line(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import torch

    from train.cli import main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    ts = write_set(tmp_path, 4)
    common = ["lora", "--model", str(tiny_model_dir), "--training-set", str(ts), "--adapters-dir", str(tmp_path)]
    assert main(common + ["--quantization", "nf4"]) == 2
    assert "QLoRA needs a CUDA GPU" in capsys.readouterr().err
    assert main(common + ["--quantization", "int3"]) == 2
    assert "quantization='int3'" in capsys.readouterr().err
    assert main(common + ["--lora-r", "many"]) == 2
    assert "lora_r" in capsys.readouterr().err


@pytest.mark.parametrize("line, message", [
    ("{not json", "train.jsonl:2: not valid JSON"),
    ('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ('{"id": "a", "messages": [{"role": "robot", "content": "hi"}]}', "messages[0].role"),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}', "field 'id'"),
    ('{"id": "ex000", "messages": [{"role": "assistant", "content": "x"}]}', "duplicate id"),
    ('{"id": "b", "origin": "web", "messages": [{"role": "assistant", "content": "x"}]}', "field 'origin'"),
])
def test_bad_training_set_lines_name_file_line_and_field(tmp_path, line, message):
    from train.lora_data import TrainingSetError, read_training_set
    path = write_set(tmp_path, 1, manifest=False)
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(TrainingSetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_training_set(path)


def test_manifest_must_match_the_jsonl(tmp_path):
    from train.lora_data import TrainingSetError, read_training_set
    path = write_set(tmp_path, 3)
    manifest = tmp_path / "train.manifest.json"
    data = json.loads(manifest.read_text())
    assert [ex.content_hash for ex in read_training_set(path)] == [e["content_hash"] for e in data["items"]]
    edited = json.loads(json.dumps(data))
    edited["items"][1]["content_hash"] = "0" * 64   # the manifest vouches for other content than the JSONL's
    manifest.write_text(json.dumps(edited))
    with pytest.raises(TrainingSetError, match="content_hash of \\['ex001'\\] differs"):
        read_training_set(path)
    data["items"].pop()
    manifest.write_text(json.dumps(data))
    with pytest.raises(TrainingSetError, match="only in JSONL: \\['ex002'\\]"):
        read_training_set(path)
    manifest.write_text(json.dumps({"examples": data["items"]}))   # a shape nothing writes
    with pytest.raises(TrainingSetError, match="not a training-set manifest"):
        read_training_set(path)
    with pytest.raises(FileNotFoundError, match="make export"):
        read_training_set(tmp_path / "missing.jsonl")


def test_validation_split_is_deterministic_and_skipped_when_too_small():
    from train.lora_data import Example, split
    exs = [Example(f"e{i}", "example", [], str(i)) for i in range(20)]
    train_a, val_a = split(exs, 0.1, seed=0)
    assert len(val_a) == 2 and len(train_a) == 18 and split(exs, 0.1, seed=0)[1] == val_a
    assert split(exs[:3], 0.1, seed=0)[1] == []  # 0.3 of an example: no validation set


@pytest.mark.integration
def test_real_student_trains_a_few_steps(tmp_path):
    from train.lora import make_plan, train
    from train.models import load
    s, sources = load_with_sources("train", {"training_set": str(write_set(tmp_path, 4)), "max_steps": 2,
                                             "batch_size_train": 2, "max_length": 128, "val_fraction": 0.0,
                                             "adapters_dir": str(tmp_path / "ad")})
    result = train(make_plan(s, sources), progress=False)
    assert result.status == "complete" and len(result.metrics["steps"]) == 2
    assert all(0 < st["loss"] < 20 for st in result.metrics["steps"])
    model, _ = load(s.model, adapter=result.adapter_dir)
    assert model is not None


def test_cli_trains_and_prints_the_summary(tmp_path, tiny_model_dir, capsys):
    from train.cli import main
    ts = write_set(tmp_path, 4)
    out = tmp_path / "my-adapter"
    code = main(["lora", "--model", str(tiny_model_dir), "--training-set", str(ts), "--out", str(out),
                 "--max-steps", "2", "--batch-size-train", "2", "--val-fraction", "0", "--max-length", "96"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "train lora" in printed and "complete" in printed and "tokens / s" in printed
    assert (out / "adapter_model.safetensors").is_file() and not list(tmp_path.glob(".tmp-*"))
    assert db_rows("SELECT status, adapter_path FROM train_runs") == [("complete", str(out))]


def test_packing_trains_padding_free_blocks(tmp_path, tiny_model_dir):
    """packing=true: TRL's best-fit packing into max_length blocks, no padding (the GPU setting)."""
    from train.lora import build_trainer, train
    from train.models import resolve
    plan = plan_for(tmp_path, tiny_model_dir, n=8, packing=True, max_steps=2, max_length=256)
    trainer, _, _ = build_trainer(plan, resolve(plan.settings.model), tmp_path / "tmp", progress=False)
    rows = list(trainer.train_dataset)
    assert len(rows) < 8 and all(len(r["input_ids"]) <= 256 for r in rows)  # several conversations per block
    assert sum(len(r["seq_lengths"]) for r in rows) == 8
    result = train(plan, progress=False)
    assert result.status == "complete" and len(result.metrics["steps"]) == 2


def test_more_than_one_gpu_relaunches_through_accelerate(tmp_path, tiny_model_dir, monkeypatch):
    """Only the command line is checked here: no multi-GPU machine was available to run it."""
    import subprocess

    import torch

    from train.cli import main
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    ts = write_set(tmp_path, 4)
    assert main(["lora", "--model", str(tiny_model_dir), "--training-set", str(ts), "--fsdp", "--resume"]) == 2
    assert not calls  # --resume with nothing to resume fails before launching
    assert main(["lora", "--model", str(tiny_model_dir), "--training-set", str(ts), "--fsdp"]) == 0
    cmd = calls[0]
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[cmd.index("--num_processes") + 1] == "2"
    assert "--use_fsdp" in cmd and cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    tail = cmd[cmd.index("train"):]
    assert tail[:2] == ["train", "lora"] and "--run-id" in tail and tail[-1] == "--fresh"
    monkeypatch.setenv("LOCAL_RANK", "0")  # a launched rank trains instead of launching again
    from train.lora import needs_launch
    assert not needs_launch(None)
