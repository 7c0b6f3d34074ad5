"""`python -m train lora --method dpo|sft+dpo` on the tiny model: only LoRA weights move and the DPO loss falls, the
reference is the base with the adapter disabled (no second model, no "ref" adapter), sft+dpo continues the SFT
adapter, a run killed mid-DPO resumes from its checkpoint (in either method), bad method/pairs are clear errors."""
import json
import math

import pytest
from builders.lora import db_rows, settings, write_set
from transformers import TrainerCallback

PAIRS = [
    ("List three fruits without commas.", "Apples pears plums.", "Apples, pears, plums."),
    ("Answer in lowercase: what is the capital of France?", "paris.", "Paris."),
    ("Greet me without commas.", "Hello there friend.", "Hello, friend."),
    ("Write a title in double angular brackets.", "<<Morning>>\nThe town woke.", "Morning\nThe town woke."),
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def write_pairs(folder, n=4):
    """train.jsonl (n SFT examples) and pairs.jsonl (n pairs) beside it, in the formats `curate export` writes."""
    training_set = write_set(folder, n, manifest=False)
    rows = [{"id": f"pair-{i:03d}", "prompt": [{"role": "user", "content": q}],
             "chosen": [{"role": "assistant", "content": c}], "rejected": [{"role": "assistant", "content": r}],
             "example_id": f"ex{i:03d}", "cluster_id": "c1", "rejected_source": "teacher", "rejected_id": f"f{i}"}
            for i, (q, c, r) in enumerate(PAIRS[i % len(PAIRS)] for i in range(n))]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return training_set


def plan_for(tmp_path, tiny_model_dir, n=4, **over):
    from train.lora import make_plan
    s, sources = settings(tmp_path, tiny_model_dir, write_pairs(tmp_path, n), **over)
    return make_plan(s, sources)


def lora_weights(model) -> dict:
    from peft import get_peft_model_state_dict
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_dpo_moves_only_lora_weights_and_lowers_the_loss(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from train.lora import train
    plan = plan_for(tmp_path, tiny_model_dir, method="dpo", max_steps=6, lr=2e-2)
    assert [ex.origin for ex in plan.examples] == ["pair"] * 4  # dpo alone does not train on the SFT set
    result = train(plan, progress=False, keep_trainer=True)
    assert result.status == "complete", result.error

    # step 1: the adapter's B is zero, so policy == reference and the sigmoid DPO loss is -log(sigmoid(0)) = log 2
    losses = [s["loss"] for s in result.metrics["steps"]]
    assert len(losses) == 6 and losses[0] == pytest.approx(math.log(2), abs=1e-3)
    assert losses[-1] < 0.5 * losses[0], losses

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    for name, p in result.trainer.model.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach().cpu(), base[key]), name
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in weights.items())

    # the same run bookkeeping as SFT: published folder, manifest of pairs, DB rows with origin "pair"
    assert not list(result.adapter_dir.parent.glob(".tmp-*"))
    manifest = json.loads((result.adapter_dir / "manifest.json").read_text())
    assert [(e["id"], e["origin"]) for e in manifest["examples"]] == [(f"pair-{i:03d}", "pair") for i in range(4)]
    assert json.loads((result.adapter_dir / "settings.json").read_text())["settings"]["method"] == "dpo"
    assert db_rows("SELECT status FROM train_runs") == [("complete",)]
    assert db_rows("SELECT origin, count(*) FROM train_examples GROUP BY 1") == [("pair", 4)]
    assert result.metrics["tokens_per_s"] > 0 and result.metrics["precision"] in ("fp32", "bf16")


