"""Formats out: the training set and its pairs as a `datasets` folder (load_from_disk, `train lora` on it unchanged,
push_to_hub with a token), as OpenAI fine-tuning JSONL (every line validated against the format's fields); the
trainer's report_to (TensorBoard, offline); an adapter pushed to the Hub (the upload monkeypatched: no network)."""
import json

import pytest
from builders.formats import PREFERENCE, SUPERVISED, TOOLS, build_store, sequence_problems

from curate import export

EXPORT = dict(replay_fraction=0.5, replay_self_share=0.0)  # 2 accepted examples + 2 replayed traces


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------- OpenAI fine-tuning JSONL ----------

def test_openai_jsonl_has_only_messages_and_tools_and_every_line_validates(tmp_path, capsys):
    import jsonschema
    rows = build_store()
    sft = tmp_path / "set" / "train.jsonl"
    export.export(str(sft), **EXPORT)
    assert export.main(["--format", "openai", "--out", str(tmp_path / "oa" / "train.openai.jsonl"),
                        "--replay-fraction", "0.5", "--replay-self-share", "0"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # rich folds lines at 80 columns off a terminal
    assert "4 conversation(s) (2 with tools)" in printed and "3 preference pair(s)" in printed
    assert "1 line(s) whose request's tool turns do not form a valid sequence" in printed
    lines, ours = jsonl(tmp_path / "oa" / "train.openai.jsonl"), jsonl(sft)
    assert len(lines) == len(ours) == 4
    for i, line in enumerate(lines):
        jsonschema.validate(line, SUPERVISED)  # roles, content types, tool_calls and tools shapes, no other key
        assert sequence_problems(line["messages"], "assistant") == [], i
        # the same rows in the same order, each with the training set's answer last
        assert line["messages"][-1]["content"] == ours[i]["messages"][-1]["content"]
    by_id = dict(zip((x["id"] for x in ours), lines))
    # tools exactly when the seed request offered function tools (the built-in web_search is left out)
    assert by_id[rows["good"]["example_id"]]["tools"] == TOOLS[:1]
    assert "tools" not in by_id[rows["cgood"]["example_id"]] and "tools" not in by_id["t4"]
    # a replayed tool conversation keeps its tool turns (the mend set keeps their text only), developer -> system,
    # arguments as a JSON string, and the logged call with the logged answer
    t3 = by_id["t3"]
    assert [m["role"] for m in t3["messages"]] == ["system", "user", "assistant", "tool", "user", "assistant"]
    call = t3["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'} and call["id"] == "call_1"
    assert t3["messages"][2]["content"] is None and t3["messages"][3]["tool_call_id"] == "call_1"
    assert t3["messages"][-1]["tool_calls"][0]["id"] == "call_2" and t3["tools"] == TOOLS[:1]
    # a tool result without its call: the training set's own text turns instead
    assert by_id["t4"]["messages"] == next(x for x in ours if x["id"] == "t4")["messages"]

    pairs, our_pairs = jsonl(tmp_path / "oa" / "train.openai.pairs.jsonl"), jsonl(sft.with_name("pairs.jsonl"))
    assert len(pairs) == len(our_pairs) == 3
    for p, ours_p in zip(pairs, our_pairs):
        jsonschema.validate(p, PREFERENCE)
        assert sequence_problems(p["input"]["messages"], "prompt") == []
        assert p["preferred_output"] == ours_p["chosen"] and p["non_preferred_output"] == ours_p["rejected"]
        assert ("tools" in p["input"]) == (ours_p["example_id"] == rows["good"]["example_id"])


def test_openai_message_shapes():
    from curate.formats import openai_message, openai_tools, sequence_error
    parts = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text",
                                                                                               "text": "b"}]}
    assert openai_message(parts) == {"role": "user", "content": "a\nb"}
    assert openai_message({"role": "function", "content": "x"}) is None
    assert openai_message({"role": "assistant", "content": None}) == {"role": "assistant", "content": ""}
    assert openai_message({"role": "user", "content": "q", "name": "ann", "extra": 1}) == \
        {"role": "user", "content": "q", "name": "ann"}
    assert openai_tools([{"name": "f", "parameters": {"type": "object"}}, {"type": "function", "function":
                         {"name": "bad name"}}]) == [{"type": "function", "function": {"name": "f",
                                                                                       "parameters": {"type": "object"}}}]
    assert sequence_error([{"role": "user", "content": "q"}]) == "the last turn is user, not the answer"