def test_sft_then_dpo_continues_the_sft_adapter_against_the_adapter_disabled_base(tmp_path, tiny_model_dir,
                                                                                 monkeypatch):
    import torch
    from safetensors.torch import load_file
    from trl.trainer import dpo_trainer

    from train.lora import train
    from train.models import load

    def no_second_model(*a, **k):
        raise AssertionError("DPOTrainer loaded a second (reference) model")
    monkeypatch.setattr(dpo_trainer, "create_model_from_path", no_second_model)
    adapters_used = []
    real_use_adapter = dpo_trainer.use_adapter

    def spy(model, adapter_name):
        adapters_used.append(adapter_name)
        return real_use_adapter(model, adapter_name)
    monkeypatch.setattr(dpo_trainer, "use_adapter", spy)

    class AtDpoStart(TrainerCallback):
        """When the DPO phase starts, its adapter holds the finished SFT adapter's weights."""
        checked = False

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if args.output_dir.endswith("/dpo"):
                saved = load_file(str(plan.adapters_dir / f".tmp-{plan.run_id}" / "sft-adapter" /
                                      "adapter_model.safetensors"))
                now = {k.replace(".default", ""): v for k, v in lora_weights(model).items()}
                assert now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)
                assert any(v.abs().max() > 0 for k, v in saved.items() if "lora_B" in k)  # SFT moved it
                AtDpoStart.checked = True

    # fp32: on a CPU with avx512_bf16 "auto" trains under bf16 autocast, which accelerate leaves wrapped around the
    # trained model's forward, so its logits would differ from the base's in the 3rd digit
    plan = plan_for(tmp_path, tiny_model_dir, method="sft+dpo", max_steps=3, precision="fp32")
    assert sorted({ex.origin for ex in plan.examples}) == ["example", "pair", "replay"]
    result = train(plan, callbacks=[AtDpoStart()], progress=False, keep_trainer=True)
    assert result.status == "complete", result.error and AtDpoStart.checked

    trainer = result.trainer
    assert trainer.ref_model is None and list(trainer.model.peft_config) == ["default"]  # no frozen "ref" copy
    assert adapters_used and set(adapters_used) == {None}  # every reference forward: adapters disabled
    ids = torch.tensor([[1, 4093, 28, 253, 2]])
    base, _ = load(tiny_model_dir)
    with torch.no_grad():
        with trainer.model.disable_adapter():
            ref = trainer.model(input_ids=ids).logits
        tuned = trainer.model(input_ids=ids).logits
        assert torch.allclose(ref, base(ids).logits, atol=1e-5)  # the reference is the base from disk
        assert not torch.allclose(tuned, ref, atol=1e-4)

    m = result.metrics
    assert set(m["phases"]) == {"sft", "dpo"} and m["phases"]["sft"]["last_step"] == 3
    assert [(s["phase"], s["step"]) for s in m["steps"]] == [("sft", 1), ("sft", 2), ("sft", 3),
                                                           ("dpo", 1), ("dpo", 2), ("dpo", 3)]
    assert db_rows("SELECT origin, count(*) FROM train_examples GROUP BY 1 ORDER BY 1") == \
        [("example", 3), ("pair", 4), ("replay", 1)]


class KillAt(TrainerCallback):
    """Ctrl-C after `step` in the trainer whose output folder ends with `phase` (after checkpoint-2 was written)."""

    def __init__(self, step, phase=""):
        self.step, self.phase = step, phase

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.phase) and state.global_step == self.step:
            raise KeyboardInterrupt


def test_dpo_resumes_from_its_checkpoint_after_a_kill(tmp_path, tiny_model_dir):
    from train.lora import make_plan, train
    over = dict(method="dpo", max_steps=4, val_fraction=0.25)
    plan = plan_for(tmp_path, tiny_model_dir, n=8, **over)
    with pytest.raises(KeyboardInterrupt):
        train(plan, callbacks=[KillAt(3)], progress=False)
    assert not plan.final_dir.exists() and db_rows("SELECT status FROM train_runs") == [("failed",)]

    s, sources = settings(tmp_path, tiny_model_dir, tmp_path / "train.jsonl", **over)
    again = make_plan(s, sources)
    assert again.run_id == plan.run_id and again.checkpoint.name == "checkpoint-2"
    result = train(again, progress=False)
    assert result.status == "complete", result.error
    m = result.metrics
    assert m["first_step"] == 2 and [s["step"] for s in m["steps"]] == [3, 4] and m["resumed_from"] == "checkpoint-2"
    assert m["evals"] and m["final_eval_loss"] is not None  # DPO eval loss on the validation pairs
    assert db_rows("SELECT status FROM train_runs") == [("complete",)]
    # the settings are part of the run's identity: the same set under --method sft is another run
    s_sft, _ = settings(tmp_path, tiny_model_dir, tmp_path / "train.jsonl", method="sft", max_steps=4,
                        val_fraction=0.25)
    assert make_plan(s_sft, sources).checkpoint is None


def test_sft_then_dpo_killed_in_the_dpo_phase_resumes_there(tmp_path, tiny_model_dir, monkeypatch):
    from train import lora
    over = dict(method="sft+dpo", max_steps=4)
    plan = plan_for(tmp_path, tiny_model_dir, **over)
    with pytest.raises(KeyboardInterrupt):
        lora.train(plan, callbacks=[KillAt(3, "/dpo")], progress=False)

    def no_sft(*a, **k):
        raise AssertionError("the finished SFT phase ran again")
    monkeypatch.setattr(lora, "build_trainer", no_sft)
    s, sources = settings(tmp_path, tiny_model_dir, tmp_path / "train.jsonl", **over)
    again = lora.make_plan(s, sources)
    assert again.run_id == plan.run_id
    result = lora.train(again, progress=False)
    assert result.status == "complete", result.error
    m = result.metrics
    assert [(s["phase"], s["step"]) for s in m["steps"]] == [("sft", 1), ("sft", 2), ("sft", 3), ("sft", 4),
                                                           ("dpo", 3), ("dpo", 4)]
    assert m["phases"]["dpo"]["first_step"] == 2 and m["resumed_from"] == "checkpoint-2"
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_method_and_pairs_errors_are_one_line(tmp_path, tiny_model_dir, capsys):
    from train.cli import main
    common = ["lora", "--model", str(tiny_model_dir), "--adapters-dir", str(tmp_path / "ad")]
    ts = write_set(tmp_path, 4, manifest=False)
    assert main(common + ["--training-set", str(ts), "--method", "ppo"]) == 2
    assert "method='ppo'" in capsys.readouterr().err
    assert main(common + ["--training-set", str(ts), "--method", "dpo"]) == 2
    assert "pairs.jsonl do not exist" in " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    # every pair in the validation split leaves DPO nothing to train on
    ts = write_pairs(tmp_path, 1)
    from traces.settings import load_with_sources
    from train.lora import make_plan
    from train.lora_data import TrainingSetError
    s, sources = load_with_sources("train", {"model": str(tiny_model_dir), "training_set": str(ts),
                                             "method": "dpo", "val_fraction": 0.5})
    assert len(make_plan(s, sources).examples) == 1  # one item is too few for a validation split: it trains
    from train.dpo import Pair
    from train.lora_data import split
    items = [Pair(f"pair-{i:03d}", [], [], [], "") for i in range(2)] + [Pair(f"ex{i:03d}", [], [], [], "", "example")
                                                                        for i in range(2)]
    seed = next(n for n in range(1000) if all(x.origin == "pair" for x in split(items, 0.5, n)[1]))
    s, sources = load_with_sources("train", {"model": str(tiny_model_dir), "training_set": str(write_pairs(
        tmp_path, 2)), "method": "sft+dpo", "val_fraction": 0.5, "seed": seed})
    with pytest.raises(TrainingSetError, match="fell into the validation split"):
        make_plan(s, sources)


def test_auto_method_is_dpo_when_most_examples_have_a_pair_else_sft(tmp_path, tiny_model_dir, capsys):
    from builders.lora import write_set

    from train.lora import make_plan
    (tmp_path / "paired").mkdir()
    plan = plan_for(tmp_path / "paired", tiny_model_dir, n=8, method="auto")  # the default is sft since 2026-12
    assert plan.settings.method == "dpo" and {x.origin for x in plan.examples} == {"pair"}
    assert "method auto -> dpo: 6 of 6 exported examples have a preference pair" in capsys.readouterr().err

    (tmp_path / "none").mkdir()  # no pairs.jsonl beside the set
    s, sources = settings(tmp_path / "none", tiny_model_dir, write_set(tmp_path / "none", 8, manifest=False),
                          method="auto")
    plan = make_plan(s, sources)
    assert plan.settings.method == "sft" and "pair" not in {x.origin for x in plan.examples}

    (tmp_path / "few").mkdir()  # 2 of 6 examples paired: DPO would drop the other 4, so SFT
    training_set = write_pairs(tmp_path / "few", 8)
    pairs = (tmp_path / "few" / "pairs.jsonl").read_text().splitlines()
    (tmp_path / "few" / "pairs.jsonl").write_text("\n".join(pairs[:2]) + "\n")
    s, sources = settings(tmp_path / "few", tiny_model_dir, training_set, method="auto")
    assert make_plan(s, sources).settings.method == "sft"
    assert "method auto -> sft: 2 of 6" in capsys.readouterr().err


def test_dpo_sft_weight_adds_the_chosen_answers_nll_to_the_loss(tmp_path):
    from train.dpo import dpo_config
    from train.settings import TrainSettings
    dev = {"device": "cpu", "bf16": False, "cuda": False}
    plain = dpo_config(TrainSettings(), tmp_path, dev, False)
    rpo = dpo_config(TrainSettings(dpo_sft_weight=0.5), tmp_path, dev, False)
    assert list(plain.loss_type) == ["sigmoid"]
    assert list(rpo.loss_type) == ["sigmoid", "sft"] and list(rpo.loss_weights) == [1.0, 0.5]


def test_the_dpo_loss_is_a_setting_and_its_reward_figures_are_recorded(tmp_path, tiny_model_dir):
    from train.lora import train
    plan = plan_for(tmp_path, tiny_model_dir, method="dpo", max_steps=3, lr=2e-2, dpo_loss="apo_zero", dpo_beta=0.5)
    result = train(plan, progress=False, keep_trainer=True)
    assert result.status == "complete", result.error
    assert result.trainer.args.loss_type == ["apo_zero"] and result.trainer.args.beta == 0.5
    m = result.metrics
    assert all(k in step for step in m["steps"] for k in ("rewards/margins", "logps/chosen"))
    assert m["rewards/margins"] == m["steps"][-1]["rewards/margins"] and m["logps/chosen"] < 0
    assert m["steps"][0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at step 1