# ---------- datasets: save_to_disk, load_from_disk, train lora, push_to_hub ----------

def test_datasets_export_round_trips_and_trains_unchanged(tmp_path, tiny_model_dir):
    from datasets import load_from_disk

    from train import dpo, lora_data
    from train.cli import main as train_main
    build_store()
    sft = tmp_path / "set" / "train.jsonl"
    m_jsonl = export.export(str(sft), **EXPORT)
    folder = tmp_path / "set" / "train-dataset"
    m_ds = export.export(str(folder), fmt="datasets", **EXPORT)
    assert m_ds["sha256"] == m_jsonl["sha256"] and m_ds["pairs"]["sha256"] == m_jsonl["pairs"]["sha256"]

    data = load_from_disk(str(folder))
    assert set(data) == {"sft", "pairs"} and (folder / "manifest.json").is_file()
    strip = lambda row: {k: v for k, v in row.items() if v is not None}  # noqa: E731 (a line has no null key)
    assert [strip(r) for r in data["sft"]] == jsonl(sft)
    assert [strip(r) for r in data["pairs"]] == jsonl(sft.with_name("pairs.jsonl"))

    # the trainer reads the folder as it reads the JSONL: same items, hashes, set identity, pairs
    ours, theirs = lora_data.read_training_set(sft), lora_data.read_training_set(folder)
    assert theirs == ours and lora_data.set_hash(theirs) == lora_data.set_hash(ours)
    assert dpo.read_pairs(dpo.pairs_path(folder), lora_data.manifest_path(folder)) == \
        dpo.read_pairs(dpo.pairs_path(sft), lora_data.manifest_path(sft))
    assert dpo.paired_examples(folder) == dpo.paired_examples(sft.with_name("pairs.jsonl"))

    out = tmp_path / "adapter"
    assert train_main(["lora", "--model", str(tiny_model_dir), "--training-set", str(folder), "--out", str(out),
                       "--max-steps", "2", "--batch-size-train", "2", "--val-fraction", "0",
                       "--max-length", "96"]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    from builders.lora import db_rows
    assert db_rows("SELECT status, training_set, training_set_hash FROM train_runs") == \
        [("complete", str(folder), lora_data.set_hash(ours))]
    assert db_rows("SELECT count(*) FROM train_examples") == [(4,)]

    # an edited row is caught by the manifest inside, as an edited JSONL line is
    rows = [dict(r) for r in data["sft"]]
    rows[0]["messages"][-1]["content"] += " (edited)"
    from datasets import Dataset, DatasetDict
    DatasetDict({"sft": Dataset.from_list(rows, features=data["sft"].features), "pairs": data["pairs"]}) \
        .save_to_disk(str(tmp_path / "edited"))
    (tmp_path / "edited" / "manifest.json").write_text((folder / "manifest.json").read_text())
    with pytest.raises(lora_data.TrainingSetError, match=r"content_hash of .* differs"):
        lora_data.read_training_set(tmp_path / "edited")


def test_datasets_push_needs_a_token_and_uploads_two_configs(tmp_path, monkeypatch, capsys):
    import datasets
    import huggingface_hub
    build_store()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # no `hf auth login` token either
    folder = tmp_path / "ds"
    args = ["--push-to-hub", "me/mend-set", "--out", str(folder), "--replay-fraction", "0.5",
            "--replay-self-share", "0"]
    assert export.main(args) == 2
    err = capsys.readouterr().err
    assert "HF_TOKEN" in err and "error:" in err and not folder.exists()  # refused before anything is built

    pushed = []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub",
                        lambda self, repo, **kw: pushed.append((repo, kw, self.to_list())))
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert export.main(args) == 0  # --push-to-hub implies --format datasets
    assert "pushed to https://huggingface.co/datasets/me/mend-set: config(s) sft, pairs (private)" in \
        " ".join(capsys.readouterr().out.split())
    (repo, kw, rows), (_, kw_pairs, pair_rows) = pushed
    assert repo == "me/mend-set" and kw["token"] == "hf_test" and kw["private"] is True
    assert (kw["config_name"], kw["split"], kw["set_default"]) == ("sft", "train", True)
    assert (kw_pairs["config_name"], kw_pairs["split"]) == ("pairs", "train")
    assert len(rows) == 4 and len(pair_rows) == 3 and rows[0]["messages"][-1]["role"] == "assistant"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert export.main(args) == 2 and "HF_HUB_OFFLINE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(["--format", "openai", "--push-to-hub", "me/x"])


# ---------- report_to ----------

def test_report_to_tensorboard_writes_events_into_the_adapter_folder(tmp_path, tiny_model_dir):
    from builders.lora import plan_for
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from train.lora import train
    result = train(plan_for(tmp_path, tiny_model_dir, n=8, max_steps=2, report_to="tensorboard",
                            val_fraction=0.25, save_steps=1), progress=False)
    assert result.status == "complete", result.error
    logs = result.adapter_dir / "tensorboard" / "sft"
    assert list(logs.glob("events.out.tfevents.*")) and not list(result.adapter_dir.parent.glob(".tmp-*"))
    events = EventAccumulator(str(logs))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert "eval/loss" in events.Tags()["scalars"]


def test_report_to_is_checked_before_training(tmp_path, tiny_model_dir):
    from builders.lora import settings, write_set

    from train.lora import make_plan
    from train.lora_runs import settings_hash
    from traces.settings import SettingsError
    s, _ = settings(tmp_path, tiny_model_dir, write_set(tmp_path, 4), report_to="none,tensorboard")
    with pytest.raises(SettingsError, match="'none' cannot be combined"):
        make_plan(s)
    tb, _ = settings(tmp_path, tiny_model_dir, write_set(tmp_path, 4), report_to="tensorboard")
    none, _ = settings(tmp_path, tiny_model_dir, write_set(tmp_path, 4))
    assert none.report_to == "none" and settings_hash(tb) == settings_hash(none)  # a resume may switch it


# ---------- adapter push ----------

@pytest.fixture
def adapter(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from train.models import write_adapter_manifest
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    folder = tmp_path / "adapters" / "run1"
    model.save_pretrained(str(folder))
    write_adapter_manifest(folder, str(tiny_model_dir), run_id="run1")
    return folder


def test_adapter_push_uploads_the_peft_folder_with_a_hub_base_and_a_card(tmp_path, adapter, tiny_model_dir,
                                                                        monkeypatch, capsys):
    import huggingface_hub

    from train.export import main
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    out = tmp_path / "exported"
    assert main([str(adapter), "--out", str(out), "--push-to-hub", "me/adapter"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err and not out.exists()  # nothing exported without a token

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert main([str(adapter), "--out", str(out), "--push-to-hub", "me/adapter"]) == 2
    assert "--base-model" in capsys.readouterr().err  # a local base: which Hub model do loaders fetch?

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create", repo_id, kw, self.token))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kw):
        from pathlib import Path
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls.append(("upload", repo_id, kw, files))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert main([str(adapter), "--out", str(out), "--push-to-hub", "me/adapter", "--base-model", "org/tiny"]) == 0
    assert "pushed" in capsys.readouterr().out
    (_, repo, kw, token), (_, repo2, _, files) = calls
    assert repo == repo2 == "me/adapter" and token == "hf_test" and kw["private"] is True
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors", "mend_adapter.json", "README.md"}
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "org/tiny"
    card = files["README.md"].decode()
    assert "base_model: org/tiny" in card and "library_name: peft" in card and "run1" in card
    assert files["adapter_model.safetensors"] == (out / "adapter_model.safetensors").read_bytes()
    # the local export keeps the local base folder, for vLLM and peft on this machine
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)


def test_hub_base_ids():
    from train.hub import EMBEDDED_HUB_ID, hub_base_id
    assert hub_base_id("smollm2-135m-instruct") == EMBEDDED_HUB_ID
    assert hub_base_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert hub_base_id("/models/mine") is None
